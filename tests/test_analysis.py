"""Who carries the loss of a trained network (afl_core.analysis.network_loss_shares), checked
against the loss of every voxel computed in NumPy from the same network's logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from afl_core.analysis import SHARE_PARTS, has_voxel_loss, loss_shares, network_loss_shares, training_batches
from afl_core.evaluate import load_model
from afl_core.experiments import arm_config, training_set, tutorial_settings
from afl_core.losses import adaptive_parameters
from afl_core.train import build_datasets, fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    """A one-epoch `afl` run on the five tiny cases of conftest's ``dataset``."""
    settings = tutorial_settings(dataset, device="cpu", encoder="tu-mobilenetv3_small_050", epochs=1, batch_size=2)
    config = arm_config("afl", **settings, seed=1, out=str(tmp_path_factory.mktemp("runs") / "afl-seed1"))
    fit(config)
    return config


def _numpy_parts(values: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """``values`` summed over the lesion-free slices, the background of lesion slices and the lesion voxels."""
    lesion_slice = label.reshape(len(label), -1).any(axis=1)
    return {
        "lesion-free slices": values[~lesion_slice].sum(),
        "background of lesion slices": values[lesion_slice][label[lesion_slice] == 0].sum(),
        "lesion voxels": values[label > 0].sum(),
    }


def _expected(run, batches) -> dict[str, dict[str, float]]:
    """Per arm (afl: its own alpha and gamma per slice; ce: -log p_t) the parts' shares and the
    empty / lesion slice ratio, and the mean p_t per part, from the network's logits in NumPy."""
    model, _ = load_model(run.out, "last")
    totals = {arm: dict.fromkeys(SHARE_PARTS, 0.0) for arm in ("afl", "ce")}
    slices = {arm: {True: [], False: []} for arm in totals}
    p_t_sums, counts = dict.fromkeys(SHARE_PARTS, 0.0), dict.fromkeys(SHARE_PARTS, 0.0)
    for batch in batches:
        with torch.no_grad():
            x = model(batch["image"]).double().numpy()
        label = batch["label"].numpy()
        p = 1 / (1 + np.exp(-x))
        p_t = np.where(label > 0, p, 1 - p)
        alpha, gamma = (v.double().numpy()[:, None, None, None] for v in adaptive_parameters(batch["label"]))
        alpha_t = np.where(label > 0, alpha, 1 - alpha)
        losses = {"afl": -alpha_t * (1 - p_t) ** gamma * np.log(p_t), "ce": -np.log(p_t)}
        lesion_slice = label.reshape(len(label), -1).any(axis=1)
        for arm, values in losses.items():
            for part, value in _numpy_parts(values, label).items():
                totals[arm][part] += value
            per_slice = values.reshape(len(values), -1).sum(axis=1)
            for flag in (True, False):
                slices[arm][flag] += per_slice[lesion_slice == flag].tolist()
        for part, value in _numpy_parts(p_t, label).items():
            p_t_sums[part] += value
        for part, value in _numpy_parts(np.ones_like(p_t), label).items():
            counts[part] += value
    expected = {}
    for arm, parts in totals.items():
        whole = sum(parts.values())
        expected[arm] = {part: value / whole for part, value in parts.items()}
        expected[arm]["empty / lesion slice"] = np.mean(slices[arm][False]) / np.mean(slices[arm][True])
        expected[arm] |= {f"p_t: {part}": p_t_sums[part] / counts[part] for part in SHARE_PARTS}
    return expected


def _check(measured, expected):
    for arm, values in expected.items():
        for column, value in values.items():
            assert measured.loc[arm, column] == pytest.approx(value, rel=1e-4), (arm, column)
        assert sum(measured.loc[arm, part] for part in SHARE_PARTS) == pytest.approx(1.0)
        assert measured.loc[arm, "skipped batches"] == 0


def test_shares_on_the_training_batches_equal_numpy(run):
    measured = network_loss_shares(run.out, ["afl", "ce"], slices="training", epochs=(1, 2))
    plain = training_set(run, augment=False)
    batches = []
    for epoch in (1, 2):  # the batches fit draws (its sampler, whole batches), without augmentation
        plain.set_epoch(epoch)
        batches += list(DataLoader(plain, batch_size=run.batch_size, sampler=plain.sampler(epoch), drop_last=True))
    assert batches
    _check(measured, _expected(run, batches))
    # The two losses weigh the same predictions differently, and the network is not equally sure everywhere.
    assert measured.loc["afl", "lesion voxels"] != pytest.approx(measured.loc["ce", "lesion voxels"], rel=1e-3)
    assert measured.loc["afl", "p_t: lesion voxels"] != pytest.approx(measured.loc["afl", "p_t: lesion-free slices"])


def test_shares_on_the_validation_slices_equal_numpy(run):
    # Default arm: the run's own, named by its folder.
    measured = network_loss_shares(run.out, slices="validation")
    assert list(measured.index) == ["afl"]
    validation = build_datasets(run)[1]
    batches = list(DataLoader(validation, batch_size=run.batch_size, shuffle=False, drop_last=True))
    _check(measured, {"afl": _expected(run, batches)["afl"]})


def test_an_imposed_p_t_on_the_same_batches_is_loss_shares(run):
    plain = training_set(run, augment=False)
    for p_t in (0.9, (0.99, 0.6)):
        imposed = network_loss_shares(run.out, ["afl", "afl_reference"], epochs=(1, 2), p_t=p_t)
        for arm in ("afl", "afl_reference"):
            expected = loss_shares(arm, training_batches(plain, (1, 2), run.batch_size), p_t)
            for column, value in expected.items():
                assert imposed.loc[arm, column] == pytest.approx(value, rel=1e-9), (arm, column)
        assert imposed.loc["afl", "p_t: lesion voxels"] == pytest.approx(p_t if np.isscalar(p_t) else p_t[1])


def test_bad_requests_are_named(run, tmp_path):
    with pytest.raises(ValueError, match="slices"):
        network_loss_shares(run.out, slices="test")
    with pytest.raises(ValueError, match="per batch"):
        network_loss_shares(run.out, ["dice"])
    with pytest.raises(FileNotFoundError, match="checkpoint_last.pt"):
        network_loss_shares(tmp_path / "afl-seed0")
    renamed = tmp_path / "ce-seed1"  # a folder named after another arm than it trained
    renamed.mkdir()
    for name in ("config.json", "checkpoint_last.pt"):
        (renamed / name).write_bytes((Path(run.out) / name).read_bytes())
    with pytest.raises(ValueError, match="named after arm 'ce'"):
        network_loss_shares(renamed)


def test_which_arms_have_a_voxel_loss():
    assert all(has_voxel_loss(arm) for arm in ("ce", "focal", "afl", "afl_reference", "afl_scale_aware"))
    assert not any(has_voxel_loss(arm) for arm in ("dice", "iou", "tversky", "dice_ce", "dice_focal"))
    with pytest.raises(ValueError, match="unknown arm"):
        has_voxel_loss("nosuch")
