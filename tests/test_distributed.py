"""One run on several processes (afl_core.distributed, torchrun): sharding, batch sizes, and
2 gloo ranks on the CPU training as one process with the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from afl_core.data import SliceDataset
from afl_core.distributed import ShardedSampler, World
from afl_core.synthetic import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "synthetic", 5, seed=3, shape=(4, 32, 32),
                        lesion_radius=(2.0, 4.0), irregularity=(0.0, 0.5), empty_fraction=0.2,
                        progress=False)


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
    ranks = [[b["image"] for b in DataLoader(slices, batch_size=4,
                                             sampler=ShardedSampler(slices.sampler(3), 8, rank=r, world_size=2))]
             for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == len(slices) // 8 >= 2
    for k, batch in enumerate(one):
        assert torch.equal(batch[0::2], ranks[0][k]) and torch.equal(batch[1::2], ranks[1][k])


def test_batch_sizes_that_do_not_divide_are_refused():
    assert World(1, 4).per_rank_batch(8) == 2
    with pytest.raises(ValueError, match=r"batch size 8 .* over 3 processes: use a multiple of 3"):
        World(0, 3).per_rank_batch(8)
    with pytest.raises(ValueError, match=r"5 training items per epoch are fewer than one global batch of 8"):
        ShardedSampler(range(5), 8, rank=0, world_size=2)
