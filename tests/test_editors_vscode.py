"""editors/vscode builds from the lockfile, type-checks, passes its unit tests and packages to a .vsix.

Runs `npm ci && npm run compile && npm test && npm run package` on a copy of the extension (so the
checkout's node_modules is left alone). Needs Node >= 20 and npm with access to the npm registry.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "editors" / "vscode"
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH")


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    print(f"{' '.join(cmd)}: exit {done.returncode} in {time.monotonic() - start:.1f}s")
    return done


def test_vscode_extension_builds_tests_and_packages(tmp_path):
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed (Node >= 20 is needed to build the VS Code extension)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(re.match(r"v(\d+)", version)[1]) < 20:
        pytest.skip(f"Node >= 20 is needed, found {version}")

    work = tmp_path / "vscode"
    shutil.copytree(EXT, work, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))

    done = _run([npm, "ci", "--no-audit", "--no-fund"], work, 75)
    if done.returncode != 0 and any(code in done.stderr for code in NETWORK_ERRORS):
        pytest.skip(f"npm registry unreachable: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-3000:]

    done = _run([npm, "run", "compile"], work, 60)  # tsc --strict: type errors fail here
    assert done.returncode == 0, done.stdout[-3000:]
    assert (work / "out" / "src" / "extension.js").exists()

    done = _run([npm, "test"], work, 60)
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"^# fail 0$", done.stdout, re.M), done.stdout[-2000:]
    print(re.search(r"^# tests \d+$", done.stdout, re.M)[0])

    done = _run([npm, "run", "package"], work, 60)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    vsix = work / "dgls.vsix"
    with zipfile.ZipFile(vsix) as zf:
        names = set(zf.namelist())
    assert "extension/package.json" in names
    assert "extension/out/src/extension.js" in names
    assert any(n.startswith("extension/node_modules/vscode-languageclient/") for n in names)
    assert not any(n.startswith("extension/src/") or "/test/" in n.split("node_modules")[0] for n in names)
    print(f"{vsix.name}: {vsix.stat().st_size // 1024} KiB, {len(names)} files")
