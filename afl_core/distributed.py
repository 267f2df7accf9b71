"""One training run on several processes: torchrun and DistributedDataParallel (DDP).

    torchrun --nproc_per_node N -m afl_core.train --data D --out RUN ...

torchrun starts N copies of the program and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`init`
reads it and joins the process group: NCCL on CUDA (process ``LOCAL_RANK`` drives GPU
``LOCAL_RANK``), gloo on the CPU. Without torchrun nothing changes: one process, no group.

What makes N processes train as one process with the global batch ``B`` (``--batch-size``):

* **The same batches.** Every rank draws the same epoch sample from ``(seed, epoch)``
  (the dataset's own sampler, lesion oversampling included), cut to whole global batches.
  :class:`ShardedSampler` gives rank ``r`` the items at positions ``r, r + N, r + 2N, ...``
  (as :class:`torch.utils.data.DistributedSampler`), so the k-th batches of ``B / N`` items
  of all ranks together are exactly the one process's k-th batch. Item ``i`` is augmented
  from ``(seed, epoch, i)`` wherever it is loaded.
* **The same gradient.** Each rank's loss is the mean over its ``B / N`` items and DDP
  averages the gradients over the N ranks:

  .. math:: \\frac{1}{N}\\sum_r \\nabla \\frac{N}{B}\\sum_{i \\in r} \\ell_i
            = \\nabla \\frac{1}{B}\\sum_{i=1}^{B} \\ell_i ,

  exact when the loss is a mean of per-item terms over items of equal size: cross-entropy,
  focal loss, A-FL ``paper`` and ``scale_aware`` (alpha and gamma are per sample;
  ``tests/test_distributed.py`` trains each on 2 ranks against one process). Losses
  pooled over the batch (segmentation-models-pytorch's Dice, IoU and Tversky in binary mode;
  A-FL ``reference``, whose statistics are batch-wide) are computed over each rank's
  ``B / N`` items instead: with ``B / N = 1`` that is the authors' batch of one volume.
* **The same normalisation.** Batch normalisation computes its statistics per rank (over
  ``B / N`` items) unless its layers synchronise: :func:`wrap` makes them
  :class:`torch.nn.SyncBatchNorm` on CUDA. PyTorch has no SyncBatchNorm on the CPU, so
  there (gloo) the statistics stay per rank and N ranks train a slightly different network
  than one process; ``benchmarks/train_throughput.py --ranks`` measures by how much.

The training loss that is reported is summed over ranks (:func:`sum_over_ranks`): the mean
over the global batch. Validation, ``history.csv``, checkpoints and progress bars belong to
rank 0 (:attr:`World.main`); the other ranks wait for it at their next collective call.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

__all__ = [
    "World",
    "launched",
    "is_main_process",
    "check_launch",
    "init",
    "cleanup",
    "wrap",
    "ShardedSampler",
    "sum_over_ranks",
    "any_rank",
    "spawn",
    "RankLost",
    "lost_peer",
    "describe_loss",
    "reason",
]

# Rank 0 validates (and writes checkpoints) while the others wait at their next collective
# call: long enough for the validation of a large dataset.
_TIMEOUT = datetime.timedelta(hours=2)
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# torchrun also sets TORCHELASTIC_RUN_ID (dist.is_torchelastic_launched); spawn() sets this instead.
_SPAWNED = "AFL_SPAWNED_RANK"
# Host-side flags (a batch holds a lesion) go through gloo: over NCCL they would need a device sync.
_host_group = None


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``device`` the one it trains on.

    ``owned``: :func:`init` created the process group (and :func:`cleanup` ends it)."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    owned: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, writes the run folder and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group (under torchrun, even with one process)."""
        return dist.is_available() and dist.is_initialized()

    def per_rank_batch(self, batch_size: int) -> int:
        """``batch_size / size``: each rank's share of the global batch."""
        if batch_size % self.size:
            raise ValueError(
                f"the batch size {batch_size} (the global batch) does not divide over {self.size} "
                f"processes: use a multiple of {self.size} (each process takes batch size / processes)"
            )
        return batch_size // self.size


def launched() -> bool:
    """Started by torchrun (or :func:`spawn`)? Its variables alone do not say so: they may
    be left over in a shell (:func:`init` refuses those that ask for several processes)."""
    started = (dist.is_available() and dist.is_torchelastic_launched()) or _SPAWNED in os.environ
    return started and all(name in os.environ for name in _TORCHRUN_VARIABLES)


def is_main_process() -> bool:
    """Whether this process writes the run folder: rank 0 under torchrun, or the one process
    of a run without it (a stray ``RANK`` left in the environment does not count). Known
    before :func:`init`, for what happens before the process group exists."""
    return not launched() or os.environ["RANK"] == "0"


def _refuse_stray_variables() -> None:
    """A process torchrun did not start whose environment asks for several processes would
    wait for the others forever in :func:`init`: say so instead, naming the variables."""
    world_size = os.environ.get("WORLD_SIZE", "1").strip()
    if world_size == "1":
        return
    found = ", ".join(f"{name}={os.environ[name]}" for name in _TORCHRUN_VARIABLES if name in os.environ)
    others = f"{int(world_size) - 1} other process(es)" if world_size.isdigit() and int(world_size) > 1 else "others"
    raise ValueError(
        f"the environment holds torchrun's variables ({found}), but this process was not started by torchrun: "
        f"it would wait for {others} that never come. Left over from another job or shell? Remove them "
        f"(unset {' '.join(_TORCHRUN_VARIABLES)}) to train in one process; to train on several, start the "
        "run with torchrun --nproc_per_node N -m afl_core.train ..."
    )


def check_launch() -> None:
    """Refuse, before any work, torchrun's variables left in the environment of a process that
    torchrun did not start when they ask for several processes (:func:`init` would wait for
    them forever): a command checks this before it makes a folder.

    Raises:
        ValueError: the variables, named, and how to remove them.
    """
    if not launched():
        _refuse_stray_variables()


def init(device: torch.device) -> World:
    """Join the process group torchrun's environment describes (NCCL on CUDA, gloo on the
    CPU); on CUDA this process trains on GPU ``LOCAL_RANK``. Outside torchrun: one process
    on ``device``. Inside a group someone else created: that group.

    Raises:
        ValueError: torchrun's variables ask for several processes (``WORLD_SIZE`` > 1)
            but torchrun did not start this one (it would wait for the others forever);
            a GPU this rank needs is not visible; a device other than CUDA or the CPU.
    """
    global _host_group
    device = torch.device(device)
    if not launched():
        _refuse_stray_variables()
        return World(device=device)
    rank, size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process {rank} needs GPU {local_rank} but {torch.cuda.device_count()} are visible: "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"training on several processes supports cuda and cpu devices, got {device}")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=_TIMEOUT)
        _host_group = dist.new_group(backend="gloo") if device.type == "cuda" else None
    return World(rank, size, device, owned)


def cleanup(world: World) -> None:
    """Wait for every rank (rank 0 may still be writing its last checkpoint), then leave
    the process group if :func:`init` created it."""
    global _host_group
    if world.owned and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _host_group = None


def wrap(model: nn.Module, world: World) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when in a process
    group (else ``model`` itself). On CUDA its batch-norm layers become
    :class:`~torch.nn.SyncBatchNorm` first, in place: the layers keep their parameters and
    buffers, so an optimiser made before still holds them and ``model.state_dict()`` keeps
    its keys. Call it after anything that moves the parameters (``model.to(...)``)."""
    if not world.distributed:
        return model
    if world.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the same root module, its layers replaced
        return nn.parallel.DistributedDataParallel(model, device_ids=[world.device.index])
    return nn.parallel.DistributedDataParallel(model)


class ShardedSampler(Sampler[int]):
    """Rank ``rank``'s share of the indices ``base`` draws, as :class:`DistributedSampler`
    shares a permutation, for any seeded ``base`` (the dataset's :meth:`sampler`, which
    keeps the lesion oversampling).

    ``base`` must draw the same indices on every rank (seeded by ``(seed, epoch)``). They
    are cut to whole global batches of ``batch_size``; rank ``r`` of ``world_size`` takes
    positions ``r, r + world_size, ...``. In a ``DataLoader`` with batch size
    ``batch_size / world_size`` the k-th batches of all ranks then hold, together, exactly
    the indices of the k-th batch of ``batch_size`` that one process draws from ``base``.
    """

    def __init__(self, base: Iterable[int], batch_size: int, *, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        World(rank, world_size).per_rank_batch(batch_size)  # divisibility, with its message
        if len(base) < batch_size:
            raise ValueError(
                f"{len(base)} training items per epoch are fewer than one global batch of "
                f"{batch_size}: lower the batch size or train on one process"
            )
        self.base, self.batch_size, self.rank, self.world_size = base, batch_size, rank, world_size

    def __len__(self) -> int:
        return len(self.base) // self.batch_size * self.batch_size // self.world_size

    def __iter__(self) -> Iterator[int]:
        indices = list(self.base)
        usable = len(indices) // self.batch_size * self.batch_size
        return iter(indices[self.rank : usable : self.world_size])


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (a copy; ``tensor`` itself outside a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def any_rank(flag: bool) -> bool:
    """Is ``flag`` true on any rank? Through gloo on the host: no device sync."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor(int(flag))
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_host_group)
    return bool(value)


class RankLost(RuntimeError):
    """Another process of the run stopped (failed or was killed) while this one waited for
    it in a collective call."""


def lost_peer(error: BaseException, world: World) -> bool:
    """Is ``error``, raised in this process of ``world``, a collective call that lost its
    peers (their process ended), rather than a failure of this process itself?"""
    if world.size < 2:
        return False
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return any(sign in text for sign in _PEER_LOST_SIGNS)


# What gloo and NCCL say when the process at the other end of a collective is gone.
_PEER_LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo", "NCCL")


def reason(error: BaseException) -> str:
    """The gist of a collective's error: its first sentence, without the source location."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0][:160]


def describe_loss(world: World) -> str:
    """``"rank 0 of 2 lost rank 1"``: which process noticed, and which may have failed."""
    others = [str(rank) for rank in range(world.size) if rank != world.rank]
    which = f"rank {others[0]}" if len(others) == 1 else f"one of ranks {', '.join(others)}"
    return (
        f"rank {world.rank} of {world.size} lost {which}, which stopped (failed or was killed; its own "
        "output says why, if it could)"
    )


def spawn(fn: Callable, world_size: int, args: Sequence = ()) -> None:
    """Run ``fn(*args)`` on ``world_size`` new local processes with the environment
    torchrun gives its workers (for tests and benchmarks on the CPU; train with torchrun).
    ``fn`` must be importable (a module's function). Raises if any process failed."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.start_processes(
        _run_as_rank, args=(fn, world_size, port, tuple(args)), nprocs=world_size, start_method="spawn"
    )


def _run_as_rank(rank: int, fn: Callable, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        **{_SPAWNED: str(rank)},
    )
    fn(*args)
