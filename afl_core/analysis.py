"""What separates the two protocols, and who carries the loss (notebooks 05 and 06).

* **Two protocols** (:func:`protocol_effects`): what separates the authors' soft DSC from
  the standard Dice, arm by arm.
* **Who carries the loss** (:func:`confident_logits`, :func:`voxel_losses`,
  :func:`training_batches`, :func:`loss_shares`): the loss of every voxel when the network
  gives the true class probability ``p_t`` (one value, or one for background and one for
  lesion voxels), summed over lesion-free slices, the background of lesion slices and the
  lesion voxels of the batches training draws.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from afl_core.data import SliceDataset
from afl_core.experiments import ARMS, check_arm
from afl_core.losses import AdaptiveFocalLoss

__all__ = ["SHARE_PARTS", "protocol_effects", "confident_logits", "voxel_losses", "training_batches", "loss_shares"]

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


def _per_voxel_loss(arm: str) -> AdaptiveFocalLoss:
    loss, variant, options = ARMS[arm]
    if loss == "afl":
        return AdaptiveFocalLoss(variant, reduction="none", check_values=False, **options)
    # Per-voxel forms of the two baselines, up to a constant factor that no share sees:
    # ce = 2 x (alpha 0.5, gamma 0) and focal = 2 x (alpha 0.5, gamma 2).
    fixed = {"ce": 0.0, "focal": 2.0}
    if loss not in fixed:
        raise ValueError(
            f"arm {arm!r}: {loss!r} has no per-voxel loss (overlap losses are defined per batch); "
            f"use an A-FL arm, 'ce' or 'focal'"
        )
    return AdaptiveFocalLoss("paper", alpha=0.5, gamma=fixed[loss], reduction="none", check_values=False)


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
    logits = confident_logits(target, p_t, module.spec.channels)
    if getattr(module, "uses_spacing", False):
        values = module(logits, target.float(), spacing=spacing)
    else:
        values = module(logits, target.float())
    return values.sum(dim=1, keepdim=True)


def training_batches(dataset: SliceDataset, epochs: Sequence[int], batch_size: int) -> Iterator[dict]:
    """The batches of ``label`` (and ``spacing`` when items carry it) that
    :func:`afl_core.train.fit` draws in ``epochs`` (its sampler, whole batches only),
    without augmentation: build ``dataset`` with ``augment=False`` and the run's
    ``oversample_lesions`` and ``seed``."""
    for epoch in epochs:
        order = list(dataset.sampler(epoch))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            items = [dataset[i] for i in order[start : start + batch_size]]
            batch = {"label": torch.stack([item["label"] for item in items])}
            if "spacing" in items[0]:
                batch["spacing"] = torch.stack([torch.as_tensor(item["spacing"]) for item in items])
            yield batch


def loss_shares(arm: str, batches: Iterable[dict], p_t: float | tuple[float, float]) -> dict[str, float]:
    """Where the loss of ``arm`` sits at confidence ``p_t``, summed over ``batches``
    (:func:`training_batches`): the shares of :data:`SHARE_PARTS` (summing to 1),
    ``empty / lesion slice`` (the mean loss of a lesion-free slice over that of a lesion
    slice) and ``skipped batches`` (lesion-free batches, which ``variant="reference"``
    leaves out as training does).
    """
    totals = dict.fromkeys(SHARE_PARTS, 0.0)
    per_slice = {True: [], False: []}
    skipped = 0
    for batch in batches:
        label = batch["label"]
        if _per_voxel_loss(arm).needs_lesion and not label.any():
            skipped += 1
            continue
        values = voxel_losses(arm, label, p_t, batch.get("spacing")).double()
        lesion_voxels = label > 0
        slice_sums = values.flatten(1).sum(1)
        has_lesion = lesion_voxels.flatten(1).any(1)
        totals["lesion-free slices"] += float(slice_sums[~has_lesion].sum())
        lesion_sum = float(values[lesion_voxels].sum())
        totals["lesion voxels"] += lesion_sum
        totals["background of lesion slices"] += float(slice_sums[has_lesion].sum()) - lesion_sum
        for flag in (True, False):
            per_slice[flag] += slice_sums[has_lesion == flag].tolist()
    whole = sum(totals.values())
    if whole == 0:
        raise ValueError(f"arm {arm!r}: no loss in the batches given (no batch, or every one skipped)")
    shares = {part: value / whole for part, value in totals.items()}
    ratio = np.mean(per_slice[False]) / np.mean(per_slice[True]) if per_slice[False] and per_slice[True] else math.nan
    return shares | {"empty / lesion slice": float(ratio), "skipped batches": skipped}
