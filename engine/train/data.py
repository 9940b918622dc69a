"""Training data: Python sources, de-duplicated, split by file.

Why these sources: the standard library is on every machine that runs dgls, its license
(PSF-2.0) allows training and redistribution of derived weights, and it is a large, well-written
corpus of Python. It is also old-fashioned and heavy on unittest files, so training adds the
permissively licensed pure-Python packages that every dgls install already has (dependencies of
dgls, torch and pytest): modern code with type hints, dataclasses, async and algorithms. Each is
listed with its license in PACKAGES; nothing else in site-packages is read. The held-out split is
a deterministic function of each file's relative path, so held-out files never reach training, in
any session; evaluation cuts its sets from the standard library's held-out files.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HELD_OUT_PER_MILLE = 30  # ~3% of files
MAX_FILE_BYTES = 400_000  # larger files are generated tables, not code people write
MIN_CODE_LINES = 5
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}

# import directory -> (distribution, license as its metadata states it); checked by hand, see DATA.md
PACKAGES = {
    "networkx": ("networkx", "BSD-3-Clause"),
    "mpmath": ("mpmath", "BSD-3-Clause"),
    "jinja2": ("jinja2", "BSD-3-Clause"),
    "markupsafe": ("markupsafe", "BSD-3-Clause"),
    "click": ("click", "BSD-3-Clause"),
    "fsspec": ("fsspec", "BSD-3-Clause"),
    "rich": ("rich", "MIT"),
    "attr": ("attrs", "MIT"),
    "attrs": ("attrs", "MIT"),
    "cattrs": ("cattrs", "MIT"),
    "yaml": ("pyyaml", "MIT"),
    "typer": ("typer", "MIT"),
    "pydantic": ("pydantic", "MIT"),
    "typing_inspection": ("typing_inspection", "MIT"),
    "anyio": ("anyio", "MIT"),
    "h11": ("h11", "MIT"),
    "markdown_it": ("markdown-it-py", "MIT"),
    "mdurl": ("mdurl", "MIT"),
    "pluggy": ("pluggy", "MIT"),
    "_pytest": ("pytest", "MIT"),
    "iniconfig": ("iniconfig", "MIT"),
    "filelock": ("filelock", "MIT"),
    "shellingham": ("shellingham", "ISC"),
    "packaging": ("packaging", "Apache-2.0 OR BSD-2-Clause"),
    "huggingface_hub": ("huggingface_hub", "Apache-2.0"),
    "sortedcontainers": ("sortedcontainers", "Apache-2.0"),
    "pygls": ("pygls", "Apache-2.0"),
}


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


def package_roots() -> list[tuple[str, Path, str]]:
    """(relpath prefix, directory, "name version license") for each PACKAGES entry installed here."""
    out = []
    for import_dir, (dist_name, license_id) in PACKAGES.items():
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        root = Path(dist.locate_file(import_dir))
        if root.is_dir():
            out.append((import_dir, root, f"{dist_name} {dist.version} ({license_id})"))
    return out


def load_corpus(root: Path | None = None, prefix: str = "stdlib") -> Corpus:
    """One source tree: read, filter, de-duplicate, then split (the evaluation's corpus)."""
    root = root or stdlib_root()
    corpus = load_sources([(prefix, root)])
    corpus.source = f"Python {sys.version.split()[0]} standard library at {root}" if prefix == "stdlib" else str(root)
    return corpus


def load_training_corpus() -> Corpus:
    """The standard library plus the licensed packages installed here (see PACKAGES)."""
    packages = package_roots()
    corpus = load_sources([("stdlib", stdlib_root())] + [(prefix, root) for prefix, root, _ in packages])
    names = ", ".join(label for _, _, label in packages)
    corpus.source = f"Python {sys.version.split()[0]} standard library; packages: {names or 'none installed'}"
    return corpus


def load_sources(roots: list[tuple[str, Path]]) -> Corpus:
    """Read, filter, de-duplicate across all roots (content hash; the first root, then the first
    path in sorted order wins), then split each file by its relative path."""
    stats = {"files_seen": 0, "skipped_size": 0, "skipped_decode": 0, "skipped_near_empty": 0,
             "skipped_duplicate": 0, "skipped_syntax": 0,
             "skipped_generated": 0}
    seen: set[str] = set()
    train: list[SourceFile] = []
    held: list[SourceFile] = []
    for prefix, root in roots:
        for path in iter_python_files(root):
            stats["files_seen"] += 1
            text = _read_source(path, stats)
            if text is None:
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
    return Corpus(train=train, held_out=held, stats=stats)


def _read_source(path: Path, stats: dict[str, int]) -> str | None:
    """The file's text, or None (counted in `stats`) when a filter drops it."""
    try:
        raw = path.read_bytes()
    except OSError:
        stats["skipped_decode"] += 1
        return None
    if len(raw) > MAX_FILE_BYTES:
        stats["skipped_size"] += 1
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        stats["skipped_decode"] += 1
        return None
    if _code_lines(text) < MIN_CODE_LINES:
        stats["skipped_near_empty"] += 1
        return None
    if "gencodec.py" in text[:400]:  # machine-generated codec tables
        stats["skipped_generated"] += 1
        return None
    if not _parses(text):
        stats["skipped_syntax"] += 1
        return None
    return text


if __name__ == "__main__":
    corpus = load_training_corpus() if "--training" in sys.argv else load_corpus()
    print(corpus.source)
    for key, value in corpus.stats.items():
        print(f"{key:20s} {value}")
