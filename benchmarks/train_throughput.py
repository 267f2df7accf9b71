"""Training throughput with A-FL relative to focal loss: same model, data and process.

    python benchmarks/train_throughput.py [--device auto] [--encoder resnet18] [--size 64]
        [--batch 8] [--steps 4] [--repeats 7] [--variants paper scale_aware] [--threads 1]

Each loss trains its own copy of one U-Net (same initial weights, the paper's SGD) with
:class:`afl_core.train.TrainStep`, the step :func:`afl_core.train.fit` runs, on the same
batches of synthetic slices held in memory (no data loading in the timing). Rounds
alternate the losses, in a rotating order, so drifts in machine load hit all alike; the
ratio of a variant is the median over rounds of (its images/s) / (focal loss's images/s
in the same round). The goal is a ratio >= 0.97: A-FL's adaptive statistics should cost
at most 3 % of a training step.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from afl_core.data import SliceDataset
from afl_core.models import autocast_dtype, build_model, resolve_device
from afl_core.synthetic import make_dataset
from afl_core.train import PAPER_SGD, TrainStep, make_loss, make_optimizer

GOAL = 0.97


def synthetic_batches(root: Path, *, size: int, batch: int, n_batches: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` (image, label) batches of ``size`` x ``size`` synthetic slices, half of
    them drawn from lesion-bearing slices, every batch holding at least one lesion (A-FL's
    reference variant is undefined otherwise)."""
    depth = 16
    n_cases = max(2, -(-batch * n_batches // depth))
    make_dataset(root, n_cases, seed=seed, shape=(depth, size, size), lesion_radius=(2.0, 0.1 * size),
                 irregularity=(0.0, 0.6), empty_fraction=0.0, progress=False)
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
        model = copy.deepcopy(two if spec.get("variant") == "reference" else one).to(device)
        model.train()
        optimizer = make_optimizer(model, "sgd", PAPER_SGD["lr"], PAPER_SGD["weight_decay"])
        trainers[name] = TrainStep(model, make_loss(**spec), optimizer, device=device, amp_dtype=amp_dtype,
                                   channels_last=True)

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
        for name in names[r % len(names):] + names[: r % len(names)]:
            rates[name].append(run(trainers[name], steps))
        if progress:
            print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names), flush=True)
    return rates


def ratios(rates: dict[str, list[float]], baseline: str = "focal") -> dict[str, float]:
    """Median over rounds of ``rate / baseline rate`` of the same round."""
    return {name: statistics.median(r / b for r, b in zip(values, rates[baseline]))
            for name, values in rates.items() if name != baseline}


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="slice size (a multiple of 32)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="training steps per loss per round")
    parser.add_argument("--repeats", type=int, default=7, help="rounds")
    parser.add_argument("--variants", nargs="+", default=["paper", "scale_aware"],
                        choices=["paper", "reference", "scale_aware"])
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: OpenMP threads fighting over a shared machine "
                             "make timings swing many-fold)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    losses = {"focal": {"name": "focal"}} | {f"afl-{v}": {"name": "afl", "variant": v} for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        batches = synthetic_batches(Path(tmp) / "data", size=args.size, batch=args.batch, n_batches=4)
    print(f"training throughput: U-Net {args.encoder}, batch {args.batch} x {batches[0][0].shape[1]} x "
          f"{args.size} x {args.size}, {device}"
          + (f" ({torch.cuda.get_device_name(device)}, {autocast_dtype(device, args.amp)})" if device.type == "cuda"
             else f" ({torch.get_num_threads()} threads)")
          + f", paper SGD, {args.repeats} rounds of {args.steps} steps")
    rates = measure(losses, batches, encoder=args.encoder, device=device, amp=args.amp,
                    steps=args.steps, repeats=args.repeats)
    result = ratios(rates)
    for name, values in rates.items():
        line = f"  {name:<16s} {statistics.median(values):8.1f} images/s"
        if name in result:
            line += f"   ratio to focal {result[name]:.3f}  ({'meets' if result[name] >= GOAL else 'below'} the goal {GOAL})"
        print(line)
    return result


if __name__ == "__main__":
    main()
