"""Quantized loading (torchao, experts included) on the CPU, the settings that ask for it, and the
memory that `dgls doctor` says a model needs."""

from __future__ import annotations

import pytest
from dgls.engine.types import ModelLoadError


@pytest.fixture(scope="module")
def int8_engine(tiny_model_dir):
    from dgls.engine import Engine

    return Engine(str(tiny_model_dir), device="cpu", dtype="float32", quantize="8bit")


def test_8bit_quantizes_projections_and_experts_once(int8_engine):
    from torchao.quantization import Int8Tensor

    model = int8_engine.model
    dec, enc = model.model.decoder.layers[0], model.model.encoder.language_model.layers[0]
    assert isinstance(dec.experts.gate_up_proj, Int8Tensor) and isinstance(dec.experts.down_proj, Int8Tensor)
    assert isinstance(dec.self_attn.q_proj.weight, Int8Tensor) and isinstance(dec.mlp.down_proj.weight, Int8Tensor)
    assert enc.experts.gate_up_proj is dec.experts.gate_up_proj  # the encoder shares, as the bf16 weights did
    assert not isinstance(dec.router.proj.weight, Int8Tensor)  # routing stays exact
    assert type(model.model.decoder.embed_tokens.weight).__name__ == "Parameter"  # the fused head reads it
    info = int8_engine.info()
    assert info["quantize"] == "8bit" and info["decoder"] == "transformers"


def test_8bit_infill_with_fused_head_and_prefix_cache(int8_engine):
    from dgls.engine import InfillRequest

    prefix = "def total(xs):\n    s = 0\n    for x in xs:\n        "
    first = int8_engine.infill(InfillRequest(prefix=prefix, suffix="\n    return s\n", doc_id="q", steps=3))
    second = int8_engine.infill(InfillRequest(prefix=prefix + "s", suffix="\n    return s\n", doc_id="q", steps=3))
    assert first.status == second.status == "ok"
    assert first.stats.head == "chunked" and first.stats.layout == "A"
    assert second.stats.prefix_tokens_reused > 0 and second.stats.prefix_tokens_encoded < first.stats.prefix_tokens_encoded


def test_8bit_stays_close_to_the_float_model(tiny_model_dir, int8_engine):
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion

    base = DiffusionGemmaForBlockDiffusion.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    ids = torch.randint(4, 200, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = base(input_ids=ids[:, :24], decoder_input_ids=ids[:, 24:]).logits
        got = int8_engine.model(input_ids=ids[:, :24], decoder_input_ids=ids[:, 24:]).logits
    # per weight the error is ~0.4% of the row's largest; a random network spreads it to a few %
    assert (got - want).abs().mean() < 0.15 * want.abs().mean()
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.9


def test_quantized_weights_are_smaller(tiny_model_dir, int8_engine):
    import torch
    from dgls.engine.quantize import weight_bytes
    from transformers import DiffusionGemmaForBlockDiffusion

    base = DiffusionGemmaForBlockDiffusion.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    assert weight_bytes(int8_engine.model) < weight_bytes(base)


def test_estimate_matches_what_loading_measures(tiny_model_dir, int8_engine):
    import torch
    from dgls.engine import memory, quantize
    from transformers import DiffusionGemmaForBlockDiffusion

    counts = memory.count_parameters(int8_engine.config)
    estimated = memory.weight_bytes(counts, "float32", "8bit")
    assert abs(estimated - quantize.weight_bytes(int8_engine.model)) / estimated < 0.02
    base = DiffusionGemmaForBlockDiffusion.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    assert memory.weight_bytes(counts, "float32", None) == quantize.weight_bytes(base)


def test_bad_requests_are_one_line_errors(tiny_model_dir):
    from dgls.engine import Engine

    with pytest.raises(ModelLoadError, match="CUDA"):
        Engine(str(tiny_model_dir), device="cpu", quantize="4bit")
    with pytest.raises(ModelLoadError, match="4bit, 8bit or none"):
        Engine(str(tiny_model_dir), device="cpu", quantize="3bit")


def test_settings_carry_quantize_and_layout():
    from dgls.options import Settings

    settings, problems = Settings().merged({"dgls": {"quantize": "8bit", "infillLayout": "b"}})
    assert settings.quantize == "8bit" and settings.infill_layout == "B" and not problems
    assert settings.engine_key[3] == "8bit"  # a new precision reloads the engine
    again, problems = settings.merged({"quantize": "2bit", "infillLayout": "C"})
    assert again == settings and len(problems) == 2
    assert Settings().merged({"quantize": "none"})[0].quantize is None


def test_release_memory_at_each_precision():
    from dgls.engine.memory import GIB, count_parameters, kv_cache_bytes, need_line, weight_bytes
    from dgls.engine.release_model import release_config

    config = release_config(vision="release")
    counts = count_parameters(config)
    sizes = {q: weight_bytes(counts, "bfloat16", q) for q in (None, "8bit", "4bit")}
    assert sizes[None] == counts.total * 2
    rows = sum(shape[-2] * (shape[0] if len(shape) == 3 else 1) for shape in counts.shapes)
    assert sizes["8bit"] == counts.quantizable + 4 * rows + counts.kept * 2  # a byte a weight, a scale a row
    assert sizes[None] > sizes["8bit"] > sizes["4bit"] and sizes["4bit"] / GIB < 20  # one 24 GB GPU
    # sliding layers stop growing at their window; the 5 full layers (2 KV heads of 512) do not
    text = config.get_text_config()
    assert kv_cache_bytes(text, 2048, "bfloat16") - kv_cache_bytes(text, 1024, "bfloat16") == 5 * 2 * 1024 * 2 * 512 * 2
    need, line = need_line(config, "bfloat16", "4bit", 8192)
    assert "4bit + bfloat16" in line and "8,192 tokens" in line and need > sizes["4bit"]


def test_doctor_prints_memory_before_loading(tiny_model_dir, capsys):
    from dgls.cli import main

    code = main(["doctor", "--model", str(tiny_model_dir), "--device", "cpu", "--no-infill", "--quantize", "8bit"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    need = next(i for i, line in enumerate(lines) if "memory needed" in line)
    model = next(i for i, line in enumerate(lines) if "] model" in line)
    assert need < model and "8bit + float32" in lines[need] and "GiB" in lines[need]
    assert "RAM:" in lines[need + 1] and "memory free" in lines[need + 1]
    assert "layout A" in lines[model] and code in (0, 1)
