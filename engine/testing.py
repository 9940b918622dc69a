"""Tiny random-weight DiffusionGemma checkpoints for tests and benchmarks.

They are real checkpoints: a `DiffusionGemmaConfig` (with a tiny vision config, MoE layers as the
class requires), safetensors weights, a generation config and a byte-level `tokenizer.json`,
written to a directory and loaded through the same code path as any other model.
"""

from __future__ import annotations

from pathlib import Path

from .train.tokenizer import SPECIAL_TOKENS, save_tokenizer


def byte_level_tokenizer():
    """A byte-level BPE with no merges: every byte is a token, specials take ids 0-3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def tiny_config(vocab_size: int = 260, hidden: int = 64, layers: int = 3, canvas_length: int = 64,
                sliding_window: int = 24, max_positions: int = 4096, fill: bool = True, **text_overrides):
    """A small DiffusionGemma config: sliding and full attention layers, MoE, tiny vision tower."""
    from transformers import DiffusionGemmaConfig

    layer_types = ["sliding_attention"] * (layers - 1) + ["full_attention"]
    text = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 4, global_head_dim=hidden // 2,
        num_experts=4, top_k_experts=2, moe_intermediate_size=hidden // 2, sliding_window=sliding_window,
        layer_types=layer_types, max_position_embeddings=max_positions, pad_token_id=0, eos_token_id=1,
        bos_token_id=2,
    )
    text.update(text_overrides)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=16, position_embedding_size=64)
    extra = {"fill_token_id": 3} if fill else {}
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas_length, **extra)


def make_tiny_checkpoint(out: str | Path, seed: int = 0, steps: int = 12, **config_kwargs) -> Path:
    """Write a random-weight tiny DiffusionGemma checkpoint with a byte-level tokenizer to `out`."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig,
        EntropyBoundSamplerConfig,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(tiny_config(**config_kwargs)).eval()
    model.generation_config = DiffusionGemmaGenerationConfig(
        max_denoising_steps=steps, sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
        t_min=0.4, t_max=0.8, stability_threshold=1, confidence_threshold=0.005,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    model.save_pretrained(str(out))
    save_tokenizer(byte_level_tokenizer(), out)
    return out
