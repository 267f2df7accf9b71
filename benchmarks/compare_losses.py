"""The loss comparison and the A-FL ablation, CPU-sized, with enough seeds and cases to rank.

    python benchmarks/compare_losses.py --study all --seeds 0 1 2 3 4 --ablation-seeds 0 1 2 --epochs 24 \\
        --runs runs/compare --results results

Writes one synthetic dataset (``--cases`` cases of ``--depth`` x ``--size`` x ``--size``
voxels, small lesions of radius 1.5 to 6.4 voxels, 15 % lesion-free cases), splits it once
(``--val-fraction`` of the cases are scored, never trained on), trains a U-Net for every
arm and seed with :func:`afl_core.train.fit` (the seed changes the initialisation, the
sampling and the augmentation, not the split), scores each run per case in 3D with the
last epoch's weights (:func:`afl_core.evaluate.evaluate_run`), and writes, per study,

* ``RESULTS/<study>/per_case.csv``: one row per (arm, seed, case): ``arm, seed, case,
  dice, iou, hd95_mm, ..., paper_dice, paper_iou, sensitivity, ...``
  (:func:`afl_core.runs.collect`, the columns of every study table);
* ``RESULTS/<study>/history.csv``: every run's training curve (``arm, seed, epoch,
  train_loss, val_loss, val_dice``), to show that the runs converged;
* ``RESULTS/<study>/config.json``: the exact command, the settings, versions, machine
  and wall time;
* ``RESULTS/<study>/results.png``: the spread over seeds per arm (all cases, and the
  cases with a lesion only) beside the mean validation Dice per epoch; ``--replot``
  redraws it from the three files above without training.

Studies: ``comparison`` (the registry's eight losses plus A-FL's ``reference`` and
``scale_aware`` variants, ``--seeds``) and ``ablation`` (which part of A-FL does what,
``--ablation-seeds``; it shares the runs of full A-FL, ``reference`` and ``scale_aware``
with the comparison). Finished runs
in ``--runs`` are reused, so an interrupted benchmark continues where it stopped; with
``--reuse-tables`` a run whose folder is absent is taken from a committed study table in
``--results`` that holds it with the same settings (how ``ce`` joined the ablation from the
comparison's runs without training it again); the
statistics (intervals, tests, corrections) are left to the notebooks, which read the
committed tables. This is a teaching-scale experiment on synthetic data: it says how
the losses behave here, not what the paper's full configuration gives.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib
import pandas as pd
import torch

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from afl_core import runs  # noqa: E402
from afl_core._io import atomic_target, write_json  # noqa: E402
from afl_core.experiments import ARMS, STUDIES, arm_config  # noqa: E402
from afl_core.runs import RunKey  # noqa: E402
from afl_core.studies import make_study_data  # noqa: E402
from afl_core.train import HISTORY_COLUMNS, TrainConfig, add_setting_options  # noqa: E402
from afl_core.viz import plot_study_summary  # noqa: E402

# The training settings this command offers (as afl-train does), with the defaults of its CPU-sized
# study: 24 of the 40 cases scored.
STUDY_DEFAULTS = {"encoder": "tu-resnet10t", "epochs": 24, "batch_size": 8, "lr": 1e-3, "val_fraction": 0.6}
# The settings that make a run what it is (the others only choose which runs to make).
RUN_SETTINGS = ("cases", "val_fraction", "depth", "size", "encoder", "epochs", "batch_size", "lr")
VERSIONED = ("afl-tutorial", "torch", "segmentation-models-pytorch", "timm", "numpy", "scipy")


def run_one(config: TrainConfig) -> TrainConfig:
    """Train (unless trained) and score (unless scored) one run (:func:`afl_core.runs.finish`),
    with one CPU thread."""
    torch.set_num_threads(1)
    runs.finish(config)
    return config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=[*STUDIES, "all"], default="all")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(ARMS),
        metavar="ARM",
        help="train and score just these arms of the studies (no tables written)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="comparison seeds")
    parser.add_argument("--ablation-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--depth", type=int, default=8, help="slices per case")
    parser.add_argument("--size", type=int, default=64, help="slice size (a multiple of 32)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    parser.add_argument("--runs", default="runs/compare", help="run folders (reused when finished)")
    parser.add_argument("--results", default="results", help="where the study tables go")
    parser.add_argument(
        "--reuse-tables",
        action="store_true",
        help="take a run whose folder in --runs is absent from the committed tables in --results that hold it "
        "with the same settings, instead of training it again",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only redraw RESULTS/<study>/results.png from the tables and config.json there (no training)",
    )
    training = parser.add_argument_group("training options of every run (python -m afl_core.train --help)")
    add_setting_options(training, tuple(STUDY_DEFAULTS), defaults=STUDY_DEFAULTS)
    return parser


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    studies = list(STUDIES) if args.study == "all" else [args.study]
    if args.replot:
        for study in studies:
            out = Path(args.results) / study
            table, history = runs.read_table(out / "per_case.csv"), runs.read_table(out / "history.csv")
            settings = json.loads((out / "config.json").read_text())["settings"]
            save_figure(out / "results.png", table, history, title=figure_title(study, table, settings))
            print(f"redrew {out / 'results.png'}")
        return
    seeds = {"comparison": args.seeds, "ablation": args.ablation_seeds}
    root = Path(args.runs)
    started = time.perf_counter()
    committed = committed_runs(Path(args.results), args) if args.reuse_tables else {}
    configs = [c for c in run_configs(args, studies, seeds) if not _reusable(Path(c.out), committed)]
    reused = {key: rows for key, rows in committed.items() if _reusable(root / key.name, committed)}
    print(
        f"{len(configs)} runs ({', '.join(f'{s}: {len(STUDIES[s])} arms x {len(seeds[s])} seeds' for s in studies)}"
        f"; shared runs once; {len(reused)} taken from the committed tables), {args.jobs} at a time; "
        f"{args.cases} cases of {args.depth}x{args.size}x{args.size}, {args.encoder}, {args.epochs} epochs",
        flush=True,
    )
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for config in pool.map(run_one, configs):
            run = runs.collect([config.out])
            print(
                f"  {Path(config.out).name:<26s}: dice {run.per_case['dice'].mean():.3f}  "
                f"({run.history['seconds'].sum():.0f} s of training)",
                flush=True,
            )
    wall = time.perf_counter() - started
    for study in [] if args.only else studies:
        keys = [RunKey(arm, seed) for seed in seeds[study] for arm in STUDIES[study]]
        tables = study_tables(root, keys, reused)
        sources = {key.name: reused[key][1] for key in keys if key in reused}
        write_study(Path(args.results) / study, study, tables, args, argv, wall, sources)
    print(f"\n{wall:.0f} s; tables in {args.results}")


def committed_runs(results: Path, args: argparse.Namespace) -> dict[RunKey, tuple[runs.RunTables, str]]:
    """The runs that the committed study tables in ``results`` hold, made with the same
    ``RUN_SETTINGS`` as ``args`` and the same arm declaration: key -> (their rows, the folder
    of the table)."""
    found = {}
    for config_path in sorted(results.glob("*/config.json")):
        config = json.loads(config_path.read_text())
        if any(config["settings"][name] != getattr(args, name) for name in RUN_SETTINGS):
            continue
        table, history = (runs.read_table(config_path.parent / name) for name in ("per_case.csv", "history.csv"))
        for (arm, seed), rows in table.groupby(["arm", "seed"]):
            declared = dict(zip(("loss", "variant", "loss_options"), ARMS.get(arm, ())))
            key = RunKey(arm, int(seed))
            if config["arms"].get(arm) == declared and key not in found:
                rows_history = history[(history["arm"] == arm) & (history["seed"] == seed)]
                found[key] = (runs.RunTables(rows, rows_history), str(config_path.parent))
    return found


def _reusable(run_dir: Path, committed: dict) -> bool:
    """A run to take from the committed tables: they hold it and its folder is absent."""
    return RunKey.from_name(run_dir.name) in committed and not run_dir.exists()


def study_tables(root: Path, keys: list[RunKey], reused: dict[RunKey, tuple]) -> runs.RunTables:
    """The study's tables in the order of ``keys``: trained runs collected from their folders,
    reused ones from the committed tables."""
    to_collect = [root / key.name for key in keys if key not in reused]
    trained = runs.collect(to_collect) if to_collect else None
    parts = [
        reused[key][0]
        if key in reused
        else runs.RunTables(*(t[(t["arm"] == key.arm) & (t["seed"] == key.seed)] for t in trained))
        for key in keys
    ]
    return runs.RunTables(*(pd.concat(list(tables), ignore_index=True) for tables in zip(*parts)))


def run_configs(args: argparse.Namespace, studies: list[str], seeds: dict[str, list[int]]) -> list[TrainConfig]:
    """Every run the studies need, once (the ablation shares runs with the comparison),
    seed-major: an interrupted benchmark leaves whole seeds."""
    grid = sorted(
        {
            (seed, arm)
            for study in studies
            for seed in seeds[study]
            for arm in STUDIES[study]
            if not args.only or arm in args.only
        },
        key=lambda key: (key[0], list(ARMS).index(key[1])),
    )
    root = Path(args.runs)
    data = make_study_data(root / "data", cases=args.cases, depth=args.depth, size=args.size)
    return [
        arm_config(
            arm,
            data=str(data),
            out=str(root / RunKey(arm, seed).name),
            encoder=args.encoder,
            encoder_weights=None,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            val_fraction=args.val_fraction,
            device="cpu",
            progress=False,
        )
        for seed, arm in grid
    ]


def write_study(
    out: Path, study: str, tables: runs.RunTables, args: argparse.Namespace, argv, wall: float, reused=None
) -> None:
    """The study's committed files in ``out`` (tables, config.json, figure), and its seed means printed."""
    table, history = tables
    command = ["benchmarks/compare_losses.py", *(sys.argv[1:] if argv is None else argv)]
    write_csv(table, out / "per_case.csv")
    write_csv(history[["arm", "seed", *HISTORY_COLUMNS]], out / "history.csv")
    write_json(
        out / "config.json",
        {
            "command": "python " + shlex.join(command),
            "study": study,
            "arms": {arm: dict(zip(("loss", "variant", "loss_options"), ARMS[arm])) for arm in STUDIES[study]},
            "settings": {k: v for k, v in vars(args).items() if k not in ("runs", "results", "study")},
            "val_cases": sorted(table["case"].unique()),
            "versions": {"python": platform.python_version(), **{p: importlib.metadata.version(p) for p in VERSIONED}},
            "machine": {
                "platform": platform.platform(),
                "processor": platform.machine(),
                "cpus": os.cpu_count(),
                "torch_threads_per_run": 1,
            },
            "wall_seconds_this_call": round(wall, 1),
            # the runs trained in this call (a reused run's table keeps no wall clock)
            "training_seconds_all_runs": round(float(history.get("seconds", pd.Series(dtype=float)).sum()), 1),
            "reused_runs": reused or {},
        },
    )
    save_figure(out / "results.png", table, history, title=figure_title(study, table, vars(args)))
    seed_means = table.pivot_table(index="arm", columns="seed", values="dice", aggfunc="mean").loc[STUDIES[study]]
    seed_means["mean"], seed_means["sd over seeds"] = seed_means.mean(axis=1), seed_means.std(axis=1)
    print(f"\n{study}: mean Dice over the {table['case'].nunique()} cases, per seed")
    print(seed_means.to_string(float_format=lambda v: f"{v:.3f}"))


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_target(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def save_figure(path: Path, table, history, *, title: str) -> None:
    """:func:`afl_core.viz.plot_study_summary` written to ``path`` atomically."""
    fig = plot_study_summary(table, history, title=title)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def figure_title(study: str, table: pd.DataFrame, settings: dict) -> str:
    """The figure's title from the per-case table and the command's settings (``config.json``)."""
    return (
        f"{study}: {table['seed'].nunique()} seeds x {table['case'].nunique()} cases, {settings['encoder']}, "
        f"{settings['epochs']} epochs, synthetic {settings['depth']}x{settings['size']}x{settings['size']}"
    )


if __name__ == "__main__":
    main()
