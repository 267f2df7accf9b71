"""Evaluation of binary segmentations, one case (volume or image) at a time.

Four groups of functions:

* **Standard metrics** (:func:`segmentation_scores`, :func:`hd95`): hard Dice, IoU,
  sensitivity, specificity and the 95th-percentile Hausdorff distance of a binary
  prediction against a binary ground truth.
* **The authors' protocol** (:func:`paper_protocol_scores`): the soft Dice and soft IoU
  the A-FL paper reports, with squared predictions in the denominator and the
  background channel averaged in. For small lesions the background channel scores about
  0.99, so this number sits roughly halfway between the foreground Dice and 1
  (a foreground Dice of 0.55 reads as about 0.77). Compare the paper's table only with
  numbers computed this way.
* **Lesion-wise detection** (:func:`lesion_detection`, :func:`recall_by_bucket`):
  connected components (26-connectivity in 3D, 8 in 2D), lesion TP/FP/FN and F1,
  recall by lesion size or boundary irregularity.
* **Comparing runs** (:func:`per_case_scores`, :func:`results_table`,
  :func:`paired_bootstrap_ci`, :func:`wilcoxon_signed_rank`, :func:`compare_runs`,
  :func:`export_csv`, :data:`PAPER_RESULTS`).

Inputs are NumPy arrays or torch tensors (converted with ``.detach().cpu().numpy()``),
two- or three-dimensional, without batch or channel axes.

Conventions for empty masks
---------------------------
Chosen so that a mean over cases stays meaningful: a score is either well defined or
NaN, and NaN values are left out of means (:func:`results_table` reports how many
cases have a lesion, the denominator of the sensitivity mean).

==========================  ======  ======  ===========  ===========  ======
case                        dice    iou     sensitivity  specificity  hd95
==========================  ======  ======  ===========  ===========  ======
both empty                  1       1       NaN          1            0
target empty, pred not      0       0       NaN          < 1          NaN
pred empty, target not      0       0       0            1            NaN
target fills the image      ...     ...     ...          NaN          ...
==========================  ======  ======  ===========  ===========  ======

* Sensitivity ``TP / (TP + FN)`` has no denominator without a lesion: NaN whatever the
  prediction (false positives are specificity's business), as MONAI's confusion-matrix
  metrics return.
* Dice and IoU of two empty masks are 1 (nothing to find, nothing found), as
  ``monai.metrics.compute_dice(..., ignore_empty=False)`` returns; a false alarm on an
  empty case scores 0.
* HD95 with one side empty is undefined (MONAI: ``inf`` distances, NaN once a
  percentile is taken); it is NaN here, so a mean HD95 is over the cases where both
  masks are present (the Dice already punishes a missed or hallucinated lesion). Two
  empty masks agree perfectly: 0 (MONAI: NaN).
* Lesion F1 follows Dice: 1 when there is no lesion and no predicted component;
  lesion recall is NaN without a lesion, lesion precision NaN without a prediction.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats
from tqdm.auto import tqdm

from afl_core._io import atomic_target
from afl_core.shape import boundary_irregularity

__all__ = [
    "segmentation_scores",
    "overlap_scores",
    "hd95",
    "paper_protocol_scores",
    "lesion_detection",
    "recall_by_bucket",
    "paired_bootstrap_ci",
    "wilcoxon_signed_rank",
    "compare_runs",
    "per_case_scores",
    "evaluate_cases",
    "results_table",
    "export_csv",
    "PAPER_RESULTS",
    "PAPER_BRATS_AFL_REPORTS",
]

# MONAI DiceLoss's default smoothing constants, which the authors' evaluation inherits.
_SMOOTH_NR = 1e-5
_SMOOTH_DR = 1e-5


# --------------------------------------------------------------------------- inputs


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object or not (a.dtype == bool or np.issubdtype(a.dtype, np.number)):
        raise TypeError(f"{name} must hold numbers or booleans, got dtype {a.dtype}")
    if a.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D image or a 3D volume without batch or channel axes, got shape "
            f"{a.shape}; remove them first (e.g. mask[0, 0] or mask.squeeze())"
        )
    return a


def _binary(x: Any, name: str) -> np.ndarray:
    """``x`` as a boolean array, refusing anything but 0/1 values."""
    a = _to_numpy(x, name)
    if a.dtype == bool:
        return a
    if not np.all((a == 0) | (a == 1)):
        bad = np.unique(a[(a != 0) & (a != 1)])[:5]
        raise ValueError(
            f"{name} must be binary (0/1), found values such as {bad.tolist()}; threshold "
            "probabilities first (e.g. prob > 0.5) or binarise labels (label > 0)"
        )
    return a.astype(bool)


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Voxel spacing as one positive float per axis (unit spacing when ``None``)."""
    if spacing is None:
        return (1.0,) * ndim
    values = np.atleast_1d(np.asarray(spacing, dtype=float))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.ndim != 1 or values.size != ndim:
        raise ValueError(
            f"spacing must give one value per axis ({ndim} for this mask) or a single "
            f"isotropic value, got {spacing!r}"
        )
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"spacing must be positive and finite, got {spacing!r}")
    return tuple(float(v) for v in values)


def _ratio(numerator: int, denominator: int, empty: float) -> float:
    return numerator / denominator if denominator > 0 else empty


# --------------------------------------------------------------------------- standard metrics


def segmentation_scores(pred: Any, target: Any, spacing: float | Sequence[float] | None = None) -> dict[str, float]:
    """Hard overlap scores and HD95 of a binary prediction against a binary ground truth.

    .. math::

        \\text{dice} = \\frac{2TP}{2TP + FP + FN}, \\quad
        \\text{iou} = \\frac{TP}{TP + FP + FN}, \\quad
        \\text{sensitivity} = \\frac{TP}{TP + FN}, \\quad
        \\text{specificity} = \\frac{TN}{TN + FP}

    counted over all voxels of the case, and ``hd95`` from :func:`hd95` in the units of
    ``spacing`` (millimetres for NIfTI spacing; voxels when ``spacing`` is ``None``).
    Empty masks follow the conventions in the module docstring.

    Args:
        pred, target: binary 2D or 3D arrays or tensors of the same shape (bool or 0/1).
        spacing: voxel size per axis, or one isotropic value; ``None`` means 1.

    Returns:
        ``{"dice", "iou", "sensitivity", "specificity", "hd95"}`` as Python floats.
    """
    p = _binary(pred, "pred")
    t = _binary(target, "target")
    _same_shape(p, t, "pred and target")
    sampling = _spacing(spacing, p.ndim)
    return _overlap_scores(p, t) | {"hd95": _hd95(p, t, sampling)}


def overlap_scores(pred: Any, target: Any) -> dict[str, float]:
    """:func:`segmentation_scores` without HD95 (whose distance transforms cost far more
    than the counts): ``{"dice", "iou", "sensitivity", "specificity"}``."""
    p = _binary(pred, "pred")
    t = _binary(target, "target")
    _same_shape(p, t, "pred and target")
    return _overlap_scores(p, t)


def _overlap_scores(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    tn = p.size - tp - fp - fn
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, empty=1.0),
        "iou": _ratio(tp, tp + fp + fn, empty=1.0),
        "sensitivity": _ratio(tp, tp + fn, empty=math.nan),
        "specificity": _ratio(tn, tn + fp, empty=math.nan),
    }


def hd95(pred: Any, target: Any, spacing: float | Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the surfaces of two masks.

    Defined as ``monai.metrics.compute_hausdorff_distance(percentile=95)`` defines it:

    * the surface of a mask is the mask minus its binary erosion with face
      connectivity, voxels on the image border counting as surface;
    * ``d(P -> T)`` is, for every surface voxel of ``P``, the Euclidean distance (in
      physical units, through ``spacing``) to the nearest surface voxel of ``T``;
    * ``HD95 = max(q95(d(P -> T)), q95(d(T -> P)))``, the larger of the two directed
      95th percentiles (linear interpolation), not the percentile of their union.

    Two empty masks give 0, one empty mask NaN (see the module docstring).
    """
    p = _binary(pred, "pred")
    t = _binary(target, "target")
    _same_shape(p, t, "pred and target")
    return _hd95(p, t, _spacing(spacing, p.ndim))


def _hd95(p: np.ndarray, t: np.ndarray, sampling: tuple[float, ...]) -> float:
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0
    if not (has_p and has_t):
        return math.nan
    # Every surface voxel lies inside the union's bounding box, so the erosions and the
    # distance transforms can run on that box instead of the whole volume: erosion
    # treats the outside of the box as background, which it is.
    box = ndimage.find_objects((p | t).astype(np.int8))[0]
    p, t = p[box], t[box]
    surface_p = p & ~ndimage.binary_erosion(p)
    surface_t = t & ~ndimage.binary_erosion(t)
    to_t = ndimage.distance_transform_edt(~surface_t, sampling=sampling)[surface_p]
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=sampling)[surface_t]
    return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))


def _grow(box: tuple[slice, ...], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A bounding box widened by ``margin`` voxels on every side, clipped to the image."""
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


# --------------------------------------------------------------------------- the authors' protocol


def paper_protocol_scores(prob: Any, target: Any) -> dict[str, float]:
    """Soft Dice and soft IoU as the A-FL authors evaluate (``1 - MONAI DiceLoss``).

    The foreground probability ``p`` becomes two channels ``[1 - p, p]`` against the
    one-hot target ``[1 - t, t]``. For each channel ``c``, with
    ``I = sum(p_c * t_c)``, ``P = sum(p_c ** 2)``, ``T = sum(t_c ** 2)`` and MONAI's
    default smoothing ``s_nr = s_dr = 1e-5``:

    .. math::

        \\text{Dice}_c = \\frac{2I + s_{nr}}{P + T + s_{dr}}, \\qquad
        \\text{IoU}_c = \\frac{2I + s_{nr}}{2(P + T - I) + s_{dr}}

    which is ``1 - DiceLoss(squared_pred=True, include_background=True)`` and its
    ``jaccard=True`` form. The reported value is the mean over the two channels: the
    background channel is averaged in.

    The authors' networks have two output channels passed through a sigmoid each; a
    one-output network's ``sigmoid(logit)`` gives exactly ``[1 - p, p]``.

    Args:
        prob: foreground probabilities in [0, 1], 2D or 3D.
        target: binary mask of the same shape.

    Returns:
        ``dice`` and ``iou`` (the paper's numbers), and the per-channel values
        ``dice_foreground``, ``iou_foreground``, ``dice_background``, ``iou_background``
        so the effect of averaging in the background can be shown.
    """
    p = _to_numpy(prob, "prob").astype(np.float64)
    t = _binary(target, "target").astype(np.float64)
    _same_shape(p, t, "prob and target")
    if not np.all(np.isfinite(p)):
        raise ValueError("prob holds non-finite values (NaN or inf); check the network output")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"prob must hold probabilities in [0, 1], found values in [{p.min():.3g}, {p.max():.3g}]; "
            "apply torch.sigmoid to logits first"
        )
    foreground = _soft_scores(p, t)
    background = _soft_scores(1.0 - p, 1.0 - t)
    return {
        "dice": (foreground[0] + background[0]) / 2,
        "iou": (foreground[1] + background[1]) / 2,
        "dice_foreground": foreground[0],
        "iou_foreground": foreground[1],
        "dice_background": background[0],
        "iou_background": background[1],
    }


def _soft_scores(p: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    intersection = float(np.sum(p * t))
    squares = float(np.sum(p * p) + np.sum(t * t))
    dice = (2 * intersection + _SMOOTH_NR) / (squares + _SMOOTH_DR)
    iou = (2 * intersection + _SMOOTH_NR) / (2 * (squares - intersection) + _SMOOTH_DR)
    return dice, iou


# --------------------------------------------------------------------------- lesion-wise detection


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (26 in 3D, 8 in 2D)."""
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    return labels, int(count)


def lesion_detection(
    pred: Any,
    target: Any,
    *,
    spacing: float | Sequence[float] | None = None,
    lesions: Any = None,
) -> dict[str, Any]:
    """Lesion-wise detection counts, as in the authors' evaluation.

    Ground-truth lesions are the connected components of ``target`` (26-connectivity in
    3D, 8 in 2D), or the labels of ``lesions`` when given (useful when two lesions
    touch). A lesion is a true positive when any predicted voxel overlaps it; a
    connected component of ``pred`` that overlaps no lesion is a false positive; an
    undetected lesion is a false negative. So one predicted blob covering two lesions
    detects both, and a lesion hit by two blobs counts once.

    .. math::  F_1 = \\frac{TP}{TP + (FP + FN) / 2}

    Args:
        pred, target: binary 2D or 3D masks of the same shape.
        spacing: voxel size, for the lesion volumes in physical units (``volume_mm3``
            is NaN without it).
        lesions: optional integer label map of the ground-truth lesions (0 background,
            one positive id per lesion) whose foreground must equal ``target``.

    Returns:
        ``tp``, ``fp``, ``fn`` (ints), ``precision``, ``recall``, ``f1`` (floats, see the
        module docstring for empty cases) and ``per_lesion``, a DataFrame with one row
        per ground-truth lesion: ``lesion`` (id), ``volume_voxels``, ``volume_mm3``,
        ``irregularity`` (:func:`afl_core.shape.boundary_irregularity` of the lesion
        alone, in voxel units), ``overlap_voxels`` (predicted voxels inside it) and
        ``detected``.
    """
    p = _binary(pred, "pred")
    t = _binary(target, "target")
    _same_shape(p, t, "pred and target")
    voxel_volume = math.prod(_spacing(spacing, p.ndim)) if spacing is not None else math.nan

    if lesions is None:
        gt_labels, _ = _components(t)
    else:
        gt_labels = _lesion_labels(lesions, t)
    pred_labels, n_pred = _components(p)

    ids = np.unique(gt_labels[gt_labels > 0])
    volumes = np.bincount(gt_labels.ravel(), minlength=int(gt_labels.max()) + 1)
    overlaps = np.bincount(gt_labels[p], minlength=volumes.size)
    boxes = ndimage.find_objects(gt_labels)
    irregularity = [_lesion_irregularity(gt_labels, int(i), boxes[i - 1]) for i in ids]
    per_lesion = pd.DataFrame(
        {
            "lesion": ids.astype(int),
            "volume_voxels": volumes[ids].astype(int),
            "volume_mm3": volumes[ids] * voxel_volume,
            "irregularity": np.asarray(irregularity, dtype=float),
            "overlap_voxels": overlaps[ids].astype(int),
            "detected": overlaps[ids] > 0,
        }
    )

    tp = int(per_lesion["detected"].sum())
    fn = len(ids) - tp
    hitting = np.unique(pred_labels[p & t])
    fp = n_pred - int(np.count_nonzero(hitting))
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp, empty=math.nan),
        "recall": _ratio(tp, tp + fn, empty=math.nan),
        "f1": _ratio(tp, tp + (fp + fn) / 2, empty=1.0),
        "per_lesion": per_lesion,
    }


def _lesion_labels(lesions: Any, t: np.ndarray) -> np.ndarray:
    labels = _to_numpy(lesions, "lesions")
    _same_shape(labels, t, "lesions and target")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        if not np.all(labels == np.round(labels)):
            raise ValueError("lesions must be an integer label map (0 background, one id per lesion)")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError("lesions must not hold negative ids (0 is background)")
    if not np.array_equal(labels > 0, t):
        raise ValueError("lesions > 0 must be exactly the target's foreground; pass the label map of this target")
    return labels


def _lesion_irregularity(labels: np.ndarray, lesion_id: int, box: tuple[slice, ...]) -> float:
    # A two-voxel margin reproduces the whole-image gradient exactly: the voxels next to
    # the lesion keep their central differences, and the crop's own border is background.
    own = labels[_grow(box, margin=2, shape=labels.shape)] == lesion_id
    return float(boundary_irregularity(torch.from_numpy(own)[None, None])[0])


def recall_by_bucket(per_lesion_table: pd.DataFrame, column: str, bins: int | Sequence[float]) -> pd.DataFrame:
    """Lesion recall within strata of ``column`` (e.g. ``volume_voxels``, ``irregularity``).

    ``bins`` is a number of equal-width bins or a sequence of edges, as for
    :func:`pandas.cut` (intervals closed on the right, the lowest edge included). Every
    bucket is listed, empty ones with ``recall`` NaN.

    Returns:
        DataFrame with columns ``bucket``, ``n``, ``detected``, ``recall``.
    """
    for needed in (column, "detected"):
        if needed not in per_lesion_table.columns:
            raise KeyError(
                f"per_lesion_table has no column {needed!r} (columns: {list(per_lesion_table.columns)}); "
                "pass lesion_detection(...)['per_lesion'] or evaluate_cases(...)[1]"
            )
    values = per_lesion_table[column]
    buckets = pd.cut(values, bins, include_lowest=True)
    outside = int((buckets.isna() & values.notna()).sum())
    if outside:
        raise ValueError(
            f"{outside} lesion(s) have {column} outside the bins {list(buckets.cat.categories)}; "
            "widen the first or last edge (e.g. 0 and numpy.inf)"
        )
    detected = per_lesion_table["detected"].astype(bool)
    grouped = detected.groupby(buckets, observed=False)
    table = pd.DataFrame({"n": grouped.size(), "detected": grouped.sum().astype(int)})
    table["recall"] = table["detected"] / table["n"].where(table["n"] > 0)
    return table.rename_axis("bucket").reset_index()


# --------------------------------------------------------------------------- statistics


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a and b must be 1D with one value per case, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("a and b are empty: there is nothing to compare")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("a and b must be finite; drop the cases where either is NaN (compare_runs does)")
    return x, y


def paired_bootstrap_ci(
    a: Any, b: Any, n_boot: int = 10000, ci: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Percentile bootstrap interval of the mean paired difference ``mean(b - a)``.

    Cases are resampled with replacement (the pairs stay together), ``n_boot`` times;
    the interval is given by the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of the
    resampled means. Reproducible for a given ``seed`` (``numpy.random.default_rng``).

    Returns:
        ``mean_diff`` (of the original cases), ``low``, ``high``, ``n`` (cases).
    """
    x, y = _paired(a, b)
    if not 0 < ci < 1:
        raise ValueError(f"ci must lie strictly between 0 and 1, got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    diff = y - x
    rng = np.random.default_rng(seed)
    resampled = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    low, high = np.quantile(resampled, [(1 - ci) / 2, (1 + ci) / 2])
    return {"mean_diff": float(diff.mean()), "low": float(low), "high": float(high), "n": int(diff.size)}


def wilcoxon_signed_rank(a: Any, b: Any) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences ``b - a``.

    :func:`scipy.stats.wilcoxon` with its defaults (zero differences dropped; exact
    distribution for small samples). Note: when every difference is zero the test has
    no data; the p-value is then 1.0 (no evidence of a difference) rather than NaN.
    """
    x, y = _paired(a, b)
    diff = y - x
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff).pvalue)


def _by_case(per_case: pd.DataFrame, metric: str, name: str) -> pd.Series:
    for needed in ("case", metric):
        if needed not in per_case.columns:
            raise KeyError(f"{name} has no column {needed!r} (columns: {list(per_case.columns)})")
    duplicated = per_case["case"][per_case["case"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{name} lists cases more than once: {list(duplicated)[:5]}")
    return per_case.set_index("case")[metric].astype(float)


def compare_runs(
    per_case_a: pd.DataFrame,
    per_case_b: pd.DataFrame,
    metric: str = "dice",
    *,
    n_boot: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired comparison of two runs on the same cases (difference ``b - a``).

    The per-case tables (from :func:`per_case_scores`) are aligned on ``case``; they
    must hold the same cases. Cases where ``metric`` is NaN in either run (e.g.
    sensitivity without a lesion) are left out and ``n`` says how many remain.

    Returns:
        ``metric``, ``n``, ``mean_a``, ``mean_b``, ``mean_diff``, ``low``, ``high``
        (bootstrap interval, :func:`paired_bootstrap_ci`) and ``p_value``
        (:func:`wilcoxon_signed_rank`).
    """
    a = _by_case(per_case_a, metric, "per_case_a")
    b = _by_case(per_case_b, metric, "per_case_b")
    if set(a.index) != set(b.index):
        only_a = sorted(set(a.index) - set(b.index))[:5]
        only_b = sorted(set(b.index) - set(a.index))[:5]
        raise ValueError(
            f"the runs were evaluated on different cases (only in a: {only_a}, only in b: {only_b}); "
            "evaluate both on the same split"
        )
    b = b.loc[a.index]
    both = a.notna() & b.notna()
    x, y = a[both].to_numpy(), b[both].to_numpy()
    interval = paired_bootstrap_ci(x, y, n_boot=n_boot, ci=ci, seed=seed)
    return {
        "metric": metric,
        "n": interval["n"],
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": interval["mean_diff"],
        "low": interval["low"],
        "high": interval["high"],
        "p_value": wilcoxon_signed_rank(x, y),
    }


# --------------------------------------------------------------------------- tables


def evaluate_cases(
    cases: Iterable[tuple[str, Any, Any, Any, float | Sequence[float] | None]], *, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score many cases: one row per case, and one row per ground-truth lesion.

    Args:
        cases: ``(case_id, pred, target, prob, spacing)`` tuples; ``prob`` (foreground
            probabilities for :func:`paper_protocol_scores`) may be ``None``, which
            leaves the ``paper_*`` columns NaN.
        progress: show a progress bar.

    Returns:
        ``(per_case, per_lesion)``. ``per_case`` columns: ``case``, the
        :func:`segmentation_scores`, ``paper_dice``, ``paper_iou``,
        ``paper_dice_foreground``, ``paper_iou_foreground``, ``target_voxels``,
        ``pred_voxels``, ``lesion_tp``, ``lesion_fp``, ``lesion_fn``, ``lesion_f1``.
        ``per_lesion``: ``case`` and the columns of :func:`lesion_detection`'s table.
    """
    rows, lesion_tables = [], []
    for case_id, pred, target, prob, spacing in tqdm(cases, desc="scoring cases", disable=not progress):
        p, t = _binary(pred, "pred"), _binary(target, "target")
        row: dict[str, Any] = {"case": str(case_id)}
        row |= segmentation_scores(p, t, spacing)
        paper = paper_protocol_scores(prob, t) if prob is not None else {}
        for key in ("dice", "iou", "dice_foreground", "iou_foreground"):
            row[f"paper_{key}"] = paper.get(key, math.nan)
        row["target_voxels"] = int(np.count_nonzero(t))
        row["pred_voxels"] = int(np.count_nonzero(p))
        detection = lesion_detection(p, t, spacing=spacing)
        row |= {f"lesion_{key}": detection[key] for key in ("tp", "fp", "fn", "f1")}
        rows.append(row)
        lesion_tables.append(detection["per_lesion"])
        lesion_tables[-1].insert(0, "case", str(case_id))
    if not rows:
        raise ValueError("cases is empty: give (case_id, pred, target, prob, spacing) tuples")
    per_case = pd.DataFrame(rows)
    per_lesion = pd.concat(lesion_tables, ignore_index=True)
    return per_case, per_lesion


def per_case_scores(
    cases: Iterable[tuple[str, Any, Any, Any, float | Sequence[float] | None]], *, progress: bool = True
) -> pd.DataFrame:
    """The per-case table of :func:`evaluate_cases` (one row per case)."""
    return evaluate_cases(cases, progress=progress)[0]


_RESULT_COLUMNS = {
    "IoU": "iou",
    "DSC": "dice",
    "Sensitivity": "sensitivity",
    "Specificity": "specificity",
    "IoU (paper protocol)": "paper_iou",
    "DSC (paper protocol)": "paper_dice",
    "HD95": "hd95",
}


def results_table(per_case_by_loss: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per loss in the paper's format, from per-case tables.

    Columns ``IoU``, ``DSC``, ``Sensitivity``, ``Specificity`` (standard protocol) and
    ``IoU (paper protocol)``, ``DSC (paper protocol)`` are means over cases, NaN cases
    left out; then ``HD95`` (mean over cases where both masks are present), ``Lesion F1``
    (pooled: from the summed lesion TP/FP/FN of all cases), ``Cases`` and
    ``Cases with lesion`` (the cases behind the sensitivity mean).
    """
    if not per_case_by_loss:
        raise ValueError("per_case_by_loss is empty: give one per-case table per loss")
    rows = {}
    for loss, df in per_case_by_loss.items():
        missing = [c for c in (*_RESULT_COLUMNS.values(), "lesion_tp", "lesion_fp", "lesion_fn") if c not in df]
        if missing:
            raise KeyError(f"the table for {loss!r} lacks columns {missing}; build it with per_case_scores")
        row = {label: df[column].astype(float).mean() for label, column in _RESULT_COLUMNS.items()}
        tp, fp, fn = (int(df[f"lesion_{k}"].sum()) for k in ("tp", "fp", "fn"))
        row["Lesion F1"] = _ratio(tp, tp + (fp + fn) / 2, empty=1.0)
        row["Cases"] = len(df)
        row["Cases with lesion"] = int(df["sensitivity"].notna().sum())
        rows[loss] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("loss")


def export_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to CSV atomically (the index is written only when it is meaningful,
    e.g. the ``loss`` index of :func:`results_table`). Returns the path."""
    path = Path(path)
    with atomic_target(path) as tmp:
        df.to_csv(tmp, index=not isinstance(df.index, pd.RangeIndex))
    return path


# The paper's headline table (ResNet50 U-Net), rows in its order, indexed by this
# package's loss names (afl_core.losses.LOSS_NAMES). Its IoU and DSC follow the authors'
# soft protocol (paper_protocol_scores), so set them beside the "(paper protocol)"
# columns of results_table, not beside the standard ones.
PAPER_RESULTS = pd.DataFrame(
    {
        ("PICAI", "IoU"): [0.641, 0.630, 0.654, 0.665, 0.670, 0.685, 0.690, 0.696],
        ("PICAI", "DSC"): [0.654, 0.705, 0.727, 0.739, 0.742, 0.757, 0.726, 0.769],
        ("PICAI", "Sensitivity"): [0.917, 0.870, 0.917, 0.904, 0.938, 0.896, 0.715, 0.951],
        ("PICAI", "Specificity"): [0.948, 0.876, 0.947, 0.952, 0.927, 0.949, 0.924, 0.950],
        ("BraTS", "IoU"): [0.875, 0.813, 0.893, 0.891, 0.829, 0.884, 0.869, 0.884],
        ("BraTS", "DSC"): [0.921, 0.881, 0.930, 0.933, 0.889, 0.927, 0.922, 0.927],
    },
    index=pd.Index(["tversky", "ce", "iou", "dice", "dice_ce", "dice_focal", "focal", "afl"], name="loss"),
).rename_axis(columns=["dataset", "metric"])

# The paper reports the same A-FL BraTS configuration three ways; PAPER_RESULTS uses the
# comparison table's numbers.
PAPER_BRATS_AFL_REPORTS = {
    "comparison table": {"IoU": 0.884, "DSC": 0.927},
    "abstract": {"IoU": 0.883, "DSC": 0.931},
    "per-architecture table": {"IoU": 0.898, "DSC": 0.951},
}
