"""Find and load DiffusionGemma checkpoints, offline, with one-line errors a user can act on.

The embedded default and `google/diffusiongemma-26B-A4B-it` go through the same path: a
directory with `config.json`, safetensors weights and a tokenizer, loaded by `transformers`'
own `DiffusionGemmaForBlockDiffusion` (never `trust_remote_code`). Weights are checked before
loading so that a truncated or corrupt file fails fast and nothing is half-loaded.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .types import ModelLoadError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


@dataclass
class LoadedModel:
    """A model ready to serve: the module, its tokenizer, and where it came from."""

    model: object
    tokenizer: object
    path: Path
    name: str
    device: str
    dtype: str
    quantize: str | None = None


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """Turn a path, a hub id already in the local cache, "gemma3" (the warm-started model, converted
    on first use) or None (embedded default) into a directory."""
    if model is None or str(model) in ("", "default"):
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise ModelLoadError(
                f"the embedded default model is missing from {DEFAULT_MODEL_DIR}; reinstall dgls, "
                "or pass --model PATH to a DiffusionGemma checkpoint directory"
            )
        return DEFAULT_MODEL_DIR
    if str(model) == "gemma3":
        from .adapters import shipped_model_dir

        return shipped_model_dir(log=lambda msg: print(f"dgls: {msg}", file=sys.stderr, flush=True))
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; --model needs the checkpoint directory (with config.json)")
        return path
    text = str(model)
    looks_like_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_id:
        raise ModelLoadError(f"model path {path} does not exist; pass a checkpoint directory or a hub id")
    cached = _hub_cache_snapshot(text)
    if cached is None:
        raise ModelLoadError(
            f"model '{text}' is not in the local Hugging Face cache and dgls never downloads by itself; "
            f"fetch it once with `huggingface-cli download {text}`, or pass a local directory"
        )
    return cached


def _hub_cache_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot directory of a hub model, found without touching the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir())
    if isinstance(found, str):
        return Path(found).parent
    return None


def hub_cache_dir() -> str | None:
    """The hub cache as the environment names it now (HF_HUB_CACHE, else HF_HOME/hub), else the
    library's default; read at each call, not once at import as huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def check_checkpoint_dir(path: Path) -> list[Path]:
    """Validate config and weights before any loading; returns the safetensors files."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json; it is not a model checkpoint directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON ({exc}); re-download or re-export the model") from exc
    model_type = config.get("model_type")
    if model_type != "diffusion_gemma":
        raise ModelLoadError(
            f"{path} holds a '{model_type}' model, not DiffusionGemma; dgls needs a "
            "DiffusionGemmaForBlockDiffusion checkpoint (model_type 'diffusion_gemma')"
        )
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        hint = " (found .bin weights: convert them to safetensors)" if list(path.glob("*.bin")) else ""
        raise ModelLoadError(f"{path} has no .safetensors weights{hint}; the checkpoint is incomplete")
    for file in weights:
        check_safetensors(file)
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(f"{path} has no tokenizer.json; the checkpoint is incomplete")
    return weights


def check_safetensors(file: Path) -> None:
    """Check a safetensors header and that every tensor's bytes are really in the file."""
    size = file.stat().st_size
    try:
        with file.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError("header length points past the end of the file")
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{file} is corrupt ({exc}); re-download or re-export the model") from exc
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ModelLoadError(f"{file} has a malformed entry for '{name}'; re-download the model") from exc
    if 8 + header_len + end > size:
        raise ModelLoadError(
            f"{file} is truncated ({size} bytes, needs {8 + header_len + end}); re-download or re-export the model"
        )


def pick_device(device: str | None) -> str:
    """CUDA when present, else CPU; an explicit choice wins but must exist."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' was requested but no CUDA GPU is available; use --device cpu")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device '{device}'; use cpu, cuda or cuda:N")
    return device


def pick_dtype(dtype: str | None, device: str) -> str:
    """bf16 on CUDA, fp32 on CPU (this kind of CPU has no fast bf16), unless told otherwise."""
    if dtype in (None, "", "auto"):
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}'; use float32, bfloat16 or float16")
    return DTYPES[dtype]


def load_model(model: str | os.PathLike | None = None, device: str | None = None,
               dtype: str | None = None, quantize: str | None = None) -> LoadedModel:
    """Load a DiffusionGemma checkpoint and its tokenizer, or raise ModelLoadError.

    `quantize` ("8bit"/"4bit", see quantize.py) quantizes the projections and experts after loading.
    """
    import torch
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    from . import quantize as quant

    path = resolve_model_dir(model)
    check_checkpoint_dir(path)
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    kind = quant.normalize(quantize)
    if kind is not None:
        quant.check_supported(kind, device, dtype)
    hf_logging.disable_progress_bar()
    try:
        extra = {"experts_implementation": "eager"} if kind is not None else {}
        net = DiffusionGemmaForBlockDiffusion.from_pretrained(
            str(path), dtype=getattr(torch, dtype), local_files_only=True, trust_remote_code=False, **extra,
        )
        if kind is not None:
            quant.quantize_model(net, kind, device)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {path}: {first}") from exc
    net = net.to(device).eval()
    if device == "cpu":
        _detach_from_files(net)
    name = "embedded-default" if path == DEFAULT_MODEL_DIR else str(model)
    return LoadedModel(model=net, tokenizer=tokenizer, path=path, name=name, device=device, dtype=dtype,
                       quantize=kind)


def _detach_from_files(net: Any) -> None:
    """Give every CPU tensor its own memory. Weights loaded from safetensors are memory-mapped
    views of the file: if the file is truncated or rewritten while the server runs (a training
    run saving over it, a failed copy), the next read of a weight kills the process with SIGBUS
    or silently reads the new bytes. A copy costs one load's worth of memcpy, once."""
    import torch

    with torch.no_grad():
        for tensor in itertools.chain(net.parameters(), net.buffers()):
            if tensor.device.type == "cpu" and type(tensor.data) is torch.Tensor:  # quantized ones are new already
                tensor.data = tensor.data.clone()
