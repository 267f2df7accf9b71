"""A learner's own folder of scans and lesion masks, into the common layout.

``afl-data folder SRC --dest DEST --image '{case}_t2.nii.gz' [--image '{case}_adc.nii.gz' ...]
--label '{case}_seg.nii.gz' [--lesion-values 1 2] [--patient '{patient}_{visit}'] [--force]``

Templates. Each ``--image`` is one channel, in order (the first is channel 0000), and
``--label`` is the lesion mask. A template is a path under SRC in which ``{case}`` stands
for the case id; it may name folders (``'{case}/t2.nii.gz'``, ``'labels/{case}.nii.gz'``)
and hold other ``{name}`` placeholders, each standing for any part of one folder or file
name (``'{case}/{date}_t2.nii.gz'``). Files are NIfTI (``.nii.gz``, ``.nii``) or, with
SimpleITK (the ``afl-tutorial[picai]`` extra), MetaImage ``.mha`` and NRRD ``.nrrd``; a
case's files must share one grid (resample them first if they do not).

Labels. Masks holding only 0 and 1 are taken as they are. Other values (several lesion
classes, organs, ...) need ``--lesion-values``: the values named become lesion (1), every
other value background (0).

Patients. ``--patient '{patient}_{visit}'`` is matched against the case ids; the cases of
one patient then stay on one side of every training / validation split (dataset.json's
``patients``, read by :func:`afl_core.data.patient_grouping`).

Checks. Everything is checked before anything is written, and every problem is reported at
once with its file: a case missing a channel or its label, a label without images, a case
id twice (two files for one template, ids differing only in letter case, a file that two
templates match), a template that matches nothing, unreadable, 4D or non-3D files, shapes
or affines that differ between a case's files, voxel sizes or affines that are not finite,
NaN intensities, label values other than 0/1 without ``--lesion-values``, and lesion values
that no label holds.

Resume and refuse. A re-run of the same command over a complete dataset does nothing, and
over an interrupted one converts the cases still missing. A different command over a
dataset this command wrote is refused, naming what differs, unless ``--force`` (which
converts again); a folder holding another source's dataset is never written into. The
source files are not compared again once the dataset is complete: after editing them, re-run
with ``--force``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from afl_core.data import (
    IMAGES_DIR,
    LABELS_DIR,
    channel_path,
    check_geometry,
    label_path,
    list_cases,
    read_dataset_json,
)
from afl_core.data.layout import AFFINE_ATOL, check_case_id, read_nifti

from . import _layout
from .archives import is_junk
from .remote import DownloadError, OptionError

__all__ = ["FolderPlan", "check_folder", "convert_folder", "read_volume", "write_example_folder"]

SOURCE = "folder"
NIFTI_ENDINGS = (".nii.gz", ".nii")
SIMPLEITK_ENDINGS = (".mha", ".nrrd")
# The header fields that hold the voxel size and orientation, for a message asking to repair them.
_SPACING_FIELDS = {".mha": "ElementSpacing, TransformMatrix, Offset", ".nrrd": "space directions, space origin"}
# The command-line spelling of each entry of the request, to name what differs.
_OPTION_NAMES = {
    "folder": "SRC",
    "images": "--image",
    "label": "--label",
    "lesion_values": "--lesion-values",
    "patient": "--patient",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_EXAMPLES = {"case": "{case}_t2.nii.gz", "patient": "{patient}_{visit}"}
_SPLIT_HINT = " Split it into one 3D file per channel and give one --image template for each."
_SIMPLEITK_HINT = "pip install 'afl-tutorial[picai]' (or pip install SimpleITK), or convert them to NIfTI (.nii.gz)"
EXAMPLE_MARKER = "afl-example.json"


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class _Template:
    """One template: its text, the option that gave it, and the pattern it stands for."""

    text: str
    option: str
    pattern: re.Pattern

    def match(self, name: str, key: str) -> str | None:
        """The value of ``{key}`` when ``name`` fits the template, else ``None``."""
        found = self.pattern.fullmatch(name)
        return found.group(key) if found else None

    def path_for(self, key: str, value: str) -> str | None:
        """The path the template gives for ``{key} = value``; ``None`` when it has other
        placeholders (then it stands for many paths)."""
        names = _PLACEHOLDER.findall(self.text)
        return self.text.replace(f"{{{key}}}", value) if set(names) == {key} else None

    def __str__(self) -> str:
        return f"{self.option} '{self.text}'"


def _parse_template(text: str, option: str, key: str) -> _Template:
    """``text`` as a :class:`_Template` in which ``{key}`` appears once and every other
    ``{name}`` matches any part of one path component; :class:`OptionError` otherwise."""
    names = _PLACEHOLDER.findall(text)
    stray = _PLACEHOLDER.sub("", text)
    if names.count(key) != 1 or "{" in stray or "}" in stray or not all(n.isidentifier() for n in names):
        raise OptionError(
            f"{option} '{text}' must hold {{{key}}} exactly once (other placeholders are {{name}} with a plain "
            f"name, e.g. {{visit}}), e.g. {option} '{_EXAMPLES[key]}'."
        )
    parts, pattern = _PLACEHOLDER.split(text), []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            pattern.append(re.escape(part))
        else:
            pattern.append(f"(?P<{key}>[^/]+)" if part == key else "[^/]+")
    return _Template(text, option, re.compile("".join(pattern)))


def _check_file_template(text: str, option: str) -> _Template:
    path = text.replace("\\", "/")
    if path.startswith("/") or ".." in path.split("/"):
        raise OptionError(f"{option} '{text}' must be a path inside SRC (relative, without '..').")
    if not path.endswith(NIFTI_ENDINGS + SIMPLEITK_ENDINGS):
        raise OptionError(
            f"{option} '{text}' must end in a file type this command reads: "
            f"{', '.join(NIFTI_ENDINGS + SIMPLEITK_ENDINGS)} (.mha and .nrrd need SimpleITK)."
        )
    return _parse_template(path, option, "case")


def _check_options(
    images: Sequence[str], label: str, lesion_values: Sequence[int] | None, patient: str | None
) -> tuple[list[_Template], _Template, list[int] | None, _Template | None]:
    """The parsed templates and the sorted lesion values; :class:`OptionError` for options
    that cannot work, before any file is looked at."""
    if isinstance(images, str) or not images:
        raise OptionError("Give one --image template per channel, e.g. --image '{case}_t2.nii.gz'.")
    texts = [*images, label]
    twice = sorted({t for t in texts if texts.count(t) > 1})
    if twice:
        raise OptionError(f"The template '{twice[0]}' is given twice; each channel and the label need their own.")
    image_templates = [_check_file_template(t, "--image") for t in images]
    label_template = _check_file_template(label, "--label")
    values = None
    if lesion_values is not None:
        if isinstance(lesion_values, (str, bytes)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in lesion_values
        ):
            raise OptionError(f"--lesion-values must be whole numbers, got {lesion_values!r}.")
        values = sorted({int(v) for v in lesion_values})
        if not values or 0 in values:
            raise OptionError(
                f"--lesion-values {' '.join(map(str, lesion_values))}: name the label values that are lesion, "
                "not 0 (background), e.g. --lesion-values 1 2."
            )
    patient_template = _parse_template(patient, "--patient", "patient") if patient is not None else None
    return image_templates, label_template, values, patient_template


# --------------------------------------------------------------------------- reading


def _simpleitk(paths: Sequence[Path]):
    """SimpleITK, or a :class:`DownloadError` naming the extra and the files that need it."""
    try:
        import SimpleITK
    except ImportError:
        shown = ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise DownloadError(
            f"{len(paths)} file(s) are MHA or NRRD ({shown}), which needs SimpleITK, not installed here: "
            f"{_SIMPLEITK_HINT}."
        ) from None
    return SimpleITK


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """One file's voxels, affine and voxel size, in NIfTI conventions.

    Args:
        path: a ``.nii.gz`` / ``.nii`` file, or (with SimpleITK) ``.mha`` / ``.nrrd``.

    Returns:
        ``(array, affine, spacing)``: a 3D array in NIfTI axis order ``(X, Y, Z)`` (a trailing
        axis of length 1 is dropped), the 4x4 voxel-to-world (RAS, mm) matrix and the voxel
        size in mm. MHA / NRRD geometry is turned from LPS into RAS.

    Raises:
        ValueError: the file cannot be read, or is not one 3D volume (the message names it).
        DownloadError: an MHA / NRRD file while SimpleITK is not installed.
    """
    path = Path(path)
    if path.name.endswith(NIFTI_ENDINGS):
        try:
            return read_nifti(path, str(path))
        except ValueError as exc:
            multi_volume = re.search(r"holds a [4-9]D array", str(exc)) is not None
            raise ValueError(f"{exc}.{_SPLIT_HINT if multi_volume else ''}") from None
    sitk = _simpleitk([path])
    from .picai import sitk_to_nifti

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        problem = " ".join(str(exc).split())[-200:]
        raise ValueError(f"cannot read {path} (SimpleITK: {problem}); the file is damaged or not an image") from None
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() != 3 or components != 1:
        shape = (*image.GetSize(), components) if components > 1 else tuple(image.GetSize())
        hint = _SPLIT_HINT if len(shape) > 3 else ""
        raise ValueError(f"{path} holds a {len(shape)}D image {shape}; each file must be one 3D volume.{hint}")
    array, affine = sitk_to_nifti(image)
    return (
        array,
        affine,
        check_geometry(path, image.GetSpacing(), affine, header=_SPACING_FIELDS.get(path.suffix, "spacing, direction")),
    )


def _singular_affine(path: Path, affine: np.ndarray) -> str | None:
    """A problem when the (finite) affine maps the voxels onto less than a volume."""
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        return f"{path}: its affine is singular (a voxel size of 0?): the header is damaged"
    return None


def _grid_problem(path: Path, data: np.ndarray, affine: np.ndarray, ref: Path, ref_data, ref_affine) -> str | None:
    """How ``path``'s grid differs from the case's first file ``ref``, if it does."""
    if data.shape != ref_data.shape:
        return f"{path} has shape {data.shape} but {ref} has {ref_data.shape}: a case's files must share one grid"
    difference = float(np.max(np.abs(affine - ref_affine)))
    if difference > AFFINE_ATOL:
        return (
            f"{path} and {ref} have different affines (voxel-to-world matrices differ by up to {difference:.3g} mm, "
            f"tolerance {AFFINE_ATOL} mm): resample the case's files onto one grid"
        )
    return None


def _label_values(path: Path, data: np.ndarray) -> tuple[list[int], str | None]:
    """The values a label holds, or a problem when they are not whole numbers."""
    if data.dtype.kind not in "biuf":
        return [], f"{path} holds values of type {data.dtype}, not numbers: a label holds whole numbers"
    values = np.unique(data)
    if data.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        odd = [f"{v:g}" for v in values if not (np.isfinite(v) and v == round(v))][:3]
        return [], (
            f"{path} holds label values that are not whole numbers ({', '.join(odd)}, ...): resample labels with "
            "nearest-neighbour interpolation, never linear"
        )
    return [int(v) for v in values], None


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class FolderPlan:
    """A checked folder: what :func:`convert_folder` will write.

    ``cases`` maps each case id to ``(channel files, label file)``; ``patients`` maps case
    ids to patients (``None`` without ``--patient``); ``label_values`` are the values found
    in the labels; ``lesion_values`` those that become lesion; ``channel_names`` come from
    the ``--image`` templates.
    """

    source: Path
    cases: dict[str, tuple[list[Path], Path]]
    patients: dict[str, str] | None
    label_values: list[int]
    lesion_values: list[int]
    channel_names: list[str]


def _channel_names(templates: Sequence[_Template]) -> list[str]:
    """``'{case}_t2.nii.gz'`` -> ``t2``; ``'images/{case}.nii.gz'`` -> ``images``."""
    names = []
    for index, template in enumerate(templates):
        stem = next(template.text[: -len(e)] for e in NIFTI_ENDINGS + SIMPLEITK_ENDINGS if template.text.endswith(e))
        names.append(_PLACEHOLDER.sub("", stem).strip("_-./ ") or f"channel{index}")
    return names


def _files(source: Path, exclude: Path | None) -> list[str]:
    """Every file under ``source`` as a relative POSIX path; hidden files, macOS junk and
    ``exclude`` (a destination inside the source) left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        folder = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not is_junk(d) and (folder / d).resolve() != exclude
        )
        for name in sorted(filenames):
            if not name.startswith(".") and not is_junk(name):
                found.append((folder / name).relative_to(source).as_posix())
    return found


def _match_files(
    source: Path, files: list[str], templates: list[_Template], problems: list[str]
) -> list[dict[str, list[Path]]]:
    """For each template, ``{case: files}``; a file that several templates match, and a
    template that matches nothing, are problems."""
    matches: list[dict[str, list[Path]]] = [{} for _ in templates]
    for name in files:
        claimed = []
        for index, template in enumerate(templates):
            case = template.match(name, "case")
            if case is not None:
                matches[index].setdefault(case, []).append(source / name)
                claimed.append(template)
        if len(claimed) > 1:
            problems.append(
                f"{source / name} fits both {claimed[0]} and {claimed[1]}: make the templates tell the files apart "
                "(e.g. '{case}_t2.nii.gz' rather than '{case}.nii.gz', or put images and labels in their own folders)"
            )
    for index, template in enumerate(templates):
        if not matches[index]:
            shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
            problems.append(f"{template} matches no file under {source} (found there: {shown})")
    return matches


def _case_problems(
    source: Path,
    case: str,
    images: list[_Template],
    label: _Template,
    image_matches: list[dict[str, list[Path]]],
    label_matches: dict[str, list[Path]],
) -> list[str]:
    """A case's missing or doubled files. A template that matches no file at all is one
    problem already, so the cases are not also said to lack it."""
    problems = []

    def expected(template: _Template) -> str:
        path = template.path_for("case", case)
        return f"expected {source / path}" if path else f"no file fits it with {{case}} = {case}"

    for template, found in [*zip(images, image_matches), (label, label_matches)]:
        if len(found.get(case, [])) > 1:
            problems.append(
                f"case {case}: {len(found[case])} files fit {template} ({', '.join(map(str, found[case]))}); "
                "keep one, or make the template more specific"
            )
    if case in label_matches and not any(case in found for found in image_matches):
        if any(image_matches):
            wanted = "; ".join(f"{t} {expected(t)}" for t, found in zip(images, image_matches) if found)
            problems.append(f"{label_matches[case][0]} is a label without images ({wanted})")
        return problems
    for template, found in zip(images, image_matches):
        if found and case not in found:
            problems.append(f"case {case} lacks the channel {template}: {expected(template)}")
    if label_matches and case not in label_matches:
        problems.append(f"case {case} has no label ({label}): {expected(label)}")
    return problems


def _case_id_problems(cases: list[str], matches: list[dict[str, list[Path]]]) -> list[str]:
    """Case ids that cannot be file names, and ids that differ only in letter case."""
    problems = []
    lowered: dict[str, list[str]] = {}
    for case in cases:
        lowered.setdefault(case.casefold(), []).append(case)
        try:
            check_case_id(case)
        except ValueError as exc:
            problems.append(f"{exc}: rename its files")
    for clash in (names for names in lowered.values() if len(names) > 1):
        problems.append(
            f"the case ids {' and '.join(clash)} differ only in letter case ({_files_of(clash, matches)}): their "
            "files would overwrite each other on macOS and Windows; rename one"
        )
    return problems


def _patients(
    template: _Template, cases: list[str], matches: list[dict[str, list[Path]]], problems: list[str]
) -> dict[str, str]:
    """The patient of each case, by ``template``; a case that does not fit it is a problem."""
    patients = {}
    for case in cases:
        who = template.match(case, "patient")
        if who is None:
            problems.append(f"case {case} does not fit {template} (its files: {_files_of([case], matches)})")
        else:
            patients[case] = who
    return patients


def _read_present_files(
    present: dict[str, tuple[list[Path], Path | None]],
    values: list[int] | None,
    problems: list[str],
    *,
    progress: bool,
) -> set[int]:
    """Read every file present, adding what is wrong with each to ``problems``; return the
    values found in the labels."""
    # SimpleITK once for all MHA / NRRD files: its absence is one problem, not one per file.
    needs_sitk = sorted({p for files, label in present.values() for p in [*files, label] if _needs_simpleitk(p)})
    unreadable: set[Path] = set()
    if needs_sitk:
        try:
            _simpleitk(needs_sitk)
        except DownloadError as exc:
            problems.append(str(exc).rstrip("."))
            unreadable = set(needs_sitk)
    found_values: set[int] = set()
    for channel_files, label_file in tqdm(present.values(), desc="check", unit="case", disable=not progress):
        readable = [p for p in channel_files if p not in unreadable]
        problems += _check_case(readable, None if label_file in unreadable else label_file, values, found_values)
    return found_values


def _label_value_problems(values: list[int] | None, found_values: set[int]) -> list[str]:
    """Labels that are not 0/1 without ``--lesion-values``, and lesion values no label holds."""
    if values is None:
        if found_values <= {0, 1}:
            return []
        lesion_like = " ".join(str(v) for v in sorted(found_values) if v != 0)
        return [
            f"the labels hold the values {sorted(found_values)}: say which are lesion with --lesion-values (e.g. "
            f"--lesion-values {lesion_like}); every other value becomes background"
        ]
    absent = [v for v in values if v not in found_values]
    if not found_values or not absent:
        return []
    return [
        f"--lesion-values {' '.join(map(str, absent))}: no label holds {'it' if len(absent) == 1 else 'them'} "
        f"(the labels hold {', '.join(map(str, sorted(found_values)))}); name only values that mark lesions"
    ]


def check_folder(
    source: str | os.PathLike,
    *,
    images: Sequence[str],
    label: str,
    lesion_values: Sequence[int] | None = None,
    patient: str | None = None,
    exclude: str | os.PathLike | None = None,
    progress: bool = True,
) -> FolderPlan:
    """Find and check every case of a user's folder, reading every file once.

    Args:
        source: the folder (SRC).
        images: one template per channel, e.g. ``['{case}_t2.nii.gz', '{case}_adc.nii.gz']``.
        label: the label template, e.g. ``'{case}_seg.nii.gz'``.
        lesion_values: the label values that are lesion; ``None``: labels must hold 0/1.
        patient: a template matched against the case ids, holding ``{patient}``.
        exclude: a folder under ``source`` to leave out (the destination, when inside it).
        progress: show a progress bar while the files are read.

    Returns:
        The :class:`FolderPlan` of a folder without problems.

    Raises:
        OptionError: a template or ``lesion_values`` that cannot work.
        DownloadError: ``source`` is not a folder, or one or more problems were found; the
            message lists every problem, each naming its file.
    """
    image_templates, label_template, values, patient_template = _check_options(images, label, lesion_values, patient)
    source = Path(source)
    if not source.is_dir():
        raise DownloadError(f"SRC {source} is not a folder: give the folder that holds your scans and labels.")
    files = _files(source, Path(exclude).resolve() if exclude is not None else None)
    if not files:
        raise DownloadError(f"SRC {source} holds no files: give the folder that holds your scans and labels.")
    problems: list[str] = []
    matches = _match_files(source, files, [*image_templates, label_template], problems)
    image_matches, label_matches = matches[:-1], matches[-1]
    all_cases = sorted(set().union(*matches))
    problems += _case_id_problems(all_cases, matches)
    # Every file present is read, also those of an incomplete case: all problems come out at once.
    present: dict[str, tuple[list[Path], Path | None]] = {}
    complete: dict[str, tuple[list[Path], Path]] = {}
    for case in all_cases:
        case_problems = _case_problems(source, case, image_templates, label_template, image_matches, label_matches)
        problems += case_problems
        channel_files = [found[case][0] for found in image_matches if case in found]
        present[case] = (channel_files, label_matches[case][0] if case in label_matches else None)
        if not case_problems and all(case in found for found in matches):
            complete[case] = (channel_files, label_matches[case][0])
    patients = None
    if patient_template is not None:
        patients = _patients(patient_template, all_cases, matches, problems)
    found_values = _read_present_files(present, values, problems, progress=progress)
    problems += _label_value_problems(values, found_values)
    if problems:
        raise DownloadError(
            f"{len(problems)} problem(s) in {source}; nothing was written:\n"
            + "\n".join(f"- {p}" for p in problems)
            + "\nFix them (or the templates) and re-run the same command."
        )
    return FolderPlan(
        source,
        complete,
        patients,
        sorted(found_values),
        values if values is not None else [1],
        _channel_names(image_templates),
    )


def _files_of(cases: Sequence[str], matches: list[dict[str, list[Path]]]) -> str:
    """The files of ``cases``, for a message."""
    return ", ".join(str(p) for case in cases for found in matches for p in found.get(case, []))


def _needs_simpleitk(path: Path | None) -> bool:
    return path is not None and path.name.endswith(SIMPLEITK_ENDINGS)


def _check_case(
    channel_files: list[Path], label_file: Path | None, lesion_values: list[int] | None, found_values: set[int]
) -> list[str]:
    """Read one case's files (its label may be missing) and return their problems; the
    label's values join ``found_values``."""
    problems, grid = [], None
    for path in [*channel_files, *([label_file] if label_file is not None else [])]:
        try:
            data, affine, _ = read_volume(path)
        except ValueError as exc:
            problems.append(str(exc).rstrip("."))
            continue
        geometry = _singular_affine(path, affine)
        if geometry:
            problems.append(geometry)
            continue
        if grid is None:
            grid = (path, data, affine)
        else:
            mismatch = _grid_problem(path, data, affine, *grid)
            if mismatch:
                problems.append(mismatch)
        if path != label_file:
            if data.dtype.kind not in "biuf":
                problems.append(f"{path} holds values of type {data.dtype}, not intensities")
            elif data.dtype.kind == "f" and not np.all(np.isfinite(data)):
                problems.append(f"{path} holds {int(np.sum(~np.isfinite(data)))} NaN or infinite intensities")
            continue
        values, problem = _label_values(path, data)
        if problem:
            problems.append(problem)
            continue
        found_values.update(values)
        if lesion_values is None and not set(values) <= {0, 1}:
            problems.append(f"{path} holds the label values {values}, not only 0 and 1 (see --lesion-values below)")
    return problems


# --------------------------------------------------------------------------- conversion


def _load_case(
    channel_files: list[Path], label_file: Path, lesion_values: list[int]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(channels, 0/1 lesion mask, affine of the first channel)`` of one checked case."""
    channels, affine = [], None
    for path in channel_files:
        data, file_affine, _ = read_volume(path)
        channels.append(data)
        affine = file_affine if affine is None else affine
    label = read_volume(label_file)[0]
    return channels, np.isin(label, lesion_values).astype(np.uint8), affine


def _check_destination(source: Path, dest: Path, request: dict, force: bool) -> None:
    """Refuse a ``dest`` that is SRC itself, that holds another source's dataset (even with
    ``force``), or that holds a dataset of this command made with other options (unless
    ``force``), naming what differs."""
    if dest.resolve() == source.resolve():
        raise DownloadError(f"--dest {dest} is SRC itself; choose another folder for the converted dataset.")
    _layout.check_dest_source(dest, SOURCE)
    try:
        info = read_dataset_json(dest)
    except (FileNotFoundError, ValueError):
        info = None
    marker = dest / _layout.CONVERSION_MARKER
    if info is not None:
        if info.get("source") != SOURCE:  # a dataset.json without a source: not written by this command
            raise DownloadError(
                f"{dest} already holds a dataset that this command did not write; choose an empty folder with --dest."
            )
        previous = info.get("download")
    elif marker.is_file():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(previous, dict) or previous.pop("converter", None) != SOURCE:
            raise DownloadError(
                f"{dest} holds an unfinished conversion of another source; finish it with its own command, or "
                "choose an empty folder with --dest."
            )
    elif any((dest / folder).is_dir() and any((dest / folder).iterdir()) for folder in (IMAGES_DIR, LABELS_DIR)):
        raise DownloadError(
            f"{dest} holds {IMAGES_DIR}/ or {LABELS_DIR}/ files that this command did not write; choose an empty "
            "folder with --dest."
        )
    else:
        return
    if previous != request and not force:
        if isinstance(previous, dict):
            changes = "; ".join(
                f"{_OPTION_NAMES[key]} was {previous.get(key)!r}, now {value!r}"
                for key, value in request.items()
                if previous.get(key) != value
            )
        else:
            changes = "it was written by another version of this command"
        raise DownloadError(
            f"{dest} holds a dataset that `afl-data folder` converted with other options ({changes}). Re-run with "
            "--force to replace it, or choose another --dest."
        )


def convert_folder(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    images: Sequence[str],
    label: str,
    lesion_values: Sequence[int] | None = None,
    patient: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a user's folder of scans and lesion masks into the common layout.

    Every file is checked (see :func:`check_folder`) before anything is written; then
    ``dest`` gets ``imagesTr/<case>_<cccc>.nii.gz`` (channel ``cccc`` from the ``cccc``-th
    image template), ``labelsTr/<case>.nii.gz`` (uint8 0/1: 1 where the label holds one of
    ``lesion_values``) and ``dataset.json`` (``source: "folder"``, the templates, the
    lesion values and, with ``patient``, ``patients``: case -> patient).

    Args:
        source: the folder holding the user's files (SRC).
        dest: the dataset folder to write.
        images: one template per channel, in channel order, e.g.
            ``['{case}_t2.nii.gz', '{case}_adc.nii.gz']``; ``{case}`` is the case id.
        label: the label template, e.g. ``'{case}_seg.nii.gz'``.
        lesion_values: the label values that are lesion (the others become background);
            ``None``: every label must hold only 0 and 1.
        patient: a template matched against the case ids, e.g. ``'{patient}_{visit}'``,
            so that one patient's cases stay on one side of a split.
        force: convert again over a dataset this command wrote (with any options).
        progress: show progress bars.

    Returns:
        ``dest``. A dataset already complete for these arguments is left as it is (a
        message says so); an interrupted one is completed.

    Raises:
        OptionError: a template or ``lesion_values`` that cannot work.
        DownloadError: the folder's problems (all of them, each naming its file), or a
            ``dest`` holding another dataset; nothing is written then.
    """
    image_templates, label_template, values, _ = _check_options(images, label, lesion_values, patient)
    source, dest = Path(source), Path(dest)
    request = {
        "folder": str(source.resolve()),
        "images": [t.text for t in image_templates],
        "label": label_template.text,
        "lesion_values": values,
        "patient": patient,
    }
    if not force and _layout.is_complete(dest, request):
        print(
            f"The folder dataset in {dest} is already complete for these options; nothing to do "
            "(use --force to convert it again).",
            flush=True,
        )
        return dest
    _check_destination(source, dest, request, force)
    plan = check_folder(
        source, images=images, label=label, lesion_values=values, patient=patient, exclude=dest, progress=progress
    )
    loaders = {case: (lambda files=files: _load_case(*files, plan.lesion_values)) for case, files in plan.cases.items()}
    _layout.write_cases(
        dest, loaders, params={"converter": SOURCE, **request}, force=force, progress=progress, desc="folder"
    )
    lesion = ", ".join(map(str, plan.lesion_values))
    extra = {"patient_template": patient, "patients": plan.patients} if plan.patients is not None else {}
    _layout.finish(
        dest,
        set(plan.cases),
        channel_names=plan.channel_names,
        request=request,
        source=SOURCE,
        licence="the terms of the source data (converted from a local folder)",
        source_folder=request["folder"],
        templates={"images": request["images"], "label": request["label"]},
        lesion_values=plan.lesion_values,
        label_values_found=plan.label_values,
        label_mapping=f"lesion = label in {{{lesion}}}; every other value background",
        **extra,
    )
    print(f"folder: {len(plan.cases)} cases from {source} in {dest}.", flush=True)
    return dest


# --------------------------------------------------------------------------- example


def write_example_folder(
    dest: str | os.PathLike,
    *,
    n_cases: int = 6,
    seed: int = 0,
    shape: tuple[int, int, int] = (8, 64, 64),
    include_real: bool = False,
) -> dict:
    """Write a small folder laid out as a user's own data might be, to try ``afl-data folder`` on.

    The cases come from :func:`afl_core.synthetic.make_dataset` (ids ``case01``, ...): two
    channels ``<case>_t2.nii.gz`` and ``<case>_adc.nii.gz`` (T2W- and ADC-like) and a label
    ``<case>_seg.nii.gz`` in which lesions are marked 1 or 2 (two kinds of lesion, in
    turn), so ``--lesion-values`` is needed. With ``include_real`` the two real MRI cases of
    :func:`afl_core.environment.real_examples_dir` (pyradiomics' ``brain1`` and ``breast1``,
    BSD-3-Clause: their licence file is copied beside them) join them; they have one channel
    each and a grid of their own, so every case then has one channel, ``<case>_image.nii.gz``.

    Args:
        dest: the folder to write; it must be new, empty, or an earlier example folder
            (which is replaced).
        n_cases: number of synthetic cases.
        seed: the synthetic cases' seed.
        shape: ``(D, H, W)`` of the synthetic cases (slices first).
        include_real: add the two real MRI cases.

    Returns:
        The arguments of :func:`convert_folder` for this folder:
        ``{"images": [...], "label": "{case}_seg.nii.gz", "lesion_values": [...]}``
        (the lesion values that occur in the labels).

    Raises:
        FileExistsError: ``dest`` holds other files.
        ValueError: arguments that :func:`~afl_core.synthetic.make_dataset` refuses.
    """
    from afl_core.environment import real_examples_dir
    from afl_core.synthetic import make_dataset

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / EXAMPLE_MARKER).is_file())):
        raise FileExistsError(f"{dest} exists and holds other files; choose a new or empty folder for the example")
    images = ["{case}_image.nii.gz"] if include_real else ["{case}_t2.nii.gz", "{case}_adc.nii.gz"]
    label = "{case}_seg.nii.gz"
    staging = dest.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{dest.name}")
    staging.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            synthetic = make_dataset(
                Path(scratch) / "synthetic", n_cases, seed=seed, shape=shape, n_channels=len(images), progress=False
            )
            lesions_seen = 0
            for index, case in enumerate(list_cases(synthetic)):
                name = f"case{index + 1:02d}"
                for channel, template in enumerate(images):
                    shutil.copyfile(channel_path(synthetic, case, channel), staging / template.format(case=name))
                mask_image = nib.load(label_path(synthetic, case))
                components, count = ndimage.label(np.asanyarray(mask_image.dataobj), structure=np.ones((3, 3, 3)))
                kinds = 1 + (lesions_seen + np.arange(count + 1) - 1) % 2  # lesion k of the folder: kind 1, 2, 1, ...
                lesions_seen += count
                graded = np.where(components > 0, kinds[components], 0).astype(np.uint8)
                graded_image = nib.Nifti1Image(graded, mask_image.affine, mask_image.header)
                nib.save(graded_image, staging / label.format(case=name))
        if include_real:
            real = real_examples_dir()
            for name in ("brain1", "breast1"):
                shutil.copyfile(real / f"{name}_image.nii.gz", staging / images[0].format(case=name))
                shutil.copyfile(real / f"{name}_label.nii.gz", staging / label.format(case=name))
            shutil.copyfile(real / "LICENSE-pyradiomics.txt", staging / "LICENSE-pyradiomics.txt")
        templates = {"images": images, "label": label, "lesion_values": [1, 2] if lesions_seen > 1 else [1]}
        arguments = {"n_cases": n_cases, "seed": seed, "shape": list(shape), "include_real": include_real}
        (staging / EXAMPLE_MARKER).write_text(
            json.dumps({"written_by": "data_download.folder.write_example_folder", **arguments, **templates}, indent=2)
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return templates
