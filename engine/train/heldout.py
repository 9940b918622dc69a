"""Held-out span loss: cross-entropy on training-style canvases at fixed noise levels.

A learning signal independent of the sampler (no self-conditioning), used by `dgls eval --loss`
and comparable across sessions for one seed.
"""

from __future__ import annotations

import random

NOISE_LEVELS = (0.25, 0.5, 1.0)


LOSS_PREFIX_TOKENS = 256


def heldout_loss(model_dir: str | None, files, n: int, seed: int) -> dict[str, float]:
    """Mean span cross-entropy (nats/token) on held-out training-style canvases at fixed noise
    levels, without self-conditioning: a learning signal independent of the sampler."""
    import torch
    import torch.nn.functional as F
    from transformers import DiffusionGemmaForBlockDiffusion

    from ..canvas import SpecialTokens, token_shift
    from ..loading import resolve_model_dir
    from . import objective as obj
    from .tokenizer import load

    path = str(resolve_model_dir(model_dir))
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    tok = load(path)
    special = SpecialTokens.from_config(model.config)
    canvas = int(model.config.canvas_length)
    # the embedded model's whole context; larger models are measured on the same prompt length
    prefix = min(LOSS_PREFIX_TOKENS, int(model.config.get_text_config().max_position_embeddings) - canvas)
    vocab = int(model.config.get_text_config().vocab_size)
    shift = token_shift(model.config)
    rng = random.Random(f"{seed}:loss")
    texts = [f.text for f in files]
    examples = []
    while len(examples) < n:
        ex = obj.sample_example(tok, rng.choice(texts), rng, special, canvas, prefix, shift=shift)
        if ex is not None:
            examples.append(ex)
    out = {}
    with torch.no_grad():
        for level in NOISE_LEVELS:
            gen = torch.Generator().manual_seed(seed)
            total, count = 0.0, 0
            for i in range(0, n, 8):
                batch = obj.collate(examples[i:i + 8], special)
                noisy, _ = obj.add_noise(batch.targets, batch.clamped, vocab, gen,
                                         t=torch.full((batch.targets.shape[0],), level))
                hidden = obj.decoder_hidden(model, obj.encode_prompts(model, batch), batch, noisy)
                logits = obj.lm_logits(model, hidden[batch.span])
                total += float(F.cross_entropy(logits, batch.targets[batch.span], reduction="sum"))
                count += int(batch.span.sum())
            out[f"t={level}"] = total / count
    return out
