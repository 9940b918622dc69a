"""One-line requests stop denoising once their first line is decided (engine/denoise.py)."""

from __future__ import annotations

import dataclasses

import torch
from dgls.engine import Engine, InfillRequest
from dgls.engine.canvas import line_end_ids
from dgls.engine.denoise import (
    CanvasSpec,
    DenoiseSettings,
    SamplerRules,
    denoise,
    reference_step,
)
from dgls.engine.loading import load_model
from dgls.engine.stop_rules import first_line_settled
from transformers import DynamicCache

NL = 9  # the id that ends a line in the hand-made rows below


def test_first_line_settled_needs_every_slot_up_to_the_line_end_accepted_and_unchanged():
    line_end = torch.zeros(16, dtype=torch.bool)
    line_end[NL] = True
    argmax = torch.tensor([[3, 4, NL, 7, 7],   # decided: slots 0-2 accepted and as before
                           [3, 4, NL, 7, 7],   # slot 1 not accepted
                           [3, 5, NL, 7, 7],   # slot 1 changed since the step before
                           [3, 4, 5, 7, 7],    # no line end yet
                           [3, 4, NL, 7, 7]])  # slot 0 is clamped (not span): only 1-2 count
    previous = torch.tensor([[3, 4, NL, 1, 1]] * 5)
    accepted = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1],
                             [0, 1, 1, 0, 0]], dtype=torch.bool)
    span = torch.ones(5, 5, dtype=torch.bool)
    span[4, 0] = False
    assert first_line_settled(argmax, previous, accepted, span, line_end).tolist() == [True, False, False, False, True]
    assert not first_line_settled(argmax, previous, accepted, torch.zeros_like(span), line_end).any()


def test_line_end_ids_marks_line_breaks_and_the_filler(tiny_model_dir):
    eng = Engine(str(tiny_model_dir))
    ends = line_end_ids(eng.tokenizer, eng.vocab_size, eng.special.fill)
    texts = eng.tokenizer.batch_decode([[i] for i in range(len(eng.tokenizer))])
    assert ends.shape == (eng.vocab_size,) and bool(ends[eng.special.fill])
    assert [i for i, t in enumerate(texts) if "\n" in t or "\r" in t] == [i for i in ends.nonzero().flatten().tolist()
                                                          if i != eng.special.fill]


def test_the_loop_stops_when_the_first_line_is_decided(tiny_model_dir):
    """A model whose first two slots are certain and whose third is a line break: with the rule
    the loop stops at step 2 (the first step whose argmax repeats); without it, it runs on."""
    model = load_model(str(tiny_model_dir)).model
    vocab, length, n = model.config.text_config.vocab_size, 12, 6
    prompt = torch.randint(4, vocab, (1, n), generator=torch.Generator().manual_seed(1))
    line_end = torch.zeros(vocab, dtype=torch.bool)
    line_end[NL] = True

    def certain_line(model, cache, spec, rules, inp):
        out = reference_step(model, cache, spec, rules, inp)  # the real model decides the rest
        out.argmax[:, :3] = torch.tensor([5, 6, NL])
        out.sample[:, :3] = out.argmax[:, :3]
        out.entropy[:, :3] = 0.0
        out.entropy[:, 3:] = 5.0  # the rest stays unsure: no other rule would stop the loop
        return out

    settings = dataclasses.replace(DenoiseSettings.from_model(model), steps=10, left_to_right=True)
    spec = CanvasSpec.build(torch.zeros(length, dtype=torch.long), torch.zeros(length, dtype=torch.bool),
                            torch.arange(n, n + length)[None])
    steps = {}
    for name, rule in (("with", line_end), ("without", None)):
        with torch.no_grad():
            cache = DynamicCache(config=model.config.get_text_config())
            model.model.encoder(input_ids=prompt, past_key_values=cache, position_ids=torch.arange(n)[None])
            out = denoise(model, cache, spec, SamplerRules(settings, vocab, line_end=rule), certain_line,
                          generator=torch.Generator().manual_seed(0))
        assert out.canvas[0, :3].tolist() == [5, 6, NL]
        steps[name] = out.steps
    assert steps == {"with": 2, "without": 10}


def test_one_line_requests_get_the_rule_and_one_line_back(tiny_model_dir):
    eng = Engine(str(tiny_model_dir), head="reference")
    seen = []

    def recording_step(model, cache, spec, rules, inp):
        seen.append(rules.line_end is not None)
        return reference_step(model, cache, spec, rules, inp)

    eng._step_fn = lambda: recording_step
    for seed in range(4):
        res = eng.infill(InfillRequest(prefix="def f(x):\n    y = ", suffix="\n    return y\n", single_line=True,
                                       steps=6, seed=seed))
        assert "\n" not in res.text and len(res.tokens) <= res.stats.span_budget
    assert seen and all(seen)
    seen.clear()
    eng.infill(InfillRequest(prefix="x = ", suffix="\n", steps=2, seed=0))  # several lines allowed: no rule
    eng.infill(InfillRequest(prefix="x = ", suffix="\n", span="1 + 2", remask=[(2, 3)], single_line=True,
                             steps=2, seed=0))  # a repair keeps clamped tokens inside the span: no rule
    eng.infill(InfillRequest(prefix="x = ", suffix="\n", span="1 + 2", seed_with_span=True, single_line=True,
                             steps=2, seed=0))  # a rewrite starts from the old line: no rule
    assert seen and not any(seen)
