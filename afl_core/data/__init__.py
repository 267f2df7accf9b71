"""Data: one on-disk layout for every dataset, and the datasets the networks train on.

* :mod:`afl_core.data.layout`: the nnU-Net "raw" layout (``imagesTr/<case>_0000.nii.gz``,
  ``labelsTr/<case>.nii.gz``, ``dataset.json``): writing, reading and checking cases. NIfTI
  axes are ``(X, Y, Z)``, the third is the slice axis.
* :mod:`afl_core.data.splits`: training / validation splits (lesion-stratified, per patient).
* :mod:`afl_core.data.transforms`: normalisation, centre crop/pad, the authors' area resize,
  the way back to a case's grid, augmentation.
* :mod:`afl_core.data.datasets`: :class:`SliceDataset` (2D slices, the teaching path) and
  :class:`VolumeDataset` (whole volumes ``(D, H, W) = (Z, X, Y)``, the authors' path).

Every public name is importable from ``afl_core.data``. The layout and the splits need no
torch, so ``from afl_core.data import write_case`` (the downloaders) does not import it: the
transforms and datasets are imported on first use.
"""

from __future__ import annotations

import importlib

from afl_core.data.layout import (
    READ_ERRORS,  # noqa: F401  (data_download's converters reuse the read-error tuple)
    DATASET_JSON,
    FILE_ENDING,
    IMAGES_DIR,
    LABELS_DIR,
    Case,
    CaseGeometry,
    case_has_lesion,
    channel_path,
    check_geometry,
    damaged_files,
    label_path,
    list_cases,
    load_case,
    load_geometry,
    read_dataset_json,
    write_case,
    write_dataset_json,
)
from afl_core.data.splits import kfold_cases, patient_grouping, split_cases

_LAZY = {
    "normalise_channels": "transforms",
    "centre_crop_or_pad": "transforms",
    "assemble_volume": "transforms",
    "resize_area": "transforms",
    "resize_label": "transforms",
    "Augmentation": "transforms",
    "VolumeAugmentation": "transforms",
    "SliceDataset": "datasets",
    "VolumeDataset": "datasets",
}

__all__ = [
    "FILE_ENDING",
    "IMAGES_DIR",
    "LABELS_DIR",
    "DATASET_JSON",
    "Case",
    "CaseGeometry",
    "write_case",
    "write_dataset_json",
    "read_dataset_json",
    "list_cases",
    "channel_path",
    "label_path",
    "load_case",
    "load_geometry",
    "case_has_lesion",
    "check_geometry",
    "damaged_files",
    "split_cases",
    "kfold_cases",
    "patient_grouping",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"afl_core.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'afl_core.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
