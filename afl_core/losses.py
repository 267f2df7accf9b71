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
mean gradient magnitude of the mask (:mod:`afl_core.shape`).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from afl_core.shape import boundary_irregularity, check_mask, mean_gradient_magnitude

__all__ = [
    "VARIANTS",
    "GAMMA_TERMS",
    "LOSS_NAMES",
    "DEGENERATE_ALPHA",
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
DEGENERATE_ALPHA = 0.5

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
        raise ValueError(
            f"logits must be shaped (N, C, H, W) or (N, C, D, H, W), got {tuple(logits.shape)}"
        )
    if logits.shape[1] != channels:
        raise ValueError(
            f"expected {channels} logit channel(s), got logits of shape {tuple(logits.shape)}; "
            + ("variant='reference' takes (background, foreground) logits (N, 2, *S)"
               if channels == 2 else "binary losses take one foreground logit per voxel (N, 1, *S)")
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
        if not torch.isfinite(logits).all():
            raise ValueError(
                "logits contain NaN or Inf: the network diverged or its input has non-finite "
                "values; lower the learning rate or check the data normalisation"
            )
        if ((target != 0) & (target != 1)).any():
            found = torch.unique(target.detach().float().cpu())[:10].tolist()
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


def _check_options(variant: str, alpha: float | None, gamma: float | None, reduction: str,
                   gamma_terms: Iterable[str]) -> None:
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
def _adaptive_terms(target, variant, gamma_terms, dtype=torch.float32):
    """Per-sample ``(foreground weight, background weight, gamma)``, each ``(N,)``.

    The weights come from voxel counts, never as ``1 - alpha``: for a lesion of a few
    voxels in a large volume ``1 - (1 - f)`` would lose most of its digits.
    """
    if variant not in ("paper", "scale_aware"):
        raise ValueError(f"adaptive parameters exist for variants 'paper' and 'scale_aware', got {variant!r}")
    use_volume, use_smoothness = _gamma_switches(gamma_terms)
    voxels = target[0].numel()
    foreground = target.reshape(target.shape[0], -1).sum(dim=1, dtype=torch.float64)
    degenerate = (foreground == 0) | (foreground == voxels)
    neutral = torch.full_like(foreground, DEGENERATE_ALPHA)
    weight_fg = torch.where(degenerate, neutral, (voxels - foreground) / voxels).to(dtype)
    weight_bg = torch.where(degenerate, neutral, foreground / voxels).to(dtype)
    f = (foreground / voxels).to(dtype)
    gamma = torch.zeros_like(f)
    if variant == "paper":
        if use_volume:
            gamma = gamma + f
        if use_smoothness:
            gamma = gamma + mean_gradient_magnitude(target).to(dtype)
    else:
        if use_volume:
            gamma = gamma + torch.where(f > 0, -torch.log10(f.clamp_min(1e-30)), torch.zeros_like(f))
        if use_smoothness:
            gamma = gamma + (boundary_irregularity(target).to(dtype) - 1.0).clamp_min(0.0)
        gamma = gamma.clamp(0.0, SCALE_AWARE_MAX_GAMMA)
    return weight_fg, weight_bg, gamma


def adaptive_parameters(
    target: torch.Tensor,
    *,
    variant: str = "paper",
    gamma_terms: Sequence[str] = GAMMA_TERMS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(alpha, gamma)`` of A-FL, both float32 tensors of shape ``(N,)``.

    ``variant="paper"``:
        ``alpha = 1 - f`` and ``gamma = f + g`` (``f``: foreground fraction,
        ``g``: mean gradient magnitude). A sample with no foreground or no background
        gets ``alpha = DEGENERATE_ALPHA`` (gamma is then 0 or 1 by the formula).

    ``variant="scale_aware"`` (this project's own; gamma in ``[0, SCALE_AWARE_MAX_GAMMA]``):

        .. math::  \\gamma = \\operatorname{clip}\\big(\\log_{10}(1/f)
                   + \\max(r - 1, 0),\\; 0,\\; 5\\big)

        with ``r`` the :func:`~afl_core.shape.boundary_irregularity` (1 for a disc).
        The size term is 0.5 for an object filling 30 % of the image, 2 for 1 %, 3 for
        0.1 %: it grows as the object gets smaller, where the paper's ``f`` shrinks
        towards 0, and it sits in the range where focal loss is known to focus. The
        irregularity term adds about 0.5 to 2 for lobulated outlines. Alpha and the
        degenerate-mask fallback are the paper's; a sample without foreground gets
        ``gamma = 0`` (plain weighted cross-entropy).

    ``variant="reference"`` is computed batch-wide inside :func:`adaptive_focal_loss`.

    ``gamma_terms`` selects the parts of gamma for ablations: ``("volume",)`` keeps only
    the size term, ``("smoothness",)`` only the boundary term, ``()`` gives gamma = 0.
    """
    check_mask(target)
    alpha, _, gamma = _adaptive_terms(target, variant, gamma_terms)
    return alpha, gamma


def _focal_terms(logits: torch.Tensor, is_foreground: torch.Tensor, weight_fg, weight_bg, gamma) -> torch.Tensor:
    """Per-voxel alpha-weighted focal loss in log space (stable for any finite logit).

    With the signed logit ``s = x`` where ``t = 1`` and ``s = -x`` where ``t = 0``,
    ``p_t = sigmoid(s)``, ``log p_t = logsigmoid(s)``, ``log(1 - p_t) = log p_t - s`` and
    ``(1 - p_t)^gamma = exp(gamma * log(1 - p_t))``: no ``pow`` of a value near 0, so the
    gradient stays finite for ``gamma < 1`` too.
    """
    signed = torch.where(is_foreground, logits, -logits)
    log_pt = F.logsigmoid(signed)
    modulating = torch.exp(gamma * (log_pt - signed))
    alpha_t = torch.where(is_foreground, weight_fg, weight_bg)
    return -alpha_t * modulating * log_pt


def _weighted_focal(logits, is_foreground, weight_fg, weight_bg, gamma, reduction: str) -> torch.Tensor:
    """:func:`_focal_terms` per voxel, or their mean / sum through the fused kernel."""
    if reduction == "none":
        return _focal_terms(logits, is_foreground, weight_fg, weight_bg, gamma)
    scale = 1.0 / logits.numel() if reduction == "mean" else 1.0
    return _ReducedFocalLoss.apply(logits, is_foreground, weight_fg, weight_bg, gamma, scale)


class _ReducedFocalLoss(torch.autograd.Function):
    """Sum of :func:`_focal_terms` with its gradient computed in the same pass.

    The loss is the training bottleneck's neighbour, so the forward pass computes the
    gradient analytically from the intermediates it already has and the backward pass
    is one multiplication (``tests/test_losses.py`` checks it with ``gradcheck``):

    .. math::

        \\frac{\\partial \\ell}{\\partial s} = -\\alpha_t (1-p_t)^{\\gamma}
        \\big[(1 - p_t) - \\gamma\\, p_t \\log p_t\\big], \\qquad
        \\frac{\\partial \\ell}{\\partial x} = (2t - 1) \\frac{\\partial \\ell}{\\partial s}

    ``scale`` turns the sum into a mean (``1 / numel``) or leaves it (1).
    """

    @staticmethod
    def forward(ctx, logits, is_foreground, weight_fg, weight_bg, gamma, scale):
        signed = torch.where(is_foreground, logits, -logits)
        log_pt = F.logsigmoid(signed)
        log_one_minus_pt = signed.neg_().add_(log_pt)  # log(1 - p_t), reusing the buffer
        modulating = torch.exp(gamma * log_one_minus_pt)
        # d loss / d logits carries the sign (2t - 1); fold it into the class weight.
        signed_weight = torch.where(is_foreground, -weight_fg * scale, weight_bg * scale)
        weighted = modulating.mul_(signed_weight)  # -(2t-1) * alpha_t * (1-p_t)^gamma * scale
        loss = -weighted.abs().mul_(log_pt).sum()  # weights are >= 0: |weighted| = alpha_t * ...
        if ctx.needs_input_grad[0]:
            one_minus_pt = log_one_minus_pt.exp_()
            focus = log_pt.exp().mul_(log_pt).mul_(gamma)  # gamma * p_t * log p_t
            ctx.save_for_backward(one_minus_pt.sub_(focus).mul_(weighted))
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (grad_logits,) = ctx.saved_tensors
        return grad_logits * grad_output, None, None, None, None, None


def _reference_loss(logits, target, alpha, gamma, gamma_terms, check_values, reduction) -> torch.Tensor:
    """The authors' computation: batch statistics, first-sample smoothness, two channels."""
    use_volume, use_smoothness = _gamma_switches(gamma_terms)
    with torch.no_grad():
        fg = target.sum(dtype=torch.float64)
        fg_fraction = (fg / target.numel()).to(logits.dtype)
        if check_values is None:
            check_values = _values_checked_by_default(logits)
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
    is_foreground = torch.cat([target <= 0, target > 0], dim=1)  # the one-hot target [1 - t, t]
    # MONAI's sigmoid focal loss has no alpha: every element of channel c has weight w_c,
    # whatever its label, so the "foreground" and "background" weights are both w_c.
    weights = weights.view(1, 2, *([1] * (logits.ndim - 2)))
    return _weighted_focal(logits, is_foreground, weights, weights, gamma, reduction)


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

    ``variant="reference"``: ``gamma = f_batch + g_first`` (foreground fraction of the
    whole batch plus the mean gradient magnitude of the first sample's mask only), a
    MONAI-style sigmoid focal loss (no alpha) on the one-hot target ``[1 - t, t]``, each
    channel multiplied by ``[bg/(fg+bg), fg/(fg+bg)]``, mean over all ``N * 2 * |S|``
    elements. The rare foreground channel gets the small weight, the opposite of the
    paper's text. A batch without foreground is undefined there: ``ValueError`` when
    values are checked, otherwise a NaN loss. A given ``alpha`` sets the channel weights
    to ``[1 - alpha, alpha]`` (then a batch without foreground is defined). With
    ``reduction="sum"`` the elements are summed (MONAI's "sum" first averages space).

    The statistics come from the target only (no gradient flows through them) and stay
    on the device: no host synchronisation unless values are checked. Computed in float32
    whatever the autocast dtype of the logits.
    """
    _check_options(variant, alpha, gamma, reduction, gamma_terms)
    validate_inputs(logits, target, channels=2 if variant == "reference" else 1,
                    check_values=check_values)
    dtype = _compute_dtype(logits)
    logits, target = logits.to(dtype), target.to(dtype)
    if variant == "reference":
        return _reference_loss(logits, target, alpha, gamma, gamma_terms, check_values, reduction)
    if alpha is None or gamma is None:
        weight_fg, weight_bg, adaptive_gamma = (
            _per_sample(v, logits.ndim) for v in _adaptive_terms(target, variant, gamma_terms, dtype)
        )
        gamma = adaptive_gamma if gamma is None else gamma
    if alpha is not None:
        weight_fg, weight_bg = alpha, 1.0 - alpha
    return _weighted_focal(logits, target > 0, weight_fg, weight_bg, gamma, reduction)


class AdaptiveFocalLoss(nn.Module):
    """``nn.Module`` form of :func:`adaptive_focal_loss` (same keywords)."""

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

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return adaptive_focal_loss(
            logits, target, variant=self.variant, alpha=self.alpha, gamma=self.gamma,
            reduction=self.reduction, gamma_terms=self.gamma_terms, check_values=self.check_values,
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
