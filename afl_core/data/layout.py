"""The on-disk layout of every dataset: paths, writing, reading and checking cases (no torch).

The layout is nnU-Net v2 "raw" style::

    <root>/dataset.json
    <root>/imagesTr/<case>_0000.nii.gz   one file per channel (modality), 4-digit index
    <root>/imagesTr/<case>_0001.nii.gz
    <root>/labelsTr/<case>.nii.gz        binary lesion mask, uint8 {0, 1}

Every array is stored in NIfTI axis order ``(X, Y, Z)`` and **the third axis is the slice
axis**: a 2D slice ``k`` is ``volume[:, :, k]``, shaped ``(H, W) = (X, Y)``, and a volume
read as a 3D sample is ``(D, H, W) = (Z, X, Y)``. All channels and the label of a case
share one grid (shape and affine). ``dataset.json`` holds the four nnU-Net keys
(``channel_names``, ``labels``, ``numTraining``, ``file_ending``) plus whatever this
project records (``source``, ``licence``, ``spacing``, ``label_mapping``, ...); a file
with only the four nnU-Net keys is read as well (each case's spacing always comes from its
NIfTI header).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import nibabel as nib
import numpy as np

from afl_core._io import atomic_target, atomic_write, read_json

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
]

FILE_ENDING = ".nii.gz"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
DATASET_JSON = "dataset.json"
NNUNET_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
BINARY_LABELS = {"background": 0, "lesion": 1}
# gzip level 1 (nibabel's default): MR intensities are noisy, so higher levels save ~2 %
# of the size at 3-4 times the time.
_GZIP_LEVEL = 1
# How far the affines of one case's files may differ (mm) and still be "the same grid".
AFFINE_ATOL = 1e-3
_CONVERT_HINT = (
    "convert the dataset with `python -m data_download` (it maps labels to 0/1) "
    "or binarise the label yourself (e.g. label > 0) before writing it"
)


# --------------------------------------------------------------------------- paths


def channel_path(root: str | os.PathLike, case_id: str, channel: int) -> Path:
    """``<root>/imagesTr/<case>_<cccc>.nii.gz``."""
    return Path(root) / IMAGES_DIR / f"{case_id}_{channel:04d}{FILE_ENDING}"


def label_path(root: str | os.PathLike, case_id: str) -> Path:
    """``<root>/labelsTr/<case>.nii.gz``."""
    return Path(root) / LABELS_DIR / f"{case_id}{FILE_ENDING}"


# --------------------------------------------------------------------------- writing


def check_case_id(case_id: str) -> None:
    if not isinstance(case_id, str) or not case_id or case_id.startswith("."):
        raise ValueError(f"case_id must be a non-empty string not starting with '.', got {case_id!r}")
    if any(c in case_id for c in "/\\") or case_id.endswith(FILE_ENDING):
        raise ValueError(f"case_id {case_id!r} must be a bare name (no path separators, no file ending)")


def _storage_dtype(array: np.ndarray, what: str) -> np.ndarray:
    """Keep small integer types (MRI is usually int16); other types become int32 or float32
    (nibabel refuses int64 without being told)."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype.itemsize <= 2:
            return array
        info = np.iinfo(np.int32)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            return array.astype(np.int32)
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what} contains NaN or infinite values; replace them before writing")
        return array.astype(np.float32)
    raise TypeError(f"{what} must hold numbers, got dtype {array.dtype}")


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write a gzipped NIfTI-1 file atomically. The gzip header carries no time stamp or
    temporary name, so the same array and affine always give the same bytes."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    payload = gzip.compress(image.to_bytes(), compresslevel=_GZIP_LEVEL, mtime=0)
    with atomic_target(path) as tmp:
        tmp.write_bytes(payload)


_NIFTI_HEADER_BYTES = 352  # a NIfTI-1 file's header and extension flag, before the voxels


def damaged_files(paths: Iterable[Path]) -> list[Path]:
    """The files among ``paths`` (written by :func:`write_case`) that are cut short or
    unreadable, found without reading the voxels: each header must read, and as
    :func:`_save_nifti` writes one gzip stream, the length gzip records in a file's last four
    bytes (modulo 2**32) must be the header's (352 bytes) plus the voxels' bytes."""
    damaged = []
    for path in paths:
        try:
            header = nib.load(path).header
            voxels = math.prod(header.get_data_shape()) * header.get_data_dtype().itemsize
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                recorded = int.from_bytes(fh.read(4), "little")
            intact = recorded == (max(int(header["vox_offset"]), _NIFTI_HEADER_BYTES) + voxels) % 2**32
        except READ_ERRORS:  # a damaged file's, whichever
            intact = False
        if not intact:
            damaged.append(path)
    return damaged


def _check_binary(values: np.ndarray, where: str) -> None:
    if not set(values.tolist()) <= {0, 1}:
        shown = ", ".join(f"{v:g}" for v in values[:12]) + (", ..." if len(values) > 12 else "")
        raise ValueError(f"{where} must be binary 0/1 but holds the values {{{shown}}}; {_CONVERT_HINT}")


def write_case(
    root: str | os.PathLike,
    case_id: str,
    channels: Sequence[np.ndarray],
    label: np.ndarray,
    affine: np.ndarray,
) -> None:
    """Write one case of the layout: ``imagesTr/<case>_<cccc>.nii.gz`` per channel and
    ``labelsTr/<case>.nii.gz``.

    ``channels`` are 3D arrays in NIfTI axis order with the slice axis third, all of the
    label's shape; ``label`` holds only 0 and 1 (stored as uint8); ``affine`` is the 4x4
    voxel-to-world (RAS, mm) matrix shared by all of them. Each file is written atomically
    and the label last, so a case interrupted half-way is not listed by :func:`list_cases`.
    Integer channels keep their type when it has at most 16 bits, floats are stored as
    float32.
    """
    check_case_id(case_id)
    if isinstance(channels, np.ndarray) and channels.ndim == 3:
        raise TypeError("channels must be a sequence of 3D arrays (one per channel); wrap a single volume in a list")
    channels = [np.asarray(c) for c in channels]
    if not channels:
        raise ValueError(f"case {case_id!r}: at least one channel is needed")
    label = np.asarray(label)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"case {case_id!r}: affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"case {case_id!r}: affine is singular (a zero voxel size?)")
    if label.ndim != 3:
        raise ValueError(f"case {case_id!r}: label must be 3D (X, Y, slices), got shape {label.shape}")
    for index, channel in enumerate(channels):
        if channel.shape != label.shape:
            raise ValueError(
                f"case {case_id!r}: channel {index} has shape {channel.shape} but the label has "
                f"{label.shape}; resample every channel onto the label's grid first"
            )
    _check_binary(np.unique(label), f"case {case_id!r}: the label")
    stored = [_storage_dtype(c, f"case {case_id!r}: channel {i}") for i, c in enumerate(channels)]
    for index, channel in enumerate(stored):
        _save_nifti(channel_path(root, case_id, index), channel, affine)
    _save_nifti(label_path(root, case_id), label.astype(np.uint8), affine)


def write_dataset_json(
    root: str | os.PathLike,
    *,
    channel_names: Sequence[str],
    num_training: int | None = None,
    **extra,
) -> Path:
    """Write ``<root>/dataset.json`` atomically and return its path.

    The nnU-Net keys are ``channel_names`` (``{"0": name, ...}``), ``labels``
    (``{"background": 0, "lesion": 1}``), ``numTraining`` (the number of cases in
    ``labelsTr`` when ``num_training`` is None) and ``file_ending`` (``".nii.gz"``).
    ``extra`` adds JSON-serialisable keys (``source``, ``licence``, ``spacing``,
    ``label_mapping``, ...); it may not redefine the nnU-Net keys.
    """
    if isinstance(channel_names, str) or not channel_names:
        raise ValueError("channel_names must be a non-empty sequence of names, e.g. ['T2W', 'ADC', 'HBV']")
    clash = sorted(set(extra) & set(NNUNET_KEYS) | ({"num_training"} & set(extra)))
    if clash:
        raise ValueError(f"write_dataset_json sets {clash} itself; pass channel_names= / num_training= instead")
    root = Path(root)
    if num_training is None:
        num_training = len(list_cases(root, require_json=False))
    content = {
        "channel_names": {str(i): str(name) for i, name in enumerate(channel_names)},
        "labels": dict(BINARY_LABELS),
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
        **extra,
    }
    text = json.dumps(content, indent=2, sort_keys=False) + "\n"
    path = root / DATASET_JSON
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


# --------------------------------------------------------------------------- reading


def _check_layout(root: Path, *, require_json: bool = True) -> None:
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset folder {root} does not exist; create it with afl_core.synthetic.make_dataset "
            "or `python -m data_download ... --dest DIR`"
        )
    missing = [name for name in (IMAGES_DIR, LABELS_DIR) if not (root / name).is_dir()]
    if require_json and not (root / DATASET_JSON).is_file():
        missing.append(DATASET_JSON)
    if missing:
        raise FileNotFoundError(
            f"{root} is not a dataset of the nnU-Net raw layout: {', '.join(missing)} missing "
            f"(expected {IMAGES_DIR}/<case>_0000{FILE_ENDING}, {LABELS_DIR}/<case>{FILE_ENDING} and "
            f"{DATASET_JSON}); write it with afl_core.data.write_case / write_dataset_json"
        )


def read_dataset_json(root: str | os.PathLike) -> dict:
    """Read and check ``<root>/dataset.json``. Only the four nnU-Net keys are required."""
    path = Path(root) / DATASET_JSON
    content = read_json(path, hint="write it again with afl_core.data.write_dataset_json (or re-run the download)")
    missing = [key for key in NNUNET_KEYS if key not in content]
    if missing:
        raise ValueError(f"{path} lacks the nnU-Net keys {missing}; write it again with write_dataset_json")
    if content["file_ending"] != FILE_ENDING:
        raise ValueError(f"{path}: file_ending {content['file_ending']!r} is not supported, only {FILE_ENDING!r}")
    names = content["channel_names"]
    if not isinstance(names, dict) or not names or sorted(names) != sorted(str(i) for i in range(len(names))):
        raise ValueError(f"{path}: channel_names must map '0', '1', ... to names, got {names!r}")
    return content


def list_cases(root: str | os.PathLike, *, require_json: bool = True) -> list[str]:
    """Sorted case ids of a dataset: the labels in ``labelsTr`` (hidden temporary files,
    left by an interrupted write, are skipped). In a finished dataset (``require_json``) an
    image in ``imagesTr`` without a label is an error rather than a case silently left out;
    while a dataset is written, a case whose label is not written yet is simply not listed."""
    root = Path(root)
    _check_layout(root, require_json=require_json)
    labelled = set(_stems(root / LABELS_DIR, FILE_ENDING))
    unlabelled = sorted(set(_stems(root / IMAGES_DIR, f"_0000{FILE_ENDING}")) - labelled) if require_json else []
    if unlabelled:
        raise ValueError(
            f"{root / IMAGES_DIR} holds {len(unlabelled)} case(s) without a label in {LABELS_DIR} "
            f"({', '.join(unlabelled[:5])}{', ...' if len(unlabelled) > 5 else ''}): add their labels, or move "
            "cases without labels out of imagesTr (e.g. to imagesTs)"
        )
    return sorted(labelled)


def _stems(folder: Path, ending: str) -> Iterator[str]:
    """The names in ``folder`` that end with ``ending``, without it (hidden files skipped)."""
    return (p.name[: -len(ending)] for p in folder.iterdir() if p.name.endswith(ending) and not p.name.startswith("."))


@dataclass(frozen=True)
class CaseGeometry:
    """Where a case's voxels lie: ``shape`` ``(X, Y, Z)``, ``spacing`` in mm, ``affine``."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray


@dataclass(frozen=True)
class Case:
    """One case read from the layout.

    ``image`` is float32 ``(C, X, Y, Z)``, ``label`` uint8 ``(X, Y, Z)`` with values 0/1,
    ``affine`` the 4x4 voxel-to-world matrix, ``spacing`` the voxel size in mm.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]


# Errors that nibabel, gzip and zlib raise on truncated or corrupt files.
READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)


def _open_nifti(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected file {path} is missing")
    try:
        return nib.load(path)
    except READ_ERRORS as err:
        raise ValueError(
            f"cannot read {path} ({type(err).__name__}: {err}); the file is corrupt: write or download it again"
        ) from err


#: gzip cannot shrink data more than about 1032 to 1: a header that claims more is lying
_MAX_GZIP_RATIO = 1100


def _check_claimed_size(path: Path, image: nib.Nifti1Image) -> None:
    """Refuse a header whose voxel count cannot fit in the file, before a single voxel is
    read (a forged header could otherwise ask for a terabyte of memory)."""
    claimed = int(np.prod(image.shape, dtype=np.float64)) * image.get_data_dtype().itemsize
    available = path.stat().st_size
    limit = available * _MAX_GZIP_RATIO if path.name.endswith(".gz") else available
    if claimed > limit:
        raise ValueError(
            f"{path}: its header claims {image.shape} voxels ({claimed / 2**30:.3g} GiB), more than "
            f"a {available / 2**20:.3g} MiB file can hold; the file is truncated or forged: write or "
            "download it again"
        )


def read_nifti(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Array (3D), affine and spacing of one NIfTI file, with errors that name the file."""
    image = _open_nifti(path, what)
    _check_claimed_size(path, image)
    try:
        data = np.asanyarray(image.dataobj)
    except READ_ERRORS as err:
        raise ValueError(
            f"cannot read the voxels of {path} ({type(err).__name__}: {err}); the file is truncated "
            "or corrupt: write or download it again"
        ) from err
    # A 4D file with a single volume (X, Y, Z, 1) is accepted as 3D.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path} holds a {data.ndim}D array {data.shape}; each file must be one 3D volume")
    spacing = _checked_spacing(path, image)
    return data, image.affine, spacing


def check_geometry(
    path: str | os.PathLike, spacing: Sequence[float], affine: np.ndarray, *, header: str = "pixdim, qform/sform"
) -> tuple[float, ...]:
    """A file's voxel size (mm), refused unless it and the voxel-to-world matrix ``affine``
    are finite and the voxel size positive: a damaged header would otherwise pass for
    another grid, or give NaN distances.

    Args:
        path: the file, named in the message.
        spacing: the voxel size its header gives, one value per spatial axis.
        affine: its 4x4 voxel-to-world matrix.
        header: the header fields to repair, named in the message (NIfTI's by default).

    Returns:
        ``spacing`` as a tuple of floats.

    Raises:
        ValueError: a voxel size not positive or not finite, or an affine not finite.
    """
    spacing = tuple(float(z) for z in spacing)
    finite_affine = bool(np.all(np.isfinite(affine)))
    if not all(np.isfinite(spacing)) or min(spacing) <= 0 or not finite_affine:
        raise ValueError(
            f"{path}: its header gives the voxel size {spacing} mm and a voxel-to-world matrix that is "
            f"{'finite' if finite_affine else 'not finite'}; a voxel size must be positive "
            f"and finite: repair the header ({header}) or re-convert the case"
        )
    return spacing


def _checked_spacing(path: Path, image: nib.Nifti1Image) -> tuple[float, float, float]:
    """The voxel size (mm) in a NIfTI ``image``'s header, checked by :func:`check_geometry`."""
    return check_geometry(path, image.header.get_zooms()[:3], image.affine)


def _check_same_grid(path: Path, shape, affine, ref_path: Path, ref_shape, ref_affine) -> None:
    if tuple(shape) != tuple(ref_shape):
        raise ValueError(
            f"{path} has shape {tuple(shape)} but {ref_path} has {tuple(ref_shape)}: image and label "
            "must share one grid; resample the image onto the label's grid (or re-convert the case)"
        )
    if not np.allclose(affine, ref_affine, atol=AFFINE_ATOL):
        raise ValueError(
            f"{path} and {ref_path} have different affines (voxel-to-world matrices):\n{affine}\nvs\n{ref_affine}\n"
            "image and label must share one grid; resample one onto the other (or re-convert the case)"
        )


def channel_names(root: Path) -> list[str]:
    names = read_dataset_json(root)["channel_names"]
    return [names[str(i)] for i in range(len(names))]


def load_geometry(root: str | os.PathLike, case_id: str) -> CaseGeometry:
    """Shape, spacing and affine of a case from its label's header (no voxels decoded)."""
    path = label_path(root, case_id)
    image = _open_nifti(path, f"label of case {case_id!r}")
    shape = tuple(int(n) for n in image.shape[:3])
    if len(image.shape) < 3 or any(n != 1 for n in image.shape[3:]):
        raise ValueError(f"{path} has shape {image.shape}; each file must be one 3D volume")
    return CaseGeometry(shape, _checked_spacing(path, image), image.affine)


def _read_label(root: Path, case_id: str):
    path = label_path(root, case_id)
    data, affine, spacing = read_nifti(path, f"label of case {case_id!r}")
    _check_binary(np.unique(data), f"label {path}")
    return path, data.astype(np.uint8), affine, spacing


def case_has_lesion(root: str | os.PathLike, case_id: str) -> bool:
    """Whether a case's label holds any lesion voxel (reads only the label)."""
    return bool(_read_label(Path(root), case_id)[1].any())


def load_case(root: str | os.PathLike, case_id: str) -> Case:
    """Read one case, checking it: every channel present and readable, image and label on
    one grid (shape and affine), a binary label, finite intensities."""
    root = Path(root)
    names = channel_names(root)
    lpath, label, affine, spacing = _read_label(root, case_id)
    channels = []
    for index, name in enumerate(names):
        path = channel_path(root, case_id, index)
        data, channel_affine, _ = read_nifti(path, f"channel {index} ({name!r}) of case {case_id!r}")
        _check_same_grid(path, data.shape, channel_affine, lpath, label.shape, affine)
        data = data.astype(np.float32)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{path} contains NaN or infinite values; repair or re-convert the case")
        channels.append(data)
    return Case(case_id, np.stack(channels), label, affine, spacing)
