"""What happens to a case's arrays between the disk and the network: normalisation, fixed
sizes (centre crop/pad, or the authors' area resize), back to the case's grid, augmentation.

Arrays are channel-first, ``(C, *S)``: ``S`` is ``(H, W)`` for a slice, ``(D, H, W)`` for a
volume, or the NIfTI ``(X, Y, Z)`` of a whole case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "normalise_channels",
    "centre_crop_or_pad",
    "assemble_volume",
    "resize_area",
    "resize_label",
    "Augmentation",
    "VolumeAugmentation",
]


# --------------------------------------------------------------------------- normalisation


def normalise_channels(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Per-channel z-score after percentile clipping, over the whole volume of one case.

    For each channel ``x``: ``lo, hi`` = its ``percentiles``; ``c = clip(x, lo, hi)``;
    ``z = (c - mean(c)) / std(c)`` (``z = c - mean(c)`` for a constant channel). This is
    the PI-CAI U-Net baseline's normalisation. ``image`` is ``(C, ...)``; returns float32.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.empty_like(image)
    for index, channel in enumerate(image):
        lo, hi = np.percentile(channel, percentiles)
        clipped = np.clip(channel, lo, hi)
        std = clipped.std()
        out[index] = (clipped - clipped.mean()) / (std if std > 0 else 1.0)
    return out


# --------------------------------------------------------------------------- crop / pad


def _centre_window(length: int, target: int) -> tuple[slice, slice]:
    """Source and destination slices of a centre crop (``length >= target``) or a centre
    pad (``length < target``) of one axis; the odd voxel goes to the end. Cropping ``n`` to
    ``m`` and padding ``m`` back to ``n`` use the same window, so one undoes the other."""
    if length >= target:
        start = (length - target) // 2
        return slice(start, start + target), slice(0, target)
    start = (target - length) // 2
    return slice(0, length), slice(start, start + length)


def centre_crop_or_pad(array: np.ndarray, size: Sequence[int], fill: float | Sequence[float] = 0.0) -> np.ndarray:
    """Centre-crop or pad the first ``len(size)`` spatial axes of ``array`` ``(C, *S, ...)``
    to ``size`` (``(H, W)`` crops the first two, ``(D, H, W)`` three); padding takes
    ``fill`` (a scalar or one value per channel). The same call with the original size
    undoes it on the region that was kept."""
    array = np.asarray(array)
    size = tuple(int(n) for n in size)
    windows = [_centre_window(array.shape[1 + axis], n) for axis, n in enumerate(size)]
    out = np.empty((array.shape[0], *size, *array.shape[1 + len(size) :]), dtype=array.dtype)
    out[...] = np.reshape(np.asarray(fill, dtype=array.dtype), (-1,) + (1,) * (array.ndim - 1))
    out[(slice(None), *(dst for _, dst in windows))] = array[(slice(None), *(src for src, _ in windows))]
    return out


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def assemble_volume(
    slices: Mapping[int, np.ndarray] | Sequence[np.ndarray] | np.ndarray,
    volume_shape: tuple[int, int, int],
    *,
    fill: float = 0.0,
) -> np.ndarray:
    """Put 2D slice predictions back into a volume on the case's original grid.

    ``slices`` maps slice index ``k`` (along the third axis) to a 2D array ``(H, W)`` or
    ``(1, H, W)`` (a sequence or a stacked array ``(Z, [1,] H, W)`` gives every slice in
    order; NumPy arrays or torch tensors). ``(H, W)`` may differ from the volume's
    ``(X, Y)`` when the slices were centre-cropped or padded by :class:`SliceDataset`'s
    ``size``: the padding is dropped and the cropped-away border gets ``fill`` (background),
    so ``assemble_volume`` exactly inverts the crop/pad on the region that was seen.
    Slices not given are ``fill`` too. Returns an array ``volume_shape`` of the slices' dtype.
    """
    x, y, z = (int(n) for n in volume_shape)
    if isinstance(slices, Mapping):
        items = [(int(k), _as_numpy(v)) for k, v in slices.items()]
    else:
        items = list(enumerate(_as_numpy(s) for s in slices))
    if not items:
        raise ValueError("assemble_volume got no slices")
    planes = []
    for k, plane in items:
        if plane.ndim == 3 and plane.shape[0] == 1:
            plane = plane[0]
        if plane.ndim != 2:
            raise ValueError(f"slice {k} has shape {plane.shape}; expected (H, W) or (1, H, W)")
        if not 0 <= k < z:
            raise ValueError(f"slice index {k} is outside the volume's {z} slices")
        planes.append((k, plane))
    dtype = np.result_type(*(p.dtype for _, p in planes))
    volume = np.full((x, y, z), fill, dtype=dtype)
    for k, plane in planes:
        rows_vol, rows_plane = _centre_window(x, plane.shape[0])
        cols_vol, cols_plane = _centre_window(y, plane.shape[1])
        volume[rows_vol, cols_vol, k] = plane[rows_plane, cols_plane]
    return volume


# --------------------------------------------------------------------------- resize


def resize_area(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Area resampling of the spatial axes of ``array`` ``(C, *S)`` to ``size``, float32.

    This is MONAI ``Resize``'s default ``mode="area"`` (the authors' ``Resized``), which
    calls ``torch.nn.functional.interpolate(mode="area")``, i.e. adaptive average pooling:
    along an axis of ``n`` voxels resized to ``m``, output voxel ``i`` is the mean of input
    voxels ``floor(i n / m)`` to ``ceil((i + 1) n / m) - 1`` (a box, one axis after the other).
    """
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return F.interpolate(x, size=tuple(int(n) for n in size), mode="area")[0].numpy()


def resize_label(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The authors' label preprocessing: :func:`resize_area` of the 0/1 mask ``(*S)``, then
    ``!= 0`` (``train_augment.py:13``, ``train.py:36``). A voxel of the new grid is lesion
    when its box touches any lesion voxel, so lesions grow, small ones most: from the
    project's PI-CAI grid (256 x 256 x 20 at 0.5 x 0.5 x 3 mm) to 160 x 128 x 24, a 0.1 ml
    ball grows 1.93x in physical volume on average over positions (1.59-2.35x), 1 ml 1.37x,
    5 ml 1.23x (:func:`afl_core.lesion_size_studies.resize_growth`, docs/authors_recipe.md)."""
    return resize_area(np.asarray(label, dtype=np.float32)[None], size)[0] != 0


# --------------------------------------------------------------------------- augmentation


def _scale_intensity(image: torch.Tensor, rng: np.random.Generator, gain: tuple[float, float], shift: float):
    """Per channel ``gain * z + shift``, ``gain ~ U(*gain)``, ``shift ~ U(-shift, shift)``,
    drawn for each channel. (The authors' MONAI ``RandScaleIntensityd`` / ``RandShiftIntensityd``
    draw one factor and one offset for all channels, ``channel_wise=False``.)"""
    channels = image.shape[0]
    gains = torch.as_tensor(rng.uniform(*gain, size=channels), dtype=image.dtype)
    shifts = torch.as_tensor(rng.uniform(-shift, shift, size=channels), dtype=image.dtype)
    per_channel = (-1,) + (1,) * (image.ndim - 1)
    return image * gains.view(per_channel) + shifts.view(per_channel)


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation of one 2D item, drawn from ``(seed, epoch, index)``.

    * flips of each in-plane axis with probability ``flip_prob``;
    * with probability ``affine_prob`` an affine map: rotation ``U(-rotate_deg, rotate_deg)``,
      isotropic scale ``U(*scale)``, shift ``U(-translate, translate)`` of the image size per
      axis; the image is resampled bilinearly (edge values outside), the label by nearest
      neighbour (zeros outside), so it stays binary and keeps one-voxel lesions;
    * per channel intensity ``gain * z + shift`` with ``gain ~ U(*gain)``, ``shift ~ U(-shift, shift)``
      drawn for each channel (the image is z-scored, so these are in standard deviations).
    """

    flip_prob: float = 0.5
    affine_prob: float = 0.5
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    gain: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.1

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator):
        """Augment ``image`` ``(C, H, W)`` and ``label`` ``(1, H, W)`` (float tensors)."""
        flips = [dim for dim in (1, 2) if rng.random() < self.flip_prob]
        if flips:
            image, label = image.flip(flips), label.flip(flips)
        if rng.random() < self.affine_prob:
            theta = self._affine_theta(rng, image.shape[1], image.shape[2])
            grid = F.affine_grid(theta, (1, 1, *image.shape[1:]), align_corners=False)
            image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
            # Nearest neighbour keeps labels binary and keeps one-voxel lesions: a bilinear
            # label thresholded at 0.5 lost them in about 40 % of the draws.
            label = F.grid_sample(label[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
        return _scale_intensity(image, rng, self.gain, self.shift), label

    def _affine_theta(self, rng: np.random.Generator, height: int, width: int) -> torch.Tensor:
        """``affine_grid``'s matrix (output -> input, normalised coordinates) for a rotation,
        scale and shift defined in pixel units, so a rotation stays a rotation on a
        non-square image: ``theta = D^-1 (R / s) D`` with ``D = diag(W, H) / 2``."""
        angle = math.radians(rng.uniform(-self.rotate_deg, self.rotate_deg))
        scale = rng.uniform(*self.scale)
        shift = rng.uniform(-self.translate, self.translate, size=2) * 2.0  # normalised units span 2
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        aspect = height / width  # grid x runs along W, y along H
        theta = torch.tensor(
            [[cos, -sin * aspect, shift[0]], [sin / aspect, cos, shift[1]]],
            dtype=torch.float32,
        )
        return theta[None]


@dataclass(frozen=True)
class VolumeAugmentation:
    """Training augmentation of one 3D item, drawn from ``(seed, epoch, index)``.

    * flips of each of the three axes with probability ``flip_prob`` (the authors flip
      every axis with probability 0.5, ``train_augment.py:16-18``); flips move no voxel
      off the grid, so the label stays exactly the label;
    * per channel intensity ``gain * z + shift`` as :class:`Augmentation`, a gain and a shift
      drawn for each channel. The authors draw one factor and one offset for all channels
      (MONAI's ``RandScaleIntensityd`` and ``RandShiftIntensityd``, default
      ``channel_wise=False``, ``train_augment.py:21-22``) and only with probability 0.4; the
      recipe keeps this project's per-channel draw (docs/authors_recipe.md).
    """

    flip_prob: float = 0.5
    gain: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.1

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator):
        """Augment ``image`` ``(C, D, H, W)`` and ``label`` ``(1, D, H, W)`` (float tensors)."""
        flips = [dim for dim in range(1, image.ndim) if rng.random() < self.flip_prob]
        if flips:
            image, label = image.flip(flips), label.flip(flips)
        return _scale_intensity(image, rng, self.gain, self.shift), label
