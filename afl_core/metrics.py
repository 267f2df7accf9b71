"""Evaluation of binary segmentations, one case (volume or image) at a time.

Three groups of functions (comparing runs: :mod:`afl_core.statistics`; the paper's table:
:mod:`afl_core.paper`):

* **Standard metrics** (:func:`segmentation_scores`, :func:`hd95`, :func:`hd95_penalty`):
  hard Dice, IoU, sensitivity, specificity and the 95th-percentile Hausdorff distance of
  a binary prediction against a binary ground truth, with and without a penalty for a
  missed or hallucinated lesion.
* **The authors' protocol** (:func:`paper_protocol_scores`): the soft Dice and soft IoU
  the A-FL paper reports, with squared predictions in the denominator and the
  background channel averaged in. For small lesions the background channel scores about
  0.99, so this number sits roughly halfway between the foreground Dice and 1
  (a foreground Dice of 0.55 reads as about 0.77). Compare the paper's table only with
  numbers computed this way. A two-channel network is scored from its own background
  channel, as the authors' code does.
* **Lesion-wise detection** (:func:`lesion_detection`, :func:`recall_by_bucket`):
  connected components (26-connectivity in 3D, 8 in 2D), lesion TP/FP/FN and F1 under
  two matching rules (the authors' any-overlap rule and PI-CAI's one-to-one rule with
  IoU >= 0.1), recall by lesion size or boundary irregularity.
* **Many cases** (:func:`evaluate_cases`, :func:`per_case_scores`): one row per case.

Inputs are NumPy arrays or torch tensors (converted with ``.detach().cpu().numpy()``),
two- or three-dimensional, without batch or channel axes.

Conventions for empty masks
---------------------------
Chosen so that a mean over cases stays meaningful: a score is either well defined or
NaN, and NaN values are left out of means (:func:`afl_core.paper.results_table` reports how many
cases have a lesion, the denominator of the sensitivity mean).

==========================  ======  ======  ===========  ===========  ======  ==============
case                        dice    iou     sensitivity  specificity  hd95    hd95_penalised
==========================  ======  ======  ===========  ===========  ======  ==============
both empty                  1       1       NaN          1            0       0
target empty, pred not      0       0       NaN          < 1          NaN     diagonal
pred empty, target not      0       0       0            1            NaN     diagonal
target fills the image      ...     ...     ...          NaN          ...     ...
==========================  ======  ======  ===========  ===========  ======  ==============

* Sensitivity ``TP / (TP + FN)`` has no denominator without a lesion: NaN whatever the
  prediction (false positives are specificity's business), as MONAI's confusion-matrix
  metrics return.
* Dice and IoU of two empty masks are 1 (nothing to find, nothing found), as
  ``monai.metrics.compute_dice(..., ignore_empty=False)`` returns; a false alarm on an
  empty case scores 0.
* HD95 with one side empty is undefined (MONAI: ``inf`` distances, NaN once a
  percentile is taken); it is NaN here, so a mean HD95 is over the cases where both
  masks are present, and :func:`afl_core.paper.results_table` says how many cases that leaves out.
  Beside it, ``hd95_penalised`` counts such a case at the largest distance the image
  allows, its diagonal ``sqrt(sum((n_i * s_i) ** 2))`` in the units of the spacing
  (:func:`hd95_penalty`), as BraTS-style evaluations do (their 373.13 mm is the
  diagonal of the 240 x 240 x 155 grid at 1 mm). Two empty masks agree perfectly: 0 in
  both columns (MONAI: NaN).
* Lesion F1 follows Dice: 1 when there is no lesion and no predicted component;
  lesion recall is NaN without a lesion, lesion precision NaN without a prediction.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from afl_core.shape import boundary_irregularity

__all__ = [
    "segmentation_scores",
    "overlap_scores",
    "hd95",
    "hd95_penalty",
    "paper_protocol_scores",
    "lesion_detection",
    "LESION_MATCHING",
    "PICAI_MIN_IOU",
    "recall_by_bucket",
    "per_case_scores",
    "evaluate_cases",
    "DISTANCE_COLUMNS",
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
            f"spacing must give one value per axis ({ndim} for this mask) or a single isotropic value, got {spacing!r}"
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
    ``spacing`` (millimetres for NIfTI spacing; voxels when ``spacing`` is ``None``):
    NaN when exactly one mask is empty, where ``hd95_penalised`` takes
    :func:`hd95_penalty` instead. Empty masks follow the conventions in the module
    docstring.

    Args:
        pred, target: binary 2D or 3D arrays or tensors of the same shape (bool or 0/1).
        spacing: voxel size per axis, or one isotropic value; ``None`` means 1.

    Returns:
        ``{"dice", "iou", "sensitivity", "specificity", "hd95", "hd95_penalised"}`` as
        Python floats.
    """
    p = _binary(pred, "pred")
    t = _binary(target, "target")
    _same_shape(p, t, "pred and target")
    sampling = _spacing(spacing, p.ndim)
    distance = _hd95(p, t, sampling)
    penalised = _diagonal(p.shape, sampling) if math.isnan(distance) else distance
    return _overlap_scores(p, t) | {"hd95": distance, "hd95_penalised": penalised}


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


def hd95_penalty(shape: Sequence[int], spacing: float | Sequence[float] | None = None) -> float:
    """The distance that ``hd95_penalised`` gives a case where exactly one mask is empty.

    The image diagonal, the largest distance two points of the image can have:

    .. math::  \\sqrt{\\sum_i (n_i s_i)^2}

    for ``shape`` ``(n_i)`` and ``spacing`` ``(s_i)`` in the array's axis order (units of
    the spacing, voxels when ``None``). BraTS-style evaluations use the same rule: the
    240 x 240 x 155 BraTS grid at 1 mm gives their 373.13 mm.
    """
    dims = tuple(int(n) for n in shape)
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise ValueError(f"shape must give 2 or 3 positive sizes (the image's spatial shape), got {tuple(shape)}")
    return _diagonal(dims, _spacing(spacing, len(dims)))


def _diagonal(shape: tuple[int, ...], sampling: tuple[float, ...]) -> float:
    return float(math.hypot(*(n * s for n, s in zip(shape, sampling))))


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


def paper_protocol_scores(prob: Any, target: Any, *, background: Any = None) -> dict[str, float]:
    """Soft Dice and soft IoU as the A-FL authors evaluate (``1 - MONAI DiceLoss``).

    The prediction is two channels ``[b, p]`` against the one-hot target ``[1 - t, t]``:
    ``p`` the foreground probability, ``b`` the background probability, which is the
    network's own background channel for a two-output network (``background=``) and
    ``1 - p`` for a one-output network. For each channel ``c``, with
    ``I = sum(p_c * t_c)``, ``P = sum(p_c ** 2)``, ``T = sum(t_c ** 2)`` and MONAI's
    default smoothing ``s_nr = s_dr = 1e-5``:

    .. math::

        \\text{Dice}_c = \\frac{2I + s_{nr}}{P + T + s_{dr}}, \\qquad
        \\text{IoU}_c = \\frac{2I + s_{nr}}{2(P + T - I) + s_{dr}}

    which is ``1 - DiceLoss(squared_pred=True, include_background=True)`` and its
    ``jaccard=True`` form. The reported value is the mean over the two channels: the
    background channel is averaged in.

    The authors' networks have two output channels passed through a sigmoid each
    (``utils.py:10-18``: ``DiceLoss(to_onehot_y=True, sigmoid=True, squared_pred=True)``
    on the logits): pass ``prob=sigmoid(logits[1])`` and ``background=sigmoid(logits[0])``.
    The two sigmoids need not sum to 1, so the background channel can score well below
    the ``1 - p`` of a one-output network.

    Args:
        prob: foreground probabilities in [0, 1], 2D or 3D.
        target: binary mask of the same shape.
        background: the background channel's probabilities (same shape), or ``None``
            for ``1 - prob``.

    Returns:
        ``dice`` and ``iou`` (the paper's numbers), and the per-channel values
        ``dice_foreground``, ``iou_foreground``, ``dice_background``, ``iou_background``
        so the effect of averaging in the background can be shown.
    """
    t = _binary(target, "target").astype(np.float64)
    p = _probabilities(prob, "prob", t.shape)
    b = 1.0 - p if background is None else _probabilities(background, "background", t.shape)
    foreground_scores = _soft_scores(p, t)
    background_scores = _soft_scores(b, 1.0 - t)
    return {
        "dice": (foreground_scores[0] + background_scores[0]) / 2,
        "iou": (foreground_scores[1] + background_scores[1]) / 2,
        "dice_foreground": foreground_scores[0],
        "iou_foreground": foreground_scores[1],
        "dice_background": background_scores[0],
        "iou_background": background_scores[1],
    }


def _probabilities(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    a = _to_numpy(x, name).astype(np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} and target must have the same shape, got {a.shape} and {shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values (NaN or inf); check the network output")
    if a.min() < 0 or a.max() > 1:
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], found values in [{a.min():.3g}, {a.max():.3g}]; "
            "apply torch.sigmoid to logits first"
        )
    return a


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


LESION_MATCHING = ("any_overlap", "picai")
# PI-CAI's min_overlap: a predicted component must reach this IoU with a lesion to detect it.
PICAI_MIN_IOU = 0.1


def lesion_detection(
    pred: Any,
    target: Any,
    *,
    spacing: float | Sequence[float] | None = None,
    lesions: Any = None,
    matching: str = "any_overlap",
) -> dict[str, Any]:
    """Lesion-wise detection counts under one of two matching rules.

    Ground-truth lesions are the connected components of ``target`` (26-connectivity in
    3D, 8 in 2D), or the labels of ``lesions`` when given (useful when two lesions
    touch); predicted lesions are the connected components of ``pred``, with the same
    connectivity.

    ``matching="any_overlap"`` (the authors' rule, their ``lession_wise_seg``): a lesion
    is a true positive when any predicted voxel overlaps it; a predicted component that
    overlaps no lesion is a false positive; an undetected lesion is a false negative.
    One predicted blob covering two lesions detects both, and a lesion hit by two blobs
    counts once.

    ``matching="picai"`` (PI-CAI's ``picai_eval.evaluate_case`` with its defaults): a
    lesion and a predicted component may be matched when their IoU (of the two
    components alone) is at least :data:`PICAI_MIN_IOU` = 0.1; matching is one-to-one,
    the Hungarian assignment that maximises the sum of ``1 + IoU`` over matched pairs
    (PI-CAI's weighting, which puts the number of matches before the overlap). Matched
    lesions are true positives, unmatched lesions false negatives, and a predicted
    component that reaches IoU 0.1 with no lesion is a false positive; one that reaches
    it but lost the assignment to another component is neither (PI-CAI's
    ``allow_unmatched_candidates_with_minimal_overlap=True``). So one blob covering two
    lesions detects at most one of them, and a lesion split into two blobs counts once.
    PI-CAI scores 3D volumes; on 2D images the same rule runs with 8-connectivity.

    .. math::  F_1 = \\frac{TP}{TP + (FP + FN) / 2}

    Args:
        pred, target: binary 2D or 3D masks of the same shape.
        spacing: voxel size, for the lesion volumes in physical units (``volume_mm3``
            is NaN without it).
        lesions: optional integer label map of the ground-truth lesions (0 background,
            one positive id per lesion) whose foreground must equal ``target``.
        matching: ``"any_overlap"`` or ``"picai"``.

    Returns:
        ``matching``, ``tp``, ``fp``, ``fn`` (ints), ``precision``, ``recall``, ``f1``
        (floats, see the module docstring for empty cases) and ``per_lesion``, a
        DataFrame with one row per ground-truth lesion: ``lesion`` (id),
        ``volume_voxels``, ``volume_mm3``, ``irregularity``
        (:func:`afl_core.shape.boundary_irregularity` of the lesion alone, in voxel
        units), ``overlap_voxels`` (predicted voxels inside it), ``best_iou`` (its
        highest IoU with one predicted component) and ``detected`` (under ``matching``).
    """
    if matching not in LESION_MATCHING:
        raise ValueError(f"matching must be one of {LESION_MATCHING}, got {matching!r}")
    p = _binary(pred, "pred")
    t = _binary(target, "target")
    _same_shape(p, t, "pred and target")
    per_lesion, overlap = _lesions_and_overlap(p, t, spacing, lesions)
    detected, fp = _match(overlap, matching)
    per_lesion["detected"] = detected
    return {"matching": matching, **_detection_counts(detected, fp), "per_lesion": per_lesion}


class _Overlap(NamedTuple):
    """Voxel counts of lesions (rows) against predicted components (columns)."""

    intersection: np.ndarray  # (lesions, components)
    lesion_voxels: np.ndarray  # (lesions,)
    component_voxels: np.ndarray  # (components,)

    @property
    def iou(self) -> np.ndarray:
        union = self.lesion_voxels[:, None] + self.component_voxels[None, :] - self.intersection
        return self.intersection / np.maximum(union, 1)


def _lesions_and_overlap(
    p: np.ndarray, t: np.ndarray, spacing: float | Sequence[float] | None, lesions: Any
) -> tuple[pd.DataFrame, _Overlap]:
    """The per-lesion table (without ``detected``) and the lesion/component overlap counts."""
    voxel_volume = math.prod(_spacing(spacing, p.ndim)) if spacing is not None else math.nan
    gt_labels = _components(t)[0] if lesions is None else _lesion_labels(lesions, t)
    pred_labels, n_pred = _components(p)

    ids = np.unique(gt_labels[gt_labels > 0])
    volumes = np.bincount(gt_labels.ravel(), minlength=int(gt_labels.max()) + 1)
    both = p & t
    pairs = np.bincount(gt_labels[both] * (n_pred + 1) + pred_labels[both], minlength=volumes.size * (n_pred + 1))
    overlap = _Overlap(
        intersection=pairs.reshape(volumes.size, n_pred + 1)[ids, 1:],
        lesion_voxels=volumes[ids],
        component_voxels=np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:],
    )
    boxes = ndimage.find_objects(gt_labels)
    irregularity = [_lesion_irregularity(gt_labels, int(i), boxes[i - 1]) for i in ids]
    iou = overlap.iou
    per_lesion = pd.DataFrame(
        {
            "lesion": ids.astype(int),
            "volume_voxels": volumes[ids].astype(int),
            "volume_mm3": volumes[ids] * voxel_volume,
            "irregularity": np.asarray(irregularity, dtype=float),
            "overlap_voxels": overlap.intersection.sum(axis=1).astype(int),
            "best_iou": iou.max(axis=1) if n_pred else np.zeros(ids.size),
        }
    )
    return per_lesion, overlap


def _match(overlap: _Overlap, matching: str) -> tuple[np.ndarray, int]:
    """Which lesions are detected, and how many predicted components are false positives."""
    if matching == "any_overlap":
        touching = overlap.intersection > 0
        return touching.any(axis=1), int(np.count_nonzero(~touching.any(axis=0)))
    iou = overlap.iou
    eligible = iou >= PICAI_MIN_IOU
    # PI-CAI's weights: 1 + IoU for an eligible pair, so a further match counts more than more overlap.
    rows, cols = linear_sum_assignment(np.where(eligible, 1.0 + iou, 0.0), maximize=True)
    detected = np.zeros(iou.shape[0], dtype=bool)
    detected[rows[eligible[rows, cols]]] = True
    return detected, int(np.count_nonzero(~eligible.any(axis=0)))


def _detection_counts(detected: np.ndarray, fp: int) -> dict[str, Any]:
    tp = int(np.count_nonzero(detected))
    fn = detected.size - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp, empty=math.nan),
        "recall": _ratio(tp, tp + fn, empty=math.nan),
        "f1": _ratio(tp, tp + (fp + fn) / 2, empty=1.0),
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


# --------------------------------------------------------------------------- tables


# Per matching rule: the prefix of its per-case counts and its per-lesion column.
_MATCHING_COLUMNS = (("any_overlap", "lesion", "detected"), ("picai", "lesion_picai", "detected_picai"))


def evaluate_cases(cases: Iterable[tuple[Any, ...]], *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score many cases: one row per case, and one row per ground-truth lesion.

    Args:
        cases: ``(case_id, pred, target, prob, spacing)`` tuples, or
            ``(case_id, pred, target, prob, spacing, background)`` for a two-output
            network; ``prob`` (foreground probabilities) and ``background`` (the
            network's background channel) feed :func:`paper_protocol_scores`; ``prob``
            may be ``None``, which leaves the ``paper_*`` columns NaN.
        progress: show a progress bar.

    Returns:
        ``(per_case, per_lesion)``. ``per_case`` columns: ``case``, the
        :func:`segmentation_scores` (``hd95`` and ``hd95_penalised`` in the units of
        ``spacing``), ``paper_dice``, ``paper_iou``, ``paper_dice_foreground``,
        ``paper_iou_foreground``, ``target_voxels``, ``pred_voxels``, then the
        :func:`lesion_detection` counts under both matching rules: ``lesion_tp``,
        ``lesion_fp``, ``lesion_fn``, ``lesion_f1`` (the authors' any-overlap rule) and
        ``lesion_picai_tp``, ``lesion_picai_fp``, ``lesion_picai_fn``,
        ``lesion_picai_f1`` (PI-CAI's one-to-one rule). ``per_lesion``: ``case``, the
        columns of :func:`lesion_detection`'s table with ``detected`` under the
        any-overlap rule, and ``detected_picai``.
    """
    rows, lesion_tables = [], []
    for case in tqdm(cases, desc="scoring cases", disable=not progress):
        if len(case) not in (5, 6):
            raise ValueError(
                f"each case must be (case_id, pred, target, prob, spacing[, background]), got {len(case)} items"
            )
        case_id, pred, target, prob, spacing, background = (*case, None)[:6]
        p, t = _binary(pred, "pred"), _binary(target, "target")
        row: dict[str, Any] = {"case": str(case_id)}
        row |= segmentation_scores(p, t, spacing)
        paper = paper_protocol_scores(prob, t, background=background) if prob is not None else {}
        for key in ("dice", "iou", "dice_foreground", "iou_foreground"):
            row[f"paper_{key}"] = paper.get(key, math.nan)
        row["target_voxels"] = int(np.count_nonzero(t))
        row["pred_voxels"] = int(np.count_nonzero(p))
        per_lesion, overlap = _lesions_and_overlap(p, t, spacing, None)
        for matching, prefix, column in _MATCHING_COLUMNS:
            detected, fp = _match(overlap, matching)
            counts = _detection_counts(detected, fp)
            row |= {f"{prefix}_{key}": counts[key] for key in ("tp", "fp", "fn", "f1")}
            per_lesion[column] = detected
        rows.append(row)
        lesion_tables.append(per_lesion)
        lesion_tables[-1].insert(0, "case", str(case_id))
    if not rows:
        raise ValueError("cases is empty: give (case_id, pred, target, prob, spacing) tuples")
    per_case = pd.DataFrame(rows)
    per_lesion = pd.concat(lesion_tables, ignore_index=True)
    return per_case, per_lesion


def per_case_scores(cases: Iterable[tuple[Any, ...]], *, progress: bool = True) -> pd.DataFrame:
    """The per-case table of :func:`evaluate_cases` (one row per case)."""
    return evaluate_cases(cases, progress=progress)[0]


#: the distances of :func:`evaluate_cases` as study tables name them, with their unit
DISTANCE_COLUMNS = {"hd95": "hd95_mm", "hd95_penalised": "hd95_penalised_mm"}
