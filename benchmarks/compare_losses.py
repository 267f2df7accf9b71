"""The loss comparison and the A-FL ablation, CPU-sized, with enough seeds and cases to rank.

    python benchmarks/compare_losses.py --study all --seeds 0 1 2 3 4 --ablation-seeds 0 1 2 --epochs 24 \\
        --runs runs/compare --results results

Writes one synthetic dataset (``--cases`` cases of ``--depth`` x ``--size`` x ``--size``
voxels, small lesions of radius 1.5 to 6.4 voxels, 15 % lesion-free cases), splits it once
(``--val-fraction`` of the cases are scored, never trained on), trains a U-Net for every
arm and seed with :func:`afl_core.train.fit` (the seed changes the initialisation, the
sampling and the augmentation, not the split), scores each run per case in 3D with the
last epoch's weights (:func:`afl_core.evaluate.evaluate_run`), and writes, per study,

* ``RESULTS/<study>/per_case.csv``: one row per (arm, seed, case): ``loss, seed, case,
  dice, iou, hd95_mm, lesion_f1, paper_dice, paper_iou, sensitivity, ...``;
* ``RESULTS/<study>/history.csv``: every run's training curve (``loss, seed, epoch,
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

import pandas as pd
import torch

from afl_core._io import atomic_target, write_json
from afl_core.evaluate import evaluate_run
from afl_core.experiments import ARMS, DISTANCE_COLUMNS, HISTORY_COLUMNS, STUDIES, make_study_data, study_table
from afl_core.train import TrainConfig, fit

# The committed tables lead with both HD95 columns and both lesion-F1 rules.
PER_CASE_COLUMNS = [
    "loss",
    "seed",
    "case",
    "dice",
    "iou",
    "hd95_mm",
    "hd95_penalised_mm",
    "lesion_f1",
    "lesion_picai_f1",
    "paper_dice",
    "paper_iou",
]
# The settings that make a run what it is (the others only choose which runs to make).
RUN_SETTINGS = ("cases", "val_fraction", "depth", "size", "encoder", "epochs", "batch_size", "lr")
VERSIONED = ("afl-tutorial", "torch", "segmentation-models-pytorch", "timm", "numpy", "scipy")


def run_one(arm: str, config: dict) -> tuple[str, int, pd.DataFrame, pd.DataFrame]:
    """Train (unless finished) and score one (arm, seed) run; one CPU thread per run."""
    torch.set_num_threads(1)
    run = Path(config["out"])
    history = run / "history.csv"
    if not (history.is_file() and len(pd.read_csv(history)) >= config["epochs"]):
        fit(TrainConfig(**config), resume=(run / "config.json").is_file())
    per_case = evaluate_run(run, progress=False).per_case
    curve = pd.read_csv(history)
    return arm, config["seed"], per_case, curve


def main(argv=None) -> None:
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
    parser.add_argument("--val-fraction", type=float, default=0.6, help="share of the cases scored (default 24 of 40)")
    parser.add_argument("--depth", type=int, default=8, help="slices per case")
    parser.add_argument("--size", type=int, default=64, help="slice size (a multiple of 32)")
    parser.add_argument("--encoder", default="tu-resnet10t")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
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
    args = parser.parse_args(argv)

    studies = list(STUDIES) if args.study == "all" else [args.study]
    if args.replot:
        for study in studies:
            out = Path(args.results) / study
            table, history = pd.read_csv(out / "per_case.csv"), pd.read_csv(out / "history.csv")
            settings = json.loads((out / "config.json").read_text())["settings"]
            save_figure(table, history, out / "results.png", title=figure_title(study, table, settings))
            print(f"redrew {out / 'results.png'}")
        return
    seeds = {"comparison": args.seeds, "ablation": args.ablation_seeds}
    # seed-major: an interrupted benchmark leaves whole seeds
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
    runs = Path(args.runs)
    started = time.perf_counter()
    data = make_study_data(runs / "data", cases=args.cases, depth=args.depth, size=args.size)
    committed = committed_runs(Path(args.results), args) if args.reuse_tables else {}
    reused = {
        (arm, seed): committed[arm, seed]
        for seed, arm in grid
        if (arm, seed) in committed and not (runs / f"{arm}-seed{seed}" / "history.csv").is_file()
    }
    configs = []
    for seed, arm in grid:
        if (arm, seed) in reused:
            continue
        loss, variant, options = ARMS[arm]
        configs.append(
            (
                arm,
                dict(
                    data=str(data),
                    out=str(runs / f"{arm}-seed{seed}"),
                    loss=loss,
                    variant=variant,
                    loss_options=options,
                    encoder=args.encoder,
                    encoder_weights=None,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    seed=seed,
                    val_fraction=args.val_fraction,
                    device="cpu",
                    progress=False,
                ),
            )
        )
    print(
        f"{len(configs)} runs ({', '.join(f'{s}: {len(STUDIES[s])} arms x {len(seeds[s])} seeds' for s in studies)}"
        f"; shared runs once; {len(reused)} taken from the committed tables), {args.jobs} at a time; "
        f"{args.cases} cases of {args.depth}x{args.size}x{args.size}, {args.encoder}, {args.epochs} epochs",
        flush=True,
    )
    per_case = {key: rows for key, (rows, _, _) in reused.items()}
    curves = {key: curve for key, (_, curve, _) in reused.items()}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, arm, config) for arm, config in configs]
        for future in futures:
            arm, seed, table, curve = future.result()
            per_case[arm, seed], curves[arm, seed] = table, curve
            print(
                f"  {arm:<20s} seed {seed}: dice {table['dice'].mean():.3f}  "
                f"({curve['seconds'].sum():.0f} s of training)",
                flush=True,
            )
    wall = time.perf_counter() - started

    for study in [] if args.only else studies:
        keys = [(arm, seed) for seed in seeds[study] for arm in STUDIES[study]]
        table = study_table([per_case[k].assign(loss=k[0], seed=k[1]) for k in keys], PER_CASE_COLUMNS)
        history = pd.concat([curves[k].assign(loss=k[0], seed=k[1]) for k in keys], ignore_index=True)
        out = Path(args.results) / study
        write_csv(table, out / "per_case.csv")
        write_csv(history[list(HISTORY_COLUMNS)], out / "history.csv")
        write_json(
            out / "config.json",
            {
                "command": "python "
                + shlex.join(["benchmarks/compare_losses.py", *(sys.argv[1:] if argv is None else argv)]),
                "study": study,
                "arms": {arm: dict(zip(("loss", "variant", "loss_options"), ARMS[arm])) for arm in STUDIES[study]},
                "settings": {k: v for k, v in vars(args).items() if k not in ("runs", "results", "study")},
                "val_cases": sorted(table["case"].unique()),
                "versions": {
                    "python": platform.python_version(),
                    **{p: importlib.metadata.version(p) for p in VERSIONED},
                },
                "machine": {
                    "platform": platform.platform(),
                    "processor": platform.machine(),
                    "cpus": os.cpu_count(),
                    "torch_threads_per_run": 1,
                },
                "wall_seconds_this_call": round(wall, 1),
                "training_seconds_all_runs": round(
                    float(sum(curves[k]["seconds"].sum() for k in keys if k not in reused)), 1
                ),
                "reused_runs": {
                    f"{arm}-seed{seed}": reused[arm, seed][2] for arm, seed in keys if (arm, seed) in reused
                },
            },
        )
        save_figure(table, history, out / "results.png", title=figure_title(study, table, vars(args)))
        seed_means = table.pivot_table(index="loss", columns="seed", values="dice", aggfunc="mean")
        seed_means = seed_means.loc[STUDIES[study]]
        seed_means["mean"], seed_means["sd over seeds"] = seed_means.mean(axis=1), seed_means.std(axis=1)
        print(f"\n{study}: mean Dice over the {table['case'].nunique()} cases, per seed")
        print(seed_means.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n{wall:.0f} s; tables in {args.results}")


def committed_runs(results: Path, args: argparse.Namespace) -> dict[tuple[str, int], tuple]:
    """The runs that the committed study tables in ``results`` hold, made with the same
    ``RUN_SETTINGS`` as ``args`` and the same arm declaration: ``(arm, seed) -> (per-case
    rows, history rows, the table's folder)``, the rows as :func:`run_one` returns them."""
    found = {}
    for config_path in sorted(results.glob("*/config.json")):
        config = json.loads(config_path.read_text())
        if any(config["settings"][name] != getattr(args, name) for name in RUN_SETTINGS):
            continue
        table = pd.read_csv(config_path.parent / "per_case.csv")
        table = table.rename(columns={mm: name for name, mm in DISTANCE_COLUMNS.items()})
        history = pd.read_csv(config_path.parent / "history.csv")
        for (arm, seed), rows in table.groupby(["loss", "seed"]):
            declared = dict(zip(("loss", "variant", "loss_options"), ARMS.get(arm, ())))
            if config["arms"].get(arm) == declared and (arm, seed) not in found:
                curve = history[(history["loss"] == arm) & (history["seed"] == seed)]
                found[arm, int(seed)] = (
                    rows.drop(columns=["loss", "seed"]),
                    curve.drop(columns=["loss", "seed"]),
                    str(config_path.parent),
                )
    return found


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_target(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def figure_title(study: str, table: pd.DataFrame, settings: dict) -> str:
    """The figure's title from the per-case table and the command's settings (``config.json``)."""
    return (
        f"{study}: {table['seed'].nunique()} seeds x {table['case'].nunique()} cases, {settings['encoder']}, "
        f"{settings['epochs']} epochs, synthetic {settings['depth']}x{settings['size']}x{settings['size']}"
    )


def save_figure(table: pd.DataFrame, history: pd.DataFrame, path: Path, *, title: str) -> None:
    """Left: each seed's mean Dice per arm over all cases (dots), their mean (bar) and the mean over
    the cases with a lesion only (dash); right: validation Dice per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    arms = list(dict.fromkeys(table["loss"]))
    seed_means = table.groupby(["loss", "seed"])["dice"].mean().unstack("seed").loc[arms]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    left.bar(range(len(arms)), seed_means.mean(axis=1), color="0.85", label="mean over seeds")
    for column in seed_means:
        left.plot(range(len(arms)), seed_means[column], "o", ms=3, color="tab:blue", alpha=0.7)
    left.plot([], [], "o", ms=3, color="tab:blue", label="one seed (mean over all cases)")
    # Lesion-free cases score 1 when nothing is predicted: the all-case mean mixes them in.
    lesion = table["target_voxels"] > 0
    free = table.loc[~lesion]
    n_cases, n_free = table["case"].nunique(), free["case"].nunique()
    lesion_means = table[lesion].groupby("loss")["dice"].mean().loc[arms]
    left.plot(
        range(len(arms)),
        lesion_means,
        "_",
        ms=12,
        mew=2,
        color="k",
        label=f"mean over the {n_cases - n_free} lesion cases",
    )
    left.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
    scored = ", scored 1 by every run" if (free["dice"] == 1).all() else ""
    left.set_ylabel(f"Dice (last epoch), mean over\n{n_cases} cases ({n_free} lesion-free{scored})", fontsize=8)
    left.legend(fontsize=7, loc="lower left")  # over the bars, not the dots
    curve = history.groupby(["loss", "epoch"])["val_dice"].mean().unstack("loss")
    for arm in arms:
        right.plot(curve.index, curve[arm], label=arm, lw=1)
    right.set_xlabel("epoch")
    right.set_ylabel("validation Dice during training\n(mean over seeds)", fontsize=8)
    right.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=9)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
