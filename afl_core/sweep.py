"""A sweep of the paper's grid: every (arm, seed, fold) as its own run, resumable and shardable.

    python -m afl_core.sweep --data D --losses comparison --seeds 0 1 2 --folds 5 --out SWEEP \\
        [--shard i/n] [--only-folds 0 ...] [train options: --encoder, --epochs, --dims 3, ...]
    python -m afl_core.sweep --out SWEEP --collect

writes::

    SWEEP/sweep.json                  the sweep's settings (a later call must use the same ones)
    SWEEP/runs/<arm>-seed<k>-fold<f>/ one training run each (afl_core.train), scored by
                                      afl_core.evaluate into eval/ (its validation cases)
    SWEEP/per_case.csv                one row per (arm, seed, fold, case) over all finished runs
                                      (afl_core.runs.collect: arm, seed, fold, case, dice, iou,
                                      hd95_mm, ..., the columns of every study table)
    SWEEP/history.csv                 one row per (arm, seed, fold, epoch): the training curves

**Losses** are the arms of :data:`afl_core.experiments.ARMS` (``afl`` is A-FL's paper
variant, ``afl_reference`` the authors' code, ``afl_scale_aware`` this project's, ``ce``,
``dice``, ... the baselines, ``afl_alpha_only`` ... the ablation), or a study name of
:data:`afl_core.experiments.STUDIES` (``comparison``, ``ablation``) for all its arms.

**Folds.** K-fold cross-validation (:func:`afl_core.data.kfold_cases`): the cases are dealt
into ``K`` disjoint folds, lesion-stratified and with every patient's studies in one fold
(:func:`afl_core.data.patient_grouping`); fold ``f`` validates and the other ``K - 1`` train,
so over the folds every case is scored exactly once per (arm, seed). A fold's cases are in
its runs' ``config.json`` (``val_cases``) and in ``per_case.csv``.

**Resuming.** A run is finished when it is trained for the sweep's epochs and scored
(:func:`afl_core.runs.is_finished`). Finished runs are skipped; any other run is continued
from its last completed epoch and scored (:func:`afl_core.runs.finish`). Interrupt a sweep
at any moment and rerun the same command.

**Shards.** ``--shard i/n`` (``1 <= i <= n``) takes runs ``i, i+n, i+2n, ...`` of the grid
(seed-major, then fold, then arm, as given), so the ``n`` shards partition the grid and
differ in size by at most one run. While a process works on a run it holds an exclusive
lock on ``RUN/run.lock`` (:func:`afl_core._io.folder_lock`, the lock ``afl-train`` takes:
the system releases it when the process ends, even killed), and any other process skips
that run, so two shards, or a shard started twice, never train the same run. After its runs
each call rewrites the tables from every finished run in ``SWEEP/runs``; when shards end at
different times, the last ``--collect`` (e.g. a job that waits for all of them,
``docs/sweep_slurm.sh``) writes the complete table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from afl_core import distributed, runs
from afl_core._io import FolderBusy, export_csv, folder_lock, read_json, write_json
from afl_core.data import kfold_cases, list_cases, patient_grouping
from afl_core.experiments import ARMS, STUDIES, arm_config
from afl_core.runs import KEY_COLUMNS, RunKey, is_finished
from afl_core.train import (
    CLI_SETTINGS,
    RESUMABLE_CHANGES,
    GPUOutOfMemory,
    TrainConfig,
    TrainingDiverged,
    add_setting_options,
    check_out_folder,
)

__all__ = [
    "RunKey",
    "SweepResult",
    "expand_losses",
    "parse_shard",
    "make_grid",
    "shard_runs",
    "run_sweep",
    "collect",
    "main",
]

# TrainConfig fields that differ between the runs of one sweep: the grid sets them.
_PER_RUN = ("out", "loss", "variant", "loss_options", "seed", "val_fraction", "split_seed")
#: the training options of the command line, shared by every run (as afl-train declares them)
SHARED_SETTINGS = tuple(name for name in CLI_SETTINGS if name not in (*_PER_RUN, "data", "progress"))
_SETTINGS_FILE = "sweep.json"


@dataclass
class SweepResult:
    """What :func:`run_sweep` did with its shard of the grid, and the tables over every
    finished run of the sweep (``None`` while no run is finished)."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    per_case: pd.DataFrame | None = None
    history: pd.DataFrame | None = None


def expand_losses(names: Sequence[str]) -> list[str]:
    """Arms and study names -> the arms, in order, each once."""
    arms = []
    for name in names:
        if name not in ARMS and name not in STUDIES:
            raise ValueError(f"unknown loss {name!r}; choose arms from {list(ARMS)} or studies from {list(STUDIES)}")
        arms += STUDIES.get(name, [name])
    if not arms:
        raise ValueError("no loss given: name at least one, e.g. --losses afl ce")
    return list(dict.fromkeys(arms))


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``1 <= i <= n``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"shard must be i/n with 1 <= i <= n (shard i of n, e.g. 2/4), got {spec!r}")
    return int(match[1]), int(match[2])


def make_grid(losses: Sequence[str], seeds: Sequence[int], folds: Sequence[int]) -> list[RunKey]:
    """Every (arm, seed, fold), seed-major then fold then arm: an interrupted sweep has
    whole seeds and folds done first."""
    arms = expand_losses(losses)
    if not seeds:
        raise ValueError("no seed given: name at least one, e.g. --seeds 0")
    return [
        RunKey(arm, int(seed), int(fold))
        for seed in dict.fromkeys(seeds)
        for fold in dict.fromkeys(folds)
        for arm in arms
    ]


def shard_runs(grid: Sequence[RunKey], index: int, count: int) -> list[RunKey]:
    """Shard ``index`` of ``count`` (1-based): runs ``index, index + count, ...`` of ``grid``.
    Over ``index = 1 .. count`` every run is in exactly one shard."""
    parse_shard(f"{index}/{count}")
    return list(grid[index - 1 :: count])


# --------------------------------------------------------------------------- running


def run_sweep(
    data: str | os.PathLike,
    losses: Sequence[str],
    seeds: Sequence[int],
    folds: int,
    out: str | os.PathLike,
    *,
    only_folds: Sequence[int] | None = None,
    shard: str | tuple[int, int] = (1, 1),
    progress: bool = True,
    **settings,
) -> SweepResult:
    """Train and score this shard's runs of the grid ``losses x seeds x folds`` into
    ``out/runs/`` (skipping finished runs, continuing unfinished ones, leaving alone
    runs another process holds), then write ``out/per_case.csv`` and ``out/history.csv``
    over every finished run (:func:`collect`).

    ``folds``: ``K`` (at least 2); ``only_folds`` runs some of them (default all, 0 to K-1).
    ``settings``: :class:`afl_core.train.TrainConfig` fields shared by every run
    (``encoder``, ``epochs``, ``dims``, ...; ``progress`` defaults to the sweep's). A run
    that diverges or runs out of GPU memory is reported in :attr:`SweepResult.failed` and
    the sweep goes on.
    """
    out = Path(out)
    distributed.check_launch()  # each run would wait for processes that never come
    if (out / "config.json").is_file():  # its history.csv would be replaced by the sweep's table
        raise ValueError(
            f"--out {out} is a training run (it holds config.json): the sweep's tables (history.csv, "
            "per_case.csv) and runs/ would replace or mix with the run's files. Choose a new folder for the sweep"
        )
    check_out_folder(out, data, files="the sweep's files (sweep.json, runs/, per_case.csv, history.csv)")
    index, count = parse_shard(shard) if isinstance(shard, str) else shard
    fold_ids = _check_folds(data, folds, only_folds)
    fold_cases = kfold_cases(data, folds, seed=0, group_of=patient_grouping(data))
    if set(settings) & set(_PER_RUN):
        raise ValueError(
            f"{sorted(set(settings) & set(_PER_RUN))} are set per run by the sweep's grid, not by a shared setting"
        )
    settings = {"progress": progress} | settings
    configs = {
        key: _run_config(key, fold_cases, data, out, settings)
        for key in shard_runs(make_grid(losses, seeds, fold_ids), index, count)
    }
    created = not out.exists()
    recorded = _record_settings(out, data, folds, settings)
    try:
        result = _run_shard(configs, f"{index}/{count}", progress)
    except BaseException:
        if created:  # a run refused before it wrote anything: nothing of this call is left behind
            _remove_if_only(out, recorded)
        raise
    result.per_case, result.history = collect(out, require=False)
    return result


def _run_shard(configs: dict[RunKey, TrainConfig], shard: str, progress: bool) -> SweepResult:
    """Bring each run of ``configs`` to finished (:func:`_run_one`), saying how each went."""
    result = SweepResult()
    bar = tqdm(configs.items(), desc=f"sweep shard {shard}", unit="run", disable=not progress)
    for key, config in bar:
        bar.set_postfix_str(key.name)
        status = _run_one(config)
        if status in ("trained", "skipped", "busy"):
            getattr(result, status).append(key.name)
        else:
            result.failed[key.name] = status
        tqdm.write(f"{key.name}: {status}")
    return result


def _remove_if_only(out: Path, recorded: dict) -> None:
    """Remove the sweep folder ``out`` when it holds nothing but the ``sweep.json`` this call
    wrote (``recorded``): a sweep whose first run was refused leaves nothing behind."""
    settings = out / _SETTINGS_FILE
    try:
        if [entry.name for entry in out.iterdir()] == [_SETTINGS_FILE] and json.loads(settings.read_text()) == recorded:
            settings.unlink()
            out.rmdir()
    except (OSError, ValueError):  # changed meanwhile by another process: it stays
        pass


def _check_folds(data: str | os.PathLike, folds: int, only_folds: Sequence[int] | None) -> list[int]:
    cases = list_cases(data)
    if not cases:
        raise ValueError(
            f"no cases in {data} (labelsTr/ is empty): write a dataset there first, e.g. "
            "python -m data_download synthetic --dest DIR"
        )
    if not 2 <= folds <= len(cases):
        raise ValueError(f"folds must be at least 2 and at most the number of cases ({len(cases)}), got {folds}")
    fold_ids = list(range(folds)) if only_folds is None else list(dict.fromkeys(int(f) for f in only_folds))
    if not fold_ids or not all(0 <= f < folds for f in fold_ids):
        raise ValueError(f"only_folds must name folds 0 to {folds - 1}, got {only_folds}")
    return fold_ids


def _run_config(key: RunKey, folds: list[list[str]], data, out: Path, settings: dict) -> TrainConfig:
    """The run's TrainConfig (checked now, before any run trains): fold ``f`` of
    :func:`afl_core.data.kfold_cases` validates, the other folds train."""
    return arm_config(
        key.arm,
        data=str(Path(data).resolve()),
        out=str(out / "runs" / key.name),
        seed=key.seed,
        validation_cases=folds[key.fold],
        **settings,
    )


def _record_settings(out: Path, data, folds: int, settings: dict) -> dict:
    """Write ``sweep.json``, or check that a later call uses its settings; returns what it wrote."""
    template = TrainConfig(data=str(Path(data).resolve()), out=str(out), **settings).to_dict()
    shared = json.loads(json.dumps({k: v for k, v in template.items() if k not in _PER_RUN}))
    recorded = {"folds": folds, **shared}
    path = out / _SETTINGS_FILE
    if path.is_file():
        saved = read_json(path, hint=f"restore it from a copy, or start the sweep again in another --out than {out}")
        changed = [
            f"{k}: {saved.get(k)!r} -> {v!r}"
            for k, v in recorded.items()
            if k not in RESUMABLE_CHANGES and saved.get(k) != v
        ]
        if changed:
            raise ValueError(
                f"{out} is a sweep with other settings ({', '.join(changed)}); only "
                f"{', '.join(RESUMABLE_CHANGES)} may change. Use its settings or another --out folder."
            )
    write_json(path, recorded)
    return recorded


def _run_one(config: TrainConfig) -> str:
    """``"skipped"`` (finished), ``"busy"`` (another process holds it), ``"trained"``, or
    the error that stopped it."""
    run_dir = Path(config.out)
    if is_finished(run_dir, config.epochs):
        _check_fold(run_dir, config.validation_cases)
        return "skipped"
    try:
        with folder_lock(run_dir):
            done = runs.finish(config)  # False: finished by another process since the check above
    except FolderBusy:
        return "busy"
    except (TrainingDiverged, GPUOutOfMemory) as error:
        return f"failed: {error}"
    return "trained" if done else "skipped"


def _check_fold(run_dir: Path, fold_cases: list[str]) -> None:
    """Refuse a finished run whose folder names a fold whose cases it does not validate on
    (:func:`afl_core.runs.is_finished` compares the arm and seed of the name; the fold is the
    sweep's to know): two folds' folders swapped or renamed, whose rows would carry the wrong
    fold. ``--collect`` alone does not check this (it would read every label to deal the folds)."""
    recorded = read_json(run_dir / "config.json").get("validation_cases") or []
    if sorted(recorded) != sorted(fold_cases):
        raise ValueError(
            f"the run folder {run_dir} names a fold that validates on {', '.join(sorted(fold_cases))}, but its "
            f"config.json validates on {', '.join(sorted(recorded)) or 'a val_fraction'}: the folder was renamed, or "
            "two folds' folders swapped, and its rows would carry another fold. Give the folder the name of the fold "
            "it validates, or remove it and run the sweep again"
        )


# --------------------------------------------------------------------------- tables


def collect(out: str | os.PathLike, *, require: bool = True) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Gather every finished run of the sweep ``out`` (:func:`afl_core.runs.collect`) into
    ``out/per_case.csv`` (one row per arm, seed, fold and validation case) and
    ``out/history.csv`` (one row per arm, seed, fold and epoch), written atomically; returns
    both tables. With no finished run: a :class:`FileNotFoundError` when ``require``, else
    ``(None, None)`` and nothing written."""
    out = Path(out)
    settings = out / _SETTINGS_FILE
    if not settings.is_file():
        raise FileNotFoundError(
            f"{out} is not a sweep folder (no {_SETTINGS_FILE}): run python -m afl_core.sweep "
            "--data D --losses ... --out SWEEP first"
        )
    recorded = read_json(settings, hint=f"restore it from a copy, or run the sweep's command again with --out {out}")
    if not isinstance(recorded.get("epochs"), int):
        raise ValueError(
            f"{settings} records no epochs (a whole number): run the sweep's command again with --out {out}"
        )
    epochs = recorded["epochs"]
    found = {
        key: run_dir
        for key, run_dir in runs.run_folders(out / "runs").items()
        if key.fold is not None and key.arm in ARMS and is_finished(run_dir, epochs) and is_finished(run_dir)
    }
    if not found:
        if require:
            raise FileNotFoundError(f"no finished run in {out / 'runs'} yet")
        return None, None
    keys = sorted(found, key=lambda k: (list(ARMS).index(k.arm), k.seed, k.fold))  # arms in ARMS' order
    tables = runs.collect(found[key] for key in keys)
    export_csv(tables.per_case, out / "per_case.csv")
    export_csv(tables.history, out / "history.csv")
    return tables.per_case, tables.history


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m afl_core.sweep",
        description="Train and score every (arm, seed, fold) of a grid, each as its own run; resumable, shardable.",
        epilog="Rerun the same command to continue an interrupted sweep. Cluster: docs/sweep_slurm.sh.",
    )
    p.add_argument("--out", required=True, help="sweep folder (runs/, sweep.json, per_case.csv, history.csv)")
    p.add_argument("--collect", action="store_true", help="only gather the finished runs into the tables")
    add_setting_options(p, ("data",))
    p.add_argument(
        "--losses", nargs="+", metavar="ARM", help=f"arms ({', '.join(ARMS)}) or studies ({', '.join(STUDIES)})"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default 0)")
    p.add_argument("--folds", type=int, default=5, help="K: fold f holds out 1/K of the cases (default 5)")
    p.add_argument("--only-folds", nargs="+", type=int, metavar="F", help="run these folds only (default all)")
    p.add_argument("--shard", default="1/1", help="i/n: run shard i of n of the grid (default 1/1, all)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (batch logs)")
    train = p.add_argument_group("training options, shared by every run (python -m afl_core.train --help)")
    add_setting_options(train, SHARED_SETTINGS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        if args["collect"]:
            per_case, _ = collect(args["out"])
            print(
                f"{len(per_case)} rows from {per_case.groupby(list(KEY_COLUMNS)).ngroups} runs "
                f"in {Path(args['out']) / 'per_case.csv'}"
            )
            return 0
        if not args["data"] or not args["losses"]:
            parser.error("--data and --losses are required (unless --collect)")
        settings = {name: args[name] for name in SHARED_SETTINGS if args[name] is not None}
        result = run_sweep(
            args["data"],
            args["losses"],
            args["seeds"],
            args["folds"],
            args["out"],
            only_folds=args["only_folds"],
            shard=args["shard"],
            progress=args["progress"],
            **settings,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to continue (finished runs are kept)", file=sys.stderr)
        return 130
    print(
        f"{len(result.trained)} trained, {len(result.skipped)} already finished, "
        f"{len(result.busy)} held by another process, {len(result.failed)} failed"
    )
    for name, error in result.failed.items():
        print(f"  {name}: {error}", file=sys.stderr)
    if result.per_case is not None:
        print(
            f"tables over {result.per_case.groupby(list(KEY_COLUMNS)).ngroups} finished runs in "
            f"{args['out']}: per_case.csv, history.csv"
        )
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
