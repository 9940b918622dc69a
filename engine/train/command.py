"""`dgls train`: train the embedded model, or adapt the converted Gemma 3 (`--base gemma3`), resumably.

Runs until --steps/--minutes or a signal, checkpointing every --checkpoint-minutes; `--export DIR`
writes the shippable weights (or delta) from the latest checkpoint. On resume, options left at
their defaults take the checkpoint's values.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch

from . import model as model_mod
from .adapt import AdaptTrainer, export_delta
from .train import CHECKPOINT, DEFAULT_DELTA, DEFAULT_EXPORT, DEFAULT_OUT, Trainer, _fmt_time, export


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
    parser.add_argument("--no-token-shift", action="store_true",
                        help="--base gemma3: output i predicts slot i itself (the A/B against the token shift)")
    parser.add_argument("--init-from-delta", default=DEFAULT_DELTA,
                        help="--base gemma3 without a checkpoint: continue from this shipped delta directory")
    parser.add_argument("--base-dir", default=None, help=argparse.SUPPRESS)  # tests: a converted checkpoint


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
            dest = export_delta(args.out, args.export)
        else:
            dest = export(args.out, args.export)
        print(f"exported {Path(args.out) / CHECKPOINT} -> {dest}")
        return 0
    _inherit_args(args)
    if adapt:
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
