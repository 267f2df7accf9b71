"""afl_core.runs: one kind of run folder, whichever path made it: the notebooks' helpers,
the sweep and the benchmark give the same tables for the same two runs (CPU, tiny data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from afl_core import runs
from afl_core.data import kfold_cases, patient_grouping
from afl_core.experiments import evaluate_arms, train_arms
from afl_core.runs import PER_CASE_COLUMNS, RunKey, collect, is_finished, is_trained
from afl_core.sweep import run_sweep
from afl_core.train import HISTORY_COLUMNS

ENCODER = "tu-mobilenetv3_small_050"
ROOT = Path(__file__).resolve().parent.parent
ARMS = ["ce", "afl"]
# Wall-clock columns: the only ones two runs of the same training may differ in.
CLOCK = ["seconds", "train_images_per_s"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    """Two runs (ce and afl, seed 0) made by benchmarks/compare_losses.py, the committed studies' command."""
    root = tmp_path_factory.mktemp("benchmark")
    command = [sys.executable, str(ROOT / "benchmarks" / "compare_losses.py"), "--study", "comparison"]
    command += ["--only", *ARMS, "--seeds", "0", "--cases", "6", "--depth", "4", "--size", "32"]
    command += ["--encoder", ENCODER, "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.5", "--jobs", "1"]
    command += ["--runs", str(root / "runs"), "--results", str(root / "results")]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return root / "runs"


def settings(data: Path) -> dict:
    """The benchmark's settings of a run (benchmarks/compare_losses.py), for the other paths."""
    return dict(
        data=str(data),
        encoder=ENCODER,
        encoder_weights=None,
        epochs=1,
        batch_size=4,
        lr=1e-3,
        val_fraction=0.5,
        device="cpu",
        progress=False,
    )


def without_clock(tables: runs.RunTables) -> tuple[pd.DataFrame, pd.DataFrame]:
    return tables.per_case, tables.history.drop(columns=CLOCK)


def test_notebook_sweep_and_benchmark_runs_give_the_same_tables(benchmark, tmp_path):
    data = benchmark / "data"
    made = [benchmark / RunKey(arm, 0).name for arm in ARMS]
    assert all(is_finished(run) for run in made)
    from_benchmark = collect(made)
    per_case, history = from_benchmark
    assert list(per_case.columns[:11]) == ["arm", "seed", *PER_CASE_COLUMNS]
    assert list(history.columns[:6]) == ["arm", "seed", *HISTORY_COLUMNS]
    assert per_case["arm"].unique().tolist() == ARMS and set(per_case["seed"]) == {0}
    val_cases = json.loads((made[0] / "config.json").read_text())["val_cases"]
    assert per_case.groupby("arm")["case"].apply(list).to_dict() == {arm: val_cases for arm in ARMS}
    assert history.groupby("arm").size().to_dict() == {"ce": 1, "afl": 1}

    # the notebooks' helpers: train, then score, on the same data with the same settings
    notebook = tmp_path / "notebook"
    train_arms(ARMS, [0], notebook, **settings(data))
    assert all(is_trained(notebook / RunKey(arm, 0).name) for arm in ARMS)
    study = evaluate_arms(notebook, device="cpu")
    from_notebook = collect(notebook / RunKey(arm, 0).name for arm in ARMS)
    pd.testing.assert_frame_equal(study.per_case, from_notebook.per_case)
    for ours, theirs in zip(without_clock(from_notebook), without_clock(from_benchmark)):
        pd.testing.assert_frame_equal(ours, theirs)

    # the sweep trains folds: the notebooks' helpers given the same validation cases agree with it
    fold = kfold_cases(data, 2, seed=0, group_of=patient_grouping(data))[0]
    sweep = tmp_path / "sweep"
    shared = {k: v for k, v in settings(data).items() if k not in ("data", "val_fraction")}  # the grid sets these
    run_sweep(data, ARMS, [0], 2, sweep, only_folds=[0], **shared)
    folded = tmp_path / "folded"
    train_arms(ARMS, [0], folded, **settings(data), validation_cases=fold)
    evaluate_arms(folded, device="cpu")
    from_sweep = collect(sweep / "runs" / RunKey(arm, 0, 0).name for arm in ARMS)
    assert list(from_sweep.per_case.columns[:3]) == ["arm", "seed", "fold"] and set(from_sweep.per_case["fold"]) == {0}
    from_folded = collect(folded / RunKey(arm, 0).name for arm in ARMS)
    pd.testing.assert_frame_equal(from_sweep.per_case, pd.read_csv(sweep / "per_case.csv"))
    for ours, theirs in zip(without_clock(from_folded), without_clock(from_sweep)):
        pd.testing.assert_frame_equal(ours, theirs.drop(columns="fold"))


def test_a_run_is_finished_when_trained_for_its_epochs_and_scored(benchmark, tmp_path):
    run = benchmark / RunKey("ce", 0).name
    assert is_trained(run) and is_finished(run)
    assert not is_trained(run, epochs=2) and not is_finished(run, epochs=2)  # planned for more: unfinished
    assert not is_finished(tmp_path) and not is_trained(tmp_path)  # no run at all
    with pytest.raises(ValueError, match="not finished"):
        collect([tmp_path / "ce-seed0"])
    with pytest.raises(ValueError, match="not run folders"):
        collect([tmp_path / "notes"])
    with pytest.raises(ValueError, match="one kind"):
        collect([run, tmp_path / "ce-seed0-fold1"])


@pytest.mark.parametrize(
    "key", [RunKey("afl", 0), RunKey("afl_gamma_2", 12), RunKey("ce", 3, 0), RunKey("dice_focal", 1, 4)]
)
def test_run_keys_name_their_folders(key):
    assert RunKey.from_name(key.name) == key
    assert list(key.labels) == (["arm", "seed"] if key.fold is None else ["arm", "seed", "fold"])
    assert RunKey.from_name("afl-seed") is None and RunKey.from_name("notes") is None


def test_old_tables_read_with_the_arm_column(tmp_path):
    pd.DataFrame({"loss": ["afl"], "seed": [0], "case": ["c"]}).to_csv(tmp_path / "old.csv", index=False)
    assert list(runs.read_table(tmp_path / "old.csv").columns) == ["arm", "seed", "case"]
    pd.DataFrame({"arm": ["afl"], "loss": [0.3]}).to_csv(tmp_path / "new.csv", index=False)
    assert list(runs.read_table(tmp_path / "new.csv").columns) == ["arm", "loss"]  # a loss value stays
