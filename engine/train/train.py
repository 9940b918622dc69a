"""`dgls train`: train the embedded default model on the CPU, resumably.

Everything that decides the next step (model, optimizer, step, data RNG, noise RNG) lives in one
checkpoint written atomically every few minutes, so a run killed at the end of a session picks up
where it stopped: `dgls train --out runs/embedded` again. Without a checkpoint but with exported
weights (the committed ones), training continues from those weights with a fresh optimizer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sys
import time
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for `dgls train` / `python -m dgls.engine.train`."""
    parser.add_argument("--out", default=DEFAULT_OUT, help="run directory: checkpoint, tokenizer, loss.tsv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--size", default="default", choices=sorted(model_mod.SIZES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cooldown-from", type=int, default=0, metavar="STEP",
                        help="from this step decay the lr linearly to 10%% over --cooldown-steps (0: off)")
    parser.add_argument("--cooldown-steps", type=int, default=300)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--full-noise-prob", type=float, default=0.25,
                        help="share of examples noised at t=1 (the rest: t ~ U(0,1])")
    parser.add_argument("--self-cond-prob", type=float, default=0.5)
    parser.add_argument("--views", type=int, default=1,
                        help="noised copies of each canvas per encoder pass over its prompt")
    parser.add_argument("--prefix-tokens", type=int, default=model_mod.PREFIX_TOKENS)
    parser.add_argument("--steps", type=int, default=0, help="stop at this global step (0: no limit)")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes (0: no limit)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--experts", default="eager",
                        help="transformers experts implementation for training (eager is fastest on CPU)")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--init-from", default=DEFAULT_EXPORT,
                        help="exported weights to start from when the run has no checkpoint")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="write the shippable checkpoint from the latest checkpoint to DIR and exit")
    parser.add_argument("--base", default="none", choices=("none", "gemma3"),
                        help="gemma3: adapt the converted Gemma 3 270M with adapters (see adapt.py)")
    parser.add_argument("--rank", type=int, default=16, help="adapter rank (--base gemma3)")
    parser.add_argument("--ordered-noise-prob", type=float, default=0.0,
                        help="share of canvases noised left to right (clean head, noised tail; --base gemma3)")
    parser.add_argument("--init-from-delta", default=DEFAULT_DELTA,
                        help="--base gemma3 without a checkpoint: continue from this shipped delta directory")
    parser.add_argument("--base-dir", default=None, help=argparse.SUPPRESS)  # tests: a converted checkpoint


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


# ----- main loop --------------------------------------------------------------------------------

def _trim_loss_log(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (that work is redone)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [ln for ln in lines if ln.startswith("step") or int(ln.split("\t", 1)[0]) <= step]
    path.write_text("\n".join(kept) + ("\n" if kept else ""))


# Per-invocation options; everything else defaults to what the checkpoint was trained with.
NOT_INHERITED = {"out", "export", "steps", "minutes", "threads", "init_from", "init_from_delta", "base_dir",
                 "checkpoint_minutes", "log_every",
                 "cooldown_from", "cooldown_steps"}


def _inherit_args(args: argparse.Namespace) -> None:
    """On resume, options left at their defaults take the checkpoint's values (batch, lr, ...),
    so `dgls train --out DIR` continues the same run; options given explicitly win."""
    ckpt = Path(args.out) / CHECKPOINT
    shipped = Path(getattr(args, "init_from_delta", None) or "") / "adapter.json"
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False, map_location="cpu").get("args", {})
    elif getattr(args, "base", "none") == "gemma3" and getattr(args, "init_from_delta", None) and shipped.is_file():
        saved = json.loads(shipped.read_text()).get("args", {})  # a new session continues the shipped run
    else:
        return
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    changed = []
    for key, value in saved.items():
        if key in NOT_INHERITED or key not in defaults:
            continue
        if getattr(args, key) == defaults[key] and value != defaults[key]:
            setattr(args, key, value)
            changed.append(f"{key}={value}")
    if changed:
        print("resuming with the checkpoint's " + ", ".join(changed), flush=True)


def run(args: argparse.Namespace) -> int:
    """Train until --steps/--minutes or a signal; checkpoint every --checkpoint-minutes."""
    torch.set_num_threads(max(1, args.threads))
    adapt = getattr(args, "base", "none") == "gemma3"
    if args.export:
        if adapt:
            from .adapt import export_delta

            dest = export_delta(args.out, args.export)
        else:
            dest = export(args.out, args.export)
        print(f"exported {Path(args.out) / CHECKPOINT} -> {dest}")
        return 0
    _inherit_args(args)
    if adapt:
        from .adapt import AdaptTrainer

        trainer = AdaptTrainer(args, log=lambda msg: print(msg, flush=True))
    else:
        trainer = Trainer(args, log=lambda msg: print(msg, flush=True))
    trainer._files()  # read the corpus before the clock starts
    model = trainer.model
    n_text = model_mod.vision_free_parameters(model)
    print(f"model: {n_text / 1e6:.2f}M parameters (vision excluded), vocab {trainer.vocab_size}, "
          f"canvas {trainer.canvas_length}, prefix {trainer.prefix_tokens}; threads {torch.get_num_threads()}",
          flush=True)
    loss_log = trainer.out / "loss.tsv"
    _trim_loss_log(loss_log, trainer.step_no)
    if not loss_log.exists():
        loss_log.write_text("step\tloss\tacc\tt_mean\tself_cond\tlr\tgnorm\ttokens\telapsed_s\n")
    stop = {"flag": False}

    def _on_signal(signum, frame):  # finish the step, checkpoint, exit
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    started = time.time()
    start_elapsed = trainer.elapsed
    last_ckpt = time.time()
    window: list[tuple[float, int, float]] = []
    with loss_log.open("a") as fh:
        while not stop["flag"]:
            if args.steps and trainer.step_no >= args.steps:
                break
            if args.minutes and time.time() - started >= args.minutes * 60:
                break
            t0 = time.time()
            info = trainer.step()
            dt = time.time() - t0
            trainer.elapsed = start_elapsed + (time.time() - started)
            if not math.isfinite(info["loss"]):
                print(f"non-finite loss at step {trainer.step_no}; stopping without saving", flush=True)
                return 1
            fh.write(f"{trainer.step_no}\t{info['loss']:.4f}\t{info['acc']:.4f}\t{info['t_mean']:.3f}\t"
                     f"{int(info['self_cond'])}\t{info['lr']:.2e}\t{info['gnorm']:.3f}\t{trainer.tokens}\t"
                     f"{trainer.elapsed:.1f}\n")
            fh.flush()
            window.append((info["loss"], info["tokens"], dt))
            if trainer.step_no % args.log_every == 0:
                loss = sum(w[0] for w in window) / len(window)
                tps = sum(w[1] for w in window) / max(1e-9, sum(w[2] for w in window))
                print(f"step {trainer.step_no} loss {loss:.4f} tokens/s {tps:.0f} tokens {trainer.tokens} "
                      f"elapsed {_fmt_time(trainer.elapsed)}", flush=True)
                window.clear()
            if time.time() - last_ckpt >= args.checkpoint_minutes * 60:
                trainer.save()
                last_ckpt = time.time()
                print(f"checkpoint at step {trainer.step_no}", flush=True)
    trainer.save()
    print(f"checkpoint at step {trainer.step_no}; done", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m dgls.engine.train`."""
    parser = argparse.ArgumentParser(prog="dgls train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
