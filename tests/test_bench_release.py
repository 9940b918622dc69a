"""The release-shapes bench section: one clear line without CUDA, and the same code path measured on
the CPU at the release's configuration with small widths (float32 and 8-bit)."""

from __future__ import annotations

import pytest
from dgls.engine.release_model import SMALL_WIDTHS

from dgls.bench_release import bench_release, format_release, layers_that_fit


def test_without_cuda_the_section_is_one_skipped_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the section would run")
    result = bench_release()
    assert "skipped" in result and "CUDA" in result["skipped"]
    lines = format_release(result)
    assert len(lines) == 1 and "release shapes: skipped" in lines[0]


def test_layers_that_fit_follow_the_device():
    assert layers_that_fit(80 * 2**30) == 30  # bf16 release on an 80 GB GPU: every layer
    assert 5 <= layers_that_fit(24 * 2**30) < 30  # a 24 GB card: some
    assert layers_that_fit(1) == 1


def test_release_shapes_path_runs_on_cpu_with_small_widths():
    text = "def f(x):\n    return x + 1\n\n" * 20
    result = bench_release(device="cpu", repeats=1, steps=1, precisions=("fp32", "8bit"), widths=SMALL_WIDTHS,
                           layers=2, spans=(8,), text=text)
    assert result["layers"] == 2 and set(result["rows"]) == {"fp32", "8bit"}
    for row in result["rows"].values():
        cell = row["spans"]["8"]
        assert cell["p50_ms"] > 0 and cell["canvas_tokens_per_s"] > 0 and cell["tokens_per_forward"] > 0
    assert result["rows"]["8bit"]["weights_gib"] < result["rows"]["fp32"]["weights_gib"]
    table = "\n".join(format_release(result))
    assert "2 of 30 layers" in table and "8bit" in table
