"""A lean decoder forward for small DiffusionGemma models on the CPU (the gpt-fast idea).

For a model the size of the embedded default, transformers' decoder layer spends most of a
denoising step on per-op overhead: about sixty small ops per layer, seven RMSNorms of five ops
each, and the MoE routed through a grouped-matmul fallback that loops over experts. This forward
reads the same weights and does the same math with fewer, larger ops: q/k/v and gate/up as one
matmul each, fused `rms_norm`, each expert as one matmul pair over the tokens routed to it,
rotary tables reused across the steps of one request, and the cached prefix copied once per
request into a buffer with room for the canvas (not concatenated anew every step). The fused
q/k/v and gate/up weights are copies, so attention and MLP weights take twice their memory: fine
for the small models it is meant for. Tests compare it with `denoise.decoder_hidden` (the module-by-module path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import apply_rotary_pos_emb

MAX_LOOPED_EXPERTS = 16  # a Python loop over experts; many-expert models keep transformers' grouped path


def unsupported_reason(model) -> str | None:
    """Why the lean forward cannot run this model (None: it can)."""
    text = model.config.get_text_config()
    if getattr(text, "use_clipped_linears", False):
        return "clipped linears"
    if getattr(text, "attention_bias", False):
        return "attention bias"
    if int(getattr(text, "num_experts", 0) or 0) > MAX_LOOPED_EXPERTS:
        return f"more than {MAX_LOOPED_EXPERTS} experts"
    if text.hidden_activation != "gelu_pytorch_tanh":
        return f"activation {text.hidden_activation}"
    weight = model.model.decoder.embed_tokens.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return "not float32 on the CPU"
    return None


def _cat_rows(*linears) -> torch.Tensor:
    return torch.cat([lin.weight for lin in linears if lin is not None], dim=0).contiguous()


def rotary_kept_dims(q_weight: torch.Tensor, k_weight: torch.Tensor, head_dim: int) -> torch.Tensor | None:
    """The head dims queries and keys use, as whole rotary pairs (i, i + head_dim/2); None: all.

    A converted model hosts a narrower head in a wider one (dgls's Gemma 3 conversion: 256 of 768
    dims, so that both rotary frequency sets fit); the other rows of q/k are zero in every head.
    """
    rows = torch.cat([q_weight.reshape(-1, head_dim, q_weight.shape[-1]),
                      k_weight.reshape(-1, head_dim, k_weight.shape[-1])])
    used = rows.ne(0).any(dim=2).any(dim=0)
    half = head_dim // 2
    pairs = (used[:half] | used[half:]).nonzero().flatten()
    if len(pairs) in (0, half):  # all used, or none (an all-zero layer: nothing worth packing)
        return None
    return torch.cat([pairs, pairs + half])


def is_identity(layer) -> bool:
    """A layer whose attention and feed-forward outputs are both scaled to zero (e.g. the forced
    last full-attention layer of the Gemma 3 conversion): its output is its input."""
    zero = [getattr(layer, name).weight for name in ("post_attention_layernorm", "post_feedforward_layernorm")]
    return all(not bool(w.any()) for w in zero) and bool((layer.layer_scalar == 1).all())


class _Layer:
    """One decoder layer's weights, repacked for few large ops.

    Queries and keys keep only the head dims they use (`rotary_kept_dims`); the RMSNorm over the
    full head is the norm over the kept dims with its mean rescaled: weight * sqrt(r), eps * r for
    r = head_dim / kept. Values keep every dim (trained adapters may use them all).
    """

    def __init__(self, layer, eps: float) -> None:
        attn = layer.self_attn
        self.eps = eps
        self.identity = is_identity(layer)
        self.head_dim = attn.head_dim
        self.q_heads = attn.q_proj.weight.shape[0] // self.head_dim
        self.kv_heads = attn.k_proj.weight.shape[0] // self.head_dim
        self.has_v = attn.v_proj is not None
        self.scaling = float(attn.scaling)
        self.keep = rotary_kept_dims(attn.q_proj.weight, attn.k_proj.weight, self.head_dim) if self.has_v else None
        q, k = attn.q_proj.weight, attn.k_proj.weight
        self.q_norm, self.k_norm = attn.q_norm.weight, attn.k_norm.weight
        self.qk_dim, self.qk_eps = self.head_dim, eps
        if self.keep is not None:
            ratio = self.head_dim / len(self.keep)
            q, k = (w.view(-1, self.head_dim, w.shape[-1])[:, self.keep].reshape(-1, w.shape[-1]) for w in (q, k))
            self.q_norm, self.k_norm = (w[self.keep] * ratio**0.5 for w in (self.q_norm, self.k_norm))
            self.qk_dim, self.qk_eps = len(self.keep), eps * ratio
        v = [attn.v_proj.weight] if self.has_v else []
        self.qkv = torch.cat([q, k, *v], dim=0).contiguous()
        self.o = attn.o_proj.weight
        self.norms = {name: getattr(layer, name).weight for name in (
            "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
            "post_feedforward_layernorm", "post_feedforward_layernorm_1", "post_feedforward_layernorm_2",
            "pre_feedforward_layernorm_2")}
        self.gate_up = _cat_rows(layer.mlp.gate_proj, layer.mlp.up_proj)
        self.down = layer.mlp.down_proj.weight
        router = layer.router
        # The router scales its normalized input by `scale * hidden**-0.5`: fold that into the projection.
        self.router = (router.proj.weight * (router.scale * router.scalar_root_size)[None, :]).contiguous()
        self.expert_scale = router.per_expert_scale
        self.top_k = int(router.config.top_k_experts)
        self.experts_gate_up = layer.experts.gate_up_proj
        self.experts_down = layer.experts.down_proj
        self.layer_scalar = layer.layer_scalar

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.norms[name], self.eps)

    def attention(self, x: torch.Tensor, rope, kv: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        batch, length, _ = x.shape
        hd, qd = self.head_dim, self.qk_dim
        qkv = F.linear(x, self.qkv)
        q = qkv[..., : self.q_heads * qd].view(batch, length, self.q_heads, qd)
        k_end = (self.q_heads + self.kv_heads) * qd
        k = qkv[..., self.q_heads * qd: k_end].view(batch, length, self.kv_heads, qd)
        v = qkv[..., k_end:].view(batch, length, self.kv_heads, hd) if self.has_v else k
        cos, sin = rope if self.keep is None else (t[..., self.keep] for t in rope)
        q = apply_rotary_pos_emb(F.rms_norm(q, (qd,), self.q_norm, self.qk_eps), cos, sin, unsqueeze_dim=2)
        v = F.rms_norm(v, (hd,), None, self.eps)
        k = apply_rotary_pos_emb(F.rms_norm(k, (qd,), self.k_norm, self.qk_eps), cos, sin, unsqueeze_dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if kv is not None:  # the cached prefix, then this step's canvas in the buffer's tail
            keys, values = kv
            keys[:, :, keys.shape[-2] - length:] = k
            values[:, :, values.shape[-2] - length:] = v
            k, v = keys, values
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scaling,
                                             enable_gqa=self.q_heads != self.kv_heads)
        return F.linear(out.transpose(1, 2).reshape(batch, length, -1), self.o)

    def experts(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The router's top-k experts per token, one matmul pair per expert over its tokens."""
        logits = F.linear(F.rms_norm(residual, (residual.shape[-1],), None, self.eps), self.router)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True) * self.expert_scale[top_i]
        expert = top_i.flatten()
        order = torch.argsort(expert, stable=True)
        token = order // self.top_k
        picked = x[token]
        counts = torch.bincount(expert, minlength=self.experts_gate_up.shape[0]).tolist()
        outs, start = [], 0
        for e, count in enumerate(counts):
            if count:
                gate, up = F.linear(picked[start: start + count], self.experts_gate_up[e]).chunk(2, dim=-1)
                outs.append(F.linear(F.gelu(gate, approximate="tanh") * up, self.experts_down[e]))
                start += count
        out = torch.cat(outs) * top_w.flatten()[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token, out)

    def __call__(self, x: torch.Tensor, rope, kv) -> torch.Tensor:
        if self.identity:  # its keys/values feed only its own attention, whose output is scaled to zero
            return x * self.layer_scalar
        h = self.attention(self.norm(x, "input_layernorm"), rope, kv)
        x = x + self.norm(h, "post_attention_layernorm")
        residual = x
        gate, up = F.linear(self.norm(x, "pre_feedforward_layernorm"), self.gate_up).chunk(2, dim=-1)
        dense = self.norm(F.linear(F.gelu(gate, approximate="tanh") * up, self.down), "post_feedforward_layernorm_1")
        flat = residual.reshape(-1, residual.shape[-1])
        moe = self.experts(self.norm(flat, "pre_feedforward_layernorm_2"), flat).reshape(residual.shape)
        moe = self.norm(moe, "post_feedforward_layernorm_2")
        x = residual + self.norm(dense + moe, "post_feedforward_layernorm")
        return x * self.layer_scalar


class FastDecoder:
    """`decoder_hidden` with the same weights and fewer ops; see the module docstring."""

    def __init__(self, model) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the lean decoder cannot run this model: {reason}")
        decoder = model.model.decoder
        text = decoder.text_config
        self.decoder = decoder
        self.eps = float(text.rms_norm_eps)
        self.layer_types = list(text.layer_types[: text.num_hidden_layers])
        self.layers = [_Layer(layer, self.eps) for layer in decoder.layers[: text.num_hidden_layers]]
        self.embed = decoder.embed_tokens.weight
        self.embed_scale = float(decoder.embed_tokens.scalar_embed_scale)
        sc = decoder.self_conditioning
        self.sc_pre = sc.pre_norm.weight
        self.sc_gate_up = _cat_rows(sc.gate_proj, sc.up_proj)
        self.sc_down = sc.down_proj.weight
        self.final_norm = decoder.norm.weight
        self._rope_positions: torch.Tensor | None = None
        self._rope: dict = {}
        self._kv_cache = None  # the request cache the buffers below were filled from
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _buffers_for(self, cache, canvas_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, [prefix keys | canvas slots] (and values), filled from `cache` once per request.

        A denoising step then writes only its canvas keys/values: concatenating the prefix anew
        every step copied (and, for long files, page-faulted in) the whole prefix per step.
        """
        b, h, n, _ = cache.layers[0].keys.shape
        if self._kv_cache is not cache or self._kv[0][0].shape != (b, h, n + canvas_length, self.layers[0].qk_dim):
            self._kv = []
            for layer, lean in zip(cache.layers, self.layers, strict=True):
                b, h, n, d = layer.keys.shape
                keys = layer.keys.new_empty(b, h, n + canvas_length, lean.qk_dim)
                values = layer.values.new_empty(b, h, n + canvas_length, layer.values.shape[-1])
                keys[:, :, :n] = layer.keys if lean.keep is None else layer.keys[..., lean.keep]
                values[:, :, :n] = layer.values
                self._kv.append((keys, values))
            self._kv_cache = cache
        return self._kv

    def release(self) -> None:
        """Drop the buffers of the last request (they are as large as its prefix cache)."""
        self._kv_cache, self._kv = None, []

    def _rope_for(self, hidden: torch.Tensor, positions: torch.LongTensor) -> dict:
        """Rotary tables, recomputed only when the positions change (they do not between steps)."""
        last = self._rope_positions
        if last is None or last.shape != positions.shape or not torch.equal(last, positions):
            self._rope = {kind: self.decoder.rotary_emb(hidden, positions, kind) for kind in set(self.layer_types)}
            self._rope_positions = positions.clone()
        return self._rope

    @torch.no_grad()
    def __call__(self, canvas: torch.LongTensor, cache, positions: torch.LongTensor,
                 soft_embedding: torch.Tensor | None) -> torch.Tensor:
        embeds = F.embedding(canvas, self.embed) * self.embed_scale
        if soft_embedding is not None:
            normed = F.rms_norm(soft_embedding.to(embeds.dtype), (embeds.shape[-1],), self.sc_pre, self.eps)
            gate, up = F.linear(normed, self.sc_gate_up).chunk(2, dim=-1)
            embeds = embeds + F.linear(F.gelu(gate, approximate="tanh") * up, self.sc_down)
        hidden = F.rms_norm(embeds, (embeds.shape[-1],), None, self.eps)
        rope = self._rope_for(hidden, positions)
        buffers = self._buffers_for(cache, canvas.shape[1]) if cache is not None else [None] * len(self.layers)
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, rope[self.layer_types[i]], buffers[i])
        return F.rms_norm(hidden, (hidden.shape[-1],), self.final_norm, self.eps)
