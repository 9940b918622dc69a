"""editors/helix/languages.toml: dgls is an extra server (completion + code actions) for each language.

Helix is not packaged for Debian, so this checks the file's structure; with `hx` on PATH it also
asks Helix itself to load the file (`hx --health`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "editors" / "helix" / "languages.toml"
LANGUAGES = {"python", "javascript", "typescript", "go", "rust", "c", "cpp", "java", "lua", "bash"}


def test_helix_languages_toml():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    data = tomllib.loads(CONFIG.read_text())
    server = data["language-server"]["dgls"]
    assert server["command"] == "dgls" and server["args"] == ["serve"]
    by_name = {lang["name"]: lang for lang in data["language"]}
    assert set(by_name) == LANGUAGES
    for name, lang in by_name.items():
        servers = lang["language-servers"]
        dgls = [s for s in servers if isinstance(s, dict) and s.get("name") == "dgls"]
        assert len(dgls) == 1, name
        assert set(dgls[0]["only-features"]) == {"completion", "code-action"}, name
        assert any(isinstance(s, str) for s in servers), f"{name}: the usual server is missing"


def test_helix_loads_the_config(tmp_path):
    hx = shutil.which("hx") or shutil.which("helix")
    if hx is None:
        pytest.skip("hx is not installed (Helix is not packaged for Debian)")
    config = tmp_path / "helix"
    config.mkdir()
    shutil.copy(CONFIG, config / "languages.toml")
    done = subprocess.run([hx, "--health", "python"], capture_output=True, text=True, timeout=60,
                          env={"XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "dgls" in done.stdout
