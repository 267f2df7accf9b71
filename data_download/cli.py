"""``python -m data_download {picai,brats2018,msd-brain,synthetic,folder} --dest DIR ...``

Every source ends in the common layout (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
A re-run over a complete dataset does nothing; an interrupted one resumes. Failures end
with one paragraph on stderr saying what happened and what to do, and exit status 1
(2 for a wrong command line).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

from . import brats, folder, msd, picai
from ._layout import check_max_cases
from .remote import DownloadError, OptionError, RemoteFile, check_transfer_options, describe, remote_size


def _common(
    parser: argparse.ArgumentParser,
    force_help: str = "convert again even if DEST is complete (downloads are still only re-verified)",
) -> None:
    parser.add_argument("--dest", type=Path, required=True, help="dataset folder to write (the common layout)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be fetched or written, then stop")
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _network(parser: argparse.ArgumentParser, official: str) -> None:
    parser.add_argument("--base-url", default=official, help=f"mirror replacing {official} (same file names under it)")
    parser.add_argument("--cache", type=Path, help="folder for downloaded archives (default DEST/.downloads)")
    parser.add_argument(
        "--delete-archives",
        dest="keep_archives",
        action="store_false",
        help="delete the downloaded archives after a successful conversion",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds without data, or with under 1 KiB/s on average over as long, before a retry (60)",
    )
    parser.add_argument("--retries", type=int, default=2, help="automatic retries of a failed transfer (2)")


def _local(parser: argparse.ArgumentParser) -> None:
    # One command line for every source (python -m data_download SOURCE --dest DIR [--base-url URL]).
    parser.add_argument("--base-url", help="accepted for a uniform command line; this source downloads nothing")


def _max_cases(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-cases", type=int, help="convert only the first N cases (sorted by id), for quick tries")


def _picai_checksums(parser: argparse.ArgumentParser) -> None:
    """What the PI-CAI archives are checked against: the Zenodo record and the sha256 pins."""
    parser.add_argument(
        "--record-url",
        default=picai.ZENODO_RECORD_URL,
        help="the Zenodo record (JSON) whose sizes and md5 the archives must match (as well as the sha256 "
        "pinned in this package), wherever they come from; an https:// or file:// address (%(default)s)",
    )
    pins = parser.add_mutually_exclusive_group()
    pins.add_argument(
        "--pinned-sha256",
        type=Path,
        metavar="FILE",
        help="sha256 the fold archives must have, in place of those pinned in this package for record 6624726 "
        "(lines '<sha256>  <file name>', as sha256sum writes them): for another version of the record",
    )
    pins.add_argument(
        "--no-pinned-checksums",
        action="store_true",
        help="do not check the archives against the sha256 pinned in this package; this weakens the check: "
        "the record (--record-url) is then the only one, and a mirror serving its own record defeats it",
    )


def _sub_command(sources: argparse._SubParsersAction, name: str, module, summary: str) -> argparse.ArgumentParser:
    """A sub-command whose description is its module's docstring."""
    return sources.add_parser(
        name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _add_picai(sources: argparse._SubParsersAction) -> None:
    """The ``picai`` sub-command: PI-CAI 2022 from Zenodo, its checks, labels and resampling."""
    p = _sub_command(sources, "picai", picai, "PI-CAI 2022 prostate bpMRI (Zenodo + picai_labels; CC BY-NC 4.0)")
    _common(p)
    _network(p, picai.ZENODO_RECORD_URL)
    _picai_checksums(p)
    p.add_argument("--folds", type=int, nargs="+", default=list(picai.FOLDS), help="image folds to fetch (0-4; all)")
    p.add_argument(
        "--labels",
        choices=sorted(picai.LABEL_SETS),
        default="human",
        help="human: expert labels only; human+pooch25 / human+ai: expert labels, then "
        "Pooch25 or AI (Bosma22a) labels for the remaining cases",
    )
    p.add_argument("--labels-commit", default=picai.LABELS_COMMIT, help="picai_labels commit (%(default)s)")
    p.add_argument(
        "--labels-base-url",
        default=picai.LABELS_ARCHIVE_URL,
        help="where <commit>.zip of picai_labels is served (%(default)s)",
    )
    p.add_argument("--labels-dir", type=Path, help="use this clone of picai_labels instead of downloading it")
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=list(picai.DEFAULT_SPACING),
        metavar=("Z", "Y", "X"),
        help="output voxel size in mm (3.0 0.5 0.5, as the PI-CAI U-Net baseline)",
    )
    p.add_argument(
        "--matrix-size",
        type=int,
        nargs=3,
        default=list(picai.DEFAULT_MATRIX_SIZE),
        metavar=("Z", "Y", "X"),
        help="centre crop/pad to this many voxels (20 256 256)",
    )
    _max_cases(p)


def _add_brats2018(sources: argparse._SubParsersAction) -> None:
    """The ``brats2018`` sub-command: BraTS 2018 from the user's own copy."""
    p = _sub_command(sources, "brats2018", brats, "BraTS 2018 training data from your own (registered) copy")
    _common(p)
    _local(p)
    p.add_argument("--source", type=Path, required=True, help=f"your {brats.TRAINING_FOLDER} folder (or its parent)")
    _max_cases(p)


def _add_msd_brain(sources: argparse._SubParsersAction) -> None:
    """The ``msd-brain`` sub-command: MSD Task01_BrainTumour."""
    p = _sub_command(sources, "msd-brain", msd, "Medical Segmentation Decathlon Task01_BrainTumour (CC-BY-SA 4.0)")
    _common(p)
    _network(p, msd.BASE_URL)
    _max_cases(p)


def _add_synthetic(sources: argparse._SubParsersAction) -> None:
    """The ``synthetic`` sub-command: make_dataset's arguments (left out: its defaults)."""
    p = sources.add_parser(
        "synthetic",
        help="synthetic MRI-like cases with lesions of chosen size and outline amplitude",
        description="Generate synthetic cases with afl_core.synthetic.make_dataset; options "
        "left out take that function's defaults.",
    )
    _common(
        p,
        "replace a dataset in DEST made with other options, or one whose case files are cut short "
        "(the same options make the same files: a complete dataset of these options is kept)",
    )
    _local(p)
    p.add_argument("--cases", type=int, default=16, help="number of cases (16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="D slices of H x W voxels")
    p.add_argument("--lesion-radius", type=float, nargs=2, metavar=("LO", "HI"), help="lesion radius range (voxels)")
    p.add_argument(
        "--irregularity",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="range of the outline amplitude a, drawn per lesion (0: smooth ellipse, ~0.6: strongly zigzag); "
        "not the measured boundary irregularity",
    )
    p.add_argument("--empty-fraction", type=float, help="fraction of cases without a lesion")
    p.add_argument("--channels", dest="n_channels", type=int, help="number of image channels")
    p.add_argument("--max-lesions", type=int, help="at most this many lesions per case")
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("D", "H", "W"),
        help="voxel size in mm, in the order of --shape (slice thickness first)",
    )


def _add_folder(sources: argparse._SubParsersAction) -> None:
    """The ``folder`` sub-command: the user's own folder and its file name templates."""
    p = _sub_command(sources, "folder", folder, "your own folder of NIfTI (or MHA / NRRD) scans and lesion masks")
    p.add_argument("source", type=Path, metavar="SRC", help="the folder holding your scans and labels")
    _common(p)
    p.add_argument(
        "--image",
        dest="images",
        action="append",
        required=True,
        metavar="TEMPLATE",
        help="one channel's files under SRC, {case} standing for the case id, e.g. '{case}_t2.nii.gz'; "
        "repeat for each channel, in channel order",
    )
    p.add_argument("--label", required=True, metavar="TEMPLATE", help="the lesion masks, e.g. '{case}_seg.nii.gz'")
    p.add_argument(
        "--lesion-values",
        type=int,
        nargs="+",
        metavar="V",
        help="the label values that are lesion (the others become background); needed when labels are not 0/1",
    )
    p.add_argument(
        "--patient",
        metavar="TEMPLATE",
        help="how case ids name patients, e.g. '{patient}_{visit}': a patient's cases stay on one side of a split",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_download", description=__doc__.split("\n\n")[0].strip("`"))
    sources = parser.add_subparsers(
        dest="command", required=True, metavar="{picai,brats2018,msd-brain,synthetic,folder}"
    )
    _add_picai(sources)
    _add_brats2018(sources)
    _add_msd_brain(sources)
    _add_synthetic(sources)
    _add_folder(sources)
    return parser


def _network_options(args) -> dict:
    return dict(timeout=args.timeout, retries=args.retries)


def _print_plan(remotes: list[RemoteFile], folder: Path) -> None:
    print(f"Would fetch into {folder}:")
    for line in describe(remotes, folder):
        print(f"  {line}")


def _picai_pins(args):
    """The sha256 pins the PI-CAI fold archives are checked against (``None``: no pin)."""
    if args.no_pinned_checksums:
        return None
    if args.pinned_sha256 is not None:
        return picai.read_pinned_sha256(args.pinned_sha256)
    return picai.PINNED_SHA256


def _run_picai(args) -> int:
    cache = args.cache or args.dest / ".downloads"
    # What the plan and the download share: the dry run checks exactly what the download would.
    options = dict(
        folds=args.folds,
        labels=args.labels,
        base_url=args.base_url,
        record_url=args.record_url,
        pinned_sha256=_picai_pins(args),
        labels_commit=args.labels_commit,
        labels_base_url=args.labels_base_url,
        labels_dir=args.labels_dir,
        spacing=args.spacing,
        matrix_size=args.matrix_size,
        max_cases=args.max_cases,
        **_network_options(args),
    )
    if args.dry_run:
        remotes = picai.plan_picai(**options)
        print(picai.LICENCE_NOTICE)
        _print_plan(remotes, cache)
        print(
            f"then convert ({args.labels} labels, {' x '.join(map(str, args.spacing))} mm, "
            f"{' x '.join(map(str, args.matrix_size))} voxels) into {args.dest}"
        )
        return 0
    done = picai.download_picai(
        args.dest,
        cache=args.cache,
        keep_archives=args.keep_archives,
        force=args.force,
        progress=args.progress,
        **options,
    )
    return _finished(done, args.dest, "PI-CAI")


def _run_msd(args) -> int:
    if args.dry_run:
        check_transfer_options(**_network_options(args))
        check_max_cases(args.max_cases)
        remote = msd.archive(args.base_url)
        sized = RemoteFile(remote.url, remote.name, remote.checksum, remote_size(remote.url, timeout=args.timeout))
        print(msd.LICENCE_NOTICE)
        _print_plan([sized], args.cache or args.dest / ".downloads")
        print(f"then convert {'all' if args.max_cases is None else args.max_cases} training cases into {args.dest}")
        return 0
    done = msd.download_msd(
        args.dest,
        base_url=args.base_url,
        cache=args.cache,
        max_cases=args.max_cases,
        keep_archives=args.keep_archives,
        force=args.force,
        progress=args.progress,
        **_network_options(args),
    )
    return _finished(done, args.dest, "MSD Task01_BrainTumour")


def _run_brats(args) -> int:
    if args.dry_run:
        check_max_cases(args.max_cases)
        cases = brats.find_cases(args.source)
        grades = [grade for grade, _ in cases.values()]
        count = len(cases) if args.max_cases is None else min(args.max_cases, len(cases))
        print(
            f"{len(cases)} complete BraTS 2018 cases found ({grades.count('HGG')} HGG, {grades.count('LGG')} LGG); "
            f"would convert {count} into {args.dest}"
        )
        return 0
    done = brats.convert_brats2018(
        args.source, args.dest, max_cases=args.max_cases, force=args.force, progress=args.progress
    )
    return _finished(done, args.dest, "BraTS 2018")


def _run_synthetic(args) -> int:
    from afl_core._io import FolderBusy
    from afl_core.synthetic import ForeignFilesError, make_dataset

    # Only the options given are passed on: the generator's own defaults stay the defaults.
    options = {
        name: (tuple(value) if isinstance(value, list) else value)
        for name in _SYNTHETIC_OPTIONS
        if (value := getattr(args, name)) is not None
    }
    if args.dry_run:
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "generator defaults"
        print(f"Would generate {args.cases} synthetic cases (seed {args.seed}; {shown}) into {args.dest}")
        return 0
    marker = args.dest / "dataset.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    try:
        make_dataset(args.dest, args.cases, seed=args.seed, overwrite=args.force, progress=args.progress, **options)
    except ForeignFilesError as exc:
        raise DownloadError(f"{_as_options(str(exc))}; --force does not replace them.") from None
    except FileExistsError as exc:
        raise DownloadError(f"{_as_options(str(exc))}.") from None
    except FolderBusy as exc:  # another process is writing --dest
        raise DownloadError(f"{exc}.") from None
    except ValueError as exc:  # NotEnoughMemory too: the size asked for cannot be made here
        raise DownloadError(f"Invalid generator options: {_as_options(str(exc))}.") from None
    if before is not None and marker.stat().st_mtime_ns == before:
        # Not _finished's advice: --force replaces a dataset of other options, and these make the same files.
        print(
            f"The synthetic dataset in {args.dest} is already complete and was made with these options, "
            "which make the same files again; nothing to do (delete the folder to generate it anew)."
        )
        return 0
    print(f"synthetic: {args.cases} cases in {args.dest}.")
    return 0


def _run_folder(args) -> int:
    options = dict(images=args.images, label=args.label, lesion_values=args.lesion_values, patient=args.patient)
    if args.dry_run:
        plan = folder.check_folder(args.source, exclude=args.dest, progress=args.progress, **options)
        print(
            f"{len(plan.cases)} cases in {args.source}, channels {', '.join(plan.channel_names)}, label values "
            f"{plan.label_values} (lesion: {plan.lesion_values}); would convert them into {args.dest}"
        )
        return 0
    folder.convert_folder(args.source, args.dest, force=args.force, progress=args.progress, **options)
    return 0


_SYNTHETIC_OPTIONS = (
    "shape",
    "lesion_radius",
    "irregularity",
    "empty_fraction",
    "n_channels",
    "max_lesions",
    "spacing",
)
# make_dataset's messages name its parameters; the command line's user knows the options.
_OPTION_OF = {
    "n_cases": "--cases",
    "seed": "--seed",
    "n_channels": "--channels",
    "pass overwrite=True": "re-run with --force",
    "choose another folder": "choose another --dest",
    **{name: "--" + name.replace("_", "-") for name in _SYNTHETIC_OPTIONS if name != "n_channels"},
}
_PARAMETER = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _OPTION_OF), key=len, reverse=True)) + r")\b")


def _as_options(message: str) -> str:
    """``message`` with make_dataset's parameter names replaced by the options that set them."""
    return _PARAMETER.sub(lambda match: _OPTION_OF[match.group(1)], message)


def _finished(result, dest: Path, name: str) -> int:
    if result is None:
        print(
            f"The {name} dataset in {dest} is already complete for these options; nothing to do "
            "(use --force to convert it again)."
        )
    return 0


_RUNNERS = {
    "picai": _run_picai,
    "brats2018": _run_brats,
    "msd-brain": _run_msd,
    "synthetic": _run_synthetic,
    "folder": _run_folder,
}


def _check_folders(args) -> None:
    """Refuse a --dest (or --cache) that is a file before anything else happens."""
    for option in ("dest", "cache"):
        path = getattr(args, option, None)
        if path is not None and path.exists() and not path.is_dir():
            raise OptionError(
                f"--{option} {path} is a file; choose a folder (a new one, or the one an earlier run of this "
                "command wrote) and re-run."
            )


def _report(message: str) -> None:
    # Paths and URLs are never broken across lines, so they can be copied; a message's own
    # lines (a list of problems) stay lines.
    lines = message.split("\n")
    wrapped = [
        textwrap.fill(
            line,
            width=100,
            initial_indent="error: " if index == 0 else "  ",
            subsequent_indent="    " if line.startswith("- ") else "  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        for index, line in enumerate(lines)
    ]
    print("\n".join(wrapped), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _check_folders(args)
        return _RUNNERS[args.command](args)
    except DownloadError as exc:
        _report(str(exc))
    except KeyboardInterrupt:
        _report(
            "Interrupted. Completed downloads and converted cases are kept, and a partial download resumes: "
            "re-run the same command to continue."
        )
        return 130
    except OSError as exc:
        _report(
            f"A file operation failed ({exc}). Check that --dest (and --cache) are writable and that the "
            "disk is not full, then re-run the same command; completed work is kept."
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
