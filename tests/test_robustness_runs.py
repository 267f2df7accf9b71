"""Issue 18, the cases in training, evaluation, the sweep and torchrun: one process writes a
run folder, a run finds its dataset from anywhere, no table replaces another silently, and
one paragraph naming the option or file instead of a traceback or a misleading message.
Every case runs the command in a subprocess, as a user meets it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from afl_core.synthetic import make_dataset

from .test_download import words
from .test_download_faults import failed_cleanly
from .test_robustness import REPO, snapshot, train_command, without_torchrun

TOO_MANY_WORKERS = 4 * len(os.sched_getaffinity(0)) + 1


def run(command: list[str], cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=without_torchrun(), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def evaluate_command(run_dir: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "afl_core.evaluate", "--run", str(run_dir), "--device", "cpu"]
    return [*command, "--no-progress", *extra]


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """One finished 1-epoch run of the shared dataset (evaluate's cases read it, never write it)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run(train_command(dataset, run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def lock_holder(folder: Path) -> subprocess.Popen:
    """A process that holds ``folder``'s lock (as a training or an evaluation writing it does)
    until a line reaches its stdin; it prints ``held`` once it holds it."""
    hold = (
        f"from afl_core._io import folder_lock\nwith folder_lock({str(folder)!r}):\n print('held', flush=True); input()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("eval*", "run.lock"))
    return to


# ----------------------------------------------------------------------------- 1. one process per run folder


def test_a_second_training_into_the_same_folder_is_refused_naming_the_first(dataset, tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        train_command(dataset, run_dir, "--loss", "ce", "--epochs", "500"),
        env=without_torchrun(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            lock = run_dir / "run.lock"
            if lock.is_file() and lock.read_text().startswith("{") and json.loads(lock.read_text())["pid"] == first.pid:
                break
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()
        second = run(train_command(dataset, run_dir, "--loss", "dice", "--overwrite"))
        message = failed_cleanly(second, f"{run_dir} is being written by process {first.pid} on {socket.gethostname()}")
        assert "started 20" in message and "afl_core.train" in message and "choose another --out" in message
    finally:
        first.send_signal(signal.SIGINT)  # the first run stops as a user stops it: its completed epochs kept
        first.communicate(timeout=120)
    assert first.returncode == 130
    config = json.loads((run_dir / "config.json").read_text())
    last = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    history = pd.read_csv(run_dir / "history.csv")
    assert config["loss"] == last["config"]["loss"] == "ce" and config["epochs"] == 500  # the first run's, only
    assert list(history["epoch"]) == list(range(1, len(history) + 1))
    assert len(history) in (last["epoch"], last["epoch"] - 1)  # stopped between the checkpoint and history.csv


def test_a_lock_left_by_a_process_that_ended_does_not_block(dataset, tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = {"pid": ended.pid, "host": socket.gethostname(), "started": "2020-01-01 00:00:00", "command": "x"}
    (run_dir / "run.lock").write_text(json.dumps(holder))
    training = subprocess.Popen(
        train_command(dataset, run_dir), env=without_torchrun(), stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    _, stderr = training.communicate(timeout=300)
    assert training.returncode == 0, stderr
    assert json.loads((run_dir / "run.lock").read_text())["pid"] == training.pid  # taken over, naming its new holder


# ----------------------------------------------------------------------------- 2. the dataset found from anywhere


def test_a_run_reads_its_dataset_from_any_folder_and_a_moved_dataset_is_named(dataset, tmp_path):
    shutil.copytree(dataset, tmp_path / "data")
    result = run(train_command(Path("data"), Path("run")), cwd=tmp_path)  # both typed relative
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text())["data"] == str(tmp_path / "data")
    # elsewhere, a dataset of the same relative name and the same case ids: never read for this run
    elsewhere = tmp_path / "elsewhere"
    make_dataset(elsewhere / "data", 5, seed=9, shape=(4, 32, 32), progress=False)
    result = run(evaluate_command(run_dir), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "eval" / "summary.json").read_text())["data"] == str(tmp_path / "data")

    (tmp_path / "data").rename(tmp_path / "moved")
    message = failed_cleanly(run(evaluate_command(run_dir), cwd=elsewhere), str(tmp_path / "data"), "--data NEW")
    assert "which is not there" in message
    resume = [sys.executable, "-m", "afl_core.train", "--out", str(run_dir), "--resume", "--epochs", "2"]
    failed_cleanly(run(resume, cwd=elsewhere), str(tmp_path / "data"), "--resume --data NEW")
    other = make_dataset(tmp_path / "three", 3, seed=1, shape=(4, 32, 32), progress=False)
    failed_cleanly(  # a dataset without the run's cases is not the moved one
        run([*resume, "--data", str(other)]), "is not that dataset moved", "lacks 2 of the run's 5 cases"
    )
    result = run(evaluate_command(run_dir, "--data", str(tmp_path / "moved")), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert f"using {tmp_path / 'moved'}" in words(result.stderr) and f"tables in {run_dir / 'eval'}" in result.stdout
    result = run([*resume, "--data", str(tmp_path / "moved"), "--no-progress"], cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "config.json").read_text())["data"] == str(tmp_path / "moved")
    assert len(pd.read_csv(run_dir / "history.csv")) == 2


def test_an_old_run_with_a_relative_data_path_finds_it_from_its_out_or_says_what_to_do(trained, dataset, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(dataset, project / "datasets" / "d")
    run_dir = copy_run(trained, project / "runs" / "r")
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) | {"data": "datasets/d", "out": "runs/r"}  # as typed in project/
    config_path.write_text(json.dumps(config))
    result = run(evaluate_command(run_dir))  # from another folder: found through the recorded out
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "eval" / "summary.json").read_text())["data"] == str(project / "datasets" / "d")

    config_path.write_text(json.dumps(config | {"out": str(run_dir)}))  # where it was started is unknown
    failed_cleanly(
        run(evaluate_command(run_dir)), "'datasets/d', relative to the folder the run was started in", "--data NEW"
    )


# ----------------------------------------------------------------------------- 3. one folder per case selection


def test_each_selection_of_cases_keeps_its_own_tables(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path / "run")
    cases = json.loads((run_dir / "config.json").read_text())["train_cases"]
    folders = []
    for chosen in ([cases[0]], cases[1:3]):
        result = run(evaluate_command(run_dir, "--cases", *chosen))
        assert result.returncode == 0, result.stderr
        folders.append(Path(result.stdout.strip().splitlines()[-1].split("tables in ")[1]))
    assert folders[0] != folders[1] and all(folder.parent == run_dir for folder in folders)
    for folder, chosen in zip(folders, ([cases[0]], cases[1:3])):
        assert list(pd.read_csv(folder / "per_case.csv")["case"]) == chosen
        assert json.loads((folder / "summary.json").read_text())["cases"] == chosen


# ----------------------------------------------------------------------------- 4. one paragraph, not a traceback


@pytest.mark.parametrize(
    "options, says",
    [
        (["--loss-options", '{"reduction": "none"}'], ["--loss-options reduction 'none' cannot train"]),
        (["--loss-options", '{"gamma": "big"}'], ["--loss-options", "'big'", "gamma (a number >= 0)"]),
        (["--device", "cuda:abc"], ["--device must be auto, cpu, cuda or cuda:N", "'cuda:abc'"]),
        (["--oversample", "2"], ["--oversample must be a share from 0 up to, not including, 1", "got 2"]),
        (["--epochs", "0"], ["--epochs must be a whole number of 1 or more, got 0"]),
        (["--val-fraction", "1.5"], ["--val-fraction must be a share strictly between 0 and 1", "got 1.5"]),
        (["--weight-decay", "inf"], ["--weight-decay must be 0 or a positive finite number, got inf"]),
        (  # one above the bound, not 999999: a regression would fork that many workers, not exhaust the machine
            ["--num-workers", str(TOO_MANY_WORKERS)],
            ["--num-workers must be", "at most 4 per CPU core", "core(s)", f"got {TOO_MANY_WORKERS}"],
        ),
    ],
)
def test_bad_training_options_are_named(dataset, tmp_path, options, says):
    message = failed_cleanly(run(train_command(dataset, tmp_path / "run", *options)), *says)
    assert not (tmp_path / "run").exists()
    # the option typed, never the setting's field name (nor three names for one bad value)
    for field in ("oversample_lesions", "val_fraction", "weight_decay", "batch_size", "lr"):
        assert f" {field} " not in f" {message} ", message


def test_an_unknown_evaluation_device_is_named(trained):
    failed_cleanly(run(evaluate_command(trained, "--device", "foo")), "--device must be", "'foo'")


def test_a_zero_evaluation_batch_size_is_named_before_the_model_loads(trained):
    message = failed_cleanly(run(evaluate_command(trained, "--batch-size", "0")), "--batch-size must be", "got 0")
    assert "batch_size should be" not in message  # not PyTorch's DataLoader's words


@pytest.mark.parametrize("inside", ["the run inside the dataset", "the dataset inside the run"])
def test_a_run_and_its_dataset_never_share_a_folder(dataset, tmp_path, inside):
    if inside == "the run inside the dataset":
        data = tmp_path / "data"
        shutil.copytree(dataset, data)
        out, says = data / "labelsTr", f"--out {data / 'labelsTr'} is inside the dataset --data {data}"
    else:
        out = tmp_path / "run"
        data = out / "data"
        shutil.copytree(dataset, data)
        says = f"the dataset --data {data} is inside the folder --out {out}"
    before = snapshot(tmp_path)
    failed_cleanly(run(train_command(data, out)), says)
    assert snapshot(tmp_path) == before  # nothing written into either


def test_a_run_or_sweep_is_never_written_into_another_dataset(dataset, tmp_path):
    """S7, S8: --out inside a dataset that is not --data is refused as evaluate refuses it; a
    sweep's message names the --out typed, not one of its run folders."""
    other = tmp_path / "dc2"
    other.mkdir()
    (other / "dataset.json").write_text("{}")
    sweep = [sys.executable, "-m", "afl_core.sweep", "--data", str(dataset), "--losses", "ce", "--folds", "2"]
    says = f"is inside the dataset {other} (it holds dataset.json)"
    failed_cleanly(run(train_command(dataset, other / "myrun")), f"--out {other / 'myrun'} {says}")
    failed_cleanly(run([*sweep, "--out", str(other / "mysweep"), "--epochs", "1"]), f"--out {other / 'mysweep'} {says}")
    message = failed_cleanly(run([*sweep, "--out", str(dataset)]), f"--out {dataset} is the dataset --data")
    assert "runs" not in message.split("--data")[0]  # the folder typed, not the sweep's run folder
    assert sorted(p.name for p in other.iterdir()) == ["dataset.json"]


def test_a_checkpoint_recording_a_huge_slice_size_is_named(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path / "run")
    checkpoint = torch.load(run_dir / "checkpoint_best.pt", weights_only=True)
    checkpoint["config"]["slice_size"] = [100_000, 100_000]
    torch.save(checkpoint, run_dir / "checkpoint_best.pt")
    failed_cleanly(
        run(evaluate_command(run_dir, "--checkpoint", "best")),
        str(run_dir / "checkpoint_best.pt"),
        "slice size of 100000 x 100000",
        "GiB of memory",
        "altered",
    )


def test_evaluation_tables_are_never_written_into_a_dataset(trained, dataset):
    before = snapshot(dataset)
    for out, where in ((dataset, "is a dataset"), (dataset / "labelsTr" / "eval", f"is inside the dataset {dataset}")):
        result = run(evaluate_command(trained, "--out", str(out)))
        failed_cleanly(result, f"--out {out} {where} (it holds dataset.json)", "Choose a folder outside any dataset")
    assert snapshot(dataset) == before


def test_a_second_evaluation_into_the_same_out_is_refused_naming_the_first(trained, tmp_path):
    out = tmp_path / "tables"
    holder = lock_holder(out)
    try:
        assert holder.stdout.readline() == "held\n"  # stands for an evaluation still writing its tables
        result = run(evaluate_command(trained, "--out", str(out)))
        failed_cleanly(result, f"{out} is being written by process {holder.pid}", "choose another --out")
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    finally:
        holder.communicate("\n", timeout=60)
    assert run(evaluate_command(trained, "--out", str(out))).returncode == 0


def test_a_sweep_never_writes_into_a_training_run(trained, dataset, tmp_path):
    run_dir = copy_run(trained, tmp_path / "run")
    before = snapshot(run_dir)
    command = [sys.executable, "-m", "afl_core.sweep", "--data", str(dataset), "--out", str(run_dir), "--folds", "2"]
    says = f"--out {run_dir} is a training run (it holds config.json)"
    failed_cleanly(run([*command, "--losses", "ce", "--epochs", "1"]), says, "Choose a new folder for the sweep")
    assert snapshot(run_dir) == before


def test_evaluation_never_writes_into_another_run(trained, tmp_path):
    scored, other = copy_run(trained, tmp_path / "afl-seed0"), copy_run(trained, tmp_path / "ce-seed0")
    before = snapshot(other)
    for out, where in ((other / "eval", f"is inside the run {other}"), (other, f"is the run {other}")):
        result = run(evaluate_command(scored, "--out", str(out)))
        failed_cleanly(result, f"--out {out} {where}", f"not the run evaluated ({scored})", "Choose a folder outside")
    assert snapshot(other) == before


def test_evaluation_never_replaces_tables_it_did_not_write(trained, tmp_path):
    """S2: an --out holding the user's own per_case.csv / summary.json, or another run's
    evaluation, is refused and kept; the run's own evaluation there is scored again."""
    user = tmp_path / "userout"
    user.mkdir()
    (user / "per_case.csv").write_text("my own table\n")
    (user / "summary.json").write_text("notes\n")
    before = snapshot(user)
    says = f"--out {user} holds per_case.csv, summary.json, which python -m afl_core.evaluate did not write"
    failed_cleanly(run(evaluate_command(trained, "--out", str(user))), says, "nothing is written")
    assert snapshot(user) == before
    out = tmp_path / "tables"
    assert run(evaluate_command(trained, "--out", str(out))).returncode == 0
    assert run(evaluate_command(trained, "--out", str(out))).returncode == 0  # its own tables, scored again
    other, before = copy_run(trained, tmp_path / "other"), snapshot(out)
    says = f"--out {out} holds the evaluation of another run ({trained}"
    failed_cleanly(run(evaluate_command(other, "--out", str(out))), says, f"not of {other}")
    assert snapshot(out) == before


def test_a_lock_file_planted_as_a_symlink_is_never_written_through(trained, tmp_path):
    """S3: run.lock a link to another file: refused naming the link; the target is kept."""
    victim, out = tmp_path / "victim.txt", tmp_path / "tables"
    victim.write_text("precious")
    out.mkdir()
    (out / "run.lock").symlink_to(victim)
    says = f"{out / 'run.lock'} is a symbolic link (to {victim})"
    failed_cleanly(run(evaluate_command(trained, "--out", str(out))), says, "nothing is written", "Remove the link")
    assert victim.read_text() == "precious" and sorted(p.name for p in out.iterdir()) == ["run.lock"]


def test_a_resume_refused_for_a_busy_folder_prints_only_its_refusal(trained, tmp_path):
    """Third review: the resume note (planned for 1 epoch, now 2: schedule stretched) came
    before the refusal of a folder another process holds, as if the run had gone on."""
    run_dir = copy_run(trained, tmp_path / "run")
    holder = lock_holder(run_dir)
    try:
        assert holder.stdout.readline() == "held\n"
        resume = [sys.executable, "-m", "afl_core.train", "--out", str(run_dir), "--resume", "--epochs", "2"]
        message = failed_cleanly(run(resume), f"{run_dir} is being written by process {holder.pid}")
        assert "planned for" not in message
    finally:
        holder.communicate("\n", timeout=60)


def test_an_evaluation_of_a_run_still_training_is_refused_naming_the_training(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path / "run")
    holder = lock_holder(run_dir)
    try:
        assert holder.stdout.readline() == "held\n"  # stands for afl-train writing the run's checkpoints
        result = run(evaluate_command(run_dir))
        failed_cleanly(result, f"{run_dir} is being written by process {holder.pid}", "folder_lock", "still training")
        assert not (run_dir / "eval").exists()
    finally:
        holder.communicate("\n", timeout=60)
    assert run(evaluate_command(run_dir)).returncode == 0  # once the training ended


@pytest.fixture(scope="module")
def scored_sweep(trained, tmp_path_factory) -> Path:
    """A sweep folder of one finished run (the trained run as fold 0 of afl, scored)."""
    sweep = tmp_path_factory.mktemp("sweep") / "sw"
    run_dir = copy_run(trained, sweep / "runs" / "afl-seed0-fold0")
    (sweep / "sweep.json").write_text(json.dumps({"folds": 2, "epochs": 1}))
    result = run(evaluate_command(run_dir))
    assert result.returncode == 0, result.stderr
    return sweep


def collect_command(sweep: Path) -> list[str]:
    return [sys.executable, "-m", "afl_core.sweep", "--out", str(sweep), "--collect"]


def test_a_sweep_refuses_scores_that_belong_to_another_run(scored_sweep, tmp_path):
    sweep = tmp_path / "sw"
    shutil.copytree(scored_sweep, sweep)
    assert run(collect_command(sweep)).returncode == 0
    other = sweep / "runs" / "ce-seed0-fold0"  # its eval/ written by an evaluation of afl-seed0-fold0, or copied
    shutil.copytree(sweep / "runs" / "afl-seed0-fold0", other)
    failed_cleanly(
        run(collect_command(sweep)),
        f"{other / 'eval' / 'summary.json'} scores another run than {other}",
        "afl-seed0-fold0",
        f"python -m afl_core.evaluate --run {other}",
    )


@pytest.mark.parametrize("renamed", ["ce-seed0-fold0", "afl-seed1-fold0"])
def test_a_run_folder_whose_name_contradicts_its_config_is_refused(scored_sweep, tmp_path, renamed):
    """S4: a run folder renamed (or two swapped), then scored again as the summary check
    advises: collect refuses, naming the folder and what its config.json records."""
    sweep = tmp_path / "sw"
    shutil.copytree(scored_sweep, sweep)
    moved = sweep / "runs" / renamed
    (sweep / "runs" / "afl-seed0-fold0").rename(moved)
    summary = json.loads((moved / "eval" / "summary.json").read_text())
    (moved / "eval" / "summary.json").write_text(json.dumps(summary | {"run": str(moved)}))  # as a new evaluation
    says = "records loss 'afl'" if renamed.startswith("ce") else "seed 1, but its config.json records seed 0"
    failed_cleanly(run(collect_command(sweep)), f"the name of the run folder {moved} says", says, "renamed")


def test_a_run_of_another_ablation_arm_under_an_arms_name_is_refused(scored_sweep, tmp_path):
    """A folder named for afl holding an afl_alpha_only run (the same loss and variant, an option
    more): the name check compared only the options of the name's arm, and passed it."""
    sweep = tmp_path / "sw"
    shutil.copytree(scored_sweep, sweep)
    run_dir = sweep / "runs" / "afl-seed0-fold0"
    for path in (run_dir / "config.json", run_dir / "eval" / "summary.json"):  # as if trained and scored so
        path.write_text(json.dumps(json.loads(path.read_text()) | {"loss_options": {"gamma": 0.0}}))
    says = f"the name of the run folder {run_dir} says arm 'afl'"
    failed_cleanly(run(collect_command(sweep)), says, "{'gamma': 0.0}")


@pytest.mark.parametrize(
    "table, damage, says",
    [
        ("eval/per_case.csv", "header", "holds 0 row(s), but"),
        ("eval/per_case.csv", "missing", "is missing"),
        ("eval/per_case.csv", "binary", "is damaged"),
        ("history.csv", "header", "holds 0 epoch row(s), but the run's last checkpoint trained 1"),
    ],
)
def test_a_finished_run_with_a_damaged_table_is_named_never_dropped(scored_sweep, tmp_path, table, damage, says):
    sweep = tmp_path / "sw"
    shutil.copytree(scored_sweep, sweep)
    path = sweep / "runs" / "afl-seed0-fold0" / table
    if damage == "header":
        path.write_text(path.read_text().splitlines()[0] + "\n")
    elif damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b"\xff\xfe\x00garbage")
    again = "--resume" if table == "history.csv" else "python -m afl_core.evaluate --run"
    failed_cleanly(run(collect_command(sweep)), str(path), says, again)
    assert not (sweep / "per_case.csv").exists()


def sweep_with_one_scored_run(root: Path, summary: str) -> Path:
    """A sweep folder whose one run has the scores ``summary`` (what a sweep reads back)."""
    run_dir = root / "runs" / "ce-seed0-fold0"
    (run_dir / "eval").mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps({"folds": 2, "epochs": 1}))
    (run_dir / "config.json").write_text(json.dumps({"epochs": 1}))
    (run_dir / "eval" / "summary.json").write_text(summary)
    return run_dir / "eval" / "summary.json"


@pytest.mark.parametrize(
    "summary, says",
    [
        ('{"epoch": 1, "means": {}}', "does not say which checkpoint it scores"),
        ('{"checkpoint": "last", "epo', "is damaged: not valid JSON"),
    ],
)
def test_a_sweep_names_a_damaged_summary(tmp_path, summary, says):
    path = sweep_with_one_scored_run(tmp_path / "sweep", summary)
    command = [sys.executable, "-m", "afl_core.sweep", "--out", str(tmp_path / "sweep"), "--collect"]
    failed_cleanly(run(command), str(path), says, "python -m afl_core.evaluate --run")


def test_a_damaged_sweep_json_is_named(tmp_path):
    sweep_with_one_scored_run(tmp_path / "sweep", "{}")
    (tmp_path / "sweep" / "sweep.json").write_text('{"folds": 2, ')
    command = [sys.executable, "-m", "afl_core.sweep", "--out", str(tmp_path / "sweep"), "--collect"]
    failed_cleanly(run(command), str(tmp_path / "sweep" / "sweep.json"), "is damaged")


def test_a_damaged_config_json_is_named_on_resume(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path / "run")
    (run_dir / "config.json").write_bytes(b'{"data": "x", ')
    command = [sys.executable, "-m", "afl_core.train", "--out", str(run_dir), "--resume", "--no-progress"]
    failed_cleanly(run(command), str(run_dir / "config.json"), "is damaged: not valid JSON", "--overwrite")


def test_a_rank_killed_mid_run_leaves_one_paragraph_and_the_run_resumes(dataset, tmp_path):
    run_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    torchrun += ["--monitor-interval", "3"]  # the survivor reports before torchrun ends it
    command = [*torchrun, *train_command(dataset, run_dir, "--epochs", "500")[1:]]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "history.csv").exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert launcher.poll() is None, launcher.communicate()
        rank_zero = next(pid for pid in children(launcher.pid) if "RANK=0" in environment(pid))
        os.kill(rank_zero, signal.SIGKILL)  # rank 1 waits for it in its next collective call
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    message = words(stderr)
    assert "error: rank 1 of 2 lost rank 0, which stopped" in message, stderr
    assert f"torchrun --nproc_per_node 2 -m afl_core.train --out {run_dir} --resume" in message
    assert 'afl_core/train.py", line' not in stderr  # no traceback of the surviving rank (torchrun reports its own)
    done = int(torch.load(run_dir / "checkpoint_last.pt", weights_only=True)["epoch"])
    resumed = subprocess.run(
        [*torchrun, "-m", "afl_core.train", "--out", str(run_dir), "--resume", "--epochs", str(done + 1)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert list(pd.read_csv(run_dir / "history.csv")["epoch"]) == list(range(1, done + 2))
    note = f"note: the run was planned for 500 epochs and now runs {done + 1}"
    assert words(resumed.stderr).count(note) == 1, resumed.stderr  # rank 0's note only
    assert f"{note}: the learning-rate schedule of the remaining epochs is shortened" in words(resumed.stderr)


def test_ctrl_c_on_a_torchrun_run_says_once_how_to_resume_it_with_torchrun(dataset, tmp_path):
    """S11: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) on 2 ranks:
    one resume note, rank 0's, naming torchrun, not python -m."""
    run_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*torchrun, *train_command(dataset, run_dir, "--epochs", "500")[1:]]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        lock = run_dir / "run.lock"  # rank 0 takes it once both ranks have joined the process group
        while not (lock.is_file() and lock.read_text()) and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        assert launcher.poll() is None, launcher.communicate()
        os.killpg(launcher.pid, signal.SIGINT)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    message = words(stderr)
    assert message.count("interrupted; continue with:") == 1, stderr
    assert f"interrupted; continue with: torchrun --nproc_per_node 2 -m afl_core.train --out {run_dir} --resume" in (
        message
    )


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def environment(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_text().split("\0")


# ----------------------------------------------------------------------------- 5. messages that name the cause


def test_an_unknown_case_is_named_before_any_note(trained):
    message = failed_cleanly(run(evaluate_command(trained, "--cases", "nosuch_case")), "nosuch_case", "--cases")
    assert "trained on" not in message


def test_the_reference_variant_on_lesion_free_training_cases_says_why(tmp_path):
    empty = make_dataset(tmp_path / "empty", 3, seed=1, shape=(4, 32, 32), empty_fraction=1.0, progress=False)
    message = failed_cleanly(
        run(train_command(empty, tmp_path / "run", "--variant", "reference")),
        "has a lesion voxel",
        "undefined on this dataset",
        "--variant paper",
    )
    assert "--oversample" not in message


def test_volumes_too_small_for_the_3d_network_name_size_and_dims(dataset, tmp_path):
    command = train_command(dataset, tmp_path / "run", "--dims", "3", "--batch-size", "1")
    command[command.index("tu-mobilenetv3_small_050")] = "resnet10"
    failed_cleanly(run(command), "volumes of 4 x 32 x 32", "1 x 1 x 1", "--size", "--batch-size 2", "--dims 2")


@pytest.mark.parametrize("threshold", ["nan", "1.5"])
def test_a_bad_threshold_is_named_as_the_option(trained, threshold):
    failed_cleanly(run(evaluate_command(trained, "--threshold", threshold)), "--threshold must lie", f"got {threshold}")


def test_a_data_folder_that_is_no_dataset_is_refused_before_any_note(trained):
    """S10: --data naming a run folder: the refusal alone, no note about scoring it."""
    result = run(evaluate_command(trained, "--data", str(trained)))
    assert result.returncode == 1 and "note:" not in result.stderr, result.stderr
    assert f"{trained} is not a dataset of the nnU-Net raw layout" in words(result.stderr)
