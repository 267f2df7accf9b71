"""Tiny copies of the real dataset formats for the download tests.

Each builder writes files in the published format (SimpleITK ``.mha`` in zips, a
picai_labels-shaped zip, an MSD tar of 4D NIfTI with AppleDouble junk, a BraTS 2018
folder) and returns what a test needs to check the conversion independently.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from data_download.picai import LABELS_COMMIT, fold_archive_name

try:
    import SimpleITK as sitk
except ImportError:  # the picai extra is not installed: the PI-CAI tests skip (see HAVE_SITK)
    sitk = None

HAVE_SITK = sitk is not None

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "

# ----------------------------------------------------------------------------- PI-CAI

# Case A: T2W already at the output spacing, 28 x 28 x 6 voxels (x, y, z) -> the 32 x 32 x 8
# output grid pads it by exactly 2 / 2 / 1 voxels, so the output is a shifted copy.
CASE_A = "10000_1000000"
# Case B: oblique (rotated) T2W at 0.6 x 0.6 x 3.6 mm: real resampling.
CASE_B = "10001_1000001"
# Case C: scans but no expert label (only an AI label).
CASE_C = "10002_1000002"
MATRIX_SIZE = (8, 32, 32)  # z, y, x
SPACING = (3.0, 0.5, 0.5)  # z, y, x


def ramp(points_lps: np.ndarray, gradient) -> np.ndarray:
    """A field linear in x and y (constant along z): cubic B-splines reproduce it exactly
    away from the borders, so resampled ADC/HBV can be checked point by point."""
    return 100.0 + points_lps[..., 0] * gradient[0] + points_lps[..., 1] * gradient[1]


ADC_GRADIENT = (3.0, -2.0)
HBV_GRADIENT = (-1.5, 4.0)


def _image(array_zyx: np.ndarray, spacing, origin, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in np.asarray(direction).ravel()])
    return image


def _ramp_image(size_xyz, spacing, origin, gradient) -> sitk.Image:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size_xyz], indexing="ij"), axis=-1)
    points = np.asarray(origin) + index * np.asarray(spacing)  # identity direction
    return _image(ramp(points, gradient).transpose(2, 1, 0).astype(np.float32), spacing, origin)


@dataclass
class PicaiCase:
    t2w: sitk.Image
    label: sitk.Image  # values {0, 2, 3} (expert) or {0, 1} (AI)
    has_expert_label: bool = True
    scans: dict = field(default_factory=dict)


def picai_cases(rng: np.random.Generator) -> dict[str, PicaiCase]:
    cases = {}
    # A: identity direction, output spacing, ADC/HBV on coarser, larger grids.
    t2w = _image(rng.uniform(50, 500, (6, 28, 28)).astype(np.float32), (0.5, 0.5, 3.0), (-7.0, -7.0, -9.0))
    lesion = np.zeros((6, 28, 28), np.uint16)
    lesion[2:4, 10:14, 12:15] = 2
    lesion[3, 20:22, 5:9] = 3
    label = _image(lesion, (0.5, 0.5, 3.0), (-7.0, -7.0, -9.0))
    adc = _ramp_image((32, 32, 10), (1.0, 1.0, 3.0), (-16.0, -16.0, -15.0), ADC_GRADIENT)
    hbv = _ramp_image((16, 16, 10), (2.0, 2.0, 3.0), (-16.0, -16.0, -15.0), HBV_GRADIENT)
    cases[CASE_A] = PicaiCase(t2w, label, scans={"t2w": t2w, "adc": adc, "hbv": hbv})
    # B: rotated 30 degrees about z, anisotropic spacing different from the output's.
    angle = np.deg2rad(30)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    geometry = dict(spacing=(0.6, 0.6, 3.6), origin=(5.0, -3.0, 20.0), direction=direction)
    t2w = _image(rng.uniform(50, 500, (5, 26, 30)).astype(np.float32), **geometry)
    lesion = np.zeros((5, 26, 30), np.uint8)
    lesion[1:4, 8:18, 10:20] = 4
    label = _image(lesion, **geometry)
    adc = _image(rng.uniform(0, 2000, (5, 26, 30)).astype(np.float32), **geometry)
    cases[CASE_B] = PicaiCase(t2w, label, scans={"t2w": t2w, "adc": adc, "hbv": t2w})
    # C: only an AI label (values {0, 1}).
    t2w = _image(rng.uniform(50, 500, (6, 28, 28)).astype(np.float32), (0.5, 0.5, 3.0), (0.0, 0.0, 0.0))
    lesion = np.zeros((6, 28, 28), np.int8)
    lesion[2:5, 4:9, 4:9] = 1
    cases[CASE_C] = PicaiCase(
        t2w,
        _image(lesion, (0.5, 0.5, 3.0), (0.0, 0.0, 0.0)),
        has_expert_label=False,
        scans={"t2w": t2w, "adc": t2w, "hbv": t2w},
    )
    return cases


def _sitk_bytes(image: sitk.Image, suffix: str, scratch: Path) -> bytes:
    path = scratch / f"image{suffix}"
    sitk.WriteImage(image, str(path))
    return path.read_bytes()


def picai_fold_zip(cases: dict[str, PicaiCase], names: list[str], scratch: Path) -> bytes:
    """A fold archive: ``<patient>/<patient>_<study>_{t2w,adc,hbv,sag,cor}.mha`` plus macOS junk."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            patient = name.split("_")[0]
            for modality, image in cases[name].scans.items():
                zf.writestr(f"{patient}/{name}_{modality}.mha", _sitk_bytes(image, ".mha", scratch))
            for junk in ("sag", "cor"):
                zf.writestr(f"{patient}/{name}_{junk}.mha", _sitk_bytes(cases[name].t2w, ".mha", scratch))
            zf.writestr(f"{patient}/._{name}_t2w.mha", APPLEDOUBLE)
            zf.writestr(f"__MACOSX/{patient}/._{name}_t2w.mha", APPLEDOUBLE)
    return buffer.getvalue()


def picai_labels_zip(cases: dict[str, PicaiCase], commit: str, scratch: Path) -> bytes:
    """GitHub's archive of picai_labels: expert labels in human_expert/resampled, AI labels in AI/Bosma22a."""
    top = f"picai_labels-{commit}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/README.md", "picai_labels\n")
        for name, case in cases.items():
            folder = "human_expert/resampled" if case.has_expert_label else "AI/Bosma22a"
            zf.writestr(
                f"{top}/csPCa_lesion_delineations/{folder}/{name}.nii.gz", _sitk_bytes(case.label, ".nii.gz", scratch)
            )
            zf.writestr(
                f"{top}/anatomical_delineations/whole_gland/AI/Bosma22b/{name}.nii.gz",
                _sitk_bytes(case.label, ".nii.gz", scratch),
            )
    return buffer.getvalue()


def picai_archives(scratch: Path) -> tuple[dict[str, PicaiCase], dict[str, bytes], bytes]:
    """``(cases, {fold archive name: zip}, picai_labels zip)``: cases A and C in fold 0, B in fold 1."""
    cases = picai_cases(np.random.default_rng(1))
    folds = {
        fold_archive_name(0): picai_fold_zip(cases, [CASE_A, CASE_C], scratch),
        fold_archive_name(1): picai_fold_zip(cases, [CASE_B], scratch),
    }
    return cases, folds, picai_labels_zip(cases, LABELS_COMMIT, scratch)


def rezip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The zip ``data`` with the members named in ``replace`` given new contents (or added)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in source.infolist():
            if info.filename not in replace:
                zf.writestr(info.filename, source.read(info))
        for name, content in replace.items():
            zf.writestr(name, content)
    return buffer.getvalue()


def metaimage(fields: dict[str, str], data: bytes = b"") -> bytes:
    """A MetaImage file written by hand: ``Key = Value`` lines (``ElementDataFile`` last), then ``data``."""
    return "".join(f"{key} = {value}\n" for key, value in fields.items()).encode() + data


def zip_flagged_encrypted(data: bytes) -> bytes:
    """``data`` (a zip) with the "encrypted" flag (bit 0) set on every member, in the local and
    central headers, as a password-protected archive has (zipfile cannot write one)."""
    patched = bytearray(data)
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := patched.find(signature, start)) >= 0:
            patched[start + flag_offset] |= 0x1
            start += 4
    return bytes(patched)


def zenodo_record(archives: dict[str, bytes], digest) -> bytes:
    """The record JSON of the current Zenodo API: ``key``, ``size``, ``checksum "md5:<hex>"``."""
    files = [{"key": name, "size": len(data), "checksum": f"md5:{digest(data)}"} for name, data in archives.items()]
    return json.dumps({"id": 6624726, "files": files}).encode()


# ----------------------------------------------------------------------------- MSD


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    import gzip

    return gzip.compress(nib.Nifti1Image(array, affine).to_bytes())


def msd_cases(rng: np.random.Generator, names=("BRATS_001", "BRATS_002", "BRATS_003")) -> dict:
    """``{case: (image (X, Y, Z, 4) float32, label (X, Y, Z) in 0..3, affine)}``."""
    cases = {}
    for index, name in enumerate(names):
        image = rng.normal(size=(16, 16, 6, 4)).astype(np.float32)
        label = np.zeros((16, 16, 6), np.uint8)
        label[3:9, 4:10, 1:4] = rng.integers(0, 4, size=(6, 6, 3))
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[:3, 3] = (-index, 2.0, 5.0)
        cases[name] = (image, label, affine)
    return cases


def msd_tar(cases: dict) -> bytes:
    """``Task01_BrainTumour.tar`` as published: dataset.json, imagesTr, labelsTr, imagesTs, ``._`` junk."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"Task01_BrainTumour/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        meta = {
            "name": "BRATS",
            "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "numTraining": len(cases),
        }
        add("dataset.json", json.dumps(meta).encode())
        for name, (image, label, affine) in cases.items():
            add(f"imagesTr/{name}.nii.gz", _nifti_bytes(image, affine))
            add(f"labelsTr/{name}.nii.gz", _nifti_bytes(label, affine))
            add(f"imagesTr/._{name}.nii.gz", APPLEDOUBLE)
            add(f"labelsTr/._{name}.nii.gz", APPLEDOUBLE)
        image, _, affine = next(iter(cases.values()))
        add("imagesTs/BRATS_485.nii.gz", _nifti_bytes(image, affine))
    return buffer.getvalue()


# ----------------------------------------------------------------------------- BraTS 2018

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")


def brats_folder(root: Path, rng: np.random.Generator) -> dict:
    """``MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/<case>/<case>_{...}.nii.gz``; returns
    ``{case: (channels dict, seg, affine)}``."""
    cases = {}
    for grade, name in (("HGG", "Brats18_2013_2_1"), ("HGG", "Brats18_CBICA_AAB_1"), ("LGG", "Brats18_TCIA10_640_1")):
        folder = root / "MICCAI_BraTS_2018_Data_Training" / grade / name
        folder.mkdir(parents=True)
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        channels = {m: rng.integers(0, 1000, size=(12, 12, 5)).astype(np.int16) for m in BRATS_MODALITIES}
        seg = np.zeros((12, 12, 5), np.uint8)
        seg[2:8, 3:9, 1:4] = rng.choice([0, 1, 2, 4], size=(6, 6, 3))
        for modality, data in channels.items():
            nib.save(nib.Nifti1Image(data, affine), folder / f"{name}_{modality}.nii.gz")
        nib.save(nib.Nifti1Image(seg, affine), folder / f"{name}_seg.nii.gz")
        cases[name] = (channels, seg, affine)
    (root / "MICCAI_BraTS_2018_Data_Training" / "survival_data.csv").write_text("BraTS18ID,Age\n")
    return cases
