"""`dgls train --base gemma3`: teach the converted Gemma 3 to denoise, on the engine's own canvas.

The pretrained model already writes code left to right; what it must learn is to do so on a
canvas of noise with the code after the span pinned in it. Choices, each to protect the prior
and to fit two CPU cores:

- token shift (canvas.py): output i predicts slot i from the token before it, as Gemma did
  (`--no-token-shift` trains the other way, for the A/B);
- rank-r adapters on every projection plus the new self-conditioning block trained in full; the
  embedding, norms and the folded constants stay frozen, so what ships is a few MB (adapters.py);
- no gradient through the encoder's prompt (its cache is read, as at serving time), several
  noised views per prompt, and short canvases (span budget + 16 suffix tokens, as the engine
  lays them out on a CPU) most of the time.

Resumable like `dgls train`: one checkpoint (adapters, trained parameters, optimizer, RNGs) in
the run directory; `--export DIR` writes the shippable delta.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from ..adapters import Adapters, weight_factors
from ..canvas import SpecialTokens
from .objective import span_loss
from .train import CHECKPOINT, Trainer, _atomic_save

SHORT_CANVAS, LONG_CANVAS, LONG_SHARE = 32, 64, 0.25
DELTA_FILE, META_FILE = "delta.safetensors", "adapter.json"
LOCAL_ARGS = ("init_from_delta", "base_dir", "init_from")  # paths on the training machine: not shipped
# Sampling for the adapted model, chosen on five hand-written single-line infills (not an eval
# set): left to right at temperature 0.8 -> 0.4 with entropy bound 0.1 wrote `out.append(name)`
# and `self.items = item`; at 0.3 -> 0.1 (the embedded model's) every setting repeated tokens
# (`outoutout...`), with or without the left-to-right rule.
GENERATION = dict(max_denoising_steps=16, t_min=0.4, t_max=0.8, entropy_bound=0.1)


def load_base(log=print, base: str | Path | None = None):
    """The converted base (converting it first if needed), its convert.json, and its tokenizer."""
    from tokenizers import Tokenizer
    from transformers import DiffusionGemmaForBlockDiffusion

    from .. import convert

    base = Path(base) if base else convert.convert(log=log)
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(base), dtype=torch.float32)
    info = json.loads((base / "convert.json").read_text())
    return model, info, Tokenizer.from_file(str(base / "tokenizer.json"))


class AdaptTrainer(Trainer):
    """Trainer's loop and data, over the converted Gemma with adapters."""

    def __init__(self, args, corpus=None, log=print):
        self.args, self.log, self._corpus = args, log, corpus
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, info, self.tok = load_base(log, getattr(args, "base_dir", None))
        # the same command on a GPU: weights in float32 there too, the forward under bf16 autocast
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.bf16 = self.device == "cuda"  # bf16 autocast (tests switch it on for the CPU)
        self.shift = not getattr(args, "no_token_shift", False)
        self.model.config.token_shift = self.shift
        layers = len(info["v_scales"])
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.adapters = Adapters(self.model, rank=args.rank, alpha=2.0 * args.rank,
                                 factors=weight_factors(info, layers), layers=layers,
                                 seed=args.seed).to(self.device).attach()
        self.full = {n: p for n, p in self.model.model.decoder.named_parameters() if n.startswith("self_conditioning.")}
        for p in self.full.values():
            p.requires_grad_(True)
        trainable = list(self.adapters.parameters()) + list(self.full.values())
        if args.experts and hasattr(self.model, "set_experts_implementation"):
            self.model.set_experts_implementation(args.experts)
        self.model.train()
        text = self.model.config.get_text_config()
        self.vocab_size = int(text.vocab_size)
        self.prefix_tokens = args.prefix_tokens
        self.canvas_length = LONG_CANVAS
        self.special = SpecialTokens.from_config(self.model.config)
        self.opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
        self.rng = random.Random(args.seed)
        self.gen = torch.Generator().manual_seed(args.seed)
        self.step_no, self.tokens, self.elapsed = 0, 0, 0.0
        self.rewarm, self.last_lr = None, 0.0
        ckpt = self.out / CHECKPOINT
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=False, map_location=self.device)
            self.adapters.load_state_dict(state["adapters"])
            with torch.no_grad():
                for n, p in self.full.items():
                    p.copy_(state["full"][n])
            self.opt.load_state_dict(state["optimizer"])
            self.step_no, self.tokens, self.elapsed = state["step"], state["tokens"], state["elapsed_s"]
            self.rng.setstate(state["py_rng"])
            self.gen.set_state(state["torch_rng"].cpu())
            log(f"resumed from {ckpt} at step {self.step_no}")
        elif getattr(args, "init_from_delta", None) and (Path(args.init_from_delta) / DELTA_FILE).is_file():
            self._start_from_delta(Path(args.init_from_delta))

    def _start_from_delta(self, shipped: Path) -> None:
        """No checkpoint (e.g. a new session): continue from the shipped delta, fresh optimizer."""
        from safetensors.torch import load_file

        meta = json.loads((shipped / META_FILE).read_text())
        if int(meta["rank"]) != self.args.rank:
            raise ValueError(f"the shipped delta has rank {meta['rank']}; pass --rank {meta['rank']}")
        self.adapters.load_delta(self.model, load_file(str(shipped / DELTA_FILE)))
        self.step_no, self.tokens, self.elapsed = meta["step"], meta["tokens"], meta["elapsed_s"]
        self.rng = random.Random(self.args.seed * 1_000_003 + self.step_no)  # new data order after a restart
        self.gen.manual_seed(self.args.seed * 1_000_003 + self.step_no)
        self.log(f"no checkpoint: starting from the shipped delta {shipped} (step {self.step_no}), fresh optimizer")

    def parameters_trained(self) -> int:
        return sum(p.numel() for p in self.adapters.parameters()) + sum(p.numel() for p in self.full.values())

    def step(self) -> dict:
        canvas = LONG_CANVAS if self.rng.random() < LONG_SHARE else SHORT_CANVAS
        batch = self.next_batch(canvas).to(self.device)
        self_cond = self.rng.random() < self.args.self_cond_prob
        lr = self._schedule(self.step_no)
        self.last_lr = lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        views = self.args.views
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            loss, info = span_loss(self.model, batch, self.gen, self_cond, self.vocab_size,
                                   self.args.full_noise_prob, views, encoder_grad=False,
                                   ordered_prob=getattr(self.args, "ordered_noise_prob", 0.0))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.opt.step()
        self.step_no += 1
        tokens = int(batch.encoder_lengths.sum()) + batch.targets.numel() * views
        self.tokens += tokens
        return {"loss": float(loss.detach()), "lr": lr, "gnorm": float(gnorm), "tokens": tokens,
                "self_cond": self_cond, **info}

    def state_dict(self) -> dict:
        return {"lr": self.last_lr, "adapters": self.adapters.state_dict(),
                "full": {n: p.detach().clone() for n, p in self.full.items()},
                "optimizer": self.opt.state_dict(), "step": self.step_no, "tokens": self.tokens,
                "elapsed_s": self.elapsed, "py_rng": self.rng.getstate(), "torch_rng": self.gen.get_state(),
                "args": vars(self.args)}

    def save(self) -> None:
        _atomic_save(self.state_dict(), self.out / CHECKPOINT)


def export_delta(run_dir: str | Path, dest: str | Path) -> Path:
    """Write delta.safetensors + adapter.json (rank, config and generation settings) to `dest`."""
    from safetensors.torch import save_file

    run_dir, dest = Path(run_dir), Path(dest)
    state = torch.load(run_dir / CHECKPOINT, weights_only=False, map_location="cpu")
    model, info, _ = load_base(base=state["args"].get("base_dir"))
    layers = len(info["v_scales"])
    rank = int(state["args"]["rank"])
    adapters = Adapters(model, rank=rank, alpha=2.0 * rank, factors=weight_factors(info, layers), layers=layers)
    adapters.load_state_dict(state["adapters"])
    with torch.no_grad():
        params = dict(model.model.decoder.named_parameters())
        for n, value in state["full"].items():
            params[n].copy_(value)
    dest.mkdir(parents=True, exist_ok=True)
    save_file(adapters.delta_state(model), str(dest / DELTA_FILE))
    meta = {"rank": rank, "alpha": 2.0 * rank, "step": state["step"], "tokens": state["tokens"],
            "elapsed_s": round(state["elapsed_s"], 1),
            "config": {"token_shift": not state["args"].get("no_token_shift", False), "left_to_right": True},
            "generation": GENERATION, "args": {k: v for k, v in state["args"].items() if k not in LOCAL_ARGS}}
    (dest / META_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return dest
