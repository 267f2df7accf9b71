"""The measurements behind how lesion size enters the losses.

Two kinds, each quoted in the documentation with the command that reprints it
(``python benchmarks/lesion_size_studies.py``) and run in a small version in notebook 03:

* the constants of the ``scale_aware`` variant (``docs/scale_aware.md``): the fixed alpha
  (:func:`alpha_study`), the reference diameter and the caps (:func:`size_term_table`,
  :func:`gamma_across_grids`, :func:`focusing_table`), and what a lesion-free sample gets
  next to a one-voxel lesion (:func:`empty_versus_one_voxel`);
* what the authors' label resize does to lesions (``docs/authors_recipe.md``): their physical
  growth and the paper's gamma after it, over the positions a lesion can take on the grid
  (:func:`resize_growth`).

Everything here measures :mod:`afl_core.losses`, :mod:`afl_core.shape` and
:func:`afl_core.data.resize_label` from outside through their public functions; nothing in
training calls this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from afl_core.data import resize_label
from afl_core.losses import (
    SCALE_AWARE_ALPHA,
    SCALE_AWARE_MAX_GAMMA,
    SCALE_AWARE_MAX_SIZE_GAMMA,
    SCALE_AWARE_REFERENCE_DIAMETER,
    adaptive_parameters,
)
from afl_core.shape import lesion_shapes

__all__ = [
    "ball",
    "disc_posterior",
    "expected_dice",
    "alpha_study",
    "size_term",
    "size_term_table",
    "gamma_across_grids",
    "focusing_table",
    "empty_versus_one_voxel",
    "resize_growth",
]


def ball(shape: Sequence[int], spacing: Sequence[float], volume_ml: float, offset: Sequence[float] | None = None):
    """A disc (2D) or ball (3D) of ``volume_ml`` (ml; mm^2 / 1000 for a disc) on a grid.

    Args:
        shape: the grid, in voxels per axis.
        spacing: voxel size in mm per axis.
        volume_ml: the ball's volume in ml (1 ml = 1000 mm^3); for a disc its area / 1000.
        offset: the centre's shift from the grid's centre, in voxels per axis (default none).

    Returns:
        A boolean array of ``shape``: the voxels whose centre lies inside the ball.
    """
    if len(shape) not in (2, 3) or len(spacing) != len(shape):
        raise ValueError(f"shape and spacing must both hold 2 or 3 values, got {shape} and {spacing}")
    if volume_ml <= 0:
        raise ValueError(f"volume_ml must be positive, got {volume_ml}")
    size_mm = volume_ml * 1000
    radius = (3 * size_mm / (4 * np.pi)) ** (1 / 3) if len(shape) == 3 else np.sqrt(size_mm / np.pi)
    offset = np.zeros(len(shape)) if offset is None else np.asarray(offset, dtype=float)
    axes = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2 - o) * s for n, s, o in zip(shape, spacing, offset)], indexing="ij", sparse=True
    )
    return sum(a**2 for a in axes) <= radius**2


# --------------------------------------------------------------------------- alpha


def disc_posterior(radius_mm: float, width_mm: float, *, side: int = 256, pixel_mm: float = 0.5):
    """A calibrated posterior of a disc lesion: ``q(x) = sigmoid((R - |x|) / w)``.

    The probability that the voxel at distance ``|x|`` mm from the centre is lesion, for a
    lesion of radius ``R`` whose edge is uncertain over about ``w`` mm.

    Args:
        radius_mm: ``R``.
        width_mm: ``w``.
        side: the square grid's side in voxels.
        pixel_mm: the grid's voxel size.

    Returns:
        ``(q, disc)``: the posterior and the disc ``|x| <= R`` (bool), both ``(side, side)``.
    """
    rho = np.hypot(*((np.mgrid[:side, :side] - (side - 1) / 2) * pixel_mm))
    return 1 / (1 + np.exp(-(radius_mm - rho) / width_mm)), rho <= radius_mm


def expected_dice(q: np.ndarray, called: np.ndarray) -> float:
    """Expected Dice of calling the voxels ``called`` lesion when voxel ``i`` is lesion with
    probability ``q_i`` (independently), as the ratio of the expectations:

    .. math:: \\mathrm{Dice} = \\frac{2 \\sum_{i \\in C} q_i}{|C| + \\sum_i q_i}.
    """
    called = np.asarray(called, dtype=bool)
    return float(2 * q[called].sum() / (called.sum() + q.sum()))


def alpha_study(
    radii_mm: Sequence[float] = (2.0, 4.0, 8.0),
    widths_mm: Sequence[float] = (0.5, 1.0, 2.0),
    *,
    alphas: Sequence[float] = tuple(np.round(np.linspace(0.01, 0.99, 99), 2)),
    chosen: float = SCALE_AWARE_ALPHA,
    side: int = 256,
    pixel_mm: float = 0.5,
) -> pd.DataFrame:
    """Which fixed alpha gives the best expected Dice, on discs with calibrated posteriors.

    A network trained to the minimum of a focal loss with weight ``alpha`` on lesion voxels
    calls a voxel lesion (``p > 1/2``) exactly where its posterior ``q > 1 - alpha``
    (``tests/test_scale_aware.py`` checks this for several gammas). So each alpha is one
    threshold ``1 - alpha`` on :func:`disc_posterior`, scored by :func:`expected_dice`.

    Returns:
        One row per (radius, width): ``f`` (the disc's foreground fraction of the canvas),
        ``best alpha``, ``best Dice``, the Dice at ``chosen`` and at the paper's ``1 - f``,
        and their losses against the best.
    """
    rows = []
    for radius in radii_mm:
        for width in widths_mm:
            q, disc = disc_posterior(radius, width, side=side, pixel_mm=pixel_mm)
            dice = np.array([expected_dice(q, q > 1 - a) for a in alphas])
            f = float(disc.mean())
            at_chosen, at_paper = expected_dice(q, q > 1 - chosen), expected_dice(q, q > f)
            rows.append(
                {
                    "radius (mm)": radius,
                    "width (mm)": width,
                    "f": f,
                    "best alpha": float(alphas[int(np.argmax(dice))]),
                    "best Dice": float(dice.max()),
                    f"Dice at alpha={chosen:g}": at_chosen,
                    "Dice at alpha=1-f": at_paper,
                    f"loss at alpha={chosen:g}": float(dice.max()) - at_chosen,
                    "loss at alpha=1-f": float(dice.max()) - at_paper,
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- size term and caps


def size_term(
    diameter_mm, reference_mm: float = SCALE_AWARE_REFERENCE_DIAMETER, cap: float = SCALE_AWARE_MAX_SIZE_GAMMA
):
    """The size term of the scale-aware gamma for another reference ``D`` or cap:
    ``clip(2 log10(D / d), 0, cap)`` (the documented formula; :func:`size_term_table` sets
    it beside the loss's own value)."""
    return np.clip(2 * np.log10(reference_mm / np.asarray(diameter_mm, dtype=float)), 0.0, cap)


def size_term_table(
    volumes_ml: Sequence[float] = (0.01, 0.1, 0.5, 1.0, 4.19, 10.0, 100.0),
    references_mm: Sequence[float] = (50.0, 100.0, 200.0, 400.0),
) -> pd.DataFrame:
    """The size term of balls of ``volumes_ml`` for several reference diameters ``D``.

    Columns ``D=...`` hold the formula; ``gamma (afl_core)`` is the loss's own gamma of
    that ball voxelised on 0.5 mm isotropic voxels (outline term included), so the column
    of the library's ``D`` can be read against it.
    """
    rows = []
    for volume in volumes_ml:
        diameter = (6 * volume * 1000 / np.pi) ** (1 / 3)
        row = {"lesion (ml)": volume, "diameter (mm)": diameter}
        row |= {f"D={d:g} mm": float(size_term(diameter, d)) for d in references_mm}
        spacing = (0.5, 0.5, 0.5)
        side = int(np.ceil(diameter / 0.5)) + 4
        mask = torch.from_numpy(ball((side,) * 3, spacing, volume)).float()[None, None]
        row["gamma (afl_core)"] = float(adaptive_parameters(mask, variant="scale_aware", spacing=spacing)[1][0])
        rows.append(row)
    return pd.DataFrame(rows)


def gamma_across_grids(
    grids: Sequence[tuple[str, Sequence[int], Sequence[float], float]] | None = None,
) -> pd.DataFrame:
    """The scale-aware and the paper's gamma of the same physical lesion on several grids.

    Args:
        grids: ``(name, shape, spacing, volume_ml)`` per row; default: a disc of radius 8 mm
            on 128^2, 256^2 and 512^2 canvases of 1 mm, and 1 ml / 10 ml balls on 1 mm,
            0.5 x 0.5 x 3 mm and 0.5 x 0.5 x 3.6 mm voxels (array order: slices first).

    Returns:
        One row per grid: the lesion's measured equivalent diameter, the size term of the
        formula, the scale-aware gamma (outline included) and the paper's gamma.
    """
    if grids is None:
        disc_ml = np.pi * 8.0**2 / 1000
        grids = [(f"disc r=8 mm, {n}^2 of 1 mm", (n, n), (1.0, 1.0), disc_ml) for n in (128, 256, 512)]
        for volume in (1.0, 10.0):
            grids += [
                (f"{volume:g} ml ball, 1 mm", (40, 40, 40), (1.0, 1.0, 1.0), volume),
                (f"{volume:g} ml ball, 3 x 0.5 x 0.5 mm", (16, 80, 80), (3.0, 0.5, 0.5), volume),
                (f"{volume:g} ml ball, 3.6 x 0.5 x 0.5 mm", (14, 80, 80), (3.6, 0.5, 0.5), volume),
            ]
    rows = []
    for name, shape, spacing, volume in grids:
        mask = torch.from_numpy(ball(shape, spacing, volume)).float()[None, None]
        (shapes,) = lesion_shapes(mask, spacing)
        rows.append(
            {
                "lesion and grid": name,
                "diameter (mm)": float(shapes.diameter[0]),
                "size term": float(size_term(shapes.diameter[0])),
                "gamma (scale_aware)": float(adaptive_parameters(mask, variant="scale_aware", spacing=spacing)[1][0]),
                "gamma (paper)": float(adaptive_parameters(mask)[1][0]),
            }
        )
    return pd.DataFrame(rows)


def focusing_table(
    gammas: Sequence[float] = (1.0, 2.0, SCALE_AWARE_MAX_SIZE_GAMMA, SCALE_AWARE_MAX_GAMMA),
    p_t: Sequence[float] = (0.6, 0.9, 0.99),
):
    """The share of its cross-entropy, ``(1 - p_t)^gamma``, that a voxel keeps under focal
    loss: why the caps stop at 4 (size) and 5 (size and outline), the top of the range
    Lin et al. (2017) tried."""
    return pd.DataFrame(
        {f"p_t={p:g}": [(1 - p) ** g for g in gammas] for p in p_t}, index=[f"gamma={g:g}" for g in gammas]
    )


def empty_versus_one_voxel(
    spacings: Sequence[Sequence[float]] = ((0.5, 0.5), (1.0, 1.0), (1.77, 1.77), (2.0, 2.0), (3.0, 3.0)),
    side: int = 32,
) -> pd.DataFrame:
    """The scale-aware gamma of a lesion-free sample and of the same sample with one lesion
    voxel, for several voxel sizes (2D or 3D, array order).

    The documented "no jump" holds while a voxel's equivalent diameter is at most
    ``D / 10^(cap/2)`` = 2 mm: then its size term reaches the cap that an empty sample gets.

    Returns:
        One row per voxel size: the voxel's equivalent diameter, both gammas and the jump.
    """
    rows = []
    for spacing in spacings:
        empty = torch.zeros(1, 1, *(side,) * len(spacing))
        one = empty.clone()
        one[(0, 0, *(side // 2,) * len(spacing))] = 1
        both = torch.cat([empty, one])
        gamma = adaptive_parameters(both, variant="scale_aware", spacing=tuple(spacing))[1]
        (shapes,) = lesion_shapes(one, spacing)
        rows.append(
            {
                "voxel (mm)": " x ".join(f"{s:g}" for s in spacing),
                "voxel's diameter (mm)": float(shapes.diameter[0]),
                "gamma, empty": float(gamma[0]),
                "gamma, one voxel": float(gamma[1]),
                "jump": float(gamma[0] - gamma[1]),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the authors' resize


def resize_growth(
    volumes_ml: Sequence[float] = (0.1, 0.5, 1.0, 5.0),
    *,
    shape: Sequence[int] = (256, 256, 20),
    spacing: Sequence[float] = (0.5, 0.5, 3.0),
    size: Sequence[int] = (160, 128, 24),
    positions: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """Physical growth of a ball lesion under the authors' label resize, over positions.

    A ball of each volume is voxelised on the input grid (``shape``, ``spacing`` in mm; the
    default is the project's converted PI-CAI grid in NIfTI order X, Y, Z), its centre moved
    by a seeded uniform offset of up to 4 voxels each way (the resize's box pattern repeats
    within that), and resized with :func:`afl_core.data.resize_label` to ``size`` (the
    authors' 160 x 128 x 24). Growth is the lesion's volume in mm^3 after (voxels times the
    new voxel size ``spacing * shape / size``) over before (voxels times ``spacing``).

    Returns:
        One row per volume: growth mean, min and max over the ``positions``, and the mean
        paper gamma (``f + g``: the authors' gamma for their batch of one volume) of the
        resized label and of the ball voxelised directly on the resized grid.
    """
    rng = np.random.default_rng(seed)
    new_spacing = [n * s / m for n, s, m in zip(shape, spacing, size)]
    offsets = rng.uniform(-4, 4, size=(positions, len(shape)))
    rows = []
    for volume in volumes_ml:
        growth, gamma_resized = [], []
        for offset in offsets:
            native = ball(shape, spacing, volume, offset)
            resized = resize_label(native, size)
            growth.append(resized.sum() * np.prod(new_spacing) / (native.sum() * np.prod(spacing)))
            gamma_resized.append(float(adaptive_parameters(torch.from_numpy(resized).float()[None, None])[1][0]))
        on_grid = torch.from_numpy(ball(size, new_spacing, volume)).float()[None, None]
        rows.append(
            {
                "lesion (ml)": volume,
                "growth (mean)": float(np.mean(growth)),
                "growth (min)": float(np.min(growth)),
                "growth (max)": float(np.max(growth)),
                "gamma after the resize (mean)": float(np.mean(gamma_resized)),
                "gamma of the ball drawn on the resized grid": float(adaptive_parameters(on_grid)[1][0]),
            }
        )
    return pd.DataFrame(rows)
