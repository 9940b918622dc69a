"""The trainer of the embedded default model (the `dgls train` command is engine/train/command.py).

Everything that decides the next step (model, optimizer, step, data RNG, noise RNG) lives in one
checkpoint written atomically every few minutes, so a run killed at the end of a session picks up
where it stopped: `dgls train --out runs/embedded` again. Without a checkpoint but with exported
weights (the committed ones), training continues from those weights with a fresh optimizer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from pathlib import Path

import torch

from ..canvas import SpecialTokens
from . import model as model_mod
from . import tokenizer as tok_mod
from .data import load_training_corpus
from .objective import collate, sample_example, span_loss

DEFAULT_OUT = "runs/embedded"
DEFAULT_EXPORT = str(Path(__file__).resolve().parent.parent / "weights" / "default")
DEFAULT_DELTA = str(Path(__file__).resolve().parent.parent / "weights" / "gemma3")
CHECKPOINT = "checkpoint.pt"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


# ----- state ------------------------------------------------------------------------------------

def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _tokenizer_dir(out: Path, corpus_texts, init_from: Path | None) -> Path:
    tdir = out / "tokenizer"
    if (tdir / "tokenizer.json").exists():
        return tdir
    if init_from is not None and (init_from / "tokenizer.json").exists():
        tdir.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            shutil.copy2(init_from / name, tdir / name)
        return tdir
    print("training the tokenizer on the train split...", flush=True)
    tok_mod.save(tok_mod.train_tokenizer(corpus_texts()), tdir)
    return tdir


def build_model(size: str, vocab_size: int, prefix_tokens: int, seed: int):
    """A freshly initialized model (deterministic for a seed)."""
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(model_mod.make_config(size, vocab_size, prefix_tokens))
    model.generation_config = model_mod.generation_config()
    return model


def _lr_at(step: int, base: float, warmup: int, cooldown_from: int = 0, cooldown_steps: int = 1) -> float:
    """Linear warmup, then constant (the run is open-ended across sessions); an optional linear
    cooldown to 10% before an export that ships (warmup-stable-decay)."""
    lr = base * min(1.0, (step + 1) / max(1, warmup))
    if cooldown_from and step >= cooldown_from:
        lr *= max(0.1, 1.0 - 0.9 * (step - cooldown_from) / max(1, cooldown_steps))
    return lr


class Trainer:
    """Holds the model, optimizer, RNGs and data; `step()` does one optimizer step."""

    def __init__(self, args: argparse.Namespace, corpus=None, log=print):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._corpus = corpus
        init_from = Path(args.init_from) if args.init_from else None
        self.tok_dir = _tokenizer_dir(self.out, lambda: [f.text for f in self.corpus.train], init_from)
        self.tok = tok_mod.load(self.tok_dir)
        ckpt_path = self.out / CHECKPOINT
        self.step_no, self.tokens, self.elapsed = 0, 0, 0.0
        state = torch.load(ckpt_path, weights_only=False) if ckpt_path.exists() else None
        if state is not None:
            self.model = build_model(state["size"], state["vocab_size"], state["prefix_tokens"], args.seed)
            self.model.load_state_dict(state["model"])
            self.log(f"resumed from {ckpt_path} at step {state['step']}")
        elif init_from is not None and (init_from / "model.safetensors").exists():
            from transformers import DiffusionGemmaForBlockDiffusion

            self.model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(init_from), dtype=torch.float32)
            self.model.generation_config = model_mod.generation_config()
            info = init_from / "training_state.json"
            if info.exists():
                prev = json.loads(info.read_text())
                self.step_no, self.tokens, self.elapsed = prev["step"], prev["tokens"], prev["elapsed_s"]
            self.log(f"no checkpoint: starting from exported weights {init_from} (step {self.step_no}), "
                     "fresh optimizer")
        else:
            self.model = build_model(args.size, self.tok.get_vocab_size(), args.prefix_tokens, args.seed)
        if args.experts and hasattr(self.model, "set_experts_implementation"):
            self.model.set_experts_implementation(args.experts)
        self.model.train()
        text = self.model.config.get_text_config()
        self.vocab_size = int(text.vocab_size)
        self.prefix_tokens = int(text.max_position_embeddings) - int(self.model.config.canvas_length)
        self.canvas_length = int(self.model.config.canvas_length)
        self.special = SpecialTokens.from_config(self.model.config)
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "vision" not in n]
        other = [p for n, p in self.model.named_parameters() if p.ndim < 2 and "vision" not in n]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                      {"params": other, "weight_decay": 0.0}],
                                     lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
        self.rng = random.Random(args.seed)
        self.gen = torch.Generator().manual_seed(args.seed)
        self.rewarm: tuple[int, float] | None = None
        self.last_lr = 0.0
        if state is not None:
            self.opt.load_state_dict(state["optimizer"])
            self.step_no, self.tokens, self.elapsed = state["step"], state["tokens"], state["elapsed_s"]
            self.rng.setstate(state["py_rng"])
            self.gen.set_state(state["torch_rng"])
            saved_lr = state.get("lr")
            target = self._schedule(self.step_no)
            if saved_lr and (target > 2 * saved_lr or saved_lr > 2 * target):
                self.rewarm = (self.step_no, saved_lr)  # e.g. continuing after a cooldown
                self.log(f"lr {saved_lr:.2e} -> {target:.2e} linearly over {args.warmup} steps")
        elif self.step_no:
            self.rng = random.Random(args.seed * 1_000_003 + self.step_no)  # new data order after a restart
            self.gen.manual_seed(args.seed * 1_000_003 + self.step_no)

    @property
    def corpus(self):
        if self._corpus is None:
            self._corpus = load_training_corpus()
        return self._corpus

    def _files(self):
        if not hasattr(self, "_weights"):
            self._texts = [f.text for f in self.corpus.train]
            self._weights = list(_cumulative(len(t) for t in self._texts))
        return self._texts, self._weights

    shift = False  # token-shift models (adapt.py) lay the prompt's last token into the canvas

    def next_batch(self, canvas_length: int | None = None):
        texts, cum = self._files()
        examples = []
        while len(examples) < self.args.batch:
            text = self.rng.choices(texts, cum_weights=cum)[0]
            ex = sample_example(self.tok, text, self.rng, self.special, canvas_length or self.canvas_length,
                                self.prefix_tokens, shift=self.shift)
            if ex is not None:
                examples.append(ex)
        return collate(examples, self.special)

    def step(self) -> dict:
        batch = self.next_batch()
        self_cond = self.rng.random() < self.args.self_cond_prob
        lr = self._schedule(self.step_no)
        if self.rewarm is not None:
            start, lr0 = self.rewarm
            frac = (self.step_no - start + 1) / max(1, self.args.warmup)
            lr = lr0 + (lr - lr0) * min(1.0, frac)
        self.last_lr = lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        views = getattr(self.args, "views", 1)
        loss, info = span_loss(self.model, batch, self.gen, self_cond, self.vocab_size,
                               getattr(self.args, "full_noise_prob", 0.0), views)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step_no += 1
        tokens = int(batch.encoder_lengths.sum()) + batch.targets.numel() * views
        self.tokens += tokens
        return {"loss": float(loss.detach()), "lr": lr, "gnorm": float(gnorm), "tokens": tokens, "self_cond": self_cond,
                **info}

    def _schedule(self, step: int) -> float:
        a = self.args
        return _lr_at(step, a.lr, a.warmup, getattr(a, "cooldown_from", 0), getattr(a, "cooldown_steps", 1))

    def state_dict(self) -> dict:
        return {"lr": self.last_lr, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step_no,
                "tokens": self.tokens, "elapsed_s": self.elapsed, "py_rng": self.rng.getstate(),
                "torch_rng": self.gen.get_state(), "size": _size_name(self.model.config),
                "vocab_size": self.vocab_size, "prefix_tokens": self.prefix_tokens, "args": vars(self.args)}

    def save(self) -> None:
        _atomic_save(self.state_dict(), self.out / CHECKPOINT)


def _cumulative(values):
    total = 0
    for v in values:
        total += v
        yield total


def _size_name(config) -> str:
    hidden = config.get_text_config().hidden_size
    for name, spec in model_mod.SIZES.items():
        if spec["hidden_size"] == hidden:
            return name
    raise ValueError(f"no size preset with hidden {hidden}")


def _fmt_time(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ----- export -----------------------------------------------------------------------------------

def export(run_dir: str | Path, dest: str | Path) -> Path:
    """Write safetensors + config + generation config + tokenizer (+ training_state.json) to `dest`."""
    run_dir, dest = Path(run_dir), Path(dest)
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)
    model = build_model(state["size"], state["vocab_size"], state["prefix_tokens"], 0)
    model.load_state_dict(state["model"])
    model.eval()
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.export-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    for name in TOKENIZER_FILES:
        shutil.copy2(run_dir / "tokenizer" / name, tmp / name)
    info = {"step": state["step"], "tokens": state["tokens"], "elapsed_s": round(state["elapsed_s"], 1),
            "parameters_text": model_mod.vision_free_parameters(model),
            "parameters_total": sum(p.numel() for p in model.parameters()), "args": state["args"]}
    (tmp / "training_state.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    for path in tmp.iterdir():
        os.replace(path, dest / path.name)
    tmp.rmdir()
    return dest
