"""The sweep: a grid of runs that survives interruption, shards that partition it, locks, tables, errors."""

from __future__ import annotations

import fcntl
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from afl_core import runs as run_grid
from afl_core import train
from afl_core.data import kfold_cases, list_cases
from afl_core.experiments import STUDIES
from afl_core.sweep import (
    RunKey,
    collect,
    expand_losses,
    main,
    make_grid,
    parse_shard,
    run_sweep,
    shard_runs,
)
from afl_core.synthetic import make_dataset

ENCODER = "tu-mobilenetv3_small_050"  # the smallest smp encoder: a run of 2 epochs takes about a second


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(
        tmp_path_factory.mktemp("data") / "synthetic",
        6,
        seed=0,
        shape=(4, 64, 64),
        lesion_radius=(2, 5),
        progress=False,
    )


TINY = dict(encoder=ENCODER, encoder_weights=None, epochs=2, batch_size=4, device="cpu", progress=False)


def test_an_interrupted_sweep_finishes_without_redoing_finished_runs(dataset, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    grid = dict(data=dataset, losses=["ce", "afl"], seeds=[0, 1], folds=2, only_folds=[0], out=out)
    names = ["ce-seed0-fold0", "afl-seed0-fold0", "ce-seed1-fold0", "afl-seed1-fold0"]
    runs = out / "runs"
    calls, steps, interrupt = [], [], {"armed": True}
    real_fit, real_step = run_grid.fit, train.TrainStep.__call__

    def counting_fit(config, *, resume):
        calls.append((Path(config.out).name, resume))
        steps.clear()
        return real_fit(config, resume=resume)

    def step_interrupting_third_run_in_its_second_epoch(self, *batch):
        steps.append(1)
        if interrupt["armed"] and len(calls) == 3:
            if len(steps) > json.loads((runs / names[0] / "config.json").read_text())["steps_per_epoch"]:
                raise KeyboardInterrupt
        return real_step(self, *batch)

    monkeypatch.setattr(run_grid, "fit", counting_fit)
    monkeypatch.setattr(train.TrainStep, "__call__", step_interrupting_third_run_in_its_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(**grid, **TINY)
    assert [name for name, _ in calls] == names[:3]
    assert [(runs / n / "eval" / "summary.json").is_file() for n in names] == [True, True, False, False]
    first_epoch = pd.read_csv(runs / names[2] / "history.csv")
    assert first_epoch["epoch"].tolist() == [1]
    finished = {
        n: [(runs / n / f).stat().st_mtime_ns for f in ("checkpoint_last.pt", "eval/per_case.csv")] for n in names[:2]
    }

    interrupt["armed"] = False
    calls.clear()
    result = run_sweep(**grid, **TINY)
    assert calls == [(names[2], True), (names[3], False)]  # the third run resumed, the fourth started
    assert result.skipped == names[:2] and result.trained == names[2:] and not result.busy and not result.failed
    assert {
        n: [(runs / n / f).stat().st_mtime_ns for f in ("checkpoint_last.pt", "eval/per_case.csv")] for n in names[:2]
    } == finished
    resumed = pd.read_csv(runs / names[2] / "history.csv")
    assert resumed["epoch"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(resumed.iloc[:1], first_epoch)  # epoch 1 (wall-clock seconds too) not redone

    per_case = pd.read_csv(out / "per_case.csv")
    assert list(per_case.columns[:12]) == [
        "arm",
        "seed",
        "fold",
        "case",
        "dice",
        "iou",
        "hd95_mm",
        "hd95_penalised_mm",
        "lesion_f1",
        "lesion_picai_f1",
        "paper_dice",
        "paper_iou",
    ]
    for name in names:
        config = json.loads((runs / name / "config.json").read_text())
        arm, seed = name.split("-")[0], int(name.split("-")[1].removeprefix("seed"))
        rows = per_case[(per_case["arm"] == arm) & (per_case["seed"] == seed) & (per_case["fold"] == 0)]
        assert (config["loss"], config["seed"], config["epochs"]) == (arm, seed, 2)
        assert rows["case"].tolist() == config["val_cases"]
        scored = pd.read_csv(runs / name / "eval" / "per_case.csv")
        assert rows["dice"].tolist() == pytest.approx(scored["dice"].tolist(), abs=1e-12)
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 8 and list(history.columns[:4]) == ["arm", "seed", "fold", "epoch"]
    assert per_case["arm"].unique().tolist() == ["ce", "afl"]  # arms in ARMS' order

    calls.clear()
    assert run_sweep(**grid, **TINY).skipped == names and calls == []
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.001 -> 0.01\)"):
        run_sweep(**grid, **TINY | {"lr": 0.01})
    assert calls == []

    # The command line: one more fold into the same sweep, then the tables alone.
    assert (
        main(
            [
                "--data",
                str(dataset),
                "--losses",
                "ce",
                "--seeds",
                "0",
                "--folds",
                "2",
                "--only-folds",
                "1",
                "--out",
                str(out),
                "--encoder",
                ENCODER,
                "--encoder-weights",
                "none",
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert calls == [("ce-seed0-fold1", False)]
    fold1 = json.loads((runs / "ce-seed0-fold1" / "config.json").read_text())
    fold0 = json.loads((runs / "ce-seed0-fold0" / "config.json").read_text())
    # k-fold: the two folds' validation cases are disjoint and together every case; each fold trains on the other
    assert not set(fold0["val_cases"]) & set(fold1["val_cases"])
    assert sorted(fold0["val_cases"] + fold1["val_cases"]) == list_cases(dataset)
    assert sorted(fold1["train_cases"]) == sorted(fold0["val_cases"])
    (out / "per_case.csv").unlink()
    assert main(["--out", str(out), "--collect"]) == 0
    per_case = pd.read_csv(out / "per_case.csv")
    assert per_case.groupby(["arm", "seed", "fold"]).ngroups == 5
    assert per_case.loc[per_case["fold"] == 1, "case"].tolist() == fold1["val_cases"]


def test_shards_partition_the_grid():
    for n_losses, n_seeds, n_folds in ((1, 1, 2), (3, 2, 5), (10, 3, 5)):
        grid = make_grid(list(STUDIES["comparison"])[:n_losses], range(n_seeds), range(n_folds))
        assert len(set(grid)) == len(grid) == n_losses * n_seeds * n_folds
        for count in (1, 2, 3, 7, len(grid) + 2):
            shards = [shard_runs(grid, index, count) for index in range(1, count + 1)]
            assert Counter(run for shard in shards for run in shard) == Counter(grid)  # each run exactly once
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
            assert shards == [shard_runs(grid, index, count) for index in range(1, count + 1)]  # deterministic
    assert make_grid(["afl", "ce"], [0], [0, 1]) == [
        RunKey("afl", 0, 0),
        RunKey("ce", 0, 0),
        RunKey("afl", 0, 1),
        RunKey("ce", 0, 1),
    ]
    assert parse_shard("2/4") == parse_shard(" 2 / 4 ") == (2, 4)


@pytest.mark.parametrize("spec", ["0/4", "5/4", "1/0", "a/b", "1-4", "2", ""])
def test_bad_shard_specs_are_refused(spec):
    with pytest.raises(ValueError, match="shard must be i/n with 1 <= i <= n"):
        parse_shard(spec)


def test_a_run_held_by_another_process_is_left_alone(dataset, tmp_path, monkeypatch):
    def no_fit(config, *, resume):
        raise AssertionError(f"{config.out} was trained although another process holds it")

    monkeypatch.setattr(run_grid, "fit", no_fit)
    run_dir = tmp_path / "sweep" / "runs" / "ce-seed0-fold1"
    run_dir.mkdir(parents=True)
    with open(run_dir / "run.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what another shard's process holds while it trains
        result = run_sweep(dataset, ["ce"], [0], 2, tmp_path / "sweep", only_folds=[1], **TINY)
    assert result.busy == ["ce-seed0-fold1"] and not result.trained and result.per_case is None
    assert not (tmp_path / "sweep" / "per_case.csv").exists()
    with pytest.raises(FileNotFoundError, match="no finished run"):
        collect(tmp_path / "sweep")


def test_losses_name_arms_or_studies():
    assert expand_losses(["comparison"]) == STUDIES["comparison"]
    assert expand_losses(["afl_reference", "ce", "afl_reference"]) == ["afl_reference", "ce"]
    with pytest.raises(ValueError, match="unknown loss 'afl:reference'; choose arms from"):
        expand_losses(["afl:reference"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"losses": ["nope"]}, "unknown loss 'nope'"),
        ({"losses": []}, "no loss given"),
        ({"folds": 1}, "folds must be at least 2"),
        ({"folds": 7}, r"at most the number of cases \(6\)"),
        ({"only_folds": [2]}, "only_folds must name folds 0 to 1"),
        ({"shard": "3/2"}, "shard must be i/n"),
        ({"seeds": []}, "no seed given"),
        ({"seed": 3}, r"\['seed'\] are set per run"),
        ({"seed": 3, "shard": "2/2", "folds": 2, "only_folds": [0]}, r"\['seed'\] are set per run"),  # an empty shard
        ({"dims": 3}, f"3D encoder '{ENCODER}' is not available"),
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ],
)
def test_bad_sweeps_are_refused_before_any_run(dataset, tmp_path, change, message):
    settings = dict(data=dataset, losses=["ce"], seeds=[0], folds=2, out=tmp_path / "sweep") | TINY | change
    with pytest.raises(ValueError, match=message):
        run_sweep(**settings)
    assert not (tmp_path / "sweep").exists()


def test_the_command_line_says_what_is_wrong(dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    for name in ("imagesTr", "labelsTr"):
        (empty / name).mkdir(parents=True)
    (empty / "dataset.json").write_text((dataset / "dataset.json").read_text())
    for argv, message in (
        (["--data", str(empty), "--losses", "ce"], "no cases in"),
        (["--data", str(dataset), "--losses", "afl:scale_aware"], "unknown loss 'afl:scale_aware'"),
        (["--data", str(dataset), "--losses", "ce", "--shard", "1of2"], "shard must be i/n"),
        (["--collect"], "is not a sweep folder"),
    ):
        assert main([*argv, "--out", str(tmp_path / "sweep"), "--no-progress"]) == 1
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and "Traceback" not in error
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "sweep"), "--seeds", "0"])
    assert "--data and --losses are required" in capsys.readouterr().err


def test_a_diverged_run_is_reported_and_the_sweep_goes_on(dataset, tmp_path, monkeypatch, capsys):
    tried = []

    def diverging_fit(config, *, resume):
        tried.append(Path(config.out).name)
        raise train.TrainingDiverged(f"the training loss became nan in {Path(config.out).name}")

    monkeypatch.setattr(run_grid, "fit", diverging_fit)
    assert (
        main(
            [
                "--data",
                str(dataset),
                "--losses",
                "ce",
                "dice",
                "--folds",
                "2",
                "--only-folds",
                "0",
                "--out",
                str(tmp_path / "sweep"),
                "--encoder",
                ENCODER,
                "--encoder-weights",
                "none",
                "--no-progress",
            ]
        )
        == 1
    )
    assert tried == ["ce-seed0-fold0", "dice-seed0-fold0"]
    captured = capsys.readouterr()
    assert "0 trained, 0 already finished, 0 held by another process, 2 failed" in captured.out
    assert "dice-seed0-fold0: failed: the training loss became nan in dice-seed0-fold0" in captured.err


def test_kfold_folds_are_disjoint_stratified_and_keep_patients_together(dataset, tmp_path):
    folds = kfold_cases(dataset, 3, seed=0)
    cases = list_cases(dataset)
    assert sorted(c for fold in folds for c in fold) == cases and all(fold for fold in folds)
    with_lesion = [c for c in cases if train.case_has_lesion(dataset, c)]
    assert all(set(fold) & set(with_lesion) for fold in folds)  # each fold validates on lesions
    assert kfold_cases(dataset, 3, seed=0) == folds and kfold_cases(dataset, 3, seed=1) != folds
    pairs = kfold_cases(dataset, 2, seed=0, group_of=lambda case: int(case.split("_")[-1]) // 2)
    for fold in pairs:  # cases 0-1, 2-3, 4-5 are one "patient" each
        assert {int(c.split("_")[-1]) // 2 for c in fold}.isdisjoint(
            {int(c.split("_")[-1]) // 2 for other in pairs if other is not fold for c in other}
        )
    with pytest.raises(ValueError, match="folds must be at least 2"):
        kfold_cases(dataset, 7)


def test_two_folds_folders_swapped_are_refused_naming_the_folder(dataset, tmp_path):
    """The third review's S4 leftover: fold 0's and fold 1's finished runs swapped (same arm and
    seed, so the name check passes): the next sweep call refuses instead of labelling each
    run's rows with the other fold."""
    out = tmp_path / "sweep"
    grid = dict(data=dataset, losses=["ce"], seeds=[0], folds=2, out=out)
    run_sweep(**grid, **TINY)
    runs = out / "runs"
    (runs / "ce-seed0-fold0").rename(runs / "swap")
    (runs / "ce-seed0-fold1").rename(runs / "ce-seed0-fold0")
    (runs / "swap").rename(runs / "ce-seed0-fold1")
    for fold in (0, 1):  # each scored again under its new name, as the summary check advises
        summary = runs / f"ce-seed0-fold{fold}" / "eval" / "summary.json"
        summary.write_text(json.dumps(json.loads(summary.read_text()) | {"run": str(summary.parent.parent)}))
    with pytest.raises(ValueError, match=r"the run folder .*ce-seed0-fold0 names a fold that validates on .* swapped"):
        run_sweep(**grid, **TINY)
