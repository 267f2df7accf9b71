"""Training throughput with A-FL relative to focal loss: same model, data and process.

    python benchmarks/train_throughput.py [--device auto] [--encoder resnet18] [--size 64]
        [--batch 8] [--steps 4] [--repeats 7] [--variants paper scale_aware] [--threads 1]
    python benchmarks/train_throughput.py --ranks 1 2 [--batch 8] ...   # DistributedDataParallel on the CPU

Each loss trains its own copy of one U-Net (same initial weights, the paper's SGD) with
:class:`afl_core.train.TrainStep`, the step :func:`afl_core.train.fit` runs, on the same
batches of synthetic slices held in memory (no data loading in the timing). Rounds
alternate the losses, in a rotating order, so drifts in machine load hit all alike; the
ratio of a variant is the median over rounds of (its images/s) / (focal loss's images/s
in the same round). The goal is a ratio >= 0.97: A-FL's adaptive statistics should cost
at most 3 % of a training step.

``--ranks 1 2``: slices per second of A-FL training (the ``--variants``' first) with the
global batch ``--batch`` in one plain process and under DistributedDataParallel on 1 and 2
CPU processes (gloo, ``--threads`` each; each rank takes ``batch / ranks`` slices of every
batch, as :class:`afl_core.distributed.ShardedSampler` shares them out), from the same
initial weights on the same batches, one process after the other (timings are medians over
the rounds). It also reports how far the training losses of the ranks (their mean over the
global batch) drift from the one process's: on the CPU batch normalisation has no
SyncBatchNorm, so each rank normalises with the statistics of its own share of the batch.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from afl_core import distributed
from afl_core.data import SliceDataset
from afl_core.losses import VARIANTS
from afl_core.models import autocast_dtype, build_model, resolve_device
from afl_core.synthetic import make_dataset
from afl_core.train import PAPER_SGD, TrainStep, make_loss, make_optimizer

GOAL = 0.97


def synthetic_batches(
    root: Path, *, size: int, batch: int, n_batches: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` (image, label) batches of ``size`` x ``size`` synthetic slices, half of
    them drawn from lesion-bearing slices, every batch holding at least one lesion (A-FL's
    reference variant is undefined otherwise)."""
    depth = 16
    n_cases = max(2, -(-batch * n_batches // depth))
    make_dataset(
        root,
        n_cases,
        seed=seed,
        shape=(depth, size, size),
        lesion_radius=(2.0, 0.1 * size),
        irregularity=(0.0, 0.6),
        empty_fraction=0.0,
        progress=False,
    )
    slices = SliceDataset(root, oversample_lesions=0.5, seed=seed)
    batches = []
    epoch = 0
    while len(batches) < n_batches:
        loader = DataLoader(slices, batch_size=batch, sampler=slices.sampler(epoch), drop_last=True)
        batches += [(b["image"], b["label"]) for b in loader if b["label"].any()]
        epoch += 1
    return batches[:n_batches]


def measure(
    losses: dict[str, dict],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    encoder: str,
    device: torch.device,
    amp: bool = True,
    steps: int = 4,
    repeats: int = 5,
    warmup: int = 2,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Images per second of each loss per round: ``{name: [rate of round 1, ...]}``.

    ``losses`` maps a name to :func:`afl_core.train.make_loss` arguments
    (``{"name": "afl", "variant": "paper"}``).
    """
    amp_dtype = autocast_dtype(device, amp)
    torch.manual_seed(0)
    one = build_model(encoder, None, in_channels=batches[0][0].shape[1], classes=1)
    two = build_model(encoder, None, in_channels=batches[0][0].shape[1], classes=2)
    on_device = [(x.to(device), y.to(device)) for x, y in batches]
    trainers = {}
    for name, spec in losses.items():
        channels = VARIANTS[spec["variant"]].channels if spec["name"] == "afl" else 1
        model = copy.deepcopy(two if channels == 2 else one).to(device)
        model.train()
        optimizer = make_optimizer(model, "sgd", PAPER_SGD["lr"], PAPER_SGD["weight_decay"])
        trainers[name] = TrainStep(
            model, make_loss(**spec), optimizer, device=device, amp_dtype=amp_dtype, channels_last=True
        )

    def run(trainer: TrainStep, count: int) -> float:
        """Images per second over ``count`` steps (device work finished inside the timing)."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        images = 0
        for i in range(count):
            x, y = on_device[i % len(on_device)]
            trainer(x, y)
            images += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return images / (time.perf_counter() - start)

    for trainer in trainers.values():
        run(trainer, warmup)
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    names = list(trainers)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(run(trainers[name], steps))
        if progress:
            print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names), flush=True)
    return rates


def ratios(rates: dict[str, list[float]], baseline: str = "focal") -> dict[str, float]:
    """Median over rounds of ``rate / baseline rate`` of the same round."""
    return {
        name: statistics.median(r / b for r, b in zip(values, rates[baseline]))
        for name, values in rates.items()
        if name != baseline
    }


def measure_rank(batches_file: str, result_file: str, options: dict) -> None:
    """One process's part of ``--ranks``: paper-SGD training steps on its share of each batch
    (all of it outside torchrun); rank 0 writes the slices/s of each round and the global
    mean loss of every step to ``result_file`` (JSON). ``options``: ``encoder``, ``loss``
    (:func:`make_loss` arguments), ``steps``, ``repeats``, ``warmup``, ``threads``."""
    torch.set_num_threads(options["threads"])
    world = distributed.init(torch.device("cpu"))
    batches = torch.load(batches_file, weights_only=True)
    torch.manual_seed(0)
    model = build_model(options["encoder"], None, in_channels=batches[0][0].shape[1], classes=1)
    optimizer = make_optimizer(model, "sgd", PAPER_SGD["lr"], PAPER_SGD["weight_decay"])
    step = TrainStep(model, make_loss(**options["loss"]), optimizer, device=torch.device("cpu"))
    step.model = distributed.wrap(model, world)
    share = [(x[world.rank :: world.size], y[world.rank :: world.size]) for x, y in batches]
    losses = []

    def run(count: int) -> float:
        start = time.perf_counter()
        for i in range(count):
            loss = step(*share[len(losses) % len(share)])
            losses.append(float(distributed.sum_over_ranks(loss)) / world.size)  # also keeps the ranks in step
        return count * batches[0][0].shape[0] / (time.perf_counter() - start)

    run(options["warmup"])
    rates = [run(options["steps"]) for _ in range(options["repeats"])]
    if world.main:
        Path(result_file).write_text(json.dumps({"rates": rates, "losses": losses}))
    distributed.cleanup(world)


def measure_ranks(args, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, dict]:
    """``--ranks``: slices/s (median over rounds) and loss drift of each configuration."""
    loss = {"name": "afl", "variant": args.variants[0]}
    options = dict(
        encoder=args.encoder, loss=loss, steps=args.steps, repeats=args.repeats, warmup=2, threads=args.threads
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        batches_file = str(Path(tmp) / "batches.pt")
        torch.save(batches, batches_file)
        for ranks in [0, *args.ranks]:  # 0: one plain process, no DistributedDataParallel
            name = "1 process" if ranks == 0 else f"DDP {ranks} rank{'s' * (ranks > 1)}"
            result_file = str(Path(tmp) / f"{ranks}.json")
            if ranks == 0:
                measure_rank(batches_file, result_file, options)
            else:
                distributed.spawn(measure_rank, ranks, (batches_file, result_file, options))
            results[name] = json.loads(Path(result_file).read_text())
    reference = results["1 process"]["losses"]
    for name, result in results.items():
        drift = [abs(a - b) / abs(b) for a, b in zip(result["losses"], reference)]
        result |= {
            "slices_per_s": statistics.median(result["rates"]),
            "first_step_relative_loss_drift": drift[0],
            "max_relative_loss_drift": max(drift),
        }
        print(
            f"  {name:<12s} {result['slices_per_s']:8.1f} slices/s   loss vs 1 process: relative difference "
            f"{drift[0]:.1e} at the first step, at most {max(drift):.1e} over {len(drift)} steps",
            flush=True,
        )
    return results


def print_rates(rates: dict[str, list[float]], result: dict[str, float]) -> None:
    """One line per loss: its median images/s and, for A-FL, its ratio to focal loss against the goal."""
    for name, values in rates.items():
        line = f"  {name:<16s} {statistics.median(values):8.1f} images/s"
        if name in result:
            verdict = "meets" if result[name] >= GOAL else "below"
            line += f"   ratio to focal {result[name]:.3f}  ({verdict} the goal {GOAL})"
        print(line)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="slice size (a multiple of 32)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="training steps per loss per round")
    parser.add_argument("--repeats", type=int, default=7, help="rounds")
    parser.add_argument("--variants", nargs="+", default=["paper", "scale_aware"], choices=tuple(VARIANTS))
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: OpenMP threads fighting over a shared machine "
        "make timings swing many-fold); with --ranks, per process",
    )
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        help="DistributedDataParallel on this many CPU processes (gloo) each, against one process",
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.ranks:
        with tempfile.TemporaryDirectory() as tmp:
            batches = synthetic_batches(Path(tmp) / "data", size=args.size, batch=args.batch, n_batches=4)
        print(
            f"training throughput on the CPU: U-Net {args.encoder}, A-FL {args.variants[0]}, global batch "
            f"{args.batch} x {batches[0][0].shape[1]} x {args.size} x {args.size}, paper SGD, {args.threads} "
            f"thread(s) per process, {args.repeats} rounds of {args.steps} steps",
            flush=True,
        )
        return measure_ranks(args, batches)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    losses = {"focal": {"name": "focal"}} | {f"afl-{v}": {"name": "afl", "variant": v} for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        batches = synthetic_batches(Path(tmp) / "data", size=args.size, batch=args.batch, n_batches=4)
    print(
        f"training throughput: U-Net {args.encoder}, batch {args.batch} x {batches[0][0].shape[1]} x "
        f"{args.size} x {args.size}, {device}"
        + (
            f" ({torch.cuda.get_device_name(device)}, {autocast_dtype(device, args.amp)})"
            if device.type == "cuda"
            else f" ({torch.get_num_threads()} threads)"
        )
        + f", paper SGD, {args.repeats} rounds of {args.steps} steps"
    )
    rates = measure(
        losses, batches, encoder=args.encoder, device=device, amp=args.amp, steps=args.steps, repeats=args.repeats
    )
    result = ratios(rates)
    print_rates(rates, result)
    return result


if __name__ == "__main__":
    main()
