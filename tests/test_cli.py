"""The `dgls` console script, run as a user runs it (a real subprocess, the tiny real model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DGLS = [str(Path(sys.executable).with_name("dgls"))]
SOURCE = "def mean(values):\n    total = 0\n    for v in values:\n        \n    return total / len(values)\n"


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*DGLS, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "mean.py"
    path.write_text(SOURCE, encoding="utf-8")
    return path


def test_infill_json(tiny_model_dir, source):
    proc = run("infill", str(source), "--line", "3", "--col", "8", "--model", str(tiny_model_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["range"]["start"] == {"line": 3, "character": 8}
    assert out["plan"]["kind"] == "block"
    assert {"steps", "decoder_forwards", "tokens_per_forward", "prefix_tokens_encoded", "encode_ms",
            "denoise_ms", "post_ms"} <= set(out["stats"])
    assert out["stats"]["steps"] >= 1 and isinstance(out["text"], str)


def test_infill_selection_plain_text(tiny_model_dir, source):
    proc = run("infill", str(source), "--line", "1", "--col", "4", "--end-line", "1", "--end-col", "13",
               "--model", str(tiny_model_dir), "--steps", "2")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--line", "0", "--col", "0"], "no such file"),
    (["--line", "99", "--col", "0"], "past the end"),
    (["--line", "0", "--col", "99"], "past the end of line 0"),
    (["--line", "-1", "--col", "0"], "negative"),
    (["--line", "0", "--col", "0", "--end-line", "0"], "go together"),
    (["--line", "1", "--col", "8", "--end-line", "0", "--end-col", "0"], "ends before it starts"),
])
def test_infill_bad_positions(source, args, message):
    target = str(source.with_name("missing.py")) if message == "no such file" else str(source)
    proc = run("infill", target, *args, "--model", "/nonexistent")
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def test_infill_binary_and_invalid_utf8(tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x00\x01")
    proc = run("infill", str(binary), "--line", "0", "--col", "0")
    assert proc.returncode == 2 and "binary" in proc.stderr
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"x = '\xe9'\n")
    proc = run("infill", str(latin), "--line", "0", "--col", "0")
    assert proc.returncode == 2 and "not valid UTF-8" in proc.stderr


def test_infill_missing_model_is_one_clear_line(source, tmp_path):
    proc = run("infill", str(source), "--line", "0", "--col", "0", "--model", str(tmp_path / "nope"))
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and proc.stderr.count("\n") == 1


def test_doctor(tiny_model_dir):
    proc = run("doctor", "--model", str(tiny_model_dir), "--no-infill")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "grammars" in proc.stdout and "all good" in proc.stdout


def test_bench_latency_json(tiny_model_dir):
    proc = run("bench", "--model", str(tiny_model_dir), "--only", "latency", "--repeats", "2", "--json",
               timeout=400)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["latency"]["8"]["p50_ms"] > 0 and "skipped" in out["latency"]["128"]
    assert out["peak_rss_mb"] > 0


def test_seeded_prefix_cache_makes_a_repeat_request_encode_only_the_edit(tiny_model_dir):
    from dgls.engine import Engine, InfillRequest

    from dgls.bench import _seed_prefix_cache

    engine = Engine(str(tiny_model_dir), suffix_window=None)
    prefix = "def f(x):\n    return x\n" * 20
    cached = _seed_prefix_cache(engine, "doc", prefix)
    assert engine.cache.documents() == ["doc"] and cached > len(prefix) // 2
    res = engine.infill(InfillRequest(prefix=prefix + "y", suffix="\n", doc_id="doc", steps=2))
    assert res.status == "ok"
    assert res.stats.prefix_tokens_reused >= cached - 2 and res.stats.prefix_tokens_encoded <= 3
