"""How much memory a checkpoint needs at a precision, from its config alone (nothing loaded).

Parameters are counted by building the model on the meta device (exact, no memory, ~1 s for the
26B release), split into what `quantize.py` quantizes (projections and experts) and what stays in
the load dtype (embeddings, norms, routers, self-conditioning, vision). The KV cache is sized for a
given prefix length: sliding layers hold at most their window, full layers every token.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .quantize import quantized_bytes

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024 ** 3


@dataclass
class ParameterCounts:
    """Parameters by what quantization does to them."""

    quantizable: int  # attention/MLP projections and experts of the text layers
    experts: int  # the part of `quantizable` in MoE experts
    kept: int  # embeddings, norms, routers, self-conditioning, vision: stay in the load dtype
    vision: int  # the part of `kept` in the vision tower
    shapes: list[tuple[int, ...]]  # shapes of the quantizable weights

    @property
    def total(self) -> int:
        return self.quantizable + self.kept


def count_parameters(config) -> ParameterCounts:
    """Count a DiffusionGemma config's parameters on the meta device (shared tensors once)."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion

    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    quantizable = experts = kept = vision = 0
    shapes: list[tuple[int, ...]] = []
    for name, param in model.named_parameters():  # named_parameters() yields each shared tensor once
        n = param.numel()
        if "vision" in name:
            vision += n
            kept += n
        elif ".layers." in name and (".experts." in name or (name.endswith("_proj.weight") and ".router." not in name)):
            quantizable += n
            experts += n if ".experts." in name else 0
            shapes.append(tuple(param.shape))
        else:
            kept += n
    return ParameterCounts(quantizable=quantizable, experts=experts, kept=kept, vision=vision, shapes=shapes)


def weight_bytes(counts: ParameterCounts, dtype: str, quantize: str | None) -> float:
    """Bytes of weights at a load dtype, with the projections and experts quantized or not."""
    dense = DTYPE_BYTES[dtype]
    if not quantize:
        return float(counts.total * dense)
    return float(sum(quantized_bytes(shape, quantize) for shape in counts.shapes) + counts.kept * dense)


def kv_cache_bytes(text_config, tokens: int, dtype: str) -> float:
    """Keys and values for a prefix of `tokens` (plus a canvas), over every layer."""
    total = 0
    window = int(getattr(text_config, "sliding_window", 0) or 0)
    per_layer = getattr(text_config, "per_layer_config", None)
    for i, kind in enumerate(text_config.layer_types):
        layer = per_layer[i] if per_layer is not None and len(per_layer) > i else text_config
        kept = min(tokens, window) if kind == "sliding_attention" and window else tokens
        total += 2 * kept * int(layer.num_key_value_heads) * int(layer.head_dim)
    return total * DTYPE_BYTES[dtype]


def read_config(path: Path):
    """A DiffusionGemmaConfig from a checkpoint directory's config.json."""
    from transformers import DiffusionGemmaConfig

    data = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    data = {k: v for k, v in data.items() if k not in ("architectures", "model_type", "quantization_config")}
    return DiffusionGemmaConfig(**data)


def need_line(config, dtype: str, quantize: str | None, context_tokens: int) -> tuple[float, str]:
    """(bytes needed, one line that says what they are)."""
    counts = count_parameters(config)
    weights = weight_bytes(counts, dtype, quantize)
    cache = kv_cache_bytes(config.get_text_config(), context_tokens, dtype)
    precision = f"{quantize} + {dtype}" if quantize else dtype
    line = (f"{(weights + cache) / GIB:.1f} GiB = weights {weights / GIB:.1f} GiB ({counts.total / 1e9:.2f}B "
            f"parameters at {precision}) + KV cache {cache / GIB:.2f} GiB for {context_tokens:,} tokens")
    return weights + cache, line


def device_free_bytes(device: str) -> tuple[float, str]:
    """(bytes free, a description) for a CUDA device or this machine's RAM."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        return float(free), f"{torch.cuda.get_device_name(index)}: {free / GIB:.1f} of {total / GIB:.1f} GiB free"
    available = total = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = float(line.split()[1]) * 1024
            elif line.startswith("MemTotal:"):
                total = float(line.split()[1]) * 1024
    except OSError:
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        total = available = float(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 0.0
    return available, f"RAM: {available / GIB:.1f} of {total / GIB:.1f} GiB available"
