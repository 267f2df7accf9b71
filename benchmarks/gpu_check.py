"""The GPU check: the paper's configuration on synthetic 256x256 slices, on one GPU.

    python benchmarks/gpu_check.py [--out DIR] [--batch 16] [--steps 20] [--repeats 5]

(run by ``benchmarks/gpu_check.sh``, which installs what is missing first). It reports

1. images/s of a training step with focal loss and with each A-FL variant (ResNet50
   U-Net, SGD lr 0.1 / momentum 0.9 / Nesterov / weight decay 1e-5, bf16 autocast where
   supported, channels-last), and each variant's ratio to focal loss;
2. host synchronisations inside the A-FL step: the loss forward + backward, and the whole
   training step, run under ``torch.cuda.set_sync_debug_mode("error")`` (any sync raises);
3. peak GPU memory of each loss's training;
4. a one-epoch ``fit`` + ``evaluate_run`` on the same data, through the real CUDA code path
   (AMP, channels-last, NaN check, checkpoints);
5. the same run under ``torchrun --nproc_per_node 1`` (DistributedDataParallel, NCCL,
   SyncBatchNorm), then resumed for a second epoch from its checkpoint (a DDP smoke run).

Everything goes to stdout and to ``DIR/gpu_check.json``. Encoder weights are random (the
machine is offline; they do not change the speed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

# benchmarks/ is on sys.path when this file runs as a script.
from train_throughput import measure, ratios, synthetic_batches

from afl_core._io import write_json
from afl_core.evaluate import evaluate_run
from afl_core.losses import VARIANTS
from afl_core.models import autocast_dtype, build_model
from afl_core.train import PAPER_SGD, TrainStep, fit, make_loss, make_optimizer


def sync_free(step, *args) -> str:
    """``"none"`` when ``step(*args)`` makes no host synchronisation, else the error text."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(*args)
        return "none"
    except RuntimeError as error:
        return f"SYNC: {str(error).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


def check_syncs(batch, device, amp_dtype) -> dict[str, dict[str, str]]:
    """Sync check of each A-FL variant: loss forward + backward alone, and a whole TrainStep,
    with the per-sample parameters computed beforehand on the host (as DataLoader workers
    do in ``fit``) where the variant's parameters are per sample."""
    images, labels = (t.to(device) for t in batch)
    report = {}
    for variant, spec in VARIANTS.items():
        classes = spec.channels
        loss_fn = make_loss("afl", variant)
        logits = torch.randn(labels.shape[0], classes, *labels.shape[2:], device=device, requires_grad=True)
        parameters = None
        if spec.per_sample:
            parameters = tuple(p.to(device) for p in loss_fn.adaptive_parameters(batch[1], spacing=(1.0, 1.0)))
        torch.cuda.synchronize()

        def loss_step():
            loss_fn(logits, labels, parameters=parameters).backward()

        model = build_model("resnet50", None, in_channels=images.shape[1], classes=classes).to(device)
        optimizer = make_optimizer(model, "sgd", PAPER_SGD["lr"], PAPER_SGD["weight_decay"])
        step = TrainStep(model, loss_fn, optimizer, device=device, amp_dtype=amp_dtype, channels_last=True)
        # Warm-up: lazy initialisation (cuDNN plans, optimizer state) may sync once.
        loss_step()
        step(images, labels, None, parameters)
        report[variant] = {
            "loss_forward_backward": sync_free(loss_step),
            "train_step": sync_free(step, images, labels, None, parameters),
        }
        del model, optimizer, step
    return report


def ddp_smoke(data: Path, run: Path, *, batch: int, device: str) -> dict:
    """Step 5: the run of step 4 through torchrun on one process, then ``--resume`` for a
    second epoch; its config and history, or the error of the step that failed."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "afl_core.train",
        "--out",
        str(run),
        "--no-progress",
    ]
    start = [
        "--data",
        str(data),
        "--loss",
        "afl",
        "--variant",
        "paper",
        "--encoder",
        "resnet50",
        "--encoder-weights",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        str(batch),
        "--optimizer",
        "sgd",
        "--device",
        device,
    ]
    for name, extra in (("start", start), ("resume", ["--resume", "--epochs", "2"])):
        done = subprocess.run(command + extra, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            return {"error": f"{name} failed ({done.returncode}): {done.stderr[-3000:]}"}
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    return {
        "world_size": config["world_size"],
        "resolved_device": config["resolved_device"],
        "history": pd.read_csv(run / "history.csv").to_dict(orient="records"),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit-epochs", type=int, default=1)
    parser.add_argument("--device", default="cuda", help="cpu only to rehearse the script (no sync check)")
    return parser.parse_args(argv)


def peak_memory(losses: dict, batches, device) -> dict[str, float]:
    """Step 3: peak GPU memory (GiB) of a few training steps with each loss, one ``measure``
    per loss so that each has its own peak."""
    peaks = {}
    for name, spec in losses.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        measure({name: spec}, batches, encoder="resnet50", device=device, steps=3, repeats=1, warmup=1, progress=False)
        peaks[name] = torch.cuda.max_memory_allocated() / 2**30
    return peaks


def fit_and_evaluate(data: Path, run: Path, args: argparse.Namespace) -> dict:
    """Step 4: the real training loop and evaluation; the history and the evaluation's means."""
    result = fit(
        data=data,
        out=run,
        loss="afl",
        variant="paper",
        encoder="resnet50",
        encoder_weights=None,
        epochs=args.fit_epochs,
        batch_size=args.batch,
        optimizer="sgd",
        device=args.device,
        progress=False,
    )
    evaluation = evaluate_run(run, device=args.device, progress=False)
    return {"history": result.history.to_dict(orient="records"), "eval_means": evaluation.summary["means"]}


def print_summary(report: dict, args: argparse.Namespace, amp_dtype) -> None:
    """The report as a few lines a person reads."""
    print(
        f"\nGPU check on {report['gpu']} ({amp_dtype}), batch {args.batch} x 3 x {args.size} x {args.size}, "
        "ResNet50 U-Net, paper SGD"
    )
    for name, rate in report["images_per_s"].items():
        ratio = report["ratio_to_focal"].get(name)
        print(
            f"  {name:<18s} {rate:8.1f} images/s  peak {report['peak_memory_gib'][name]:5.2f} GiB"
            + (f"  ratio to focal {ratio:.3f}" if ratio is not None else "")
        )
    for variant, checks in report["host_syncs"].items():
        print(
            f"  host syncs, afl-{variant:<12s} loss fwd+bwd: {checks['loss_forward_backward']}; "
            f"train step: {checks['train_step']}"
        )
    history = report["fit"]["history"][-1]
    print(
        f"  fit: epoch {history['epoch']} train_loss {history['train_loss']:.4f} val_dice {history['val_dice']:.4f} "
        f"({history['train_images_per_s']:.0f} images/s with data loading)"
    )
    ddp = report["ddp"]
    if "error" in ddp:
        print(f"  torchrun (DDP, 1 process): FAILED: {ddp['error']}")
    else:
        first, second = ddp["history"]
        print(
            f"  torchrun (DDP, world_size {ddp['world_size']}, {ddp['resolved_device']}): epoch 1 train_loss "
            f"{first['train_loss']:.4f} (fit without DDP: {report['fit']['history'][0]['train_loss']:.4f}), "
            f"resumed epoch 2 train_loss {second['train_loss']:.4f} val_dice {second['val_dice']:.4f}"
        )
    print(f"  total {report['seconds']:.0f} s")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible to PyTorch: this check needs one", file=sys.stderr)
        return 2
    amp_dtype = autocast_dtype(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU rehearsal)"
    report: dict = {
        "gpu": gpu,
        "torch": torch.__version__,
        "amp_dtype": str(amp_dtype),
        "size": args.size,
        "batch": args.batch,
    }
    print(json.dumps(report), flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        batches = synthetic_batches(data, size=args.size, batch=args.batch, n_batches=8)
        print(f"data ready ({time.perf_counter() - started:.0f} s)", flush=True)

        # 1: throughput.
        losses = {"focal": {"name": "focal"}} | {f"afl-{v}": {"name": "afl", "variant": v} for v in VARIANTS}
        rates = measure(
            losses, batches, encoder="resnet50", device=device, steps=args.steps, repeats=args.repeats, warmup=5
        )
        report["images_per_s"] = {name: statistics.median(values) for name, values in rates.items()}
        report["ratio_to_focal"] = ratios(rates)
        report["peak_memory_gib"] = {name: float("nan") for name in losses}
        report["host_syncs"] = {v: {"loss_forward_backward": "n/a", "train_step": "n/a"} for v in VARIANTS}
        if device.type == "cuda":
            # 3: peak memory.
            report["peak_memory_gib"] = peak_memory(losses, batches, device)
            print(f"throughput done ({time.perf_counter() - started:.0f} s)", flush=True)

            # 2: host syncs.
            report["host_syncs"] = check_syncs(batches[0], device, amp_dtype)
            print(f"sync check done ({time.perf_counter() - started:.0f} s)", flush=True)

        # 4: the real loop on CUDA.
        report["fit"] = fit_and_evaluate(data, Path(tmp) / "run", args)
        print(f"fit done ({time.perf_counter() - started:.0f} s)", flush=True)

        # 5: DDP through torchrun, one process.
        report["ddp"] = ddp_smoke(data, Path(tmp) / "run_ddp", batch=args.batch, device=args.device)
    report["seconds"] = time.perf_counter() - started
    print_summary(report, args, amp_dtype)
    write_json(out / "gpu_check.json", report)
    return 1 if "error" in report["ddp"] else 0


if __name__ == "__main__":
    sys.exit(main())
