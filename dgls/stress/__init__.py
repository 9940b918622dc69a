"""`dgls stress`: what the server survives, measured against a real `dgls serve` on loopback."""
