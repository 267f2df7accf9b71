"""The run grid: one kind of run folder, whichever path made it (a notebook, a sweep, the benchmark).

A run is named by its :class:`RunKey` (arm, seed and, in a k-fold sweep, fold): the folder
``<arm>-seed<k>`` or ``<arm>-seed<k>-fold<f>`` holds what :func:`afl_core.train.fit` writes
(``config.json``, ``history.csv``, checkpoints) and what :func:`afl_core.evaluate.evaluate_run`
writes for its validation cases (``eval/``). Here alone is said

* when a run is trained (:func:`is_trained`: ``checkpoint_last.pt`` holds the epochs its
  ``config.json`` plans) and finished (:func:`is_finished`: ``eval/summary.json`` scores that
  last checkpoint);
* how a run is brought to finished (:func:`finish`: train, resuming, then score);
* how finished runs become a study's two tables (:func:`collect`): one row per run and
  validation case (``per_case``), one per run and epoch (``history``), led by the run's key
  columns ``arm, seed[, fold]`` and then :data:`PER_CASE_COLUMNS` or
  :data:`afl_core.train.HISTORY_COLUMNS`.

Tables written before the arm column was called ``arm`` (``loss``) read alike
(:func:`read_table`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import pandas as pd

from afl_core._io import read_json
from afl_core.evaluate import evaluate_run
from afl_core.metrics import DISTANCE_COLUMNS
from afl_core.train import HISTORY_COLUMNS, TrainConfig, completed_epochs, fit

__all__ = [
    "RunKey",
    "KEY_COLUMNS",
    "PER_CASE_COLUMNS",
    "RunTables",
    "run_folders",
    "is_trained",
    "is_finished",
    "finish",
    "collect",
    "read_table",
]

#: the columns that say which run a row of a study table comes from (``fold`` only in a k-fold grid)
KEY_COLUMNS = ("arm", "seed", "fold")
#: the leading per-case columns of a study table after the key columns; distances in mm
PER_CASE_COLUMNS = (
    "case",
    "dice",
    "iou",
    "hd95_mm",
    "hd95_penalised_mm",
    "lesion_f1",
    "lesion_picai_f1",
    "paper_dice",
    "paper_iou",
)
# Study tables written before the arm column had its own name.
_OLD_COLUMNS = {"loss": "arm"}
_RUN_NAME = re.compile(r"(?P<arm>[a-z0-9_]+)-seed(?P<seed>\d+)(?:-fold(?P<fold>\d+))?")


@dataclass(frozen=True)
class RunKey:
    """One run of a grid: an arm (:data:`afl_core.experiments.ARMS`), a training seed and,
    in a k-fold grid, the fold that validates (``None``: the run's own case split)."""

    arm: str
    seed: int
    fold: int | None = None

    @property
    def name(self) -> str:
        """The run's folder name: ``<arm>-seed<seed>`` (``-fold<fold>`` in a k-fold grid)."""
        return f"{self.arm}-seed{self.seed}" + ("" if self.fold is None else f"-fold{self.fold}")

    @property
    def labels(self) -> dict[str, object]:
        """The key columns of the run's rows in a study table."""
        return {"arm": self.arm, "seed": self.seed} | ({} if self.fold is None else {"fold": self.fold})

    @classmethod
    def from_name(cls, name: str) -> RunKey | None:
        """The key of a run folder's name, or ``None`` when ``name`` names no run."""
        match = _RUN_NAME.fullmatch(name)
        if match is None:
            return None
        fold = match["fold"]
        return cls(match["arm"], int(match["seed"]), None if fold is None else int(fold))


class RunTables(NamedTuple):
    """A study's two tables: ``per_case`` (run x validation case) and ``history`` (run x epoch)."""

    per_case: pd.DataFrame
    history: pd.DataFrame


def run_folders(root: str | os.PathLike) -> dict[RunKey, Path]:
    """The run folders directly in ``root`` (folders named by a :class:`RunKey`), by key."""
    root = Path(root)
    found = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        key = RunKey.from_name(folder.name)
        if key is not None and folder.is_dir():
            found[key] = folder
    return found


def _run_config(run_dir: Path) -> dict | None:
    """The run's ``config.json`` (``None`` without one), with its planned ``epochs`` checked."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    config = read_json(path, hint=f"restore it from a copy, or train the run again (--overwrite --out {run_dir})")
    if not isinstance(config.get("epochs"), int):
        raise ValueError(
            f"{path} records no epochs (a whole number): train the run again (--overwrite --out {run_dir})"
        )
    return config


def _planned_epochs(run_dir: Path, epochs: int | None) -> int | None:
    """``epochs``, else the epochs the run's ``config.json`` plans (``None`` without one)."""
    if epochs is not None:
        return epochs
    config = _run_config(run_dir)
    return None if config is None else config["epochs"]


def is_trained(run_dir: str | os.PathLike, epochs: int | None = None) -> bool:
    """The run's ``checkpoint_last.pt`` holds ``epochs`` epochs or more (default: the epochs
    its ``config.json`` plans)."""
    run_dir = Path(run_dir)
    planned = _planned_epochs(run_dir, epochs)
    return planned is not None and completed_epochs(run_dir) >= planned


def is_finished(run_dir: str | os.PathLike, epochs: int | None = None) -> bool:
    """The run is trained (:func:`is_trained`) and scored: ``eval/summary.json`` (written
    last, atomically, by :func:`afl_core.evaluate.evaluate_run`) scores the last checkpoint
    at ``epochs`` epochs or more (default: the epochs its ``config.json`` plans). Resuming a
    run for more epochs, or starting it again, makes it unfinished.

    Raises:
        ValueError: ``summary.json`` is damaged, does not say which checkpoint it scores,
            or scores another run (:func:`_check_scores_this_run`); the folder's name says
            another arm or seed than its ``config.json`` (:func:`_check_name_fits_config`);
            the message names it.
    """
    run_dir = Path(run_dir)
    config = _run_config(run_dir)
    planned = epochs if epochs is not None else (None if config is None else config["epochs"])
    summary = run_dir / "eval" / "summary.json"
    if planned is None or config is None or not summary.is_file():
        return False
    again = f"score the run again: python -m afl_core.evaluate --run {run_dir}"
    scored = read_json(summary, hint=again)
    if scored.get("checkpoint") not in ("best", "last") or not isinstance(scored.get("epoch"), int):
        raise ValueError(
            f"{summary} does not say which checkpoint it scores ('checkpoint': best or last, 'epoch': a whole "
            f"number): it was altered or written by another program; {again}"
        )
    _check_scores_this_run(run_dir, config, summary, scored, again)
    _check_name_fits_config(run_dir, config)
    return scored["checkpoint"] == "last" and scored["epoch"] >= planned


def _check_name_fits_config(run_dir: Path, config: dict) -> None:
    """Refuse a run folder whose name (:class:`RunKey`: arm, seed) says another run than its
    ``config.json``: a renamed folder, or two runs' folders swapped. Its rows would be
    labelled by the name, so one arm's scores would pass for another's (or one seed's for
    another's). An arm not in :data:`afl_core.experiments.ARMS` is not compared."""
    from afl_core.experiments import ARMS, recorded_arm  # here: experiments imports this module

    key = RunKey.from_name(run_dir.absolute().name)
    if key is None:
        return
    differences = []
    if key.arm in ARMS and recorded_arm(config) != ARMS[key.arm]:
        loss, variant, options = ARMS[key.arm]
        differences.append(
            f"arm {key.arm!r} (loss {loss!r}{f', variant {variant!r}' if variant else ''}"
            f"{f', options {options}' if options else ''}), but its config.json records loss "
            f"{config.get('loss')!r}, variant {config.get('variant')!r}, options {config.get('loss_options') or {}}"
        )
    if config.get("seed") != key.seed:
        differences.append(f"seed {key.seed}, but its config.json records seed {config.get('seed')!r}")
    if differences:
        raise ValueError(
            f"the name of the run folder {run_dir} says {'; and '.join(differences)}: the folder was renamed, or "
            f"runs' folders swapped, and its rows would be labelled as another run's. Give the folder the name of "
            f"the run it holds, or train the run of its name again (python -m afl_core.train --overwrite --out "
            f"{run_dir} ...)"
        )


# What summary.json records of the run it scores -> the same in the run's config.json.
_RUN_IDENTITY = {
    "loss": "loss",
    "variant": "variant",
    "loss_options": "loss_options",
    "encoder": "encoder",
    "seed": "seed",
    "cases": "val_cases",
}


def _check_scores_this_run(run_dir: Path, config: dict, summary: Path, scored: dict, again: str) -> None:
    """Refuse a ``summary.json`` that scores another run than ``run_dir``: written there by an
    evaluation of another run (``--out``) or copied from one. It must name a run folder of
    this one's name, and what it records of the run (loss, variant, encoder, seed, the
    validation cases) must be what the run's ``config.json`` says (keys an older summary
    lacks are not compared)."""
    recorded = scored.get("run")
    differences = []
    if not isinstance(recorded, str) or Path(recorded).name != run_dir.absolute().name:
        differences.append(f"run {recorded!r}")
    differences += [
        f"{key} {scored[key]!r} (the run's: {config[setting]!r})"
        for key, setting in _RUN_IDENTITY.items()
        if key in scored and setting in config and scored[key] != config[setting]
    ]
    if differences:
        raise ValueError(
            f"{summary} scores another run than {run_dir}: it records {', '.join(differences)}. It was written "
            f"there by an evaluation of another run (--out) or copied; {again}"
        )


def finish(config: TrainConfig) -> bool:
    """Bring the run of ``config`` (its folder ``config.out``) to finished: train it, resuming
    from its last completed epoch, unless it is trained, then score it on its validation
    cases. Returns False when it was finished already (nothing done)."""
    run_dir = Path(config.out)
    if is_finished(run_dir, config.epochs):
        return False
    if not is_trained(run_dir, config.epochs):
        fit(config, resume=(run_dir / "config.json").is_file())
    evaluate_run(run_dir, device=config.device, progress=False)
    return True


def collect(run_dirs: Iterable[str | os.PathLike]) -> RunTables:
    """The study tables of finished runs, in the order given: their ``eval/per_case.csv``
    and ``history.csv`` stacked, each row labelled with its run's key columns (``fold`` when
    the runs are folds of a k-fold grid), distances named in mm, :data:`PER_CASE_COLUMNS`
    and :data:`afl_core.train.HISTORY_COLUMNS` leading, the other columns as they come.

    Raises:
        ValueError: no run given, a folder not named by a :class:`RunKey`, an unfinished run,
            folds mixed with runs that have none, a run whose ``eval/summary.json`` scores
            another run, or whose ``eval/per_case.csv`` (``history.csv``) is missing, damaged
            or lacks rows of the cases it scored (the epochs it trained): named, never dropped.
    """
    runs = [Path(d) for d in run_dirs]
    if not runs:
        raise ValueError("no run folder given: collect needs at least one finished run")
    keys = [RunKey.from_name(run.name) for run in runs]
    unnamed = [str(run) for run, key in zip(runs, keys) if key is None]
    if unnamed:
        raise ValueError(f"{unnamed} are not run folders: a run folder is named <arm>-seed<k>[-fold<f>]")
    if len({key.fold is None for key in keys}) > 1:
        raise ValueError("collect runs of one kind: all folds of a k-fold grid, or none")
    unfinished = [str(run) for run in runs if not is_finished(run)]
    if unfinished:
        raise ValueError(
            f"{unfinished} are not finished (trained for their epochs and scored): "
            "finish them first (afl_core.runs.finish, or the command that made them)"
        )
    per_case = [_per_case_table(run).assign(**key.labels) for run, key in zip(runs, keys)]
    history = [_history_table(run).assign(**key.labels) for run, key in zip(runs, keys)]
    per_case = pd.concat(per_case, ignore_index=True).rename(columns=DISTANCE_COLUMNS)
    key_columns = list(keys[0].labels)
    return RunTables(
        _leading(per_case, key_columns + list(PER_CASE_COLUMNS)),
        _leading(pd.concat(history, ignore_index=True), key_columns + list(HISTORY_COLUMNS)),
    )


def _read_run_table(path: Path, column: str, again: str) -> tuple[pd.DataFrame, list[str]]:
    """The table ``path`` and its ``column`` read as text; a missing or damaged file is named."""
    try:
        return pd.read_csv(path), pd.read_csv(path, usecols=[column], dtype=str)[column].tolist()
    except FileNotFoundError:
        problem = "is missing"
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        problem = f"is damaged ({str(error).splitlines()[0][:120]})"
    raise ValueError(f"{path} {problem}: its rows cannot be collected; {again}")


def _per_case_table(run_dir: Path) -> pd.DataFrame:
    """The run's ``eval/per_case.csv``, which must hold one row for each case its ``summary.json``
    scores: a table cut short would leave the run's cases out of a study without a word."""
    path = run_dir / "eval" / "per_case.csv"
    again = f"score the run again: python -m afl_core.evaluate --run {run_dir}"
    table, cases = _read_run_table(path, "case", again)
    scored = read_json(run_dir / "eval" / "summary.json", hint=again).get("cases")
    if cases != scored:
        listed = (
            ", ".join(map(str, scored[:5])) + (", ..." if len(scored) > 5 else "") if isinstance(scored, list) else ""
        )
        raise ValueError(
            f"{path} holds {len(cases)} row(s), but {run_dir / 'eval' / 'summary.json'} scores "
            f"{len(scored) if isinstance(scored, list) else 'other'} case(s) ({listed}): the table was cut short "
            f"or altered; {again}"
        )
    return table


def _history_table(run_dir: Path) -> pd.DataFrame:
    """The run's ``history.csv``, which must hold one row for each epoch its last checkpoint
    trained (``eval/summary.json`` scored that epoch)."""
    path = run_dir / "history.csv"
    again = f"rewrite it from the run's checkpoint: python -m afl_core.train --out {run_dir} --resume"
    table, epochs = _read_run_table(path, "epoch", again)
    trained = read_json(run_dir / "eval" / "summary.json")["epoch"]
    if epochs != [str(epoch) for epoch in range(1, trained + 1)]:
        raise ValueError(
            f"{path} holds {len(epochs)} epoch row(s), but the run's last checkpoint trained {trained}: "
            f"the table was cut short or altered; {again}"
        )
    return table


def _leading(table: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    """``table`` with the columns ``first`` (those it has) leading, the others as they come."""
    first = [c for c in first if c in table]
    return table[first + [c for c in table if c not in first]]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A study table (``per_case.csv``, ``history.csv``) as :func:`collect` names its
    columns, also when it was written before the arm column was called ``arm``."""
    table = pd.read_csv(path)
    return table.rename(columns={old: new for old, new in _OLD_COLUMNS.items() if new not in table})
