"""Hot numeric code (installed as ``dgls.kernels``); every kernel has a plain-torch reference."""
