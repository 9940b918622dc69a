"""The resident DiffusionGemma infill engine (installed as ``dgls.engine``); knows nothing of LSP."""

import logging

from .types import EngineError, InfillRequest, InfillResult, InfillStats, ModelLoadError

# transformers imports torchao (dgls's --quantize) whenever it loads a model. torchao then reports
# optional CUDA kernels it cannot load on this torch, and registers enums that torch's pytree calls
# deprecated: warnings about code dgls never runs, which would bury dgls's own one-line errors.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

__all__ = ["EngineError", "InfillRequest", "InfillResult", "InfillStats", "ModelLoadError", "Engine"]


def __getattr__(name: str):
    # Engine pulls in torch and transformers: import it only when asked for.
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)
