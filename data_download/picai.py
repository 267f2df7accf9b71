"""PI-CAI 2022 public training data: bpMRI of the prostate with csPCa lesion masks.

Images come from Zenodo record 6624726 (five ``picai_public_images_fold{k}.zip``, one
folder per patient with ``<patient>_<study>_{t2w,adc,hbv,sag,cor}.mha``). Labels come from
the ``DIAGNijmegen/picai_labels`` repository at a pinned commit. Licence: CC BY-NC 4.0
(non-commercial use, with attribution). Conversion needs SimpleITK: install the extra
``afl-tutorial[picai]``.

Trust. Each fold archive passes two independent checks, in one read of the file. (1) Its
sha256 must be the one pinned in this module (:data:`PINNED_SHA256`: the values torch-em's
downloader checks for record 6624726, not computed here, as Zenodo could not be reached),
whatever any record or mirror says. (2) Its md5 and size must be those of Zenodo's own
record (``--record-url``, by default ``https://zenodo.org/api/records/6624726``; a
published Zenodo record never changes its files), never a mirror's: ``--base-url`` says
only where the archives are fetched from. The record also gives the size that bounds the
transfer and lets it resume. So a mirror that serves an altered archive is refused even
with a record of its own that agrees with it. An archive already in the cache is checked
again the same way before it is used. Without Zenodo access, save the record's JSON where
it can be reached and pass it, e.g. ``--record-url file:///data/record-6624726.json``.
For another version of the record, pass its sha256 (``pinned_sha256=``, or
``--pinned-sha256 FILE`` with lines as ``sha256sum`` writes them); ``pinned_sha256=None``
(``--no-pinned-checksums``) weakens the check: the record is then the only one, which a
mirror serving its own record defeats. dataset.json records the sha256 that were verified.
GitHub publishes no checksum for its picai_labels archive: the download is accepted only
as a complete zip (every CRC checked) and its sha256 is recorded in dataset.json. Every
``.mha`` is checked before SimpleITK reads it (:mod:`data_download.metaimage`): voxels in
the file itself and of exactly the size its header claims.

Conversion follows the PI-CAI U-Net baseline (picai_prep's ``Sample.preprocess``):
labels are binarised (``label >= 1``: every ISUP >= 2 lesion), every scan is resampled to
3.0 x 0.5 x 0.5 mm (z, y, x), keeping the first voxel's position, and centre-cropped or
zero-padded to 20 x 256 x 256 voxels; ADC, HBV and the label are resampled onto that T2W
grid (B-spline for scans, nearest neighbour for labels). Here the resampling and the crop
are one interpolation onto the final grid. The layout's channels are 0 = T2W, 1 = ADC,
2 = HBV; the affine is the SimpleITK geometry turned from LPS into NIfTI's RAS.

``--base-url`` replaces ``https://zenodo.org/api/records/6624726`` as the place the files
are fetched from, as ``<base>/files/<name>/content``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from . import _layout
from .archives import archive_problem, is_junk, remove_stale_extractions, safe_extract
from .metaimage import check_metaimage
from .remote import (
    DownloadError,
    OptionError,
    PinnedChecksumError,
    RemoteFile,
    bytes_to_fetch,
    check_positive,
    check_transfer_options,
    check_url,
    ensure_free_space,
    fetch,
    file_checksum,
    parse_checksum,
    read_json,
)

if TYPE_CHECKING:
    import SimpleITK as sitk

ZENODO_RECORD_URL = "https://zenodo.org/api/records/6624726"
LABELS_ARCHIVE_URL = "https://github.com/DIAGNijmegen/picai_labels/archive"
# The snapshot described in the project's dataset notes. GitHub resolves a short sha; the
# repository is updated over time, so a pinned commit keeps the labels reproducible.
LABELS_COMMIT = "ce4a472"
FOLDS = (0, 1, 2, 3, 4)
MODALITIES = ("t2w", "adc", "hbv")
CHANNEL_NAMES = ["T2W", "ADC", "HBV"]
LICENCE = "CC BY-NC 4.0"
LICENCE_NOTICE = (
    "PI-CAI 2022 public training data (images: Zenodo 10.5281/zenodo.6624726; labels: "
    "github.com/DIAGNijmegen/picai_labels) is licensed CC BY-NC 4.0: non-commercial use only, "
    "with attribution (cite the data record and the PI-CAI challenge)."
)
_DELINEATIONS = "csPCa_lesion_delineations"
LABEL_SETS = {
    # Label folders in order of preference: a case takes its label from the first that has it.
    "human": ("human_expert/resampled",),
    "human+pooch25": ("human_expert/resampled", "human_expert/Pooch25"),
    "human+ai": ("human_expert/resampled", "AI/Bosma22a"),
}
DEFAULT_SPACING = (3.0, 0.5, 0.5)
DEFAULT_MATRIX_SIZE = (20, 256, 256)

# The sha256 of the five fold archives of Zenodo record 6624726 (version 2 of the PI-CAI
# public training data), as published by the torch-em library, whose downloader checks
# them: constantinpape/torch-em, torch_em/data/datasets/medical/picai.py at commit
# e38c9cf933f087ac9c94ad2192999358cd6850b7 (merged PR #811, "Add the PI-CAI dataset"), for
# https://zenodo.org/records/6624726/files/picai_public_images_fold{k}.zip. They were not
# computed here: the machine this was written on cannot reach Zenodo. (A third-party
# manifest, neilcasas/GCALF-Net cloud/vast/picai_zenodo_manifest.tsv, lists md5s for the
# older record 6517398; they are not used: the files may differ between versions.)
# Read-only, so that no caller can change the default of every download by accident.
PINNED_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "picai_public_images_fold0.zip": "1c9683b436bedbe4384bb4a8133ebb4213349e5af2296ba62cd26fafa36366e0",
        "picai_public_images_fold1.zip": "eb31d43a949e9245385cea5e66f4584197bbdb7df4ee99af6e47da980ddbb565",
        "picai_public_images_fold2.zip": "5116355bc0cbf152122467405a0e9636c268e46a144f0f5de51abb48753e9d29",
        "picai_public_images_fold3.zip": "070f172b5668e9a07900d9f07a48e0a313067e63280140ca0c43a6070487e765",
        "picai_public_images_fold4.zip": "feabdbf8bb2d28c091dc41fcd66cbd4c2a898aaee05ca27401ccfc343ccec016",
    }
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _simpleitk():
    """SimpleITK, imported on first use: only the conversion needs it (the ``picai`` extra)."""
    try:
        import SimpleITK
    except ImportError:
        raise DownloadError(
            "Converting PI-CAI needs SimpleITK, which is not installed here. Install the PI-CAI extra, "
            "pip install 'afl-tutorial[picai]' (or pip install SimpleITK), then re-run the same command."
        ) from None
    return SimpleITK


def _read_image(path: Path) -> sitk.Image:
    """``path`` read by SimpleITK, after :func:`check_metaimage` for a MetaImage."""
    if path.suffix.lower() in (".mha", ".mhd"):
        check_metaimage(path)
    return _simpleitk().ReadImage(str(path))


def fold_archive_name(fold: int) -> str:
    return f"picai_public_images_fold{fold}.zip"


def _check_folds(folds: Sequence[int]) -> None:
    bad = sorted(set(folds) - set(FOLDS))
    if bad or not folds:
        raise DownloadError(f"PI-CAI has folds {list(FOLDS)}; got {list(folds)}. Choose some of them with --folds.")


def image_archives(
    folds: Sequence[int] = FOLDS,
    *,
    base_url: str = ZENODO_RECORD_URL,
    record_url: str = ZENODO_RECORD_URL,
    pinned_sha256: Mapping[str, str] | None = PINNED_SHA256,
    **read_options,
) -> list[RemoteFile]:
    """The fold archives at ``<base_url>/files/<name>/content``, with the sizes and md5 that
    the record at ``record_url`` (Zenodo's, unless told otherwise) lists for them, and the
    sha256 ``pinned_sha256`` gives them (``RemoteFile.pinned``; ``None``: none). The
    current API (``key`` + ``"md5:<hex>"``) and the legacy one (``filename`` + bare hex) are
    understood; a size or checksum that cannot be read is an error naming the record."""
    _check_folds(folds)
    pins = _check_pins(pinned_sha256, folds)
    base_url = check_url(base_url, option="--base-url")
    record_url = check_url(record_url, option="--record-url", schemes=("http", "https", "file"))
    try:
        record = read_json(record_url, **read_options)
    except DownloadError as exc:
        raise DownloadError(
            f"{exc} The sizes and md5 the fold archives must match come from this record, whichever --base-url "
            "serves them. Without access to it, save the JSON of https://zenodo.org/api/records/6624726 on a "
            "machine that has access and pass it with --record-url file:///path/to/record.json."
        ) from None
    files = record.get("files")
    if isinstance(files, dict):  # some InvenioRDM endpoints nest the list
        files = files.get("entries")
    if not isinstance(files, list) or not all(isinstance(entry, dict) for entry in files):
        raise _damaged_record(
            record_url,
            f'has no list of files (its "files" is {json.dumps(files)[:80]}, not a list of objects with '
            "key, size and checksum)",
        )
    entries = {entry.get("key") or entry.get("filename"): entry for entry in files}
    remotes = []
    for fold in folds:
        name = fold_archive_name(fold)
        size, checksum = _record_entry(entries, name, record_url)
        pinned = f"sha256:{pins[name]}" if pins is not None else None
        remotes.append(RemoteFile(f"{base_url}/files/{name}/content", name, checksum, size, pinned=pinned))
    return remotes


def _check_pins(pinned_sha256: Mapping[str, str] | None, folds: Sequence[int]) -> dict[str, str] | None:
    """``{archive name: sha256}`` of ``folds`` from ``pinned_sha256`` (``None`` stays ``None``),
    else an :class:`OptionError` saying which fold lacks a readable sha256."""
    if pinned_sha256 is None:
        return None
    pins = {}
    for fold in folds:
        name = fold_archive_name(fold)
        digest = pinned_sha256.get(name)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest.strip().lower()):
            found = "no sha256" if digest is None else f"{digest!r}, not a sha256 (64 hex digits),"
            raise OptionError(
                f"The pinned checksums (pinned_sha256=, or the file of --pinned-sha256) have {found} for {name}. "
                "Give one for every fold to download, leave them out to use those pinned for Zenodo record "
                "6624726, or pass None (--no-pinned-checksums) to check against the record only."
            )
        pins[name] = digest.strip().lower()
    return pins


def read_pinned_sha256(path: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` from a file in ``sha256sum``'s format (``<hex>  <name>`` or
    ``<hex> *<name>`` per line; blank lines and ``#`` comments skipped), for ``--pinned-sha256``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"--pinned-sha256 {path}: the file cannot be read ({exc}).") from None
    pins = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"\s*([0-9A-Fa-f]{64}) [ *](\S.*?)\s*", line)
        if match is None:
            raise OptionError(
                f"--pinned-sha256 {path}, line {number}: {line.strip()!r} is not '<sha256>  <file name>' "
                "(the format sha256sum writes: 64 hex digits, two spaces, the name, e.g. "
                f"'{'0' * 64}  {fold_archive_name(0)}')."
            )
        pins[Path(match.group(2)).name] = match.group(1).lower()
    return pins


def _whole_bytes(size) -> int | None:
    """A record's file size as the API versions write it (123, 123.0 or "123"), else ``None``."""
    if isinstance(size, str) and size.isdigit():
        return int(size)
    if isinstance(size, (int, float)) and not isinstance(size, bool) and float(size).is_integer():
        return int(size)
    return None


def _record_entry(entries: dict[str, dict], name: str, record_url: str) -> tuple[int, str]:
    """``(size, "md5:<hex>")`` of ``name`` in a record's file list, checked."""
    entry = entries.get(name)
    if entry is None or not entry.get("checksum"):
        raise DownloadError(
            f"The record at {record_url} does not list {name} with a checksum (it lists: "
            f"{', '.join(sorted(map(str, entries))) or 'no files'}). With --record-url, point it at a copy of "
            "https://zenodo.org/api/records/6624726 (the JSON itself); otherwise the record has changed: "
            "check https://zenodo.org/records/6624726."
        )
    size, checksum = entry.get("size", entry.get("filesize")), str(entry["checksum"])
    whole = _whole_bytes(size)
    if whole is None or whole <= 0:
        problem = f"the size {size!r} is not a positive whole number of bytes"
    else:
        try:
            algorithm, digest = parse_checksum(checksum if ":" in checksum else f"md5:{checksum}")
            return whole, f"{algorithm}:{digest}"
        except ValueError:
            problem = (
                f"the checksum {entry['checksum']!r} is not '<algorithm>:<hex digest>' with algorithm md5, "
                "sha1, sha256 or sha512 and a digest of its length"
            )
    raise _damaged_record(record_url, f"lists {name}, but {problem}")


def _damaged_record(record_url: str, problem: str) -> DownloadError:
    """The error for a record that cannot vouch for the archives; ``problem`` completes "The record ..."."""
    return DownloadError(
        f"The record at {record_url} {problem}, so the download could not be verified and nothing was fetched. "
        "The record is damaged or is not Zenodo's: leave --record-url out to use "
        "https://zenodo.org/api/records/6624726, or pass an unaltered copy of it."
    )


def labels_archive(commit: str = LABELS_COMMIT, *, base_url: str = LABELS_ARCHIVE_URL) -> RemoteFile:
    """GitHub's zip of picai_labels at ``commit``. No checksum is published for it (GitHub
    builds these archives on demand), so its sha256 is recorded in dataset.json instead."""
    return RemoteFile(f"{base_url.rstrip('/')}/{commit}.zip", f"picai_labels-{commit}.zip")


# --------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class ConversionSummary:
    """What :func:`convert_picai` found and did."""

    cases: list[str]  # labelled cases in the dataset
    written: int  # of them, written by this call (the rest were already complete)
    unlabelled: list[str]  # cases without a label in the chosen label set (skipped)
    incomplete: dict[str, list[str]]  # case -> the scan files it lacks (skipped)
    label_source: dict[str, str]  # case -> label folder it came from


def _check_label_set(labels: str) -> None:
    if labels not in LABEL_SETS:
        raise DownloadError(f"Unknown label set {labels!r}; choose one of {sorted(LABEL_SETS)} with --labels.")


def find_labels_root(labels_dir: str | os.PathLike) -> Path:
    """The folder holding ``csPCa_lesion_delineations``: ``labels_dir`` itself (a git clone)
    or its only sub-folder that has it (an extracted GitHub archive)."""
    labels_dir = Path(labels_dir)
    candidates = [labels_dir] + sorted(p for p in labels_dir.iterdir() if p.is_dir()) if labels_dir.is_dir() else []
    for candidate in candidates:
        if (candidate / _DELINEATIONS).is_dir():
            return candidate
    raise DownloadError(
        f"{labels_dir} is not a copy of the picai_labels repository: no {_DELINEATIONS} folder in it or "
        "in its sub-folders. Pass the folder of a clone of github.com/DIAGNijmegen/picai_labels "
        "with --labels-dir, or leave --labels-dir out to download it."
    )


def find_scans(images_dir: str | os.PathLike) -> tuple[dict[str, dict[str, Path]], dict[str, list[str]]]:
    """``{case: {"t2w": path, "adc": path, "hbv": path}}`` for every ``<case>_t2w.mha`` under
    ``images_dir`` (any depth), and ``{case: names of the files it lacks}`` for the cases
    lacking ADC or HBV."""
    scans, incomplete = {}, {}
    for t2w in sorted(Path(images_dir).rglob("*_t2w.mha")):
        if is_junk(t2w.name):
            continue
        case = t2w.name[: -len("_t2w.mha")]
        paths = {m: t2w.with_name(f"{case}_{m}.mha") for m in MODALITIES}
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing:
            incomplete[case] = missing
        else:
            scans[case] = paths
    return scans, incomplete


def reference_grid(t2w: sitk.Image, spacing_zyx: Sequence[float], matrix_size_zyx: Sequence[int]) -> sitk.Image:
    """The output grid: ``t2w`` resampled to ``spacing`` keeping its first voxel's position
    (new size ``round(size * old_spacing / spacing)``), then centre-cropped or padded to
    ``matrix_size`` in index space, as picai_prep's crop_or_pad: a crop drops
    ``(size - matrix) // 2`` voxels before, a pad adds ``(matrix - size) // 2`` before, so
    an odd voxel goes after the volume in both cases."""
    spacing = np.asarray(spacing_zyx, dtype=float)[::-1]
    matrix = np.asarray(matrix_size_zyx, dtype=int)[::-1]
    resampled_size = np.round(np.asarray(t2w.GetSize()) * np.asarray(t2w.GetSpacing()) / spacing).astype(int)
    start = np.where(resampled_size >= matrix, (resampled_size - matrix) // 2, -((matrix - resampled_size) // 2))
    direction = np.asarray(t2w.GetDirection()).reshape(3, 3)
    origin = np.asarray(t2w.GetOrigin()) + direction @ (spacing * start)
    sitk = _simpleitk()
    grid = sitk.Image([int(n) for n in matrix], sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin(origin.tolist())
    grid.SetDirection(direction.ravel().tolist())
    return grid


def sitk_to_nifti(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)`` in NIfTI conventions: array axes (x, y, z) and a RAS affine.

    SimpleITK maps index i to the LPS point ``origin + D diag(spacing) i``; RAS negates the
    first two world axes, so ``affine = diag(-1, -1, 1, 1) [D diag(spacing) | origin]``.
    """
    array = _simpleitk().GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def convert_case(
    scans: dict[str, Path],
    label_file: Path,
    *,
    spacing: Sequence[float] = DEFAULT_SPACING,
    matrix_size: Sequence[int] = DEFAULT_MATRIX_SIZE,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """One case's ``(channels [t2w, adc, hbv], binary label, affine)`` on the output grid."""
    sitk = _simpleitk()
    t2w = _read_image(scans["t2w"])
    grid = reference_grid(t2w, spacing, matrix_size)
    channels = []
    for modality in MODALITIES:
        scan = t2w if modality == "t2w" else _read_image(scans[modality])
        resampled = sitk.Resample(
            sitk.Cast(scan, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32
        )
        channels.append(sitk_to_nifti(resampled)[0])
    # Binarise before resampling: any ISUP >= 2 lesion (expert values 2..5, AI/Pooch25 value 1).
    lesion = _read_image(label_file) >= 1
    label, affine = sitk_to_nifti(
        sitk.Resample(lesion, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    return channels, label, affine


def _complete_scans(images_dir: str | os.PathLike) -> tuple[dict[str, dict[str, Path]], dict[str, list[str]]]:
    """:func:`find_scans`, or :class:`DownloadError` saying what is missing when no case has
    all three scans."""
    scans, incomplete = find_scans(images_dir)
    if not scans and incomplete:
        raise DownloadError(
            f"No PI-CAI case under {images_dir} has all three scans (T2W, ADC, HBV): "
            f"{_missing_files(incomplete)}. Each case needs <case>_t2w.mha, <case>_adc.mha and <case>_hbv.mha "
            "side by side. If they come from a downloaded picai_public_images_fold*.zip, that archive is not the "
            "one published on Zenodo: check --base-url and --record-url, delete the archive from the download "
            "folder and re-run the same command; otherwise add the missing files."
        )
    if not scans:
        raise DownloadError(
            f"No PI-CAI scans (<patient>_<study>_t2w.mha) were found under {images_dir}. Point it at the "
            "unzipped picai_public_images_fold*.zip archives."
        )
    return scans, incomplete


def _label_sources(scans: dict, labels_root: Path, labels: str) -> tuple[dict[str, str], list[str]]:
    """For each case, the first folder of the label set ``labels`` that labels it; and the
    cases none labels."""
    label_source, unlabelled = {}, []
    for case in scans:
        folder = next((f for f in LABEL_SETS[labels] if (labels_root / f / f"{case}.nii.gz").is_file()), None)
        if folder is None:
            unlabelled.append(case)
        else:
            label_source[case] = folder
    return label_source, unlabelled


def convert_picai(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    labels: str = "human",
    spacing: Sequence[float] = DEFAULT_SPACING,
    matrix_size: Sequence[int] = DEFAULT_MATRIX_SIZE,
    max_cases: int | None = None,
    request: dict | None = None,
    extra: dict | None = None,
    force: bool = False,
    progress: bool = True,
) -> ConversionSummary:
    """Convert unzipped PI-CAI images (``images_dir``, any depth) with picai_labels
    (``labels_dir``) into the common layout at ``dest``.

    ``labels`` picks the label set (:data:`LABEL_SETS`); cases it does not label are
    skipped and counted. ``request`` (the options that define the dataset, recorded in
    dataset.json to recognise a complete dataset) and ``extra`` (more dataset.json keys)
    are filled in by :func:`download_picai`.
    """
    _check_label_set(labels)
    _check_conversion(spacing, matrix_size, max_cases)
    _simpleitk()
    _layout.check_dest_source(dest, "picai")
    labels_root = find_labels_root(labels_dir) / _DELINEATIONS
    scans, incomplete = _complete_scans(images_dir)
    label_source, unlabelled = _label_sources(scans, labels_root, labels)
    cases = sorted(label_source)[:max_cases]
    loaders = {
        case: (
            lambda case=case: convert_case(
                scans[case],
                labels_root / label_source[case] / f"{case}.nii.gz",
                spacing=spacing,
                matrix_size=matrix_size,
            )
        )
        for case in cases
    }
    request = request or {
        "labels": labels,
        "spacing": list(spacing),
        "matrix_size": list(matrix_size),
        "max_cases": max_cases,
    }
    # Which cases are converted does not change a case's content; the rest does.
    params = {key: value for key, value in request.items() if key not in ("folds", "max_cases")}
    written = _layout.write_cases(dest, loaders, params=params, force=force, progress=progress, desc="PI-CAI")
    _layout.finish(
        dest,
        set(cases),
        channel_names=CHANNEL_NAMES,
        request=request,
        source="picai",
        licence=LICENCE,
        spacing=list(spacing),
        spacing_order="z, y, x (mm)",
        label_mapping=f"lesion = {_DELINEATIONS}/{{{', '.join(LABEL_SETS[labels])}}} >= 1 (ISUP >= 2)",
        label_sources={f: sum(1 for c in cases if label_source[c] == f) for f in LABEL_SETS[labels]},
        **(extra or {}),
    )
    return ConversionSummary(cases, written, unlabelled, incomplete, {c: label_source[c] for c in cases})


def _missing_files(incomplete: dict[str, list[str]]) -> str:
    """``"10001_1000001_adc.mha is missing"``, for at most five cases."""
    files = [name for missing in list(incomplete.values())[:5] for name in missing]
    more = f" (and files of {len(incomplete) - 5} more cases)" if len(incomplete) > 5 else ""
    return f"{', '.join(files)}{more} {'is' if len(files) == 1 and not more else 'are'} missing"


def _check_conversion(spacing: Sequence[float], matrix_size: Sequence[int], max_cases: int | None) -> None:
    """:class:`OptionError` unless the output grid and ``max_cases`` can work."""
    check_positive("--spacing", spacing, hint="Give the output voxel size in mm, e.g. --spacing 3.0 0.5 0.5 (z, y, x).")
    check_positive(
        "--matrix-size",
        matrix_size,
        whole=True,
        hint="Give the output size in voxels, e.g. --matrix-size 20 256 256 (z, y, x).",
    )
    _layout.check_max_cases(max_cases)


# --------------------------------------------------------------------------- download


def _check_inputs(
    *,
    folds: Sequence[int],
    labels: str,
    labels_commit: str,
    labels_dir,
    base_url: str,
    labels_base_url: str,
    record_url: str,
    pinned_sha256: Mapping[str, str] | None,
    spacing: Sequence[float],
    matrix_size: Sequence[int],
    max_cases: int | None,
    timeout: float,
    retries: int,
) -> None:
    """Everything that can be checked without the network, so that a typo is reported before
    gigabytes are downloaded rather than after."""
    _check_folds(folds)
    _check_pins(pinned_sha256, folds)
    _check_label_set(labels)
    _check_conversion(spacing, matrix_size, max_cases)
    check_transfer_options(timeout=timeout, retries=retries)
    check_url(base_url, option="--base-url")
    check_url(labels_base_url, option="--labels-base-url")
    check_url(record_url, option="--record-url", schemes=("http", "https", "file"))
    # The commit names a file in the cache: a name, never a path.
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]*", labels_commit):
        raise DownloadError(
            f"--labels-commit {labels_commit!r} is not a commit or tag name of picai_labels "
            f"(letters, digits, '.', '_', '-'); the default is {LABELS_COMMIT}."
        )
    if labels_dir is not None:
        find_labels_root(labels_dir)


def plan_picai(
    *,
    folds: Sequence[int] = FOLDS,
    labels: str = "human",
    base_url: str = ZENODO_RECORD_URL,
    record_url: str = ZENODO_RECORD_URL,
    pinned_sha256: Mapping[str, str] | None = PINNED_SHA256,
    labels_commit: str = LABELS_COMMIT,
    labels_base_url: str = LABELS_ARCHIVE_URL,
    labels_dir: str | os.PathLike | None = None,
    spacing: Sequence[float] = DEFAULT_SPACING,
    matrix_size: Sequence[int] = DEFAULT_MATRIX_SIZE,
    max_cases: int | None = None,
    timeout: float = 60.0,
    retries: int = 2,
    retry_wait: float = 2.0,
) -> list[RemoteFile]:
    """The files :func:`download_picai` fetches (reads the record for sizes), after the same
    checks of the options (the conversion's too), with the sha256 pinned for them
    (``RemoteFile.pinned``)."""
    _check_inputs(
        folds=folds,
        labels=labels,
        labels_commit=labels_commit,
        labels_dir=labels_dir,
        base_url=base_url,
        labels_base_url=labels_base_url,
        record_url=record_url,
        pinned_sha256=pinned_sha256,
        spacing=spacing,
        matrix_size=matrix_size,
        max_cases=max_cases,
        timeout=timeout,
        retries=retries,
    )
    remotes = image_archives(
        folds,
        base_url=base_url,
        record_url=record_url,
        pinned_sha256=pinned_sha256,
        timeout=timeout,
        retries=retries,
        retry_wait=retry_wait,
    )
    if labels_dir is None:
        remotes.append(labels_archive(labels_commit, base_url=labels_base_url))
    return remotes


def _fetch_fold(remote: RemoteFile, cache: Path, *, record_url: str, **options) -> Path:
    """:func:`fetch` of a fold archive; a sha256 that differs from the pinned one while the
    record's md5 and size match is explained (the file is deleted by then)."""
    try:
        return fetch(remote, cache, **options)
    except PinnedChecksumError as exc:
        if remote.url.startswith(f"{ZENODO_RECORD_URL}/") and record_url == ZENODO_RECORD_URL:
            source = (
                "Zenodo served it and its record vouches for it, so the pinned value is wrong or Zenodo "
                "re-published the files: please report it to the maintainers of this package."
            )
        else:
            source = (
                "The copy served there, or the record that vouches for it, differs from the archive published "
                "on Zenodo (record 6624726): download it from Zenodo itself by leaving --base-url and --record-url "
                "out, and re-run the same command. If Zenodo's own copy gives this mismatch too, the pinned value "
                "is wrong or Zenodo re-published the files: please report it to the maintainers of this package."
            )
        raise PinnedChecksumError(
            f"The downloaded file {remote.name} from {remote.url} has the md5 and size that the record at "
            f"{record_url} lists, but its {exc.algorithm} is {exc.actual}, not {exc.expected} as pinned for it in "
            f"this package, so it was deleted. {source} Meanwhile, to use files you trust, pass their sha256 with "
            "--pinned-sha256 FILE (lines '<sha256>  <file name>', as sha256sum writes them; pinned_sha256= in "
            "Python), or skip this check with --no-pinned-checksums (pinned_sha256=None), which leaves the record "
            "as the only check.",
            algorithm=exc.algorithm,
            expected=exc.expected,
            actual=exc.actual,
        ) from None


def _remove_stale_extractions(cache: Path) -> None:
    """Remove what a killed run left half-extracted in the cache."""
    for folder in (cache, cache / "images"):
        if folder.is_dir():
            remove_stale_extractions(folder)


def _dataset_request(
    folds: Sequence[int],
    labels_commit: str,
    labels_dir: str | os.PathLike | None,
    *,
    labels: str,
    spacing: Sequence[float],
    matrix_size: Sequence[int],
    max_cases: int | None,
) -> dict:
    """The options that define the dataset, recorded in dataset.json to recognise it complete."""
    return {
        "folds": sorted(folds),
        "labels": labels,
        "labels_source": labels_commit if labels_dir is None else str(Path(labels_dir).resolve()),
        "spacing": list(spacing),
        "matrix_size": list(matrix_size),
        "max_cases": max_cases,
    }


def _fetch_labels(
    labels_commit: str, labels_base_url: str, cache: Path, progress: bool, **net
) -> tuple[Path, Path, dict]:
    """Download picai_labels at ``labels_commit`` and extract its lesion delineations.

    Returns the archive, the extracted folder and what dataset.json records of them (the
    archive's address and sha256: GitHub publishes no checksum to check it against).
    """
    remote = labels_archive(labels_commit, base_url=labels_base_url)
    archive = fetch(remote, cache, progress=progress, verify=archive_problem, **net)
    digest = file_checksum(archive, "sha256")
    print(
        f"picai_labels @ {labels_commit}: no checksum is published for GitHub's archive; it was "
        f"checked as a complete zip and its sha256 is {digest} (recorded in dataset.json as "
        "labels_archive_sha256).",
        flush=True,
    )
    labels_note = {"labels_archive": remote.url, "labels_archive_sha256": digest}
    # Only the lesion delineations (all sets: small); not the 6000 anatomical masks.
    labels_dir = safe_extract(
        archive,
        cache / archive.name.removesuffix(".zip"),
        include=lambda name: f"/{_DELINEATIONS}/" in f"/{name}",
        progress=progress,
    )
    return archive, labels_dir, labels_note


def _extract_folds(archives: list[Path], images_dir: Path, *, progress: bool) -> Path:
    """Extract the scans of each fold archive into ``images_dir/<archive name>``, removing
    the folds an interrupted run with other ``folds`` extracted there; return ``images_dir``."""
    folders = {archive.name.removesuffix(".zip"): archive for archive in archives}
    if images_dir.is_dir():
        for stale in images_dir.iterdir():
            if stale.name not in folders:
                shutil.rmtree(stale)
    for folder, archive in folders.items():
        safe_extract(
            archive,
            images_dir / folder,
            progress=progress,
            include=lambda name: name.endswith(tuple(f"_{m}.mha" for m in MODALITIES)),
        )
    return images_dir


def _provenance(remotes: list[RemoteFile], record_url: str, pinned_sha256: Mapping[str, str] | None) -> dict:
    """What dataset.json records of the image archives: their record and checksums."""
    return {
        "images_record": "https://doi.org/10.5281/zenodo.6624726",
        "images_checksums_from": record_url,
        "image_archives_md5": {r.name: r.checksum for r in remotes},
        # The sha256 each archive was verified against (None: pinned_sha256=None, not checked).
        "image_archives_sha256": (
            None if pinned_sha256 is None else {r.name: r.pinned.removeprefix("sha256:") for r in remotes}
        ),
    }


def _print_summary(summary: ConversionSummary, dest: Path, labels: str) -> None:
    """One line: the cases converted, written now, skipped for want of a label or a scan."""
    print(
        f"PI-CAI: {len(summary.cases)} labelled cases in {dest} ({summary.written} written now); "
        f"{len(summary.unlabelled)} cases have no label in the {labels!r} set and were skipped"
        + (
            f"; {len(summary.incomplete)} lacked a scan ({_missing_files(summary.incomplete)})"
            if summary.incomplete
            else ""
        )
        + ".",
        flush=True,
    )


def _before_download(dest: Path) -> None:
    """What must hold before gigabytes are fetched: the converter (SimpleITK) is installed and
    ``dest`` holds no other source's dataset. Then the licence the data comes under."""
    _simpleitk()
    _layout.check_dest_source(dest, "picai")
    print(LICENCE_NOTICE, flush=True)


def _remove_downloads(extracted: list[Path], archives: list[Path]) -> None:
    """Remove the ``extracted`` folders (the archives can re-create them) and the ``archives``
    not to keep, once the conversion is complete."""
    for folder in extracted:
        shutil.rmtree(folder)
    for archive in archives:
        archive.unlink()


def download_picai(
    dest: str | os.PathLike,
    *,
    folds: Sequence[int] = FOLDS,
    labels: str = "human",
    base_url: str = ZENODO_RECORD_URL,
    record_url: str = ZENODO_RECORD_URL,
    pinned_sha256: Mapping[str, str] | None = PINNED_SHA256,
    labels_commit: str = LABELS_COMMIT,
    labels_base_url: str = LABELS_ARCHIVE_URL,
    labels_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    spacing: Sequence[float] = DEFAULT_SPACING,
    matrix_size: Sequence[int] = DEFAULT_MATRIX_SIZE,
    max_cases: int | None = None,
    keep_archives: bool = True,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 2,
    retry_wait: float = 2.0,
) -> Path | None:
    """Download the chosen folds and the labels, verify them, and convert them into ``dest``.

    The archives are fetched from ``base_url`` and checked against the sha256 in
    ``pinned_sha256`` (by default :data:`PINNED_SHA256`, whatever the record or the mirror
    says; ``None`` skips this check, leaving the record's as the only one) and against the
    sizes and md5 of the record at ``record_url`` (see the module docstring); an archive
    already in the cache is checked again. Every option, ``labels_dir``
    and SimpleITK are checked before anything is downloaded. Returns ``dest``, or ``None``
    when ``dest`` already held this exact dataset (nothing is done then unless ``force``).
    Archives go to ``cache`` (default ``dest/.downloads``) and are kept for re-runs unless
    ``keep_archives`` is false; the extracted files are removed once the conversion is
    complete, and those a killed run left behind at the next start.
    """
    conversion = dict(labels=labels, spacing=spacing, matrix_size=matrix_size, max_cases=max_cases)
    images_from = dict(base_url=base_url, record_url=record_url, pinned_sha256=pinned_sha256)
    _check_inputs(
        folds=folds,
        labels_commit=labels_commit,
        labels_dir=labels_dir,
        labels_base_url=labels_base_url,
        timeout=timeout,
        retries=retries,
        **images_from,
        **conversion,
    )
    dest = Path(dest)
    cache = Path(cache) if cache else dest / ".downloads"
    _remove_stale_extractions(cache)
    request = _dataset_request(folds, labels_commit, labels_dir, **conversion)
    if not force and _layout.is_complete(dest, request):
        return None
    _before_download(dest)
    net = dict(timeout=timeout, retries=retries, retry_wait=retry_wait)
    remotes = image_archives(folds, **images_from, **net)
    ensure_free_space(cache, bytes_to_fetch(remotes, cache), what=f"the PI-CAI archives of folds {sorted(folds)}")
    downloads = [_fetch_fold(remote, cache, record_url=record_url, progress=progress, **net) for remote in remotes]
    extra, extracted = _provenance(remotes, record_url, pinned_sha256), []
    if labels_dir is None:
        labels_zip, labels_dir, labels_note = _fetch_labels(labels_commit, labels_base_url, cache, progress, **net)
        downloads.append(labels_zip)
        extracted.append(labels_dir)
        extra.update(labels_note)
    images_dir = _extract_folds(downloads[: len(remotes)], cache / "images", progress=progress)
    extracted.append(images_dir)
    summary = convert_picai(
        images_dir, labels_dir, dest, **conversion, request=request, extra=extra, force=force, progress=progress
    )
    _print_summary(summary, dest, labels)
    _remove_downloads(extracted, [] if keep_archives else downloads)
    return dest
