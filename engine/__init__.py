"""The resident DiffusionGemma infill engine (installed as ``dgls.engine``); knows nothing of LSP."""

import logging
import warnings

from .types import EngineError, InfillRequest, InfillResult, InfillStats, ModelLoadError

# transformers imports torchao (dgls's --quantize) whenever it loads a model. torchao then reports
# optional CUDA kernels it cannot load on this torch, and registers enums that torch's pytree calls
# deprecated: warnings about code dgls never runs, which would bury dgls's own one-line errors.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# transformers >= 5.2x renames DiffusionGemma's `past_key_values` argument to `cache` and warns on
# every prefill; dgls keeps the old name, which every supported version (>= 5.13) accepts.
warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning)

__all__ = ["EngineError", "InfillRequest", "InfillResult", "InfillStats", "ModelLoadError", "Engine"]


def __getattr__(name: str):
    # Engine pulls in torch and transformers: import it only when asked for.
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)
