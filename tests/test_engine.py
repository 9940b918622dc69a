"""Engine tests on a real tiny random-weight DiffusionGemma (sliding + full attention, MoE)."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from dgls.engine import Engine, InfillRequest
from dgls.engine.canvas import SpecialTokens, build_canvas, span_tokens
from dgls.engine.denoise import CanvasSpec, DenoiseSettings, SamplerRules, StepInput, denoise, reference_step
from dgls.engine.loading import load_model
from dgls.kernels.head_types import FillRule
from transformers import DynamicCache


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(str(tiny_model_dir), head="reference")


def _generate_style_eos_padding(tokens: torch.Tensor, eos: int, pad: int) -> torch.Tensor:
    """generate() replaces everything after the first eos of a canvas with pad; do the same."""
    is_eos = tokens == eos
    count = is_eos.cumsum(-1)
    return torch.where((count > 0) & ~((count == 1) & is_eos), torch.full_like(tokens, pad), tokens)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loop_matches_transformers_generate(tiny_model_dir, seed):
    """Nothing clamped, same random stream, no noise-token exclusion: our loop yields exactly
    generate()'s tokens."""
    model = load_model(str(tiny_model_dir)).model
    vocab, length = model.config.text_config.vocab_size, model.config.canvas_length
    prompt = torch.randint(4, vocab, (1, 30 + 7 * seed), generator=torch.Generator().manual_seed(seed))
    n = prompt.shape[1]
    torch.manual_seed(seed)
    expected = model.generate(prompt, max_new_tokens=length)
    torch.manual_seed(seed)
    generate_settings = dataclasses.replace(DenoiseSettings.from_model(model), exclude_noise_tokens=False)
    cache = DynamicCache(config=model.config.get_text_config())
    with torch.no_grad():
        model.model.encoder(input_ids=prompt, past_key_values=cache, position_ids=torch.arange(n)[None])
        spec = CanvasSpec.build(torch.zeros(length, dtype=torch.long), torch.zeros(length, dtype=torch.bool),
                                torch.arange(n, n + length)[None])
        out = denoise(model, cache, spec, SamplerRules(generate_settings, vocab), reference_step)
    ours = _generate_style_eos_padding(out.canvas, eos=1, pad=0)
    assert torch.equal(ours, expected.sequences[:, n:])
    valid = int((ours != 0).sum())
    assert valid / out.forwards == pytest.approx(float(expected.tokens_per_forward[0]))


def test_seeded_runs_are_reproducible(engine):
    req = InfillRequest(prefix="def f(x):\n    return ", suffix="\n", seed=7)
    a, b = engine.infill(req), engine.infill(req)
    assert a.text == b.text and a.confidence == b.confidence
    c = engine.infill(InfillRequest(prefix="def f(x):\n    return ", suffix="\n", seed=8))
    assert c.status == "ok"


def test_prefix_cache_reuse_is_exact(engine):
    """A repeat request re-encodes only the changed tail and gives the same infill as a cold one."""
    body = "".join(f"value_{i} = compute({i}, 'é')\n" for i in range(40))  # far past the sliding window
    suffix = "\nprint('done')\n"
    first = engine.infill(InfillRequest(prefix=body, suffix=suffix, doc_id="doc-a", seed=3))
    assert first.stats.prefix_tokens_reused == 0
    edited = body + "x"  # a one-character edit at the end
    warm = engine.infill(InfillRequest(prefix=edited, suffix=suffix, doc_id="doc-a", seed=3))
    cold = engine.infill(InfillRequest(prefix=edited, suffix=suffix, seed=3))
    assert warm.stats.prefix_tokens_encoded <= 2
    assert warm.stats.prefix_tokens_reused == warm.stats.prefix_tokens - warm.stats.prefix_tokens_encoded
    assert warm.text == cold.text and warm.confidence == pytest.approx(cold.confidence, rel=1e-4)
    # an edit in the middle rolls the cache back to the common prefix
    middle = body.replace("value_20", "other_20")
    mid = engine.infill(InfillRequest(prefix=middle, suffix=suffix, doc_id="doc-a", seed=3))
    cold_mid = engine.infill(InfillRequest(prefix=middle, suffix=suffix, seed=3))
    assert 0 < mid.stats.prefix_tokens_reused < first.stats.prefix_tokens
    assert mid.text == cold_mid.text


def test_prefix_cache_evicts_least_recently_used(tiny_model_dir):
    eng = Engine(str(tiny_model_dir), head="reference", cache_mb=0.25)
    text = "x = 1\n" * 60  # ~180 KB of keys/values per document: one fits the cap, two do not
    for doc in ("a", "b", "c"):
        eng.infill(InfillRequest(prefix=text + doc, doc_id=doc, steps=1))
    assert eng.cache.total_bytes() <= eng.cache.cap_bytes
    assert eng.cache.evictions > 0
    assert eng.cache.documents()[-1] == "c" and "a" not in eng.cache.documents()
    again = eng.infill(InfillRequest(prefix=text + "a", doc_id="a", steps=1))
    assert again.stats.prefix_tokens_reused == 0  # it was evicted


def test_long_prefix_is_cut_at_a_line_boundary(tiny_model_dir):
    eng = Engine(str(tiny_model_dir), head="reference", max_prefix_tokens=200)
    prefix = "".join(f"line {i}\n" for i in range(100)) + "tail = "
    res = eng.infill(InfillRequest(prefix=prefix, suffix="\n", steps=2))
    assert res.stats.prefix_cut_lines > 0
    assert res.stats.prefix_tokens <= 200
    kept = eng.prompt_ids(prefix)
    assert eng.tokenizer.decode(kept, skip_special_tokens=True).startswith("line ")  # starts at a whole line


def test_long_suffix_is_cut_to_the_canvas(engine):
    res = engine.infill(InfillRequest(prefix="a = ", suffix="b = 2\n" * 500, steps=2))
    assert res.stats.suffix_cut
    assert res.stats.suffix_tokens + res.stats.span_budget <= engine.canvas_length


@pytest.mark.parametrize("prefix,suffix", [
    ("", ""), ("", "return 1\n"), ("def f():\n    ", ""), ("s = 'naïve 漢字 🎉'\n", "\n"),
    ("if x:\r\n    y = 1\r\n", "\r\nz = 2\r\n"), ("\tif (x) {\n\t\t", "\n\t}\n"),
])
def test_edge_inputs(engine, prefix, suffix):
    res = engine.infill(InfillRequest(prefix=prefix, suffix=suffix, steps=3))
    assert res.status == "ok"
    assert isinstance(res.text, str)
    assert len(res.confidence) == res.stats.span_tokens
    assert all(0.0 <= c <= 1.0 for c in res.confidence)


def test_span_never_contains_end_of_sequence(engine):
    special = engine.special
    for seed in range(4):
        res = engine.infill(InfillRequest(prefix="x = ", suffix="", seed=seed, steps=4))
        ids = engine.tokenizer.convert_tokens_to_ids(res.tokens)
        assert not set(ids) & set(special.banned_in_span())


def test_threads_share_one_engine(engine):
    reqs = [InfillRequest(prefix=f"item_{i} = ", suffix="\n", seed=i, steps=3) for i in range(4)]
    sequential = [engine.infill(r).text for r in reqs]
    results: dict[int, str] = {}

    def work(i):
        results[i] = engine.infill(reqs[i]).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(4)] == sequential


def test_cancel_mid_denoise_returns_within_a_step(engine):
    cancel = threading.Event()
    heard: list[int] = []

    def on_step(step):
        heard.append(step)
        if step == 2:
            cancel.set()

    res = engine.infill(InfillRequest(prefix="def g():\n", steps=40, on_step=on_step), cancel=cancel)
    assert res.status == "cancelled"
    assert res.stats.steps == 2 and heard == [1, 2]
    assert engine.infill(InfillRequest(prefix="ok = ", steps=2)).status == "ok"  # still usable


def test_span_tokens_cut_at_filler():
    special = SpecialTokens(pad=0, eos=(1,), bos=2, fill=3)
    layout = build_canvas(6, [10, 11], 12, special, middle_ids=[7, 8], pad_to_length=True)
    assert layout.ids.tolist() == [7, 8, 3, 3, 3, 3, 10, 11, 1, 0, 0, 0]
    assert layout.clamped.tolist() == [False] * 6 + [True] * 6
    assert span_tokens(layout.ids.tolist(), 6, special) == [7, 8]


def test_model_without_filler_scores_a_batch_of_budgets(tmp_path):
    """No filler token: several span budgets are denoised together; the most certain one wins."""
    from dgls.engine.testing import make_tiny_checkpoint

    eng = Engine(str(make_tiny_checkpoint(tmp_path / "nofill", fill=False)), head="reference")
    assert eng.special.fill is None
    assert [lay.span_slots for lay in eng._layouts(16, [5, 6, 7])] == [4, 8, 16]
    res = eng.infill(InfillRequest(prefix="total = ", suffix="\nprint(total)\n", max_tokens=16, steps=4))
    assert res.status == "ok" and res.stats.span_budget in (4, 8, 16)
    assert res.stats.span_tokens <= res.stats.span_budget


def test_repair_keeps_good_tokens_and_redenoises_the_bad_ones(engine):
    span = "value = compute(1, 2)"
    bad = (8, 15)  # "compute"
    res = engine.infill(InfillRequest(prefix="x = 1\n", suffix="\n", span=span, remask=[bad], steps=6, seed=2))
    assert res.status == "ok"
    layout = engine._repair_layout(engine._layouts(engine._budget(InfillRequest(prefix="", span=span),
                                                                  engine.tokenize(span)), [])[0], span, [bad])
    free = (~layout.clamped[: layout.span_slots]).nonzero().flatten().tolist()
    assert free == list(range(8, 15 + 4))  # byte-level: one token per character, plus 4 slots of slack
    # the clamped tokens come back unchanged, around whatever the model put in the hole
    assert res.text.startswith("value = ") and res.text.endswith(", 2)")


def test_fused_head_step_matches_the_reference_step(tiny_model_dir):
    """Same canvas, cache and self-conditioning: the fused head gives the reference head's argmax,
    entropy and confidence, and its soft embedding equals softmax(logits/T) @ E * scale."""
    from dgls.engine.denoise import fused_step

    model = load_model(str(tiny_model_dir)).model
    vocab, length, n = model.config.text_config.vocab_size, 24, 20
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, vocab, (1, n), generator=g)
    canvas = torch.randint(4, vocab, (1, length), generator=g)
    template = canvas[0].clone()
    clamped = torch.zeros(length, dtype=torch.bool)
    clamped[16:] = True
    positions = torch.arange(n, n + length)[None]
    spec = CanvasSpec.build(template, clamped, positions)
    settings = DenoiseSettings.from_model(model)

    def run(step_fn, self_cond=None, banned=None, noise=None, fill=None, **kw):
        rules = SamplerRules(settings, vocab, banned, fill)
        return step_fn(model, cache, spec, rules, StepInput(canvas, self_cond, 0.6, noise, g), **kw)

    with torch.no_grad():
        cache = DynamicCache(config=model.config.get_text_config())
        model.model.encoder(input_ids=prompt, past_key_values=cache, position_ids=torch.arange(n)[None])
        ref = run(reference_step, banned=torch.tensor([0, 1]))
        fused = run(fused_step, banned=torch.tensor([0, 1]), impl="chunked")
        assert torch.equal(ref.argmax, fused.argmax)
        torch.testing.assert_close(fused.entropy, ref.entropy, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fused.confidence, ref.confidence, atol=1e-5, rtol=1e-4)
        weight = model.model.decoder.embed_tokens.weight
        scale = model.model.decoder.embed_tokens.scalar_embed_scale
        expected_soft = torch.softmax(ref.self_cond.float(), -1) @ weight * scale
        torch.testing.assert_close(fused.self_cond, expected_soft, atol=1e-4, rtol=1e-4)
        # the next step through each path sees the same self-conditioning
        next_ref = model(decoder_input_ids=canvas, past_key_values=cache, self_conditioning_logits=ref.self_cond,
                           decoder_position_ids=positions).logits.argmax(-1)
        ref2 = run(fused_step, self_cond=fused.self_cond, impl="chunked")
        clamped_free = ~clamped
        assert torch.equal(next_ref[0, clamped_free], ref2.argmax[0, clamped_free])
        # banning each free slot's winner: both heads fall back to the same runner-up
        row_banned = torch.where(clamped, torch.full_like(canvas, -1), ref.argmax)
        ref3 = run(reference_step, noise=row_banned)
        fused3 = run(fused_step, noise=row_banned, impl="chunked")
        assert torch.equal(ref3.argmax, fused3.argmax)
        assert not (ref3.argmax[0, :16] == ref.argmax[0, :16]).any()
        assert torch.equal(ref3.argmax[0, 16:], ref.argmax[0, 16:])
        # the filler rule: a slot may end the span only where the filler has >= 1/2 at temperature 1
        p = torch.softmax(model(decoder_input_ids=canvas, past_key_values=cache,
                                decoder_position_ids=positions).logits.float(), -1)
        fill = int(ref.argmax[0, 0])  # a token that wins somewhere
        middle = p[0, :16, fill].sort().values[7:9]  # between the two middle slots: some pass, some
        threshold = float(middle.mean())  # do not, and none sits on the threshold (a rounding tie)
        ref4 = run(reference_step, noise=row_banned, fill=FillRule(fill, threshold))
        fused4 = run(fused_step, noise=row_banned, fill=FillRule(fill, threshold), impl="chunked")
        assert torch.equal(ref4.argmax, fused4.argmax)
        torch.testing.assert_close(fused4.entropy, ref4.entropy, atol=1e-4, rtol=1e-4)
        low = p[0, :16, fill] < threshold
        assert low.any() and (~low).any()
        assert not (ref4.argmax[0, :16][low] == fill).any()


def test_engine_applies_the_filler_rule_except_in_repairs(tiny_model_dir):
    """The tiny model declares a filler: infills get its end-of-span rule, repairs do not."""
    eng = Engine(str(tiny_model_dir), head="reference")
    rules = []

    def recording_step(model, cache, spec, step_rules, inp):
        rules.append(step_rules.fill)
        return reference_step(model, cache, spec, step_rules, inp)

    eng._step_fn = lambda: recording_step
    eng.infill(InfillRequest(prefix="x = ", suffix="\n", steps=2, seed=0))
    assert rules and set(rules) == {FillRule(eng.special.fill, 0.5)}
    rules.clear()
    eng.infill(InfillRequest(prefix="x = ", suffix="\n", span="1 + 2", remask=[(2, 3)], steps=2, seed=0))
    assert rules and set(rules) == {None}


def test_a_stopped_loop_returns_the_last_steps_draft(tiny_model_dir):
    """on_step hears each finished step; stopped after step 2, the loop returns step 2's argmax
    canvas (the best draft so far), not noise."""
    model = load_model(str(tiny_model_dir)).model
    vocab, length, n = model.config.text_config.vocab_size, 16, 8
    prompt = torch.randint(4, vocab, (1, n), generator=torch.Generator().manual_seed(5))
    argmaxes, heard, cancel = [], [], threading.Event()

    def recording_step(model, cache, spec, rules, inp):
        out = reference_step(model, cache, spec, rules, inp)
        argmaxes.append(out.argmax.clone())
        return out

    def on_step(step):
        heard.append(step)
        if step == 2:
            cancel.set()

    settings = dataclasses.replace(DenoiseSettings.from_model(model), steps=20, confidence=1e-9)
    with torch.no_grad():
        cache = DynamicCache(config=model.config.get_text_config())
        model.model.encoder(input_ids=prompt, past_key_values=cache, position_ids=torch.arange(n)[None])
        spec = CanvasSpec.build(torch.zeros(length, dtype=torch.long), torch.zeros(length, dtype=torch.bool),
                                torch.arange(n, n + length)[None])
        out = denoise(model, cache, spec, SamplerRules(settings, vocab), recording_step,
                      generator=torch.Generator().manual_seed(0), cancel=cancel, on_step=on_step)
    assert out.cancelled and out.steps == 2 and heard == [1, 2] and len(argmaxes) == 2
    assert torch.equal(out.canvas, argmaxes[-1])


def test_noised_slots_may_not_predict_their_own_noise_token(tiny_model_dir):
    """The loop bans, at every step, the token each freshly re-noised slot holds, and only there."""
    model = load_model(str(tiny_model_dir)).model
    vocab, length, n = model.config.text_config.vocab_size, 24, 12
    prompt = torch.randint(4, vocab, (1, n), generator=torch.Generator().manual_seed(3))
    template = torch.randint(4, vocab, (length,), generator=torch.Generator().manual_seed(4))
    clamped = torch.zeros(length, dtype=torch.bool)
    clamped[12:] = True
    calls = []

    def recording_step(model, cache, spec, rules, inp):
        out = reference_step(model, cache, spec, rules, inp)
        calls.append((inp.tokens.clone(), inp.noise.clone(), out.sample.clone(), out.argmax.clone()))
        return out

    settings = dataclasses.replace(DenoiseSettings.from_model(model), steps=6, entropy_bound=0.5, confidence=1e-9)
    with torch.no_grad():
        cache = DynamicCache(config=model.config.get_text_config())
        model.model.encoder(input_ids=prompt, past_key_values=cache, position_ids=torch.arange(n)[None])
        denoise(model, cache, CanvasSpec.build(template, clamped, torch.arange(n, n + length)[None]),
                SamplerRules(settings, vocab), recording_step, generator=torch.Generator().manual_seed(0))
    assert len(calls) > 2
    canvas0, banned0, _, _ = calls[0]
    assert torch.equal(banned0[0, :12], canvas0[0, :12]) and (banned0[0, 12:] == -1).all()
    for (_, _, prev_sample, _), (canvas, banned, _, argmax) in zip(calls[:-1], calls[1:], strict=True):
        kept = banned[0] == -1
        assert kept[12:].all() and not kept[:12].all()
        assert torch.equal(canvas[0, kept], prev_sample[0, kept])  # accepted last step: not noise
        assert torch.equal(canvas[0, ~kept], banned[0, ~kept])  # re-noised: its own token is banned
        assert not (argmax[0, ~kept] == banned[0, ~kept]).any()


def test_prefix_cut_is_stable_under_small_edits(tiny_model_dir):
    """Typing at the end of a file longer than the context keeps the cut, so the cache is reused."""
    eng = Engine(str(tiny_model_dir), head="reference", max_prefix_tokens=300)
    prefix = "".join(f"row_{i} = {i} * 2\n" for i in range(400))
    eng.infill(InfillRequest(prefix=prefix, doc_id="long", steps=1))
    reused = []
    for typed in ("r", "re", "res", "resu"):
        res = eng.infill(InfillRequest(prefix=prefix + typed, doc_id="long", steps=1))
        assert res.stats.prefix_tokens <= 300
        reused.append(res.stats.prefix_tokens_encoded)
    assert max(reused) <= 2  # only the typed character(s) are encoded again
    kept = eng.prompt_ids(prefix)[1:]  # without <bos>
    assert res.stats.prefix_cut_lines > 0 and eng.tokenizer.decode(kept).startswith("row_")
    assert len(kept) >= 150  # at least half the room is kept
