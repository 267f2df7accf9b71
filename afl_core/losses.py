"""Adaptive Focal Loss (A-FL) and the seven baseline losses it is compared with.

One contract for every loss (as segmentation-models-pytorch's ``mode="binary"``):
``loss(logits, target)`` with logits and target shaped ``(N, 1, *S)``, ``S`` two- or
three-dimensional, target holding 0/1. Only A-FL's ``variant="reference"`` differs: it
takes two-channel logits ``(N, 2, *S)`` (background, foreground) as the authors' code.

Focal loss (Lin et al. 2017) per voxel, with ``p = sigmoid(x)`` and ``t`` the label:

.. math::

    \\ell = -\\big[\\alpha\\, t\\, (1-p)^{\\gamma} \\log p
                 + (1-\\alpha)(1-t)\\, p^{\\gamma} \\log(1-p)\\big]

A-FL (Islam et al. 2024) makes ``alpha`` and ``gamma`` functions of each sample's mask:
``alpha = 1 - f`` and ``gamma = f + g`` with ``f`` the foreground fraction and ``g`` the
mean gradient magnitude of the mask (:mod:`afl_core.shape`). This project's
``variant="scale_aware"`` takes gamma from each lesion's physical size and outline instead
(``spacing=`` in mm) and a fixed alpha (:func:`adaptive_parameters`).

Every variant evaluates the one formula of :func:`_focal_parts`; the loss's gradient is
derived from it by hand and computed in the same pass (:class:`_FusedFocalLoss`).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from afl_core.shape import check_mask, lesion_shapes, mean_gradient_magnitude

__all__ = [
    "VARIANTS",
    "GAMMA_TERMS",
    "LOSS_NAMES",
    "DEGENERATE_ALPHA",
    "SCALE_AWARE_ALPHA",
    "SCALE_AWARE_REFERENCE_DIAMETER",
    "SCALE_AWARE_MAX_SIZE_GAMMA",
    "SCALE_AWARE_MAX_GAMMA",
    "validate_inputs",
    "adaptive_parameters",
    "adaptive_focal_loss",
    "AdaptiveFocalLoss",
    "get_loss",
]

VARIANTS = ("paper", "reference", "scale_aware")
GAMMA_TERMS = ("volume", "smoothness")
LOSS_NAMES = ("ce", "dice", "iou", "tversky", "focal", "dice_ce", "dice_focal", "afl")
REDUCTIONS = ("mean", "sum", "none")

#: alpha used for a sample whose mask has no foreground (or no background), where the
#: paper's ``alpha = 1 - f`` would be 1 (or 0) and silence one class completely: on a
#: lesion-free slice false positives would cost nothing. 0.5 weighs both classes equally.
#: This project's choice, not the paper's (notebook 03, section 1).
DEGENERATE_ALPHA = 0.5

#: the scale-aware variant's foreground weight (background: 1 - it), the same for every
#: sample; why 0.7 is in :func:`adaptive_parameters`.
SCALE_AWARE_ALPHA = 0.7

#: equivalent diameter (mm) at which the scale-aware size term reaches 0.
SCALE_AWARE_REFERENCE_DIAMETER = 200.0

#: cap of the scale-aware size term, reached at an equivalent diameter of 2 mm; a sample
#: without lesion gets it too (the limit of a vanishing lesion).
SCALE_AWARE_MAX_SIZE_GAMMA = 4.0

#: upper bound of the scale-aware gamma (focal loss is rarely run above 5).
SCALE_AWARE_MAX_GAMMA = 5.0


def _values_checked_by_default(tensor: torch.Tensor) -> bool:
    # Checking values needs their content on the host: free on the CPU, a device sync
    # (a stall of the training step) on an accelerator.
    return tensor.device.type == "cpu"


def validate_inputs(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    channels: int = 1,
    check_values: bool | None = None,
) -> None:
    """Raise a ``ValueError`` that says what to fix when ``logits``/``target`` do not fit.

    Shapes are always checked. Values (finite logits, labels in {0, 1}) are checked when
    ``check_values`` is True, or by default when the tensors live on the CPU; on a GPU
    that check would stall every step, so it is left to the training loop's NaN check.
    """
    for name, tensor in (("logits", logits), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits must be shaped (N, C, H, W) or (N, C, D, H, W), got {tuple(logits.shape)}")
    if logits.shape[1] != channels:
        raise ValueError(
            f"expected {channels} logit channel(s), got logits of shape {tuple(logits.shape)}; "
            + (
                "variant='reference' takes (background, foreground) logits (N, 2, *S)"
                if channels == 2
                else "binary losses take one foreground logit per voxel (N, 1, *S)"
            )
        )
    if logits.shape[0] == 0:
        raise ValueError("the batch is empty (N = 0): pass at least one sample")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
            f"expected a binary mask of shape {expected}"
        )
    if check_values is None:
        check_values = _values_checked_by_default(logits)
    if check_values:
        _check_values(logits.detach(), target.detach())


def _foreground(target: torch.Tensor) -> torch.Tensor:
    """``target > 0`` as 0/1 in ``target``'s dtype, in one pass (comparing, then converting
    a bool tensor, costs five times more on the CPU)."""
    target = target.detach()
    return torch.gt(target, 0, out=torch.empty_like(target))


def _check_values(logits: torch.Tensor, target: torch.Tensor, foreground: torch.Tensor | None = None) -> None:
    """Finite logits and labels in {0, 1}, in one reduction each and no temporary tensor.

    A NaN or Inf anywhere makes the sum of the logits non-finite (IEEE arithmetic
    propagates them). The labels are 0 and 1 exactly when they equal ``target > 0``
    (:func:`_foreground`, which the loss computes anyway and passes in); NaN equals
    nothing. A failed quick test is confirmed element by element before raising (a huge
    finite sum can overflow), so the quick tests only decide how fast a good batch passes.
    """
    if not torch.isfinite(logits.sum(dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)):
        if not torch.isfinite(logits).all():
            raise ValueError(
                "logits contain NaN or Inf: the network diverged or its input has non-finite "
                "values; lower the learning rate or check the data normalisation"
            )
    if foreground is None:
        foreground = _foreground(target)
    if not torch.equal(target, foreground) and ((target != 0) & (target != 1)).any():
        found = torch.unique(target.float().cpu())[:10].tolist()
        raise ValueError(
            f"target must hold only 0 and 1, found values {found}; binarise the labels "
            "(e.g. target = (label > 0).float())"
        )


def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape per-sample values (N,) to broadcast over (N, C, *S)."""
    return values.view(-1, *([1] * (ndim - 1)))


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    # float32 under autocast (bf16/fp16 logits); float64 stays float64 (gradcheck).
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _check_options(
    variant: str, alpha: float | None, gamma: float | None, reduction: str, gamma_terms: Iterable[str]
) -> None:
    """The keywords shared by :func:`adaptive_focal_loss` and :class:`AdaptiveFocalLoss`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown A-FL variant {variant!r}; choose from {VARIANTS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose from {REDUCTIONS}")
    _gamma_switches(gamma_terms)
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (the foreground's share of the weight), got {alpha}")
    if gamma is not None and not float(gamma) >= 0.0:
        raise ValueError(f"gamma must be >= 0 (0 is weighted cross-entropy), got {gamma}")


def _gamma_switches(gamma_terms: Iterable[str]) -> tuple[bool, bool]:
    terms = tuple(gamma_terms)
    unknown = set(terms) - set(GAMMA_TERMS)
    if unknown:
        raise ValueError(f"unknown gamma term(s) {sorted(unknown)}; choose from {GAMMA_TERMS}")
    return "volume" in terms, "smoothness" in terms


@torch.no_grad()
def _adaptive_terms(target, variant, gamma_terms, dtype=torch.float32, spacing=None):
    """Per-sample ``(foreground weight, background weight, gamma)``, each ``(N,)``.

    The paper's weights come from voxel counts, never as ``1 - alpha``: for a lesion of a
    few voxels in a large volume ``1 - (1 - f)`` would lose most of its digits.
    """
    if variant not in ("paper", "scale_aware"):
        raise ValueError(f"adaptive parameters exist for variants 'paper' and 'scale_aware', got {variant!r}")
    use_volume, use_smoothness = _gamma_switches(gamma_terms)
    if variant == "scale_aware":
        gamma = _scale_aware_gamma(target, spacing, use_volume, use_smoothness).to(target.device, dtype)
        return torch.full_like(gamma, SCALE_AWARE_ALPHA), torch.full_like(gamma, 1.0 - SCALE_AWARE_ALPHA), gamma
    voxels = target[0].numel()
    # Counts of 0/1 values are exact in float32 up to 2^24 voxels per sample (4x faster).
    count_dtype = torch.float64 if target.dtype == torch.float64 else torch.float32
    foreground = target.reshape(target.shape[0], -1).sum(dim=1, dtype=count_dtype).double()
    degenerate = (foreground == 0) | (foreground == voxels)
    neutral = torch.full_like(foreground, DEGENERATE_ALPHA)
    weight_fg = torch.where(degenerate, neutral, (voxels - foreground) / voxels).to(dtype)
    weight_bg = torch.where(degenerate, neutral, foreground / voxels).to(dtype)
    gamma = torch.zeros_like(weight_fg)
    if use_volume:
        gamma = gamma + (foreground / voxels).to(dtype)
    if use_smoothness:
        gamma = gamma + mean_gradient_magnitude(target).to(dtype)
    return weight_fg, weight_bg, gamma


def _scale_aware_gamma(target, spacing, use_volume: bool, use_smoothness: bool) -> torch.Tensor:
    """The scale-aware gamma per sample, float64 on the CPU (see :func:`adaptive_parameters`)."""
    if not (use_volume or use_smoothness):
        return torch.zeros(target.shape[0], dtype=torch.float64)
    values = []
    for lesions in lesion_shapes(target, spacing):
        if lesions.size.size == 0:  # the limit of a vanishing lesion: no jump at the first voxel
            values.append(SCALE_AWARE_MAX_SIZE_GAMMA if use_volume else 0.0)
            continue
        per_lesion = np.zeros_like(lesions.size)
        if use_volume:
            size_term = 2.0 * np.log10(SCALE_AWARE_REFERENCE_DIAMETER / lesions.diameter)
            per_lesion += np.clip(size_term, 0.0, SCALE_AWARE_MAX_SIZE_GAMMA)
        if use_smoothness:
            per_lesion += np.maximum(lesions.irregularity - 1.0, 0.0)
        values.append(np.average(per_lesion, weights=lesions.size))
    return torch.from_numpy(np.clip(np.asarray(values, dtype=np.float64), 0.0, SCALE_AWARE_MAX_GAMMA))


def adaptive_parameters(
    target: torch.Tensor,
    *,
    variant: str = "paper",
    gamma_terms: Sequence[str] = GAMMA_TERMS,
    spacing=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(alpha, gamma)`` of A-FL, both float32 tensors of shape ``(N,)``.

    ``variant="paper"``:
        ``alpha = 1 - f`` and ``gamma = f + g`` (``f``: foreground fraction,
        ``g``: mean gradient magnitude), both counted in voxels of the whole canvas.
        A sample with no foreground or no background gets ``alpha = DEGENERATE_ALPHA``
        (0.5, this project's choice: the paper's formula gives alpha 1 or 0 there, which
        silences one class); gamma is then 0 or 1 by the formula. ``spacing`` is ignored.

    ``variant="scale_aware"`` (this project's own): each lesion ``k`` (connected component,
    :func:`afl_core.shape.lesion_shapes`) has an equivalent diameter ``d_k`` in mm (from
    ``spacing``, mm per spatial axis in array order; None is 1 mm) and an outline
    irregularity ``r_k`` (about 1 for a disc or ball, measured in mm, so anisotropic voxels
    do not read as rough). With ``D = SCALE_AWARE_REFERENCE_DIAMETER = 200`` mm,

        .. math::

            \\gamma_k = \\operatorname{clip}\\big(2 \\log_{10}(D / d_k),\\, 0,\\, 4\\big)
                        + \\max(r_k - 1,\\, 0), \\qquad
            \\gamma = \\operatorname{clip}\\Big(\\frac{\\sum_k V_k \\gamma_k}{\\sum_k V_k},\\, 0,\\, 5\\Big)

        (``V_k`` the lesion's area or volume), and ``alpha = SCALE_AWARE_ALPHA = 0.7`` for
        every sample.

        *Size.* ``2 log10(D/d)`` is ``log10`` of the ratio of a 200 mm disc's area to the
        lesion's: a fixed physical reference instead of the canvas, so padding or cropping
        the image changes nothing (an r = 8 disc, d = 16.3 mm: size term 2.18, gamma with its
        outline term 2.20, on 128^2, 256^2 and 512^2 alike). The size term of a 1 ml lesion
        (d = 12.4 mm) is 2.41, of 10 ml (26.7 mm) 1.75, of 100 ml 1.08, of a 10 mm disc
        2.6, capped at ``SCALE_AWARE_MAX_SIZE_GAMMA = 4`` (d <= 2 mm, about a voxel).
        Measured gamma, outline included, of 1 ml / 10 ml balls: 2.47 / 1.80 on 1 mm voxels,
        2.45 / 1.79 on 0.5 x 0.5 x 3 mm, 2.46 / 1.79 on 0.5 x 0.5 x 3.6 mm.

        *Several lesions.* Per lesion, then averaged weighted by size: two discs read as
        two regular lesions (not one irregular object), and a speck of label noise beside a
        large lesion moves gamma by its share of the volume only.

        *No lesion.* A lesion-free sample gets the cap 4, the limit of a vanishing lesion,
        so an empty slice and one with a single voxel differ only by that voxel's outline
        term (0; a voxel reads ``r < 1``): no jump. Measured: the loss of a false positive
        at p = 0.9 on an otherwise correct empty 64 x 64 slice is the same (to 1e-6
        relative) as on that slice with one true voxel added.

        *Alpha.* For any gamma, the expected loss of a voxel that is lesion with
        probability ``q`` is minimised by ``p > 1/2`` exactly when ``q > 1 - alpha`` (the
        two focal factors are equal at ``p = 1/2``), so alpha sets the decision threshold
        of a well-trained network. The paper's ``alpha = 1 - f`` puts it at ``q = f``: an
        r = 8 disc on 256 x 256 (f = 0.003) makes a false positive cost 0.3 % of a false
        negative. The Dice-optimal threshold of a calibrated posterior is about half the
        best reachable Dice (Lipton et al. 2014), i.e. 0.25-0.45 for small lesions. Measured
        on discs of radius 2, 4 and 8 mm with posteriors ``sigmoid((R - |x|)/w)``, w = 0.5,
        1, 2 mm (0.5 mm grid): the best fixed alpha lies between 0.56 and 0.78; alpha = 0.7
        is within 0.016 Dice of the best in all nine cases, ``1 - f`` loses 0.14-0.44 Dice.
        A dataset-level value is one ``alpha=`` away.

        Cost: the lesions are measured on the host (SciPy), so on a GPU the target is
        copied to the CPU (one sync per step): 8 ms for 16 slices of 256 x 256, 1-35 ms per
        3D lesion of 5-40 mm (:func:`afl_core.shape.lesion_shapes`); about 3x the time of
        smp's focal loss on a 2D CPU batch (``benchmarks/loss_overhead.py``).

    ``variant="reference"`` is computed batch-wide inside :func:`adaptive_focal_loss`.

    ``gamma_terms`` selects the parts of gamma for ablations: ``("volume",)`` keeps only
    the size term, ``("smoothness",)`` only the boundary term, ``()`` gives gamma = 0.
    """
    check_mask(target)
    alpha, _, gamma = _adaptive_terms(target, variant, gamma_terms, spacing=spacing)
    return alpha, gamma


def _on_device(value, like: torch.Tensor) -> torch.Tensor:
    """A number as a 0-d tensor on ``like``'s device (a fill, not a host-to-device copy)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.full((), float(value), dtype=like.dtype, device=like.device)


def _focal_parts(logits: torch.Tensor, foreground: torch.Tensor, weight_fg, weight_bg, gamma):
    """The focal loss of every variant, as two factors and the intermediates its gradient
    reuses: ``(-alpha_t (1 - p_t)^gamma, log p_t, 2t - 1, s, log(1 - p_t))``; the loss per
    voxel is the product of the first two (:func:`_focal_terms`).

    With ``t`` the label (``foreground``: 0/1 floats), the signed logit ``s = (2t - 1) x``
    (``x`` where ``t = 1``, ``-x`` where ``t = 0``), ``p_t = sigmoid(s)``,
    ``log p_t = logsigmoid(s)``, ``log(1 - p_t) = log p_t - s`` and
    ``alpha_t = w_bg + t (w_fg - w_bg)``:

    .. math::  \\ell = -\\alpha_t\\, \\exp\\big(\\gamma \\log(1 - p_t)\\big) \\log p_t

    which is ``-alpha_t (1 - p_t)^gamma log p_t``, stable for any finite logit, with no
    ``pow`` of a value near 0 (finite gradient for ``gamma < 1`` too). Arithmetic on the
    0/1 label rather than ``torch.where`` (several times slower on the CPU), and no step
    writes into a tensor that autograd keeps.
    """
    weight_fg, weight_bg, gamma = (_on_device(v, logits) for v in (weight_fg, weight_bg, gamma))
    sign = torch.addcmul(_on_device(-1.0, logits), foreground, _on_device(2.0, logits))
    signed = logits * sign
    log_pt = F.logsigmoid(signed)
    log_one_minus_pt = log_pt - signed
    minus_alpha_t = torch.addcmul(-weight_bg, foreground, weight_bg - weight_fg)
    minus_weighted = (log_one_minus_pt * gamma).exp_() * minus_alpha_t
    return minus_weighted, log_pt, sign, signed, log_one_minus_pt


def _focal_terms(logits: torch.Tensor, foreground: torch.Tensor, weight_fg, weight_bg, gamma) -> torch.Tensor:
    """The focal loss per voxel, ``-alpha_t (1 - p_t)^gamma log p_t`` (:func:`_focal_parts`)."""
    minus_weighted, log_pt, *_ = _focal_parts(logits, foreground, weight_fg, weight_bg, gamma)
    return minus_weighted * log_pt


class _FusedFocalLoss(torch.autograd.Function):
    """:func:`_focal_terms` (per voxel, or their mean / sum) with the gradient computed in
    the same pass from the intermediates of :func:`_focal_parts`; the backward pass is one
    multiplication. Differentiating the formula by hand (``tests/test_losses.py`` checks it
    against autograd of :func:`_focal_terms` and with ``gradcheck``), with
    ``dp_t/ds = p_t (1 - p_t)``:

    .. math::

        \\frac{\\partial \\ell}{\\partial s} = -\\alpha_t (1-p_t)^{\\gamma}
        \\big[(1 - p_t) - \\gamma\\, p_t \\log p_t\\big], \\qquad
        \\frac{\\partial \\ell}{\\partial x} = (2t - 1) \\frac{\\partial \\ell}{\\partial s}
    """

    @staticmethod
    def forward(ctx, logits, foreground, weight_fg, weight_bg, gamma, reduction):
        minus_weighted, log_pt, sign, signed, log_one_minus_pt = _focal_parts(
            logits, foreground, weight_fg, weight_bg, gamma
        )
        ctx.scale = 1.0 / logits.numel() if reduction == "mean" else 1.0
        if ctx.needs_input_grad[0]:
            # In the buffers of the intermediates, no longer needed: no new tensor.
            gamma_pt = signed.sigmoid_().mul_(_on_device(gamma, logits))  # gamma p_t
            bracket = log_one_minus_pt.exp_().addcmul_(gamma_pt, log_pt, value=-1.0)  # (1-p_t) - gamma p_t log p_t
            ctx.save_for_backward(bracket.mul_(minus_weighted).mul_(sign))
        loss = minus_weighted.mul_(log_pt)  # the last use of both factors
        return loss if reduction == "none" else loss.sum() * ctx.scale

    @staticmethod
    def backward(ctx, grad_output):
        (grad_logits,) = ctx.saved_tensors
        return grad_logits * (grad_output * ctx.scale), None, None, None, None, None


def _reference_loss(logits, target, alpha, gamma, gamma_terms, check_values, reduction) -> torch.Tensor:
    """The authors' computation: batch statistics, first-sample smoothness, two channels."""
    use_volume, use_smoothness = _gamma_switches(gamma_terms)
    with torch.no_grad():
        fg = target.sum(dtype=torch.float64)
        fg_fraction = (fg / target.numel()).to(logits.dtype)
        if check_values and alpha is None and fg.item() == 0:
            raise ValueError(
                "variant='reference' is undefined for a batch without foreground voxels "
                "(the authors' channel weights divide by the foreground count); use "
                "variant='paper', or sample batches that contain lesions"
            )
        if gamma is None:
            gamma = torch.zeros((), device=logits.device)
            if use_volume:
                gamma = gamma + fg_fraction
            if use_smoothness:
                gamma = gamma + mean_gradient_magnitude(target[:1])[0]
        if alpha is None:
            weights = torch.stack([(target.numel() - fg) / target.numel(), fg_fraction]).to(logits.dtype)
            # Undefined batch (no foreground): a NaN loss the training loop reports, not a sync.
            weights = torch.where(fg > 0, weights, torch.full_like(weights, math.nan))
        else:
            # [1 - alpha, alpha] built on the device: a host-to-device copy would sync.
            channel = torch.arange(2, device=logits.device, dtype=logits.dtype)
            weights = (1.0 - alpha) + channel * (2.0 * alpha - 1.0)
    lesion = _foreground(target)
    foreground = torch.cat([1.0 - lesion, lesion], dim=1)  # the one-hot target [1 - t, t]
    # MONAI's sigmoid focal loss has no alpha: every element of channel c has weight w_c,
    # whatever its label, so the "foreground" and "background" weights are both w_c.
    weights = weights.view(1, 2, *([1] * (logits.ndim - 2)))
    return _FusedFocalLoss.apply(logits, foreground, weights, weights, gamma, reduction)


def adaptive_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    variant: str = "paper",
    alpha: float | None = None,
    gamma: float | None = None,
    reduction: str = "mean",
    gamma_terms: Sequence[str] = GAMMA_TERMS,
    check_values: bool | None = None,
    spacing=None,
) -> torch.Tensor:
    """Adaptive Focal Loss.

    Args:
        logits: ``(N, 1, *S)`` raw scores (``(N, 2, *S)`` for ``variant="reference"``).
        target: ``(N, 1, *S)`` binary mask.
        variant: ``"paper"`` (the formula as published), ``"reference"`` (what the authors'
            code computes) or ``"scale_aware"`` (this project's gamma that focuses on
            small, irregular objects). See :func:`adaptive_parameters`.
        alpha, gamma: fixed values replacing the adaptive ones. With both given the loss
            is the ordinary focal loss, equal to torchvision's ``sigmoid_focal_loss``.
        reduction: ``"mean"`` over every voxel of the batch, ``"sum"``, or ``"none"``.
        gamma_terms: which adaptive terms make up gamma (ablations).
        check_values: check for non-finite logits and non-binary labels (default: on CPU).
        spacing: voxel size in mm per spatial axis, in array order: None (1 mm), ``len(S)``
            numbers for the batch, or ``(N, len(S))`` one row per sample. Only
            ``variant="scale_aware"`` uses it (the others count voxels, as the paper).

    ``variant="reference"``: ``gamma = f_batch + g_first`` (foreground fraction of the
    whole batch plus the mean gradient magnitude of the first sample's mask only), a
    MONAI-style sigmoid focal loss (no alpha) on the one-hot target ``[1 - t, t]``, each
    channel multiplied by ``[bg/(fg+bg), fg/(fg+bg)]``, mean over all ``N * 2 * |S|``
    elements. The rare foreground channel gets the small weight, the opposite of the
    paper's text. A batch without foreground is undefined there: ``ValueError`` when
    values are checked, otherwise a NaN loss. A given ``alpha`` sets the channel weights
    to ``[1 - alpha, alpha]`` (then a batch without foreground is defined). With
    ``reduction="sum"`` the elements are summed (MONAI's "sum" first averages space).

    The statistics come from the target only (no gradient flows through them). Those of
    ``paper`` and ``reference`` stay on the device: no host synchronisation unless values
    are checked. ``scale_aware`` labels lesions on the host (one copy of the target to the
    CPU per call on an accelerator). Computed in float32 whatever the autocast dtype of the
    logits.
    """
    _check_options(variant, alpha, gamma, reduction, gamma_terms)
    validate_inputs(logits, target, channels=2 if variant == "reference" else 1, check_values=False)
    dtype = _compute_dtype(logits)
    logits, target = logits.to(dtype), target.to(dtype)
    if check_values is None:
        check_values = _values_checked_by_default(logits)
    if variant == "reference":
        if check_values:
            _check_values(logits.detach(), target)
        return _reference_loss(logits, target, alpha, gamma, gamma_terms, check_values, reduction)
    foreground = _foreground(target)
    if check_values:
        _check_values(logits.detach(), target, foreground)
    if alpha is None or gamma is None:
        terms = gamma_terms if gamma is None else ()  # a given gamma: measure nothing for it
        weight_fg, weight_bg, adaptive_gamma = (
            _per_sample(v, logits.ndim) for v in _adaptive_terms(target, variant, terms, dtype, spacing)
        )
        gamma = adaptive_gamma if gamma is None else gamma
    if alpha is not None:
        weight_fg, weight_bg = alpha, 1.0 - alpha
    return _FusedFocalLoss.apply(logits, foreground, weight_fg, weight_bg, gamma, reduction)


class AdaptiveFocalLoss(nn.Module):
    """``nn.Module`` form of :func:`adaptive_focal_loss` (same keywords).

    ``forward(logits, target, spacing=None)``; :attr:`uses_spacing` tells a training loop
    whether to pass the batch's voxel sizes (True for ``variant="scale_aware"``).
    """

    def __init__(
        self,
        variant: str = "paper",
        *,
        alpha: float | None = None,
        gamma: float | None = None,
        reduction: str = "mean",
        gamma_terms: Sequence[str] = GAMMA_TERMS,
        check_values: bool | None = None,
    ) -> None:
        super().__init__()
        _check_options(variant, alpha, gamma, reduction, gamma_terms)
        self.variant = variant
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.gamma_terms = tuple(gamma_terms)
        self.check_values = check_values

    @property
    def uses_spacing(self) -> bool:
        """Whether the loss depends on the voxel size (``spacing=`` in :meth:`forward`)."""
        return self.variant == "scale_aware" and self.gamma is None and bool(self.gamma_terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, spacing=None) -> torch.Tensor:
        return adaptive_focal_loss(
            logits,
            target,
            variant=self.variant,
            alpha=self.alpha,
            gamma=self.gamma,
            reduction=self.reduction,
            gamma_terms=self.gamma_terms,
            check_values=self.check_values,
            spacing=spacing,
        )

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, alpha={self.alpha}, gamma={self.gamma}, gamma_terms={self.gamma_terms}"


class _BinaryLoss(nn.Module):
    """A weighted sum of segmentation-models-pytorch losses behind the shared contract:
    input checks, float32 computation under autocast, ``(N, 1, *S)`` in, scalar out."""

    def __init__(self, name: str, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.name = name
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList([loss for _, loss in terms])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        validate_inputs(logits, target)
        dtype = _compute_dtype(logits)
        logits, target = logits.to(dtype), target.to(dtype)
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.terms))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights={self.weights}"


def get_loss(name: str, **kwargs) -> nn.Module:
    """The loss called ``name``, one of :data:`LOSS_NAMES`, as an ``nn.Module``.

    ========== ================================================================
    ce         binary cross-entropy with logits
    dice       smp ``DiceLoss("binary")`` (soft Dice over the batch)
    iou        smp ``JaccardLoss("binary")``
    tversky    smp ``TverskyLoss("binary", alpha=0.3, beta=0.7)``: false negatives
               cost more than false positives (Salehi et al. 2017), as suits small lesions
    focal      smp ``FocalLoss("binary", gamma=2)`` without alpha (MONAI ``FocalLoss``'s
               default, which the authors' baseline used; Lin et al. add alpha=0.25)
    dice_ce    ``1.0 * dice + 1.0 * ce`` (MONAI ``DiceCELoss``'s default weights)
    dice_focal ``1.0 * dice + 1.0 * focal`` (MONAI ``DiceFocalLoss``'s default weights)
    afl        :class:`AdaptiveFocalLoss`; ``kwargs`` go to it (``variant``, ...)
    ========== ================================================================

    The overlap losses (dice, iou, tversky) are computed over the whole batch on the
    foreground: a batch without any foreground voxel gives them zero loss and zero
    gradient, so false positives on lesion-free slices cost nothing there. The authors'
    baselines were MONAI losses (Dice with squared predictions per sample, background
    included; Tversky with alpha = beta = 0.5, i.e. Dice): numbers from this registry
    are comparable with each other, not digit for digit with the paper's table.
    """
    if name == "afl":
        return AdaptiveFocalLoss(**kwargs)
    if kwargs:
        raise ValueError(f"loss {name!r} takes no options, got {sorted(kwargs)}")
    from segmentation_models_pytorch import losses as smp_losses

    def bce():
        return nn.BCEWithLogitsLoss()

    def dice():
        return smp_losses.DiceLoss("binary", from_logits=True)

    def focal():
        return smp_losses.FocalLoss("binary", gamma=2.0)

    builders = {
        "ce": lambda: [(1.0, bce())],
        "dice": lambda: [(1.0, dice())],
        "iou": lambda: [(1.0, smp_losses.JaccardLoss("binary", from_logits=True))],
        "tversky": lambda: [(1.0, smp_losses.TverskyLoss("binary", from_logits=True, alpha=0.3, beta=0.7))],
        "focal": lambda: [(1.0, focal())],
        "dice_ce": lambda: [(1.0, dice()), (1.0, bce())],
        "dice_focal": lambda: [(1.0, dice()), (1.0, focal())],
    }
    if name not in builders:
        raise ValueError(f"unknown loss {name!r}; choose from {LOSS_NAMES}")
    return _BinaryLoss(name, builders[name]())
