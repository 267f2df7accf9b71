"""The paper's loss comparison, CPU-sized, on synthetic small lesions.

    python benchmarks/compare_losses.py [--out runs/compare] [--seeds 0 1 2] [--epochs 10]
        [--encoder tu-resnet10t] [--size 64] [--cases 24] [--jobs 2] [--losses ...]

Writes a synthetic dataset (``--cases`` cases of ``--depth`` x ``--size`` x ``--size``,
small lesions), trains a U-Net with every loss of :data:`afl_core.losses.LOSS_NAMES` for
every seed with :func:`afl_core.train.fit` (the same train/validation case split for all;
the seed changes initialisation, sampling and augmentation), evaluates each run on the
validation cases in 3D with :func:`afl_core.evaluate.evaluate_run`, and prints:

* the results table (:func:`afl_core.metrics.results_table`) over all (seed, case) pairs;
* the paired comparison A-FL vs focal loss (:func:`afl_core.metrics.compare_runs`):
  per-case scores averaged over seeds, then a bootstrap interval of the mean difference
  (A-FL minus focal) over cases and a Wilcoxon signed-rank p-value.

Runs already complete in ``--out`` are reused, so an interrupted comparison continues.
This is a teaching-scale experiment: a small encoder, few epochs and few cases; its
numbers say how the losses behave on this synthetic data, not what the paper's full
configuration gives.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch

from afl_core._io import atomic_target, write_json
from afl_core.evaluate import evaluate_run
from afl_core.losses import LOSS_NAMES
from afl_core.metrics import PAPER_RESULTS, compare_runs, export_csv, results_table
from afl_core.synthetic import make_dataset
from afl_core.train import TrainConfig, fit
from afl_core.viz import plot_results_bars

METRICS = ("dice", "paper_dice", "sensitivity", "lesion_f1")


def run_one(config: dict, threads: int) -> tuple[str, int, pd.DataFrame, float]:
    """Train (unless already done) and evaluate one (loss, seed) run; returns its per-case table."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    run = Path(config["out"])
    history = run / "history.csv"
    done = history.is_file() and len(pd.read_csv(history)) >= config["epochs"]
    if not done:
        fit(TrainConfig(**config), resume=(run / "config.json").is_file())
    per_case = evaluate_run(run, progress=False).per_case
    return config["loss"], config["seed"], per_case, time.perf_counter() - started


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--losses", nargs="+", default=list(LOSS_NAMES), choices=LOSS_NAMES)
    parser.add_argument("--variant", default="paper", help="A-FL variant (default paper)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--depth", type=int, default=8, help="slices per case")
    parser.add_argument("--size", type=int, default=64, help="slice size (a multiple of 32)")
    parser.add_argument("--val-fraction", type=float, default=0.5)
    parser.add_argument("--encoder", default="tu-resnet10t")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    args = parser.parse_args(argv)
    if "focal" not in args.losses or "afl" not in args.losses:
        parser.error("--losses must include focal and afl (they are compared)")

    out = Path(args.out)
    started = time.perf_counter()
    data = make_dataset(out / "data", args.cases, seed=0, shape=(args.depth, args.size, args.size),
                        lesion_radius=(1.5, 0.1 * args.size), irregularity=(0.0, 0.6), empty_fraction=0.15,
                        progress=False)
    configs = [dict(data=str(data), out=str(out / "runs" / f"{loss}-seed{seed}"), loss=loss,
                    variant=args.variant if loss == "afl" else None, encoder=args.encoder, encoder_weights=None,
                    epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                    val_fraction=args.val_fraction, device="cpu", progress=False)
               for seed in args.seeds for loss in args.losses]
    per_case: dict[tuple[str, int], pd.DataFrame] = {}
    print(f"{len(configs)} runs ({len(args.losses)} losses x {len(args.seeds)} seeds), {args.jobs} at a time; "
          f"{args.cases} cases of {args.depth}x{args.size}x{args.size}, {args.encoder}, {args.epochs} epochs",
          flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, config, 1) for config in configs]
        for future in futures:
            loss, seed, table, seconds = future.result()
            per_case[loss, seed] = table
            print(f"  {loss:<11s} seed {seed}: dice {table['dice'].mean():.3f}  ({seconds:.0f} s)", flush=True)

    # Results over every (seed, case) pair; the lesion F1 pools their detections.
    pooled = {loss: pd.concat([per_case[loss, s].assign(case=per_case[loss, s]["case"] + f"@seed{s}")
                               for s in args.seeds], ignore_index=True)
              for loss in args.losses}
    table = results_table(pooled)
    export_csv(table, out / "results.csv")
    # Paired by case: each case's scores averaged over seeds.
    by_case = {loss: pd.concat([per_case[loss, s] for s in args.seeds]).groupby("case", as_index=False)
               .mean(numeric_only=True) for loss in ("focal", "afl")}
    comparisons = [compare_runs(by_case["focal"], by_case["afl"], metric) for metric in METRICS]
    seed_means = pd.DataFrame({loss: [per_case[loss, s]["dice"].mean() for s in args.seeds] for loss in args.losses},
                              index=pd.Index(args.seeds, name="seed"))
    write_json(out / "comparison.json", {"afl_vs_focal": comparisons, "dice_per_seed": seed_means.to_dict()})
    save_figure(table, out / "results.png", title=f"{len(args.seeds)} seeds, {args.encoder}, {args.epochs} epochs, "
                f"synthetic {args.depth}x{args.size}x{args.size}")

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"\nResults ({len(args.seeds)} seeds x {table['Cases'].iloc[0] // len(args.seeds)} validation cases; "
              f"A-FL variant {args.variant!r}):")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        print("\nMean Dice per seed:")
        print(seed_means.to_string(float_format=lambda v: f"{v:.3f}"))
        print("\nA-FL minus focal loss, paired by case (scores averaged over seeds), 95% bootstrap CI:")
        print(pd.DataFrame(comparisons).set_index("metric").to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n{time.perf_counter() - started:.0f} s; tables in {out}")
    return table


def save_figure(table: pd.DataFrame, path: Path, *, title: str) -> None:
    """Standard Dice and the paper's protocol side by side, the paper's PI-CAI numbers as markers."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    scores = table.to_dict(orient="index")
    paper = PAPER_RESULTS["PICAI"]["DSC"].to_dict()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), layout="constrained")
    plot_results_bars(scores, metric="DSC", ax=axes[0])
    axes[0].set_title("standard lesion Dice")
    plot_results_bars(scores, metric="DSC (paper protocol)", reference=paper, reference_label="paper (PI-CAI)",
                      ax=axes[1])
    axes[1].set_title("the paper's protocol (background averaged in)")
    fig.suptitle(title, fontsize=9)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
