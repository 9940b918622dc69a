"""Training data: Python sources from the standard library, de-duplicated, split by file.

Why the standard library: it is on every machine that runs dgls, its license (PSF-2.0) allows
training and redistribution of derived weights, and it is a large, varied, well-written corpus of
Python. Site-packages is never read. The held-out split is a deterministic function of each
file's relative path, so evaluation files never reach training, in any session.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HELD_OUT_PER_MILLE = 30  # ~3% of files
MAX_FILE_BYTES = 400_000  # larger files are generated tables, not code people write
MIN_CODE_LINES = 5
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class SourceFile:
    """One de-duplicated source file: `relpath` is stable across machines ("stdlib/json/decoder.py")."""

    relpath: str
    text: str


@dataclass
class Corpus:
    """The train and held-out files plus counts for DATA.md."""

    train: list[SourceFile]
    held_out: list[SourceFile]
    stats: dict[str, int] = field(default_factory=dict)
    source: str = ""


def stdlib_root() -> Path:
    """The base interpreter's standard library (a venv's interpreter reports the base one)."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_held_out(relpath: str, per_mille: int = HELD_OUT_PER_MILLE) -> bool:
    """Held-out membership depends only on the path: stable across sessions, machines, seeds."""
    digest = hashlib.sha256(relpath.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 1000 < per_mille


def _code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _parses(text: str) -> bool:
    """Python 2 test data and deliberately broken files teach the wrong language: drop them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def iter_python_files(root: Path) -> list[Path]:
    """All .py files under `root`, sorted, skipping site-packages and caches."""
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).parts
        if any(part in SKIP_DIRS for part in rel):
            continue
        out.append(path)
    return sorted(out)


def load_corpus(root: Path | None = None, prefix: str = "stdlib") -> Corpus:
    """Read, filter, de-duplicate (content hash, first path in sorted order wins), then split."""
    root = root or stdlib_root()
    stats = {"files_seen": 0, "skipped_size": 0, "skipped_decode": 0, "skipped_near_empty": 0,
             "skipped_duplicate": 0, "skipped_syntax": 0,
             "skipped_generated": 0}
    seen: set[str] = set()
    train: list[SourceFile] = []
    held: list[SourceFile] = []
    for path in iter_python_files(root):
        stats["files_seen"] += 1
        try:
            raw = path.read_bytes()
        except OSError:
            stats["skipped_decode"] += 1
            continue
        if len(raw) > MAX_FILE_BYTES:
            stats["skipped_size"] += 1
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats["skipped_decode"] += 1
            continue
        if _code_lines(text) < MIN_CODE_LINES:
            stats["skipped_near_empty"] += 1
            continue
        if "gencodec.py" in text[:400]:  # machine-generated codec tables
            stats["skipped_generated"] += 1
            continue
        if not _parses(text):
            stats["skipped_syntax"] += 1
            continue
        digest = hashlib.sha256(text.replace("\r\n", "\n").strip().encode("utf-8")).hexdigest()
        if digest in seen:
            stats["skipped_duplicate"] += 1
            continue
        seen.add(digest)
        rel = f"{prefix}/{path.relative_to(root).as_posix()}"
        (held if is_held_out(rel) else train).append(SourceFile(rel, text))
    stats["train_files"], stats["held_out_files"] = len(train), len(held)
    stats["train_bytes"] = sum(len(f.text.encode()) for f in train)
    stats["held_out_bytes"] = sum(len(f.text.encode()) for f in held)
    source = f"Python {sys.version.split()[0]} standard library at {root}"
    return Corpus(train=train, held_out=held, stats=stats, source=source)


if __name__ == "__main__":
    corpus = load_corpus()
    print(corpus.source)
    for key, value in corpus.stats.items():
        print(f"{key:20s} {value}")
