"""The keys-only prefill fills the same cache as transformers' full encoder, tensor for tensor."""

from __future__ import annotations

import threading

import pytest
import torch
from dgls.engine.prefill import KeysOnlyPrefill
from dgls.engine.testing import tiny_config
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache


def _model(all_sliding: bool):
    torch.manual_seed(0)
    overrides = {"layer_types": ["sliding_attention"] * 3} if all_sliding else {}
    return DiffusionGemmaForBlockDiffusion(tiny_config(layers=3, **overrides)).eval()


def _cache(model) -> DynamicCache:
    cache = DynamicCache(config=model.config.get_text_config())
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            layer.activate_past_recording()  # as the engine does: keep the whole history
    return cache


def _fill(encode, ids: torch.Tensor, cache: DynamicCache, chunks: list[int]) -> None:
    begin = 0
    for end in chunks:
        encode(ids[:, begin:end], torch.arange(begin, end)[None], cache)
        begin = end


def _full(model):
    def encode(ids, positions, cache):
        model.model.encoder(input_ids=ids, past_key_values=cache, position_ids=positions, use_cache=True)
    return encode


@pytest.mark.parametrize("all_sliding", [False, True], ids=["last-full", "all-sliding"])
@pytest.mark.parametrize("chunks", [[40], [17, 40, 61]], ids=["one-call", "three-calls"])
def test_keys_only_prefill_equals_the_full_encoder(all_sliding, chunks):
    model = _model(all_sliding)
    ids = torch.randint(4, 260, (1, chunks[-1]), generator=torch.Generator().manual_seed(1))
    expected, ours = _cache(model), _cache(model)
    prefill = KeysOnlyPrefill(model)
    with torch.no_grad():
        _fill(_full(model), ids, expected, chunks)
        _fill(prefill.encode, ids, ours, chunks)
    assert len(ours.layers) == len(expected.layers) == 3
    for a, b in zip(ours.layers, expected.layers, strict=True):
        assert a.keys.shape == b.keys.shape and a.keys.shape[-2] == chunks[-1]
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_the_last_layer_skips_its_mlp_and_other_callers_run_the_full_stack():
    model = _model(False)
    last = model.model.encoder.language_model.layers[-1]
    calls = []
    last.mlp.register_forward_hook(lambda *a: calls.append(threading.get_ident()))
    prefill = KeysOnlyPrefill(model)
    ids = torch.randint(4, 260, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        prefill.encode(ids, torch.arange(12)[None], _cache(model))
        assert calls == []
        out = model.model.encoder(input_ids=ids, past_key_values=_cache(model), use_cache=True)
    assert len(calls) == 1 and out.last_hidden_state.shape == (1, 12, 64)
    prefill.close()
    with torch.no_grad():
        model.model.encoder(input_ids=ids, past_key_values=_cache(model), use_cache=True)
    assert len(calls) == 2


def test_a_dropped_engine_frees_its_model_without_the_garbage_collector(tiny_model_dir):
    """The prefill hook lives on the encoder and must not point back to it strongly: a replaced
    model (a reload, a settings change) is freed as soon as its engine is dropped, closed or not."""
    import gc
    import weakref

    from dgls.engine import Engine

    gc.collect()
    for close in (False, True):
        engine = Engine(str(tiny_model_dir))
        encoder = weakref.ref(engine.model.model.encoder)
        if close:
            engine.close()
        gc.disable()
        try:
            del engine
            assert encoder() is None
        finally:
            gc.enable()
