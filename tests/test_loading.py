"""Every way a checkpoint can be wrong gives a one-line ModelLoadError that says what to do."""

from __future__ import annotations

import json
import shutil

import pytest
from dgls.engine import ModelLoadError
from dgls.engine.loading import check_checkpoint_dir, load_model, resolve_model_dir


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _error(model) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(str(model))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_loads_a_real_checkpoint(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    assert type(loaded.model).__name__ == "DiffusionGemmaForBlockDiffusion"
    assert loaded.device == "cpu" and loaded.dtype == "float32"


def test_missing_path(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope")


def test_directory_without_weights(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    assert "no .safetensors weights" in _error(d)


def test_other_architecture(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    assert "'llama' model, not DiffusionGemma" in _error(d)


def test_truncated_weights(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    weights = d / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(d)


def test_corrupt_header(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32
    weights.write_bytes(bytes(data))
    assert "corrupt" in _error(d)


def test_bad_config_json(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "config.json").write_text("{not json")
    assert "not valid JSON" in _error(d)


def test_missing_tokenizer(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "tokenizer.json").unlink()
    assert "tokenizer.json" in _error(d)


def test_hub_id_not_in_cache_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        resolve_model_dir("google/diffusiongemma-26B-A4B-it")
    assert "not in the local Hugging Face cache" in str(info.value)


def test_bad_device_and_dtype(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tiny_model_dir), dtype="int3")
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_model(str(tiny_model_dir), device="tpu")


def test_check_is_cheap_and_lists_weights(tiny_model_dir):
    assert [p.name for p in check_checkpoint_dir(tiny_model_dir)] == ["model.safetensors"]


def test_weights_outlive_their_file_being_truncated(tiny_model_dir, tmp_path):
    """Weights were memory-mapped views of the file: truncating it while the model served killed
    the process with SIGBUS at the next forward. Run in a child so a crash fails the test only."""
    import subprocess
    import sys

    d = _copy(tiny_model_dir, tmp_path / "m")
    script = (
        "import sys, torch\n"
        "from dgls.engine.loading import load_model\n"
        "net = load_model(sys.argv[1]).model\n"
        "before = sum(float(p.double().sum()) for p in net.parameters())\n"
        "open(sys.argv[1] + '/model.safetensors', 'r+b').truncate(100)\n"
        "after = sum(float(p.double().sum()) for p in net.parameters())\n"
        "assert before == after, (before, after)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(d)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-1500:]
