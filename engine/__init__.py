"""The resident DiffusionGemma infill engine (installed as ``dgls.engine``); knows nothing of LSP."""

from .types import EngineError, InfillRequest, InfillResult, InfillStats, ModelLoadError

__all__ = ["EngineError", "InfillRequest", "InfillResult", "InfillStats", "ModelLoadError", "Engine"]


def __getattr__(name: str):
    # Engine pulls in torch and transformers: import it only when asked for.
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)
