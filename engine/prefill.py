"""Prefill: the encoder pass that fills the prefix cache, without the work nothing reads.

The decoder reads only the encoder's keys and values; the encoder's output hidden states go
nowhere at inference. So the last encoder layer needs only its key/value projections: its
queries, attention, output projection, MLP and MoE are dead work (about half of a two-layer
model's prefill, about 1/L of an L-layer one's). A forward pre-hook on that layer stores its
keys and values into the cache the way its attention would, then stops the forward.

The hook acts only inside `KeysOnlyPrefill.encode` on the calling thread: `generate()`,
training and any other caller of the same model run the full stack. Tests compare the cache
with the full encoder's, tensor for tensor.
"""

from __future__ import annotations

import threading
import weakref

import torch
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import apply_rotary_pos_emb


class _KeysStored(Exception):
    """Raised by the last layer's hook once its keys/values are in the cache."""


def store_layer_keys(layer, hidden: torch.Tensor, position_embeddings, cache) -> None:
    """One encoder layer's keys/values into `cache`, as its attention computes them."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    shape = (*x.shape[:-1], -1, attn.head_dim)
    keys = attn.k_proj(x).view(shape)
    values = attn.v_proj(x).view(shape) if attn.v_proj is not None else keys
    cos, sin = position_embeddings
    keys = apply_rotary_pos_emb(attn.k_norm(keys), cos, sin, unsqueeze_dim=2).transpose(1, 2)
    values = attn.v_norm(values).transpose(1, 2)
    cache.update(keys, values, attn.layer_idx)


class KeysOnlyPrefill:
    """Runs a model's encoder for its cache only, skipping everything after the last K/V."""

    def __init__(self, model) -> None:
        # weakly: the hook below lives on the encoder, so a strong reference back would make a
        # cycle, and a dropped model would wait for the garbage collector to free its weights
        self._encoder = weakref.ref(model.model.encoder)
        layers = model.model.encoder.language_model.layers
        self._active = threading.local()
        self._handle = layers[len(layers) - 1].register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, layer, args, kwargs):
        if not getattr(self._active, "on", False):
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        store_layer_keys(layer, hidden, kwargs["position_embeddings"], cache)
        raise _KeysStored

    def encode(self, ids: torch.Tensor, positions: torch.Tensor, cache) -> None:
        """Append the keys/values of `ids` (at `positions`) to every layer of `cache`."""
        encoder = self._encoder()
        if encoder is None:
            raise RuntimeError("the model of this prefill is gone")
        self._active.on = True
        try:
            encoder(input_ids=ids, past_key_values=cache, position_ids=positions, use_cache=True)
        except _KeysStored:
            pass
        finally:
            self._active.on = False

    def close(self) -> None:
        """Remove the hook (idempotent); `encode` then runs the full encoder."""
        self._handle.remove()
