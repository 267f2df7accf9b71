"""One on-disk layout for every dataset, and 2D slice datasets read from it.

The layout is nnU-Net v2 "raw" style::

    <root>/dataset.json
    <root>/imagesTr/<case>_0000.nii.gz   one file per channel (modality), 4-digit index
    <root>/imagesTr/<case>_0001.nii.gz
    <root>/labelsTr/<case>.nii.gz        binary lesion mask, uint8 {0, 1}

Every array is stored in NIfTI axis order ``(X, Y, Z)`` and **the third axis is the slice
axis**: a 2D slice ``k`` is ``volume[:, :, k]``, shaped ``(H, W) = (X, Y)``. All channels and
the label of a case share one grid (shape and affine). ``dataset.json`` holds the four
nnU-Net keys (``channel_names``, ``labels``, ``numTraining``, ``file_ending``) plus whatever
this project records (``source``, ``licence``, ``spacing``, ``label_mapping``, ...); a file
with only the four nnU-Net keys is read as well (each case's spacing always comes from its
NIfTI header).

Training works on 2D slices (:class:`SliceDataset`), evaluation on volumes
(:func:`assemble_volume` puts slice predictions back on the case's grid).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, RandomSampler, Sampler, WeightedRandomSampler

from afl_core._io import atomic_target, atomic_write

__all__ = [
    "FILE_ENDING",
    "IMAGES_DIR",
    "LABELS_DIR",
    "Case",
    "CaseGeometry",
    "Augmentation",
    "write_case",
    "write_dataset_json",
    "read_dataset_json",
    "list_cases",
    "channel_path",
    "label_path",
    "load_case",
    "load_geometry",
    "case_has_lesion",
    "normalise_channels",
    "split_cases",
    "centre_crop_or_pad",
    "assemble_volume",
    "SliceDataset",
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
_AFFINE_ATOL = 1e-3
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


def _check_case_id(case_id: str) -> None:
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
    _check_case_id(case_id)
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
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write it with afl_core.data.write_dataset_json")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); write it again with write_dataset_json") from err
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object")
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
    left by an interrupted write, are skipped)."""
    root = Path(root)
    _check_layout(root, require_json=require_json)
    return sorted(
        p.name[: -len(FILE_ENDING)]
        for p in (root / LABELS_DIR).iterdir()
        if p.name.endswith(FILE_ENDING) and not p.name.startswith(".")
    )


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
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)


def _open_nifti(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected file {path} is missing")
    try:
        return nib.load(path)
    except _READ_ERRORS as err:
        raise ValueError(
            f"cannot read {path} ({type(err).__name__}: {err}); the file is corrupt: write or download it again"
        ) from err


def _read_nifti(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Array (3D), affine and spacing of one NIfTI file, with errors that name the file."""
    image = _open_nifti(path, what)
    try:
        data = np.asanyarray(image.dataobj)
    except _READ_ERRORS as err:
        raise ValueError(
            f"cannot read the voxels of {path} ({type(err).__name__}: {err}); the file is truncated "
            "or corrupt: write or download it again"
        ) from err
    # A 4D file with a single volume (X, Y, Z, 1) is accepted as 3D.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path} holds a {data.ndim}D array {data.shape}; each file must be one 3D volume")
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    return data, image.affine, spacing


def _check_same_grid(path: Path, shape, affine, ref_path: Path, ref_shape, ref_affine) -> None:
    if tuple(shape) != tuple(ref_shape):
        raise ValueError(
            f"{path} has shape {tuple(shape)} but {ref_path} has {tuple(ref_shape)}: image and label "
            "must share one grid; resample the image onto the label's grid (or re-convert the case)"
        )
    if not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
        raise ValueError(
            f"{path} and {ref_path} have different affines (voxel-to-world matrices):\n{affine}\nvs\n{ref_affine}\n"
            "image and label must share one grid; resample one onto the other (or re-convert the case)"
        )


def _channel_names(root: Path) -> list[str]:
    names = read_dataset_json(root)["channel_names"]
    return [names[str(i)] for i in range(len(names))]


def load_geometry(root: str | os.PathLike, case_id: str) -> CaseGeometry:
    """Shape, spacing and affine of a case from its label's header (no voxels decoded)."""
    path = label_path(root, case_id)
    image = _open_nifti(path, f"label of case {case_id!r}")
    shape = tuple(int(n) for n in image.shape[:3])
    if len(image.shape) < 3 or any(n != 1 for n in image.shape[3:]):
        raise ValueError(f"{path} has shape {image.shape}; each file must be one 3D volume")
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    return CaseGeometry(shape, spacing, image.affine)


def _read_label(root: Path, case_id: str):
    path = label_path(root, case_id)
    data, affine, spacing = _read_nifti(path, f"label of case {case_id!r}")
    _check_binary(np.unique(data), f"label {path}")
    return path, data.astype(np.uint8), affine, spacing


def case_has_lesion(root: str | os.PathLike, case_id: str) -> bool:
    """Whether a case's label holds any lesion voxel (reads only the label)."""
    return bool(_read_label(Path(root), case_id)[1].any())


def load_case(root: str | os.PathLike, case_id: str) -> Case:
    """Read one case, checking it: every channel present and readable, image and label on
    one grid (shape and affine), a binary label, finite intensities."""
    root = Path(root)
    names = _channel_names(root)
    lpath, label, affine, spacing = _read_label(root, case_id)
    channels = []
    for index, name in enumerate(names):
        path = channel_path(root, case_id, index)
        data, channel_affine, _ = _read_nifti(path, f"channel {index} ({name!r}) of case {case_id!r}")
        _check_same_grid(path, data.shape, channel_affine, lpath, label.shape, affine)
        data = data.astype(np.float32)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{path} contains NaN or infinite values; repair or re-convert the case")
        channels.append(data)
    return Case(case_id, np.stack(channels), label, affine, spacing)


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


# --------------------------------------------------------------------------- splits


def split_cases(
    root_or_cases: str | os.PathLike | Iterable[str] | Mapping[str, bool],
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    group_of: Callable[[str], str] | None = None,
) -> tuple[list[str], list[str]]:
    """Split cases into training and validation sets; no case is on both sides.

    ``root_or_cases`` is a dataset folder (lesion-bearing cases are found from the labels),
    a mapping ``{case: has_lesion}``, or a plain list of case ids (no stratification).
    Lesion-bearing and lesion-free cases are split separately, each in proportion
    ``val_fraction`` (rounded), so both sides get lesion-bearing cases whenever there are
    at least two of them. The same arguments always give the same split.

    ``group_of`` maps a case id to its patient: the patients are split instead, so no
    patient is on both sides (PI-CAI has several studies of some patients; see
    :func:`patient_grouping`).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if isinstance(root_or_cases, (str, os.PathLike)):
        root = Path(root_or_cases)
        has_lesion = {case: case_has_lesion(root, case) for case in list_cases(root)}
    elif isinstance(root_or_cases, Mapping):
        has_lesion = {str(case): bool(flag) for case, flag in root_or_cases.items()}
    else:
        cases = [str(case) for case in root_or_cases]
        if len(set(cases)) != len(cases):
            raise ValueError("split_cases got duplicate case ids")
        has_lesion = dict.fromkeys(cases, False)
    if not has_lesion:
        raise ValueError("split_cases got no cases")
    if group_of is not None:
        groups: dict[str, list[str]] = {}
        for case in has_lesion:
            groups.setdefault(str(group_of(case)), []).append(case)
        train_groups, val_groups = split_cases(
            {group: any(has_lesion[c] for c in members) for group, members in groups.items()}, val_fraction, seed)
        return (sorted(c for g in train_groups for c in groups[g]), sorted(c for g in val_groups for c in groups[g]))
    rng = np.random.default_rng(seed)
    n_val_total = round(val_fraction * len(has_lesion))
    if val_fraction > 0 and len(has_lesion) >= 2:
        n_val_total = min(max(n_val_total, 1), len(has_lesion) - 1)
    positives = sorted(c for c, flag in has_lesion.items() if flag)
    negatives = sorted(c for c, flag in has_lesion.items() if not flag)
    n_val_pos = round(val_fraction * len(positives))
    if val_fraction > 0 and len(positives) >= 2:
        n_val_pos = min(max(n_val_pos, 1), len(positives) - 1)
    n_val_pos = min(n_val_pos, n_val_total)
    n_val_neg = min(max(n_val_total - n_val_pos, 0), len(negatives))
    val = [positives[i] for i in rng.permutation(len(positives))[:n_val_pos]]
    val += [negatives[i] for i in rng.permutation(len(negatives))[:n_val_neg]]
    train = sorted(set(has_lesion) - set(val))
    return train, sorted(val)


def patient_grouping(root: str | os.PathLike) -> Callable[[str], str] | None:
    """How a dataset's case ids name patients, for :func:`split_cases`: PI-CAI's
    ``<patient>_<study>`` gives the patient id; other sources have one case per patient."""
    if read_dataset_json(root).get("source") == "picai":
        return lambda case: case.split("_")[0]
    return None


# --------------------------------------------------------------------------- crop / pad


def _centre_window(length: int, target: int) -> tuple[slice, slice]:
    """Source and destination slices of a centre crop (``length >= target``) or a centre
    pad (``length < target``) of one axis; the odd voxel goes to the end."""
    if length >= target:
        start = (length - target) // 2
        return slice(start, start + target), slice(0, target)
    start = (target - length) // 2
    return slice(0, length), slice(start, start + length)


def centre_crop_or_pad(
    array: np.ndarray, size: tuple[int, int], fill: float | Sequence[float] = 0.0
) -> np.ndarray:
    """Centre-crop or pad the first two spatial axes of ``array`` ``(C, X, Y, ...)`` to
    ``size``; padding takes ``fill`` (a scalar or one value per channel)."""
    array = np.asarray(array)
    height, width = size
    rows_src, rows_dst = _centre_window(array.shape[1], height)
    cols_src, cols_dst = _centre_window(array.shape[2], width)
    out = np.empty((array.shape[0], height, width, *array.shape[3:]), dtype=array.dtype)
    out[...] = np.reshape(np.asarray(fill, dtype=array.dtype), (-1,) + (1,) * (array.ndim - 1))
    out[:, rows_dst, cols_dst] = array[:, rows_src, cols_src]
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


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation of one 2D item, drawn from ``(seed, epoch, index)``.

    * flips of each in-plane axis with probability ``flip_prob``;
    * with probability ``affine_prob`` an affine map: rotation ``U(-rotate_deg, rotate_deg)``,
      isotropic scale ``U(*scale)``, shift ``U(-translate, translate)`` of the image size per
      axis; the image is resampled bilinearly (edge values outside), the label bilinearly
      and thresholded at 0.5 so it stays binary;
    * per channel intensity ``gain * z + shift`` with ``gain ~ U(*gain)``, ``shift ~ U(-shift, shift)``
      (the image is z-scored, so these are in standard deviations).
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
        channels = image.shape[0]
        gain = torch.as_tensor(rng.uniform(*self.gain, size=channels), dtype=image.dtype)
        shift = torch.as_tensor(rng.uniform(-self.shift, self.shift, size=channels), dtype=image.dtype)
        image = image * gain[:, None, None] + shift[:, None, None]
        return image, label

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


# --------------------------------------------------------------------------- dataset


class SliceDataset(Dataset):
    """2D slices of the cases of a dataset, along the third NIfTI axis.

    Item ``i`` is ``{"image": float32 (C, H, W), "label": float32 (1, H, W) of 0/1,
    "case": str, "index": k}`` for slice ``k`` of a case (``volume[:, :, k]``, so ``H, W``
    are the first two NIfTI axes). Channels are normalised per case and channel with
    :func:`normalise_channels` (clip at the 0.5 / 99.5 percentiles, then z-score).

    Args:
        root: dataset folder of the layout described in this module.
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
        self.root = Path(root)
        available = list_cases(self.root)
        self.channel_names = _channel_names(self.root)
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
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise ValueError(f"size must be positive, got {size}")
        if not 0.0 <= oversample_lesions < 1.0:
            raise ValueError(f"oversample_lesions must be in [0, 1), got {oversample_lesions}")
        self.cases = list(cases)
        self.size = size
        self.augmentation = Augmentation() if augment is True else (augment or None)
        self.oversample_lesions = float(oversample_lesions)
        self.seed = int(seed)
        self.percentiles = tuple(percentiles)
        self.epoch = 0
        self._geometry = {case: load_geometry(self.root, case) for case in self.cases}
        self.items = [(case, k) for case in self.cases for k in range(self._geometry[case].shape[2])]
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._labels: dict[str, np.ndarray] = {}  # original-grid labels, read-only

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

    def preload(self, progress: bool = True) -> "SliceDataset":
        """Decode and normalise every case now (with a progress bar); returns ``self``."""
        from tqdm.auto import tqdm

        for case in tqdm(self.cases, desc="loading cases", disable=not progress, leave=False):
            self._volumes(case)
        return self

    def __getitem__(self, index: int) -> dict:
        case, k = self.items[index]
        image, label = self._volumes(case)
        image = torch.from_numpy(np.ascontiguousarray(image[..., k]))
        label = torch.from_numpy(np.ascontiguousarray(label[..., k]))
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, label = self.augmentation(image, label, rng)
        return {"image": image, "label": label, "case": case, "index": k}

    # ----- sampling

    def lesion_slices(self) -> np.ndarray:
        """Boolean array over items: does the slice hold any lesion voxel (before augmentation)?"""
        per_case = {case: self._volumes(case)[1][0].any(axis=(0, 1)) for case in self.cases}
        return np.array([bool(per_case[case][k]) for case, k in self.items])

    def sample_weights(self) -> np.ndarray:
        """Per-item sampling probabilities: lesion-bearing slices together get
        ``max(oversample_lesions, their natural share)``, uniformly among them; the rest the
        remainder. Uniform when ``oversample_lesions`` is 0 or no slice holds a lesion."""
        lesion = self.lesion_slices()
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

    # ----- back to volumes

    def volume_shape(self, case: str) -> tuple[int, int, int]:
        return self._geometry[case].shape

    def spacing(self, case: str) -> tuple[float, float, float]:
        return self._geometry[case].spacing

    def case_items(self, case: str) -> list[int]:
        """Item indices of a case's slices, in slice order."""
        return [i for i, (c, _) in enumerate(self.items) if c == case]

    def assemble(self, case: str, slices, *, fill: float = 0.0) -> np.ndarray:
        """Slice predictions of ``case`` (``{k: (H, W)}`` or all slices in order) as a volume
        on its original grid: :func:`assemble_volume` with the case's shape."""
        return assemble_volume(slices, self.volume_shape(case), fill=fill)

    def case_label(self, case: str) -> np.ndarray:
        """The case's label on its original grid, uint8 ``(X, Y, Z)``, read-only (for 3D
        evaluation; decoded once with the case's volumes)."""
        self._volumes(case)
        return self._labels[case]
