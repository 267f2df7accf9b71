"""What a dataset holds before any training: its cases and lesions, and the ``alpha`` and
``gamma`` each A-FL variant would give the items a network is trained on (notebook 07).

* :func:`lesion_tables`: one row per case (grid, voxel size, lesion count, foreground
  fraction) and one per lesion (voxels, ml, equivalent diameter, outline irregularity).
* :func:`parameter_table`: per item of a :class:`~afl_core.data.SliceDataset` (2D slices
  as training sees them, padding included) or :class:`~afl_core.data.VolumeDataset`
  (whole volumes, the authors' 3D setting), each variant's ``alpha`` and ``gamma``.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from afl_core.data import SliceDataset, VolumeDataset, list_cases, load_case
from afl_core.losses import VARIANTS, adaptive_parameters
from afl_core.shape import lesion_shapes

__all__ = ["lesion_tables", "parameter_table"]


def lesion_tables(root: str | os.PathLike, cases: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cases of a dataset and their lesions, in the case's own voxel size.

    A lesion is a connected component of the label (26-connected, as
    :func:`afl_core.shape.lesion_shapes` and the lesion-wise metrics), measured by
    :func:`~afl_core.shape.lesion_shapes` with the case's spacing.

    Args:
        root: a dataset folder of the common layout (:mod:`afl_core.data.layout`).
        cases: the case ids to read (default: all).

    Returns:
        ``(cases, lesions)``. ``cases`` has one row per case: ``case``, ``shape``
        (X, Y, Z), ``spacing_mm`` (X, Y, Z), ``lesions``, ``lesion_voxels``, ``lesion_ml``,
        ``foreground_fraction`` (lesion voxels over all voxels), ``lesion_slices`` (slices
        along Z holding lesion) and ``slices``. ``lesions`` has one row per lesion, largest
        first within a case: ``case``, ``lesion`` (1, 2, ...), ``voxels``, ``volume_ml``,
        ``diameter_mm`` (of the ball of the same volume) and ``irregularity`` (surface over
        that ball's; about 1 for a ball).

    Raises:
        ValueError: unknown case ids, or a case that does not read (the message names it).
    """
    chosen = list_cases(root) if cases is None else list(cases)
    unknown = sorted(set(chosen) - set(list_cases(root)))
    if unknown:
        raise ValueError(f"cases {unknown[:5]} are not in {root}; see afl_core.data.list_cases(root)")
    case_rows, lesion_rows = [], []
    for case in chosen:
        loaded = load_case(root, case)
        label, spacing = loaded.label > 0, tuple(float(s) for s in loaded.spacing)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        shapes = lesion_shapes(torch.from_numpy(label)[None, None], spacing)[0]
        for index, (size, diameter, irregularity) in enumerate(zip(*shapes), start=1):
            lesion_rows.append(
                {
                    "case": case,
                    "lesion": index,
                    "voxels": int(round(size / 1000.0 / voxel_ml)),
                    "volume_ml": size / 1000.0,
                    "diameter_mm": float(diameter),
                    "irregularity": float(irregularity),
                }
            )
        case_rows.append(
            {
                "case": case,
                "shape": tuple(label.shape),
                "spacing_mm": spacing,
                "lesions": len(shapes.size),
                "lesion_voxels": int(label.sum()),
                "lesion_ml": float(label.sum()) * voxel_ml,
                "foreground_fraction": float(label.mean()),
                "lesion_slices": int(label.any(axis=(0, 1)).sum()),
                "slices": label.shape[2],
            }
        )
    lesion_columns = ["case", "lesion", "voxels", "volume_ml", "diameter_mm", "irregularity"]
    return pd.DataFrame(case_rows), pd.DataFrame(lesion_rows, columns=lesion_columns)


def parameter_table(
    dataset: SliceDataset | VolumeDataset,
    variants: Sequence[str] = ("paper", "scale_aware"),
    *,
    lesion_only: bool = True,
) -> pd.DataFrame:
    """The ``alpha`` and ``gamma`` of each A-FL variant on every item of ``dataset``.

    The items are what a network trains on: 2D slices padded to the training size for a
    :class:`~afl_core.data.SliceDataset` (the paper's terms count the padding, the
    scale-aware variant does not), whole volumes for a
    :class:`~afl_core.data.VolumeDataset`; each with its own voxel size (``spacing``). Build
    the dataset with ``augment=False`` to see the stored items.

    Args:
        dataset: the items to measure.
        variants: names in :data:`afl_core.losses.VARIANTS` whose parameters are per item
            (``per_sample``); ``"reference"`` computes one value per batch and has none.
        lesion_only: keep only the items holding lesion voxels.

    Returns:
        One row per item: ``case``, ``index`` (the slice, or 0 for a volume),
        ``lesion_voxels``, ``foreground_fraction`` (of the item's canvas), then
        ``alpha_<variant>`` and ``gamma_<variant>`` per variant.

    Raises:
        ValueError: an unknown variant, or one without per-item parameters.
    """
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown A-FL variant {variant!r}; choose from {tuple(VARIANTS)}")
        if not VARIANTS[variant].per_sample:
            raise ValueError(
                f"variant {variant!r} computes its alpha and gamma over a whole batch, not per item; "
                f"choose from {[name for name, spec in VARIANTS.items() if spec.per_sample]}"
            )
    tables = []
    for case in dataset.cases:
        items = [dataset[i] for i in dataset.case_items(case)]
        if lesion_only:
            items = [item for item in items if item["label"].any()]
        if not items:
            continue
        labels = torch.stack([item["label"] for item in items])
        spacing = torch.stack([item["spacing"] for item in items])
        table = pd.DataFrame(
            {
                "case": case,
                "index": [int(item["index"]) for item in items],
                "lesion_voxels": labels.flatten(1).sum(1).long().numpy(),
                "foreground_fraction": labels.flatten(1).double().mean(1).numpy(),
            }
        )
        for variant in variants:
            alpha, gamma = adaptive_parameters(labels, variant=variant, spacing=spacing)
            table[f"alpha_{variant}"], table[f"gamma_{variant}"] = alpha.numpy(), gamma.numpy()
        tables.append(table)
    columns = ["case", "index", "lesion_voxels", "foreground_fraction"]
    columns += [f"{name}_{variant}" for variant in variants for name in ("alpha", "gamma")]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
