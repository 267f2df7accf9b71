"""The tutorial's experiments: arms, training and scoring them (afl_core.experiments), the
committed tables (afl_core.studies), the protocol gap and who carries the loss
(afl_core.analysis), seed differences (afl_core.statistics) and the figures (afl_core.viz),
on the CPU with tiny data."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

matplotlib.use("Agg")

from afl_core import links, studies, train  # noqa: E402
from afl_core.analysis import (  # noqa: E402
    SHARE_PARTS,
    confident_logits,
    loss_shares,
    protocol_effects,
    training_batches,
    voxel_losses,
)
from afl_core.experiments import (  # noqa: E402
    ARMS,
    STUDIES,
    arm_config,
    evaluate_arms,
    train_arms,
    training_set,
    tutorial_settings,
)
from afl_core.losses import adaptive_parameters, get_loss  # noqa: E402
from afl_core.runs import PER_CASE_COLUMNS  # noqa: E402
from afl_core.statistics import seed_differences, seed_summary  # noqa: E402
from afl_core.studies import load_study, results_dir  # noqa: E402
from afl_core.synthetic import make_dataset  # noqa: E402
from afl_core.train import fit  # noqa: E402
from afl_core.viz import plot_comparisons, plot_runs, plot_seed_spread  # noqa: E402
from tests._http_server import FileServer  # noqa: E402

ENCODER = "tu-mobilenetv3_small_050"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(
        tmp_path_factory.mktemp("data") / "synthetic",
        6,
        seed=5,
        shape=(4, 32, 32),
        lesion_radius=(2.0, 4.0),
        irregularity=(0.0, 0.5),
        empty_fraction=0.2,
        progress=False,
    )


def tiny_settings(dataset, **overrides):
    return tutorial_settings(dataset, device="cpu", encoder=ENCODER, epochs=1, batch_size=4) | overrides


# --------------------------------------------------------------------------- arms and settings


def test_every_study_arm_is_a_valid_training_configuration(dataset, tmp_path):
    assert set(STUDIES["comparison"]) <= set(ARMS) and set(STUDIES["ablation"]) <= set(ARMS)
    for arm in ARMS:
        config = arm_config(arm, data=dataset, out=tmp_path / arm)
        loss, variant, options = ARMS[arm]
        assert (config.loss, config.loss_options) == (loss, options)
        assert config.variant == (variant if loss == "afl" else None)
    assert arm_config("afl_reference", data=dataset, out=tmp_path).classes == 2
    with pytest.raises(ValueError, match="unknown arm"):
        arm_config("afl_gamma_3", data=dataset, out=tmp_path)


def test_tutorial_settings_on_a_cpu(dataset):
    cpu = tutorial_settings(dataset, device="cpu")
    assert (cpu["encoder"], cpu["epochs"], cpu["batch_size"], cpu["optimizer"], cpu["val_fraction"]) == (
        "tu-resnet10t",
        12,
        8,
        "adam",
        0.5,
    )
    quick = tutorial_settings(dataset, device="cpu", quick=True)
    assert (quick["encoder"], quick["epochs"]) == (ENCODER, 2)
    assert tutorial_settings(dataset, device="cpu", quick=True, epochs=5, val_fraction=0.3)["epochs"] == 5
    assert not cpu["progress"] and cpu["data"] == str(dataset)


def test_training_set_is_the_one_fit_trains_on(dataset, tmp_path):
    config = arm_config("afl", **tiny_settings(dataset), seed=3, out=tmp_path / "run")
    fit(config)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    train_set = training_set(config)
    assert train_set.cases == saved["train_cases"]
    assert list(train_set.size) == saved["slice_size"]
    assert train_set.oversample_lesions == config.oversample_lesions and train_set.seed == 3
    assert train_set.augmentation is not None and training_set(config, augment=False).augmentation is None


# --------------------------------------------------------------------------- training and scoring arms


def test_train_then_evaluate_arms(dataset, tmp_path, capsys):
    runs = tmp_path / "runs"
    history = train_arms(["focal", "afl"], [0, 1], runs, **tiny_settings(dataset))
    assert list(history.columns[:6]) == ["arm", "seed", *train.HISTORY_COLUMNS]
    assert sorted(map(tuple, history[["arm", "seed"]].drop_duplicates().to_numpy())) == [
        ("afl", 0),
        ("afl", 1),
        ("focal", 0),
        ("focal", 1),
    ]
    assert capsys.readouterr().out.count("validation Dice") == 4
    # a finished run is not trained again: the same history, wall-clock included
    again = train_arms(["afl"], [1], runs, **tiny_settings(dataset))
    pd.testing.assert_frame_equal(
        again, history[(history["arm"] == "afl") & (history["seed"] == 1)].reset_index(drop=True)
    )
    (runs / "notes-seed0").mkdir()  # not a run folder: ignored
    study = evaluate_arms(runs, ["afl", "focal"], device="cpu", name="comparison")
    assert study.arms == ["focal", "afl"]  # the order of the study, not of the folders
    assert list(study.per_case.columns[: 2 + len(PER_CASE_COLUMNS)]) == ["arm", "seed", *PER_CASE_COLUMNS]
    n_cases = len(json.loads((runs / "afl-seed0" / "config.json").read_text())["val_cases"])
    assert len(study.per_case) == 4 * n_cases
    assert not study.per_case.duplicated(["arm", "seed", "case"]).any()
    own = pd.read_csv(runs / "focal-seed1" / "eval" / "per_case.csv")  # what evaluate_run wrote
    mine = study.per_case[(study.per_case["arm"] == "focal") & (study.per_case["seed"] == 1)]
    np.testing.assert_allclose(mine["dice"].to_numpy(), own["dice"].to_numpy())
    np.testing.assert_allclose(mine["hd95_mm"].to_numpy(), own["hd95"].to_numpy())
    with pytest.raises(FileNotFoundError, match="no trained"):
        evaluate_arms(tmp_path / "empty")


def test_a_new_arm_is_one_entry_in_the_arm_table(dataset, tmp_path, monkeypatch):
    """Registered in ARMS alone (here, in this test), an arm trains, is scored, and joins the
    study tables and the figures like the others: nothing else lists the arms."""
    from afl_core import experiments

    monkeypatch.setitem(experiments.ARMS, "afl_gamma_half", ("afl", "paper", {"gamma": 0.5}))
    history = train_arms(["afl_gamma_half"], [0], tmp_path / "runs", **tiny_settings(dataset))
    assert set(history["arm"]) == {"afl_gamma_half"} and history["train_loss"].notna().all()
    config = json.loads((tmp_path / "runs" / "afl_gamma_half-seed0" / "config.json").read_text())
    assert config["loss_options"] == {"gamma": 0.5}
    study = evaluate_arms(tmp_path / "runs", device="cpu")
    assert study.arms == ["afl_gamma_half"] and set(study.per_case["arm"]) == {"afl_gamma_half"}
    plot_seed_spread(seed_summary(study.per_case, "dice"))


# --------------------------------------------------------------------------- committed studies


def fake_study(folder, arms=("afl", "focal"), seeds=(0, 1), cases=("c0", "c1", "c2"), arm_column="arm"):
    """A study folder as benchmarks/compare_losses.py writes it (``arm_column="loss"``: as it
    wrote it before the arm column had its name); returns the per-case rows with ``arm``."""
    rng = np.random.default_rng(0)
    rows = [
        dict(
            arm=a,
            seed=s,
            case=c,
            dice=rng.random(),
            iou=rng.random(),
            hd95_mm=rng.random(),
            hd95_penalised_mm=rng.random(),
            lesion_f1=1.0,
            lesion_picai_f1=1.0,
            paper_dice=rng.random(),
            paper_iou=rng.random(),
        )
        for a in arms
        for s in seeds
        for c in cases
    ]
    history = [
        dict(arm=a, seed=s, epoch=e, train_loss=1 / e, val_loss=1 / e, val_dice=e / 10)
        for a in arms
        for s in seeds
        for e in (1, 2)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    written = {"arm": arm_column}
    pd.DataFrame(rows).rename(columns=written).to_csv(folder / "per_case.csv", index=False)
    pd.DataFrame(history).rename(columns=written).to_csv(folder / "history.csv", index=False)
    (folder / "config.json").write_text(json.dumps({"command": "python benchmarks/compare_losses.py"}))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("arm_column", ["arm", "loss"])
def test_load_study_reads_and_checks_the_tables(tmp_path, arm_column):
    rows = fake_study(tmp_path / "comparison", arm_column=arm_column)
    study = load_study("comparison", tmp_path)
    pd.testing.assert_frame_equal(study.per_case, rows)  # the committed tables' old column read as "arm"
    assert list(study.history.columns[:2]) == ["arm", "seed"]
    assert study.config["command"].startswith("python") and study.arms == ["focal", "afl"]
    rows.drop(columns="hd95_mm").to_csv(tmp_path / "comparison" / "per_case.csv", index=False)
    with pytest.raises(ValueError, match="hd95_mm"):
        load_study("comparison", tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_study("ablation", tmp_path)
    with pytest.raises(ValueError, match="unknown study"):
        results_dir("sweep")


def test_results_are_downloaded_where_the_repository_is_absent(tmp_path, monkeypatch):
    fake_study(tmp_path / "served" / "ablation")
    monkeypatch.setattr(studies, "REPO_RESULTS", tmp_path / "no-clone")
    with FileServer() as server:
        for name in ("per_case.csv", "history.csv", "config.json"):
            server.add(f"/results/ablation/{name}", (tmp_path / "served" / "ablation" / name).read_bytes())
        monkeypatch.setattr(links, "raw_url", lambda path: server.url + "/" + path)
        folder = results_dir("ablation", cache=tmp_path / "cache")
        assert folder == tmp_path / "cache" / "ablation"
        served = tmp_path / "served" / "ablation" / "per_case.csv"
        assert (folder / "per_case.csv").read_bytes() == served.read_bytes()
        results_dir("ablation", cache=tmp_path / "cache")  # cached: no second download
        assert len(server.requests("/results/ablation/per_case.csv")) == 1


def test_protocol_effects_by_hand():
    table = pd.DataFrame(
        {
            "arm": ["a", "a", "b", "b"],
            "seed": 0,
            "case": ["x", "y", "x", "y"],
            "dice": [0.6, 1.0, 0.4, 0.0],
            "paper_dice_foreground": [0.5, 0.0, 0.3, 0.0],
            "paper_dice": [0.74, 0.5, 0.64, 0.45],
            "target_voxels": [10, 0, 10, 0],
        }
    )
    effects = protocol_effects(table)
    assert list(effects.index) == ["a", "b"]
    a = effects.loc["a"]
    assert a["standard DSC"] == pytest.approx(0.8) and a["paper DSC"] == pytest.approx(0.62)
    assert a["softness"] == pytest.approx(((0.5 - 0.6) + (0.0 - 1.0)) / 2)
    assert a["background"] == pytest.approx(((0.74 - 0.5) + (0.5 - 0.0)) / 2)
    assert a["paper - standard"] == pytest.approx(a["softness"] + a["background"])
    assert a["paper - standard (lesion cases)"] == pytest.approx(0.14)
    assert a["paper - standard (lesion-free cases)"] == pytest.approx(-0.5)
    with pytest.raises(KeyError, match="target_voxels"):
        protocol_effects(table.drop(columns="target_voxels"))


def test_seed_differences_by_hand():
    table = pd.DataFrame(
        {
            "arm": ["ref"] * 4 + ["a"] * 4 + ["b"] * 4,
            "seed": [0, 0, 1, 1] * 3,
            "case": ["x", "y"] * 6,
            "dice": [0.5, 0.7, 0.4, 0.6, 0.6, 0.8, 0.3, 0.5, 0.7, 0.7, 0.6, 0.6],
        }
    )
    out = seed_differences(table, "ref")
    assert list(out.index) == ["a", "b"]
    np.testing.assert_allclose(out.loc["a", ["seed 0", "seed 1"]].astype(float), [0.1, -0.1])
    np.testing.assert_allclose(out.loc["b", ["seed 0", "seed 1"]].astype(float), [0.1, 0.1])
    assert list(out["same sign"]) == [False, True]
    assert out.loc["a", "min"] == pytest.approx(-0.1) and out.loc["b", "max"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="reference"):
        seed_differences(table, "afl")


# --------------------------------------------------------------------------- who carries the loss


def two_slices(size=16, radius=3):
    """A batch of one lesion-free slice and one slice holding a disc."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = (xx**2 + yy**2 < radius**2).astype(np.float32)
    return torch.from_numpy(np.stack([np.zeros_like(disc), disc]))[:, None]


def test_confident_logits_give_the_true_class_p_t():
    target = two_slices()
    p_true = torch.where(
        target > 0, torch.sigmoid(confident_logits(target, 0.9)), 1 - torch.sigmoid(confident_logits(target, 0.9))
    )
    torch.testing.assert_close(p_true, torch.full_like(target, 0.9))
    logits = confident_logits(target, (0.99, 0.6))
    torch.testing.assert_close(torch.sigmoid(logits[target > 0]), torch.full(((target > 0).sum(),), 0.6))
    torch.testing.assert_close(torch.sigmoid(-logits[target == 0]), torch.full(((target == 0).sum(),), 0.99))
    two = confident_logits(target, 0.8, channels=2)
    torch.testing.assert_close(torch.sigmoid(two[:, 1:]), torch.sigmoid(confident_logits(target, 0.8)))
    torch.testing.assert_close(two[:, :1], -two[:, 1:])
    for bad in (0.0, 1.0, (0.5, 1.2)):
        with pytest.raises(ValueError, match="p_t"):
            confident_logits(target, bad)


@pytest.mark.parametrize("p_t", [0.9, (0.99, 0.6)])
def test_voxel_losses_follow_the_focal_formula(p_t):
    target = two_slices()
    t = target.numpy()
    p = np.where(t > 0, p_t if np.isscalar(p_t) else p_t[1], p_t if np.isscalar(p_t) else p_t[0])
    alpha, gamma = (v.numpy()[:, None, None, None] for v in adaptive_parameters(target))
    alpha_t = np.where(t > 0, alpha, 1 - alpha)
    expected = -alpha_t * (1 - p) ** gamma * np.log(p)
    np.testing.assert_allclose(voxel_losses("afl", target, p_t).numpy(), expected, rtol=1e-5)
    # ablation options reach the loss: alpha 0.5 everywhere, gamma 0 everywhere
    np.testing.assert_allclose(
        voxel_losses("afl_alpha_half", target, p_t).numpy(), -0.5 * (1 - p) ** gamma * np.log(p), rtol=1e-5
    )
    np.testing.assert_allclose(voxel_losses("afl_alpha_only", target, p_t).numpy(), -alpha_t * np.log(p), rtol=1e-5)


def test_baselines_at_half_their_value():
    target = two_slices()
    logits = confident_logits(target, (0.95, 0.7))
    for arm in ("focal", "ce"):
        registry = get_loss(arm)(logits, target)  # smp's focal loss, torch's BCE
        torch.testing.assert_close(2 * voxel_losses(arm, target, (0.95, 0.7)).mean(), registry, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="per batch"):
        voxel_losses("dice", target, 0.9)


def test_reference_weighs_every_voxel_alike_at_one_p_t():
    target = two_slices()
    values = voxel_losses("afl_reference", target, 0.9).numpy()
    # gamma = foreground fraction of the batch + mean |numpy.gradient| of the first sample (empty: 0)
    gamma = target.numpy().mean() + 0.0
    np.testing.assert_allclose(values, np.full(values.shape, 0.1**gamma * -math.log(0.9)), rtol=1e-5)


def test_loss_shares_by_hand():
    target = two_slices()
    f = float(target[1].mean())
    _, gamma = adaptive_parameters(target[1:])
    shares = loss_shares("afl", [{"label": target}], 0.9)
    assert sum(shares[part] for part in SHARE_PARTS) == pytest.approx(1.0)
    assert shares["empty / lesion slice"] == pytest.approx(1 / (4 * f * (1 - f) * 0.1 ** float(gamma)), rel=1e-5)
    # lesion and background of the lesion slice: (1 - f) * f each, per voxel count
    assert shares["lesion voxels"] == pytest.approx(shares["background of lesion slices"], rel=1e-5)
    empty_batch = {"label": torch.zeros_like(target)}
    reference = loss_shares("afl_reference", [{"label": target}, empty_batch], 0.9)
    assert reference["skipped batches"] == 1
    assert reference["lesion-free slices"] == pytest.approx(0.5)  # every voxel alike, two slices alike
    assert reference["lesion voxels"] == pytest.approx(f / 2)
    assert loss_shares("afl", [{"label": target}, empty_batch], 0.9)["skipped batches"] == 0
    with pytest.raises(ValueError, match="no loss"):
        loss_shares("afl_reference", [empty_batch], 0.9)


def test_training_batches_are_the_batches_fit_draws(dataset, tmp_path):
    config = arm_config("afl", **tiny_settings(dataset), seed=2, out=tmp_path)
    plain = training_set(config, augment=False)
    ours = [b["label"] for b in training_batches(plain, [1, 2], config.batch_size)]
    theirs = []
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        loader = DataLoader(plain, batch_size=config.batch_size, sampler=plain.sampler(epoch), drop_last=True)
        theirs += [b["label"] for b in loader]
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- figures


def test_figures_are_labelled(tmp_path):
    rows = fake_study(tmp_path / "comparison", arms=("afl", "focal", "ce"), cases=tuple(f"c{i}" for i in range(12)))
    study = load_study("comparison", tmp_path)
    fig = plot_runs(study.history, ("train_loss", "val_dice"))
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    assert fig.axes[1].get_ylabel() == "validation Dice (mean over cases)"
    assert len(fig.axes[0].lines) == 3 * (2 + 1)  # per arm: a line per seed and the mean
    ax = plot_seed_spread(seed_summary(rows, "dice"))
    assert ax.get_ylabel() == "Dice (mean over cases)" and len(ax.patches) == 3
    table = pd.DataFrame(
        {"mean_diff": [0.1, -0.02], "low": [0.05, -0.1], "high": [0.15, 0.06], "p_adjusted": [0.01, 0.7]},
        index=["focal", "ce"],
    )
    ax = plot_comparisons(table)
    filled, hollow = [line for line in ax.lines if line.get_marker() == "o"]
    assert list(filled.get_xdata()) == [0.1] and list(hollow.get_xdata()) == [-0.02]
    assert hollow.get_markerfacecolor() == "white" != filled.get_markerfacecolor()
    assert ax.get_xlabel() == "difference in Dice"
