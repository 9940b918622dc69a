"""The lean CPU decoder forward against transformers' module-by-module decoder, and the suffix window."""

from __future__ import annotations

import pytest
import torch
from dgls.engine import Engine, InfillRequest
from dgls.engine.denoise import decoder_hidden
from dgls.engine.fast_decoder import FastDecoder, unsupported_reason
from dgls.engine.types import EngineError


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(str(tiny_model_dir))


def _cache(engine, prompt_len: int, batch: int):
    ids = torch.randint(4, engine.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(prompt_len))
    stats = type("Stats", (), {})()
    cache = engine._encode_prefix(ids.tolist(), None, stats)
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    return cache


@pytest.mark.parametrize("batch,length,prompt_len", [(1, 1, 5), (1, 32, 60), (3, 17, 300), (2, 64, 40)])
@pytest.mark.parametrize("self_conditioned", [False, True])
def test_lean_decoder_matches_transformers(engine, batch, length, prompt_len, self_conditioned):
    """Sliding + full layers, GQA, MoE, a cached prefix longer than the sliding window: same hidden states."""
    model = engine.model
    assert engine._fast_decoder is not None
    gen = torch.Generator().manual_seed(batch * 1000 + length)
    canvas = torch.randint(4, engine.vocab_size, (batch, length), generator=gen)
    positions = torch.arange(prompt_len, prompt_len + length)[None]
    hidden = model.config.get_text_config().hidden_size
    soft = torch.randn(batch, length, hidden, generator=gen) * 3 if self_conditioned else None
    cache = _cache(engine, prompt_len, batch)
    with torch.inference_mode():
        expected = decoder_hidden(model, canvas, cache, positions, soft)
        got = engine._fast_decoder(canvas, cache, positions, soft)
        again = engine._fast_decoder(canvas, cache, positions + 1, soft)  # new positions: rotary tables rebuilt
        shifted = decoder_hidden(model, canvas, cache, positions + 1, soft)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(again, shifted, atol=2e-5, rtol=1e-4)


def test_lean_decoder_prefix_buffers_never_go_stale(engine):
    """Steps reuse one [prefix | canvas] buffer per request; a new cache (same shapes, other
    prefix) or a new canvas must never see keys left from before."""
    model, fast = engine.model, engine._fast_decoder
    gen = torch.Generator().manual_seed(7)
    positions = torch.arange(50, 50 + 24)[None]
    first, second = _cache(engine, 50, 1), _cache(engine, 50, 1)
    second.layers[0].keys.add_(1.0)  # same shapes, different contents
    with torch.inference_mode():
        for cache in (first, first, second, first):
            canvas = torch.randint(4, engine.vocab_size, (1, 24), generator=gen)
            expected = decoder_hidden(model, canvas, cache, positions, None)
            torch.testing.assert_close(fast(canvas, cache, positions, None), expected, atol=2e-5, rtol=1e-4)
        fast.release()
        assert fast._kv == [] and fast._kv_cache is None


def test_lean_decoder_declines_models_it_cannot_run(tiny_model_dir):
    engine = Engine(str(tiny_model_dir), dtype="bfloat16")
    assert unsupported_reason(engine.model) == "not float32 on the CPU"
    assert engine._fast_decoder is None and engine.info()["decoder"] == "transformers"
    with pytest.raises(ValueError, match="cannot run this model"):
        FastDecoder(engine.model)
    assert engine.infill(InfillRequest(prefix="def f(x):\n    return ", suffix="\n")).status == "ok"


def test_suffix_window_sets_the_canvas(tiny_model_dir):
    suffix = "\n".join(f"line_{i} = {i}" for i in range(40))
    req = InfillRequest(prefix="x = 1\n", suffix=suffix, max_tokens=8, seed=0)
    windowed = Engine(str(tiny_model_dir), suffix_window=4).infill(req)
    whole = Engine(str(tiny_model_dir), suffix_window=None).infill(req)
    assert windowed.stats.canvas_length == 8 + 4 and windowed.stats.suffix_tokens == 4 and windowed.stats.suffix_cut
    assert whole.stats.canvas_length == 64 and whole.stats.suffix_tokens == 64 - 8
    near_eof = Engine(str(tiny_model_dir), suffix_window=16).infill(InfillRequest(prefix="x = ", suffix="\n", max_tokens=8))
    assert near_eof.stats.canvas_length == 8 + 16 and not near_eof.stats.suffix_cut  # eos, then pad to the window
    with pytest.raises(EngineError, match="suffix_window"):
        Engine(str(tiny_model_dir), suffix_window=0)


def test_truncated_soft_embedding_is_the_default_only_for_large_vocabularies(engine, tiny_model_dir):
    from dgls.engine.engine import default_soft_eps

    assert default_soft_eps(8192) == 0.0 and default_soft_eps(262_144) == 0.01
    assert engine.info()["soft_eps"] == 0.0
    assert Engine(str(tiny_model_dir), soft_eps=0.05).info()["soft_eps"] == 0.05


def test_suffix_window_auto_is_narrow_on_the_cpu(engine, tiny_model_dir):
    assert engine.info()["suffix_window"] == 16
    with pytest.raises(EngineError, match="suffix_window"):
        Engine(str(tiny_model_dir), suffix_window="wide")


def test_span_budget_keeps_a_quarter_of_the_canvas_for_the_suffix(engine):
    assert engine.info()["max_span_tokens"] == 48  # canvas 64
    res = engine.infill(InfillRequest(prefix="def f():\n", suffix="\n" * 50, max_tokens=500, steps=1))
    assert res.stats.span_budget == 48


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_answers_the_same_with_either_decoder(tiny_model_dir, seed):
    """Float32 rounding differences (~1e-6) do not change what the engine writes."""
    req = InfillRequest(prefix="def mean(values):\n    total = 0\n", suffix="\n    return total / len(values)\n",
                        max_tokens=16, seed=seed)
    lean = Engine(str(tiny_model_dir)).infill(req)
    stock = Engine(str(tiny_model_dir), fast_decoder=False).infill(req)
    assert lean.text == stock.text and lean.stats.steps == stock.stats.steps


def test_lean_decoder_packs_unused_head_dims_and_skips_identity_layers(tiny_model_dir):
    """A model hosting a narrower q/k head in a wider one (every other rotary pair zero, as the
    Gemma 3 conversion hosts 256 dims in 768) and an identity last layer: the lean forward drops
    the unused dims and the layer, and still gives the module path's hidden states."""
    engine = Engine(str(tiny_model_dir))
    model = engine.model
    with torch.no_grad():
        for layer in model.model.decoder.layers:  # the encoder shares these weights
            attn = layer.self_attn
            hd = attn.head_dim
            unused = (torch.arange(hd // 2) % 2 == 1).repeat(2)
            for lin in (attn.q_proj, attn.k_proj):
                lin.weight.view(-1, hd, lin.weight.shape[-1])[:, unused] = 0
        last = model.model.decoder.layers[-1]
        last.post_attention_layernorm.weight.zero_()
        last.post_feedforward_layernorm.weight.zero_()
    fast = FastDecoder(model)
    sliding = [layer for layer in fast.layers if layer.has_v]
    assert sliding and all(layer.keep is not None and layer.qk_dim == layer.head_dim // 2 for layer in sliding)
    assert fast.layers[-1].identity and not any(layer.identity for layer in fast.layers[:-1])
    gen = torch.Generator().manual_seed(3)
    for batch, length, prompt_len in [(1, 24, 60), (2, 9, 300)]:
        canvas = torch.randint(4, engine.vocab_size, (batch, length), generator=gen)
        positions = torch.arange(prompt_len, prompt_len + length)[None]
        soft = torch.randn(batch, length, model.config.get_text_config().hidden_size, generator=gen)
        cache = _cache(engine, prompt_len, batch)
        with torch.inference_mode():
            expected = decoder_hidden(model, canvas, cache, positions, soft)
            for _ in range(2):  # the second step reuses the packed prefix buffers
                torch.testing.assert_close(fast(canvas, cache, positions, soft), expected, atol=2e-5, rtol=1e-4)


def test_rotary_kept_dims_are_whole_pairs():
    from dgls.engine.fast_decoder import rotary_kept_dims

    q, k = torch.zeros(2 * 8, 4), torch.zeros(8, 4)
    assert rotary_kept_dims(q, k, 8) is None  # all zero: nothing to pack
    q.view(2, 8, 4)[1, 1] = 1.0  # one head uses dim 1; its rotary partner is dim 5
    assert rotary_kept_dims(q, k, 8).tolist() == [1, 5]
    k.view(1, 8, 4)[0, 6] = 1.0  # a key uses dim 6 (pair 2)
    assert rotary_kept_dims(q, k, 8).tolist() == [1, 2, 5, 6]
    assert rotary_kept_dims(torch.ones(16, 4), k, 8) is None
