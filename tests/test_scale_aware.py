"""The scale-aware A-FL variant: a gamma of the lesion in mm, not of the canvas or the voxels."""

import numpy as np
import pytest
import torch

from afl_core.losses import (
    SCALE_AWARE_ALPHA,
    SCALE_AWARE_MAX_GAMMA,
    SCALE_AWARE_MAX_SIZE_GAMMA,
    SCALE_AWARE_REFERENCE_DIAMETER,
    AdaptiveFocalLoss,
    adaptive_focal_loss,
    adaptive_parameters,
    get_loss,
)
from afl_core.shape import lesion_shapes
from tests.test_losses import np_focal
from tests.test_shape import ball, batch, disc, star


def gamma_of(mask, spacing=None, **kwargs):
    return adaptive_parameters(batch(mask), variant="scale_aware", spacing=spacing, **kwargs)[1].item()


def np_gamma(shapes):
    """The documented formula, from the lesions' diameters and irregularities."""
    if shapes.size.size == 0:
        return SCALE_AWARE_MAX_SIZE_GAMMA
    size = np.clip(2 * np.log10(SCALE_AWARE_REFERENCE_DIAMETER / shapes.diameter), 0, SCALE_AWARE_MAX_SIZE_GAMMA)
    per_lesion = size + np.maximum(shapes.irregularity - 1, 0)
    return np.clip((per_lesion * shapes.size).sum() / shapes.size.sum(), 0, SCALE_AWARE_MAX_GAMMA)


def test_gamma_follows_the_documented_formula():
    masks = batch(
        disc(128, 3),
        disc(128, 12),
        disc(128, 48),
        star(128, 20, 0.4),
        np.maximum(disc(128, 4, centre=20), disc(128, 16, centre=80)),
        np.zeros((128, 128), np.float32),
    )
    spacing = (0.7, 0.7)
    alpha, gamma = adaptive_parameters(masks, variant="scale_aware", spacing=spacing)
    expected = [np_gamma(shapes) for shapes in lesion_shapes(masks, spacing)]
    np.testing.assert_allclose(gamma.numpy(), expected, rtol=1e-6)
    assert torch.all(alpha == SCALE_AWARE_ALPHA)
    assert np.all(np.diff(gamma[:3].numpy()) < 0), "a smaller lesion must get a larger gamma"
    assert gamma[3] > gamma_of(disc(128, 20), spacing) + 1, "a lobulated outline focuses more than a disc"


@pytest.mark.parametrize("radius", [4, 8, 20])
def test_the_same_lesion_on_any_canvas_gets_the_same_gamma(radius):
    # was 1.94 / 2.54 / 3.15 for r = 8 on 128 / 256 / 512
    values = [gamma_of(disc(size, radius)) for size in (128, 256, 512)]
    np.testing.assert_allclose(values, values[0], rtol=0.01)


@pytest.mark.parametrize("radius_mm", [3.0, 8.0, 20.0])
def test_the_same_physical_lesion_at_another_voxel_size_gets_the_same_gamma(radius_mm):
    fine, coarse = (gamma_of(ball((64, 64), radius_mm, (s, s)), spacing=(s, s)) for s in (0.5, 1.0))
    np.testing.assert_allclose(fine, coarse, rtol=0.05)
    # a 1 mm voxel grid read as 0.5 mm would halve the diameter: gamma must see the difference
    assert gamma_of(ball((64, 64), radius_mm, (1.0, 1.0)), spacing=(0.5, 0.5)) > coarse + 0.5


def test_the_same_physical_ball_on_anisotropic_voxels_gets_about_the_same_gamma():
    iso = gamma_of(ball((24, 24, 24), 5.0, (0.5, 0.5, 0.5)), spacing=(0.5, 0.5, 0.5))
    thick = gamma_of(ball((30, 24, 24), 5.0, (3.0, 0.5, 0.5)), spacing=(3.0, 0.5, 0.5))
    np.testing.assert_allclose(thick, iso, rtol=0.05)


def test_two_discs_are_not_more_irregular_than_one():
    one = disc(128, 10, centre=40)
    two = np.maximum(one, disc(128, 10, centre=90))
    assert len(lesion_shapes(batch(two))[0].size) == 2
    assert gamma_of(two) <= gamma_of(one) * 1.005
    only_outline = {"gamma_terms": ("smoothness",)}
    assert gamma_of(two, **only_outline) <= gamma_of(one, **only_outline) + 0.005


def test_a_speck_beside_a_large_lesion_moves_gamma_by_its_share_only():
    large = disc(128, 20)
    speck = large.copy()
    speck[5, 5] = 1
    assert abs(gamma_of(speck) - gamma_of(large)) < 0.01


def test_no_jump_between_an_empty_sample_and_the_smallest_lesion():
    empty = np.zeros((64, 64), np.float32)
    one_voxel = empty.copy()
    one_voxel[30, 30] = 1
    np.testing.assert_allclose(gamma_of(one_voxel), gamma_of(empty), rtol=1e-6)
    assert gamma_of(empty) == SCALE_AWARE_MAX_SIZE_GAMMA
    # the effect on training: a false positive costs the same on both slices
    logits = torch.full((2, 1, 64, 64), -6.0)
    logits[:, :, 30, 30] = 6.0  # the lone voxel right where it exists
    logits[:, :, 10, 10] = 2.2  # a false positive at p = 0.9 on both
    per_voxel = adaptive_focal_loss(logits, batch(empty, one_voxel), variant="scale_aware", reduction="none")
    np.testing.assert_allclose(per_voxel[0, 0, 10, 10], per_voxel[1, 0, 10, 10], rtol=1e-6)
    assert per_voxel[0, 0, 10, 10] > 100 * per_voxel[0, 0, 40, 40]


@pytest.mark.parametrize("gamma", [0.0, 2.0, 4.0])
def test_alpha_sets_the_decision_threshold_whatever_gamma(gamma):
    """The expected loss of a voxel that is lesion with probability q is lowest at p > 1/2
    exactly when q > 1 - alpha (why alpha = 1 - f makes false positives almost free)."""
    x = np.linspace(-12, 12, 4801)
    for q in (0.2, 0.25, 0.35, 0.5):
        expected_loss = q * np_focal(x, 1.0, SCALE_AWARE_ALPHA, gamma) + (1 - q) * np_focal(
            x, 0.0, SCALE_AWARE_ALPHA, gamma
        )
        assert (x[np.argmin(expected_loss)] > 0) == (q > 1 - SCALE_AWARE_ALPHA), q


def test_loss_equals_the_focal_formula_with_its_parameters():
    x = np.random.default_rng(3).normal(0, 3, size=(3, 1, 48, 48))
    masks = batch(disc(48, 5), star(48, 12, 0.3), np.zeros((48, 48), np.float32))
    spacing = torch.tensor([[0.5, 0.5], [1.0, 1.0], [0.8, 0.8]])
    alpha, gamma = adaptive_parameters(masks, variant="scale_aware", spacing=spacing)
    expected = np_focal(
        x,
        masks.double().numpy(),
        alpha.double().numpy().reshape(-1, 1, 1, 1),
        gamma.double().numpy().reshape(-1, 1, 1, 1),
    ).mean()
    logits = torch.tensor(x, dtype=torch.float32)
    np.testing.assert_allclose(
        adaptive_focal_loss(logits, masks, variant="scale_aware", spacing=spacing).item(), expected, rtol=1e-5
    )
    module = AdaptiveFocalLoss("scale_aware")
    np.testing.assert_allclose(module(logits, masks, spacing=spacing).item(), expected, rtol=1e-5)
    # each row of the spacing belongs to its sample
    separately = [adaptive_parameters(masks[i : i + 1], variant="scale_aware", spacing=spacing[i])[1] for i in range(3)]
    np.testing.assert_allclose(torch.cat(separately).numpy(), gamma.numpy())


def test_only_the_scale_aware_variant_uses_the_spacing():
    assert AdaptiveFocalLoss("scale_aware").uses_spacing
    assert get_loss("afl", variant="scale_aware").uses_spacing
    assert not AdaptiveFocalLoss("paper").uses_spacing and not AdaptiveFocalLoss("reference").uses_spacing
    assert not AdaptiveFocalLoss("scale_aware", gamma=2.0).uses_spacing  # nothing left to measure
    x, t = torch.randn(2, 1, 32, 32), batch(disc(32, 5), disc(32, 9))
    paper = adaptive_focal_loss(x, t, variant="paper")
    assert adaptive_focal_loss(x, t, variant="paper", spacing=(3.0, 3.0)) == paper
    fixed = adaptive_focal_loss(x, t, variant="scale_aware", gamma=1.5)
    assert adaptive_focal_loss(x, t, variant="scale_aware", gamma=1.5, spacing=(3.0, 3.0)) == fixed


def test_wrong_spacing_is_a_clear_error():
    with pytest.raises(ValueError, match="spacing must hold 2 values"):
        adaptive_focal_loss(
            torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), variant="scale_aware", spacing=(1.0, 1.0, 1.0)
        )


@pytest.mark.parametrize("radius_mm,width_mm", [(2.0, 0.5), (4.0, 1.0), (8.0, 2.0)])
def test_the_fixed_alpha_is_near_the_dice_optimal_threshold(radius_mm, width_mm):
    """The docstring's measurement: expected Dice of thresholding a calibrated posterior
    sigmoid((R - |x|) / w) at 1 - alpha, for alpha = 0.7, the best alpha and 1 - f."""
    rho = np.hypot(*((np.mgrid[:256, :256] - 127.5) * 0.5))
    q = 1 / (1 + np.exp(-(radius_mm - rho) / width_mm))

    def expected_dice(alpha):
        called = q > 1 - alpha
        return 2 * q[called].sum() / (called.sum() + q.sum())

    best = max(expected_dice(a) for a in np.linspace(0.01, 0.99, 99))
    assert expected_dice(SCALE_AWARE_ALPHA) > best - 0.016
    assert expected_dice(1 - (rho <= radius_mm).mean()) < best - 0.14  # the paper's alpha = 1 - f
