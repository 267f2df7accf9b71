"""Medical Segmentation Decathlon, Task01_BrainTumour (public, CC-BY-SA 4.0).

One tar (about 7.1 GiB, md5 pinned as in MONAI's ``DecathlonDataset``) holding
``Task01_BrainTumour/{dataset.json, imagesTr, labelsTr, imagesTs}`` and macOS ``._*``
junk, which is skipped. Each training image is one 4D NIfTI ``(X, Y, Z, 4)`` whose
channels are FLAIR, T1w, t1gd, T2w (the task's dataset.json); they become the layout's
channels 0-3 in that order. Labels are 1 = edema, 2 = non-enhancing tumour, 3 = enhancing
tumour; the whole tumour, ``label in {1, 2, 3}``, is the lesion (the same under both
readings of the disputed 2/3 convention). The test images (no labels) are not extracted.

``--base-url`` replaces ``https://msd-for-monai.s3-us-west-2.amazonaws.com``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from . import _layout
from .archives import is_junk, remove_stale_extractions, safe_extract
from .remote import DownloadError, RemoteFile, check_transfer_options, check_url, fetch

BASE_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
TASK = "Task01_BrainTumour"
ARCHIVE_MD5 = "240a19d752f0d9e9101544901065d872"
CHANNEL_NAMES = ["FLAIR", "T1w", "t1gd", "T2w"]
WHOLE_TUMOUR = (1, 2, 3)
LICENCE = "CC-BY-SA 4.0"
LICENCE_NOTICE = (
    "Medical Segmentation Decathlon Task01_BrainTumour (BraTS 2016/2017 cases) is licensed "
    "CC-BY-SA 4.0: cite arXiv:1902.09063 and Antonelli et al., Nat Commun 2022."
)


def archive(base_url: str = BASE_URL) -> RemoteFile:
    """The task's tar under ``base_url``, with the pinned md5 whatever the server."""
    return RemoteFile(f"{check_url(base_url, option='--base-url')}/{TASK}.tar", f"{TASK}.tar", f"md5:{ARCHIVE_MD5}")


def load_case(image_file: Path, label_file: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(4 channels, whole-tumour mask, affine)`` of one MSD case."""
    image = nib.load(image_file)
    data = np.asanyarray(image.dataobj)
    label = np.asanyarray(nib.load(label_file).dataobj)
    if data.ndim != 4 or data.shape[3] != len(CHANNEL_NAMES) or data.shape[:3] != label.shape:
        raise DownloadError(
            f"{image_file} has shape {data.shape} and its label {label.shape}; an MSD brain case is "
            f"(X, Y, Z, {len(CHANNEL_NAMES)}) with an (X, Y, Z) label. The copy is damaged: delete "
            "the archive and its extracted folder, then re-run."
        )
    mask = _layout.whole_tumour(
        label, WHOLE_TUMOUR, label_file, "MSD Task01 uses only 0-3. The copy is damaged: delete the archive and re-run."
    )
    channels = [np.ascontiguousarray(data[..., c]) for c in range(data.shape[3])]
    return channels, mask, image.affine


def convert_msd(
    task_dir: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_cases: int | None = None,
    request: dict | None = None,
    extra: dict | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[str]:
    """Convert an extracted ``Task01_BrainTumour`` folder into the layout; returns the case ids."""
    _layout.check_max_cases(max_cases)
    task_dir = Path(task_dir)
    _layout.check_dest_source(dest, "msd-brain")
    images = {p.name: p for p in sorted((task_dir / "imagesTr").glob("*.nii.gz")) if not is_junk(p.name)}
    if not images:
        raise DownloadError(
            f"No training images (imagesTr/BRATS_*.nii.gz) in {task_dir}; it is not an "
            "extracted Task01_BrainTumour. Delete it and re-run to extract the archive again."
        )
    missing = [name for name in images if not (task_dir / "labelsTr" / name).is_file()]
    if missing:
        raise DownloadError(
            f"{task_dir}/labelsTr lacks the labels of {len(missing)} images (e.g. {missing[0]}); "
            "the extraction is incomplete: delete the folder and re-run."
        )
    names = list(images)[:max_cases]
    cases = [name.removesuffix(".nii.gz") for name in names]
    loaders = {
        case: (lambda n=name: load_case(images[n], task_dir / "labelsTr" / n)) for case, name in zip(cases, names)
    }
    _layout.write_cases(dest, loaders, params={}, force=force, progress=progress, desc="MSD brain")
    _layout.finish(
        dest,
        set(cases),
        channel_names=CHANNEL_NAMES,
        request=request or {"max_cases": max_cases},
        source="msd-brain",
        licence=LICENCE,
        label_mapping="lesion = whole tumour = label in {1, 2, 3}",
        **(extra or {}),
    )
    return cases


def download_msd(
    dest: str | os.PathLike,
    *,
    base_url: str = BASE_URL,
    cache: str | os.PathLike | None = None,
    max_cases: int | None = None,
    keep_archives: bool = True,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 2,
    retry_wait: float = 2.0,
) -> Path | None:
    """Download, verify and convert Task01_BrainTumour into ``dest``; ``None`` if already complete.
    The options are checked first, and what a killed run left in ``cache`` is removed."""
    check_transfer_options(timeout=timeout, retries=retries)
    _layout.check_max_cases(max_cases)
    remote = archive(base_url)
    dest = Path(dest)
    cache = Path(cache) if cache else dest / ".downloads"
    if cache.is_dir():
        remove_stale_extractions(cache)
    request = {"max_cases": max_cases}
    if not force and _layout.is_complete(dest, request):
        return None
    _layout.check_dest_source(dest, "msd-brain")
    print(LICENCE_NOTICE, flush=True)
    # fetch() checks free space against the server's Content-Length (S3 sends it).
    tar = fetch(remote, cache, progress=progress, timeout=timeout, retries=retries, retry_wait=retry_wait)
    extracted = safe_extract(tar, cache / TASK, progress=progress, include=lambda name: "/imagesTs/" not in f"/{name}")
    task_dir = extracted / TASK if (extracted / TASK).is_dir() else extracted
    cases = convert_msd(
        task_dir,
        dest,
        max_cases=max_cases,
        request=request,
        force=force,
        progress=progress,
        extra={"archive": remote.url, "archive_md5": ARCHIVE_MD5},
    )
    print(f"MSD Task01_BrainTumour: {len(cases)} cases in {dest}.", flush=True)
    shutil.rmtree(extracted)
    if not keep_archives:
        tar.unlink()
    return dest
