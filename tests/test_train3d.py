"""The authors' path: 3D training on whole volumes, its evaluation, and ``--recipe authors`` (CPU, tiny runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from afl_core import recipes, train
from afl_core.data import normalise_channels
from afl_core.evaluate import evaluate_run
from afl_core.metrics import hd95, paper_protocol_scores
from afl_core.models import build_model
from afl_core.synthetic import make_dataset
from afl_core.train import HISTORY_COLUMNS, TrainConfig, fit

monai_transforms = pytest.importorskip("monai.transforms")

REPO = Path(__file__).resolve().parents[1]
TIMING_COLUMNS = ["train_images_per_s", "seconds"]
# The smallest volumes the 3D U-Net trains on with batch 1: it pads every axis to a multiple
# of 32, and batch normalisation needs two values per channel at the deepest level (1 x 1 x 2).
SMALL = (8, 32, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """Three lesion-bearing cases of 16 x 64 x 64 voxels (3 x 0.5 x 0.5 mm): two train, one validates."""
    return make_dataset(
        tmp_path_factory.mktemp("data3d") / "synthetic",
        3,
        seed=5,
        shape=(16, 64, 64),
        empty_fraction=0.0,
        progress=False,
    )


def _nifti_case(root: Path, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (C, X, Y, Z), label (X, Y, Z) and zooms straight from the NIfTI files."""
    names = json.loads((root / "dataset.json").read_text())["channel_names"]
    image = np.stack(
        [
            np.asarray(nib.load(root / "imagesTr" / f"{case}_{i:04d}.nii.gz").dataobj, dtype=np.float32)
            for i in range(len(names))
        ]
    )
    label = nib.load(root / "labelsTr" / f"{case}.nii.gz")
    return image, np.asarray(label.dataobj) > 0, np.array(label.header.get_zooms()[:3])


def _forward(model: torch.nn.Module, image_xyz: np.ndarray) -> torch.Tensor:
    """Sigmoid of every output channel for an image (C, X, Y, Z), back in (C', X, Y, Z)."""
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(image_xyz.transpose(0, 3, 1, 2)))[None])
    return torch.sigmoid(logits[0]).permute(0, 2, 3, 1)


def test_3d_cli_trains_and_evaluates_under_both_protocols(volumes, tmp_path):
    run = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "afl_core.train",
            "--data",
            str(volumes),
            "--dims",
            "3",
            "--encoder",
            "resnet18",
            "--epochs",
            "1",
            "--out",
            str(run),
            "--device",
            "cpu",
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
    assert list(history["epoch"]) == [1] and history[list(HISTORY_COLUMNS)].notna().all().all()
    config = json.loads((run / "config.json").read_text())
    assert (config["dims"], config["batch_size"], config["volume_size"], config["encoder_weights"]) == (
        3,
        1,
        [16, 64, 64],
        None,
    )
    assert config["steps_per_epoch"] == len(config["train_cases"]) == 2 and "monai" in config["versions"]

    evaluated = subprocess.run(
        [sys.executable, "-m", "afl_core.evaluate", "--run", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "DSC (paper protocol)" in evaluated.stdout
    per_case = pd.read_csv(run / "eval" / "per_case.csv")
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["dims"] == 3 and summary["grid"] == "original" and summary["paper_protocol_background"] == "1 - p"
    assert list(per_case["case"]) == config["val_cases"]

    # Both protocols equal what the network gives on the NIfTI volume, scored with NumPy.
    model = build_model("resnet18", None, in_channels=config["in_channels"], classes=1, dims=3)
    model.load_state_dict(torch.load(run / "checkpoint_last.pt", weights_only=True)["model"])
    model.eval()
    image, label, _ = _nifti_case(volumes, config["val_cases"][0])
    prob = _forward(model, normalise_channels(image))[0].numpy()
    pred = prob > 0.5
    row = per_case.iloc[0]
    assert row["dice"] == pytest.approx(2 * (pred & label).sum() / (pred.sum() + label.sum()), abs=1e-9)
    p, t = prob.astype(np.float64), label.astype(np.float64)
    soft = [(2 * (a * b).sum() + 1e-5) / ((a**2).sum() + (b**2).sum() + 1e-5) for a, b in ((p, t), (1 - p, 1 - t))]
    assert row["paper_dice"] == pytest.approx(np.mean(soft), rel=1e-4)
    assert history["val_dice"].iloc[-1] == pytest.approx(per_case["dice"].mean(), abs=1e-9)


def test_3d_resume_reproduces_the_uninterrupted_run(volumes, tmp_path, monkeypatch):
    settings = dict(
        data=volumes,
        loss="afl",
        dims=3,
        encoder="resnet10",
        size=SMALL,
        epochs=2,
        seed=3,
        optimizer="sgd",
        lr=0.01,
        progress=False,
    )
    whole = fit(TrainConfig(out=tmp_path / "whole", **settings))
    steps, original_call = [], train.TrainStep.__call__

    def interrupted_in_second_epoch(self, *batch):
        steps.append(1)
        if len(steps) > 3:
            raise KeyboardInterrupt
        return original_call(self, *batch)

    monkeypatch.setattr(train.TrainStep, "__call__", interrupted_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(TrainConfig(out=tmp_path / "split", **settings))
    monkeypatch.setattr(train.TrainStep, "__call__", original_call)
    resumed = fit(resume=True, out=tmp_path / "split")
    expected = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns=TIMING_COLUMNS)
    got = pd.read_csv(tmp_path / "split" / "history.csv").drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_spacing_reaches_a_loss_that_uses_it(volumes, tmp_path, monkeypatch):
    received = []
    real_make_loss = train.make_loss

    class UsesSpacing(torch.nn.Module):
        uses_spacing = True

        def __init__(self, loss):
            super().__init__()
            self.loss = loss

        def forward(self, logits, target, spacing=None):
            received.append((tuple(logits.shape), spacing))
            return self.loss(logits, target)

    monkeypatch.setattr(train, "make_loss", lambda *a, **k: UsesSpacing(real_make_loss(*a, **k)))
    fit(
        TrainConfig(
            data=volumes,
            out=tmp_path / "run",
            dims=3,
            encoder="resnet10",
            size=SMALL,
            resize=True,
            epochs=1,
            augment=False,
            progress=False,
        )
    )
    # Training (two volumes) and validation (one) get the voxel size of the resized grid,
    # (D, H, W) like the logits: 16 x 64 x 64 voxels of 3 x 0.5 x 0.5 mm resized to 8 x 32 x 64.
    assert [shape for shape, _ in received] == [(1, 1, *SMALL)] * 3
    for _, spacing in received:
        assert spacing.shape == (1, 3) and spacing.dtype == torch.float32
        np.testing.assert_allclose(spacing[0].numpy(), [3.0 * 16 / 8, 0.5 * 64 / 32, 0.5 * 64 / 64])


def test_authors_recipe_fills_what_is_unset_and_is_documented():
    config = TrainConfig(data="d", out="o", recipe="authors")
    for choice in recipes.RECIPES["authors"]:
        assert getattr(config, choice.field) == choice.value, choice.field
    assert config.classes == 2 and config.lr == 0.1
    assert (config.size, config.resize, config.batch_size, config.dims) == ((24, 160, 128), True, 1, 3)
    # Explicit settings win and are marked; the reference variant and lr 0.1 only where they apply.
    small = TrainConfig(data="d", out="o", recipe="authors", size=SMALL, encoder="resnet10")
    assert small.size == SMALL and small.encoder == "resnet10" and small.variant == "reference"
    text = recipes.describe("authors", small)
    assert "changed from the recipe's (24, 160, 128)" in text and "changed from the recipe's 'resnet50'" in text
    assert text.count("changed") == 2
    assert TrainConfig(data="d", out="o", recipe="authors", loss="focal").variant is None
    assert TrainConfig(data="d", out="o", recipe="authors", optimizer="adam").lr == 1e-3
    # The documentation names every choice and the line it comes from.
    doc = (REPO / "docs" / "authors_recipe.md").read_text(encoding="utf-8")
    for choice in recipes.RECIPES["authors"]:
        assert f"`{choice.field}`" in doc, choice.field
        for source in choice.source.split(" and "):
            assert source in doc, source
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainConfig(data="d", out="o", recipe="theirs")


def test_authors_recipe_tiny_run_scores_on_the_resized_grid_with_the_networks_background(volumes, tmp_path):
    run = tmp_path / "authors"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "afl_core.train",
            "--data",
            str(volumes),
            "--recipe",
            "authors",
            "--size",
            *map(str, SMALL),
            "--encoder",
            "resnet10",
            "--epochs",
            "1",
            "--out",
            str(run),
            "--device",
            "cpu",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    assert "recipe 'authors'" in trained.stdout and "src/PICAI/main.py:10" in trained.stdout
    config = json.loads((run / "config.json").read_text())
    assert (config["variant"], config["classes"], config["optimizer"], config["schedule"], config["amp"]) == (
        "reference",
        2,
        "sgd",
        "constant",
        False,
    )

    result = evaluate_run(run, progress=False)
    assert result.summary["grid"] == "resized" and result.summary["paper_protocol_background"] == "network channel 0"
    row = result.per_case.iloc[0]
    # Independently: MONAI's Resized (area) of the NIfTI volume in its own axis order, != 0
    # for the label; inference from channel 1, the soft protocol with channel 0 as background.
    model = build_model("resnet10", None, in_channels=config["in_channels"], classes=2, dims=3)
    model.load_state_dict(torch.load(run / "checkpoint_last.pt", weights_only=True)["model"])
    model.eval()
    image, label, zooms = _nifti_case(volumes, config["val_cases"][0])
    resize = monai_transforms.Resize(spatial_size=(SMALL[1], SMALL[2], SMALL[0]))
    label = np.asarray(resize(label[None].astype(np.float32)))[0] != 0
    channels = _forward(model, np.asarray(resize(normalise_channels(image)))).numpy()
    assert row["target_voxels"] == label.sum() and row["pred_voxels"] == (channels[1] > 0.5).sum()
    expected = paper_protocol_scores(channels[1], label, background=channels[0])
    assert row["paper_dice"] == pytest.approx(expected["dice"], rel=1e-4)
    assert row["paper_iou"] == pytest.approx(expected["iou"], rel=1e-4)
    assert row["paper_dice"] != pytest.approx(paper_protocol_scores(channels[1], label)["dice"], rel=1e-4)
    # HD95 in mm of the resized grid: the same extent, so zooms * shape / size per axis.
    spacing = zooms * np.array(image.shape[1:]) / np.array(label.shape)
    np.testing.assert_allclose(row["hd95"], hd95(channels[1] > 0.5, label, spacing=spacing), rtol=1e-9)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(dims=3, size=(16, 64)), "--size must be three positive numbers D H W with --dims 3"),
        (dict(dims=3, encoder="tu-mobilenetv3_small_050"), "3D encoder"),
        (dict(dims=3, encoder_weights="imagenet"), "random weights"),
        (dict(resize=True), "resize needs dims 3 and a size"),
        (dict(dims=4), "dims must be 2"),
    ],
)
def test_bad_3d_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(data="d", out="o", **bad)
