"""Shared fixtures: a real tiny random-weight DiffusionGemma checkpoint written once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny DiffusionGemma checkpoint (sliding + full attention, MoE, byte-level tokenizer)."""
    from dgls.engine.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


def pytest_configure(config):
    # Tiny models on a shared 2-core machine run several times faster on one thread (no spin-waiting).
    import torch

    torch.set_num_threads(1)
