"""The thread policy: passive OpenMP waiting set before torch starts, the measured default per
model size, and thread counts applied in the thread that runs the engine."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import torch

from dgls import threads


class _Model:  # what `threads.resolve` reads of an engine: its device
    def __init__(self, device: str = "cpu") -> None:
        self.device = device


def test_prepare_sets_passive_waiting_unless_the_user_chose():
    env: dict[str, str] = {}
    threads.prepare(None, env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}
    threads.prepare(2, env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}
    env = {}
    threads.prepare(2, env)
    assert env["OMP_NUM_THREADS"] == "2"


def test_threads_are_read_from_the_raw_command_line():
    assert threads.threads_from_argv(["serve", "--threads", "2"]) == 2
    assert threads.threads_from_argv(["serve", "--threads=1"]) == 1
    assert threads.threads_from_argv(["latency", "--threads", "1,2"]) is None
    assert threads.threads_from_argv(["serve"]) is None


def test_auto_is_every_core_up_to_a_bound(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.auto_threads(available=1) == 1
    assert threads.auto_threads(available=2) == 2
    assert threads.auto_threads(available=64) == threads.MAX_AUTO_THREADS
    assert threads.resolve(3, _Model()) == 3  # an explicit setting wins
    assert threads.resolve(0, _Model()) == threads.auto_threads()
    assert threads.resolve(0, _Model(device="cuda")) == 0  # a GPU engine: torch left alone
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve(0, _Model()) == 0  # the user's OMP_NUM_THREADS: torch follows it already


def test_use_sets_the_count_in_the_calling_thread_only():
    seen: dict[str, int] = {}
    main_before = torch.get_num_threads()

    def worker() -> None:
        threads.use(2, _Model())
        seen["worker"] = torch.get_num_threads()
        threads.use(1, _Model())
        seen["one"] = torch.get_num_threads()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"worker": 2, "one": 1}
    assert torch.get_num_threads() == main_before


def test_the_cli_sets_the_wait_policy_before_torch_loads():
    code = ("import os, sys\nfrom dgls import cli\nassert 'torch' not in sys.modules\n"
            "try:\n    cli.main(['serve', '--threads', '2', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OMP_WAIT_POLICY'], os.environ.get('OMP_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split()[-2:] == ["PASSIVE", "2"], out.stderr
