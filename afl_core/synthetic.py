"""Synthetic MRI-like cases with lesions of chosen size and boundary irregularity.

:func:`make_dataset` writes the layout of :mod:`afl_core.data` (``imagesTr``, ``labelsTr``,
``dataset.json``) plus ``lesions.csv``, one row of facts per lesion, so an evaluation can
stratify by lesion size and outline. A case is built as an MR scanner would see it:

* anatomy: air, a body outline and an organ inside it, with a smooth tissue texture;
* lesions inside the organ, one to ``max_lesions`` per case (some cases have none);
* partial volume: each voxel holds the fraction of it that an outline covers (a one-voxel
  linear ramp across the border), so lesion borders in the image are soft, while the label
  is the voxel whose centre lies inside the outline (partial volume > 0.5);
* channels of different contrast (like T2W, ADC and a high-b-value DWI: the lesion is
  dark, darker and bright), and of different sharpness (DWI is blurrier);
* a smooth multiplicative intensity inhomogeneity (bias field) and Rician noise;
* intensities stored as int16 (as scanners do), on a grid of ``spacing`` mm (default
  3.0 x 0.5 x 0.5: 3 mm slices of 0.5 mm voxels, the common PI-CAI T2W grid).

Axis order: ``shape`` and ``spacing`` are both ``(D, H, W)``, the array order of the whole
Python API (slices first). On disk the arrays are ``(H, W, D)`` in NIfTI axis order, so the
third NIfTI axis is the slice axis, a slice ``volume[:, :, k]`` is ``H x W``, and the NIfTI
header's zooms read ``(sy, sx, sz)`` for ``spacing=(sz, sy, sx)``.

The lesion outline is a perturbed ellipse in-plane (see :class:`Outline`)::

    r(theta) = radius * e(theta) * (1 + irregularity * sum_k w_k cos(k theta + phi_k)),   sum_k w_k = 1

where ``e`` is an ellipse of unit area-equivalent radius, so ``irregularity = 0`` is a
smooth ellipse and ``0.6`` a strongly zigzag star. Across slices the outline shrinks as
``sqrt(1 - ((z - z0) / r_z)^2)``, with ``r_z`` the in-plane radius converted to slices.
:func:`lesion_mask_2d` draws one outline for the notebooks with the same code.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from afl_core._io import atomic_write, check_memory, folder_lock, read_json
from afl_core.data import (
    DATASET_JSON,
    IMAGES_DIR,
    LABELS_DIR,
    channel_path,
    damaged_files,
    label_path,
    list_cases,
    read_dataset_json,
    write_case,
    write_dataset_json,
)
from afl_core.shape import boundary_irregularity

__all__ = [
    "Outline",
    "lesion_mask_2d",
    "make_case",
    "make_dataset",
    "default_lesion_radius",
    "LESION_COLUMNS",
    "GENERATOR_VERSION",
    "ForeignFilesError",
]

GENERATOR_VERSION = 2  # 2: spacing recorded in (D, H, W) order, like shape
LESIONS_CSV = "lesions.csv"
# A generation under way: its arguments (first line), then one line of lesion facts per finished case.
_PROGRESS = ".synthetic-progress.jsonl"
_IMAGE_NAME = re.compile(r"synth_\d{4,}_\d{4}\.nii\.gz")
_LABEL_NAME = re.compile(r"synth_\d{4,}\.nii\.gz")
_NIFTI_MAX_AXIS = 32767  # NIfTI-1 stores each dimension as an int16
# Peak memory of make_case, measured with tracemalloc at 16x128x128 to 32x256x256 (1-5 channels):
# 41-50 bytes per voxel plus 8 per voxel and channel.
_BYTES_PER_VOXEL, _BYTES_PER_VOXEL_AND_CHANNEL = 50, 8
LESION_COLUMNS = (
    "case",
    "lesion",
    "centre_x",
    "centre_y",
    "centre_z",
    "radius_vox",
    "irregularity_amplitude",
    "aspect",
    "conspicuity",
    "n_slices",
    "volume_voxels",
    "volume_mm3",
    "max_slice_area_voxels",
    "boundary_irregularity_3d",
    "boundary_irregularity_2d",
)


@dataclass(frozen=True)
class _Contrast:
    """Relative intensity of each tissue in one channel, its blur and noise."""

    name: str
    air: float
    body: float
    organ: float
    lesion: float
    blur: float  # in-plane Gaussian sigma, voxels (lower resolution of DWI)
    noise: float  # Rician noise sigma, relative to intensity 1


# As in prostate MRI: tumours are dark on T2W and ADC, bright on high-b-value DWI.
_CONTRASTS = (
    _Contrast("T2W-like", air=0.02, body=0.45, organ=0.75, lesion=0.40, blur=0.0, noise=0.02),
    _Contrast("ADC-like", air=0.02, body=0.35, organ=0.65, lesion=0.28, blur=0.7, noise=0.03),
    _Contrast("HBV-like", air=0.02, body=0.15, organ=0.28, lesion=0.75, blur=1.0, noise=0.04),
)
_INTENSITY_SCALE = 1000.0  # stored intensity of relative value 1


# --------------------------------------------------------------------------- outlines


@dataclass(frozen=True)
class Outline:
    """A star-shaped in-plane outline: the radius at angle ``theta`` is

    .. math::  r(\\theta) = \\rho \\, e(\\theta) \\left(1 + a \\sum_k w_k \\cos(k\\theta + \\varphi_k)\\right)

    with ``rho = radius``, ``a = irregularity`` (``0 <= a < 1``), weights ``w_k >= 0`` summing
    to 1 (so ``r > 0``), and ``e`` an ellipse of axis ratio ``aspect`` turned by
    ``orientation`` with semi-axes ``1/sqrt(aspect)`` and ``sqrt(aspect)`` (area ``pi``,
    so the unperturbed outline has the area of a disc of radius ``rho``).
    """

    radius: float
    irregularity: float
    aspect: float = 1.0
    orientation: float = 0.0
    harmonics: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        radius: float,
        irregularity: float,
        *,
        harmonics: tuple[int, int] = (3, 9),
        n_harmonics: int = 3,
        aspect: tuple[float, float] = (0.7, 1.0),
    ) -> "Outline":
        """An outline with random ellipse and ``n_harmonics`` distinct random harmonics
        ``k`` in ``harmonics`` (inclusive) of random weights and phases."""
        if not 0.0 <= irregularity < 1.0:
            raise ValueError(f"irregularity must be in [0, 1), got {irregularity}")
        if radius <= 0:
            raise ValueError(f"radius must be positive, got {radius}")
        ks = np.sort(rng.choice(np.arange(harmonics[0], harmonics[1] + 1), size=n_harmonics, replace=False))
        weights = rng.uniform(0.2, 1.0, size=n_harmonics)
        return cls(
            radius=float(radius),
            irregularity=float(irregularity),
            aspect=float(rng.uniform(*aspect)),
            orientation=float(rng.uniform(0.0, math.pi)),
            harmonics=tuple(int(k) for k in ks),
            weights=tuple(float(w) for w in weights / weights.sum()),
            phases=tuple(float(p) for p in rng.uniform(0.0, 2.0 * math.pi, size=n_harmonics)),
        )

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        """``r(theta)`` in voxels."""
        rel = theta - self.orientation
        q = self.aspect
        ellipse = 1.0 / np.sqrt(q * np.cos(rel) ** 2 + np.sin(rel) ** 2 / q)
        ripple = np.zeros_like(theta)
        for k, w, phi in zip(self.harmonics, self.weights, self.phases):
            ripple += w * np.cos(k * theta + phi)
        return self.radius * ellipse * (1.0 + self.irregularity * ripple)

    @property
    def max_radius(self) -> float:
        """An upper bound of ``r(theta)``."""
        return self.radius / math.sqrt(self.aspect) * (1.0 + self.irregularity)

    def margin(self, du: np.ndarray, dv: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
        """Signed in-plane distance (voxels, positive inside) from the outline, scaled by
        ``scale``, to the points at offset ``(du, dv)`` from its centre, measured along the ray."""
        return self.radius_at(np.arctan2(dv, du)) * scale - np.hypot(du, dv)


def _partial_volume(margin: np.ndarray) -> np.ndarray:
    """Fraction of a voxel inside an outline: a one-voxel linear ramp across the border.
    It exceeds 0.5 exactly where the voxel centre is inside (``margin > 0``)."""
    return np.clip(margin + 0.5, 0.0, 1.0)


def _lesion_region(margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary mask and partial-volume image of one lesion from its outline margin.

    On a voxel grid the thin tip of a zigzag arm, or the end slice of a taper, can leave
    voxels inside the outline that touch no other: one lesion would count as several.
    The mask keeps the largest face-connected component; the detached voxels are drawn
    at exactly half volume, so ``mask == (partial volume > 0.5)`` still holds.
    """
    inside = margin > 0
    components, n = ndimage.label(inside)
    mask = inside if n <= 1 else components == 1 + np.argmax(np.bincount(components.ravel())[1:])
    pv = _partial_volume(margin).astype(np.float32)
    pv[inside & ~mask] = 0.5
    return mask, pv


def lesion_mask_2d(
    shape: tuple[int, int] = (64, 64),
    radius: float = 8.0,
    irregularity: float = 0.3,
    seed: int = 0,
    *,
    center: tuple[float, float] | None = None,
    soft: bool = False,
) -> np.ndarray:
    """One 2D lesion of the generator's outline family (for figures and widgets).

    Returns the binary mask (uint8, voxel centres inside the outline, its largest
    connected part) or, with ``soft``, the partial-volume image (float32 in [0, 1]). The same ``seed`` gives the same
    outline shape at every radius and irregularity, so a slider changes only what it names.
    """
    height, width = shape
    outline = Outline.random(np.random.default_rng(seed), radius, irregularity)
    cu, cv = ((height - 1) / 2, (width - 1) / 2) if center is None else center
    du, dv = np.meshgrid(np.arange(height) - cu, np.arange(width) - cv, indexing="ij")
    mask, pv = _lesion_region(outline.margin(du, dv))
    return pv if soft else mask.astype(np.uint8)


# --------------------------------------------------------------------------- one case


def _taper(z: np.ndarray, centre: float, half_depth: float) -> np.ndarray:
    """Outline scale across slices: ``sqrt(1 - ((z - centre) / half_depth)^2)``, 0 beyond."""
    return np.sqrt(np.clip(1.0 - ((z - centre) / half_depth) ** 2, 0.0, None))


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float = 0.25) -> np.ndarray:
    """Smooth multiplicative inhomogeneity: ``exp`` of a random quadratic polynomial in the
    normalised coordinates, about +-``strength`` across the field of view."""
    u, v, z = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    u, v, z = u[:, None, None], v[None, :, None], z[None, None, :]
    c = rng.normal(0.0, strength / 2, size=6).astype(np.float32)
    return np.exp(c[0] * u + c[1] * v + c[2] * u * v + c[3] * u * u + c[4] * v * v + c[5] * 0.3 * z)


def _lesion_count(rng: np.random.Generator, max_lesions: int) -> int:
    """1..max_lesions with probability proportional to 1/k^2: mostly single lesions."""
    k = np.arange(1, max_lesions + 1)
    p = 1.0 / k**2
    return int(rng.choice(k, p=p / p.sum()))


def _descriptor(mask: np.ndarray) -> float:
    """:func:`afl_core.shape.boundary_irregularity` of one mask, padded so its whole
    boundary lies inside the array."""
    padded = torch.from_numpy(np.pad(mask, 1).astype(np.float32))[None, None]
    return float(boundary_irregularity(padded)[0])


def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Body (all slices) and an organ (tapering towards the end slices) of one case.

    Returns the partial volumes of the body ``(H, W, 1)`` and of the organ ``(H, W, D)``
    (inside the body), the organ's centre ``(u, v)`` in voxels and its nominal radius.
    """
    depth, height, width = shape
    z = np.arange(depth, dtype=np.float32)
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    du, dv = np.meshgrid(np.arange(height) - centre[0], np.arange(width) - centre[1], indexing="ij")
    body = Outline.random(rng, 0.40 * min(height, width), 0.04, harmonics=(2, 5), aspect=(0.75, 0.95))
    body_pv = _partial_volume(body.margin(du, dv))[..., None].astype(np.float32)
    organ_centre = centre + rng.uniform(-0.05, 0.05, size=2) * (height, width)
    organ_radius = 0.22 * min(height, width)
    organ = Outline.random(rng, organ_radius, 0.06, harmonics=(2, 4), aspect=(0.7, 0.95))
    ou, ov = np.meshgrid(np.arange(height) - organ_centre[0], np.arange(width) - organ_centre[1], indexing="ij")
    organ_depth = max(0.6 * depth, 1.0)
    organ_pv = _partial_volume(
        organ.margin(ou[..., None], ov[..., None], _taper(z, (depth - 1) / 2, organ_depth))
    ).astype(np.float32)
    organ_pv *= body_pv
    return body_pv, organ_pv, organ_centre, organ_radius


def _place_lesion(
    rng: np.random.Generator,
    outline: Outline,
    half_depth: float,
    organ_centre: np.ndarray,
    organ_radius: float,
    occupied: np.ndarray,
) -> tuple[tuple[float, float, float], tuple[slice, ...], np.ndarray, np.ndarray] | None:
    """A place in the organ where ``outline`` touches no ``occupied`` voxel: its centre
    ``(u, v, z)``, the box around it, the lesion's mask and partial volume in that box;
    ``None`` after 20 tries."""
    height, width, depth = occupied.shape
    reach = outline.max_radius + 2.0
    for _attempt in range(20):
        angle, frac = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 0.5))
        cu = float(np.clip(organ_centre[0] + frac * organ_radius * math.cos(angle), reach, height - 1 - reach))
        cv = float(np.clip(organ_centre[1] + frac * organ_radius * math.sin(angle), reach, width - 1 - reach))
        cz = float(np.clip((depth - 1) / 2 + rng.uniform(-0.25, 0.25) * depth, 0.0, depth - 1.0))
        box = (
            slice(max(int(cu - reach), 0), min(int(cu + reach) + 2, height)),
            slice(max(int(cv - reach), 0), min(int(cv + reach) + 2, width)),
            slice(max(int(cz - half_depth) - 1, 0), min(int(cz + half_depth) + 3, depth)),
        )
        bu, bv, bz = np.ogrid[box[0], box[1], box[2]]
        margin = outline.margin(bu - cu, bv - cv, _taper(bz.astype(np.float32), cz, half_depth))
        mask, pv = _lesion_region(margin)
        if mask.any() and not (mask & occupied[box]).any():
            return (cu, cv, cz), box, mask, pv
    return None


def _lesion_facts(
    number: int,
    centre: tuple[float, float, float],
    outline: Outline,
    conspicuity: float,
    mask: np.ndarray,
    voxel_volume: float,
) -> dict:
    """One row of ``lesions.csv`` (but ``case``): how the lesion was drawn and what it measures."""
    areas = mask.sum(axis=(0, 1))
    volume = int(mask.sum())
    return {
        "lesion": number,
        "centre_x": round(centre[0], 3),
        "centre_y": round(centre[1], 3),
        "centre_z": round(centre[2], 3),
        "radius_vox": round(outline.radius, 4),
        "irregularity_amplitude": round(outline.irregularity, 4),
        "aspect": round(outline.aspect, 4),
        "conspicuity": round(conspicuity, 4),
        "n_slices": int((areas > 0).sum()),
        "volume_voxels": volume,
        "volume_mm3": round(volume * voxel_volume, 4),
        "max_slice_area_voxels": int(areas.max()),
        "boundary_irregularity_3d": round(_descriptor(mask), 6),
        "boundary_irregularity_2d": round(_descriptor(mask[..., int(areas.argmax())]), 6),
    }


def _draw_lesions(
    rng: np.random.Generator,
    grid: tuple[int, int, int],
    organ_centre: np.ndarray,
    organ_radius: float,
    *,
    n_lesions: int,
    lesion_radius: tuple[float, float],
    irregularity: tuple[float, float],
    n_channels: int,
    spacing: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Lesions placed one by one in the organ, rejected if they would touch another, on a
    ``grid`` of ``(H, W, D)`` voxels.

    Returns the label, the lesions' partial volume, each channel's lesion intensity
    ``(C, H, W, D)`` and the facts of each lesion drawn.
    """
    label = np.zeros(grid, dtype=np.uint8)
    lesion_pv = np.zeros(grid, dtype=np.float32)
    occupied = np.zeros(grid, dtype=bool)
    lesions: list[dict] = []
    lesion_values = np.zeros((n_channels,) + grid, dtype=np.float32)
    voxel_volume = float(np.prod(spacing))
    for _ in range(n_lesions):
        radius = float(rng.uniform(*lesion_radius))
        amplitude = float(rng.uniform(*irregularity))
        outline = Outline.random(rng, radius, amplitude)
        half_depth = max(radius * spacing[1] / spacing[0], 0.5) + 0.5  # in-plane radius in slices
        place = _place_lesion(rng, outline, half_depth, organ_centre, organ_radius, occupied)
        if place is None:
            continue
        centre, box, mask, pv = place
        conspicuity = float(rng.uniform(0.5, 1.0))
        label[box] |= mask
        lesion_pv[box] = np.maximum(lesion_pv[box], pv)
        occupied[box] |= ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool))
        for c in range(n_channels):
            contrast = _CONTRASTS[c % len(_CONTRASTS)]
            # Blend towards this lesion's intensity where it covers the voxel.
            target = contrast.organ + conspicuity * (contrast.lesion - contrast.organ)
            lesion_values[c][box] = np.where(pv > 0, target, lesion_values[c][box])
        lesions.append(_lesion_facts(len(lesions) + 1, centre, outline, conspicuity, mask, voxel_volume))
    return label, lesion_pv, lesion_values, lesions


def _channel_image(
    rng: np.random.Generator,
    contrast: _Contrast,
    body_pv: np.ndarray,
    organ_pv: np.ndarray,
    lesion_pv: np.ndarray,
    lesion_value: np.ndarray,
    texture: np.ndarray,
) -> np.ndarray:
    """One channel: tissues mixed by partial volume, texture, blur, bias field, Rician
    noise; int16 as a scanner stores it."""
    grid = texture.shape
    jitter = rng.uniform(0.9, 1.1, size=3)
    tissue = contrast.air + body_pv * (contrast.body * jitter[0] - contrast.air)
    tissue = tissue + organ_pv * (contrast.organ * jitter[1] - tissue)
    tissue *= 1.0 + 0.06 * texture
    # Lesion intensities scale with the organ's jitter so conspicuity is kept.
    tissue += lesion_pv * (lesion_value * jitter[1] * (1.0 + 0.06 * texture) - tissue)
    if contrast.blur > 0:
        tissue = ndimage.gaussian_filter(tissue, sigma=(contrast.blur, contrast.blur, 0.0))
    tissue *= _bias_field(rng, grid)
    sigma = np.float32(contrast.noise * jitter[2])
    real = rng.standard_normal(grid, dtype=np.float32)
    real *= sigma
    real += tissue
    imaginary = rng.standard_normal(grid, dtype=np.float32)
    imaginary *= sigma
    noisy = np.hypot(real, imaginary)  # magnitude of complex Gaussian noise: Rician
    return np.clip(np.rint(noisy * _INTENSITY_SCALE), 0, np.iinfo(np.int16).max).astype(np.int16)


def make_case(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int, int] = (16, 128, 128),
    lesion_radius: tuple[float, float] = (3.0, 12.0),
    irregularity: tuple[float, float] = (0.0, 0.6),
    n_lesions: int = 1,
    n_channels: int = 3,
    spacing: tuple[float, float, float] = (3.0, 0.5, 0.5),
) -> tuple[list[np.ndarray], np.ndarray, list[dict]]:
    """One synthetic case: ``(channels, label, lesions)``.

    ``shape`` and ``spacing`` (mm) are ``(D, H, W)``. ``channels`` are int16 arrays
    ``(H, W, D)`` (NIfTI order), ``label`` uint8 ``(H, W, D)``, ``lesions`` one dict of
    facts per lesion (the columns of ``lesions.csv`` but ``case``). Lesions never touch
    each other (not even diagonally), so each is one connected component of the label and
    its facts are those of that component. A lesion that finds no free place after a few
    tries is left out, so a case may have fewer than ``n_lesions``.
    """
    depth, height, width = shape
    grid = (height, width, depth)
    body_pv, organ_pv, organ_centre, organ_radius = _anatomy(rng, shape)
    label, lesion_pv, lesion_values, lesions = _draw_lesions(
        rng,
        grid,
        organ_centre,
        organ_radius,
        n_lesions=n_lesions,
        lesion_radius=lesion_radius,
        irregularity=irregularity,
        n_channels=n_channels,
        spacing=spacing,
    )
    # One texture for all channels: the same tissue seen with different contrasts.
    texture = ndimage.gaussian_filter(rng.standard_normal(grid, dtype=np.float32), sigma=(2.0, 2.0, 0.7))
    texture /= max(float(texture.std()), 1e-6)
    channels = [
        _channel_image(rng, _CONTRASTS[c % len(_CONTRASTS)], body_pv, organ_pv, lesion_pv, lesion_values[c], texture)
        for c in range(n_channels)
    ]
    return channels, label, lesions


# --------------------------------------------------------------------------- dataset


def _generator_arguments(**kwargs) -> dict:
    """The arguments as they read back from JSON (tuples become lists)."""
    named = {"function": "afl_core.synthetic.make_dataset", "version": GENERATOR_VERSION, **kwargs}
    return json.loads(json.dumps(named))


def _check_range(
    name: str, value: Sequence[float], lo: float, hi: float, *, hi_open: bool = False
) -> tuple[float, float]:
    if len(value) != 2 or not value[0] <= value[1]:
        raise ValueError(f"{name} must be a pair (low, high) with low <= high, got {value}")
    a, b = float(value[0]), float(value[1])
    if a < lo or (b >= hi if hi_open else b > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}{')' if hi_open else ']'}, got {value}")
    return a, b


def default_lesion_radius(shape: Sequence[int]) -> tuple[float, float]:
    """The lesion radius range (voxels) that :func:`make_dataset` uses for ``shape=(D, H, W)``:
    ``(3, 12) * min(H, W) / 128`` (low end at least 1 voxel), i.e. lesions from about 2 % to
    9 % of the image width, which fits any irregularity below 1 (``12 / 128 * 2 < 0.2``)."""
    scale = min(shape[1:]) / 128
    return max(3.0 * scale, 1.0), 12.0 * scale


def _check_arguments(
    n_cases: int,
    seed: int,
    shape: tuple[int, int, int],
    lesion_radius: tuple[float, float] | None,
    irregularity: tuple[float, float],
    empty_fraction: float,
    n_channels: int,
    max_lesions: int,
    spacing: tuple[float, float, float],
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Refuse :func:`make_dataset`'s arguments out of range (:class:`ValueError` naming the
    argument); return the lesion radius range (its default for ``shape`` if ``None``) and
    the irregularity range, as pairs of floats."""
    if int(n_cases) < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    if int(seed) < 0:  # numpy's SeedSequence takes none, and only after the old dataset is gone
        raise ValueError(f"seed must be a whole number >= 0, got {seed}")
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 16 or max(shape) > _NIFTI_MAX_AXIS:
        raise ValueError(
            f"shape must be (D, H, W) with D >= 1, H, W >= 16 and at most {_NIFTI_MAX_AXIS} voxels along "
            f"each axis (the NIfTI-1 limit), got {shape}"
        )
    if lesion_radius is None:
        lesion_radius = default_lesion_radius(shape)
    lesion_radius = _check_range("lesion_radius", lesion_radius, 1.0, math.inf)
    irregularity = _check_range("irregularity", irregularity, 0.0, 1.0, hi_open=True)
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}")
    if n_channels < 1 or max_lesions < 1:
        raise ValueError("n_channels and max_lesions must be at least 1")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"spacing must be three positive finite numbers (mm), (D, H, W) like shape, got {tuple(spacing)}"
        )
    # The organ (radius 0.22 min(H, W)) must be able to hold the largest lesion.
    if lesion_radius[1] * (1 + irregularity[1]) > 0.2 * min(shape[1:]):
        raise ValueError(
            f"lesion_radius up to {lesion_radius[1]} voxels (irregularity up to {irregularity[1]}) does not fit "
            f"an image of {shape[1]}x{shape[2]}: keep lesion_radius[1] * (1 + irregularity[1]) <= 0.2 * min(H, W)"
        )
    return lesion_radius, irregularity


def make_dataset(
    root: str | os.PathLike,
    n_cases: int,
    *,
    seed: int,
    shape: tuple[int, int, int] = (16, 128, 128),
    lesion_radius: tuple[float, float] | None = None,
    irregularity: tuple[float, float] = (0.0, 0.6),
    empty_fraction: float = 0.2,
    n_channels: int = 3,
    max_lesions: int = 3,
    spacing: tuple[float, float, float] = (3.0, 0.5, 0.5),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``n_cases`` synthetic cases (``synth_0000``, ...) in the layout of
    :mod:`afl_core.data`, plus ``lesions.csv``; return ``root``.

    Args:
        root: dataset folder.
        n_cases: number of cases.
        seed: the same arguments give the same arrays (and bytes); case ``i`` depends
            only on ``seed`` and ``i`` (and on which cases are lesion-free).
        shape: ``(D, H, W)``: D slices of H x W voxels (stored as ``(H, W, D)``).
        lesion_radius: in-plane radius range in voxels, drawn uniformly per lesion; by
            default :func:`default_lesion_radius` of ``shape`` ((3, 12) at 128 x 128). A
            range given must fit the organ: ``lesion_radius[1] * (1 + irregularity[1])
            <= 0.2 min(H, W)``, else :class:`ValueError`.
        irregularity: range of the outline amplitude ``a`` in [0, 1), drawn uniformly per
            lesion (0: smooth ellipse, ~0.6: strongly zigzag); see :class:`Outline`. An input,
            not the measured ``boundary_irregularity_2d`` of ``lesions.csv``.
        empty_fraction: share of lesion-free cases (``round(empty_fraction * n_cases)``).
        n_channels: number of channels; they cycle through T2W-, ADC- and HBV-like contrasts.
        max_lesions: at most this many lesions per case (mostly one).
        spacing: voxel size in mm, ``(D, H, W)`` like ``shape``: slice thickness first.
        overwrite: replace a dataset this function wrote in ``root`` with other
            arguments, or one whose case files are cut short or unreadable. When
            ``root`` already holds exactly this dataset, intact, it is kept and nothing is
            written; a generation with these arguments that was interrupted
            goes on where it stopped. Files it did not write are never replaced.
        progress: show a progress bar.

    Returns:
        ``root``.

    Raises:
        ValueError: an argument out of range.
        NotEnoughMemory: one case of ``shape`` would not fit in the available memory
            (a ``ValueError`` and ``MemoryError``).
        FileExistsError: ``root`` holds a dataset this function made with other arguments,
            or this one with case files cut short or unreadable (named), and ``overwrite``
            is false.
        ForeignFilesError: ``root`` holds a dataset or layout files another source wrote
            (a ``FileExistsError``; ``overwrite`` does not replace them).
        afl_core._io.FolderBusy: another process is writing ``root`` (the message names it).

    ``dataset.json`` records the arguments (``generator``, with the lesion radius range used),
    ``source="synthetic"`` and the spacing ``(D, H, W)``; ``lesions.csv`` has the columns
    :data:`LESION_COLUMNS`, the volume and :func:`afl_core.shape.boundary_irregularity`
    measured on each lesion's own mask (3D, and 2D on its largest slice).
    """
    lesion_radius, irregularity = _check_arguments(
        n_cases, seed, shape, lesion_radius, irregularity, empty_fraction, n_channels, max_lesions, spacing
    )
    n_cases = int(n_cases)
    arguments = _generator_arguments(
        n_cases=n_cases,
        seed=int(seed),
        shape=[int(s) for s in shape],
        lesion_radius=lesion_radius,
        irregularity=irregularity,
        empty_fraction=float(empty_fraction),
        n_channels=int(n_channels),
        max_lesions=int(max_lesions),
        spacing=[float(s) for s in spacing],
    )
    root = Path(root)
    case_ids = [f"synth_{i:04d}" for i in range(n_cases)]
    if root.exists() and not root.is_dir():
        raise ForeignFilesError(f"{root} is a file, not a folder: choose a folder for the dataset")
    check_memory(  # before the lock, which creates the folder
        math.prod(shape) * (_BYTES_PER_VOXEL + _BYTES_PER_VOXEL_AND_CHANNEL * n_channels),
        what=f"one synthetic case of {' x '.join(map(str, shape))} voxels and {n_channels} channel(s)",
        option="shape",
    )
    # one process writes a dataset: two would mix their cases
    with folder_lock(root, option="--dest", then="the same command continues it, or --force replaces it"):
        if _already_written(root, arguments, case_ids):
            damaged = damaged_files(path for case in case_ids for path in _case_files(root, case, n_channels))
            if not damaged:
                return root
            if not overwrite:
                shown = ", ".join(str(path.relative_to(root)) for path in damaged[:3])
                raise FileExistsError(
                    f"{root} holds this dataset, but {len(damaged)} of its case files are cut short or unreadable "
                    f"({shown}{', ...' if len(damaged) > 3 else ''}): pass overwrite=True to make it again"
                )
        _check_only_generated(root)
        finished = _resumed_cases(root, arguments, n_channels, overwrite)
        _start_progress(root, arguments, finished)
        _remove_unwanted_files(root, case_ids, n_channels)
        _write_cases(root, case_ids, finished, arguments, progress=progress)
        _write_lesions_csv(root, case_ids, finished)
        _write_synthetic_dataset_json(root, arguments)
        (root / _PROGRESS).unlink()
        return root


def _resumed_cases(root: Path, arguments: dict, n_channels: int, overwrite: bool) -> dict[str, list[dict]]:
    """The lesion facts of the cases an interrupted generation with these ``arguments``
    finished, to keep; ``{}`` when none was under way. Anything else this function wrote
    in ``root`` is replaced only with ``overwrite`` (else :class:`FileExistsError`, naming
    the progress file when its first line, the arguments, is damaged)."""
    lines = _progress_lines(root)
    head = _progress_head(lines) if lines is not None else None
    if head == {"generator": arguments}:
        return _finished_cases(root, lines[1:], n_channels)
    existing = [root / n for n in (DATASET_JSON, LESIONS_CSV, _PROGRESS) if (root / n).exists()]
    existing += _generated_files(root)
    if not existing or overwrite:
        return {}
    if lines is not None and head is None:
        raise FileExistsError(
            f"{root / _PROGRESS}, the record of an interrupted generation, is damaged in its first line (the "
            f"generator's arguments), so the cases already in {root} cannot be continued; pass overwrite=True to "
            "make the dataset again from the start, or choose another folder"
        )
    raise FileExistsError(
        f"{root} already holds a dataset made with other arguments "
        f"({', '.join(sorted({p.relative_to(root).parts[0] for p in existing}))}); "
        "pass overwrite=True to replace it or choose another folder"
    )


def _remove_unwanted_files(root: Path, case_ids: list[str], n_channels: int) -> None:
    """Remove ``dataset.json`` and ``lesions.csv`` (they come back last: they mark a complete
    dataset) and the files of cases or channels these arguments do not make. Only files
    this function writes are removed."""
    wanted = {path.name for case in case_ids for path in _case_files(root, case, n_channels)}
    for path in [root / DATASET_JSON, root / LESIONS_CSV, *_generated_files(root)]:
        if path.name not in wanted:
            path.unlink(missing_ok=True)


def _nifti_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The affine of a case: NIfTI axes are (H, W, D), so it takes shape and spacing in that
    order, centred on the origin."""
    stored_shape, stored_spacing = np.array(shape)[[1, 2, 0]], np.array(spacing, dtype=float)[[1, 2, 0]]
    affine = np.diag([*stored_spacing, 1.0])
    affine[:3, 3] = -0.5 * (stored_shape - 1) * stored_spacing
    return affine


def _write_cases(
    root: Path, case_ids: list[str], finished: dict[str, list[dict]], arguments: dict, *, progress: bool
) -> None:
    """Write the cases not yet ``finished`` from the generator ``arguments``, adding each
    one's lesion facts to ``finished`` and to the progress file. Case ``i`` draws from the
    ``i``-th child of the seed, so it is the same whichever cases an interrupted run already
    wrote."""
    case_options = {
        name: arguments[name] for name in ("shape", "lesion_radius", "irregularity", "n_channels", "spacing")
    }
    n_cases = len(case_ids)
    top = np.random.SeedSequence(arguments["seed"])
    n_empty = round(arguments["empty_fraction"] * n_cases)
    empty = set(np.random.default_rng(top).permutation(n_cases)[:n_empty].tolist())
    affine = _nifti_affine(case_options["shape"], case_options["spacing"])
    todo = [
        (i, case_id, case_seed)
        for i, (case_id, case_seed) in enumerate(zip(case_ids, top.spawn(n_cases)))
        if case_id not in finished
    ]
    with open(root / _PROGRESS, "a", encoding="utf-8") as log:
        for i, case_id, case_seed in tqdm(todo, desc="synthetic cases", disable=not progress, leave=False):
            rng = np.random.default_rng(case_seed)
            n_lesions = 0 if i in empty else _lesion_count(rng, arguments["max_lesions"])
            channels, label, lesions = make_case(rng, n_lesions=n_lesions, **case_options)
            write_case(root, case_id, channels, label, affine)
            # The case counts as finished once its facts are on disk beside its files.
            log.write(json.dumps({"case": case_id, "lesions": lesions}) + "\n")
            log.flush()
            os.fsync(log.fileno())
            finished[case_id] = lesions


def _write_lesions_csv(root: Path, case_ids: list[str], finished: dict[str, list[dict]]) -> None:
    """``lesions.csv``: one row of facts per lesion, in case order."""
    rows = [{"case": case_id, **facts} for case_id in case_ids for facts in finished[case_id]]
    with atomic_write(root / LESIONS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LESION_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _write_synthetic_dataset_json(root: Path, arguments: dict) -> None:
    """``dataset.json``, written last: it marks a complete dataset and records ``arguments``."""
    n_channels = arguments["n_channels"]
    names = [_CONTRASTS[c % len(_CONTRASTS)].name + ("" if c < len(_CONTRASTS) else f"-{c}") for c in range(n_channels)]
    write_dataset_json(
        root,
        channel_names=names,
        num_training=arguments["n_cases"],
        source="synthetic",
        licence="CC0-1.0 (generated by afl_core.synthetic)",
        spacing=arguments["spacing"],
        label_mapping={"0": 0, "1": 1},
        axes="shape and spacing (D, H, W); NIfTI arrays (H, W, D): the third axis is the slice axis",
        lesions_csv=LESIONS_CSV,
        generator=arguments,
    )


class ForeignFilesError(FileExistsError):
    """The dataset folder holds files :func:`make_dataset` did not write; it replaces none of them."""


def _is_generated(info: dict) -> bool:
    """Whether a ``dataset.json`` content is one :func:`make_dataset` wrote."""
    generator = info.get("generator")
    return (
        info.get("source") == "synthetic"
        and isinstance(generator, dict)
        and generator.get("function") == "afl_core.synthetic.make_dataset"
    )


def _generated_files(root: Path) -> list[Path]:
    """The case files (and atomic writers' temporaries) in ``imagesTr`` / ``labelsTr`` that
    :func:`make_dataset` writes, by their names."""
    found = []
    for folder, pattern in ((root / IMAGES_DIR, _IMAGE_NAME), (root / LABELS_DIR, _LABEL_NAME)):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if pattern.fullmatch(p.name) or p.name.startswith(".tmp-")]
    return sorted(found)


def _check_only_generated(root: Path) -> None:
    """Refuse a folder holding a dataset (or files in its layout) that :func:`make_dataset`
    did not write, overwrite or not: a PI-CAI conversion, a user's own nnU-Net dataset."""
    if root.exists() and not root.is_dir():
        raise ForeignFilesError(f"{root} is a file, not a folder: choose a folder for the dataset")
    foreign = []
    if (root / DATASET_JSON).exists():
        try:
            info = read_json(root / DATASET_JSON)
        except ValueError as err:
            raise ForeignFilesError(
                f"{err}. It cannot tell whether the synthetic generator made this dataset, so nothing in "
                f"{root} is replaced: choose another folder, or delete {root / DATASET_JSON} yourself"
            ) from None
        if not _is_generated(info):
            foreign.append(f"{DATASET_JSON} of source {info.get('source', 'unknown')!r}")
    elif (root / LESIONS_CSV).exists() and not (root / _PROGRESS).exists():
        foreign.append(LESIONS_CSV)
    generated = set(_generated_files(root))
    for folder in (root / IMAGES_DIR, root / LABELS_DIR):
        if folder.is_dir():
            other = sorted(p.name for p in folder.iterdir() if p not in generated)
            if other:
                shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
                foreign.append(f"{len(other)} file(s) in {folder.name}/ ({shown})")
        elif folder.exists():
            foreign.append(f"{folder.name} (a file)")
    if foreign:
        raise ForeignFilesError(
            f"{root} holds a dataset or files that the synthetic generator did not make ({'; '.join(foreign)}); "
            "it replaces only what it wrote itself: choose another folder"
        )


def _start_progress(root: Path, arguments: dict, finished: dict[str, list[dict]]) -> None:
    """Record the arguments of a generation that starts (or resumes, with the ``finished``
    cases' facts), before anything else is written."""
    lines = [{"generator": arguments}, *({"case": case, "lesions": facts} for case, facts in finished.items())]
    with atomic_write(root / _PROGRESS, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)


def _progress_lines(root: Path) -> list[str] | None:
    """The lines of the progress file of an interrupted generation (``[]`` when it cannot
    be read), or ``None`` when there is none."""
    try:
        return (root / _PROGRESS).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    except OSError:  # a folder in its place, no permission: as damaged
        return []


def _progress_head(lines: list[str]) -> dict | None:
    """The first line of a progress file, ``{"generator": arguments}``; ``None`` when it is
    damaged (not JSON, or not of that form)."""
    try:
        head = json.loads(lines[0])
    except (ValueError, IndexError):
        return None
    return head if isinstance(head, dict) and isinstance(head.get("generator"), dict) else None


def _finished_cases(root: Path, entries: list[str], n_channels: int) -> dict[str, list[dict]]:
    """The lesion facts of the cases a progress file's ``entries`` (its lines after the
    first) list as finished, and whose files are all present."""
    finished = {}
    for line in entries:
        try:
            entry = json.loads(line)
            finished[entry["case"]] = entry["lesions"]
        except (ValueError, KeyError, TypeError):  # the last line of a killed run may be cut short
            continue

    return {
        case: lesions
        for case, lesions in finished.items()
        if all(path.is_file() for path in _case_files(root, case, n_channels))
    }


def _case_files(root: Path, case: str, n_channels: int) -> list[Path]:
    """A case's label file and its channels' image files."""
    return [label_path(root, case), *(channel_path(root, case, k) for k in range(n_channels))]


def _already_written(root: Path, arguments: dict, case_ids: list[str]) -> bool:
    """Whether ``root`` holds a complete dataset made with exactly these arguments."""
    if not (root / DATASET_JSON).is_file() or not (root / LESIONS_CSV).is_file():
        return False
    try:
        same = read_dataset_json(root).get("generator") == arguments
        return same and list_cases(root) == case_ids
    except (ValueError, FileNotFoundError):
        return False
