"""`dgls train --base gemma3` end to end on a tiny stand-in base: train, resume, export, serve."""

from __future__ import annotations

import argparse
import json
import shutil

import torch
from dgls.engine.train.data import Corpus, SourceFile


def _corpus() -> Corpus:
    import inspect
    import json as json_mod
    import textwrap

    files = [SourceFile(f"stdlib/{m.__name__}.py", inspect.getsource(m)) for m in (textwrap, json_mod.decoder)]
    return Corpus(train=files, held_out=[])


def _args(out, base, steps, init_from_delta=""):
    from dgls.engine.train.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--out", str(out), "--base", "gemma3", "--base-dir", str(base), "--batch", "2",
                              "--views", "2", "--rank", "2", "--steps", str(steps), "--prefix-tokens", "48",
                              "--lr", "1e-3", "--warmup", "1", "--init-from-delta", str(init_from_delta)])


def _tiny_base(tiny_model_dir, tmp_path):
    """A tiny stand-in for the converted Gemma (a checkpoint and its convert.json)."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "convert.json").write_text(json.dumps({"v_scales": [1e-3] * 3, "mlp_scales": [1.0] * 3}))
    return base


def _served_shift(base, shipped, meta) -> bool:
    """Merge the exported delta, serve one infill from it; the engine's token_shift."""
    from dgls.engine import Engine, InfillRequest
    from dgls.engine.adapters import build_adapted

    merged = build_adapted(base, shipped / "delta.safetensors", meta, log=lambda m: None)
    engine = Engine(str(merged), device="cpu")
    assert engine.infill(InfillRequest(prefix="def f(x):\n    return ", suffix="\n", single_line=True)).status == "ok"
    return engine.info()["token_shift"]


def test_adapt_trains_resumes_exports_and_serves(tiny_model_dir, tmp_path):
    from dgls.engine.train.adapt import AdaptTrainer, export_delta

    base = _tiny_base(tiny_model_dir, tmp_path)
    out = tmp_path / "run"
    trainer = AdaptTrainer(_args(out, base, 2), corpus=_corpus(), log=lambda m: None)
    frozen = trainer.model.model.decoder.embed_tokens.weight.clone()
    losses = [trainer.step()["loss"] for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert torch.equal(trainer.model.model.decoder.embed_tokens.weight, frozen)  # the base stays frozen
    assert any(float(b.abs().sum()) > 0 for b in trainer.adapters.b.values())  # the adapters learned
    trainer.save()
    next_batch = trainer.next_batch().targets

    resumed = AdaptTrainer(_args(out, base, 3), corpus=_corpus(), log=lambda m: None)
    assert resumed.step_no == 2
    assert torch.equal(resumed.next_batch().targets, next_batch)  # same data order after a restart
    for k, v in trainer.adapters.state_dict().items():
        assert torch.equal(resumed.adapters.state_dict()[k], v)

    shipped = export_delta(out, tmp_path / "shipped")
    meta = json.loads((shipped / "adapter.json").read_text())
    assert meta["config"]["token_shift"] is True and meta["step"] == 2
    assert "base_dir" not in meta["args"] and "init_from_delta" not in meta["args"]  # no local paths shipped
    assert (shipped / "delta.safetensors").stat().st_size < 1_000_000
    # a new session without the checkpoint continues from the shipped delta, with the run's options
    from dgls.engine.train.command import _inherit_args

    fresh = argparse.ArgumentParser()
    from dgls.engine.train.command import add_arguments

    add_arguments(fresh)
    plain = fresh.parse_args(["--out", str(tmp_path / "run3"), "--base", "gemma3", "--init-from-delta", str(shipped)])
    _inherit_args(plain)
    assert (plain.rank, plain.batch, plain.views, plain.prefix_tokens) == (2, 2, 2, 48)
    again = AdaptTrainer(_args(tmp_path / "run2", base, 3, shipped), corpus=_corpus(), log=lambda m: None)
    assert again.step_no == 2
    for k, v in trainer.adapters.b.items():
        assert torch.allclose(again.adapters.b[k], v, atol=1e-2, rtol=1e-2)  # stored as bfloat16

    assert _served_shift(base, shipped, meta) is True


def test_no_token_shift_trains_and_exports_an_unshifted_model(tiny_model_dir, tmp_path):
    """The A/B arm: without the shift no anchor token is read before slot 0, and the export says so."""
    from dgls.engine.train.adapt import AdaptTrainer, export_delta

    base = _tiny_base(tiny_model_dir, tmp_path)
    args = _args(tmp_path / "run", base, 1)
    args.no_token_shift = True
    trainer = AdaptTrainer(args, corpus=_corpus(), log=lambda m: None)
    assert trainer.next_batch().anchors is None
    assert torch.isfinite(torch.tensor(trainer.step()["loss"]))
    trainer.save()
    shipped = export_delta(tmp_path / "run", tmp_path / "shipped")
    meta = json.loads((shipped / "adapter.json").read_text())
    assert meta["config"]["token_shift"] is False
    assert _served_shift(base, shipped, meta) is False


def test_adapt_steps_under_bf16_autocast(tiny_model_dir, tmp_path):
    """What a CUDA machine runs (bf16 autocast), on the CPU: finite losses, adapters still float32."""
    from dgls.engine.train.adapt import AdaptTrainer

    base = _tiny_base(tiny_model_dir, tmp_path)
    trainer = AdaptTrainer(_args(tmp_path / "run", base, 2), corpus=_corpus(), log=lambda m: None)
    trainer.bf16 = True
    losses = [trainer.step()["loss"] for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in trainer.adapters.parameters())
    assert any(float(b.abs().sum()) > 0 for b in trainer.adapters.b.values())
