"""Forward + backward time of each A-FL variant relative to focal loss, same process.

    python benchmarks/loss_overhead.py [--batch 16] [--size 256] [--repeats 30] [--device cpu] [--threads 2]

The baseline is segmentation-models-pytorch's ``FocalLoss("binary")``. Each candidate is
timed right after a baseline run, the candidates take turns, and the ratio is the median
of the per-pair ratios. A ratio of 1.10 means 10 % slower. The goal: the default call
(``paper`` with its CPU value checks) at most 1.15x. ``scale_aware`` labels the lesions
on the host (SciPy) at 0.7 mm spacing; its ratio is the price of that, not a goal.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from segmentation_models_pytorch.losses import FocalLoss

from afl_core.losses import adaptive_focal_loss


def lesion_masks(batch: int, size: int, seed: int) -> torch.Tensor:
    """Realistic targets: a few small discs per slice, a quarter of the slices empty."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((batch, 1, size, size), np.float32)
    for n in range(batch):
        if n % 4 == 3:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(16, size - 16), rng.integers(16, size - 16), rng.uniform(3, size / 12)
            masks[n, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    return torch.from_numpy(masks)


def step_time(loss_fn, logits, target, device) -> float:
    start = time.perf_counter()
    loss = loss_fn(logits, target)
    loss.backward()
    logits.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the CI machine has 2 cores)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logits = (3 * torch.randn(args.batch, 1, args.size, args.size, device=device)).requires_grad_()
    logits2 = (3 * torch.randn(args.batch, 2, args.size, args.size, device=device)).requires_grad_()
    target = lesion_masks(args.batch, args.size, seed=0).to(device)
    baseline = FocalLoss("binary")
    candidates = {
        "paper (default checks)": (logits, lambda x, t: adaptive_focal_loss(x, t, variant="paper")),
        "paper (no checks)": (logits, lambda x, t: adaptive_focal_loss(x, t, variant="paper", check_values=False)),
        "scale_aware": (logits, lambda x, t: adaptive_focal_loss(x, t, variant="scale_aware", spacing=(0.7, 0.7))),
        "reference (2 channels)": (
            logits2,
            lambda x, t: adaptive_focal_loss(x, t, variant="reference", check_values=False),
        ),
    }
    print(
        f"A-FL forward+backward time / smp FocalLoss('binary'), batch {args.batch} x 1 x "
        f"{args.size} x {args.size}, {device}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} alternating pairs"
    )
    for _ in range(5):  # warm-up: allocator, kernels, thread pool
        for x, fn in candidates.values():
            step_time(baseline, logits, target, device)
            step_time(fn, x, target, device)
    # Round robin over the candidates, so that drifts in machine load hit all of them alike.
    pairs = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, (x, fn) in candidates.items():
            base = step_time(baseline, logits, target, device)
            pairs[name].append((step_time(fn, x, target, device), base))
    ratios = {}
    for name, measured in pairs.items():
        ratios[name] = statistics.median(c / b for c, b in measured)
        base_ms = statistics.median(b for _, b in measured) * 1e3
        print(f"  {name:<24s} {ratios[name]:5.2f}x   (focal loss {base_ms:6.1f} ms)")
    return ratios


if __name__ == "__main__":
    main()
