"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from afl_core.synthetic import make_dataset


@pytest.fixture(scope="module")
def one_thread():
    """Two OpenMP threads on a shared two-core machine are many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Five small synthetic cases (4 x 32 x 32, one lesion-free on average): runs in seconds."""
    return make_dataset(
        tmp_path_factory.mktemp("data") / "synthetic",
        5,
        seed=3,
        shape=(4, 32, 32),
        lesion_radius=(2.0, 4.0),
        irregularity=(0.0, 0.5),
        empty_fraction=0.2,
        progress=False,
    )
