"""Issue 18, the cases outside training, evaluation and the sweep: nothing deleted that the
command did not make, an interrupted command that continues when re-run, one paragraph
naming the option or file instead of a traceback or a false message. Cases a user meets at
the command line are run as commands in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from afl_core._io import LOCK_NAME, read_json
from afl_core.data import list_cases, write_case, write_dataset_json
from afl_core.synthetic import make_dataset

from ._download_fixtures import brats_folder
from .test_download import run_cli, words
from .test_download_faults import failed_cleanly

REPO = Path(__file__).resolve().parents[1]
TINY = ["--shape", "4", "16", "16", "--no-progress"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too, the lock file that names its last writer
    aside) with the sha256 of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != LOCK_NAME
    }


def foreign_dataset(root: Path, kind: str) -> Path:
    """A dataset in the common layout that ``afl-data synthetic`` did not make."""
    rng = np.random.default_rng(0)
    for case in ("10000_1000000", "10001_1000001"):
        label = np.zeros((16, 16, 4), np.uint8)
        label[5:9, 5:9, 1:3] = 1
        write_case(root, case, [rng.integers(0, 500, (16, 16, 4)).astype(np.int16)], label, np.eye(4))
    if kind == "picai":  # what `afl-data picai` writes
        write_dataset_json(root, channel_names=["T2W"], source="picai", download={"folds": [0]})
    elif kind == "nnunet":  # a user's own nnU-Net dataset: the four nnU-Net keys only
        write_dataset_json(root, channel_names=["T2W"])
    return root


# ----------------------------------------------------------------------------- synthetic: only its own files


@pytest.mark.parametrize("kind", ["picai", "nnunet", "no dataset.json"])
@pytest.mark.parametrize("force", [False, True])
def test_synthetic_never_replaces_a_dataset_it_did_not_make(tmp_path, kind, force):
    root = foreign_dataset(tmp_path / "data", kind)
    before = snapshot(root)
    result = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY, *(["--force"] if force else []))
    message = failed_cleanly(result, "did not make", "choose another --dest", "--force does not replace them")
    assert "re-run with --force" not in message
    assert snapshot(root) == before


def test_synthetic_force_replaces_only_its_own_files(tmp_path):
    root = tmp_path / "data"
    assert run_cli("synthetic", "--dest", str(root), "--cases", "3", *TINY).returncode == 0
    (root / "notes.txt").write_text("mine")  # beside the layout, not in it: kept
    refused = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY)
    failed_cleanly(refused, "made with other arguments", "re-run with --force")
    result = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY, "--force")
    assert result.returncode == 0, result.stderr
    assert list_cases(root) == ["synth_0000", "synth_0001"]
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        f"synth_000{case}_000{channel}.nii.gz" for case in (0, 1) for channel in (0, 1, 2)
    ]
    assert (root / "notes.txt").read_text() == "mine"
    written = ["dataset.json", "imagesTr", "labelsTr", "lesions.csv", "notes.txt", LOCK_NAME]
    assert sorted(p.name for p in root.iterdir()) == sorted(written)  # no progress file left


def test_a_cut_case_file_of_a_complete_synthetic_dataset_is_named_and_force_makes_it_again(tmp_path):
    """S6: a complete dataset with one case file cut to 100 bytes is not "complete": named
    without --force, written again (the same bytes as before) with it."""
    root = tmp_path / "data"
    assert run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY).returncode == 0
    before = snapshot(root)
    cut = root / "imagesTr" / "synth_0000_0000.nii.gz"
    cut.write_bytes(cut.read_bytes()[:100])
    refused = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY)
    failed_cleanly(refused, "1 of its case files are cut short or unreadable", "synth_0000_0000.nii.gz", "--force")
    result = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY, "--force")
    assert result.returncode == 0 and "nothing to do" not in result.stdout, result.stdout + result.stderr
    assert snapshot(root) == before
    # The intact dataset, with or without --force: nothing to replace, said without advising --force.
    for force in ((), ("--force",)):
        again = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY, *force)
        assert again.returncode == 0 and "nothing to do" in again.stdout and "use --force" not in again.stdout
    assert snapshot(root) == before
    assert "convert again" not in words(run_cli("synthetic", "--help").stdout)


def test_synthetic_leaves_a_case_file_added_to_its_dataset(tmp_path):
    root = make_dataset(tmp_path / "data", 2, seed=0, shape=(4, 16, 16), progress=False)
    (root / "labelsTr" / "mine.nii.gz").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match=r"did not make .*mine\.nii\.gz"):
        make_dataset(root, 3, seed=0, shape=(4, 16, 16), overwrite=True, progress=False)
    assert (root / "labelsTr" / "mine.nii.gz").read_bytes() == b"not ours"
    assert list_cases(root, require_json=False) == ["mine", "synth_0000", "synth_0001"]


# ----------------------------------------------------------------------------- synthetic: interrupted, then re-run


def test_interrupted_synthetic_continues_when_the_same_command_is_run_again(tmp_path):
    command = ["synthetic", "--cases", "12", "--shape", "8", "96", "96", "--no-progress"]
    root = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "data_download", *command, "--dest", str(root)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    third = root / "labelsTr" / "synth_0002.nii.gz"
    deadline = time.monotonic() + 120
    while not third.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "re-run the same command to continue" in words(stderr)
    kept = {p.name: p.stat().st_mtime_ns for p in (root / "labelsTr").iterdir()}
    assert 3 <= len(kept) < 12 and not (root / "dataset.json").exists()

    again = run_cli(*command, "--dest", str(root))
    assert again.returncode == 0, again.stderr
    assert all((root / "labelsTr" / name).stat().st_mtime_ns == stamp for name, stamp in kept.items())
    fresh = run_cli(*command, "--dest", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr
    assert snapshot(root) == snapshot(tmp_path / "fresh")  # byte for byte, lesions.csv included
    assert len(list_cases(root)) == 12


def test_a_second_synthetic_into_the_same_dest_is_refused_naming_the_first(tmp_path):
    root = tmp_path / "busy"
    command = [sys.executable, "-m", "data_download", "synthetic", "--dest", str(root), "--no-progress"]
    first = subprocess.Popen([*command, "--cases", "200", "--seed", "1", "--shape", "8", "96", "96"], cwd=REPO)
    try:
        lock = root / LOCK_NAME
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if lock.is_file() and lock.read_text().startswith("{") and json.loads(lock.read_text())["pid"] == first.pid:
                break
            time.sleep(0.05)
        assert first.poll() is None
        second = run_cli("synthetic", "--dest", str(root), "--cases", "2", "--seed", "2", *TINY, "--force")
        failed_cleanly(second, f"{root} is being written by process {first.pid}", "choose another --dest")
        assert json.loads(lock.read_text())["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert not (root / "dataset.json").exists()  # the first was stopped; the second wrote nothing


# ----------------------------------------------------------------------------- synthetic: options named


def test_a_shape_too_large_for_memory_is_refused_before_anything_is_allocated(tmp_path):
    root = tmp_path / "huge"
    result = run_cli("synthetic", "--dest", str(root), "--cases", "1", "--shape", "2000", "2000", "2000")
    failed_cleanly(result, "--shape", "GiB of memory", "choose a smaller --shape")
    assert not root.exists()


def test_an_infinite_spacing_is_named(tmp_path):
    result = run_cli("synthetic", "--dest", str(tmp_path / "d"), "--cases", "1", *TINY, "--spacing", "inf", "1", "1")
    message = failed_cleanly(result, "--spacing", "finite")
    assert "shape (4, 4)" not in message


# ----------------------------------------------------------------------------- torchrun's variables without torchrun

ENCODER = "tu-mobilenetv3_small_050"
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "afl_core.train", "--data", str(data), "--out", str(out), "--encoder", ENCODER,
        "--encoder-weights", "none", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--no-progress", *extra,
    ]  # fmt: skip


def without_torchrun(**variables: str) -> dict[str, str]:
    """This environment without torchrun's marks, with ``variables`` set."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES and not k.startswith("TORCHELASTIC")}
    return env | {"OMP_NUM_THREADS": "1"} | variables


def test_torchrun_variables_left_in_the_shell_fail_at_once_instead_of_waiting(dataset, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = without_torchrun(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    result = subprocess.run(
        train_command(dataset, tmp_path / "run"), env=env, capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    message = words(result.stderr)
    for said in ("WORLD_SIZE=2", "MASTER_PORT", "not started by torchrun", "unset RANK WORLD_SIZE", "torchrun --nproc"):
        assert said in message, message
    assert not (tmp_path / "run").exists()  # no folder left holding only run.lock

    sweep = [sys.executable, "-m", "afl_core.sweep", "--data", str(dataset), "--out", str(tmp_path / "sw")]
    sweep += ["--losses", "ce", "--folds", "2", *train_command(dataset, tmp_path / "run")[7:]]
    result = subprocess.run(sweep, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    failed_cleanly(result, "WORLD_SIZE=2", "not started by torchrun")
    assert not (tmp_path / "sw").exists()  # refused before sweep.json and the runs' folders


def test_a_stray_rank_neither_keeps_old_tables_nor_hides_the_last_line(dataset, tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "summary.json").write_text('{"dice": 0.99}')  # the tables of the model --overwrite replaces
    (run / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    (run / "config.json").write_text("{}")  # a run: --overwrite clears only a run's folder
    result = subprocess.run(
        train_command(dataset, run, "--overwrite"),
        env=without_torchrun(RANK="1"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"run saved in {run}" in result.stdout
    assert not (run / "eval").exists()
    assert len((run / "history.csv").read_text().splitlines()) == 2 and "val_dice" in (run / "history.csv").read_text()


def test_overwrite_never_clears_a_folder_that_is_not_a_run(dataset, tmp_path):
    mine = tmp_path / "mine"  # a user's folder: run-like names, no config.json
    (mine / "eval").mkdir(parents=True)
    (mine / "eval" / "myresults.txt").write_text("mine")
    (mine / "history.csv").write_text("my,own\n1,2\n")
    (mine / "notes.txt").write_text("notes")
    before = snapshot(mine)
    result = subprocess.run(
        train_command(dataset, mine, "--overwrite"), env=without_torchrun(), capture_output=True, text=True, cwd=REPO
    )
    says = (f"{mine} is not a training run (no config.json)", "history.csv, eval", "choose another --out")
    failed_cleanly(result, *says)
    assert {k: v for k, v in snapshot(mine).items() if k != "run.lock"} == before


# ----------------------------------------------------------------------------- converters: only their own datasets


@pytest.mark.parametrize("kind", ["nnunet", "no dataset.json"])
def test_a_converter_never_deletes_a_users_own_dataset(tmp_path, kind):
    brats_folder(tmp_path / "copy", np.random.default_rng(3))
    root = foreign_dataset(tmp_path / "data", kind)
    before = snapshot(root)
    result = run_cli("brats2018", "--source", str(tmp_path / "copy"), "--dest", str(root), "--no-progress")
    failed_cleanly(result, str(root), "did not", "Choose an empty folder with --dest")
    assert snapshot(root) == before


def test_a_damaged_conversion_marker_converts_again(tmp_path):
    brats_folder(tmp_path / "copy", np.random.default_rng(3))
    command = ["brats2018", "--source", str(tmp_path / "copy"), "--dest", str(tmp_path / "data"), "--no-progress"]
    assert run_cli(*command).returncode == 0
    (tmp_path / "data" / ".conversion.json").write_text('{"spacing": [1, ')  # cut short
    (tmp_path / "data" / "dataset.json").unlink()  # as if killed before the end
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    assert len(list_cases(tmp_path / "data")) == 3


# ----------------------------------------------------------------------------- data: messages that name the cause


def test_a_nan_voxel_size_is_named_as_such(dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    for path in sorted((root / "imagesTr").glob("synth_0001_*")) + [root / "labelsTr" / "synth_0001.nii.gz"]:
        image = nib.load(path)
        header = image.header.copy()
        header.set_zooms((float("nan"), *header.get_zooms()[1:]))
        header.set_sform(None, code=0)
        header.set_qform(None, code=0)
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), None, header), path)
    result = subprocess.run(
        train_command(root, tmp_path / "run"), env=without_torchrun(), capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = words(result.stderr)
    assert "synth_0001" in message and "voxel size (nan," in message and "different affines" not in message


def one_patient_dataset(root: Path) -> Path:
    """Three PI-CAI studies of one patient (<patient>_<study>)."""
    rng = np.random.default_rng(0)
    for case in ("10000_1000000", "10000_1000001", "10000_1000002"):
        label = np.zeros((32, 32, 4), np.uint8)
        label[5:12, 5:12, 1:3] = 1
        write_case(root, case, [rng.integers(0, 500, (32, 32, 4)).astype(np.int16)], label, np.eye(4))
    write_dataset_json(root, channel_names=["T2W"], source="picai")
    return root


def empty_dataset(root: Path) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    write_dataset_json(root, channel_names=["T2W"], num_training=0)
    return root


@pytest.mark.parametrize(
    "make, says",
    [
        (one_patient_dataset, ["all 3 cases", "belong to one patient ('10000'", "add cases of other patients"]),
        (empty_dataset, ["holds no cases", "labelsTr/ is empty"]),
    ],
)
def test_a_dataset_that_cannot_be_split_says_why(tmp_path, make, says):
    root = make(tmp_path / "data")
    result = subprocess.run(
        train_command(root, tmp_path / "run"), env=without_torchrun(), capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = words(result.stderr)
    assert str(root) in message and all(said in message for said in says), message
    assert "use at least 2 cases" not in message and "split_cases" not in message
    assert not (tmp_path / "run").exists()


def test_a_slice_size_too_large_for_memory_is_refused_before_anything_is_allocated(dataset, tmp_path):
    result = subprocess.run(
        train_command(dataset, tmp_path / "run", "--size", "100000", "100000"),
        env=without_torchrun(),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "GiB of memory" in result.stderr and "--size" in result.stderr
    assert not (tmp_path / "run").exists()  # the folder the command made is gone with its lock

    # a sweep whose first run is refused so leaves no sweep folder (a sweep.json would bind the next call)
    command = [sys.executable, "-m", "afl_core.sweep", "--data", str(dataset), "--out", str(tmp_path / "sw")]
    command += ["--losses", "ce", "--folds", "2", "--only-folds", "0", "--size", "100000", "100000"]
    command += train_command(dataset, tmp_path / "run")[7:]
    result = subprocess.run(command, env=without_torchrun(), capture_output=True, text=True, cwd=REPO, timeout=300)
    failed_cleanly(result, "GiB of memory", "--size")
    assert not (tmp_path / "sw").exists()


# ----------------------------------------------------------------------------- JSON files the project wrote


@pytest.mark.parametrize(
    "content, says",
    [
        (b'{"epochs": 3,', "is damaged: not valid JSON"),
        (b"\xff\xfe{}", "is damaged: not UTF-8"),
        (b"[1, 2]", "must hold a JSON object {...}, not list"),
    ],
)
def test_read_json_names_the_damaged_file(tmp_path, content, says):
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ValueError) as raised:
        read_json(path, hint="start the run again")
    assert str(path) in str(raised.value) and says in str(raised.value) and "start the run again" in str(raised.value)


def test_read_json_reads_what_json_reads_and_names_a_missing_file(tmp_path):
    path = tmp_path / "summary.json"
    value = {"dice": 0.5, "cases": ["a", "b"], "nested": {"x": None}}
    path.write_text(json.dumps(value), encoding="utf-8")
    assert read_json(path) == value
    assert read_json(path, expect=None) == value
    with pytest.raises(FileNotFoundError, match=r"missing\.json is missing; write it again"):
        read_json(tmp_path / "missing.json")


def test_a_damaged_dataset_json_is_named_and_nothing_is_replaced(tmp_path):
    root = make_dataset(tmp_path / "data", 2, seed=0, shape=(4, 16, 16), progress=False)
    (root / "dataset.json").write_text('{"channel_names": ')
    before = snapshot(root)
    result = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY, "--force")
    failed_cleanly(result, str(root / "dataset.json"), "is damaged", "choose another --dest")
    assert snapshot(root) == before


def test_a_negative_seed_is_named_before_the_old_dataset_is_touched(tmp_path):
    root = make_dataset(tmp_path / "data", 2, seed=0, shape=(4, 16, 16), progress=False)
    before = snapshot(root)
    result = run_cli("synthetic", "--dest", str(root), "--cases", "2", *TINY, "--seed", "-1", "--force")
    failed_cleanly(result, "--seed must be a whole number >= 0, got -1")
    assert snapshot(root) == before


def interrupted_synthetic(root: Path, n_cases: int, finished: int) -> Path:
    """What an interrupted ``afl-data synthetic --dest ROOT --cases N`` with :data:`TINY`
    leaves (the same arguments, as make_dataset records them): ``finished`` cases, then a
    Ctrl-C. Returns its progress file."""
    written = []

    def interrupted(*args, **kwargs):
        if len(written) == finished:
            raise KeyboardInterrupt
        written.append(write_case(*args, **kwargs))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("afl_core.synthetic.write_case", interrupted)
        with pytest.raises(KeyboardInterrupt):
            make_dataset(root, n_cases, seed=0, shape=(4, 16, 16), progress=False)
    return root / ".synthetic-progress.jsonl"


def test_a_damaged_first_line_of_the_synthetic_progress_file_is_named(tmp_path):
    root = tmp_path / "ci"
    command = ["synthetic", "--dest", str(root), "--cases", "4", *TINY]
    progress = interrupted_synthetic(root, 4, finished=2)
    first, *rest = progress.read_text(encoding="utf-8").splitlines()
    assert json.loads(first)["generator"]["n_cases"] == 4 and len(rest) == 2
    # Its first line (the arguments) overwritten, then the same command again.
    progress.write_text("\n".join(["#" * len(first), *rest]) + "\n", encoding="utf-8")
    before = snapshot(root)
    result = run_cli(*command)
    message = failed_cleanly(
        result, f"{progress}, the record of an interrupted generation, is damaged in its first line"
    )
    assert "re-run with --force" in message and "made with other arguments" not in message
    assert snapshot(root) == before
    # --force makes the dataset again, the same as a fresh run's.
    assert run_cli(*command, "--force").returncode == 0
    assert run_cli("synthetic", "--dest", str(tmp_path / "fresh"), "--cases", "4", *TINY).returncode == 0
    assert snapshot(root) == snapshot(tmp_path / "fresh")


def test_a_damaged_last_line_of_the_synthetic_progress_file_is_skipped(tmp_path):
    root = tmp_path / "ci"
    progress = interrupted_synthetic(root, 3, finished=1)
    kept = (root / "labelsTr" / "synth_0000.nii.gz").stat().st_mtime_ns
    with open(progress, "ab") as fh:
        fh.write(b'{"case": "synth_0001", "lesi\xff')  # a killed run's last line, cut short mid-character
    assert run_cli("synthetic", "--dest", str(root), "--cases", "3", *TINY).returncode == 0
    assert list_cases(root) == ["synth_0000", "synth_0001", "synth_0002"]
    assert (root / "labelsTr" / "synth_0000.nii.gz").stat().st_mtime_ns == kept  # the finished case kept


# ----------------------------------------------------------------------------- the tutorial runner's runs folder


def run_tutorial_04(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``run_tutorial.py --only 04`` with a 1 s cell limit: the notebook fails at once; what
    the runner did to the runs folder before it is what is tested."""
    command = [sys.executable, str(REPO / "tools" / "run_tutorial.py"), "--out", str(out), "--only", "04"]
    return subprocess.run(
        [*command, "--timeout", "1", *extra], env=without_torchrun(), capture_output=True, text=True, timeout=300
    )


def test_the_tutorial_runner_never_deletes_a_runs_folder_it_did_not_make(tmp_path):
    """S1: `-p runs_dir` naming the user's folder (or an `--out` whose runs/ was there) is kept
    whole; in a runs folder the runner made, only the training runs it left are removed."""
    victim = tmp_path / "victim"
    (victim / "synthetic" / "afl-seed0").mkdir(parents=True)
    (victim / "thesis.txt").write_text("precious")
    (victim / "synthetic" / "afl-seed0" / "config.json").write_text("{}")
    before = snapshot(victim)
    result = run_tutorial_04(tmp_path / "nb", "-p", "runs_dir", str(victim))
    assert result.returncode == 1  # the notebook fails on its 1 s limit
    assert "nothing in it is deleted" in words(result.stderr) and snapshot(victim) == before
    own = tmp_path / "own"
    run_tutorial_04(own)  # makes own/runs, marked as the runner's
    (own / "runs" / "synthetic" / "afl-seed0").mkdir(parents=True)
    (own / "runs" / "synthetic" / "afl-seed0" / "config.json").write_text("{}")
    (own / "runs" / "synthetic" / "notes.txt").write_text("mine")
    run_tutorial_04(own)
    assert not (own / "runs" / "synthetic" / "afl-seed0").exists()
    assert (own / "runs" / "synthetic" / "notes.txt").read_text() == "mine"
