"""What every source shares once its files are on disk: writing cases into the common
layout (skipping those already written), and knowing when a dataset is complete."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from afl_core._io import atomic_write, read_json
from afl_core.data import (
    FILE_ENDING,
    IMAGES_DIR,
    LABELS_DIR,
    READ_ERRORS,
    label_path,
    list_cases,
    read_dataset_json,
    write_case,
    write_dataset_json,
)

from .remote import DownloadError, check_positive

# The conversion parameters of the cases on disk, so a run with other ones redoes them all.
CONVERSION_MARKER = ".conversion.json"

# A loader returns (channels, binary label, affine) for one case, read only when needed.
CaseLoader = Callable[[], tuple[list[np.ndarray], np.ndarray, np.ndarray]]


def _as_json(value: dict) -> dict:
    """The form ``value`` takes after a trip through dataset.json (tuples become lists)."""
    return json.loads(json.dumps(value))


def check_max_cases(max_cases: int | None) -> None:
    """:class:`~data_download.remote.OptionError` unless ``max_cases`` is ``None`` (every
    case) or a whole number > 0: ``cases[:-1]`` or ``cases[:0]`` would quietly drop cases."""
    if max_cases is not None:
        check_positive(
            "--max-cases",
            max_cases,
            whole=True,
            hint="Give how many cases to convert (e.g. --max-cases 10), or leave --max-cases out to convert them all.",
        )


def is_complete(root: str | os.PathLike, request: dict) -> bool:
    """True when ``root`` holds a dataset written for exactly this ``request`` (the options
    that define its content) with all of its cases."""
    try:
        info = read_dataset_json(root)
        cases = list_cases(root)
    except (FileNotFoundError, ValueError):
        return False
    return info.get("download") == _as_json(request) and len(cases) == info["numTraining"]


def remove_stale(folder: str | os.PathLike, pattern: str) -> list[str]:
    """Delete what a killed run of this program left in ``folder`` under ``pattern`` (temporary
    files and folders; one run per folder at a time is assumed) and return the names."""
    stale = sorted(Path(folder).glob(pattern))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return [path.name for path in stale]


def write_cases(
    root: str | os.PathLike,
    loaders: Mapping[str, CaseLoader],
    *,
    params: dict,
    force: bool = False,
    progress: bool = True,
    desc: str = "convert",
) -> int:
    """Write every case of ``loaders`` with :func:`afl_core.data.write_case` and return how
    many were written.

    A case whose label exists is complete (write_case writes the label last) and is
    skipped, so an interrupted conversion resumes where it stopped; but when ``params``
    (what shapes each case's content, e.g. spacing) differ from those of the run that
    wrote the folder, or ``force`` is set, every case is written again. Temporary files
    that a killed run's atomic writes left behind are removed first.
    """
    marker = Path(root) / CONVERSION_MARKER
    for folder in (Path(root), Path(root) / IMAGES_DIR, Path(root) / LABELS_DIR):
        if folder.is_dir():  # the atomic writers' temporaries (.tmp-<hex>-<name>) of a killed run
            remove_stale(folder, ".tmp-*")
    params = _as_json(params)
    try:
        previous = read_json(marker, expect=None) if marker.exists() else params
    except ValueError:  # damaged: the cases' parameters are unknown, so they are converted again
        previous = None
    force = force or previous != params
    if force:
        # Labels mark finished cases: drop them before the marker names the new
        # parameters, so an interrupted re-conversion never passes old cases as new.
        for case in loaders:
            label_path(root, case).unlink(missing_ok=True)
    with atomic_write(marker, "w", encoding="utf-8") as fh:
        json.dump(params, fh)
    todo = [case for case in loaders if not label_path(root, case).exists()]
    for case in tqdm(todo, desc=desc, unit="case", disable=not progress):
        try:
            channels, label, affine = loaders[case]()
            write_case(root, case, channels, label, affine)
        except DownloadError:
            raise
        except (*READ_ERRORS, RuntimeError) as exc:  # RuntimeError: SimpleITK's read errors
            raise DownloadError(
                f"Case {case} could not be read or converted ({type(exc).__name__}: {exc}). Its source "
                "files are damaged or not in the expected format: delete the downloaded archive or the "
                "case's files and re-run the same command; converted cases are kept."
            ) from None
    return len(todo)


def whole_tumour(label: np.ndarray, kept: tuple[int, ...], path: Path, expected: str) -> np.ndarray:
    """The 0/1 mask of ``label`` values in ``kept``; any value outside ``{0, *kept}`` is an
    error naming ``path`` (``expected`` says which values the source uses and what to do)."""
    values = set(np.unique(label).tolist())
    if not values <= {0, *kept}:
        raise DownloadError(f"{path} holds the label values {sorted(values)}, but {expected}")
    return np.isin(label, kept).astype(np.uint8)


#: one channel file of a case in imagesTr: <case>_<4 digits>.nii.gz
_CHANNEL_GLOB = f"*_[0-9][0-9][0-9][0-9]{FILE_ENDING}"


def remove_other_cases(root: str | os.PathLike, keep: set[str]) -> list[str]:
    """Delete cases not in ``keep`` (left by an earlier run with other options, or images
    whose label a killed run never wrote) and return their ids."""
    root = Path(root)
    channels = {path: path.name[: -len(f"_0000{FILE_ENDING}")] for path in (root / IMAGES_DIR).glob(_CHANNEL_GLOB)}
    stale = sorted((set(list_cases(root, require_json=False)) | set(channels.values())) - keep)
    for case in stale:
        label_path(root, case).unlink(missing_ok=True)
    for path, case in channels.items():
        if case in stale:
            path.unlink()
    return stale


def finish(root: str | os.PathLike, cases: set[str], *, channel_names: list[str], request: dict, **extra) -> Path:
    """Remove cases from other runs, then write dataset.json (last, so that its presence with
    a matching ``download`` entry marks the dataset complete)."""
    remove_other_cases(root, cases)
    return write_dataset_json(
        root, channel_names=channel_names, num_training=len(cases), download=_as_json(request), **extra
    )


def check_dest_source(root: str | os.PathLike, source: str) -> None:
    """Refuse to write into a folder that holds a dataset this command did not make: one
    of another source, one without a source (a user's own nnU-Net dataset), or cases
    without the marks of this program's conversion (the converters delete cases that are
    not theirs, so the folder must be theirs)."""
    root = Path(root)
    try:
        info = read_dataset_json(root)
    except FileNotFoundError:
        info = None
    except ValueError as err:
        raise DownloadError(
            f"{err}. This command cannot tell which dataset {root} holds, so it changes nothing there: "
            "choose another folder with --dest, or delete the folder's dataset yourself."
        ) from None
    if info is not None and info.get("source") != source:
        made_by = f"source {info['source']!r}" if "source" in info else "no source recorded: not written by afl-data"
        raise DownloadError(
            f"{root} already holds another dataset ({made_by}); this command would mix {source!r} cases into it "
            "and delete those it did not convert. Choose an empty folder with --dest."
        )
    if info is None and not (root / CONVERSION_MARKER).exists():
        cases = [
            p.name for folder in (IMAGES_DIR, LABELS_DIR) if (root / folder).is_dir() for p in (root / folder).iterdir()
        ]
        if cases:
            raise DownloadError(
                f"{root} holds files in {IMAGES_DIR}/ or {LABELS_DIR}/ ({', '.join(sorted(cases)[:3])}"
                f"{', ...' if len(cases) > 3 else ''}) that this command did not write, and no dataset.json; "
                "it would delete them. Choose an empty folder with --dest."
            )
