"""Hot numeric code (installed as ``dgls.kernels``); every kernel has a plain-torch reference."""

from .diffusion_head import HeadOutput, diffusion_head

__all__ = ["HeadOutput", "diffusion_head"]
