"""The 26B release's recorded configuration, and random-weight checkpoints built from it.

`engine/release/` holds what is published about `google/diffusiongemma-26B-A4B-it` (config,
generation config, special tokens, a chat template; SOURCES.md says where each came from). The
builder here writes a checkpoint with exactly that configuration except where the caller asks
for less: fewer text layers (the layer pattern kept, the last layer full attention as the release's
is), a one-layer vision tower (dgls never runs it), and for CPU tests smaller widths. Every change
is written to `dgls_release_changes.json` beside the weights, so nothing passes for the release
that is not. The tokenizer is the release's vocabulary as far as it can be built offline: Gemma 3's
262,144 pieces (installed with the GGUF package) with Gemma 4's special tokens at their ids.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

RELEASE_ID = "google/diffusiongemma-26B-A4B-it"
RELEASE_DIR = Path(__file__).resolve().parent / "release"
CHANGES_FILE = "dgls_release_changes.json"
# Widths for a release-shaped model small enough for CPU tests: everything else (vocabulary,
# heads, head sizes, experts, top-k, windows, canvas, rope, specials) stays as released.
SMALL_WIDTHS = {"hidden_size": 64, "intermediate_size": 64, "moe_intermediate_size": 16}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 16, "position_embedding_size": 64}
TOKENIZER_VERSION = 1  # bump when the way the tokenizer is built changes (invalidates the cache)


def release_files() -> dict[str, dict]:
    """The recorded JSON files: config, generation config and special tokens."""
    return {name: json.loads((RELEASE_DIR / f"{name}.json").read_text(encoding="utf-8"))
            for name in ("config", "generation_config", "special_tokens")}


def release_config_dict(layers: int | None = None, widths: dict | None = None,
                        vision: str = "one-layer") -> tuple[dict, dict]:
    """The release's config.json as a dict, with the requested reductions; returns (config, changes).

    `layers`: text layers to keep (the release's sliding/full pattern, the last one forced full).
    `widths`: text_config fields to override (e.g. SMALL_WIDTHS). `vision`: "release", "one-layer"
    (the release's tower with one layer) or "tiny".
    """
    config = copy.deepcopy(release_files()["config"])
    text = config["text_config"]
    changes: dict[str, dict] = {}
    if layers is not None and layers != text["num_hidden_layers"]:
        if layers < 1:
            raise ValueError(f"a model needs at least one layer, got {layers}")
        types = text["layer_types"][:layers]
        types[-1] = "full_attention"
        changes["text_config.num_hidden_layers"] = {"release": text["num_hidden_layers"], "here": layers}
        text["num_hidden_layers"], text["layer_types"] = layers, types
    for key, value in (widths or {}).items():
        if key not in text:
            raise ValueError(f"{key} is not a text_config field of the release")
        if text[key] != value:
            changes[f"text_config.{key}"] = {"release": text[key], "here": value}
            text[key] = value
    vision_config = config["vision_config"]
    if vision == "one-layer" and vision_config["num_hidden_layers"] != 1:
        changes["vision_config.num_hidden_layers"] = {"release": vision_config["num_hidden_layers"], "here": 1}
        vision_config["num_hidden_layers"] = 1
    elif vision == "tiny":
        for key, value in TINY_VISION.items():
            if vision_config.get(key) != value:
                changes[f"vision_config.{key}"] = {"release": vision_config.get(key), "here": value}
                vision_config[key] = value
    elif vision != "release" and vision != "one-layer":
        raise ValueError(f"vision must be release, one-layer or tiny, not {vision!r}")
    return config, changes


def release_config(layers: int | None = None, widths: dict | None = None, vision: str = "one-layer"):
    """A `DiffusionGemmaConfig` of the release (see `release_config_dict`)."""
    from transformers import DiffusionGemmaConfig

    config, _ = release_config_dict(layers, widths, vision)
    return DiffusionGemmaConfig(**config)


# ----- tokenizer ----------------------------------------------------------------------------


def tokenizer_cache_dir() -> Path:
    from .convert import cache_root

    return cache_root() / "release-tokenizer" / f"v{TOKENIZER_VERSION}"


def release_tokenizer_dir(log=None) -> Path:
    """A directory with the release-vocabulary tokenizer (tokenizer.json, tokenizer_config.json,
    chat_template.jinja), built once from the installed Gemma 3 GGUF and cached."""
    out = tokenizer_cache_dir()
    if (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .convert import gguf_file

    if log:
        log("building the release tokenizer from the Gemma 3 GGUF (once, about a minute)")
    gguf = gguf_file()
    hf_logging.disable_progress_bar()
    gemma3 = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    raw = json.loads(gemma3.backend_tokenizer.to_str())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "tokenizer.json").write_text(json.dumps(with_release_specials(raw), ensure_ascii=False), encoding="utf-8")
    write_tokenizer_config(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def with_release_specials(tokenizer_json: dict) -> dict:
    """Gemma 3's tokenizer.json with Gemma 4's special tokens at their ids (renamed, marked special).

    Gemma 4 keeps Gemma 3's 262,144 ids; what changed are the names of a few control tokens
    (`<start_of_turn>` 105 became `<|turn>`, unused slots became tool/thinking/channel markers).
    """
    specials = release_files()["special_tokens"]
    out = copy.deepcopy(tokenizer_json)
    vocab = out["model"]["vocab"]
    by_id = {i: piece for piece, i in vocab.items()} if isinstance(vocab, dict) else None
    for name, tid in specials.items():
        if by_id is not None:
            old = by_id.get(tid)
            if old is not None and old != name:
                del vocab[old]
            vocab[name] = tid
        else:  # unigram-style [[piece, score], ...]
            vocab[tid][0] = name
    added = {t["id"]: t for t in out.get("added_tokens", [])}
    for name, tid in specials.items():
        added[tid] = {"id": tid, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True}
    out["added_tokens"] = [added[i] for i in sorted(added)]
    return out


def write_tokenizer_config(out: Path) -> None:
    """tokenizer_config.json with the release's specials and chat template."""
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>", "add_bos_token": False,
        "add_eos_token": False, "model_max_length": 262144,
    }, indent=2), encoding="utf-8")
    shutil.copyfile(RELEASE_DIR / "chat_template.jinja", out / "chat_template.jinja")


# ----- checkpoints --------------------------------------------------------------------------


def make_release_checkpoint(out: str | Path, layers: int = 2, widths: dict | None = None,
                            vision: str = "one-layer", dtype: str = "bfloat16", seed: int = 0,
                            tokenizer_dir: Path | None = None, log=None) -> Path:
    """Write a random-weight checkpoint of the release's configuration (reduced as asked) to `out`."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion, GenerationConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_dict, changes = release_config_dict(layers, widths, vision)
    from transformers import DiffusionGemmaConfig

    config = DiffusionGemmaConfig(**config_dict)
    torch.manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # build in the target precision: half the memory of fp32 then cast
    try:
        model = DiffusionGemmaForBlockDiffusion(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig.from_dict(release_files()["generation_config"])
    model.save_pretrained(str(out))
    del model
    # The recorded files, not transformers' re-serialization of them, so the checkpoint reads as the release's.
    (out / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(RELEASE_DIR / "generation_config.json", out / "generation_config.json")
    (out / CHANGES_FILE).write_text(json.dumps({"release": RELEASE_ID, "random_weights": True, "seed": seed,
                                                "dtype": dtype, "changes": changes}, indent=2), encoding="utf-8")
    source = tokenizer_dir or release_tokenizer_dir(log)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    return out


def install_in_hub_cache(checkpoint: Path, cache_dir: Path, repo_id: str = RELEASE_ID,
                         revision: str | None = None) -> Path:
    """Lay a checkpoint out as the hub's cache does: blobs by hash, a snapshot of links, refs/main.

    Returns the snapshot directory. `cache_dir` is what HF_HUB_CACHE points at.
    """
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in Path(checkpoint).iterdir() if p.is_file())
    revision = revision or hashlib.sha1("".join(p.name for p in files).encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in files:
        digest = _sha256(file)
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(file, blob)
        link = snapshot / file.name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """`python -m dgls.engine.release_model OUT [--layers N] [--small] [--hub-cache DIR]`: write a
    random-weight checkpoint of the release (for trying the engine at its shapes without the weights)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dgls.engine.release_model", description=main.__doc__)
    parser.add_argument("out", help="directory to write")
    parser.add_argument("--layers", type=int, default=2, help="text layers (the release has 30)")
    parser.add_argument("--small", action="store_true", help=f"small widths for a CPU: {SMALL_WIDTHS}")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--hub-cache", default=None,
                        help=f"also lay it out in this hub cache as {RELEASE_ID}, so --model {RELEASE_ID} finds it")
    args = parser.parse_args(argv)
    out = make_release_checkpoint(args.out, layers=args.layers, widths=SMALL_WIDTHS if args.small else None,
                                  dtype=args.dtype, log=print)
    print(f"wrote {out} ({CHANGES_FILE} lists what differs from the release)")
    if args.hub_cache:
        print(f"hub snapshot: {install_in_hub_cache(out, Path(args.hub_cache))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
