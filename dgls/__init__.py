"""dgls: a language server for bidirectional code infilling with DiffusionGemma."""

__version__ = "0.1.0"
