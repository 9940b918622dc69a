"""Adapters: hooks and merged weights agree, the delta round-trips, the merged checkpoint loads."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from dgls.engine.adapters import Adapters, build_adapted, weight_factors


def _model(path):
    from transformers import DiffusionGemmaForBlockDiffusion

    return DiffusionGemmaForBlockDiffusion.from_pretrained(str(path)).eval()


def _randomize(adapters: Adapters, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in adapters.b.values():
            b.copy_(torch.randn(b.shape, generator=gen) * 0.05)


def _logits(model, ids):
    from transformers import DynamicCache

    with torch.no_grad():
        cache = DynamicCache(config=model.config.get_text_config())
        return model.model.encoder(input_ids=ids, past_key_values=cache, use_cache=True).last_hidden_state


def test_merged_weights_give_what_the_hooks_gave(tiny_model_dir):
    model = _model(tiny_model_dir)
    ids = torch.tensor([[2, 40, 41, 42, 43, 44]])
    before = _logits(model, ids)
    factors = {"layers.0.self_attn.v_proj": 1e-3, "layers.1.mlp.down_proj": 10.0}
    adapters = Adapters(model, rank=4, alpha=8.0, factors=factors).attach()
    assert torch.allclose(_logits(model, ids), before)  # B starts at zero: no change at first
    _randomize(adapters)
    hooked = _logits(model, ids)
    assert not torch.allclose(hooked, before, atol=1e-4)
    assert adapters.scales["layers__0__self_attn__v_proj"] == pytest.approx(2.0 * 1e-3)
    adapters.merge()
    assert torch.allclose(_logits(model, ids), hooked, atol=1e-5)


def test_delta_round_trip_and_merged_checkpoint(tiny_model_dir, tmp_path):
    from dgls.engine import Engine, InfillRequest
    from safetensors.torch import load_file, save_file

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "convert.json").write_text(json.dumps({"v_scales": [1e-3] * 3, "mlp_scales": [1.0] * 3}))
    model = _model(base)
    adapters = Adapters(model, rank=4, alpha=8.0, layers=3)
    _randomize(adapters)
    with torch.no_grad():
        model.model.decoder.self_conditioning.down_proj.weight.fill_(0.01)
    delta = tmp_path / "delta.safetensors"
    save_file(adapters.delta_state(model), str(delta))
    state = load_file(str(delta))
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    assert any(k.startswith("full.self_conditioning.") for k in state)

    meta = {"rank": 4, "alpha": 8.0, "config": {"token_shift": True}, "generation": {"max_denoising_steps": 5}}
    out = build_adapted(base, delta, meta, log=lambda m: None)
    assert build_adapted(base, delta, meta, log=lambda m: None) == out  # once per delta
    merged = _model(out)
    assert merged.config.token_shift is True
    assert merged.generation_config.max_denoising_steps == 5
    assert torch.allclose(merged.model.decoder.self_conditioning.down_proj.weight, torch.full_like(
        merged.model.decoder.self_conditioning.down_proj.weight, 0.01), atol=1e-4)
    # merged == base + the bf16 delta applied through the hooks
    reference = _model(base)
    factors = weight_factors(json.loads((base / "convert.json").read_text()), 3)
    assert factors["layers.0.self_attn.o_proj"] == pytest.approx(1.0)  # sqrt(1e-6) / 1e-3
    hooks = Adapters(reference, rank=4, alpha=8.0, factors=factors, layers=3).attach()
    hooks.load_delta(reference, state)
    ids = torch.tensor([[2, 50, 51, 52]])
    assert torch.allclose(_logits(merged, ids), _logits(reference, ids), atol=1e-4)
    engine = Engine(str(out), device="cpu")
    assert engine.info()["token_shift"] is True
    assert engine.infill(InfillRequest(prefix="a = ", suffix="\n", single_line=True)).status == "ok"


def test_unknown_delta_entries_are_refused(tiny_model_dir):
    model = _model(tiny_model_dir)
    adapters = Adapters(model, rank=2, alpha=4.0)
    with pytest.raises(ValueError, match="unknown entry"):
        adapters.load_delta(model, {"weird.thing": torch.zeros(1)})


def test_a_damaged_shipped_delta_is_a_clear_model_error(tmp_path, monkeypatch):
    from dgls.engine import adapters, convert
    from dgls.engine.types import ModelLoadError

    base = tmp_path / "base"
    base.mkdir()
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "delta.safetensors").write_bytes(b"not a safetensors file")
    (shipped / "adapter.json").write_text(json.dumps({"rank": 2, "alpha": 4.0}))
    monkeypatch.setattr(convert, "convert", lambda log=print: base)
    monkeypatch.setattr(adapters, "SHIPPED", shipped)
    with pytest.raises(ModelLoadError, match="could not apply the shipped delta"):
        adapters.shipped_model_dir(log=lambda m: None)
