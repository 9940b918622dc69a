"""Layout B: the chat-template prompt, the free canvas that may end with end-of-sequence, long files
cut on both sides by tokens, and answers that never repeat the code after the gap."""

from __future__ import annotations

import shutil

import pytest
from dgls.engine.infill_prompt import HOLE, infill_messages
from dgls.engine.layout_b import (
    chat_ids,
    checkpoint_layout,
    finish_text,
    fit_chat_prompt,
    is_instruction_tuned,
    resolve_layout,
    trim_suffix_overlap,
    unfence,
)
from dgls.engine.release_model import RELEASE_DIR
from dgls.engine.types import EngineError
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def tiny_it_dir(tiny_model_dir, tmp_path_factory):
    """The tiny checkpoint with the release's chat template, under an instruction-tuned name."""
    out = tmp_path_factory.mktemp("chat") / "tiny-it"
    shutil.copytree(tiny_model_dir, out)
    shutil.copyfile(RELEASE_DIR / "chat_template.jinja", out / "chat_template.jinja")
    return out


@pytest.fixture(scope="module")
def engine(tiny_it_dir):
    from dgls.engine import Engine

    return Engine(str(tiny_it_dir), device="cpu", dtype="float32")


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_layout_is_chosen_per_checkpoint(tiny_model_dir, tiny_it_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(tiny_model_dir))
    plain, chat = _tokenizer(tiny_model_dir), _tokenizer(tiny_it_dir)
    assert checkpoint_layout(config, plain, str(tiny_model_dir)) == "A"  # no template
    assert checkpoint_layout(config, chat, "google/diffusiongemma-26B-A4B-it") == "B"
    assert checkpoint_layout(config, chat, "/models/my-base-model") == "A"  # a template alone is not enough
    config.infill_layout = "A"
    assert checkpoint_layout(config, chat, str(tiny_it_dir)) == "A"  # the checkpoint's own word wins
    assert resolve_layout("B", config, chat, "x") == "B" and resolve_layout("a", config, chat, "x") == "A"
    with pytest.raises(EngineError, match="chat template"):
        resolve_layout("B", config, plain, "x")
    with pytest.raises(EngineError, match="auto, A or B"):
        resolve_layout("C", config, chat, "x")
    assert is_instruction_tuned("org/model-7b-instruct", config) and not is_instruction_tuned("gemma-italic", config)
    snapshot = "/cache/models--google--diffusiongemma-26B-A4B-it/snapshots/" + "a" * 40
    assert is_instruction_tuned(snapshot, config)  # a snapshot path passed as --model


def test_token_layout_prompt_and_canvas(engine):
    from dgls.engine import InfillRequest

    assert engine.layout == "B"
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    want = chat_ids(engine.tokenizer, infill_messages(prefix, suffix, "python"))
    text = engine.tokenizer.decode(want)
    assert text.startswith("<bos><|turn>user\n") and text.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    assert prefix + HOLE + suffix.rstrip("\n") in text
    drafts: list[str] = []
    res = engine.infill(InfillRequest(prefix=prefix, suffix=suffix, doc_id="d1", steps=3, max_tokens=12,
                                      language="python", on_draft=drafts.append))
    assert res.status == "ok" and res.stats.layout == "B"
    assert res.stats.prefix_tokens == len(want)  # the encoder saw exactly the chat prompt
    entry, common = engine.cache.lookup("d1", want)
    assert entry is not None and entry.ids == want and common == len(want)
    assert res.stats.canvas_length == res.stats.span_budget == 12  # free slots only, no pinned suffix
    assert drafts and res.stats.span_tokens <= 12
    again = engine.infill(InfillRequest(prefix=prefix + "a", suffix=suffix, doc_id="d1", steps=2, max_tokens=12))
    assert again.stats.prefix_tokens_reused > 0  # the prefix cache serves layout B too
    a = engine.infill(InfillRequest(prefix=prefix, suffix=suffix, steps=2, max_tokens=12, layout="A"))
    assert a.stats.layout == "A" and a.stats.canvas_length > 12


def test_long_file_keeps_the_code_nearest_the_gap_on_both_sides(tiny_it_dir):
    tok = _tokenizer(tiny_it_dir)
    prefix = "".join(f"before_{i} = {i}\n" for i in range(3000)) + "x = "
    suffix = "\n" + "".join(f"after_{i} = {i}\n" for i in range(3000))
    ids, kept_prefix, kept_suffix = fit_chat_prompt(tok, prefix, suffix, max_tokens=1500, language="python")
    assert len(ids) <= 1500
    assert prefix.endswith(kept_prefix) and kept_prefix.startswith("before_") and kept_prefix.endswith("before_2999 = 2999\nx = ")
    assert suffix.startswith(kept_suffix) and kept_suffix.startswith("\nafter_0 = 0\n") and kept_suffix.endswith("\n")
    assert kept_prefix.count("\n") > 20 and kept_suffix.count("\n") > 10  # both sides kept, cut at whole lines
    assert len(ids) > 1500 * 0.7  # the room is used, not thrown away
    with pytest.raises(EngineError, match="does not fit"):
        fit_chat_prompt(tok, prefix, suffix, max_tokens=20)


def test_long_file_through_the_engine(tiny_it_dir):
    from dgls.engine import Engine, InfillRequest

    small = Engine(str(tiny_it_dir), device="cpu", dtype="float32", max_prefix_tokens=600)
    prefix = "".join(f"v{i} = {i}\n" for i in range(5000)) + "y = "
    suffix = "\n" + "".join(f"w{i} = {i}\n" for i in range(5000))
    res = small.infill(InfillRequest(prefix=prefix, suffix=suffix, steps=2, max_tokens=8))
    assert res.status == "ok" and res.stats.prefix_tokens <= 600
    assert res.stats.prefix_cut_lines > 4000 and res.stats.suffix_cut


@pytest.mark.parametrize("answer,suffix,expected", [
    ("x + 1\n    return total", "\n    return total\n", "x + 1"),          # the answer ran into the suffix
    ("f(a, b)", "b)", "f(a, "),                                             # a short suffix repeated whole
    ("f(a, b)", "b)\nprint(1)\n", "f(a, b)"),                               # 2 characters alone are no repeat
    ("value = compute()\nresult = value * 2\nprint(result)\n", "\nprint(result)\nmore()\n",
     "value = compute()\nresult = value * 2"),
    ("count += 1", "\n    return count\n", "count += 1"),                   # nothing repeated: unchanged
    ("}", "\n}\n", "}"),                                                   # a lone brace is not a repeat
    ("total = 0\n    for x in xs:\n        total += x\n    return total\n\nprint(f())",
     "\n    return total\n\nprint(f())\n", "total = 0\n    for x in xs:\n        total += x"),
])
def test_suffix_overlap_is_trimmed(answer, suffix, expected):
    assert trim_suffix_overlap(answer, suffix) == expected


@settings(max_examples=200, deadline=None)
@given(middle=st.text(alphabet="abc =+()\n", max_size=40),
       suffix=st.text(alphabet="abcdefg =+()\n", min_size=1, max_size=60),
       k=st.integers(min_value=0, max_value=60))
def test_answer_never_ends_with_the_suffix_head(middle, suffix, k):
    """Whatever the model appends of the suffix's beginning (6+ characters), it is gone."""
    out = trim_suffix_overlap(middle + suffix[:k], suffix)
    for n in range(6, len(suffix) + 1):
        head = suffix[:n]
        assert not (head.strip() and out.endswith(head)), (out, head)


def test_finish_text_cuts_at_end_of_turn_and_unfences(engine):
    from dgls.engine.layout_b import stop_ids

    tok = engine.tokenizer
    stops = stop_ids(engine.model, tok)
    assert {0, 1} <= stops
    canvas = tok("x = 1\n    return x", add_special_tokens=False)["input_ids"] + [1] + [5, 6, 7] + [0] * 3
    text, tokens = finish_text(tok, canvas, stops, "\n    return x\n", single_line=False)
    assert text == "x = 1" and 1 not in tokens and len(tokens) < len(canvas) - 6
    assert unfence("```python\nx = 1\n```") == "x = 1" and unfence("x = `1`") == "x = `1`"
    assert unfence("```python\nx = 1\ny = 2") == "x = 1\ny = 2"  # the budget ended inside the fence
    assert finish_text(tok, tok("a\nb", add_special_tokens=False)["input_ids"], stops, "", True)[0] == "a"
