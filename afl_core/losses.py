"""Adaptive Focal Loss (A-FL) and the seven baseline losses it is compared with.

Read top to bottom: :func:`focal_loss` is the formula every variant evaluates; A-FL only
chooses its ``alpha`` and ``gamma`` from each ground-truth mask, one rule per variant
(:func:`paper_parameters`, :func:`scale_aware_parameters`, :func:`reference_parameters`),
each declared once in :data:`VARIANTS`. :class:`AdaptiveFocalLoss` puts the two together.

One contract for every loss (as segmentation-models-pytorch's ``mode="binary"``):
``loss(logits, target)`` with logits and target shaped ``(N, 1, *S)``, ``S`` two- or
three-dimensional, target holding 0/1. Only ``variant="reference"`` takes two-channel
logits ``(N, 2, *S)`` (background, foreground), as the authors' code.

Why each constant has its value, with the measurements: ``docs/scale_aware.md`` and
notebook 03.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from afl_core.shape import check_mask, lesion_shapes, mean_gradient_magnitude

__all__ = [
    "focal_loss",
    "paper_parameters",
    "scale_aware_parameters",
    "reference_parameters",
    "Variant",
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

GAMMA_TERMS = ("volume", "smoothness")
LOSS_NAMES = ("ce", "dice", "iou", "tversky", "focal", "dice_ce", "dice_focal", "afl")
REDUCTIONS = ("mean", "sum", "none")


def focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="mean"):
    r"""Focal loss (Lin et al. 2017) of binary logits: the formula of every A-FL variant.

    With ``p = sigmoid(x)`` and ``p_t`` the probability given to the true class
    (``p`` where ``t = 1``, ``1 - p`` where ``t = 0``):

    .. math::

        \ell = -\alpha_t\, (1 - p_t)^{\gamma} \log p_t, \qquad
        \alpha_t = \alpha \text{ where } t = 1, \; 1 - \alpha \text{ where } t = 0

    ``gamma = 0`` is class-weighted cross-entropy. Written with ``s = x`` where ``t = 1`` and
    ``s = -x`` where ``t = 0`` (so ``p_t = sigmoid(s)``), both logarithms are
    ``logsigmoid``: finite for any finite logit, also its gradient for ``gamma < 1``.

    Args:
        logits: raw scores, any shape.
        target: 0/1 labels, the shape of ``logits``.
        alpha: the weight of the foreground (a number, or a tensor that broadcasts to
            ``logits``, e.g. one value per sample shaped ``(N, 1, 1, 1)``); ``None`` weighs
            both classes 1.
        gamma: the focusing exponent (a number or a broadcasting tensor), ``>= 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (the loss per element).

    Returns:
        The loss, a scalar or shaped like ``logits``.
    """
    lesion = target > 0
    signed = torch.where(lesion, logits, -logits)
    log_pt = F.logsigmoid(signed)
    focusing = torch.exp(gamma * F.logsigmoid(-signed))  # (1 - p_t) ** gamma
    loss = -focusing * log_pt
    if alpha is not None:
        loss = loss * torch.where(lesion, alpha, 1 - alpha)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


# --------------------------------------------------------------------------- the variants' rules

#: alpha of a sample with no foreground (or no background), where the paper's ``1 - f`` would
#: be 1 (or 0) and silence one class: on a lesion-free slice false positives would cost
#: nothing. 0.5 weighs both classes equally. This project's choice, not the paper's.
DEGENERATE_ALPHA = 0.5
#: the scale-aware variant's foreground weight, the same for every sample.
SCALE_AWARE_ALPHA = 0.7
#: equivalent diameter (mm) at which the scale-aware size term reaches 0.
SCALE_AWARE_REFERENCE_DIAMETER = 200.0
#: cap of the scale-aware size term (reached at an equivalent diameter of 2 mm); a sample
#: without lesion gets it too, the limit of a vanishing lesion.
SCALE_AWARE_MAX_SIZE_GAMMA = 4.0
#: upper bound of the scale-aware gamma.
SCALE_AWARE_MAX_GAMMA = 5.0


def paper_parameters(target, spacing=None, gamma_terms=GAMMA_TERMS):
    """The paper's A-FL: ``alpha = 1 - f`` and ``gamma = f + g`` per sample.

    ``f`` is the foreground fraction and ``g`` the mean gradient magnitude of the mask
    (:func:`afl_core.shape.mean_gradient_magnitude`), both over the whole canvas. A sample
    with no foreground or no background gets ``alpha = DEGENERATE_ALPHA``.

    Args:
        target: binary masks ``(N, 1, *S)``.
        spacing: ignored (the paper counts voxels).
        gamma_terms: the parts of gamma kept (ablations): ``"volume"`` (``f``), ``"smoothness"`` (``g``).

    Returns:
        ``(alpha, gamma)``, float64 tensors ``(N,)`` on the target's device.
    """
    f = target.flatten(1).sum(1).double() / target[0].numel()
    alpha = torch.where((f == 0) | (f == 1), DEGENERATE_ALPHA, 1.0 - f)
    gamma = f if "volume" in gamma_terms else torch.zeros_like(f)
    if "smoothness" in gamma_terms:
        gamma = gamma + mean_gradient_magnitude(target).double()
    return alpha, gamma


def scale_aware_parameters(target, spacing=None, gamma_terms=GAMMA_TERMS):
    r"""This project's variant: gamma from each lesion's physical size and outline.

    Each lesion ``k`` (connected component, :func:`afl_core.shape.lesion_shapes`) of volume
    ``V_k``, equivalent diameter ``d_k`` (mm) and outline irregularity ``r_k`` (about 1 for a
    disc or ball) gives, with ``D = SCALE_AWARE_REFERENCE_DIAMETER``,

    .. math::

        \gamma_k = \operatorname{clip}\big(2 \log_{10}(D / d_k), 0, 4\big) + \max(r_k - 1, 0),
        \qquad \gamma = \operatorname{clip}\Big(\frac{\sum_k V_k \gamma_k}{\sum_k V_k}, 0, 5\Big)

    and ``alpha = SCALE_AWARE_ALPHA`` for every sample. A lesion-free sample gets gamma 4,
    the limit of a vanishing lesion.

    Args:
        target: binary masks ``(N, 1, *S)``.
        spacing: voxel size in mm per spatial axis, in array order: ``len(S)`` numbers, one
            row per sample ``(N, len(S))``, or None (1 mm).
        gamma_terms: ``"volume"`` keeps the size term, ``"smoothness"`` the outline term.

    Returns:
        ``(alpha, gamma)``, float64 tensors ``(N,)`` on the target's device.

    Raises:
        ValueError: ``spacing`` has the wrong shape or non-positive values.
    """
    gammas = np.zeros(target.shape[0])
    if gamma_terms:
        for i, lesions in enumerate(lesion_shapes(target, spacing)):
            if lesions.size.size == 0:
                gammas[i] = SCALE_AWARE_MAX_SIZE_GAMMA if "volume" in gamma_terms else 0.0
                continue
            per_lesion = np.zeros_like(lesions.size)
            if "volume" in gamma_terms:
                size_term = 2.0 * np.log10(SCALE_AWARE_REFERENCE_DIAMETER / lesions.diameter)
                per_lesion += np.clip(size_term, 0.0, SCALE_AWARE_MAX_SIZE_GAMMA)
            if "smoothness" in gamma_terms:
                per_lesion += np.maximum(lesions.irregularity - 1.0, 0.0)
            gammas[i] = np.average(per_lesion, weights=lesions.size)
    gamma = torch.from_numpy(np.clip(gammas, 0.0, SCALE_AWARE_MAX_GAMMA)).to(target.device)
    return torch.full_like(gamma, SCALE_AWARE_ALPHA), gamma


def reference_parameters(target, spacing=None, gamma_terms=GAMMA_TERMS):
    """What the authors' code computes: statistics of the whole batch.

    ``gamma = f_batch + g_first`` (the foreground fraction of the batch plus the mean
    gradient magnitude of the first sample's mask only) and ``alpha = f_batch``, the weight
    of the foreground channel (the background channel gets ``1 - f_batch``): the rare
    class gets the small weight, the opposite of the paper's text. Undefined (NaN) for a
    batch without foreground: their weights divide by its voxel count.

    Args:
        target: binary masks ``(N, 1, *S)``.
        spacing: ignored.
        gamma_terms: the parts of gamma kept (ablations).

    Returns:
        ``(alpha, gamma)``, float64 tensors ``(N,)``, the same value for every sample.
    """
    f = target.sum().double() / target.numel()
    alpha = torch.where(f > 0, f, float("nan"))
    gamma = f if "volume" in gamma_terms else torch.zeros_like(f)
    if "smoothness" in gamma_terms:
        gamma = gamma + mean_gradient_magnitude(target[:1])[0].double()
    n = target.shape[0]
    return alpha.expand(n), gamma.expand(n)


@dataclass(frozen=True)
class Variant:
    """The declaration of an A-FL variant: everything other modules may ask of it.

    Attributes:
        name: the variant's name, the key in :data:`VARIANTS`.
        parameters: ``(target, spacing=None, gamma_terms=GAMMA_TERMS) -> (alpha, gamma)``,
            float64 tensors ``(N,)``.
        channels: logit channels: 1 (foreground), or 2 (background, foreground; the loss is
            then MONAI's sigmoid focal loss on the one-hot target, each channel weighted).
        uses_spacing: gamma depends on the voxel size in mm (``spacing=``).
        per_sample: each sample's parameters depend on its own mask alone, so DataLoader
            workers can compute them item by item (:meth:`AdaptiveFocalLoss.adaptive_parameters`).
        needs_lesion: undefined on a batch without lesion voxels (training skips such batches).
        lesion_free: what the variant does on a lesion-free sample, in words.
    """

    name: str
    parameters: Callable
    channels: int = 1
    uses_spacing: bool = False
    per_sample: bool = True
    needs_lesion: bool = False
    lesion_free: str = ""


VARIANTS = {
    v.name: v
    for v in (
        Variant("paper", paper_parameters, lesion_free=f"alpha = DEGENERATE_ALPHA ({DEGENERATE_ALPHA}), gamma 0"),
        Variant(
            "reference",
            reference_parameters,
            channels=2,
            per_sample=False,
            needs_lesion=True,
            lesion_free="undefined (NaN); training skips lesion-free batches",
        ),
        Variant(
            "scale_aware",
            scale_aware_parameters,
            uses_spacing=True,
            lesion_free=f"gamma = {SCALE_AWARE_MAX_SIZE_GAMMA} (a vanishing lesion), alpha {SCALE_AWARE_ALPHA}",
        ),
    )
}


# --------------------------------------------------------------------------- the loss


def validate_inputs(logits, target, *, channels=1, check_values=None):
    """Raise an error that says what to fix when ``logits`` and ``target`` do not fit.

    Args:
        logits: ``(N, channels, *S)`` floating-point scores.
        target: ``(N, 1, *S)`` mask.
        channels: the logit channels expected.
        check_values: also check for non-finite logits and labels outside {0, 1}; by default
            on CPU tensors only (on a GPU it would stall every step: the training loop's NaN
            check catches a bad batch there).

    Returns:
        The target binarised (``target > 0``) in its own dtype.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: a shape, dtype or value does not fit, with what to do.
    """
    for name, tensor in (("logits", logits), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits must be shaped (N, C, H, W) or (N, C, D, H, W), got {tuple(logits.shape)}")
    if logits.shape[1] != channels:
        hint = "(background, foreground) logits (N, 2, *S)" if channels == 2 else "one logit per voxel (N, 1, *S)"
        raise ValueError(f"expected {channels} logit channel(s), got logits of shape {tuple(logits.shape)}; use {hint}")
    if logits.shape[0] == 0:
        raise ValueError("the batch is empty (N = 0): pass at least one sample")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
            f"expected a binary mask of shape {expected}"
        )
    logits, target = logits.detach(), target.detach()
    binary = torch.gt(target, 0, out=torch.empty_like(target))  # in target's dtype, one pass
    if not (logits.device.type == "cpu" if check_values is None else check_values):
        return binary
    # One reduction each: a NaN or Inf makes the sum non-finite (confirmed voxel by voxel,
    # as a huge finite sum can overflow); labels are 0/1 exactly when they equal target > 0.
    total = logits.sum(dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
    if not torch.isfinite(total) and not torch.isfinite(logits).all():
        raise ValueError(
            "logits contain NaN or Inf: the network diverged or its input has non-finite values; "
            "lower the learning rate or check the data normalisation"
        )
    if not torch.equal(target, binary) and ((target != 0) & (target != 1)).any():
        found = torch.unique(target.float().cpu())[:10].tolist()
        raise ValueError(
            f"target must hold only 0 and 1, found values {found}; binarise the labels "
            "(e.g. target = (label > 0).float())"
        )
    return binary


class _FusedFocalLoss(torch.autograd.Function):
    r""":func:`focal_loss` with per-sample or per-channel weights, its gradient computed in the
    forward pass (the backward pass is one multiplication): about half the time of autograd
    through :func:`focal_loss`, to which ``tests/test_losses.py`` holds it equal. With
    ``dp_t/ds = p_t (1 - p_t)``:

    .. math::

        \frac{\partial \ell}{\partial s} = -\alpha_t (1-p_t)^{\gamma}
        \big[(1 - p_t) - \gamma\, p_t \log p_t\big], \qquad
        \frac{\partial \ell}{\partial x} = (2t - 1) \frac{\partial \ell}{\partial s}
    """

    @staticmethod
    def forward(ctx, logits, lesion, weight_fg, weight_bg, gamma, reduction):
        # Arithmetic on the 0/1 label (torch.where is several times slower on the CPU), and
        # the gradient written into buffers no longer needed: no extra tensor.
        sign = lesion * 2.0 - 1.0  # 2t - 1
        signed = logits * sign  # s
        log_pt = F.logsigmoid(signed)
        log_one_minus_pt = log_pt - signed
        minus_alpha_t = torch.addcmul(-weight_bg, lesion, weight_bg - weight_fg)
        minus_weighted = (log_one_minus_pt * gamma).exp_().mul_(minus_alpha_t)  # -alpha_t (1 - p_t)^gamma
        ctx.scale = 1.0 / logits.numel() if reduction == "mean" else 1.0
        if ctx.needs_input_grad[0]:
            gamma_pt = signed.sigmoid_().mul_(gamma)
            bracket = log_one_minus_pt.exp_().addcmul_(gamma_pt, log_pt, value=-1.0)
            ctx.save_for_backward(bracket.mul_(minus_weighted).mul_(sign))
        loss = minus_weighted.mul_(log_pt)
        return loss if reduction == "none" else loss.sum() * ctx.scale

    @staticmethod
    def backward(ctx, grad_output):
        (grad_logits,) = ctx.saved_tensors
        return grad_logits * (grad_output * ctx.scale), None, None, None, None, None


class AdaptiveFocalLoss(nn.Module):
    """Adaptive Focal Loss: :func:`focal_loss` with alpha and gamma set from each mask by a
    variant's rule (:data:`VARIANTS`).

    Args:
        variant: ``"paper"`` (the formula as published, :func:`paper_parameters`),
            ``"reference"`` (what the authors' code computes, :func:`reference_parameters`)
            or ``"scale_aware"`` (this project's, :func:`scale_aware_parameters`).
        alpha, gamma: fixed values replacing the adaptive ones (both given: plain focal
            loss, equal to torchvision's ``sigmoid_focal_loss``).
        reduction: ``"mean"`` over every element of the batch, ``"sum"`` or ``"none"``.
        gamma_terms: the parts of the adaptive gamma kept (ablations).
        check_values: check for non-finite logits and non-binary labels (default: on CPU).

    Raises:
        ValueError: an unknown variant, reduction or gamma term, alpha outside [0, 1] or gamma < 0.

    ``forward(logits, target, spacing=None, parameters=None)`` returns the loss in float32
    (float64 for float64 logits) whatever the autocast dtype. ``parameters`` takes the
    ``(alpha, gamma)`` that :meth:`adaptive_parameters` gave for these targets (e.g. computed
    in DataLoader workers, so a GPU step never waits on the host); by default the loss
    computes them. The statistics come from the target only: no gradient flows through them.
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
        if variant not in VARIANTS:
            raise ValueError(f"unknown A-FL variant {variant!r}; choose from {tuple(VARIANTS)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose from {REDUCTIONS}")
        unknown = set(gamma_terms) - set(GAMMA_TERMS)
        if unknown:
            raise ValueError(f"unknown gamma term(s) {sorted(unknown)}; choose from {GAMMA_TERMS}")
        if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1] (the foreground's share of the weight), got {alpha}")
        if gamma is not None and not float(gamma) >= 0.0:
            raise ValueError(f"gamma must be >= 0 (0 is weighted cross-entropy), got {gamma}")
        self.variant, self.spec = variant, VARIANTS[variant]
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction
        self.gamma_terms = tuple(gamma_terms) if gamma is None else ()  # a fixed gamma: measure nothing
        self.check_values = check_values

    @property
    def uses_spacing(self) -> bool:
        """Whether the loss depends on the voxel size (``spacing=`` in :meth:`forward`)."""
        return self.spec.uses_spacing and bool(self.gamma_terms)

    @property
    def needs_lesion(self) -> bool:
        """Whether a batch without lesion voxels is undefined (the variant's weights need one)."""
        return self.spec.needs_lesion and self.alpha is None

    @torch.no_grad()
    def adaptive_parameters(self, target: torch.Tensor, spacing=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(alpha, gamma)`` this loss uses for ``target``, float64 ``(N,)``, fixed values included."""
        n = target.shape[0]
        if self.alpha is not None and self.gamma is not None:
            alpha = gamma = torch.zeros(n, dtype=torch.float64, device=target.device)
        else:
            alpha, gamma = self.spec.parameters(target, spacing, self.gamma_terms)
        if self.alpha is not None:
            alpha = torch.full_like(alpha, self.alpha)
        if self.gamma is not None:
            gamma = torch.full_like(gamma, self.gamma)
        return alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor, spacing=None, parameters=None) -> torch.Tensor:
        check = logits.device.type == "cpu" if self.check_values is None else self.check_values
        lesion = validate_inputs(logits, target, channels=self.spec.channels, check_values=check)
        if check and self.spec.needs_lesion and self.alpha is None and not target.any():
            raise ValueError(
                f"variant={self.variant!r} is undefined for a batch without foreground voxels (its "
                "weights divide by the foreground count); use variant='paper', or sample batches with lesions"
            )
        alpha, gamma = self.adaptive_parameters(target, spacing) if parameters is None else parameters
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32  # float32 under autocast
        logits, lesion = logits.to(dtype), lesion.to(dtype)
        # Both weights from float64: for a lesion of a few voxels, 1 - alpha would lose f in float32.
        weight_fg, weight_bg = alpha.to(dtype), (1.0 - alpha.double()).to(dtype)
        if self.spec.channels == 2:  # batch-wide weights per channel, on the one-hot target [1 - t, t]
            lesion = torch.cat([1.0 - lesion, lesion], dim=1)
            weight_fg = weight_bg = torch.stack([weight_bg[0], weight_fg[0]]).view(1, 2, *[1] * (logits.ndim - 2))
            gamma = gamma[0]
        else:
            weight_fg, weight_bg, gamma = (v.view(-1, *[1] * (logits.ndim - 1)) for v in (weight_fg, weight_bg, gamma))
        return _FusedFocalLoss.apply(logits, lesion, weight_fg, weight_bg, gamma.to(dtype), self.reduction)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, alpha={self.alpha}, gamma={self.gamma}, gamma_terms={self.gamma_terms}"


def adaptive_parameters(
    target: torch.Tensor, *, variant: str = "paper", gamma_terms: Sequence[str] = GAMMA_TERMS, spacing=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(alpha, gamma)`` of an A-FL variant, float32 tensors ``(N,)``.

    Args:
        target: binary masks ``(N, 1, *S)``.
        variant: a key of :data:`VARIANTS`.
        gamma_terms: the parts of gamma kept (ablations).
        spacing: voxel size in mm per spatial axis (``variant="scale_aware"`` only).

    Returns:
        ``(alpha, gamma)``; for ``"reference"`` the batch-wide values, repeated.

    Raises:
        ValueError: an unknown variant or gamma term, a bad mask shape or spacing.
    """
    check_mask(target)
    alpha, gamma = AdaptiveFocalLoss(variant, gamma_terms=gamma_terms).adaptive_parameters(target, spacing)
    return alpha.float(), gamma.float()


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
    """Function form of :class:`AdaptiveFocalLoss` (the same keywords, plus ``spacing``).

    Args:
        logits: ``(N, 1, *S)`` raw scores (``(N, 2, *S)`` for ``variant="reference"``).
        target: ``(N, 1, *S)`` binary mask.
        variant, alpha, gamma, reduction, gamma_terms, check_values: see :class:`AdaptiveFocalLoss`.
        spacing: voxel size in mm per spatial axis (``variant="scale_aware"`` only).

    Returns:
        The loss (a scalar, or per element with ``reduction="none"``).

    Raises:
        ValueError: bad options or inputs, with what to do.
    """
    loss = AdaptiveFocalLoss(
        variant, alpha=alpha, gamma=gamma, reduction=reduction, gamma_terms=gamma_terms, check_values=check_values
    )
    return loss(logits, target, spacing=spacing)


# --------------------------------------------------------------------------- baselines


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
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
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

    Args:
        name: one of :data:`LOSS_NAMES`.
        **kwargs: options of :class:`AdaptiveFocalLoss` (``name="afl"`` only).

    Returns:
        The loss module.

    Raises:
        ValueError: an unknown name, or options for a loss that takes none.
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
