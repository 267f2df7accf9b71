"""nnU-Net v2 with A-FL, end to end on CPU: a user-style folder, nnU-Net's planning and
preprocessing, a few training iterations, prediction of held-out cases, scores.

Needs the ``nnunet`` extra; ``make test-nnunet`` makes a venv with it and runs this file
(about 50 s on two cores). Skipped where nnU-Net is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed: make test-nnunet (pip install -e '.[nnunet]')")

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module  # noqa: E402

from afl_core.data.layout import list_cases  # noqa: E402
from afl_core.integrations.nnunet import (  # noqa: E402
    AFLPatchLoss,
    _load_checkpoint,
    make_raw_dataset,
    nnUNetTrainerAFL,
    nnUNetTrainerAFL_scale_aware,
    score,
)
from afl_core.losses import AdaptiveFocalLoss  # noqa: E402

DATASET_ID = 999
HELD_OUT = 2


def write_dataset(root: Path) -> Path:
    """Seven small cases in this project's layout, converted from a user-style folder."""
    try:
        from data_download.folder import convert_folder, write_example_folder
    except ImportError:  # the folder converter is absent from this checkout: the same layout, made directly
        from afl_core.synthetic import make_dataset

        return make_dataset(root / "layout", 7, seed=0, shape=(8, 64, 64), progress=False)
    templates = write_example_folder(root / "user", n_cases=7, seed=0, shape=(8, 64, 64))
    return convert_folder(
        root / "user",
        root / "layout",
        images=templates["images"],
        label=templates["label"],
        lesion_values=templates["lesion_values"],
    )


def run(command: list[str], env: dict, log: Path) -> None:
    """Run a command as a user would; on failure show the end of its output."""
    with open(log, "w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The documented commands, in order; returns the folders they wrote."""
    root = tmp_path_factory.mktemp("nnunet")
    env = dict(
        os.environ,
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        nnUNet_def_n_proc="1",  # two shared cores: one worker process
        nnUNet_n_proc_DA="1",
    )
    layout = write_dataset(root)
    held_out = list_cases(layout)[-HELD_OUT:]
    module = [sys.executable, "-m", "afl_core.integrations.nnunet"]
    raw_command = ["raw", str(layout), "--id", str(DATASET_ID), "--name", "AFLTest", "--holdout", *held_out]
    run(module + raw_command, env, root / "raw.log")
    planner = str(Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess"))
    one_process = ["-np", "1", "-npfp", "1"]  # nnU-Net's default: 8 worker processes, each importing torch
    plan = [planner, "-d", str(DATASET_ID), "-c", "2d", *one_process, "--verify_dataset_integrity"]
    run(plan, env, root / "plan.log")
    train_env = env | {"nnUNet_n_proc_DA": "0"}  # augmentation in the main process
    cut = ["--epochs", "2", "--iterations", "3", "--val-iterations", "1", "--device", "cpu", "--no-validation"]
    run(module + ["train", str(DATASET_ID), "2d", "0", "--variant", "paper", *cut], train_env, root / "train.log")
    raw = root / "raw" / f"Dataset{DATASET_ID}_AFLTest"
    predictions = root / "predictions"
    predict = ["predict", str(DATASET_ID), "2d", "--input", str(raw / "imagesTs"), "--output", str(predictions)]
    run(module + predict + ["--fold", "0", "--device", "cpu"], env, root / "predict.log")
    return {"root": root, "raw": raw, "predictions": predictions, "held_out": held_out}


def test_raw_dataset_holds_out_cases_from_training(pipeline):
    raw = pipeline["raw"]
    meta = json.loads((raw / "dataset.json").read_text())
    training = sorted(p.name for p in (raw / "labelsTr").iterdir())
    assert meta["numTraining"] == len(training) == 5
    assert sorted(p.name.removesuffix(".nii.gz") for p in (raw / "labelsTs").iterdir()) == pipeline["held_out"]
    assert not set(pipeline["held_out"]) & {name.removesuffix(".nii.gz") for name in training}


def test_training_wrote_an_afl_run_with_finite_losses(pipeline):
    run = pipeline["root"] / "results" / f"Dataset{DATASET_ID}_AFLTest" / "nnUNetTrainerAFL__nnUNetPlans__2d" / "fold_0"
    checkpoint = _load_checkpoint(run / "checkpoint_final.pth")
    assert checkpoint["trainer_name"] == "nnUNetTrainerAFL"
    assert checkpoint["current_epoch"] == 2
    losses = checkpoint["logging"]["train_losses"] + checkpoint["logging"]["val_losses"]
    assert len(losses) == 4 and np.all(np.isfinite(losses))


def test_prediction_of_held_out_cases_is_scored(pipeline):
    raw, predictions = pipeline["raw"], pipeline["predictions"]
    for case in pipeline["held_out"]:
        predicted = nib.load(predictions / f"{case}.nii.gz")
        reference = nib.load(raw / "labelsTs" / f"{case}.nii.gz")
        assert predicted.shape == reference.shape
        np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-4)
        assert set(np.unique(np.asanyarray(predicted.dataobj))) <= {0, 1}
    table = score(predictions, raw / "labelsTs")
    assert table["case"].tolist() == pipeline["held_out"]
    assert table[["dice", "iou", "sensitivity", "specificity"]].stack().between(0, 1).all()


@pytest.fixture
def trainer_factory(pipeline, monkeypatch):
    """Build a trainer from the pipeline's plans, in this process."""
    folders = {"nnUNet_preprocessed": pipeline["root"] / "preprocessed", "nnUNet_results": pipeline["root"] / "unit"}
    for name, folder in folders.items():
        monkeypatch.setenv(name, str(folder))
        if isinstance(getattr(trainer_module, name), str):  # releases before 2.8 read them once, at import
            monkeypatch.setattr(trainer_module, name, str(folder))
    preprocessed = pipeline["root"] / "preprocessed" / f"Dataset{DATASET_ID}_AFLTest"

    def build(cls):
        plans = json.loads((preprocessed / "nnUNetPlans.json").read_text()) | {"continue_training": False}
        dataset_json = json.loads((preprocessed / "dataset.json").read_text())
        trainer = cls(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json, device=torch.device("cpu"))
        trainer.initialize()
        return trainer

    return build


@pytest.mark.parametrize("cls", [nnUNetTrainerAFL, nnUNetTrainerAFL_scale_aware])
def test_trainer_loss_is_afl_on_the_foreground_logit_per_level(trainer_factory, cls):
    torch.manual_seed(0)
    trainer = trainer_factory(cls)
    assert isinstance(trainer.loss, DeepSupervisionWrapper)
    outputs = trainer.network(torch.randn(2, trainer.num_input_channels, 64, 64))
    levels = len(outputs)
    # nnU-Net's scheme: weight 1/2^i for level i, the coarsest level 0, normalised to sum 1.
    weights = np.array([0.5**i for i in range(levels - 1)] + [0.0])
    weights /= weights.sum()
    np.testing.assert_allclose(trainer.loss.weight_factors, weights)
    targets, expected = [], 0.0
    for level, (output, weight) in enumerate(zip(outputs, weights)):
        size = output.shape[2:]
        target = torch.zeros(2, 1, *size)
        target[0, 0, size[0] // 4 : size[0] // 2, size[1] // 3 : size[1] // 2 + 1] = 1  # sample 1 lesion-free
        targets.append(target)
        if weight == 0:
            continue
        in_plane_mm = [0.5 * 64 / n for n in size]  # the plans' 0.5 mm spacing, downsampled to this level
        afl = AdaptiveFocalLoss(variant=cls.afl_variant)
        expected = expected + weight * afl(output[:, 1:] - output[:, :1], target, spacing=in_plane_mm)
    torch.testing.assert_close(trainer.loss(outputs, targets), expected, rtol=1e-5, atol=1e-7)


def test_patch_loss_spacing_follows_the_level():
    loss = AFLPatchLoss("scale_aware", spacing=[0.5, 0.5], patch_size=[64, 64])
    logits = torch.randn(1, 2, 16, 16)
    target = torch.zeros(1, 1, 16, 16)
    target[0, 0, 4:7, 4:9] = 1
    expected = AdaptiveFocalLoss(variant="scale_aware")(logits[:, 1:] - logits[:, :1], target, spacing=[2.0, 2.0])
    torch.testing.assert_close(loss(logits, target), expected)
    with pytest.raises(ValueError, match="one value per axis"):
        AFLPatchLoss("paper", spacing=[0.5, 0.5, 3.0], patch_size=[64, 64])


def test_raw_dataset_refuses_to_overwrite_and_names_bad_holdouts(pipeline, tmp_path):
    layout = pipeline["root"] / "layout"
    with pytest.raises(FileExistsError, match="--force"):
        make_raw_dataset(layout, pipeline["root"] / "raw", DATASET_ID)
    with pytest.raises(ValueError, match="not in"):
        make_raw_dataset(layout, tmp_path, 7, holdout=["no_such_case"])
    with pytest.raises(ValueError, match="1 to 999"):
        make_raw_dataset(layout, tmp_path, 1000)


def test_raw_holdout_fraction_is_afl_trains_validation_split(pipeline, tmp_path, capsys):
    from afl_core.data.splits import patient_grouping, split_cases
    from afl_core.integrations.nnunet import main

    layout = pipeline["root"] / "layout"
    main(["raw", str(layout), "--id", "5", "--raw", str(tmp_path), "--holdout-fraction", "0.3", "--split-seed", "1"])
    dataset = Path(capsys.readouterr().out.strip())
    held_out = sorted(p.name.removesuffix(".nii.gz") for p in (dataset / "labelsTs").iterdir())
    expected = split_cases(layout, 0.3, seed=1, group_of=patient_grouping(layout))[1]
    assert held_out == expected and len(expected) == 2
