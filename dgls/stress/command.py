"""`dgls stress`: run the chosen sections against real `dgls serve` processes and print a report.

Everything runs on this machine over pipes and the loopback interface, against a private copy
of the model (the fault section damages it). The exit status is 1 when any section failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECTIONS = ("fuzz", "cancel", "load", "soak", "faults")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"which to run: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--model", default=None, help="checkpoint to copy and serve (default: the embedded model)")
    parser.add_argument("--messages", type=int, default=10_000, help="fuzz: generated messages (default 10000)")
    parser.add_argument("--cancels", type=int, default=1_000, help="cancel: requests cancelled (default 1000)")
    parser.add_argument("--clients", type=int, default=3, help="load: editors typing at once (default 3)")
    parser.add_argument("--load-seconds", type=float, default=60, help="load: how long they type (default 60)")
    parser.add_argument("--minutes", type=float, default=30, help="soak: how long (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the generated traffic")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (server logs) and print it")


def run_sections(sections: list[str], model_dir: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Each chosen section in order; one that raises is reported as failed, the others still run."""
    from .cancel import run_cancel
    from .faults import run_faults
    from .fuzz import run_fuzz
    from .load import run_load, run_soak

    runners = {
        "fuzz": lambda: run_fuzz(model_dir, workdir, args.messages, seed=args.seed),
        "cancel": lambda: run_cancel(model_dir, workdir, args.cancels, seed=args.seed),
        "load": lambda: run_load(model_dir, workdir, clients=args.clients, seconds=args.load_seconds, seed=args.seed),
        "soak": lambda: run_soak(model_dir, workdir, seconds=args.minutes * 60, seed=args.seed + 100),
        "faults": lambda: run_faults(model_dir, workdir),
    }
    report: dict[str, Any] = {}
    for name in sections:
        started = time.monotonic()
        print(f"dgls stress: {name}...", file=sys.stderr, flush=True)
        try:
            report[name] = runners[name]()
        except Exception as exc:  # a section that cannot run is a failed section, not a failed suite
            report[name] = {"failures": [f"the section could not run: {type(exc).__name__}: {exc}"]}
        report[name]["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A plain-text report: one block per section, figures then failures."""
    lines = []
    for name, figures in report.items():
        failures = figures.get("failures", [])
        lines.append(f"== {name}: {'FAILED' if failures else 'ok'} ({figures.get('wall_seconds', 0)} s)")
        for key, value in figures.items():
            if key in ("failures", "wall_seconds"):
                continue
            if isinstance(value, dict) and key == "scenarios":
                for scenario, detail in value.items():
                    shown = ", ".join(f"{k}={v}" for k, v in detail.items() if k != "message" and k != "error_message")
                    lines.append(f"   {scenario}: {shown}")
                continue
            lines.append(f"   {key}: {value}")
        lines.extend(f"   FAILURE: {failure}" for failure in failures)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .servers import copy_model

    sections = list(dict.fromkeys(args.sections or SECTIONS))
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"dgls stress: unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="dgls-stress-"))
    try:
        model_dir = copy_model(args.model, workdir)
        report = run_sections(sections, model_dir, workdir, args)
    finally:
        if args.keep:
            print(f"dgls stress: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if any(section.get("failures") for section in report.values()) else 0
