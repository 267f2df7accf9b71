"""Forward + backward time of A-FL relative to focal loss, same process.

    python benchmarks/loss_overhead.py [--batch 16] [--size 256] [--repeats 40] [--device cpu] [--threads 2]
                                       [--out results/bench/loss_overhead.json]

The baseline is segmentation-models-pytorch's ``FocalLoss("binary")``. The calls take turns
(baseline, candidate 1, baseline, candidate 2, ...) and each one's time is the minimum over
the repeats: load from other processes only ever adds time, so the minimum is the closest
reading of the code's own cost. A ratio of 1.10 means 10 % slower. The goal: the default
call (``paper`` with its CPU value checks) at most 1.15x.

Rows: the default call; the same with the parameters precomputed (as ``fit`` does in its
DataLoader workers: what a training step pays); ``scale_aware`` on discs and on a speckled
target (3 % scattered voxels, label noise: thousands of lesions), where it measures every
lesion on the host; ``reference`` (two channels).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from segmentation_models_pytorch.losses import FocalLoss

from afl_core._io import write_json
from afl_core.losses import AdaptiveFocalLoss


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


def speckle(batch: int, size: int, seed: int, fraction: float = 0.03) -> torch.Tensor:
    """Label noise: each voxel foreground with probability ``fraction``."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.random((batch, 1, size, size)) < fraction).astype(np.float32))


def step_time(call, logits, device) -> float:
    start = time.perf_counter()
    call(logits).backward()
    logits.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the CI machine has 2 cores)")
    parser.add_argument("--out", type=Path, help="also write the ratios and the setting to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logits = (3 * torch.randn(args.batch, 1, args.size, args.size, device=device)).requires_grad_()
    logits2 = (3 * torch.randn(args.batch, 2, args.size, args.size, device=device)).requires_grad_()
    discs = lesion_masks(args.batch, args.size, seed=0).to(device)
    noisy = speckle(args.batch, args.size, seed=0).to(device)
    spacing = (0.7, 0.7)
    paper, scale_aware = AdaptiveFocalLoss("paper"), AdaptiveFocalLoss("scale_aware")
    reference = AdaptiveFocalLoss("reference", check_values=False)
    precomputed = paper.adaptive_parameters(discs)
    baseline = FocalLoss("binary")
    candidates = {
        "focal loss (smp)": (logits, lambda x: baseline(x, discs)),
        "paper, default call": (logits, lambda x: paper(x, discs)),
        "paper, precomputed parameters": (logits, lambda x: paper(x, discs, parameters=precomputed)),
        "scale_aware, discs": (logits, lambda x: scale_aware(x, discs, spacing=spacing)),
        "scale_aware, speckle 3 %": (logits, lambda x: scale_aware(x, noisy, spacing=spacing)),
        "reference (2 channels)": (logits2, lambda x: reference(x, discs)),
    }
    for _ in range(3):  # warm-up: allocator, kernels, thread pool
        for x, call in candidates.values():
            step_time(call, x, device)
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(args.repeats):  # interleaved: a drift in load reaches every candidate alike
        for name, (x, call) in candidates.items():
            best[name] = min(best[name], step_time(call, x, device))
    ratios = {name: seconds / best["focal loss (smp)"] for name, seconds in best.items()}
    print(
        f"forward + backward, batch {args.batch} x 1 x {args.size} x {args.size}, {device}, "
        f"{torch.get_num_threads()} threads, minimum of {args.repeats} interleaved calls"
    )
    for name in candidates:
        print(f"  {name:<32s} {best[name] * 1e3:8.1f} ms  {ratios[name]:6.2f}x")
    if args.out:
        write_json(
            args.out,
            {
                "command": "python benchmarks/loss_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                },
                "milliseconds": {name: round(s * 1e3, 2) for name, s in best.items()},
                "ratio_to_focal_loss": {name: round(r, 3) for name, r in ratios.items()},
            },
        )
    return ratios


if __name__ == "__main__":
    main()
