"""Training tooling: the objective matches engine/canvas.py, noise spares clamped slots, resume is exact."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from dgls.engine.canvas import SpecialTokens, build_canvas, encoder_ids
from dgls.engine.testing import byte_level_tokenizer, save_tokenizer
from dgls.engine.train import objective as obj
from dgls.engine.train.data import (
    PACKAGES,
    Corpus,
    SourceFile,
    is_held_out,
    load_corpus,
    load_sources,
    package_roots,
)
from dgls.engine.train.model import make_config
from dgls.engine.train.tokenizer import encode, train_tokenizer

SPECIAL = SpecialTokens(pad=0, eos=(1,), bos=2, fill=3)
CODE = '''import os


class Point:
    """A point."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5


def main():
    p = Point(3, 4)
    for i in range(3):
        print(i, p.norm())
    return 0
'''


@pytest.fixture(scope="module")
def tok():
    return byte_level_tokenizer()


def test_examples_match_engine_canvas(tok):
    rng = random.Random(0)
    kinds = set()
    for _ in range(60):
        span = obj.sample_span(CODE, rng)
        if span is None:
            continue
        assert span.prefix + span.middle + span.suffix == CODE or span.kind == "eof_continuation"
        ex = obj.make_example(tok, span, SPECIAL, random.Random(1), 64, 128)
        if ex is None:
            continue
        kinds.add(ex.kind)
        middle = encode(tok, span.middle)
        suffix = obj.suffix_ids(tok, span.suffix, 64 - ex.span_slots)
        if len(middle) <= ex.span_slots:  # not re-cut to whole lines
            want = build_canvas(ex.span_slots, suffix, 64, SPECIAL, middle_ids=middle, pad_to_length=True)
            assert torch.equal(ex.canvas, want.ids)
            assert torch.equal(ex.clamped, want.clamped)
        assert ex.encoder[0] == SPECIAL.bos
        assert ex.encoder == encoder_ids(obj.fit_prefix(tok, span.prefix, 127), SPECIAL)
        assert ex.canvas[ex.middle_tokens:ex.span_slots].eq(SPECIAL.fill).all()
        assert ex.span_slots in obj.BUDGET_BUCKETS and ex.middle_tokens <= ex.span_slots
    assert {"rest_of_line", "lines", "random"} <= kinds


def test_end_of_file_canvas_has_eos_then_pad(tok):
    span = obj.Span(prefix=CODE[:-10], middle=CODE[-10:-1], suffix="", kind="eof_continuation")
    ex = obj.make_example(tok, span, SPECIAL, random.Random(0), 64, 128)
    assert ex.canvas[ex.span_slots].item() == SPECIAL.first_eos
    assert ex.canvas[ex.span_slots + 1:].eq(SPECIAL.pad).all()
    assert ex.clamped[ex.span_slots:].all() and not ex.clamped[:ex.span_slots].any()


def test_prefix_cut_whole_lines_like_engine(tok):
    ids = obj.fit_prefix(tok, CODE, 40)
    assert 0 < len(ids) <= 40
    text = tok.decode(ids)
    assert CODE.endswith(text) and (CODE[: len(CODE) - len(text)].endswith("\n"))


def test_noise_never_touches_clamped():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(4, 200, (8, 64))
    clamped = torch.zeros(8, 64, dtype=torch.bool)
    clamped[:, 16:] = True
    noisy, t = obj.add_noise(targets, clamped, 260, gen, t=torch.ones(8))
    assert torch.equal(noisy[clamped], targets[clamped])
    assert (noisy[~clamped] != targets[~clamped]).float().mean() > 0.9
    noisy, t = obj.add_noise(targets, clamped, 260, gen)
    assert torch.equal(noisy[clamped], targets[clamped]) and (t > 0).all() and (t <= 1).all()


def test_ordered_noise_keeps_a_clean_head_and_noises_the_tail():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(4, 200, (3, 12))
    clamped = torch.zeros(3, 12, dtype=torch.bool)
    clamped[:, 8:] = True  # 8 span slots, then the suffix
    t = torch.tensor([0.25, 1.0, 0.5])
    ordered = torch.tensor([True, True, False])
    noisy, _ = obj.add_noise(targets, clamped, 100_000, gen, t=t, ordered=ordered)
    changed = noisy != targets  # a 100k vocabulary: a noised slot keeps its token with p 1e-5
    assert changed[0].tolist() == [False] * 6 + [True] * 2 + [False] * 4
    assert changed[1].tolist() == [True] * 8 + [False] * 4
    assert not changed[2, 8:].any() and 0 < int(changed[2, :8].sum()) < 8


def _tiny_model_and_examples(tok, count: int, seed: int):
    """A tiny random DiffusionGemma (seed 0) and `count` training examples drawn from CODE."""
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(make_config("tiny", vocab_size=260, prefix_tokens=64))
    rng = random.Random(seed)
    examples = []
    while len(examples) < count:
        ex = obj.sample_example(tok, CODE, rng, SPECIAL, 64, 64)
        if ex is not None:
            examples.append(ex)
    return model, examples


def test_right_padded_batch_equals_single_examples(tok):
    model, examples = _tiny_model_and_examples(tok, 4, seed=3)
    model.eval()
    examples[0].encoder = examples[0].encoder[:3]
    batch = obj.collate(examples, SPECIAL)
    assert len({len(e.encoder) for e in examples}) > 1
    with torch.no_grad():
        full = obj.decoder_logits(model, obj.encode_prompts(model, batch), batch, batch.targets)
        for i, ex in enumerate(examples):
            one = obj.collate([ex], SPECIAL)
            single = obj.decoder_logits(model, obj.encode_prompts(model, one), one, one.targets)
            torch.testing.assert_close(single[0], full[i], atol=1e-4, rtol=1e-4)


def _args(out: Path, steps: int):
    import argparse

    from dgls.engine.train.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--out", str(out), "--size", "tiny", "--batch", "2", "--steps", str(steps),
                              "--prefix-tokens", "64", "--init-from", "", "--warmup", "2"])


def _run_dir_with_tokenizer(run: Path) -> Path:
    (run / "tokenizer").mkdir(parents=True)
    save_tokenizer(byte_level_tokenizer(), run / "tokenizer")
    return run


def _one_saved_step(tmp_path: Path):
    """A tiny run trained one step and checkpointed: (corpus, trainer)."""
    from dgls.engine.train.train import Trainer

    corpus = Corpus(train=[SourceFile("a.py", CODE)], held_out=[])
    trainer = Trainer(_args(_run_dir_with_tokenizer(tmp_path / "run"), 2), corpus=corpus, log=lambda m: None)
    trainer.step()
    trainer.save()
    return corpus, trainer


def test_resume_gives_identical_continuation(tmp_path):
    from dgls.engine.train.train import Trainer

    corpus = Corpus(train=[SourceFile("a.py", CODE), SourceFile("b.py", CODE.replace("Point", "Vec"))], held_out=[])
    for name in ("straight", "resumed"):
        _run_dir_with_tokenizer(tmp_path / name)
    torch.set_num_threads(1)
    a = Trainer(_args(tmp_path / "straight", 4), corpus=corpus, log=lambda m: None)
    losses_a = [a.step()["loss"] for _ in range(4)]
    b = Trainer(_args(tmp_path / "resumed", 4), corpus=corpus, log=lambda m: None)
    losses_b = [b.step()["loss"] for _ in range(2)]
    b.save()
    del b
    c = Trainer(_args(tmp_path / "resumed", 4), corpus=corpus, log=lambda m: None)
    assert c.step_no == 2
    losses_b += [c.step()["loss"] for _ in range(2)]
    assert losses_a == losses_b
    for (name, p), (_, q) in zip(a.model.named_parameters(), c.model.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_tokenizer_round_trips_code(tmp_path):
    from transformers import AutoTokenizer

    texts = [CODE, CODE.replace("    ", "\t"), CODE.replace("\n", "\r\n"), "s = 'naïve — ünïcødé ∑ 🐍'\n"] * 3
    tok = train_tokenizer(texts, vocab_size=400)
    from dgls.engine.train.tokenizer import save

    save(tok, tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<eos>", "<bos>", "<fill>"]
    for text in texts[:4] + ["\tif x:\r\n\t\treturn '∂'\n", "   \n\n  trailing  "]:
        ids = encode(tok, text)
        assert tok.decode(ids) == text
        assert hf(text, add_special_tokens=False)["input_ids"] == ids
        assert hf.decode(ids) == text


def test_held_out_split_is_by_path_and_disjoint(tmp_path):
    body = "\n".join(f"x{i} = {i}" for i in range(8)) + "\n"
    for i in range(120):
        (tmp_path / f"m{i}.py").write_text(body + f"y = {i}\n")
    (tmp_path / "dup.py").write_text(body + "y = 0\n")  # duplicate of m0.py
    (tmp_path / "empty.py").write_text("# nothing\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "z.py").write_text(body + "z = 1\n")
    corpus = load_corpus(tmp_path, prefix="t")
    train = {f.relpath for f in corpus.train}
    held = {f.relpath for f in corpus.held_out}
    assert not train & held
    assert not {f.text for f in corpus.train} & {f.text for f in corpus.held_out}
    assert all(is_held_out(p) for p in held) and not any(is_held_out(p) for p in train)
    assert len(train) + len(held) == 120
    assert not any("site-packages" in p or "empty" in p for p in train | held)
    rate = sum(is_held_out(f"stdlib/pkg/mod{i}.py") for i in range(20000)) / 20000
    assert 0.02 < rate < 0.04


def test_decoder_logits_match_model_forward():
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(make_config("tiny", vocab_size=260, prefix_tokens=64)).eval()
    ex = obj.sample_example(byte_level_tokenizer(), CODE, random.Random(0), SPECIAL, 64, 64)
    batch = obj.collate([ex], SPECIAL)
    with torch.no_grad():
        cache = obj.encode_prompts(model, batch)
        ours = obj.decoder_logits(model, cache, batch, batch.targets)
        ref = model(decoder_input_ids=batch.targets, past_key_values=cache,
                    decoder_position_ids=batch.decoder_positions).logits
    torch.testing.assert_close(ours, ref)


def test_export_then_restart_from_exported_weights(tmp_path):
    from dgls.engine.train.train import Trainer, export
    from transformers import AutoTokenizer

    corpus, a = _one_saved_step(tmp_path)
    dest = export(tmp_path / "run", tmp_path / "weights")
    names = {p.name for p in dest.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "training_state.json"} <= names
    assert AutoTokenizer.from_pretrained(str(dest)).convert_ids_to_tokens([3]) == ["<fill>"]
    args = _args(tmp_path / "fresh", 2)
    args.init_from = str(dest)
    b = Trainer(args, corpus=corpus, log=lambda m: None)
    assert b.step_no == 1 and not b.opt.state
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    b.step()


def test_resume_inherits_checkpoint_options(tmp_path):
    import argparse

    from dgls.engine.train.command import _inherit_args, add_arguments
    from dgls.engine.train.train import Trainer

    corpus, _ = _one_saved_step(tmp_path)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "run"), "--lr", "1e-4"])
    _inherit_args(args)
    assert (args.batch, args.size, args.prefix_tokens, args.lr) == (2, "tiny", 64, 1e-4)
    b = Trainer(args, corpus=corpus, log=lambda m: None)
    assert b.rewarm is not None  # lr changed > 2x: ramp from the saved lr
    b.step()
    assert 1e-4 < b.last_lr < 5e-4  # halfway from the saved 5e-4 (step 1 of warmup 2) to 1e-4


def test_sources_deduplicate_across_roots_and_keep_their_prefix(tmp_path):
    body = "\n".join(f"x{i} = {i}" for i in range(8)) + "\n"
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        root.mkdir()
    for i in range(40):
        (first / f"a{i}.py").write_text(body + f"a = {i}\n")
        (second / f"b{i}.py").write_text(body + f"b = {i}\n")
    (second / "copy.py").write_text(body + "a = 3\n")  # same content as first/a3.py: the first root wins
    corpus = load_sources([("one", first), ("two", second)])
    paths = {f.relpath for f in corpus.train + corpus.held_out}
    assert len(paths) == 80 and corpus.stats["skipped_duplicate"] == 1
    assert "one/a3.py" in paths and "two/copy.py" not in paths
    assert {p.split("/")[0] for p in paths} == {"one", "two"}
    assert all(is_held_out(f.relpath) for f in corpus.held_out)


def test_package_sources_are_only_the_listed_licensed_packages():
    roots = package_roots()
    assert roots, "the test environment has pytest, networkx, ... installed"
    for prefix, root, label in roots:
        assert prefix in PACKAGES and root.is_dir() and root.name == prefix
        dist, license_id = PACKAGES[prefix]
        assert label.startswith(dist + " ") and label.endswith(f"({license_id})")


def test_views_share_one_encoder_pass_and_spread_noise_levels(tok):
    """`--views`: the encoder runs once per example; its repeated cache gives the decoder exactly
    what encoding every copy would; each example's copies get stratified noise levels."""
    model, examples = _tiny_model_and_examples(tok, 3, seed=5)
    batch = obj.collate(examples, SPECIAL)
    views = 3
    with torch.no_grad():
        shared = obj.encode_prompts(model, batch)
        shared.batch_repeat_interleave(views)
        repeated = obj.repeat_views(batch, views)
        fresh = obj.encode_prompts(model, repeated)
        torch.testing.assert_close(obj.decoder_logits(model, shared, repeated, repeated.targets),
                                   obj.decoder_logits(model, fresh, repeated, repeated.targets))

    t = obj.sample_noise_levels(4 * views, torch.Generator().manual_seed(1), views=views).view(4, views)
    assert (t > 0).all() and (t <= 1).all()
    strata = torch.ceil(t * views).long()  # level (k-1)/views < t <= k/views falls in stratum k
    assert all(sorted(row.tolist()) == [1, 2, 3] for row in strata)

    with pytest.raises(ValueError, match="views must be"):
        obj.sample_noise_levels(7, torch.Generator(), views=3)
    with pytest.raises(ValueError, match="views must be"):
        obj.span_loss(model, batch, torch.Generator(), False, 260, views=0)

    calls = []
    hook = model.model.encoder.register_forward_hook(lambda m, a, kw, out: calls.append(kw["input_ids"].shape[0]),
                                                     with_kwargs=True)
    loss, info = obj.span_loss(model, batch, torch.Generator().manual_seed(0), True, 260, views=views)
    hook.remove()
    loss.backward()
    assert calls == [len(examples)]
    assert info["span_tokens"] == views * int(batch.span.sum())
    assert torch.isfinite(loss)
    assert model.model.encoder.language_model.layers[0].self_attn.k_proj.weight.grad.abs().sum() > 0
