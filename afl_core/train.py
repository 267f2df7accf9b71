"""Training: a U-Net on MRI slices (2D) or whole volumes (3D) with any of the compared losses, resumable.

``fit(TrainConfig(...))`` (or ``python -m afl_core.train ...``) trains on the slices of
the training cases (``dims=2``, the teaching path) or on the volumes themselves
(``dims=3``, batch 1 by default, the authors' path: :class:`afl_core.data.VolumeDataset`,
a 3D U-Net from :func:`afl_core.models.build_model`), and validates every epoch on whole
validation volumes, writing into the run folder ``out``::

    config.json           every setting, resolved (device, slice size, case split, versions)
    history.csv           one row per epoch: epoch, train_loss, val_loss, val_dice, then
                          val_iou, val_sensitivity, lr (at the epoch's end),
                          train_images_per_s and seconds (wall clock, not reproducible)
    checkpoint_last.pt    everything needed to continue (model, optimiser, scheduler,
                          grad scaler, RNG states, history), written atomically each epoch
    checkpoint_best.pt    the weights with the best ``select_metric`` so far (default
                          ``val_dice``; :data:`SELECT_METRICS` says which way is better)

While a run is written its process holds ``run.lock`` in the folder
(:func:`afl_core._io.folder_lock`, the lock the sweep takes): a second ``afl-train`` into the
same ``--out`` is refused, naming the first (process id, host, start time, command).
``config.json`` records ``data`` as an absolute path, so the run is resumed and evaluated from
any folder; a dataset that moved is named, and ``--resume --data NEW`` (holding the run's
cases) continues with it (:func:`afl_core.evaluate.run_data`).

Each epoch writes ``checkpoint_best.pt`` (when it improved), then ``checkpoint_last.pt``, then
``history.csv``, each atomically. ``checkpoint_last.pt`` is the record of what was trained: a
run killed between two of these writes has at most one epoch more in ``checkpoint_best.pt`` or
one fewer in ``history.csv``, and ``resume=True`` puts them back in step (history.csv rewritten
from the checkpoint, the best so far taken from ``checkpoint_best.pt``) before training on.

Validation (``val_loss``, ``val_dice``): the loss is the mean over validation items;
the Dice is the mean over validation cases of the 3D Dice of the thresholded
(p > 0.5) prediction on the case's evaluation grid (the original grid, or the resized
one with ``resize``) (:func:`afl_core.evaluate.predict_cases`,
:func:`afl_core.metrics.overlap_scores`), as the paper evaluates per volume.

``recipe="authors"`` (``--recipe authors``) fills every setting left unset with the A-FL
authors' choices (:mod:`afl_core.recipes`, ``docs/authors_recipe.md``) and prints them.
A loss whose ``uses_spacing`` attribute is true gets each item's voxel size (``spacing=``,
mm along the item's axes) from :class:`TrainStep`.

Reproducibility: the model is initialised from ``seed``; the order of the training
slices and their augmentation are drawn from ``(seed, epoch)``
(:meth:`afl_core.data.SliceDataset.sampler`), so an epoch is the same whether or not the
run was interrupted before it. With ``resume=True`` training continues after the last
completed epoch from the saved model, optimiser, scheduler, scaler and RNG states; on the
CPU the resumed run reproduces the uninterrupted one exactly. On CUDA, cuDNN's autotuned
kernels are not bitwise deterministic.

Several processes: ``torchrun --nproc_per_node N -m afl_core.train ...`` trains one run on N
processes with DistributedDataParallel (NCCL on CUDA, one GPU per process; gloo on the CPU):
``batch_size`` stays the global batch, each process takes ``batch_size / N`` items of every
batch, and the run trains as on one process (:mod:`afl_core.distributed` says when exactly).
Rank 0 alone validates, writes the run folder (with ``world_size`` in ``config.json``) and
shows progress; a resumed run continues from rank 0's ``checkpoint_last.pt`` on any number
of processes.

On CUDA the forward pass runs under autocast (bfloat16 where the GPU supports it, else
float16 with a gradient scaler) in channels-last memory format; losses are computed in
float32. A training step makes no host synchronisation: the loss is checked for NaN
when the progress bar is refreshed (every step on the CPU, where that is free).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from afl_core import distributed, recipes
from afl_core._io import atomic_target, export_csv, folder_lock, read_json, write_json
from afl_core.data import (
    DATASET_JSON,
    SliceDataset,
    VolumeDataset,
    case_has_lesion,
    list_cases,
    load_geometry,
    patient_grouping,
    split_cases,
)
from afl_core.evaluate import loss_with_spacing, predict_cases, run_data
from afl_core.losses import LOSS_NAMES, VARIANTS, AdaptiveFocalLoss, get_loss
from afl_core.metrics import overlap_scores
from afl_core.models import (
    DEVICES,
    ENCODERS_3D,
    autocast_dtype,
    build_model,
    check_encoder,
    check_encoder_weights,
    load_checkpoint,
    pretrained_weights,
    resolve_device,
)

__all__ = [
    "TrainConfig",
    "FitResult",
    "TrainingDiverged",
    "GPUOutOfMemory",
    "HISTORY_COLUMNS",
    "RESUMABLE_CHANGES",
    "OPTIMIZERS",
    "SCHEDULES",
    "PAPER_SGD",
    "resolve_device",
    "autocast_dtype",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "TrainStep",
    "seed_everything",
    "validate",
    "fit",
    "completed_epochs",
    "build_datasets",
    "SELECT_METRICS",
    "CLI_SETTINGS",
    "add_setting_options",
    "main",
]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("poly", "cosine", "constant")
#: The paper's optimiser (from the authors' trainers).
PAPER_SGD = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-5}
DEFAULT_LR = {"sgd": PAPER_SGD["lr"], "adam": 1e-3}
#: First columns of history.csv, in this order; the rest follow.
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice")
# U-Net's encoder halves the resolution five times.
_SIZE_MULTIPLE = 32
# On an accelerator the loss is read back (and checked for NaN) every this many steps.
_GPU_SYNC_EVERY = 25
#: a training loss this many times its first value (or NaN/Inf) stops the run as diverged
DIVERGENCE_FACTOR = 1e3


def check_out_folder(
    out: str | os.PathLike,
    data: str | os.PathLike,
    files: str = "the run's files (config.json, history.csv, checkpoints)",
) -> None:
    """Refuse a run (or sweep) folder ``out`` inside the dataset ``data`` or any other
    dataset (a folder holding ``dataset.json``, itself or above it), or one that holds
    ``data``: ``files`` would mix with the dataset's. The messages name ``out`` and ``data``
    as given (``--out``, ``--data``)."""
    data_path, out_path = Path(data).resolve(), Path(out).resolve()
    if out_path == data_path or data_path in out_path.parents:
        raise ValueError(
            f"--out {out} is {'the dataset' if out_path == data_path else 'inside the dataset'} --data {data}: "
            f"{files} would mix with the dataset's. Choose a folder outside the dataset"
        )
    if out_path in data_path.parents:
        raise ValueError(
            f"the dataset --data {data} is inside the folder --out {out}: {files} would lie among the dataset's. "
            "Keep the dataset outside the --out folder"
        )
    for folder in (out_path, *out_path.parents):
        if (folder / DATASET_JSON).is_file():
            raise ValueError(
                f"--out {out} is {'a dataset' if folder == out_path else f'inside the dataset {folder}'} (it holds "
                f"{DATASET_JSON}): {files} would mix with the dataset's. Choose a folder outside any dataset"
            )


#: the most DataLoader workers per CPU core ``--num-workers`` accepts (more only queue for the cores)
MAX_WORKERS_PER_CORE = 4


def _cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Settings that may change when a run is resumed (or a sweep called again); any other change is refused.
RESUMABLE_CHANGES = ("epochs", "device", "num_workers", "progress")
#: The validation columns that may pick the best checkpoint (``select_metric``), and which way is better.
SELECT_METRICS = {"val_dice": "max", "val_iou": "max", "val_sensitivity": "max", "val_loss": "min"}


def _setting(default: Any = dataclasses.MISSING, doc: str = "", *, choices=None, flag=None, cli=True):
    """A :class:`TrainConfig` field with its command-line option declared beside it: ``doc``
    (the help), ``choices``, ``flag`` (default ``--name-with-dashes``), ``cli=False`` for a
    setting the command lines do not offer. A callable ``default`` is a default factory."""
    metadata = {"help": doc, "choices": choices, "flag": flag, "cli": cli}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every setting of a training run (saved to ``config.json``).

    Settings left ``None`` take the recipe's value (``recipe="authors"``), else their
    default: ``dims`` 2; ``batch_size`` 8 in 2D, 1 in 3D; ``optimizer`` ``"adam"``;
    ``schedule`` ``"poly"``; ``resize`` False; ``oversample_lesions`` 0.33; ``amp`` True.
    ``lr=None`` takes the optimiser's default: 0.1 for ``"sgd"`` (the paper's SGD:
    momentum 0.9, Nesterov, weight decay 1e-5) and 1e-3 for ``"adam"``.
    ``encoder_weights="auto"``: ``"imagenet"`` in 2D, none (random) in 3D.
    ``size``: 2D ``(H, W)`` in multiples of 32, ``None`` pads slices to the smallest multiple
    of 32 holding every case's in-plane size; 3D ``(D, H, W)``, ``None`` crops/pads to the
    largest extent of the cases; ``resize=True`` (3D) reaches ``size`` by the authors' area
    resampling instead of a crop/pad (:class:`afl_core.data.VolumeDataset`).
    ``variant`` applies to ``loss="afl"`` only (default ``"paper"``); ``"reference"``
    makes the network output two channels (background, foreground) as the authors'.
    Validation cases: ``validation_cases`` when given (e.g. a fold of
    :func:`afl_core.data.kfold_cases`; every other case trains), else a lesion-stratified,
    patient-grouped ``val_fraction`` of the cases drawn with ``split_seed``.
    ``num_workers=None`` uses 4 DataLoader workers on a CUDA machine under Linux, none
    elsewhere. ``loss_options`` go to A-FL (:class:`afl_core.losses.AdaptiveFocalLoss`) for
    ablations: ``{"gamma_terms": ["volume"]}``, ``{"gamma": 0.0}`` (alpha only), ...
    """

    data: str = _setting(doc="dataset folder (imagesTr/, labelsTr/, dataset.json)")
    out: str = _setting(doc="run folder (config.json, history.csv, checkpoints)")
    loss: str = _setting("afl", "loss (default afl)", choices=LOSS_NAMES)
    variant: str | None = _setting(None, "A-FL variant (loss afl only; default paper)", choices=tuple(VARIANTS))
    loss_options: dict = _setting(
        dict, """A-FL options for ablations, e.g. '{"gamma_terms": ["volume"]}' or '{"gamma": 0}'"""
    )
    encoder: str = _setting(
        "resnet50", f"smp encoder in 2D, one of {', '.join(ENCODERS_3D)} in 3D (default resnet50, as the paper)"
    )
    encoder_weights: str | None = _setting("auto", "'imagenet' (2D default) or 'none' (3D: none only)")
    epochs: int = _setting(50, "epochs to train (default 50)")
    batch_size: int | None = _setting(
        None, "items per optimisation step, over all processes (default 8 in 2D, 1 in 3D)"
    )
    optimizer: str | None = _setting(
        None,
        "adam (default) or sgd (the paper's: lr 0.1, momentum 0.9, Nesterov, weight decay 1e-5)",
        choices=OPTIMIZERS,
    )
    lr: float | None = _setting(None, "learning rate (default 1e-3 for adam, 0.1 for sgd)")
    weight_decay: float = _setting(PAPER_SGD["weight_decay"], "L2 weight decay (default 1e-5, the paper's)")
    schedule: str | None = _setting(None, "learning-rate schedule per step (default poly)", choices=SCHEDULES)
    dims: int | None = _setting(None, "2: slices (default), 3: whole volumes", choices=(2, 3))
    size: tuple[int, ...] | None = _setting(
        None, "2D: H W, crop/pad slices (multiples of 32); 3D: D H W, crop/pad (or --resize) volumes"
    )
    resize: bool | None = _setting(
        None, "3D: reach --size by the authors' area resampling (labels then != 0) instead of crop/pad"
    )
    augment: bool = _setting(True, "augmentation (default on)")
    oversample_lesions: float | None = _setting(
        None, "share of lesion-bearing slices drawn per epoch (default 0.33)", flag="--oversample"
    )
    val_fraction: float = _setting(0.2, "share of the cases that validate (default 0.2)")
    split_seed: int = _setting(0, "seed of the train/validation case split (default 0)")
    validation_cases: list[str] | None = _setting(None, "the cases that validate (default: a val_fraction)", cli=False)
    seed: int = _setting(0, "seed of initialisation, sampling and augmentation (default 0)")
    device: str = _setting("auto", "auto (default), cpu or cuda")
    amp: bool | None = _setting(None, "mixed precision on CUDA (default on)")
    channels_last: bool = _setting(True, "channels-last memory format on CUDA (2D)", cli=False)
    num_workers: int | None = _setting(None, "DataLoader workers (default 4 on a CUDA machine under Linux, else 0)")
    progress: bool = _setting(True, "progress bars (default on; --no-progress for batch logs)")
    recipe: str | None = _setting(
        None,
        "'authors': every choice of the A-FL authors' experiment (3D, batch 1, their resize, "
        "2 channels, reference loss, SGD 0.1), printed at start; explicit options override it",
        choices=tuple(recipes.RECIPES),
    )
    select_metric: str = _setting(
        "val_dice",
        "the validation column that picks checkpoint_best.pt (default val_dice; lower is better for "
        + ", ".join(name for name, better in SELECT_METRICS.items() if better == "min")
        + ", higher for the others)",
        choices=tuple(SELECT_METRICS),
    )

    def __post_init__(self) -> None:
        # the dataset as an absolute path: the run is read back (resumed, evaluated) from anywhere
        self.data, self.out = os.path.abspath(self.data), str(self.out)
        self._check_folders()
        self.encoder_weights = pretrained_weights(self.encoder_weights)
        self._fill_unset()
        self._check_shape_settings()
        self._check_loss_settings()
        self._check_numbers()
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"unknown select_metric {self.select_metric!r}; choose from {tuple(SELECT_METRICS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {SCHEDULES}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"--device must be {DEVICES}, got {self.device!r}")

    def _check_folders(self) -> None:
        """The run folder and the dataset apart (:func:`check_out_folder`)."""
        check_out_folder(self.out, self.data)

    def _check_loss_settings(self) -> None:
        """The loss, its A-FL variant and options, as the command line names them."""
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {LOSS_NAMES}")
        if self.variant is not None and self.loss != "afl":
            raise ValueError(
                f"{option_flag('variant')} applies to --loss afl only, got --loss {self.loss} with "
                f"{option_flag('variant')} {self.variant}"
            )
        if self.loss_options and self.loss != "afl":
            raise ValueError(f"{option_flag('loss_options')} apply to --loss afl only, got --loss {self.loss}")
        if self.loss == "afl":
            self.variant = self.variant or "paper"
            if not isinstance(self.loss_options, dict):
                raise ValueError(
                    f"--loss-options must be a JSON object of A-FL's options, e.g. '{{\"gamma\": 0}}', "
                    f"got {self.loss_options!r}"
                )
            if self.loss_options.get("reduction", "mean") != "mean":
                raise ValueError(
                    f"--loss-options reduction {self.loss_options['reduction']!r} cannot train: training "
                    "minimises the mean loss over the batch (one number); leave reduction out"
                )
            try:  # refuse unknown or invalid options now, not after the data are loaded
                make_loss(self.loss, self.variant, **self.loss_options)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"--loss-options {json.dumps(self.loss_options)} do not fit A-FL ({error}); it takes "
                    "alpha (0 to 1), gamma (a number >= 0), gamma_terms (a list of 'volume', 'smoothness') "
                    "and check_values (true or false)"
                ) from None

    def _check_numbers(self) -> None:
        """Each number in its range, named by its command-line option (a bad one is refused
        before any folder is made)."""
        if self.lr is None and self.optimizer in DEFAULT_LR:
            self.lr = DEFAULT_LR[self.optimizer]
        wrong = {
            "epochs": (self.epochs < 1, "a whole number of 1 or more"),
            "batch_size": (self.batch_size < 1, "a whole number of 1 or more"),
            "lr": (self.lr is not None and not 0 < self.lr < math.inf, "a positive finite number"),
            "weight_decay": (not 0 <= self.weight_decay < math.inf, "0 or a positive finite number"),
            "seed": (not 0 <= self.seed < 2**32, "an integer from 0 to 2**32 - 1"),
            "split_seed": (not 0 <= self.split_seed < 2**32, "an integer from 0 to 2**32 - 1"),
            "num_workers": (
                self.num_workers is not None and not 0 <= self.num_workers <= MAX_WORKERS_PER_CORE * _cores(),
                f"0 or more (unset: chosen for the device) and at most {MAX_WORKERS_PER_CORE} per CPU core: at most "
                f"{MAX_WORKERS_PER_CORE * _cores()} on this machine of {_cores()} core(s) (each worker is a process "
                "holding its own copy of the data)",
            ),
            "val_fraction": (
                self.validation_cases is None and not 0 < self.val_fraction < 1,
                "a share strictly between 0 and 1 (of the cases, to validate)",
            ),
            "oversample_lesions": (
                not 0 <= self.oversample_lesions < 1,
                "a share from 0 up to, not including, 1 (of the slices drawn, to hold a lesion)",
            ),
        }
        for name, (bad, accepted) in wrong.items():
            if bad:
                raise ValueError(f"{option_flag(name)} must be {accepted}, got {getattr(self, name)}")

    def _fill_unset(self) -> None:
        """Unset settings: the recipe's value first (where its requirement holds), then the default."""
        if self.recipe is not None:
            if self.recipe not in recipes.RECIPES:
                raise ValueError(f"unknown recipe {self.recipe!r}; choose from {tuple(recipes.RECIPES)}")
            for choice in recipes.RECIPES[self.recipe]:  # in order: a choice's requirement is set before it
                applies = choice.requires is None or getattr(self, choice.requires[0]) == choice.requires[1]
                if applies and getattr(self, choice.field) in (None, "auto"):
                    setattr(self, choice.field, choice.value)
        self.dims = 2 if self.dims is None else int(self.dims)
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 (slices) or 3 (volumes), got {self.dims}")
        defaults = {
            "batch_size": 8 if self.dims == 2 else 1,
            "optimizer": "adam",
            "schedule": "poly",
            "resize": False,
            "oversample_lesions": 0.33,
            "amp": True,
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.encoder_weights == "auto":
            self.encoder_weights = "imagenet" if self.dims == 2 else None

    def _check_shape_settings(self) -> None:
        """``size`` for the network's dimensions; 3D encoders, weights and resizing."""
        if self.size is not None:
            size = (self.size,) * self.dims if isinstance(self.size, int) else tuple(int(s) for s in self.size)
            if self.dims == 2 and (len(size) != 2 or min(size) < 1 or any(s % _SIZE_MULTIPLE for s in size)):
                raise ValueError(
                    f"--size must be H W, multiples of {_SIZE_MULTIPLE} (the U-Net "
                    f"downsamples 5 times), got {self.size}"
                )
            if self.dims == 3 and (len(size) != 3 or min(size) < 1):
                raise ValueError(f"--size must be three positive numbers D H W with --dims 3, got {self.size}")
            self.size = size
        if self.resize and (self.dims != 3 or self.size is None):
            raise ValueError("resize needs dims 3 and a size (D, H, W) to resize to (--dims 3 --size D H W)")
        check_encoder(self.encoder, self.dims)
        if self.dims == 2:
            check_encoder_weights(self.encoder, self.encoder_weights)
        if self.dims == 3 and self.encoder_weights is not None:
            raise ValueError(
                "3D encoders start from random weights: MONAI's pretrained 3D ResNets take one input "
                f"channel only (got encoder_weights {self.encoder_weights!r}; use --encoder-weights none)"
            )

    @property
    def classes(self) -> int:
        return VARIANTS[self.variant].channels if self.loss == "afl" else 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        if not isinstance(values, dict):
            raise TypeError(f"settings must be a JSON object of names and values, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def option_flag(name: str) -> str:
    """The command-line option of the :class:`TrainConfig` setting ``name`` (``"--oversample"``
    for ``oversample_lesions``), as :func:`add_setting_options` declares it."""
    return _SETTING_FIELDS[name].metadata["flag"] or "--" + name.replace("_", "-")


_SETTING_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


@dataclass
class FitResult:
    """What :func:`fit` returns: the run folder, its history, and the trained model
    (the weights of the last epoch; ``checkpoint_best.pt`` holds the best ones)."""

    run_dir: Path
    history: pd.DataFrame
    model: nn.Module
    best_epoch: int
    #: the best value of the run's ``select_metric`` (``config["select_metric"]``)
    best_score: float
    config: dict = field(repr=False, default_factory=dict)


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class GPUOutOfMemory(RuntimeError):
    """The GPU ran out of memory during training."""


# --------------------------------------------------------------------------- building blocks


def make_loss(name: str, variant: str | None = None, **kwargs) -> nn.Module:
    """:func:`afl_core.losses.get_loss` with A-FL's ``variant``.

    A variant that ``needs_lesion`` (``"reference"``: the authors' weights divide by the
    foreground count) is undefined on a batch without lesion voxels: :func:`fit` leaves such
    batches out (counted in ``history.csv``'s ``skipped_batches``) and validation leaves them
    out of ``val_loss``, so the loss itself runs without its CPU-only value check.
    """
    if name == "afl":
        kwargs["variant"] = variant or "paper"
        if kwargs["variant"] in VARIANTS and VARIANTS[kwargs["variant"]].needs_lesion:
            kwargs.setdefault("check_values", False)
    elif variant is not None:
        raise ValueError(f"variant applies to loss 'afl' only, got loss {name!r} with variant {variant!r}")
    return get_loss(name, **kwargs)


class ItemParameters:
    """A-FL's ``(alpha, gamma)`` of one training item, computed where the item is made (in
    the DataLoader workers, after augmentation) for a variant whose parameters are per
    sample: the training step then hands them to the loss, which measures nothing on the
    device (no host synchronisation, whatever the variant)."""

    def __init__(self, loss_fn: AdaptiveFocalLoss) -> None:
        self.loss_fn = loss_fn

    def __call__(self, item: dict) -> dict:
        alpha, gamma = self.loss_fn.adaptive_parameters(item["label"][None], item["spacing"][None])
        return {"loss_alpha": alpha[0], "loss_gamma": gamma[0]}


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``"sgd"``: the paper's SGD (momentum 0.9, Nesterov); ``"adam"``: Adam. Both with
    L2 ``weight_decay`` (the paper's 1e-5 by default)."""
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=PAPER_SGD["momentum"],
            nesterov=PAPER_SGD["nesterov"],
            weight_decay=weight_decay,
        )
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor over ``total_steps`` steps ``s``:

    * ``"poly"``: ``(1 - s / total) ** 0.9`` (nnU-Net's schedule);
    * ``"cosine"``: ``(1 + cos(pi * s / total)) / 2``;
    * ``"constant"``: 1.
    """
    total = max(int(total_steps), 1)
    factors = {
        "poly": lambda s: (1.0 - min(s, total) / total) ** 0.9,
        "cosine": lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)),
        "constant": lambda s: 1.0,
    }
    if name not in factors:
        raise ValueError(f"unknown schedule {name!r}; choose from {SCHEDULES}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[name])


class TrainStep:
    """One optimisation step on a batch, with no host synchronisation (except float16's
    gradient scaler, which reads its inf check on the host: GPUs with bfloat16 avoid it).

    Forward under autocast (``amp_dtype``; ``None`` for float32), loss in float32,
    backward (scaled when float16), optimiser and scheduler steps. Returns the detached
    loss on the device. Shared by :func:`fit` and the benchmarks, so they time the same code.
    ``spacing`` (the batch's voxel sizes, ``(N, len(S))`` mm) reaches only a loss whose
    ``uses_spacing`` attribute is true; ``parameters``, A-FL's per-sample ``(alpha, gamma)``
    computed in the DataLoader workers (:class:`ItemParameters`), reach the loss so that it
    measures nothing on the device. ``channels_last`` applies to 2D networks.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last and self.device.type == "cuda"
        if self.channels_last:  # in place: the optimiser keeps the same parameters
            model.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        spacing: torch.Tensor | None = None,
        parameters: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        images, labels = self.to_device(images, labels)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            logits = self.model(images)
        loss = loss_with_spacing(self.loss_fn, logits.float(), labels, spacing, parameters)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    # Plain tensors, ints and lists only: loadable with torch.load(weights_only=True).
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _slice_size(dataset_root: str, cases: Sequence[str]) -> tuple[int, int]:
    """Smallest multiple of 32 holding every case's in-plane size (slices are padded to it)."""
    shapes = [load_geometry(dataset_root, case).shape for case in cases]
    extent = [max(shape[axis] for shape in shapes) for axis in (0, 1)]
    return tuple(-(-n // _SIZE_MULTIPLE) * _SIZE_MULTIPLE for n in extent)


def _volume_size(dataset_root: str, cases: Sequence[str]) -> tuple[int, int, int]:
    """``(D, H, W)`` holding every case (volumes are padded to it; the 3D network pads further itself)."""
    shapes = [load_geometry(dataset_root, case).shape for case in cases]
    return tuple(max(shape[axis] for shape in shapes) for axis in (2, 0, 1))


def _versions(dims: int) -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "segmentation_models_pytorch": importlib.metadata.version("segmentation-models-pytorch"),
    }
    if dims == 3:
        import monai

        versions["monai"] = monai.__version__
    return versions


def _save(path: Path, payload: dict) -> None:
    with atomic_target(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as error:  # torch's zip writer reports a full disk as a RuntimeError
            reason = str(error).strip().splitlines()[0]
            raise OSError(f"writing {path} failed: {reason}; is the disk full?") from error


def _diverged_message(cfg: TrainConfig, epoch: int, step: int, value: float, initial: float | None) -> str:
    start = f", {value / initial:.3g} times its start {initial:.4g}," if math.isfinite(value) and initial else ""
    return (
        f"the training loss became {value:.4g}{start} at epoch {epoch}, step {step} "
        f"(loss {cfg.loss!r}, optimizer {cfg.optimizer!r}, lr {cfg.lr:g}). Lower the learning rate "
        f"(e.g. --lr {cfg.lr / 10:g}){'' if cfg.optimizer == 'adam' else ', or use --optimizer adam'}; check that "
        "the images hold no NaN/Inf (afl_core.data.load_case checks this); on a GPU, try --no-amp. The last good "
        f"checkpoint is {Path(cfg.out) / 'checkpoint_last.pt'} (if any epoch completed); start the run again "
        "with the changed setting (with --overwrite once an epoch completed, or in another --out)."
    )


def _oom_message(cfg: TrainConfig, size: tuple[int, ...], epoch: int) -> str:
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated" if torch.cuda.is_available() else ""
    items = "slices" if cfg.dims == 2 else "volumes"
    return (
        f"the GPU ran out of memory at epoch {epoch} (batch size {cfg.batch_size}, {items} "
        f"{'x'.join(str(n) for n in size)}, encoder {cfg.encoder!r}, mixed precision {'on' if cfg.amp else 'off'}"
        f"{peak}). Reduce --batch-size (e.g. {max(cfg.batch_size // 2, 1)}), use a "
        f"smaller --encoder (resnet34, resnet18), crop {items} with --size, keep mixed precision on "
        "(no --no-amp), or close other programs using the GPU; then --resume continues from the last epoch."
    )


# --------------------------------------------------------------------------- validation


def validate(
    model: nn.Module,
    dataset: SliceDataset | VolumeDataset,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    batch_size: int,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """``val_loss`` (mean over items) and mean per-case 3D ``val_dice``, ``val_iou``,
    ``val_sensitivity`` of the thresholded prediction on each case's evaluation grid."""
    probs, val_loss = predict_cases(
        model, dataset, device=device, batch_size=batch_size, amp_dtype=amp_dtype, loss_fn=loss_fn
    )
    scores = [overlap_scores(probs[case] > 0.5, dataset.case_label(case)) for case in dataset.cases]
    means = {f"val_{k}": _nanmean([s[k] for s in scores]) for k in ("dice", "iou", "sensitivity")}
    return {"val_loss": val_loss, **means}


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the defined values (sensitivity is NaN on a case without lesion); NaN if none."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


# --------------------------------------------------------------------------- fit


#: what a run writes into its folder (half-written ones are ``.tmp-<id>-<name>``)
_RUN_FILES = ("config.json", "history.csv", "checkpoint_last.pt", "checkpoint_best.pt")


def _check_fresh_run_folder(out: Path, overwrite: bool) -> None:
    """Refuse to train a new run over an existing one (a forgotten ``--resume`` would wipe
    it); with ``overwrite`` remove the old run's files first, so that no table of the old
    model (``eval/``, ``eval-<data>/``) outlives it. A ``config.json`` alone is a start that
    failed before its first epoch: nothing to lose, the run starts again. A folder that holds
    such names without a ``config.json`` is not a run: it is refused, never cleared."""
    trained = [out / name for name in _RUN_FILES if name != "config.json"]
    work = [*trained, out / "eval", *sorted(out.glob("eval-*"))]
    existing = [path for path in work if path.exists()]
    if not existing:
        return
    if not (out / "config.json").is_file():  # not a run: --overwrite deletes only what a run wrote
        raise ValueError(
            f"{out} is not a training run (no config.json) but holds "
            f"{', '.join(path.name for path in existing)}: nothing in it is deleted; "
            "choose another --out, or move those files away first"
        )
    if not overwrite:
        raise ValueError(
            f"{out} already holds a run ({', '.join(path.name for path in existing)}): continue it with --resume "
            "(fit(resume=True)), start it again with --overwrite (fit(overwrite=True)), "
            "or choose another --out"
        )
    if distributed.is_main_process():  # under torchrun rank 0 clears the folder
        for path in existing:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _remove_stale_temporaries(out: Path) -> None:
    """Remove what a killed run left half-written (``_io.atomic_target``'s ``.tmp-<id>-<name>``
    of the run's own files, a full-size checkpoint each): the files under their final names
    are complete, and a resumed run restarts after the last complete checkpoint."""
    for name in _RUN_FILES:
        for stale in out.glob(f".tmp-*-{name}"):
            stale.unlink(missing_ok=True)


def completed_epochs(run_dir: str | os.PathLike) -> int:
    """The epochs a run's ``checkpoint_last.pt`` holds (0 without one), read without loading its tensors."""
    last = Path(run_dir) / "checkpoint_last.pt"
    return int(load_checkpoint(last, ("epoch",), mmap=True)["epoch"]) if last.is_file() else 0


def _resolve_config(
    config: TrainConfig | None, resume: bool, overrides: dict, overwrite: bool = False
) -> tuple[TrainConfig, list[str]]:
    """The run's settings, and the notes to print once its folder is held (a refused run prints none)."""
    values = (config.to_dict() if config is not None else {}) | overrides
    if "out" not in values:
        raise TypeError("fit needs out= (the run folder)")
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite starts it again: give one of them")
    if not resume:
        if "data" not in values:
            raise TypeError("fit needs a TrainConfig or data= and out=")
        return TrainConfig(**values), []  # the folder is checked once it is held (fit)
    saved_path = Path(values["out"]) / "config.json"
    if not saved_path.is_file():
        if "data" in values:  # nothing to resume yet: the same command starts the run
            return TrainConfig(**values), [f"no run in {saved_path.parent} yet: starting one"]
        raise FileNotFoundError(f"cannot resume: {saved_path} does not exist; give --data to start the run")
    recorded = read_json(saved_path, hint="restore it from a copy, or start the run again with --overwrite")
    given_data = values.get("data")
    try:
        recorded["data"] = str(run_data(saved_path.parent, recorded, given_data, command="--resume"))
        if given_data is not None and _same_setting("data", recorded["data"], given_data):
            values["data"] = recorded["data"]
        saved = TrainConfig.from_dict(recorded)
    except (KeyError, TypeError) as error:  # {}, or settings that no longer validate
        raise ValueError(
            f"{saved_path} is not a valid run configuration ({error}); restore it from a copy, "
            "or start the run again with --overwrite"
        ) from None
    merged = TrainConfig.from_dict(saved.to_dict() | values)
    changed = [
        f"{k}: {getattr(saved, k)!r} -> {v!r}"
        for k, v in merged.to_dict().items()
        if k not in RESUMABLE_CHANGES and not _same_setting(k, getattr(saved, k), v)
    ]
    if changed:
        raise ValueError(
            f"cannot resume {saved_path.parent} with different settings ({', '.join(changed)}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change. Resume with the run's settings, "
            "or start a new run in another --out folder."
        )
    done = completed_epochs(saved_path.parent)
    if merged.epochs < done:
        raise ValueError(
            f"cannot resume {saved_path.parent} with --epochs {merged.epochs}: {done} epochs are done "
            f"already; give --epochs {done} or more"
        )
    notes = []
    if merged.epochs != saved.epochs:
        notes.append(
            f"note: the run was planned for {saved.epochs} epochs and now runs {merged.epochs}: the learning-rate "
            f"schedule of the remaining epochs is {'stretched' if merged.epochs > saved.epochs else 'shortened'} "
            f"to the new length (epochs 1-{done} were trained with the old one)"
        )
    return merged, notes


def _same_setting(name: str, a: Any, b: Any) -> bool:
    if name == "out":  # the run is where its config.json was read: a moved or copied run resumes
        return True
    if name == "data":  # the same folder, however it is spelled
        return Path(a).resolve() == Path(b).resolve()
    return a == b


@dataclass
class _Run:
    """What the steps of :func:`fit` share: the settings, data, network and training state."""

    cfg: TrainConfig
    dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    train_set: SliceDataset | VolumeDataset
    val_set: SliceDataset | VolumeDataset
    size: tuple[int, ...]
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: TrainStep
    drop_last: bool
    resolved: dict
    world: distributed.World
    history: list[dict] = field(default_factory=list)
    #: ``{"epoch": e, <select_metric>: value}`` of checkpoint_best.pt (epoch 0: none yet)
    best: dict = field(default_factory=dict)
    first_epoch: int = 1
    #: the first training loss the run saw (the yardstick of divergence)
    initial_loss: float | None = None


def fit(config: TrainConfig | None = None, *, resume: bool = False, overwrite: bool = False, **overrides) -> FitResult:
    """Train a U-Net as ``config`` says (keywords override its fields); see the module
    docstring for the run folder. With ``resume=True`` continue the run in ``out`` after
    its last completed epoch, or from the start if none completed (``epochs``, ``device``,
    ``num_workers``, ``progress`` may change; other settings must match the saved
    ``config.json``; fewer ``epochs`` than completed are refused, more stretch the rest of
    the learning-rate schedule, and a note says so). Without ``resume`` a folder that
    already holds a run is refused unless ``overwrite=True``, which removes the old run.

    Steps: :func:`_build_run`, :func:`_restore` (when resuming), then per epoch
    :func:`_train_epoch` and :func:`_end_epoch` (validation, history, checkpoints).

    Raises:
        TrainingDiverged: the loss became NaN/Inf or DIVERGENCE_FACTOR times its first value
            (the message says what to change).
        GPUOutOfMemory: CUDA ran out of memory (the message says what to change).
        afl_core._io.FolderBusy: another process is writing ``out`` (the message names it).
        afl_core.distributed.RankLost: under torchrun, another process of the run stopped.
    """
    cfg, notes = _resolve_config(config, resume, overrides, overwrite)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose a folder for the run")
    if not distributed.is_main_process():  # under torchrun rank 0 holds the folder for all
        return _fit(cfg, resume)
    with folder_lock(out):  # one process writes a run: two would mix their files
        if not resume:
            _check_fresh_run_folder(out, overwrite)
        for note in notes:  # rank 0 only: once, not once per torchrun rank
            print(note, file=sys.stderr)
        _remove_stale_temporaries(out)
        return _fit(cfg, resume)


def _fit(cfg: TrainConfig, resume: bool) -> FitResult:
    """:func:`fit` once the run's settings are resolved and its folder is held."""
    if cfg.recipe is not None:
        print(recipes.describe(cfg.recipe, cfg))
    run = _build_run(cfg)
    if resume:
        _restore(run)
    if run.world.main:
        write_json(run.dir / "config.json", run.resolved)
    epochs_bar = tqdm(
        range(run.first_epoch, cfg.epochs + 1),
        desc=f"{cfg.loss} training",
        unit="epoch",
        initial=run.first_epoch - 1,
        total=cfg.epochs,
        disable=not (cfg.progress and run.world.main),
    )
    epoch = run.first_epoch
    try:
        for epoch in epochs_bar:
            trained = _train_epoch(run, epoch)
            if run.world.main:  # the other ranks go on and wait for it at their next collective call
                row = _end_epoch(run, epoch, *trained)
                metric = cfg.select_metric
                epochs_bar.set_postfix({"train_loss": f"{row['train_loss']:.4f}", metric: f"{row[metric]:.3f}"})
        distributed.cleanup(run.world)
    except torch.cuda.OutOfMemoryError as error:
        raise GPUOutOfMemory(_oom_message(cfg, run.size, epoch)) from error
    except RuntimeError as error:
        if not distributed.lost_peer(error, run.world):
            raise
        raise distributed.RankLost(
            f"{distributed.describe_loss(run.world)} during epoch {epoch} of {cfg.out} "
            f"({distributed.reason(error)}). The completed epochs are kept: continue the run with "
            f"torchrun --nproc_per_node {run.world.size} -m afl_core.train --out {cfg.out} --resume"
        ) from None
    finally:
        epochs_bar.close()
    return FitResult(
        run_dir=run.dir,
        history=pd.DataFrame(run.history),
        model=run.model,
        best_epoch=run.best["epoch"],
        best_score=run.best[cfg.select_metric],
        config=run.resolved,
    )


def build_datasets(cfg: TrainConfig) -> tuple[SliceDataset | VolumeDataset, SliceDataset | VolumeDataset, tuple, dict]:
    """The training and validation datasets of a run as :func:`fit` builds them (its case
    split, item size, lesion oversampling and seed), their item size, and the split."""
    if cfg.validation_cases is not None:  # an explicit split (a k-fold fold): every other case trains
        cases = list_cases(cfg.data)
        unknown = sorted(set(cfg.validation_cases) - set(cases))
        if unknown:
            raise ValueError(f"validation_cases names cases that {cfg.data} does not hold: {unknown[:5]}")
        val_cases = sorted(cfg.validation_cases)
        train_cases = [case for case in cases if case not in set(val_cases)]
    else:
        train_cases, val_cases = split_cases(
            cfg.data, cfg.val_fraction, seed=cfg.split_seed, group_of=patient_grouping(cfg.data)
        )
    if cfg.loss == "afl" and VARIANTS[cfg.variant].needs_lesion:
        if not any(case_has_lesion(cfg.data, case) for case in train_cases):
            raise ValueError(
                f"variant {cfg.variant!r} (the A-FL authors' code) weighs each batch by its lesion voxels, and none "
                f"of the {len(train_cases)} training case(s) of {cfg.data} has a lesion voxel: the variant is "
                "undefined on this dataset. Use --variant paper (or scale_aware), or a dataset with lesions"
            )
    if not val_cases:
        raise ValueError(
            f"no validation case: {cfg.data} holds {len(train_cases)} case(s); "
            "use at least 2 cases and val_fraction > 0"
        )
    if cfg.dims == 2:
        size = cfg.size or _slice_size(cfg.data, train_cases + val_cases)
        make = functools.partial(SliceDataset, cfg.data, size=size)
    else:
        size = cfg.size or _volume_size(cfg.data, train_cases + val_cases)
        make = functools.partial(VolumeDataset, cfg.data, size=size, resize=cfg.resize)
    train_set = make(train_cases, augment=cfg.augment, oversample_lesions=cfg.oversample_lesions, seed=cfg.seed)
    if cfg.dims == 2 and len(train_set) < 2:
        raise ValueError(f"{len(train_set)} training slice(s): batch normalisation needs at least 2")
    return train_set, make(val_cases), size, {"train_cases": train_cases, "val_cases": val_cases}


def _check_deepest_layer(cfg: TrainConfig, size: tuple[int, ...], batch: int) -> None:
    """Refuse items so small that the encoder's deepest layer (each axis halved five times,
    after padding to multiples of 32) holds one value per channel in a batch: batch
    normalisation cannot train on that."""
    deepest = [-(-n // _SIZE_MULTIPLE) for n in size]
    if batch * math.prod(deepest) > 1:
        return
    items = "slices" if cfg.dims == 2 else "volumes"
    shown = " x ".join(map(str, size))
    raise ValueError(
        f"{items} of {shown} (padded to multiples of {_SIZE_MULTIPLE}: the encoder halves every axis five times) "
        f"reach {' x '.join(map(str, deepest))} at the network's deepest layer, and with {batch} item(s) per batch "
        "batch normalisation has one value per channel to normalise, which cannot train. Give --size with an axis "
        f"of more than {_SIZE_MULTIPLE} (padded), or --batch-size 2 or more"
        + (" per process" if batch != cfg.batch_size else "")
        + (", or train on slices (--dims 2)" if cfg.dims == 3 else "")
    )


def _warn_without_lesions(cfg: TrainConfig, val_cases: Sequence[str]) -> None:
    """Say so when no validation case has a lesion: the validation scores then say little."""
    if not any(case_has_lesion(cfg.data, case) for case in val_cases):
        print(
            f"warning: none of the {len(val_cases)} validation case(s) has a lesion: the validation "
            "Dice only says whether the network stays silent (1 if it predicts nothing, 0 otherwise), and the "
            f"best checkpoint is picked on {cfg.select_metric}; use a dataset with lesion cases, or another "
            "--split-seed / --val-fraction",
            file=sys.stderr,
        )


def _build_run(cfg: TrainConfig) -> _Run:
    """Device, datasets, the seeded network, loss, optimiser, schedule and training step,
    and the resolved settings that ``config.json`` records. Under torchrun: this process's
    place in the process group, and the network in DistributedDataParallel."""
    world = distributed.init(resolve_device(cfg.device))
    world.per_rank_batch(cfg.batch_size)  # refuse a global batch that does not divide before loading data
    device = world.device
    amp_dtype = autocast_dtype(device, cfg.amp)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_set, val_set, size, split = build_datasets(cfg)
    _check_deepest_layer(cfg, size, world.per_rank_batch(cfg.batch_size))
    if world.main:
        _warn_without_lesions(cfg, split["val_cases"])
    # A last batch of one slice cannot train batch normalisation: drop the remainder
    # (fewer items than a batch, drawn anew each epoch).
    drop_last = len(train_set) > cfg.batch_size
    steps_per_epoch = len(train_set) // cfg.batch_size if drop_last else 1
    model, loss_fn, step = _build_training(cfg, train_set, device, amp_dtype, steps_per_epoch)
    # After TrainStep set the memory format: DDP's gradient buckets take the parameters' layout.
    step.model = distributed.wrap(model, world)
    resolved = cfg.to_dict() | {
        f"{'slice' if cfg.dims == 2 else 'volume'}_size": list(size),
        "in_channels": train_set.in_channels,
        "classes": cfg.classes,
        **split,
        "steps_per_epoch": steps_per_epoch,
        "resolved_device": str(device),
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
        "versions": _versions(cfg.dims),
        "world_size": world.size,
    }
    return _Run(
        cfg,
        Path(cfg.out),
        device,
        amp_dtype,
        train_set,
        val_set,
        size,
        model,
        loss_fn,
        step.optimizer,
        step.scheduler,
        step,
        drop_last,
        resolved,
        world,
        best={"epoch": 0, cfg.select_metric: -math.inf if SELECT_METRICS[cfg.select_metric] == "max" else math.inf},
    )


def _build_training(
    cfg: TrainConfig, train_set, device: torch.device, amp_dtype: torch.dtype | None, steps_per_epoch: int
) -> tuple[nn.Module, nn.Module, TrainStep]:
    """The network seeded from ``cfg.seed`` on ``device``, the loss (A-FL's per-sample parameters
    computed where ``train_set`` makes its items) and the training step with its optimiser and
    schedule over ``cfg.epochs * steps_per_epoch`` steps."""
    seed_everything(cfg.seed)
    model = build_model(
        cfg.encoder, cfg.encoder_weights, in_channels=train_set.in_channels, classes=cfg.classes, dims=cfg.dims
    )
    model.to(device)
    loss_fn = make_loss(cfg.loss, cfg.variant, **cfg.loss_options)
    if isinstance(loss_fn, AdaptiveFocalLoss) and loss_fn.spec.per_sample:
        train_set.item_fields = ItemParameters(loss_fn)
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.epochs * steps_per_epoch)
    step = TrainStep(
        model,
        loss_fn,
        optimizer,
        scheduler,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=cfg.channels_last and cfg.dims == 2,
    )
    return model, loss_fn, step


def _restore(run: _Run) -> None:
    """Continue after the last completed epoch of ``checkpoint_last.pt`` (if any: else no
    epoch completed and the run starts at the first). Under torchrun every rank loads the
    checkpoint rank 0 wrote."""
    last_path = run.dir / "checkpoint_last.pt"
    if last_path.is_file():
        _load_last(run, last_path)
    _reconcile_run_files(run)


def _reconcile_run_files(run: _Run) -> None:
    """Put ``checkpoint_best.pt`` and ``history.csv`` in step with ``checkpoint_last.pt`` after a
    kill between the writes of an epoch: a best checkpoint from the unfinished epoch stays the
    best so far (the epoch is trained again and replaces it only by a better ``select_metric``), and
    ``history.csv`` is rewritten from the checkpoint's history."""
    best_path = run.dir / "checkpoint_best.pt"
    if best_path.is_file():
        best = load_checkpoint(best_path, ("epoch", "best"), mmap=True)
        if best["epoch"] > run.first_epoch - 1:
            run.best = dict(best["best"])
    if run.world.main and run.history:
        export_csv(pd.DataFrame(run.history), run.dir / "history.csv")


def _load_last(run: _Run, last_path: Path) -> None:
    # On the CPU: RNG states must stay there; load_state_dict moves the rest to the model's device.
    last = load_checkpoint(last_path, ("model", "optimizer", "scheduler", "history", "best", "rng", "epoch"))
    try:
        run.model.load_state_dict(last["model"])
    except RuntimeError as error:
        raise ValueError(
            f"{last_path} holds weights of another network than this run's ({run.cfg.encoder}): "
            f"{str(error).splitlines()[0][:160]}; start the run again with --overwrite"
        ) from None
    run.optimizer.load_state_dict(last["optimizer"])
    run.scheduler.load_state_dict(last["scheduler"])
    if run.step.scaler.is_enabled() and last["scaler"]:
        run.step.scaler.load_state_dict(last["scaler"])  # else the run started without float16
    run.history, run.best = last["history"], last["best"]
    _set_rng_state(last["rng"])
    run.first_epoch = last["epoch"] + 1


def _train_epoch(run: _Run, epoch: int) -> tuple[torch.Tensor, int, int, float]:
    """One pass over the epoch's seeded sample; returns the summed loss (on the device), the
    items trained on (both over all ranks), the batches skipped, and the start time."""
    cfg, world, started = run.cfg, run.world, time.perf_counter()
    run.train_set.set_epoch(epoch)
    sampler = run.train_set.sampler(epoch)
    if world.size > 1:
        sampler = distributed.ShardedSampler(sampler, cfg.batch_size, rank=world.rank, world_size=world.size)
    loader = DataLoader(
        run.train_set,
        batch_size=world.per_rank_batch(cfg.batch_size),
        sampler=sampler,
        drop_last=run.drop_last,
        num_workers=_workers(cfg, run.device),
        pin_memory=run.device.type == "cuda",
    )
    # The authors' loss is undefined on a batch without lesion voxels: leave such batches
    # out (all ranks, when any rank's part has none). The labels are still on the host here,
    # so the check costs no device sync.
    skip_lesion_free = getattr(run.loss_fn, "needs_lesion", False)
    sync_every = 1 if run.device.type == "cpu" else _GPU_SYNC_EVERY
    run.model.train()
    loss_sum = torch.zeros((), device=run.device)
    seen = skipped = 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not (cfg.progress and world.main))
    for index, batch in enumerate(bar, start=1):
        if skip_lesion_free and distributed.any_rank(not batch["label"].any()):
            skipped += 1
            continue
        parameters = (batch["loss_alpha"], batch["loss_gamma"]) if "loss_alpha" in batch else None
        loss = run.step(batch["image"], batch["label"], batch["spacing"], parameters)
        loss_sum += loss * batch["image"].shape[0]
        seen += batch["image"].shape[0]
        if index % sync_every == 0 or index == len(loader):
            # The only host sync of the epoch loop: NaN check (on every rank alike) and progress display.
            mean = distributed.sum_over_ranks(loss_sum).item() / (seen * world.size)
            if run.initial_loss is None:
                run.initial_loss = run.history[0]["train_loss"] if run.history else mean
            if not math.isfinite(mean) or mean > DIVERGENCE_FACTOR * max(run.initial_loss, 1e-3):
                raise TrainingDiverged(_diverged_message(cfg, epoch, index, mean, run.initial_loss))
            bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
    return distributed.sum_over_ranks(loss_sum), seen * world.size, skipped, started


def _workers(cfg: TrainConfig, device: torch.device) -> int:
    """Workers keep a GPU fed (augmentation runs in them); on the CPU they only compete
    with the training step for the same cores."""
    if cfg.num_workers is not None:
        return cfg.num_workers
    return min(4, os.cpu_count() or 1) if device.type == "cuda" and sys.platform == "linux" else 0


def _improves(metric: str, value: float, best: float) -> bool:
    """``value`` of ``metric`` beats ``best`` the way :data:`SELECT_METRICS` says (NaN never does)."""
    if math.isnan(value):
        return False
    return value > best if SELECT_METRICS[metric] == "max" else value < best


def _end_epoch(run: _Run, epoch: int, loss_sum: torch.Tensor, seen: int, skipped: int, started: float) -> dict:
    """Validate, append the epoch's row to the history, write the checkpoints (the best one
    when ``select_metric`` improved) and then ``history.csv``; returns the row."""
    train_seconds = time.perf_counter() - started
    run.model.eval()
    scores = validate(
        run.model, run.val_set, run.loss_fn, device=run.device, batch_size=run.cfg.batch_size, amp_dtype=run.amp_dtype
    )
    if seen == 0:
        raise TrainingDiverged(
            f"epoch {epoch} had no batch with lesion voxels, which variant {run.cfg.variant!r} "
            "needs: raise --oversample or --batch-size"
        )
    row = {
        "epoch": epoch,
        "train_loss": loss_sum.item() / seen,
        **scores,
        "lr": run.optimizer.param_groups[0]["lr"],
        "skipped_batches": skipped,
        "train_images_per_s": seen / train_seconds,
        "seconds": time.perf_counter() - started,
    }
    run.history.append(row)
    metric = run.cfg.select_metric
    improved = _improves(metric, row[metric], run.best[metric])
    if improved:
        run.best = {"epoch": epoch, metric: row[metric]}
    meta = {"epoch": epoch, "config": run.resolved, "best": run.best, "history": run.history}
    if improved:
        _save(run.dir / "checkpoint_best.pt", {"model": run.model.state_dict(), **meta})
    _save(
        run.dir / "checkpoint_last.pt",
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.step.scaler.state_dict(),
            "rng": _rng_state(),
            **meta,
        },
    )
    export_csv(pd.DataFrame(run.history), run.dir / "history.csv")  # last: the checkpoint is the record
    return row


# --------------------------------------------------------------------------- CLI


def add_setting_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: Sequence[str],
    *,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add the command-line options of the :class:`TrainConfig` settings ``names`` to
    ``parser`` (or an argument group) as their fields declare them: the type from the
    annotation (``bool``: ``--x/--no-x``; a tuple: several numbers; a dict: JSON), the help,
    choices and flag from the field's metadata. Every option defaults to ``None`` (unset), so
    that :class:`TrainConfig` alone resolves the defaults, unless ``defaults`` gives it one
    (a study's own, as in ``benchmarks/compare_losses.py``): its help then names that default
    in place of :class:`TrainConfig`'s."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = defaults or {}
    for name in names:
        meta = _SETTING_FIELDS[name].metadata
        flag = option_flag(name)
        kind = next(t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None))
        kind = typing.get_origin(kind) or kind
        options = {"dest": name, "default": defaults.get(name), "help": meta["help"]}
        if name in defaults:
            options["help"] = f"{meta['help'].partition(' (default ')[0]} (default {defaults[name]})"
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            options |= {"type": int, "nargs": "+", "metavar": "N"}
        elif kind is dict:
            options |= {"type": json.loads, "metavar": "JSON"}
        else:
            options |= {"type": kind, "metavar": flag.removeprefix("--").upper()}
        if meta["choices"] is not None:  # argparse shows them in place of a metavar
            options["choices"] = meta["choices"]
            options.pop("metavar")
        parser.add_argument(flag, **options)


#: the settings that the command lines offer, in TrainConfig's order
CLI_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["cli"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m afl_core.train",
        description="Train a U-Net (2D on slices, or 3D on volumes) on a dataset in the afl_core layout with one "
        "of the compared losses.",
        epilog="Resume an interrupted run with: python -m afl_core.train --out RUN --resume. "
        "The A-FL authors' setup: --recipe authors (explicit options override its choices).",
    )
    add_setting_options(p, CLI_SETTINGS)
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last epoch")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its checkpoints, history and eval/) with a new one",
    )
    return p


def _resume_command(out: str) -> str:
    """The command that continues the run in ``out`` as this one was started: under torchrun,
    torchrun with its processes per node (its other options, if any, as before)."""
    if distributed.launched():
        per_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
        return f"torchrun --nproc_per_node {per_node} -m afl_core.train --out {out} --resume"
    return f"python -m afl_core.train --out {out} --resume"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    resume, overwrite = args.pop("resume"), args.pop("overwrite")
    overrides = {k: v for k, v in args.items() if v is not None}
    if "out" not in overrides:
        parser.error("--out is required (the run folder)")
    if not resume and "data" not in overrides:
        parser.error("--data is required (unless --resume)")
    try:
        result = fit(resume=resume, overwrite=overwrite, **overrides)
    except (TrainingDiverged, GPUOutOfMemory, ValueError, FileNotFoundError, distributed.RankLost) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a read-only --out, a full disk: the last complete checkpoint stays
        print(
            f"error: cannot write the run ({error}); check that --out is writable and the disk has room, "
            "then continue with --resume (the last complete checkpoint is kept)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        if distributed.is_main_process():  # once, not once per torchrun rank
            print(f"\ninterrupted; continue with: {_resume_command(overrides['out'])}", file=sys.stderr)
        return 130
    if distributed.is_main_process():  # under torchrun: rank 0 validated
        metric = result.config["select_metric"]
        print(f"best {metric} {result.best_score:.4f} at epoch {result.best_epoch}; run saved in {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
