"""What separates the two protocols, and who carries the loss (notebooks 05 and 06).

* **Two protocols** (:func:`protocol_effects`): what separates the authors' soft DSC from
  the standard Dice, arm by arm.
* **Who carries the loss** (:func:`confident_logits`, :func:`voxel_losses`,
  :func:`training_batches`, :func:`loss_shares`): the loss of every voxel when the network
  gives the true class probability ``p_t`` (one value, or one for background and one for
  lesion voxels), summed over lesion-free slices, the background of lesion slices and the
  lesion voxels of the batches training draws; :func:`network_loss_shares`: the same parts
  of the loss on a trained run's own predictions.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from afl_core.data import SliceDataset
from afl_core.evaluate import load_model, run_data
from afl_core.experiments import ARMS, check_arm, recorded_arm
from afl_core.losses import AdaptiveFocalLoss
from afl_core.models import load_checkpoint
from afl_core.runs import RunKey
from afl_core.train import TrainConfig, build_datasets

__all__ = [
    "SHARE_PARTS",
    "protocol_effects",
    "confident_logits",
    "voxel_losses",
    "training_batches",
    "loss_shares",
    "has_voxel_loss",
    "network_loss_shares",
]

#: the three parts of the loss :func:`loss_shares` reports
SHARE_PARTS = ("lesion-free slices", "background of lesion slices", "lesion voxels")


def _check_columns(per_case: pd.DataFrame, *columns: str) -> None:
    absent = [c for c in ("arm", "seed", "case", *columns) if c not in per_case]
    if absent:
        raise KeyError(f"the per-case table lacks columns {absent} (columns: {list(per_case.columns)})")


def protocol_effects(per_case: pd.DataFrame) -> pd.DataFrame:
    """Per arm (all seeds and cases pooled): the standard ``dice``, the soft lesion Dice
    of the authors' protocol (``paper_dice_foreground``), their DSC (``paper_dice``:
    lesion and background channel averaged) and the differences that make the gap:
    ``softness`` (soft minus hard lesion Dice) and ``background`` (what averaging in the
    background channel adds to the soft lesion Dice); ``paper - standard`` is their sum.
    The last two columns split ``paper - standard`` by cases with and without a lesion."""
    _check_columns(per_case, "dice", "paper_dice", "paper_dice_foreground", "target_voxels")
    rows = {}
    for arm, df in per_case.groupby("arm", sort=False):
        gap = df["paper_dice"] - df["dice"]
        lesion = df["target_voxels"] > 0
        rows[arm] = {
            "standard DSC": df["dice"].mean(),
            "soft lesion Dice": df["paper_dice_foreground"].mean(),
            "paper DSC": df["paper_dice"].mean(),
            "softness": (df["paper_dice_foreground"] - df["dice"]).mean(),
            "background": (df["paper_dice"] - df["paper_dice_foreground"]).mean(),
            "paper - standard": gap.mean(),
            "paper - standard (lesion cases)": gap[lesion].mean(),
            "paper - standard (lesion-free cases)": gap[~lesion].mean(),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("arm")


def confident_logits(target: torch.Tensor, p_t: float | tuple[float, float], channels: int = 1) -> torch.Tensor:
    """Logits under which every voxel's true class has probability ``p_t``, or
    ``p_t = (p_background, p_lesion)`` for background and lesion voxels apart:
    ``x = log(p / (1 - p))`` on a lesion voxel, ``-log(p / (1 - p))`` on a background one.
    ``channels=2`` gives the (background, foreground) logits of A-FL's
    ``variant="reference"``."""
    p_background, p_lesion = (p_t, p_t) if np.isscalar(p_t) else p_t
    for p in (p_background, p_lesion):
        if not 0.0 < p < 1.0:
            raise ValueError(f"p_t must lie strictly between 0 and 1, got {p_t}")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    fg = torch.where(
        target > 0, math.log(p_lesion / (1.0 - p_lesion)), -math.log(p_background / (1.0 - p_background))
    ).float()
    return fg if channels == 1 else torch.cat([-fg, fg], dim=1)


# Per-voxel forms of the two baselines, up to a constant factor that no share sees:
# ce = 2 x (alpha 0.5, gamma 0) and focal = 2 x (alpha 0.5, gamma 2).
_BASELINE_GAMMA = {"ce": 0.0, "focal": 2.0}


def has_voxel_loss(arm: str) -> bool:
    """Whether ``arm``'s loss is a sum over voxels (A-FL, ``ce``, ``focal``), which
    :func:`loss_shares` can split; overlap losses (Dice, IoU, ...) are defined per batch."""
    check_arm(arm)
    return ARMS[arm][0] == "afl" or ARMS[arm][0] in _BASELINE_GAMMA


def _per_voxel_loss(arm: str) -> AdaptiveFocalLoss:
    if not has_voxel_loss(arm):
        raise ValueError(
            f"arm {arm!r}: {ARMS[arm][0]!r} has no per-voxel loss (overlap losses are defined per batch); "
            f"use an A-FL arm, 'ce' or 'focal'"
        )
    loss, variant, options = ARMS[arm]
    if loss == "afl":
        return AdaptiveFocalLoss(variant, reduction="none", check_values=False, **options)
    return AdaptiveFocalLoss("paper", alpha=0.5, gamma=_BASELINE_GAMMA[loss], reduction="none", check_values=False)


def _arm_voxel_losses(
    module: AdaptiveFocalLoss, logits: torch.Tensor, target: torch.Tensor, spacing: torch.Tensor | None
) -> torch.Tensor:
    """``module``'s loss of every voxel, its channels summed: ``(N, 1, *S)`` like ``target``.
    Logits with another channel count than the loss takes are read as the project reads a
    prediction: a two-channel network's lesion logit is its last channel; one logit ``x``
    is ``(-x, x)`` for a two-channel loss."""
    channels = module.spec.channels
    if logits.shape[1] != channels:
        logits = logits[:, -1:] if channels == 1 else torch.cat([-logits, logits], dim=1)
    if spacing is not None and getattr(module, "uses_spacing", False):
        values = module(logits.float(), target.float(), spacing=spacing)
    else:
        values = module(logits.float(), target.float())
    return values.sum(dim=1, keepdim=True)


def voxel_losses(
    arm: str, target: torch.Tensor, p_t: float | tuple[float, float], spacing: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of ``arm`` on every voxel of the batch ``target`` ``(N, 1, *S)`` when the
    network gives the true class probability ``p_t`` (:func:`confident_logits`),
    shaped like ``target`` (``variant="reference"``: its two channels summed per voxel).
    ``"ce"`` and ``"focal"`` are returned at half their value (alpha 0.5). ``spacing`` goes
    to a loss that uses it."""
    check_arm(arm)
    module = _per_voxel_loss(arm)
    return _arm_voxel_losses(module, confident_logits(target, p_t, module.spec.channels), target, spacing)


def _batches(dataset, orders: Iterable[Sequence[int]], batch_size: int, fields: Sequence[str]) -> Iterator[dict]:
    """Whole batches of ``batch_size`` items of each order in ``orders``, ``fields`` stacked."""
    for order in orders:
        order = list(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            items = [dataset[i] for i in order[start : start + batch_size]]
            yield {name: torch.stack([torch.as_tensor(item[name]) for item in items]) for name in fields}


def training_batches(dataset: SliceDataset, epochs: Sequence[int], batch_size: int) -> Iterator[dict]:
    """The batches of ``label`` and ``spacing`` that :func:`afl_core.train.fit` draws in
    ``epochs`` (its sampler, whole batches only), without augmentation: build ``dataset``
    with ``augment=False`` and the run's ``oversample_lesions`` and ``seed``."""
    return _batches(dataset, (dataset.sampler(epoch) for epoch in epochs), batch_size, ("label", "spacing"))


def _part_sums(values: torch.Tensor, label: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """``values`` ``(N, 1, *S)`` summed over each part of :data:`SHARE_PARTS`, and per slice
    (item) with its has-a-lesion flag."""
    values = values.double()
    lesion_voxels = label > 0
    slice_sums = values.flatten(1).sum(1)
    has_lesion = lesion_voxels.flatten(1).any(1)
    lesion_sum = float(values[lesion_voxels].sum())
    sums = {
        "lesion-free slices": float(slice_sums[~has_lesion].sum()),
        "background of lesion slices": float(slice_sums[has_lesion].sum()) - lesion_sum,
        "lesion voxels": lesion_sum,
    }
    return sums, slice_sums, has_lesion


class _Shares:
    """The loss of one arm added up over batches, part by part (:func:`loss_shares`)."""

    def __init__(self, arm: str):
        check_arm(arm)
        self.arm, self.module = arm, _per_voxel_loss(arm)
        self.totals = dict.fromkeys(SHARE_PARTS, 0.0)
        self.per_slice: dict[bool, list[float]] = {True: [], False: []}
        self.skipped = 0

    def add(self, logits: torch.Tensor, label: torch.Tensor, spacing: torch.Tensor | None) -> None:
        if self.module.needs_lesion and not label.any():  # left out, as training does
            self.skipped += 1
            return
        sums, slice_sums, has_lesion = _part_sums(_arm_voxel_losses(self.module, logits, label, spacing), label)
        for part, value in sums.items():
            self.totals[part] += value
        for flag in (True, False):
            self.per_slice[flag] += slice_sums[has_lesion == flag].tolist()

    def result(self) -> dict[str, float]:
        whole = sum(self.totals.values())
        if whole == 0:
            raise ValueError(f"arm {self.arm!r}: no loss in the batches given (no batch, or every one skipped)")
        shares = {part: value / whole for part, value in self.totals.items()}
        empty, lesion = self.per_slice[False], self.per_slice[True]
        ratio = np.mean(empty) / np.mean(lesion) if empty and lesion else math.nan
        return shares | {"empty / lesion slice": float(ratio), "skipped batches": self.skipped}


def loss_shares(arm: str, batches: Iterable[dict], p_t: float | tuple[float, float]) -> dict[str, float]:
    """Where the loss of ``arm`` sits at confidence ``p_t``, summed over ``batches``
    (:func:`training_batches`): the shares of :data:`SHARE_PARTS` (summing to 1),
    ``empty / lesion slice`` (the mean loss of a lesion-free slice over that of a lesion
    slice) and ``skipped batches`` (lesion-free batches, which ``variant="reference"``
    leaves out as training does). :func:`network_loss_shares` measures the same on a
    trained network's predictions.
    """
    shares = _Shares(arm)
    for batch in batches:
        label = batch["label"]
        shares.add(confident_logits(label, p_t, shares.module.spec.channels), label, batch.get("spacing"))
    return shares.result()


def _run_arm(run_dir: Path, config: dict) -> str:
    """The arm of a run: its folder's name (:class:`~afl_core.runs.RunKey`), checked against
    the loss its config records."""
    key = RunKey.from_name(run_dir.name)
    if key is None or key.arm not in ARMS:
        raise ValueError(
            f"{run_dir.name!r} does not name an arm (a run folder <arm>-seed<k>, arm one of {list(ARMS)}): "
            "give the arms to measure with arms="
        )
    loss, variant, options = ARMS[key.arm]
    recorded = recorded_arm(config)
    if recorded != ARMS[key.arm]:
        raise ValueError(
            f"{run_dir} is named after arm {key.arm!r} ({loss}, {variant}, {options}) but its config records "
            f"loss {recorded[0]!r}, variant {recorded[1]!r}, options {recorded[2]}: give the arms with arms="
        )
    return key.arm


@torch.no_grad()
def network_loss_shares(
    run_dir: str | os.PathLike,
    arms: Sequence[str] | None = None,
    *,
    slices: str = "training",
    epochs: Sequence[int] = (1,),
    checkpoint: str = "last",
    p_t: float | tuple[float, float] | None = None,
    data: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Where the loss sits on a trained network's own predictions: the run's network
    (``checkpoint_{checkpoint}.pt``, read with ``weights_only=True`` by
    :func:`afl_core.evaluate.load_model`, in eval mode) predicts the logits of its
    ``slices``, and each arm's loss of those logits is added up over :data:`SHARE_PARTS`,
    as :func:`loss_shares` does at an imposed ``p_t``.

    ``slices="training"``: the batches training drew in ``epochs`` (:func:`training_batches`:
    its sampler and lesion oversampling, whole batches, no augmentation);
    ``"validation"``: the run's validation items in order, in batches of its batch size.
    Both datasets are rebuilt as :func:`afl_core.train.fit` built them (its split, checked
    against the one the run recorded).

    Args:
        run_dir: a trained run folder (``<arm>-seed<k>``, :class:`afl_core.runs.RunKey`).
        arms: the losses to measure (arms of :data:`afl_core.experiments.ARMS` with a
            per-voxel loss); default the run's own arm, named by its folder. A loss with
            another channel count than the network reads its logits as
            :func:`afl_core.evaluate.foreground_probability` does.
        slices: ``"training"`` or ``"validation"``.
        epochs: the training epochs whose batches are measured (``slices="training"``).
        checkpoint: ``"last"`` or ``"best"``.
        p_t: ``None``: the network's logits; a probability (or ``(p_background, p_lesion)``):
            the logits of :func:`confident_logits` instead, on the same slices, to set the
            network's shares beside the imposed ones (equal to :func:`loss_shares`).
        data: the run's dataset when it moved (:func:`afl_core.evaluate.run_data`).
        device: where the network predicts.

    Returns:
        One row per arm: the shares of :data:`SHARE_PARTS` (summing to 1),
        ``empty / lesion slice``, ``skipped batches`` (as :func:`loss_shares`), and
        ``p_t: <part>``, the network's mean true-class probability in each part (the
        sigmoid of its lesion logit; the same in every row).

    Raises:
        ValueError: ``slices`` or ``checkpoint`` unknown, no arm given for a folder that
            names none, an arm without a per-voxel loss, or a dataset whose split differs
            from the run's recorded one.
        FileNotFoundError: the run has no such checkpoint.
    """
    if slices not in ("training", "validation"):
        raise ValueError(f"slices must be 'training' or 'validation', got {slices!r}")
    if checkpoint not in ("last", "best"):
        raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    run_dir = Path(run_dir)
    path = run_dir / f"checkpoint_{checkpoint}.pt"
    if p_t is None or not path.is_file():  # load_model names a missing checkpoint and what to do
        model, saved = load_model(run_dir, checkpoint, device)
        config = saved["config"]
    else:  # the network is not asked: its recorded settings alone, the tensors mapped, not read
        config = load_checkpoint(path, ("config",), mmap=True)["config"]
    arms = list(arms) if arms is not None else [_run_arm(run_dir, config)]
    measures = [_Shares(arm) for arm in arms]
    root = run_data(run_dir, config, data, command="afl-evaluate")
    train_set, val_set, _, split = build_datasets(TrainConfig.from_dict(config | {"data": str(root), "augment": False}))
    if split["train_cases"] != config["train_cases"] or split["val_cases"] != config["val_cases"]:
        raise ValueError(
            f"{root} gives another case split than {run_dir} recorded: it is not the run's dataset (give data=)"
        )
    fields = ("image", "label", "spacing")
    if slices == "training":
        batches = _batches(train_set, (train_set.sampler(epoch) for epoch in epochs), config["batch_size"], fields)
    else:
        batches = _batches(val_set, [range(len(val_set))], config["batch_size"], fields)
    p_t_sums, voxel_counts = dict.fromkeys(SHARE_PARTS, 0.0), dict.fromkeys(SHARE_PARTS, 0.0)
    for batch in batches:
        label, spacing = batch["label"], batch["spacing"]
        logits = model(batch["image"].to(device)).float().cpu() if p_t is None else confident_logits(label, p_t)
        for measure in measures:
            measure.add(logits, label, spacing)
        p_lesion = torch.sigmoid(logits[:, -1:])
        for totals, values in (
            (p_t_sums, torch.where(label > 0, p_lesion, 1 - p_lesion)),
            (voxel_counts, torch.ones_like(p_lesion)),
        ):
            for part, value in _part_sums(values, label)[0].items():
                totals[part] += value
    mean_p_t = {
        f"p_t: {part}": p_t_sums[part] / voxel_counts[part] if voxel_counts[part] else math.nan for part in SHARE_PARTS
    }
    return pd.DataFrame({measure.arm: measure.result() | mean_p_t for measure in measures}).T.rename_axis("arm")
