"""The committed studies: the tables behind notebooks 05 and 06, and the data that made them.

``results/<study>/`` (``comparison``, ``ablation``) holds ``per_case.csv`` (one row per arm x
seed x case), ``history.csv`` (one row per arm x seed x epoch) and ``config.json`` (the
command that made them), written by ``benchmarks/compare_losses.py`` (:func:`make_study_data`
is its dataset). :func:`load_study` reads them as a :class:`afl_core.experiments.Study`: from
the clone, or, where only the package is installed (Colab), downloaded once with the
project's verified downloader.
"""

from __future__ import annotations

import json
from pathlib import Path

from afl_core import links
from afl_core._io import read_json
from afl_core.experiments import STUDIES, Study
from afl_core.runs import PER_CASE_COLUMNS, read_table
from afl_core.train import HISTORY_COLUMNS
from data_download.remote import RemoteFile, fetch

__all__ = ["REPO_RESULTS", "results_dir", "load_study", "make_study_data"]

_RESULT_FILES = ("per_case.csv", "history.csv", "config.json")
#: the repository's committed tables (absent where only the package is installed)
REPO_RESULTS = Path(__file__).resolve().parent.parent / "results"


def results_dir(
    study: str, root: str | Path | None = None, cache: str | Path = "~/.cache/afl-tutorial/results"
) -> Path:
    """Folder holding the tables of ``study`` (:data:`_RESULT_FILES`): ``root/<study>`` when
    ``root`` is given (e.g. the ``--results`` of a re-run benchmark); otherwise the
    repository's ``results/<study>`` in a clone, or (an installed package, e.g. on Colab)
    a copy downloaded once from the repository into ``cache`` (:func:`data_download.remote.fetch`:
    retried, resumed, written under its name only once it reads)."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose from {list(STUDIES)}")
    if root is not None:
        return Path(root) / study
    in_repo = REPO_RESULTS / study
    if all((in_repo / name).is_file() for name in _RESULT_FILES):
        return in_repo
    target = Path(cache).expanduser() / study
    for name in _RESULT_FILES:
        remote = RemoteFile(links.raw_url(f"results/{study}/{name}"), name)
        fetch(remote, target, progress=False, verify=_readable)  # a copy already there is checked, not fetched
    return target


def _readable(path: Path) -> str | None:
    """``None`` when a downloaded file of a study reads (JSON, or a table), else what is wrong
    with it (the ``verify`` of :func:`data_download.remote.fetch`)."""
    try:
        if path.name.removesuffix(".part").endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        else:
            read_table(path)
    except (ValueError, UnicodeDecodeError) as error:
        return f"does not read as a study file ({str(error).splitlines()[0][:120]})"
    return None


def load_study(study: str, root: str | Path | None = None) -> Study:
    """The committed tables of ``study`` (``"comparison"`` or ``"ablation"``) from
    :func:`results_dir` ``(study, root)``, with their columns checked."""

    folder = results_dir(study, root)
    missing = [name for name in _RESULT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}: make them with benchmarks/compare_losses.py (the command is in the README)"
        )
    per_case = read_table(folder / "per_case.csv")
    history = read_table(folder / "history.csv")
    for name, table, needed in (
        ("per_case.csv", per_case, ("arm", "seed", *PER_CASE_COLUMNS)),
        ("history.csv", history, ("arm", "seed", *HISTORY_COLUMNS)),
    ):
        absent = [c for c in needed if c not in table]
        if absent:
            raise ValueError(
                f"{folder / name} lacks columns {absent}; it was not written by benchmarks/compare_losses.py"
            )
    config = read_json(folder / "config.json", hint="make it again with benchmarks/compare_losses.py")
    return Study(study, per_case, history, config, str(folder))


def make_study_data(
    root: str | Path, *, cases: int = 40, depth: int = 8, size: int = 64, progress: bool = False
) -> Path:
    """The synthetic dataset of the committed studies (``benchmarks/compare_losses.py``):
    ``cases`` volumes of ``depth x size x size`` voxels, small lesions (radius 1.5 voxels
    to 10 % of ``size``), 15 % lesion-free cases, seed 0. Returns its folder."""
    from afl_core.synthetic import make_dataset

    return make_dataset(
        root,
        cases,
        seed=0,
        shape=(depth, size, size),
        lesion_radius=(1.5, 0.1 * size),
        irregularity=(0.0, 0.6),
        empty_fraction=0.15,
        progress=progress,
    )
