"""Fixtures shared by the training tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from afl_core.synthetic import make_dataset

# Tests stop commands with SIGINT, as Ctrl-C does. A shell that starts the tests in the background
# leaves SIGINT ignored, and every child inherits that: restore Python's handler, so children start
# with the default (exec resets a handled signal, not an ignored one).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# `make test` runs the tests in two processes (pytest-xdist, one per core): one thread in each, and
# in every command or kernel a test starts (they inherit OMP_NUM_THREADS), since two threads per
# process on two busy cores run several times slower than one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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
