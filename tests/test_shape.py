"""Mask descriptors against NumPy references."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from afl_core.shape import (
    boundary_irregularity,
    boundary_size,
    foreground_fraction,
    gradient_magnitude,
    lesion_shapes,
    mean_gradient_magnitude,
    spacing_per_sample,
)


def numpy_gradient_magnitude(mask: np.ndarray) -> np.ndarray:
    """numpy.gradient on every axis longer than 1, as the authors' code does."""
    axes = [a for a in range(mask.ndim) if mask.shape[a] > 1]
    if not axes:
        return np.zeros_like(mask, dtype=np.float64)
    grads = np.gradient(mask.astype(np.float64), axis=axes)
    if len(axes) == 1:
        grads = [grads]
    return np.sqrt(sum(g * g for g in grads))


def disc(size, radius, centre=None):
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 if centre is None else centre
    return ((yy - c) ** 2 + (xx - c) ** 2 <= radius**2).astype(np.float32)


def star(size, radius, amplitude, lobes=8):
    yy, xx = np.mgrid[:size, :size] - size / 2
    theta = np.arctan2(yy, xx)
    return (np.hypot(yy, xx) <= radius * (1 + amplitude * np.cos(lobes * theta))).astype(np.float32)


def ball(extent_mm, radius_mm, spacing):
    """A ball (or disc) of ``radius_mm`` centred in a box of ``extent_mm``, sampled at voxel
    centres with ``spacing`` (mm per axis, array order)."""
    axes = [(np.arange(round(e / s)) + 0.5) * s - e / 2 + 0.1 for e, s in zip(extent_mm, spacing)]
    grids = np.meshgrid(*axes, indexing="ij")
    return (sum(g * g for g in grids) <= radius_mm**2).astype(np.float32)


def batch(*masks):
    return torch.from_numpy(np.stack(masks)[:, None])


@pytest.mark.parametrize(
    "shape",
    [(3, 1, 7, 9), (2, 1, 2, 5), (2, 1, 1, 6), (2, 1, 64, 48), (2, 1, 5, 4, 6), (2, 1, 2, 3, 4), (1, 1, 1, 1, 5)],
)
def test_mean_gradient_magnitude_matches_numpy_gradient(shape):
    rng = np.random.default_rng(sum(shape))
    masks = (rng.random(shape) > 0.6).astype(np.float32)
    expected = [numpy_gradient_magnitude(m[0]).mean() for m in masks]
    got = mean_gradient_magnitude(torch.from_numpy(masks))
    assert got.dtype == torch.float32 and got.shape == (shape[0],)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)
    # The per-voxel map and the boundary size agree with the same reference.
    np.testing.assert_allclose(
        gradient_magnitude(torch.from_numpy(masks))[:, 0].numpy(),
        np.stack([numpy_gradient_magnitude(m[0]) for m in masks]),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        boundary_size(torch.from_numpy(masks)).numpy(), [numpy_gradient_magnitude(m[0]).sum() for m in masks], rtol=1e-5
    )


def test_descriptors_accept_bool_and_uint8_masks():
    mask = batch(disc(32, 6), disc(32, 10))
    for dtype in (torch.bool, torch.uint8, torch.float64):
        np.testing.assert_allclose(mean_gradient_magnitude(mask.to(dtype)), mean_gradient_magnitude(mask))
        np.testing.assert_allclose(foreground_fraction(mask.to(dtype)), foreground_fraction(mask))


def test_foreground_fraction_counts_voxels():
    masks = batch(disc(40, 5), np.zeros((40, 40), np.float32), np.ones((40, 40), np.float32))
    expected = [m.mean() for m in masks[:, 0].numpy()]
    np.testing.assert_allclose(foreground_fraction(masks).numpy(), expected)


def test_paper_scale_of_the_adaptive_terms():
    # reference/afl-paper.md: on 128x128, r=8 -> gamma_va ~ 0.012, gamma_mSa ~ 0.003;
    # r=32 -> 0.196 and 0.013.
    masks = batch(disc(128, 8), disc(128, 32))
    np.testing.assert_allclose(foreground_fraction(masks).numpy(), [0.012, 0.196], atol=0.001)
    np.testing.assert_allclose(mean_gradient_magnitude(masks).numpy(), [0.003, 0.013], atol=0.0005)


def test_boundary_irregularity_is_about_one_for_discs_at_any_scale():
    values = boundary_irregularity(batch(disc(128, 4), disc(128, 8), disc(128, 16), disc(128, 32))).numpy()
    assert np.all((values > 1.0) & (values < 1.1)), values
    assert values.max() - values.min() < 0.05  # scale invariant, unlike gamma_mSa


def test_boundary_irregularity_grows_with_outline_irregularity():
    values = boundary_irregularity(batch(disc(128, 20), star(128, 20, 0.2), star(128, 20, 0.4), star(128, 20, 0.6)))
    assert torch.all(values[1:] > values[:-1]), values
    assert values[-1] > 2.0


def test_boundary_irregularity_of_a_flat_volume_is_the_2d_value():
    flat = torch.from_numpy(disc(64, 12))[None, None, None]
    np.testing.assert_allclose(boundary_irregularity(flat), boundary_irregularity(flat[:, :, 0]), rtol=1e-6)


def test_boundary_irregularity_3d_ball_and_empty_mask():
    zz, yy, xx = np.mgrid[:32, :32, :32] - 16
    ball = ((zz**2 + yy**2 + xx**2) <= 10**2).astype(np.float32)
    values = boundary_irregularity(torch.from_numpy(np.stack([ball, np.zeros_like(ball)])[:, None]))
    assert 1.0 < values[0] < 1.1
    assert values[1] == 0  # empty: no object, documented convention


@pytest.mark.parametrize("bad", [torch.zeros(4, 4), torch.zeros(2, 3, 8, 8), torch.zeros(1, 1, 2, 2, 2, 2)])
def test_descriptors_reject_wrong_shapes(bad):
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        mean_gradient_magnitude(bad)


# ---------------------------------------------------------------- lesion_shapes (per lesion, in mm)
def star_irregularity(amplitude, lobes=8):
    """Perimeter over that of the disc of the same area for r = 1 + a cos(lobes theta), by quadrature."""
    theta = np.linspace(0, 2 * np.pi, 100_001)[:-1]
    r = 1 + amplitude * np.cos(lobes * theta)
    dr = -amplitude * lobes * np.sin(lobes * theta)
    perimeter = 2 * np.pi * np.sqrt(r * r + dr * dr).mean()
    area = np.pi * (r * r).mean()
    return perimeter / (2 * np.sqrt(np.pi * area))


def test_lesion_shapes_counts_each_lesion_in_mm():
    left, right = disc(96, 6, centre=24), disc(96, 12, centre=64)
    (shapes,) = lesion_shapes(batch(np.maximum(left, right)), spacing=(0.5, 0.8))
    np.testing.assert_allclose(shapes.size, [right.sum() * 0.4, left.sum() * 0.4])  # largest first
    np.testing.assert_allclose(shapes.diameter, 2 * np.sqrt(shapes.size / np.pi))
    (empty,) = lesion_shapes(batch(np.zeros((8, 8), np.float32)))
    assert empty.size.size == empty.diameter.size == empty.irregularity.size == 0


@pytest.mark.parametrize("radius", [20, 40])
@pytest.mark.parametrize("amplitude", [0.0, 0.1, 0.2, 0.3, 0.4])
def test_lesion_irregularity_matches_the_analytic_outline(radius, amplitude):
    (shapes,) = lesion_shapes(batch(star(2 * radius + 48, radius, amplitude)))
    np.testing.assert_allclose(shapes.irregularity, star_irregularity(amplitude), rtol=0.05)


def test_lesion_irregularity_of_balls_is_about_one_whatever_the_voxels():
    values = {}
    for spacing in [(0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (3.0, 0.5, 0.5), (3.0, 0.7, 0.7), (1.5, 1.0, 1.0)]:
        (shapes,) = lesion_shapes(batch(ball((30, 24, 24), 5.0, spacing)), spacing=spacing)
        np.testing.assert_allclose(shapes.diameter, 10.0, rtol=0.05)
        values[spacing] = shapes.irregularity[0]
    assert all(0.98 < v < 1.07 for v in values.values()), values
    # the case: 10 mm ball on 0.5 x 0.5 x 3 mm reads as the isotropic one (was 1.87)
    assert abs(values[(3.0, 0.5, 0.5)] - values[(0.5, 0.5, 0.5)]) < 0.03, values
    # without the spacing the thick slices make it look flat and rough
    (ignored,) = lesion_shapes(batch(ball((30, 24, 24), 5.0, (3.0, 0.5, 0.5))))
    assert ignored.irregularity[0] > 1.3


def test_lesion_shapes_take_one_spacing_row_per_sample():
    masks = batch(disc(48, 8), disc(48, 8))
    one, other = lesion_shapes(masks, spacing=torch.tensor([[1.0, 1.0], [0.5, 2.0]]))
    np.testing.assert_allclose(other.size, one.size)  # 0.5 x 2 mm voxels: the same area
    assert abs(other.irregularity[0] - one.irregularity[0]) > 0.1  # but a stretched outline
    flat = torch.from_numpy(disc(48, 8))[None, None, None]  # (N, 1, 1, H, W): measured as 2D
    (as_3d,) = lesion_shapes(flat, spacing=(5.0, 1.0, 1.0))
    np.testing.assert_allclose(as_3d.irregularity, one.irregularity)
    np.testing.assert_allclose(as_3d.size, one.size)


@pytest.mark.parametrize(
    "spacing,message",
    [
        ((1.0,), r"spacing must hold 2 values"),
        ((1.0, 0.0), "positive and finite"),
        ([[1.0, 1.0]] * 3, r"shape \(2, 2\)"),
        ((1.0, float("nan")), "positive and finite"),
    ],
)
def test_bad_spacing_gets_a_clear_error(spacing, message):
    with pytest.raises(ValueError, match=message):
        spacing_per_sample(spacing, 2, 2)


# ---------------------------------------------------------------- lesion_shapes, lesion by lesion
def one_lesion_irregularity(component, spacing, diameter, outline_steps=32):
    """The outline measurement written for one lesion at a time (the straightforward form that
    ``lesion_shapes`` computes for all lesions at once): signed distance on the lesion's own
    padded box, resampled to an isotropic grid, softened, total variation over size."""
    finest = float(spacing.min())
    step = max(1, int(diameter / (outline_steps * finest)))
    h = step * finest
    padded = np.pad(component, 2 * step + 1)
    signed = ndimage.distance_transform_edt(padded, sampling=spacing) - ndimage.distance_transform_edt(
        ~padded, sampling=spacing
    )
    if step > 1 or np.any(spacing != finest):
        axes = [np.arange(0.0, n - 1 + 1e-9, h / s) for n, s in zip(padded.shape, spacing)]
        signed = ndimage.map_coordinates(signed, np.meshgrid(*axes, indexing="ij"), order=1)
    soft = np.clip(0.5 + signed / (3.0 * h), 0.0, 1.0)
    boundary = np.sqrt(sum(g * g for g in np.gradient(soft, h))).sum() * h**soft.ndim
    size = soft.sum() * h**soft.ndim
    reference = 2 * np.sqrt(np.pi * size) if soft.ndim == 2 else np.pi ** (1 / 3) * (6 * size) ** (2 / 3)
    return boundary / reference


def lesion_by_lesion(mask, spacing):
    """Per sample: (size, diameter, irregularity) of each 8/26-connected lesion, largest first."""
    results = []
    for sample, voxel in zip(mask, spacing):
        labels, count = ndimage.label(sample, np.ones((3,) * sample.ndim))
        rows = []
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            component = labels[box] == index
            size = component.sum() * np.prod(voxel)
            diameter = 2 * np.sqrt(size / np.pi) if sample.ndim == 2 else (6 * size / np.pi) ** (1 / 3)
            rows.append((size, diameter, one_lesion_irregularity(component, voxel, diameter)))
        order = np.argsort([r[0] for r in rows], kind="stable")[::-1]
        results.append(np.array([rows[i] for i in order]).reshape(-1, 3))
    return results


@pytest.mark.parametrize(
    "case",
    ["discs", "speckle", "speckle_and_lesion", "anisotropic_3d", "per_sample_spacing", "large_lesion"],
)
def test_lesion_shapes_equal_the_lesion_by_lesion_measurement(case):
    rng = np.random.default_rng(7)
    if case == "discs":
        masks, spacing = np.stack([disc(96, 10), np.maximum(disc(96, 3), disc(96, 2, centre=20)), disc(96, 0)]), (1, 1)
    elif case == "speckle":  # label noise: thousands of tiny lesions, many identical
        masks, spacing = rng.random((3, 64, 64)) > 0.9, (0.7, 0.7)
    elif case == "speckle_and_lesion":
        masks, spacing = np.stack([np.maximum(disc(80, 12), rng.random((80, 80)) > 0.97) for _ in range(2)]), (1, 1)
    elif case == "anisotropic_3d":
        masks = np.stack([ball((60, 32, 32), 9.0, (3.0, 0.5, 0.5)), ball((60, 32, 32), 3.0, (3.0, 0.5, 0.5))])
        masks[1] = np.maximum(masks[1], rng.random(masks[1].shape) > 0.997)
        spacing = (3.0, 0.5, 0.5)
    elif case == "per_sample_spacing":
        masks = np.stack([star(64, 14, 0.3), disc(64, 6), rng.random((64, 64)) > 0.95])
        spacing = np.array([[0.5, 0.5], [1.0, 2.0], [0.3, 0.7]])
    else:  # a lesion wide enough for a coarser outline grid (step > 1)
        masks, spacing = disc(256, 100)[None], (0.3, 0.3)
    masks = np.asarray(masks, dtype=bool)
    rows = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (len(masks), masks.ndim - 1))
    expected = lesion_by_lesion(masks, rows)
    got = lesion_shapes(torch.from_numpy(masks)[:, None].float(), spacing=spacing)
    assert sum(len(e) for e in expected) == sum(g.size.size for g in got) > 0
    for want, have in zip(expected, got):
        np.testing.assert_allclose(np.column_stack(have), want, rtol=1e-12)
