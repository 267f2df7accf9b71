"""BraTS 2018 training data, from a copy the user obtained (access needs registration).

Expected layout (``--source`` is this folder or its parent)::

    MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz

The layout's channels are 0 = FLAIR, 1 = T1, 2 = T1ce, 3 = T2 (the MSD order of the same
modalities, so models move between the two brain datasets). BraTS labels are 1 = necrotic
and non-enhancing core, 2 = edema, 4 = enhancing tumour; the whole tumour, ``seg in
{1, 2, 4}``, is the lesion. Any other label value is an error naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from . import _layout
from .remote import DownloadError

TRAINING_FOLDER = "MICCAI_BraTS_2018_Data_Training"
GRADES = ("HGG", "LGG")
MODALITIES = ("flair", "t1", "t1ce", "t2")
CHANNEL_NAMES = ["FLAIR", "T1", "T1ce", "T2"]
WHOLE_TUMOUR = (1, 2, 4)
ACCESS_NOTICE = (
    "BraTS 2018 is distributed after registration on the challenge site; the terms you accepted "
    "there apply to this converted copy too."
)


def find_training_folder(source: str | os.PathLike) -> Path:
    """``source`` itself when it holds HGG/LGG, else ``source/MICCAI_BraTS_2018_Data_Training``."""
    source = Path(source)
    for candidate in (source, source / TRAINING_FOLDER):
        if any((candidate / grade).is_dir() for grade in GRADES):
            return candidate
    raise DownloadError(
        f"{source} is not a BraTS 2018 training copy: neither it nor {source / TRAINING_FOLDER} has "
        f"the folders {' / '.join(GRADES)}. BraTS 2018 needs registration on the challenge site; pass the "
        f"folder you received ({TRAINING_FOLDER}, holding HGG/ and LGG/) with --source."
    )


def find_cases(source: str | os.PathLike) -> dict[str, tuple[str, Path]]:
    """``{case: (grade, case folder)}`` after checking every case has its five files.

    Raises :class:`DownloadError` listing the missing files when the copy is incomplete.
    """
    root = find_training_folder(source)
    cases, missing = {}, []
    for grade in GRADES:
        folder = root / grade
        if not folder.is_dir():
            missing.append(f"{folder}/ (the whole {grade} folder)")
            continue
        for case_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            case = case_dir.name
            files = [case_dir / f"{case}_{suffix}.nii.gz" for suffix in (*MODALITIES, "seg")]
            missing += [str(f) for f in files if not f.is_file()]
            cases[case] = (grade, case_dir)
    if missing:
        shown = "; ".join(missing[:10]) + (f"; and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DownloadError(
            f"The BraTS 2018 copy at {root} is incomplete: {len(missing)} expected file(s) are missing: "
            f"{shown}. Each case needs <case>_{{{','.join(MODALITIES)},seg}}.nii.gz; unpack the archive "
            "you received again (or download it again) and re-run."
        )
    if not cases:
        raise DownloadError(
            f"{root} has HGG/LGG folders but no case folders in them; unpack your BraTS 2018 copy there."
        )
    return cases


def load_case(case_dir: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(channels [flair, t1, t1ce, t2], whole-tumour mask, affine)`` of one case folder."""
    case = case_dir.name
    images = [nib.load(case_dir / f"{case}_{m}.nii.gz") for m in MODALITIES]
    seg_file = case_dir / f"{case}_seg.nii.gz"
    seg = np.asanyarray(nib.load(seg_file).dataobj)
    mask = _layout.whole_tumour(
        seg,
        WHOLE_TUMOUR,
        seg_file,
        "BraTS 2018 uses only 0, 1, 2 and 4. The file is damaged or from another BraTS "
        "edition; replace it from your original copy and re-run.",
    )
    channels = [np.asanyarray(image.dataobj) for image in images]
    shapes = {str(c.shape) for c in channels} | {str(seg.shape)}
    if len(shapes) > 1:
        raise DownloadError(
            f"The files of {case_dir} have different shapes ({', '.join(sorted(shapes))}); "
            "a BraTS case is co-registered on one grid. Replace them from your original copy."
        )
    return channels, mask, images[0].affine


def convert_brats2018(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_cases: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path | None:
    """Check a BraTS 2018 training copy and convert it into ``dest``; ``None`` if already complete."""
    _layout.check_max_cases(max_cases)
    request = {"source": str(Path(source).resolve()), "max_cases": max_cases}
    if not force and _layout.is_complete(dest, request):
        return None
    found = find_cases(source)
    _layout.check_dest_source(dest, "brats2018")
    print(ACCESS_NOTICE, flush=True)
    cases = sorted(found)[:max_cases]
    loaders = {case: (lambda d=found[case][1]: load_case(d)) for case in cases}
    _layout.write_cases(
        dest, loaders, params={"source": request["source"]}, force=force, progress=progress, desc="BraTS 2018"
    )
    _layout.finish(
        dest,
        set(cases),
        channel_names=CHANNEL_NAMES,
        request=request,
        source="brats2018",
        licence="BraTS 2018 data-use terms (registration required)",
        label_mapping="lesion = whole tumour = seg in {1, 2, 4}",
        grades={case: found[case][0] for case in cases},
    )
    print(f"BraTS 2018: {len(cases)} cases in {dest}.", flush=True)
    return Path(dest)
