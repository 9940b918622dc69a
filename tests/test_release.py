"""The 26B release's recorded configuration, its tokenizer and chat format, and random checkpoints
of it loading offline by directory and by hub id (from a cache laid out as the hub lays it out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dgls.engine.release_model import (
    CHANGES_FILE,
    RELEASE_DIR,
    RELEASE_ID,
    SMALL_WIDTHS,
    install_in_hub_cache,
    make_release_checkpoint,
    release_config,
    release_config_dict,
    release_files,
    release_tokenizer_dir,
)

# "Why is the sky blue?" through the release's own chat template, as lablup/mlxcel's real-model test lists it.
SKY_IDS = [2, 105, 2364, 107, 11355, 563, 506, 7217, 3730, 236881, 106, 107, 105, 4368, 107, 100, 45518, 107, 101]


@pytest.fixture(scope="session")
def release_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(release_tokenizer_dir()))


@pytest.fixture(scope="session")
def release_small_dir(tmp_path_factory):
    """The release's config with 2 layers and small widths (CPU), the release tokenizer and template."""
    out = tmp_path_factory.mktemp("ckpt") / "diffusiongemma-26B-A4B-it"
    return make_release_checkpoint(out, layers=2, widths=SMALL_WIDTHS, vision="tiny", dtype="float32")


def test_recorded_files_describe_the_release():
    files = release_files()
    text = files["config"]["text_config"]
    assert files["config"]["architectures"] == ["DiffusionGemmaForBlockDiffusion"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]) == (2816, 30, 262144)
    assert (text["num_experts"], text["top_k_experts"], text["moe_intermediate_size"]) == (128, 8, 704)
    assert [i for i, t in enumerate(text["layer_types"]) if t == "full_attention"] == [5, 11, 17, 23, 29]
    assert files["config"]["canvas_length"] == 256 and files["config"]["eos_token_id"] == [1, 106, 50]
    assert files["generation_config"]["sampler_config"]["entropy_bound"] == 0.1
    assert files["special_tokens"]["<|turn>"] == 105 and files["special_tokens"]["<turn|>"] == 106
    sources = (RELEASE_DIR / "SOURCES.md").read_text()
    for name in ("config.json", "generation_config.json", "special_tokens.json", "chat_template.jinja", "inferred"):
        assert name in sources


def test_release_config_loads_and_sizes_as_published():
    from dgls.engine.memory import count_parameters

    config = release_config(vision="release")
    text = config.get_text_config()
    assert text.per_layer_config[5].head_dim == 512 and text.per_layer_config[5].num_key_value_heads == 2
    assert text.per_layer_config[0].head_dim == 256 and text.per_layer_config[0].num_key_value_heads == 8
    counts = count_parameters(config)
    assert round(counts.total / 1e9, 2) == 25.82  # "25.8B total" on the model pages
    assert int((counts.total - counts.vision) / 1e8) == 252  # "25.2B" for the text model (25.25B)
    assert counts.experts / counts.total > 0.88  # why quantization must reach the experts


def test_generation_config_reaches_the_sampler():
    from dgls.engine.denoise import DenoiseSettings
    from transformers import GenerationConfig

    class Holder:
        generation_config = GenerationConfig.from_dict(release_files()["generation_config"])
        config = release_config(layers=2)

    settings = DenoiseSettings.from_model(Holder())
    assert (settings.steps, settings.entropy_bound, settings.t_max, settings.t_min) == (48, 0.1, 0.8, 0.4)


def test_fewer_layers_keep_the_pattern_and_say_so():
    config, changes = release_config_dict(layers=7, widths={"hidden_size": 128})
    assert config["text_config"]["layer_types"][-1] == "full_attention"
    assert config["text_config"]["layer_types"][:5] == ["sliding_attention"] * 5
    assert changes["text_config.num_hidden_layers"] == {"release": 30, "here": 7}
    assert changes["text_config.hidden_size"] == {"release": 2816, "here": 128}
    with pytest.raises(ValueError):
        release_config_dict(widths={"no_such_field": 1})


def test_tokenizer_and_template_give_the_release_ids(release_tokenizer):
    from dgls.engine.layout_b import chat_ids

    assert chat_ids(release_tokenizer, [{"role": "user", "content": "Why is the sky blue?"}]) == SKY_IDS
    assert len(release_tokenizer) == 262144
    assert release_tokenizer.convert_tokens_to_ids(["<|turn>", "<turn|>", "<|channel>", "<channel|>"]) == [105, 106, 100, 101]
    with_system = release_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True, tokenize=False)
    assert with_system.startswith("<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n")


def test_random_release_checkpoint_loads_from_its_directory(release_small_dir):
    from dgls.engine import Engine

    changes = json.loads((release_small_dir / CHANGES_FILE).read_text())
    assert set(changes["changes"]) >= {"text_config.num_hidden_layers", "text_config.hidden_size"}
    config = json.loads((release_small_dir / "config.json").read_text())
    release = release_files()["config"]
    for key, value in release["text_config"].items():  # only what the changes file lists differs
        if f"text_config.{key}" not in changes["changes"] and key != "layer_types":
            assert config["text_config"][key] == value, key
    engine = Engine(str(release_small_dir), device="cpu", dtype="float32")
    info = engine.info()
    assert info["vocab_size"] == 262144 and info["canvas_length"] == 256 and info["layout"] == "B"
    assert engine.tokenizer.convert_tokens_to_ids("<turn|>") == 106


def test_hub_id_resolves_offline_from_a_hub_laid_cache(release_small_dir, tmp_path, monkeypatch):
    from dgls.engine import Engine, InfillRequest
    from dgls.engine.loading import resolve_model_dir

    snapshot = install_in_hub_cache(release_small_dir, tmp_path / "hub", revision="a" * 40)
    repo = tmp_path / "hub" / "models--google--diffusiongemma-26B-A4B-it"
    assert (repo / "refs" / "main").read_text() == "a" * 40 and (snapshot / "config.json").is_symlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir(RELEASE_ID) == snapshot
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # HF_HOME/hub is the same cache
    assert resolve_model_dir(RELEASE_ID) == snapshot
    engine = Engine(RELEASE_ID, device="cpu", dtype="float32")
    assert engine.layout == "B" and engine.path == snapshot
    result = engine.infill(InfillRequest(prefix="def add(a, b):\n    return ", suffix="\n", steps=2, max_tokens=8))
    assert result.status == "ok" and result.stats.layout == "B"


def test_cli_infill_reports_the_layout(release_small_dir, tmp_path, monkeypatch, capsys):
    from dgls.cli import main

    install_in_hub_cache(release_small_dir, tmp_path / "hub")
    source = tmp_path / "m.py"
    source.write_text("def add(a, b):\n    return \n\nprint(add(1, 2))\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    layouts = []
    for flag in ("auto", "A"):
        code = main(["infill", str(source), "--line", "1", "--col", "11", "--json", "--steps", "2",
                     "--model", RELEASE_ID, "--device", "cpu", "--layout", flag])
        out = capsys.readouterr()
        assert code == 0, out.err[-2000:]
        layouts.append(json.loads(out.out)["stats"]["layout"])
    assert layouts == ["B", "A"]


def test_hub_layout_is_what_huggingface_hub_reads(release_small_dir, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    snapshot = install_in_hub_cache(release_small_dir, tmp_path / "hub", revision="b" * 40)
    found = try_to_load_from_cache(RELEASE_ID, "model.safetensors", cache_dir=str(tmp_path / "hub"))
    assert found is not None and Path(found).parent == snapshot
    assert Path(found).resolve().parent.name == "blobs"


def test_builder_command_writes_a_checkpoint_and_a_hub_snapshot(tmp_path, capsys):
    from dgls.engine.release_model import main

    assert main([str(tmp_path / "out"), "--small", "--layers", "1", "--dtype", "float32",
                 "--hub-cache", str(tmp_path / "hub")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "hub snapshot" in out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["text_config"]["layer_types"] == ["full_attention"]
    assert (tmp_path / "hub" / "models--google--diffusiongemma-26B-A4B-it" / "refs" / "main").is_file()
