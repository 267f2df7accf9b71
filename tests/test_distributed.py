"""One run on several processes (afl_core.distributed, torchrun): sharding, batch sizes, and
2 gloo ranks on the CPU training as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from afl_core import distributed, models, train
from afl_core.data import SliceDataset
from afl_core.distributed import ShardedSampler, World

# The smallest smp encoder that trains in a blink on 32x32 slices (as tests/test_train.py).
ENCODER = "tu-mobilenetv3_small_050"


def test_sharded_sampler_shares_out_the_samplers_draw_as_distributed_sampler():
    base = list(torch.randint(0, 50, (37,)))  # a draw with repeats, as oversampling makes
    usable = 37 // 8 * 8
    for rank in (0, 1):
        reference = DistributedSampler(range(usable), num_replicas=2, rank=rank, shuffle=False)
        assert list(ShardedSampler(base, 8, rank=rank, world_size=2)) == [base[i] for i in reference]
        assert len(ShardedSampler(base, 8, rank=rank, world_size=2)) == usable // 2


def test_ranks_batches_together_are_the_one_process_batches(dataset):
    """With oversampling and augmentation on: rank r's k-th batch of 4 holds items r, r+2, ...
    of the one process's k-th batch of 8, image for image."""
    slices = SliceDataset(dataset, augment=True, oversample_lesions=0.5, seed=5)
    slices.set_epoch(3)
    one = [b["image"] for b in DataLoader(slices, batch_size=8, sampler=slices.sampler(3), drop_last=True)]
    ranks = [
        [
            b["image"]
            for b in DataLoader(
                slices, batch_size=4, sampler=ShardedSampler(slices.sampler(3), 8, rank=r, world_size=2)
            )
        ]
        for r in (0, 1)
    ]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == len(slices) // 8 >= 2
    for k, batch in enumerate(one):
        assert torch.equal(batch[0::2], ranks[0][k]) and torch.equal(batch[1::2], ranks[1][k])


def test_batch_sizes_that_do_not_divide_are_refused():
    assert World(1, 4).per_rank_batch(8) == 2
    with pytest.raises(ValueError, match=r"batch size 8 .* over 3 processes: use a multiple of 3"):
        World(0, 3).per_rank_batch(8)
    with pytest.raises(ValueError, match=r"5 training items per epoch are fewer than one global batch of 8"):
        ShardedSampler(range(5), 8, rank=0, world_size=2)


def _group_normed_model(*args, **kwargs) -> nn.Module:
    """:func:`afl_core.models.build_model` with every batch norm replaced by a group norm: a
    network whose output for an item does not depend on the other items of the batch."""
    model = models.build_model(*args, **kwargs)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.GroupNorm(1, child.num_features))
    return model


def _fit_group_normed(runs: list[dict]) -> None:
    """One rank of the 2-process runs (started by :func:`afl_core.distributed.spawn`): each
    run in turn, so that the losses share one start of the two processes."""
    torch.set_num_threads(1)
    train.build_model = _group_normed_model
    for settings in runs:
        train.fit(train.TrainConfig(**settings))


# The losses that distributed.py calls exact under DDP: means of per-item terms.
EXACT_UNDER_DDP = {
    "ce": {},
    "focal": {},
    "afl-paper": {"variant": "paper"},
    "afl-scale_aware": {"variant": "scale_aware"},
}


def test_two_ranks_train_as_one_process_with_the_global_batch(dataset, tmp_path, monkeypatch):
    """One epoch, global batch 8, lesion oversampling, augmentation off, same seed: 2 gloo
    ranks of 4 give the one process's history and weights, for every loss whose exactness
    afl_core.distributed claims. Batch norm is per rank under DDP (PyTorch has no
    SyncBatchNorm on the CPU), so the network here normalises per item."""
    common = dict(
        data=str(dataset),
        encoder=ENCODER,
        encoder_weights=None,
        epochs=1,
        batch_size=8,
        augment=False,
        seed=7,
        device="cpu",
        progress=False,
    )
    runs = {name: common | {"loss": name.split("-")[0]} | options for name, options in EXACT_UNDER_DDP.items()}
    monkeypatch.setattr(train, "build_model", _group_normed_model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = {name: train.fit(train.TrainConfig(out=str(tmp_path / "one" / name), **s)) for name, s in runs.items()}
    finally:
        torch.set_num_threads(threads)
    distributed.spawn(_fit_group_normed, 2, ([s | {"out": str(tmp_path / "two" / name)} for name, s in runs.items()],))

    for name in runs:
        two = pd.read_csv(tmp_path / "two" / name / "history.csv")
        reference = one[name].history
        assert json.loads((tmp_path / "one" / name / "config.json").read_text())["steps_per_epoch"] == 2
        assert list(two["epoch"]) == [1], name
        assert two["train_loss"].iloc[0] == pytest.approx(reference["train_loss"].iloc[0], abs=1e-5), name
        assert two["val_loss"].iloc[0] == pytest.approx(reference["val_loss"].iloc[0], abs=1e-5), name
        assert two["val_dice"].iloc[0] == reference["val_dice"].iloc[0], name
        weights = torch.load(tmp_path / "two" / name / "checkpoint_last.pt", weights_only=True)["model"]
        # Adam divides each gradient by its running size, so the rounding of a sum taken in
        # another order moves a weight whose gradient is near 0 by a visible part of a step
        # (measured: up to 1.3e-5 for ce after 2 steps of lr 1e-3). The batch-pooled losses,
        # not exact, differ by 2e-3 to 3e-3 (dice, afl reference): far outside this tolerance.
        for key, tensor in one[name].model.state_dict().items():
            torch.testing.assert_close(weights[key], tensor, rtol=0, atol=5e-5, msg=f"{name}: {key}")
        config = json.loads((tmp_path / "two" / name / "config.json").read_text())
        assert config["world_size"] == 2 and config["batch_size"] == 8 and config["loss"] == runs[name]["loss"]


def test_torchrun_trains_resumes_and_reports_from_rank_zero(dataset, tmp_path):
    """The command line under torchrun on 2 CPU processes (real batch norm, per rank),
    then resumed from rank 0's checkpoint; one progress display, one summary line."""
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "afl_core.train",
        "--out",
        str(run),
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    started = subprocess.run(
        command
        + [
            "--data",
            str(dataset),
            "--encoder",
            ENCODER,
            "--encoder-weights",
            "none",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.count("best val_dice") == 1
    assert started.stderr.count("epoch 1/1:   0%") == 1  # the epoch's bar starts once: rank 0's
    resumed = subprocess.run(
        command + ["--resume", "--epochs", "2", "--no-progress"], capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2] and history["train_loss"].notna().all()
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert torch.load(run / "checkpoint_last.pt", weights_only=True)["epoch"] == 2
