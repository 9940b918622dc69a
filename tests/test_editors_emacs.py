"""editors/emacs/dgls.el in a real batch Emacs: eglot connects to `dgls serve` on the tiny model,
executes the "Complete here" code action and `dgls-infill-selection`, and checks the buffer.

A second test does the same through lsp-mode when it is installed.

Install (Debian/Ubuntu): `apt-get update && apt-get install -y emacs-nox elpa-eglot elpa-lsp-mode`
(Emacs 29+ has eglot built in).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from lsp_client import server_command

ROOT = Path(__file__).resolve().parents[1]
EMACS_DIR = ROOT / "editors" / "emacs"

# The spans sit in comments: any text a random-weight model writes there is valid Python, so the
# server's syntax check keeps it (in code it may legitimately answer with nothing).
SOURCE = """\
def add(a, b):
    return a + b  # sum:


def mul(a, b):
    return a * b  # product of a and b
"""


def _emacs(feature: str, package: str) -> str:
    exe = shutil.which("emacs")
    if exe is None:
        pytest.skip("emacs is not installed (apt-get install -y emacs-nox elpa-eglot elpa-lsp-mode)")
    probe = subprocess.run([exe, "--batch", "--eval", f"(princ (if (require '{feature} nil t) \"yes\" \"no\"))"],
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "yes":
        pytest.skip(f"{feature} is not available in this Emacs (apt-get install -y {package})")
    return exe


def _run_script(exe: str, script: str, tmp_path: Path, model: Path) -> dict[str, str]:
    """Run editors/emacs/test/SCRIPT in batch Emacs on a fresh project; its DGLS-E2E facts."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / ".git").mkdir()  # a project root
    source = proj / "example.py"
    source.write_text(SOURCE)
    cmd = server_command("--model", str(model), "--device", "cpu")
    assert all(" " not in part for part in cmd), "DGLS_SERVER_COMMAND is split on spaces"
    env = {**os.environ, "DGLS_SERVER_COMMAND": " ".join(cmd), "HOME": str(tmp_path)}
    start = time.monotonic()
    done = subprocess.run(
        [exe, "--batch", "-L", str(EMACS_DIR), "-l", str(EMACS_DIR / "test" / script), str(source)],
        capture_output=True, text=True, timeout=85, env=env, cwd=proj)
    print(f"emacs ran {time.monotonic() - start:.1f}s, exit {done.returncode}")
    facts = {}
    for line in done.stdout.splitlines() + done.stderr.splitlines():
        if line.startswith("DGLS-E2E "):
            key, _, value = line[len("DGLS-E2E "):].partition(": ")
            facts[key] = value
            print(line)
    assert done.returncode == 0, (facts, done.stderr[-3000:])
    return facts


def test_emacs_eglot_code_action_and_infill(tmp_path, tiny_model_dir):
    exe = _emacs("eglot", "elpa-eglot")
    facts = _run_script(exe, "dgls-e2e.el", tmp_path, Path(tiny_model_dir))
    assert facts.get("connect") == "ok"
    assert facts.get("dgls-mode") == "t"
    assert facts.get("status", "").startswith('("ready"')
    assert "dgls: Complete here" in facts.get("code-actions", "")
    for check in ("complete-here-edit-applied", "complete-here-prefix-intact", "complete-here-suffix-intact",
                  "infill-selection-edit-applied", "infill-selection-prefix-intact",
                  "infill-selection-suffix-intact"):
        assert facts.get(check) == "ok", (check, facts)
    assert facts.get("failures") == "0"


def test_emacs_lsp_mode_complete_here(tmp_path, tiny_model_dir):
    exe = _emacs("lsp-mode", "elpa-lsp-mode")
    facts = _run_script(exe, "dgls-lsp-e2e.el", tmp_path, Path(tiny_model_dir))
    assert facts.get("status", "").startswith('("ready"')
    assert facts.get("dgls-mode") == "t"
    assert facts.get("complete-here", "").startswith("ok")
