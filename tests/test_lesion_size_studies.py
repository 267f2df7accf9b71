"""afl_core.lesion_size_studies: the documented measurements, each against an independent computation."""

import math

import numpy as np
import pytest
import torch

from afl_core import lesion_size_studies as studies
from afl_core.data import resize_label
from afl_core.losses import SCALE_AWARE_ALPHA, SCALE_AWARE_MAX_SIZE_GAMMA, SCALE_AWARE_REFERENCE_DIAMETER
from afl_core.metrics import segmentation_scores
from afl_core.shape import foreground_fraction, mean_gradient_magnitude


def test_ball_holds_the_voxels_whose_centre_is_inside():
    shape, spacing, offset = (9, 30, 31), (3.0, 0.5, 0.5), (0.3, -1.0, 2.5)
    mask = studies.ball(shape, spacing, 0.2, offset)
    radius = (3 * 200 / (4 * np.pi)) ** (1 / 3)
    expected = np.zeros(shape, bool)
    for index in np.ndindex(*shape):
        position = [(i - (n - 1) / 2 - o) * s for i, n, o, s in zip(index, shape, offset, spacing)]
        expected[index] = math.dist(position, (0, 0, 0)) <= radius
    np.testing.assert_array_equal(mask, expected)
    disc = studies.ball((200, 200), (0.25, 0.25), np.pi * 10**2 / 1000)  # r = 10 mm
    assert disc.sum() * 0.25**2 == pytest.approx(np.pi * 100, rel=0.01)
    with pytest.raises(ValueError, match="2 or 3 values"):
        studies.ball((4, 4), (1.0, 1.0, 1.0), 1.0)


def test_expected_dice_is_dice_for_a_certain_posterior_and_the_mean_over_draws_otherwise():
    truth = studies.ball((64, 64), (1.0, 1.0), 0.3)
    called = studies.ball((64, 64), (1.0, 1.0), 0.3, offset=(3, 0))
    assert studies.expected_dice(truth.astype(float), called) == pytest.approx(
        segmentation_scores(called, truth)["dice"], abs=1e-12
    )
    # a fuzzy posterior: the mean Dice over random truths drawn from it (many voxels, so
    # the ratio of expectations and the expectation of the ratio agree closely)
    q, _ = studies.disc_posterior(8.0, 1.0, side=128, pixel_mm=0.5)
    called = q > 0.4
    rng = np.random.default_rng(0)
    draws = [segmentation_scores(called, rng.random(q.shape) < q)["dice"] for _ in range(200)]
    assert studies.expected_dice(q, called) == pytest.approx(np.mean(draws), abs=0.005)


def _best_threshold_by_sorting(q: np.ndarray) -> tuple[float, float]:
    """The Dice-optimal set calls the voxels of highest q: scan every prefix of the sorted q."""
    ordered = np.sort(q.ravel())[::-1]
    dice = 2 * np.cumsum(ordered) / (np.arange(1, ordered.size + 1) + q.sum())
    k = int(np.argmax(dice))
    return float(dice[k]), float(ordered[k])


def test_alpha_study_against_a_scan_of_every_threshold():
    table = studies.alpha_study()
    assert len(table) == 9
    # the study scans alpha in steps of 0.01: within that step of the exact optimum
    exact = [
        _best_threshold_by_sorting(studies.disc_posterior(r, w)[0])
        for r, w in zip(table["radius (mm)"], table["width (mm)"])
    ]
    np.testing.assert_allclose(table["best Dice"], [d for d, _ in exact], atol=2e-3)
    np.testing.assert_allclose(table["best alpha"], [1 - t for _, t in exact], atol=0.011)
    f = [studies.disc_posterior(r, w)[1].mean() for r, w in zip(table["radius (mm)"], table["width (mm)"])]
    np.testing.assert_allclose(table["f"], f)
    # what docs/scale_aware.md quotes
    assert table["best alpha"].between(0.5, 0.8).all()
    assert (table[f"loss at alpha={SCALE_AWARE_ALPHA:g}"] < 0.017).all()
    assert (table["loss at alpha=1-f"] > 0.14).all()


def test_size_term_table_follows_the_formula_and_the_loss():
    table = studies.size_term_table(volumes_ml=(0.1, 1.0, 10.0), references_mm=(100.0, 200.0))
    diameter = (6 * np.array([100.0, 1000.0, 10000.0]) / np.pi) ** (1 / 3)
    np.testing.assert_allclose(table["diameter (mm)"], diameter)
    np.testing.assert_allclose(table["D=200 mm"], 2 * np.log10(200 / diameter))
    np.testing.assert_allclose(table["D=100 mm"], 2 * np.log10(100 / diameter))
    # the loss's gamma adds the outline term of a voxelised ball (r slightly above 1)
    outline = table["gamma (afl_core)"] - table[f"D={SCALE_AWARE_REFERENCE_DIAMETER:g} mm"]
    assert outline.between(0, 0.1).all()
    assert studies.size_term(0.5) == SCALE_AWARE_MAX_SIZE_GAMMA


def test_gamma_across_grids_scale_aware_is_the_same_where_the_paper_follows_the_canvas():
    table = studies.gamma_across_grids()
    discs = table[table["lesion and grid"].str.startswith("disc")]
    np.testing.assert_allclose(discs["gamma (scale_aware)"], discs["gamma (scale_aware)"].iloc[0], rtol=1e-6)
    # same outline, four times the area per doubling of the side: the paper's gamma / 4
    np.testing.assert_allclose(discs["gamma (paper)"].to_numpy()[1:] / discs["gamma (paper)"].to_numpy()[:-1], 0.25)
    for volume in ("1 ml", "10 ml"):
        balls = table[table["lesion and grid"].str.startswith(volume)]
        np.testing.assert_allclose(balls["gamma (scale_aware)"], balls["gamma (scale_aware)"].iloc[0], rtol=0.02)


def test_focusing_table_is_the_modulating_factor():
    table = studies.focusing_table(gammas=(2.0, 5.0), p_t=(0.9,))
    np.testing.assert_allclose(table["p_t=0.9"], [0.1**2, 0.1**5])


def test_the_jump_at_one_voxel_appears_above_a_two_mm_voxel():
    spacings = ((1.0, 1.0), (1.7, 1.7), (3.0, 3.0), (3.0, 0.5, 0.5), (3.0, 3.0, 3.0))
    table = studies.empty_versus_one_voxel(spacings, side=16)
    diameter = [
        2 * np.sqrt(np.prod(s) / np.pi) if len(s) == 2 else (6 * np.prod(s) / np.pi) ** (1 / 3) for s in spacings
    ]
    np.testing.assert_allclose(table["voxel's diameter (mm)"], diameter, rtol=1e-5)
    expected_jump = SCALE_AWARE_MAX_SIZE_GAMMA - np.clip(
        2 * np.log10(SCALE_AWARE_REFERENCE_DIAMETER / np.array(diameter)), 0, SCALE_AWARE_MAX_SIZE_GAMMA
    )
    np.testing.assert_allclose(table["jump"], expected_jump, atol=1e-5)
    assert (table["jump"][np.array(diameter) <= 2.0] == 0).all() and (table["jump"][np.array(diameter) > 2.0] > 0).all()


def _resize_by_boxes(mask: np.ndarray, size) -> np.ndarray:
    """Area resize then != 0, written as its definition: output voxel i along an axis of n
    resized to m covers input voxels floor(i n / m) .. ceil((i + 1) n / m) - 1."""
    out = np.zeros(size, bool)
    for index in np.ndindex(*size):
        box = tuple(
            slice(int(np.floor(i * n / m)), int(np.ceil((i + 1) * n / m))) for i, n, m in zip(index, mask.shape, size)
        )
        out[index] = mask[box].any()
    return out


def test_resize_growth_against_the_box_definition_of_the_resize():
    shape, spacing, size = (40, 36, 10), (0.5, 0.5, 3.0), (25, 18, 12)
    table = studies.resize_growth((0.05, 0.2), shape=shape, spacing=spacing, size=size, positions=3, seed=4)
    offsets = np.random.default_rng(4).uniform(-4, 4, size=(3, 3))
    new_spacing = np.array(shape) * spacing / np.array(size)
    for volume, row in zip((0.05, 0.2), table.itertuples(index=False)):
        growth = []
        for offset in offsets:
            native = studies.ball(shape, spacing, volume, offset)
            growth.append(_resize_by_boxes(native, size).sum() * new_spacing.prod() / (native.sum() * np.prod(spacing)))
        assert row[1:4] == pytest.approx((np.mean(growth), np.min(growth), np.max(growth)))
        assert min(growth) > 1  # the resize only ever adds voxels


def test_resize_growth_gamma_is_the_paper_gamma_of_the_resized_label():
    table = studies.resize_growth((0.2,), shape=(40, 36, 10), size=(25, 18, 12), positions=1, seed=1)
    offset = np.random.default_rng(1).uniform(-4, 4, size=(1, 3))[0]
    resized = resize_label(studies.ball((40, 36, 10), (0.5, 0.5, 3.0), 0.2, offset), (25, 18, 12))
    m = torch.from_numpy(resized).float()[None, None]
    assert table["gamma after the resize (mean)"].iloc[0] == pytest.approx(
        float(foreground_fraction(m)[0] + mean_gradient_magnitude(m)[0]), rel=1e-5
    )
