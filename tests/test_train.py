"""Training loop, resume, CLI and evaluation on a tiny synthetic dataset (CPU)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch

from afl_core import evaluate, train
from afl_core.data import normalise_channels
from afl_core.synthetic import make_dataset
from afl_core.train import (
    HISTORY_COLUMNS,
    GPUOutOfMemory,
    TrainConfig,
    TrainingDiverged,
    fit,
    make_optimizer,
    make_scheduler,
)

# The smallest smp encoder that trains in a blink on 32x32 slices.
ENCODER = "tu-mobilenetv3_small_050"
# Wall-clock columns differ between any two runs; every other column is reproducible.
TIMING_COLUMNS = ["train_images_per_s", "seconds"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(dataset: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        data=dataset,
        out=out,
        loss="afl",
        encoder=ENCODER,
        encoder_weights=None,
        epochs=3,
        batch_size=4,
        seed=7,
        progress=False,
    )
    return TrainConfig(**(settings | overrides))


def reproducible(history_csv: Path) -> pd.DataFrame:
    return pd.read_csv(history_csv).drop(columns=TIMING_COLUMNS)


def test_resume_reproduces_the_uninterrupted_run(dataset, tmp_path, monkeypatch):
    whole = fit(tiny(dataset, tmp_path / "whole"))
    steps_per_epoch = json.loads((tmp_path / "whole" / "config.json").read_text())["steps_per_epoch"]

    steps = []
    original_call = train.TrainStep.__call__

    def interrupted_in_third_epoch(self, *batch):
        steps.append(1)
        if len(steps) > 2 * steps_per_epoch + 1:
            raise KeyboardInterrupt
        return original_call(self, *batch)

    monkeypatch.setattr(train.TrainStep, "__call__", interrupted_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny(dataset, tmp_path / "split"))
    assert len(pd.read_csv(tmp_path / "split" / "history.csv")) == 2
    steps.clear()
    monkeypatch.setattr(
        train.TrainStep, "__call__", lambda self, *batch: steps.append(1) or original_call(self, *batch)
    )
    resumed = fit(resume=True, out=tmp_path / "split")

    # Only the third epoch was trained after resuming...
    assert len(steps) == steps_per_epoch
    # ...and the result is the uninterrupted run's, number for number and weight for weight.
    expected = reproducible(tmp_path / "whole" / "history.csv")
    got = reproducible(tmp_path / "split" / "history.csv")
    assert list(expected["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    last_whole = torch.load(tmp_path / "whole" / "checkpoint_last.pt", weights_only=True)
    last_split = torch.load(tmp_path / "split" / "checkpoint_last.pt", weights_only=True)
    for name, tensor in last_whole["model"].items():
        assert torch.equal(tensor, last_split["model"][name]), name
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert resumed.best_epoch == whole.best_epoch and resumed.best_score == whole.best_score


def test_resume_refuses_other_settings(dataset, tmp_path):
    fit(tiny(dataset, tmp_path / "run", epochs=1))
    with pytest.raises(ValueError, match=r"loss: 'afl' -> 'focal'"):
        fit(resume=True, out=tmp_path / "run", loss="focal", variant=None, epochs=2)


@pytest.mark.parametrize("metric", ["val_loss", "val_iou"])
def test_select_metric_picks_the_best_checkpoint_and_holds_on_resume(dataset, tmp_path, metric):
    result = fit(tiny(dataset, tmp_path / "run", epochs=3, select_metric=metric))
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    # the first epoch of the best value, the way SELECT_METRICS says is better (NumPy's arg-extremum)
    values = history[metric].to_numpy()
    best = int(history["epoch"][np.argmin(values) if train.SELECT_METRICS[metric] == "min" else np.argmax(values)])
    saved = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    assert saved["epoch"] == result.best_epoch == best
    assert saved["best"] == {"epoch": best, metric: pytest.approx(values[best - 1])}
    assert result.best_score == pytest.approx(values[best - 1])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["select_metric"] == metric
    with pytest.raises(ValueError, match=rf"select_metric: '{metric}' -> 'val_dice'"):
        fit(resume=True, out=tmp_path / "run", select_metric="val_dice", epochs=4)


def test_a_run_from_before_select_metric_resumes_on_val_dice(dataset, tmp_path):
    fit(tiny(dataset, tmp_path / "run", epochs=2))
    config = tmp_path / "run" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "select_metric"}))
    result = fit(resume=True, out=tmp_path / "run", epochs=3)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert result.best_epoch == int(history["epoch"][history["val_dice"].to_numpy().argmax()])
    assert json.loads(config.read_text())["select_metric"] == "val_dice"
    with pytest.raises(ValueError, match="unknown select_metric"):
        tiny(dataset, tmp_path / "other", select_metric="dice")


def _independent_dice(model: torch.nn.Module, dataset: Path, case: str) -> float:
    """Dice of a case predicted slice by slice straight from the NIfTI files (32x32 slices
    need no padding), with NumPy's counts."""
    names = json.loads((dataset / "dataset.json").read_text())["channel_names"]
    image = np.stack(
        [
            np.asarray(nib.load(dataset / "imagesTr" / f"{case}_{i:04d}.nii.gz").dataobj, dtype=np.float32)
            for i in range(len(names))
        ]
    )
    label = np.asarray(nib.load(dataset / "labelsTr" / f"{case}.nii.gz").dataobj) > 0
    image = torch.from_numpy(normalise_channels(image)).permute(3, 0, 1, 2)  # (Z, C, X, Y)
    with torch.no_grad():
        pred = (torch.sigmoid(model(image))[:, 0] > 0.5).permute(1, 2, 0).numpy()
    union = pred.sum() + label.sum()
    return 1.0 if union == 0 else 2.0 * np.logical_and(pred, label).sum() / union


def test_cli_trains_and_evaluates_end_to_end(dataset, tmp_path):
    run = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "afl_core.train",
            "--data",
            str(dataset),
            "--loss",
            "afl",
            "--variant",
            "scale_aware",
            "--encoder",
            ENCODER,
            "--encoder-weights",
            "none",
            "--epochs",
            "2",
            "--out",
            str(run),
            "--seed",
            "1",
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--optimizer",
            "sgd",
            "--lr",
            "0.01",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    history = pd.read_csv(run / "history.csv")
    assert tuple(history.columns[:4]) == HISTORY_COLUMNS
    assert list(history["epoch"]) == [1, 2]
    assert history[list(HISTORY_COLUMNS)].notna().all().all()
    config = json.loads((run / "config.json").read_text())
    assert (config["loss"], config["variant"], config["optimizer"], config["lr"]) == ("afl", "scale_aware", "sgd", 0.01)
    assert not set(config["train_cases"]) & set(config["val_cases"])
    last = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["optimizer"]["param_groups"][0]["nesterov"] is True
    best = torch.load(run / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == history["val_dice"].idxmax() + 1

    evaluated = subprocess.run(
        [sys.executable, "-m", "afl_core.evaluate", "--run", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    per_case = pd.read_csv(run / "eval" / "per_case.csv")
    assert sorted(per_case["case"]) == sorted(config["val_cases"])
    for column in ("dice", "iou", "sensitivity", "specificity", "hd95", "paper_dice", "lesion_f1"):
        assert column in per_case
    summary = json.loads((run / "eval" / "summary.json").read_text())
    # On its own validation cases a run is scored with the last epoch: the best one was
    # picked on these cases and would score them optimistically.
    assert summary["checkpoint"] == "last" and summary["epoch"] == last["epoch"]
    assert summary["cases"] == config["val_cases"]
    assert (run / "eval" / "lesions.csv").is_file()

    # The evaluated Dice is what an independent slice-by-slice prediction gives, and
    # training's val_dice of the last epoch is the same mean.
    model = smp.Unet(ENCODER, encoder_weights=None, in_channels=3, classes=1)
    model.load_state_dict(last["model"])
    model.eval()
    for case, dice in zip(per_case["case"], per_case["dice"]):
        assert dice == pytest.approx(_independent_dice(model, dataset, case), abs=1e-9)
    assert history["val_dice"].iloc[-1] == pytest.approx(per_case["dice"].mean(), abs=1e-9)


def test_nan_loss_stops_with_advice(dataset, tmp_path, monkeypatch):
    real_make_loss = train.make_loss

    class NaNOnSecondStep(torch.nn.Module):
        def __init__(self, loss):
            super().__init__()
            self.loss, self.calls = loss, 0

        def forward(self, logits, target):
            self.calls += 1
            value = self.loss(logits, target)
            return value * math.nan if self.calls == 2 else value

    monkeypatch.setattr(train, "make_loss", lambda *a, **k: NaNOnSecondStep(real_make_loss(*a, **k)))
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 1, step 2.*--lr 0\.0001.*--optimizer adam"):
        fit(tiny(dataset, tmp_path / "run", optimizer="sgd", lr=1e-3))
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_gpu_out_of_memory_says_what_to_change(dataset, tmp_path, monkeypatch):
    def out_of_memory(self, *batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train.TrainStep, "__call__", out_of_memory)
    with pytest.raises(GPUOutOfMemory, match=r"epoch 1 \(batch size 4.*--batch-size \(e\.g\. 2\).*--encoder"):
        fit(tiny(dataset, tmp_path / "run"))


def test_paper_optimiser_and_schedules():
    config = TrainConfig(data="d", out="o", optimizer="sgd")
    assert config.lr == 0.1 and config.weight_decay == 1e-5
    model = torch.nn.Linear(2, 1)
    sgd = make_optimizer(model, "sgd", config.lr, config.weight_decay)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 1e-5)
    total = 10
    for name, factor in [
        ("poly", lambda s: (1 - s / total) ** 0.9),
        ("cosine", lambda s: (1 + math.cos(math.pi * s / total)) / 2),
        ("constant", lambda s: 1.0),
    ]:
        optimizer = make_optimizer(model, "sgd", 0.1, 0.0)
        scheduler = make_scheduler(optimizer, name, total)
        for step in range(total):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * factor(step)), (name, step)
            optimizer.step()
            scheduler.step()


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(loss="focal", variant="paper"), "--variant applies to --loss afl only"),
        (dict(loss="hinge"), "unknown loss"),
        (dict(size=(48, 48)), "multiples of 32"),
        (dict(optimizer="rmsprop"), "unknown optimizer"),
        (dict(lr=math.inf), "--lr must be a positive finite number"),
        (dict(lr=math.nan), "--lr must be a positive finite number"),
        (dict(weight_decay=-1.0), "--weight-decay must be 0 or a positive"),
        (dict(split_seed=-1), "--split-seed must be an integer from 0"),
        (dict(seed=2**70), "--seed must be an integer from 0"),
        (dict(num_workers=-1), "--num-workers must be 0 or more"),
        (dict(encoder="resnet18", encoder_weights="imagnet"), "has no 'imagnet' weights; choose from imagenet, ssl"),
        (dict(encoder="tu-resnet10t", encoder_weights="ssl"), "has no 'ssl' weights; choose from imagenet or none"),
    ],
)
def test_bad_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(data="d", out="o", **bad)


def test_reference_variant_leaves_lesion_free_batches_out(dataset, tmp_path, monkeypatch):
    seen = []
    original_call = train.TrainStep.__call__

    def record(self, images, labels, spacing=None, parameters=None):
        seen.append(bool(labels.any()))
        return original_call(self, images, labels, spacing, parameters)

    monkeypatch.setattr(train.TrainStep, "__call__", record)
    result = fit(
        tiny(dataset, tmp_path / "reference", variant="reference", epochs=2, batch_size=2, oversample_lesions=0.0)
    )
    history = result.history
    assert all(seen), "a batch without lesion voxels reached the authors' loss"
    assert history["skipped_batches"].sum() > 0  # 4-slice cases with small lesions: many empty slices
    assert history[list(HISTORY_COLUMNS)].notna().all().all()


def test_loss_options_reach_the_loss_and_are_checked(dataset, tmp_path, monkeypatch):
    built = []
    original = train.make_loss
    monkeypatch.setattr(train, "make_loss", lambda *a, **kw: built.append(original(*a, **kw)) or built[-1])
    result = fit(tiny(dataset, tmp_path / "ablation", epochs=1, loss_options={"gamma_terms": ["volume"]}))
    assert result.config["loss_options"] == {"gamma_terms": ["volume"]}
    assert built and built[-1].gamma_terms == ("volume",)
    with pytest.raises(ValueError, match="do not fit A-FL"):
        tiny(dataset, tmp_path / "bad", loss_options={"gamma_term": ["volume"]})
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        tiny(dataset, tmp_path / "bad", loss_options={"gamma": -1.0})
    with pytest.raises(ValueError, match="--loss-options apply to --loss afl only"):
        tiny(dataset, tmp_path / "bad", loss="dice", loss_options={"gamma": 1.0})


def test_resume_on_a_new_folder_starts_the_run(dataset, tmp_path):
    result = fit(tiny(dataset, tmp_path / "fresh", epochs=1), resume=True)
    assert len(result.history) == 1
    with pytest.raises(FileNotFoundError, match="give --data"):
        fit(resume=True, out=tmp_path / "nothing")


def _cli(dataset: Path, run: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(dataset),
        "--out",
        str(run),
        "--loss",
        "afl",
        "--encoder",
        ENCODER,
        "--encoder-weights",
        "none",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--no-progress",
        *extra,
    ]


def test_a_new_run_never_replaces_an_existing_one(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    fit(tiny(dataset, run, epochs=1))
    for tables in ("eval", "eval-other"):
        (run / tables).mkdir()
        (run / tables / "summary.json").write_text("{}")
    before = (run / "checkpoint_last.pt").read_bytes()
    # the CLI without --resume: exit 1, advice, the old run untouched
    assert train.main(_cli(dataset, run, "--epochs", "1")) == 1
    message = capsys.readouterr().err
    assert "--resume" in message and "--overwrite" in message and "Traceback" not in message
    assert (run / "checkpoint_last.pt").read_bytes() == before and (run / "eval" / "summary.json").is_file()
    # --overwrite starts again and drops the old model's tables
    fit(tiny(dataset, run, epochs=1, seed=8), overwrite=True)
    assert not (run / "eval").exists() and not (run / "eval-other").exists()
    assert len(pd.read_csv(run / "history.csv")) == 1
    with pytest.raises(ValueError, match="give one of them"):
        fit(tiny(dataset, run, epochs=1), resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        fit(tiny(dataset, tmp_path / "file", epochs=1))


def test_resume_refuses_fewer_epochs_than_done_and_notes_a_longer_schedule(dataset, tmp_path, capsys):
    fit(tiny(dataset, tmp_path / "run", epochs=2))
    with pytest.raises(ValueError, match="2 epochs are done already"):
        fit(resume=True, out=tmp_path / "run", epochs=1)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 2
    fit(resume=True, out=tmp_path / "run", epochs=3)
    assert "schedule of the remaining epochs is stretched" in capsys.readouterr().err


def test_scores_on_other_data_get_their_own_folder(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    fit(tiny(dataset, run, epochs=1))
    own = evaluate.evaluate_run(run, progress=False)
    other = make_dataset(tmp_path / "other", 3, seed=11, shape=(4, 32, 32), lesion_radius=(2.0, 4.0), progress=False)
    assert evaluate.main(["--run", str(run), "--data", str(other), "--no-progress"]) == 0
    err_out = capsys.readouterr()
    assert "not the run's training data" in err_out.err and "eval-other" in err_out.out
    assert len(pd.read_csv(run / "eval-other" / "per_case.csv")) == 3
    # the run's own tables are untouched
    assert sorted(pd.read_csv(run / "eval" / "per_case.csv")["case"]) == sorted(own.per_case["case"])
    assert json.loads((run / "eval" / "summary.json").read_text())["data"] == str(dataset)
    # another dataset of the same name is refused instead of replacing eval-other
    namesake = make_dataset(tmp_path / "b" / "other", 2, seed=12, shape=(4, 32, 32), lesion_radius=(2.0, 4.0))
    assert evaluate.main(["--run", str(run), "--data", str(namesake), "--no-progress"]) == 1
    assert "another dataset of the same name" in capsys.readouterr().err
    assert len(pd.read_csv(run / "eval-other" / "per_case.csv")) == 3
    # the run's own dataset, however spelled, scores its validation cases into eval, as without --data
    assert evaluate.main(["--run", str(run), "--data", f"{dataset}/", "--no-progress"]) == 0
    assert "scoring its validation cases" in capsys.readouterr().err
    assert sorted(pd.read_csv(run / "eval" / "per_case.csv")["case"]) == sorted(own.per_case["case"])
    # chosen cases go to their own folder, and trained-on cases are named as optimistic
    trained_case = sorted(set(json.loads((run / "config.json").read_text())["train_cases"]))[0]
    assert evaluate.main(["--run", str(run), "--cases", trained_case, "--no-progress"]) == 0
    assert "1 of the 1 case(s) were trained on" in capsys.readouterr().err
    assert list(pd.read_csv(run / f"eval-{dataset.name}-{trained_case}" / "per_case.csv")["case"]) == [trained_case]
    assert sorted(pd.read_csv(run / "eval" / "per_case.csv")["case"]) == sorted(own.per_case["case"])
    (tmp_path / "a-file").write_text("x")
    assert evaluate.main(["--run", str(run), "--out", str(tmp_path / "a-file"), "--no-progress"]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["zero bytes", "truncated", "garbage", "a pickle"])
def test_a_damaged_checkpoint_gets_advice_not_a_traceback(dataset, tmp_path, capsys, damage):
    run = tmp_path / "run"
    fit(tiny(dataset, run, epochs=1))
    last = run / "checkpoint_last.pt"
    content = last.read_bytes()
    last.write_bytes(
        {"zero bytes": b"", "truncated": content[: len(content) // 2], "garbage": b"\x00not a checkpoint" * 64}.get(
            damage, b"cos\nsystem\n(S'echo hi'\ntR."
        )
    )
    assert train.main(["--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 1
    message = capsys.readouterr().err
    assert "cannot be read as a checkpoint" in message and "--overwrite" in message
    assert "weights_only=False." in message and "Traceback" not in message  # named as what not to do
    assert "In PyTorch 2.6" not in message and "will likely succeed" not in message  # torch's advice left out
    assert evaluate.main(["--run", str(run), "--checkpoint", "last", "--no-progress"]) == 1


@pytest.mark.parametrize("content", ["{not json", "{}", "[1, 2]"])
def test_a_broken_config_json_on_resume_gets_advice(dataset, tmp_path, capsys, content):
    run = tmp_path / "run"
    fit(tiny(dataset, run, epochs=1))
    (run / "config.json").write_text(content)
    assert train.main(["--out", str(run), "--resume", "--no-progress"]) == 1
    message = capsys.readouterr().err
    assert "--overwrite" in message and str(run / "config.json") in message


def test_an_unknown_encoder_is_refused_before_the_data_loads(tmp_path, capsys):
    argv = _cli(tmp_path / "no-such-data", tmp_path / "run")
    argv[argv.index(ENCODER)] = "resnet9000"
    assert train.main(argv) == 1
    assert "unknown encoder 'resnet9000'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_exploding_loss_stops_as_diverged(dataset, tmp_path, capsys):
    # Adam at lr 1e6 keeps finite numbers far beyond the start: NaN checks alone let it "succeed"
    argv = _cli(dataset, tmp_path / "run", "--optimizer", "adam", "--lr", "1e6", "--epochs", "3")
    argv[argv.index("afl")] = "ce"
    assert train.main(argv) == 1
    message = capsys.readouterr().err
    assert "times its start" in message and "Lower the learning rate" in message
    assert "use --optimizer adam" not in message  # it is adam already
    # the run stopped before its first epoch ended: the corrected command starts it in the same folder
    argv[argv.index("1e6")] = "1e-3"
    assert train.main(argv) == 0


def test_validation_without_lesions_is_named(tmp_path, capsys):
    empty = make_dataset(
        tmp_path / "empty", 3, seed=1, shape=(4, 32, 32), lesion_radius=(2.0, 4.0), empty_fraction=1.0, progress=False
    )
    fit(tiny(empty, tmp_path / "run", epochs=1))
    assert "none of the 1 validation case(s) has a lesion" in capsys.readouterr().err


def test_temporaries_of_a_killed_run_are_removed_on_the_next_start(dataset, tmp_path):
    run = tmp_path / "run"
    fit(tiny(dataset, run, epochs=1))
    stale = [run / ".tmp-0123456789ab-checkpoint_last.pt", run / ".tmp-ba9876543210-history.csv"]
    for path in stale:
        path.write_bytes(b"half written")
    kept = run / ".tmp-notes.txt"
    kept.write_text("not ours")
    fit(resume=True, out=run, epochs=2)
    assert not any(path.exists() for path in stale) and kept.exists()
    assert len(pd.read_csv(run / "history.csv")) == 2


# Runs the training CLI and SIGKILLs it right after it wrote one file of one epoch.
_KILLED_AFTER_WRITING = """
import os, signal, sys
from afl_core import train

target, epoch = sys.argv[1], int(sys.argv[2])
save = train._save

def save_then_die(path, payload):
    save(path, payload)
    if path.name == target and payload["epoch"] == epoch:
        os.kill(os.getpid(), signal.SIGKILL)

train._save = save_then_die
sys.exit(train.main(sys.argv[3:]))
"""


@pytest.mark.parametrize(
    "target, epoch, on_disk",
    [
        # the best checkpoint of epoch 1 is written, its last checkpoint and history are not
        ("checkpoint_best.pt", 1, {"checkpoint_best.pt": 1, "checkpoint_last.pt": None, "history.csv": None}),
        # the last checkpoint of epoch 2 is written, its history row is not
        ("checkpoint_last.pt", 2, {"checkpoint_last.pt": 2, "history.csv": 1}),
    ],
)
def test_a_kill_between_the_writes_of_an_epoch_is_put_right_by_resume(dataset, tmp_path, target, epoch, on_disk):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert train.main(_cli(dataset, whole)) == 0
    died = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_WRITING, target, str(epoch), *_cli(dataset, killed)],
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    assert died.returncode == -9, died.stderr

    def epochs_in(name: str) -> int | None:
        path = killed / name
        if not path.is_file():
            return None
        return len(pd.read_csv(path)) if name == "history.csv" else torch.load(path, weights_only=True)["epoch"]

    assert {name: epochs_in(name) for name in on_disk} == on_disk

    resumed = fit(resume=True, out=killed)
    # the files agree with each other and with the run that was never killed
    pd.testing.assert_frame_equal(reproducible(killed / "history.csv"), reproducible(whole / "history.csv"))
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        a, b = (torch.load(run / name, weights_only=True) for run in (whole, killed))
        assert a["epoch"] == b["epoch"] and a["best"] == b["best"], name
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    assert resumed.best_epoch == torch.load(whole / "checkpoint_best.pt", weights_only=True)["epoch"]


def test_a_moved_run_folder_resumes(dataset, tmp_path):
    fit(tiny(dataset, tmp_path / "run", epochs=1))
    (tmp_path / "run").rename(tmp_path / "moved")
    result = fit(resume=True, out=tmp_path / "moved", epochs=2)
    assert len(result.history) == 2
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["out"] == str(tmp_path / "moved")


def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_says_so(dataset, tmp_path, capsys, monkeypatch):
    import errno

    run = tmp_path / "run"
    fit(tiny(dataset, run, epochs=1))
    before = (run / "checkpoint_last.pt").read_bytes()

    def full_disk(payload, target):
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train.torch, "save", full_disk)
    assert train.main(["--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 1
    assert "disk has room" in capsys.readouterr().err
    assert (run / "checkpoint_last.pt").read_bytes() == before  # the complete checkpoint survives
    assert not list(run.glob(".tmp-*"))  # and no half-written temporary is left


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 64 MiB tmpfs for full-disk and read-only faults (Linux as root, as in CI's
    containers): what a simulated OSError cannot show, e.g. torch's own error for a full disk."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a test filesystem needs Linux and root")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_really_full_disk_keeps_the_run_and_says_so(dataset, small_filesystem, capsys):
    run = small_filesystem / "run"
    assert train.main(_cli(dataset, run, "--epochs", "1")) == 0
    kept = {name: (run / name).read_bytes() for name in ("checkpoint_last.pt", "checkpoint_best.pt", "history.csv")}
    filler = small_filesystem / "filler"
    filler.write_bytes(bytes(shutil.disk_usage(run).free - 4096))  # one page left: a checkpoint does not fit
    resume = ["--out", str(run), "--resume", "--epochs", "2", "--no-progress"]
    assert train.main(resume) == 1
    message = capsys.readouterr().err
    assert "disk has room" in message and "Traceback" not in message
    assert {name: (run / name).read_bytes() for name in kept} == kept and not list(run.glob(".tmp-*"))
    filler.unlink()
    assert train.main(resume) == 0 and len(pd.read_csv(run / "history.csv")) == 2


def test_a_really_read_only_out_is_refused_with_advice(dataset, small_filesystem, capsys):
    run = small_filesystem / "run"
    assert train.main(_cli(dataset, run, "--epochs", "1")) == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    assert train.main(["--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 1
    assert train.main(_cli(dataset, small_filesystem / "new")) == 1
    assert evaluate.main(["--run", str(run), "--no-progress"]) == 1
    messages = capsys.readouterr().err
    assert messages.count("check that --out is writable") == 3 and "Traceback" not in messages
    assert len(pd.read_csv(run / "history.csv")) == 1


def test_evaluate_refuses_data_of_another_channel_count_and_unwritable_tables(dataset, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    fit(tiny(dataset, run, epochs=1))
    one_channel = make_dataset(
        tmp_path / "t2w", 2, seed=2, shape=(4, 32, 32), lesion_radius=(2.0, 4.0), n_channels=1, progress=False
    )
    assert evaluate.main(["--run", str(run), "--data", str(one_channel), "--no-progress"]) == 1
    assert "1 image channel(s) per case, the run was trained on 3" in capsys.readouterr().err

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(evaluate, "export_csv", read_only)
    assert evaluate.main(["--run", str(run), "--no-progress", "--out", str(tmp_path / "ro")]) == 1
    assert "check that --out is writable" in capsys.readouterr().err
