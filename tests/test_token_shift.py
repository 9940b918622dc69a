"""The token shift: the prompt's last token opens the decoder's input, output i predicts slot i."""

from __future__ import annotations

import json
import random

import pytest
import torch
from dgls.engine.canvas import SpecialTokens, shift_in, split_anchor


def test_split_anchor_moves_the_last_prompt_token():
    assert split_anchor([2, 10, 11, 12]) == ([2, 10, 11], 12)
    assert split_anchor([2]) == ([2], 2)  # bos alone stays in the encoder too


def test_shift_in_reads_the_anchor_then_all_but_the_last_slot():
    canvas = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    assert shift_in(canvas, torch.tensor(3)).tolist() == [[3, 5, 6, 7], [3, 9, 10, 11]]
    assert shift_in(canvas, torch.tensor([3, 4])).tolist() == [[3, 5, 6, 7], [4, 9, 10, 11]]


@pytest.fixture(scope="module")
def shift_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny checkpoint with `token_shift: true` in its config."""
    import shutil

    out = tmp_path_factory.mktemp("shift-model")
    for path in tiny_model_dir.iterdir():
        shutil.copy2(path, out / path.name)
    config = json.loads((out / "config.json").read_text())
    config["token_shift"] = True
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_engine_encodes_all_but_the_last_token_and_feeds_it_to_the_decoder(shift_model_dir):
    from dgls.engine import Engine, InfillRequest

    engine = Engine(str(shift_model_dir), device="cpu", fast_decoder=False)  # the module path, hookable
    assert engine.info()["token_shift"] is True
    seen = []
    hook = engine.model.model.decoder.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    prefix = "x = 1\ny = "
    res = engine.infill(InfillRequest(prefix=prefix, suffix="\nz = 3\n", doc_id="d", single_line=True))
    hook.remove()
    assert res.status == "ok"
    ids = engine.tokenize(prefix)
    assert res.stats.prefix_tokens == 1 + len(ids) - 1  # bos + prefix, less the anchor
    assert seen and all(int(x[0, 0]) == ids[-1] for x in seen)  # every decoder pass starts with it
    # the cached prompt is exactly the encoder's: a second request reuses all of it
    again = engine.infill(InfillRequest(prefix=prefix, suffix="\nz = 3\n", doc_id="d", single_line=True))
    assert again.stats.prefix_tokens_encoded == 0
    lean = Engine(str(shift_model_dir), device="cpu")  # the lean CPU decoder reads the same shifted input
    assert lean.info()["decoder"] == "lean"
    assert lean.infill(InfillRequest(prefix=prefix, suffix="\nz = 3\n", single_line=True)).text == again.text


def test_training_examples_and_loss_use_the_same_shift(shift_model_dir):
    from dgls.engine.train.objective import (
        Span,
        collate,
        decoder_hidden,
        encode_prompts,
        make_example,
        span_loss,
    )
    from tokenizers import Tokenizer
    from transformers import DiffusionGemmaForBlockDiffusion

    tok = Tokenizer.from_file(str(shift_model_dir / "tokenizer.json"))
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(shift_model_dir))
    special = SpecialTokens.from_config(model.config)
    span = Span("def f(x):\n    return ", "x + 1", "\n\nprint(f(2))\n", "rest_of_line")
    plain = make_example(tok, span, special, random.Random(0), 32, 64)
    shifted = make_example(tok, span, special, random.Random(0), 32, 64, shift=True)
    assert shifted.encoder == plain.encoder[:-1] and shifted.anchor == plain.encoder[-1]
    assert torch.equal(shifted.canvas, plain.canvas)  # the targets do not move
    batch = collate([shifted, shifted], special)
    assert batch.anchors.tolist() == [shifted.anchor] * 2
    seen = []
    hook = model.model.decoder.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    decoder_hidden(model, encode_prompts(model, batch), batch, batch.targets)
    hook.remove()
    assert torch.equal(seen[0], shift_in(batch.targets, batch.anchors))
    loss, info = span_loss(model, batch, torch.Generator().manual_seed(0), True, 260, views=2, encoder_grad=False)
    loss.backward()
    assert torch.isfinite(loss) and info["span_tokens"] > 0
    assert model.model.decoder.layers[0].mlp.up_proj.weight.grad is not None


def test_left_to_right_acceptance_takes_slots_in_canvas_order():
    from dgls.engine.denoise import accept_in_order, accept_mask

    entropy = torch.tensor([[0.3, 0.0, 0.1, 2.0, 0.0, 0.3]])
    assert accept_in_order(entropy, 0.5).tolist() == [[True, True, True, True, False, False]]
    assert accept_mask(entropy, 0.5).tolist() == [[True, True, True, False, True, True]]
    assert accept_in_order(torch.tensor([[5.0, 0.0]]), 0.1).tolist() == [[True, False]]  # never stuck


def test_the_model_config_turns_left_to_right_decoding_on(shift_model_dir, tmp_path):
    import shutil

    from dgls.engine import Engine, InfillRequest
    from dgls.engine.denoise import DenoiseSettings

    for path in shift_model_dir.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    config = json.loads((tmp_path / "config.json").read_text())
    config["left_to_right"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    engine = Engine(str(tmp_path), device="cpu")
    assert DenoiseSettings.from_model(engine.model).left_to_right is True
    assert DenoiseSettings.from_model(Engine(str(shift_model_dir), device="cpu").model).left_to_right is False
    res = engine.infill(InfillRequest(prefix="x = ", suffix="\n", single_line=True))
    assert res.status == "ok" and res.stats.steps >= 1
