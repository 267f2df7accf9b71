"""PyTorch datasets over a dataset folder: 2D slices (the teaching path) or whole volumes (the
authors' path), with seeded augmentation and lesion oversampling, and the way back from a
prediction to the case's grid for evaluation.

Both serve items ``{"image", "label", "case", "index", "spacing"}``; ``spacing`` is the voxel
size in mm along the item's spatial axes, in array order (``(H, W)`` or ``(D, H, W)``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, RandomSampler, Sampler, WeightedRandomSampler

from afl_core._io import check_memory
from afl_core.data.layout import LABELS_DIR, channel_names, list_cases, load_case, load_geometry
from afl_core.data.transforms import (
    Augmentation,
    VolumeAugmentation,
    assemble_volume,
    centre_crop_or_pad,
    normalise_channels,
    resize_area,
    resize_label,
)

__all__ = ["SliceDataset", "VolumeDataset"]


def _positive_size(size: Sequence[int] | None, length: int, what: str) -> tuple[int, ...] | None:
    if size is None:
        return None
    size = tuple(int(n) for n in size)
    if len(size) != length or min(size) < 1:
        raise ValueError(f"size must be {length} positive numbers {what}, got {size}")
    return size


class _CaseDataset(Dataset):
    """What slice and volume datasets share: the cases, their decoded arrays (cached), the
    epoch, seeded augmentation, and a seeded sampler that can oversample lesion items.

    Subclasses set ``self.items`` (``(case, index)`` pairs) and implement ``_volumes``
    (the cached arrays of a case), ``_item_arrays`` and the way back to the case's grid.
    """

    _default_augmentation: type = Augmentation

    def __init__(self, root, cases, *, augment, oversample_lesions: float, seed: int, percentiles) -> None:
        self.root = Path(root)
        available = list_cases(self.root)
        self.channel_names = channel_names(self.root)
        if cases is None:
            cases = available
        else:
            cases = [str(c) for c in cases]
            unknown = sorted(set(cases) - set(available))
            if unknown:
                raise ValueError(f"cases {unknown[:5]} are not in {self.root / LABELS_DIR}; see list_cases(root)")
            if len(set(cases)) != len(cases):
                raise ValueError("cases holds duplicates")
        if not cases:
            raise ValueError(f"{self.root} holds no cases")
        if not 0.0 <= oversample_lesions < 1.0:
            raise ValueError(f"oversample_lesions must be in [0, 1), got {oversample_lesions}")
        self.cases = list(cases)
        self.augmentation = self._default_augmentation() if augment is True else (augment or None)
        self.oversample_lesions = float(oversample_lesions)
        self.seed = int(seed)
        self.percentiles = tuple(percentiles)
        self.epoch = 0
        #: a function ``item -> dict`` of extra fields, run on each item after augmentation
        #: (in the DataLoader workers), e.g. :class:`afl_core.train.ItemParameters`.
        self.item_fields = None
        self._geometry = {case: load_geometry(self.root, case) for case in self.cases}
        self.items: list[tuple[str, int]] = []
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._labels: dict[str, np.ndarray] = {}  # evaluation-grid labels, read-only

    def _check_cache_fits(self, shape: tuple[int, ...], what: str) -> None:
        """Refuse a ``size`` whose one cached case (float32 image and label) cannot fit in memory."""
        check_memory(
            4 * (self.in_channels + 1) * math.prod(shape),
            what=f"one case cached as {what} ({self.in_channels} channel(s) and the label, float32)",
            option="size (--size on the command line)",
        )

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of an epoch. DataLoader workers copy the dataset when an
        iteration starts, so call this before iterating (it does not reach workers kept
        alive with ``persistent_workers=True``)."""
        self.epoch = int(epoch)

    def preload(self, progress: bool = True):
        """Decode and normalise every case now (with a progress bar); returns ``self``."""
        from tqdm.auto import tqdm

        for case in tqdm(self.cases, desc="loading cases", disable=not progress, leave=False):
            self._volumes(case)
        return self

    def __getitem__(self, index: int) -> dict:
        case, k = self.items[index]
        image, label = (torch.from_numpy(np.array(a, order="C")) for a in self._item_arrays(case, k))  # a copy
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, label = self.augmentation(image, label, rng)
        spacing = torch.tensor(self._item_spacing[case], dtype=torch.float32)
        item = {"image": image, "label": label, "case": case, "index": k, "spacing": spacing}
        if self.item_fields is not None:  # e.g. the loss's parameters, in the DataLoader worker
            item.update(self.item_fields(item))
        return item

    # ----- sampling

    def lesion_items(self) -> np.ndarray:
        """Boolean array over items: does the item hold any lesion voxel (before augmentation)?"""
        return np.array([bool(self._item_arrays(case, k)[1].any()) for case, k in self.items])

    def sample_weights(self) -> np.ndarray:
        """Per-item sampling probabilities: lesion-bearing items together get
        ``max(oversample_lesions, their natural share)``, uniformly among them; the rest the
        remainder. Uniform when ``oversample_lesions`` is 0 or no item holds a lesion."""
        lesion = self.lesion_items()
        n_lesion = int(lesion.sum())
        weights = np.full(len(self), 1.0 / len(self))
        if self.oversample_lesions > 0 and 0 < n_lesion < len(self):
            share = max(self.oversample_lesions, n_lesion / len(self))
            weights = np.where(lesion, share / n_lesion, (1.0 - share) / (len(self) - n_lesion))
        return weights

    def sampler(self, epoch: int | None = None, num_samples: int | None = None) -> Sampler:
        """A seeded sampler for a training ``DataLoader`` (pass it as ``sampler=``).

        Without oversampling: a random permutation of all items. With oversampling: a
        :class:`~torch.utils.data.WeightedRandomSampler` (with replacement) over
        :meth:`sample_weights`, ``num_samples`` items (default ``len(self)``). The order is
        fixed by ``(seed, epoch)`` (``epoch`` defaults to the one of :meth:`set_epoch`), so
        a resumed run draws the same batches. It decodes every case (see :meth:`preload`).
        """
        epoch = self.epoch if epoch is None else int(epoch)
        # Its own stream: the augmentation of item i uses (seed, epoch, i).
        seed = int(np.random.SeedSequence([self.seed, epoch, 1]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        self.preload(progress=False)
        if self.oversample_lesions == 0:
            return RandomSampler(self, num_samples=num_samples, generator=generator)
        weights = torch.as_tensor(self.sample_weights(), dtype=torch.double)
        return WeightedRandomSampler(weights, num_samples or len(self), replacement=True, generator=generator)

    # ----- back to the case's grid

    def case_items(self, case: str) -> list[int]:
        """Item indices of a case, in order."""
        return [i for i, (c, _) in enumerate(self.items) if c == case]

    def case_label(self, case: str) -> np.ndarray:
        """The case's label on the evaluation grid (:meth:`volume_shape`), uint8 ``(X, Y, Z)``,
        read-only (decoded once with the case's volumes)."""
        self._volumes(case)
        return self._labels[case]


class SliceDataset(_CaseDataset):
    """2D slices of the cases of a dataset, along the third NIfTI axis.

    Item ``i`` is ``{"image": float32 (C, H, W), "label": float32 (1, H, W) of 0/1,
    "case": str, "index": k, "spacing": float32 (2,)}`` for slice ``k`` of a case
    (``volume[:, :, k]``, so ``H, W`` are the first two NIfTI axes and ``spacing`` their
    voxel size in mm). Channels are normalised per case and channel with
    :func:`normalise_channels` (clip at the 0.5 / 99.5 percentiles, then z-score).

    Args:
        root: dataset folder of the layout (:mod:`afl_core.data.layout`).
        cases: case ids to use (default: all, see :func:`split_cases`).
        size: ``(H, W)`` to centre-crop or pad every slice to (needed to batch cases of
            different in-plane size); padding takes each channel's lowest normalised value
            (the clipped 0.5th percentile: background) and label 0. :meth:`assemble`
            undoes it.
        augment: ``False``, ``True`` (default :class:`Augmentation`) or an
            :class:`Augmentation`; drawn from ``(seed, epoch, index)`` so items are the same
            in any worker and in any order.
        oversample_lesions: share of lesion-bearing slices in what :meth:`sampler` draws (at
            least their natural share); 0 samples every slice once per epoch.
        seed: seed of augmentation and sampling.
        percentiles: clipping percentiles of the normalisation.

    Decoded, normalised (and cropped/padded) volumes are cached in memory per case on
    first use, so ``__getitem__`` is a slice copy. Call :meth:`preload` before making a
    ``DataLoader`` with workers: forked workers then share the cache instead of each
    decoding every case again. The cache holds ``4 * C * H * W * Z`` bytes per case.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        cases: Sequence[str] | None = None,
        *,
        size: tuple[int, int] | None = None,
        augment: bool | Augmentation = False,
        oversample_lesions: float = 0.0,
        seed: int = 0,
        percentiles: tuple[float, float] = (0.5, 99.5),
    ) -> None:
        self.size = _positive_size(size, 2, "(H, W)")
        super().__init__(
            root, cases, augment=augment, oversample_lesions=oversample_lesions, seed=seed, percentiles=percentiles
        )
        if self.size is not None:
            depth = max(geometry.shape[2] for geometry in self._geometry.values())
            self._check_cache_fits(self.size + (depth,), f"slices of {self.size[0]} x {self.size[1]}, {depth} per case")
        self.items = [(case, k) for case in self.cases for k in range(self._geometry[case].shape[2])]
        self._item_spacing = {case: self._geometry[case].spacing[:2] for case in self.cases}

    def _volumes(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image ``(C, H, W, Z)`` and label ``(1, H, W, Z)``, cached."""
        if case not in self._cache:
            loaded = load_case(self.root, case)
            loaded.label.flags.writeable = False
            self._labels[case] = loaded.label
            image = normalise_channels(loaded.image, self.percentiles)
            label = loaded.label[None].astype(np.float32)
            if self.size is not None:
                background = image.reshape(image.shape[0], -1).min(axis=1)
                image = centre_crop_or_pad(image, self.size, fill=background)
                label = centre_crop_or_pad(label, self.size, fill=0.0)
            self._cache[case] = (image, label)
        return self._cache[case]

    def _item_arrays(self, case: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self._volumes(case)
        return image[..., k], label[..., k]

    def volume_shape(self, case: str) -> tuple[int, int, int]:
        """The case's grid ``(X, Y, Z)``, on which :meth:`assemble` puts predictions."""
        return self._geometry[case].shape

    def spacing(self, case: str) -> tuple[float, float, float]:
        """Voxel size (mm) of :meth:`volume_shape`'s axes."""
        return self._geometry[case].spacing

    def assemble(self, case: str, slices, *, fill: float = 0.0) -> np.ndarray:
        """Slice predictions of ``case`` (``{k: (H, W)}`` or all slices in order) as a volume
        on its original grid: :func:`assemble_volume` with the case's shape."""
        return assemble_volume(slices, self.volume_shape(case), fill=fill)


class VolumeDataset(_CaseDataset):
    """Whole volumes of the cases of a dataset, one item per case (the authors' 3D samples).

    Item ``i`` is ``{"image": float32 (C, D, H, W), "label": float32 (1, D, H, W) of 0/1,
    "case": str, "index": 0, "spacing": float32 (3,)}``: the NIfTI volume ``(X, Y, Z)``
    read as ``(D, H, W) = (Z, X, Y)`` (slices first, as the slices of :class:`SliceDataset`),
    ``spacing`` the voxel size in mm along ``(D, H, W)`` on the item's grid. Channels are
    normalised as in :class:`SliceDataset`.

    Args:
        root, cases, oversample_lesions, seed, percentiles: as :class:`SliceDataset`
            (oversampling draws lesion-bearing volumes).
        size: ``(D, H, W)`` of every item, or ``None`` for each case's own shape.
        resize: how ``size`` is reached. ``False``: centre crop or pad (background fill, as
            :class:`SliceDataset`), evaluated on the case's original grid. ``True``: the
            authors' preprocessing, image by :func:`resize_area` and label by
            :func:`resize_label` (area resampling, then ``!= 0``), evaluated on that resized
            grid with its voxel size, as they evaluate.
        augment: ``False``, ``True`` (default :class:`VolumeAugmentation`) or an augmentation.

    The evaluation grid (:meth:`volume_shape`, :meth:`spacing`, :meth:`case_label`,
    :meth:`assemble`) is in NIfTI order ``(X, Y, Z)``, as :class:`SliceDataset`'s.
    """

    _default_augmentation = VolumeAugmentation

    def __init__(
        self,
        root: str | os.PathLike,
        cases: Sequence[str] | None = None,
        *,
        size: tuple[int, int, int] | None = None,
        resize: bool = False,
        augment: bool | VolumeAugmentation = False,
        oversample_lesions: float = 0.0,
        seed: int = 0,
        percentiles: tuple[float, float] = (0.5, 99.5),
    ) -> None:
        self.size = _positive_size(size, 3, "(D, H, W)")
        if resize and self.size is None:
            raise ValueError("resize=True needs size=(D, H, W) to resize to")
        self.resize = bool(resize)
        super().__init__(
            root, cases, augment=augment, oversample_lesions=oversample_lesions, seed=seed, percentiles=percentiles
        )
        if self.size is not None:
            self._check_cache_fits(self.size, f"volumes of {' x '.join(map(str, self.size))}")
        self.items = [(case, 0) for case in self.cases]
        self._grid = {case: self._evaluation_grid(case) for case in self.cases}
        self._item_spacing = {case: tuple(np.array(spacing)[[2, 0, 1]]) for case, (_, spacing) in self._grid.items()}

    def _evaluation_grid(self, case: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
        """Shape and spacing ``(X, Y, Z)`` of the grid a case is scored on: its own, or the
        resized one (the same extent in mm: ``spacing * shape / size`` per axis)."""
        geometry = self._geometry[case]
        if not self.resize:
            return geometry.shape, geometry.spacing
        shape = tuple(self.size[axis] for axis in (1, 2, 0))
        spacing = tuple(s * n / m for s, n, m in zip(geometry.spacing, geometry.shape, shape))
        return shape, spacing

    def _volumes(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image ``(C, D, H, W)`` and label ``(1, D, H, W)`` of the item, cached."""
        if case not in self._cache:
            loaded = load_case(self.root, case)
            image = np.moveaxis(normalise_channels(loaded.image, self.percentiles), 3, 1)
            label = np.moveaxis(loaded.label, 2, 0)[None].astype(np.float32)
            if self.resize:
                image, label = resize_area(image, self.size), resize_label(label[0], self.size)[None]
                evaluated = np.moveaxis(label[0], 0, 2).astype(np.uint8)
            else:
                evaluated = loaded.label
                if self.size is not None:
                    background = image.reshape(image.shape[0], -1).min(axis=1)
                    image = centre_crop_or_pad(image, self.size, fill=background)
                    label = centre_crop_or_pad(label, self.size, fill=0.0)
            evaluated.flags.writeable = False
            self._labels[case] = evaluated
            self._cache[case] = (np.ascontiguousarray(image), np.ascontiguousarray(label, dtype=np.float32))
        return self._cache[case]

    def _item_arrays(self, case: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._volumes(case)

    def volume_shape(self, case: str) -> tuple[int, int, int]:
        """The evaluation grid ``(X, Y, Z)``: the case's own, or the resized one."""
        return self._grid[case][0]

    def spacing(self, case: str) -> tuple[float, float, float]:
        """Voxel size (mm) of :meth:`volume_shape`'s axes."""
        return self._grid[case][1]

    def assemble(self, case: str, parts: Mapping[int, np.ndarray] | np.ndarray, *, fill: float = 0.0) -> np.ndarray:
        """A prediction of ``case`` on the item's grid (``(D, H, W)`` or ``(1, D, H, W)``, or
        ``{0: that}`` as :func:`afl_core.evaluate.predict_cases` collects it) on the
        evaluation grid ``(X, Y, Z)``: axes back in NIfTI order, then the centre crop/pad
        undone (the cropped-away border gets ``fill``)."""
        volume = np.asarray(parts[0] if isinstance(parts, Mapping) else parts)
        volume = volume.reshape(volume.shape[-3:])
        volume = np.moveaxis(volume, 0, 2)
        if self.resize or self.size is None:
            return np.ascontiguousarray(volume)
        return centre_crop_or_pad(volume[None], self.volume_shape(case), fill=fill)[0]
