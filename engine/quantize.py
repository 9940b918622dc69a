"""Weight-only 8-bit and 4-bit loading through torchao, MoE experts included.

Why torchao, and why after loading: in a DiffusionGemma MoE almost all the weights are the
experts' 3-D `gate_up_proj`/`down_proj` parameters (22.8B of the release's 25.8B), not
`nn.Linear` modules. bitsandbytes (and transformers' other Linear-only quantizers) leave them in
bf16, so a "4-bit" release would still need ~48 GB. torchao quantizes parameters by name, 3-D
included; but transformers' TorchAoConfig path leaves DiffusionGemma unquantized (measured: the
encoder/decoder weight tying puts the bf16 tensors back), so dgls loads the checkpoint as usual and
quantizes each decoder layer with `torchao.quantization.quantize_`, then points the encoder's
tied parameters at the same quantized tensors. Embeddings (tied to the head the fused kernels
read), norms, routers, self-conditioning and the unused vision tower stay in the load dtype.

8-bit: `Int8WeightOnlyConfig` (per-row int8), on the CPU and on CUDA. 4-bit:
`Int4WeightOnlyConfig` (groups of 128, tinygemm's tile-packed layout, input features padded to a
multiple of 1024), CUDA and bf16 only: torchao
0.18 has no CPU int4 weight-only kernel. Quantized experts run through transformers' "eager" expert
loop (its grouped and batched matmuls do not accept torchao tensors), and the engine runs quantized
models under `no_grad` rather than `inference_mode` (torchao's expert indexing needs it).
"""

from __future__ import annotations

import importlib.metadata as md

from .types import ModelLoadError

KINDS = ("4bit", "8bit")
INT4_GROUP = 128
INT4_PAD_IN, INT4_PAD_OUT = 1024, 8  # tinygemm's tile layout pads input features to 1024s, outputs to 8s
TORCHAO_SPEC = "torchao>=0.18"


def quantized_bytes(shape: tuple[int, ...], kind: str) -> int:
    """Bytes one weight of `shape` ([..., out, in]) takes quantized, padding and scales included.

    int8: a byte per weight and a float32 scale per row. int4: half a byte per weight of the padded
    matrix (the release's expert width 704 pads to 1024) and a bf16 scale and zero per group of 128.
    """
    *lead, out_f, in_f = shape
    batch = 1
    for dim in lead:
        batch *= dim
    if kind == "8bit":
        return batch * (out_f * in_f + out_f * 4)
    k = -(-in_f // INT4_PAD_IN) * INT4_PAD_IN
    n = -(-out_f // INT4_PAD_OUT) * INT4_PAD_OUT
    return batch * (n * k // 2 + n * (k // INT4_GROUP) * 2 * 2)


def normalize(kind: str | None) -> str | None:
    """"4bit"/"8bit" (also "4"/"int4"/"8"/"int8"), or None for none/""/off."""
    if kind is None:
        return None
    value = str(kind).strip().lower().replace("-", "")
    if value in ("", "none", "off", "no", "false"):
        return None
    aliases = {"4": "4bit", "int4": "4bit", "4bit": "4bit", "8": "8bit", "int8": "8bit", "8bit": "8bit"}
    if value not in aliases:
        raise ModelLoadError(f"unknown quantization '{kind}'; use 4bit, 8bit or none")
    return aliases[value]


def check_supported(kind: str, device: str, dtype: str) -> None:
    """Raise ModelLoadError (one line) when this machine cannot run `kind`."""
    try:
        version = md.version("torchao")
    except md.PackageNotFoundError:
        raise ModelLoadError(f"--quantize {kind} needs torchao (a dgls dependency); "
                             f"`pip install '{TORCHAO_SPEC}'`") from None
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (0, 18):
        raise ModelLoadError(f"--quantize {kind} needs torchao >= 0.18, found {version}")
    if kind == "4bit" and not device.startswith("cuda"):
        raise ModelLoadError("--quantize 4bit runs on CUDA only (torchao has no CPU int4 kernel); "
                             "use --quantize 8bit on the CPU")
    if kind == "4bit" and dtype != "bfloat16":
        raise ModelLoadError("--quantize 4bit needs --dtype bfloat16")


def _config(kind: str):
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if kind == "8bit":
        return Int8WeightOnlyConfig()
    return Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d")


def _linear_names(layer) -> list[str]:
    """The layer's projections to quantize (attention and dense MLP; not the router)."""
    import torch

    return [name for name, module in layer.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.startswith("router")]


def quantize_model(model, kind: str, device: str) -> None:
    """Quantize a loaded DiffusionGemma's decoder layers in place, moving each to `device` first,
    and make the encoder share them (one copy, as the bf16 checkpoint had)."""
    import torch
    from torchao.quantization import FqnToConfig, quantize_

    config = _config(kind)
    decoder = model.model.decoder
    encoder = model.model.encoder.language_model
    for enc_layer, dec_layer in zip(encoder.layers, decoder.layers, strict=True):
        dec_layer.to(device)
        for name in _linear_names(dec_layer):
            quantize_(dec_layer.get_submodule(name), config)
        experts = getattr(dec_layer, "experts", None)
        if experts is not None and isinstance(getattr(experts, "gate_up_proj", None), torch.nn.Parameter):
            quantize_(experts, FqnToConfig({"gate_up_proj": config, "down_proj": config}), filter_fn=None)
        _share_parameters(dec_layer, enc_layer)
        enc_layer.to(device)  # what is left there (nothing but buffers) follows
    model.config.dgls_quantize = kind


def _share_parameters(source, target) -> None:
    """Point every parameter of `target` at the same-named parameter object of `source`."""
    for name, module in source.named_modules():
        other = target.get_submodule(name) if name else target
        for pname, param in module._parameters.items():
            if param is not None and pname in other._parameters:
                other._parameters[pname] = param


def is_quantized(model) -> bool:
    return getattr(model.config, "dgls_quantize", None) is not None


def weight_bytes(model) -> int:
    """Bytes the model's parameters take, counting each shared tensor once and torchao's parts."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        for leaf in _leaves(param):
            if id(leaf) in seen:
                continue
            seen.add(id(leaf))
            total += leaf.numel() * leaf.element_size()
    return total


def _leaves(tensor) -> list:
    import torch

    if type(tensor) in (torch.Tensor, torch.nn.Parameter) or not hasattr(tensor, "__tensor_flatten__"):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    out: list = []
    for name in names:
        part = getattr(tensor, name)
        if part is not None:
            out += _leaves(part)
    return out
