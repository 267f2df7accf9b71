"""A-FL with MONAI's loss conventions: multi-channel outputs, label maps, sigmoid or softmax.

MONAI's losses take ``input`` of shape ``(B, C, *S)`` (raw network outputs) and a
``target`` that is either one-hot ``(B, C, *S)`` or, with ``to_onehot_y=True``, a label map
``(B, 1, *S)``. A-FL is a binary loss (:func:`afl_core.losses.adaptive_focal_loss`): one
foreground logit and one 0/1 mask per sample. :class:`MonaiAdaptiveFocalLoss` applies it one
channel against the rest, each channel with its own adaptive ``alpha`` and ``gamma``
measured on that channel's mask, and averages.

For a softmax output the binary logit of channel ``c`` is the one whose sigmoid is the
softmax probability of ``c``:

.. math::

    z_c = x_c - \\log \\sum_{j \\ne c} e^{x_j}, \\qquad
    \\sigma(z_c) = \\frac{1}{1 + \\sum_{j \\ne c} e^{x_j - x_c}}
                 = \\frac{e^{x_c}}{\\sum_j e^{x_j}} = \\operatorname{softmax}(x)_c

so for two channels (background, foreground) the foreground logit is ``x_1 - x_0``
(:func:`one_vs_rest_logits`).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from monai.networks.utils import one_hot
from torch import nn

from afl_core.losses import VARIANTS, AdaptiveFocalLoss
from afl_core.shape import spacing_per_sample

__all__ = ["MonaiAdaptiveFocalLoss", "one_vs_rest_logits"]

REDUCTIONS = ("mean", "sum", "none")


def one_vs_rest_logits(logits: torch.Tensor) -> torch.Tensor:
    """The binary logit of each channel of a softmax output against all the others.

    Args:
        logits: ``(B, C, *S)`` softmax logits, ``C >= 2``.

    Returns:
        ``(B, C, *S)``: ``z_c = x_c - logsumexp_{j != c} x_j``, so that
        ``sigmoid(z_c) == softmax(logits, dim=1)[:, c]``. For ``C = 2``,
        ``z_1 = x_1 - x_0`` and ``z_0 = x_0 - x_1`` exactly.

    Raises:
        ValueError: fewer than two channels.
    """
    channels = logits.shape[1] if logits.ndim >= 2 else 0
    if channels < 2:
        raise ValueError(f"a softmax output needs at least two channels (B, C>=2, ...), got {tuple(logits.shape)}")
    spatial = (1,) * (logits.ndim - 2)
    itself = torch.eye(channels, dtype=torch.bool, device=logits.device).view(1, channels, channels, *spatial)
    # Row c of `others` holds every channel but c (c itself set to -inf adds exp(-inf) = 0).
    others = logits.unsqueeze(1).masked_fill(itself, float("-inf"))
    return logits - torch.logsumexp(others, dim=2)


class MonaiAdaptiveFocalLoss(nn.Module):
    """Adaptive Focal Loss with the keywords and shapes of MONAI's ``FocalLoss``.

    Every kept channel ``c`` is a binary problem (channel ``c`` against the rest) with the
    binary A-FL of :func:`afl_core.losses.adaptive_focal_loss`:

    .. math::

        \\ell_{b,c,v} = -\\big[\\alpha_{b,c}\\, t\\, (1-p)^{\\gamma_{b,c}} \\log p
            + (1-\\alpha_{b,c})(1-t)\\, p^{\\gamma_{b,c}} \\log(1-p)\\big],
        \\quad t = t_{b,c,v},\\ p = \\sigma(z_{b,c,v})

    with ``alpha``/``gamma`` of sample ``b`` measured on channel ``c``'s mask ``t_{b,c}``
    (``variant="paper"``: ``alpha = 1 - f``, ``gamma = f + g``; see
    :func:`afl_core.losses.adaptive_parameters`), and ``z`` the channel's logit:

    - ``use_softmax=False``: ``z = x`` (independent sigmoid channels, as MONAI's
      sigmoid focal loss). With one channel and ``include_background=True`` this is exactly
      ``AdaptiveFocalLoss(variant)``.
    - ``use_softmax=True``: ``z_c = x_c - logsumexp_{j != c} x_j``, the logit whose sigmoid
      is the softmax probability of ``c`` (:func:`one_vs_rest_logits`). For a two-channel
      output (background, foreground) with ``include_background=False`` this is A-FL on the
      foreground logit ``x_1 - x_0``: the binary loss of the softmax's foreground
      probability. With fixed ``alpha``/``gamma`` it is twice MONAI's softmax
      ``FocalLoss(alpha=alpha, gamma=gamma, include_background=True)`` with mean reduction
      (MONAI sums the true class's term over two channels and averages over both).

    With ``include_background=True`` on a softmax output channel 0 is a binary problem too
    (background against the rest); for two channels its masks are ``1 - t``, so it has the
    foreground channel's weights and ``gamma = (1 - f) + g``.

    Args:
        include_background: keep channel 0. False drops it from output and target after the
            softmax (as MONAI); ignored with a warning for a one-channel output.
        to_onehot_y: ``target`` is a label map ``(B, 1, *S)`` with values ``0 .. C-1``,
            turned into one-hot ``(B, C, *S)``; ignored with a warning for one channel.
        use_softmax: ``input`` is one softmax over its ``C >= 2`` channels (nnU-Net's and
            MONAI's multi-class output) instead of independent sigmoids.
        reduction: as MONAI's ``FocalLoss``: ``"mean"`` over every element ``(b, c, v)``
            (for equal-size channels, the mean over channels of each channel's mean),
            ``"sum"`` the sum over ``(b, c)`` of each one's mean over space, ``"none"`` the
            elements ``(B, C', *S)`` (``C'`` the kept channels).
        variant: the A-FL variant of :func:`afl_core.losses.adaptive_focal_loss` applied to
            each channel: ``"paper"`` or ``"scale_aware"``. ``"reference"`` (the authors'
            own two-channel computation) has no per-channel form: use
            ``AdaptiveFocalLoss(variant="reference")`` on ``(B, 2, *S)`` logits instead.
        spacing: voxel size in mm per spatial axis (``len(S)`` numbers) or one row per
            sample ``(B, len(S))``; used by ``variant="scale_aware"``. ``forward``'s own
            ``spacing`` overrides it.
        alpha, gamma: fixed values replacing the adaptive ones for every channel (both
            given: the ordinary focal loss).
        gamma_terms, check_values: as :func:`afl_core.losses.adaptive_focal_loss` (None:
            its defaults).

    Raises:
        ValueError: an unknown ``reduction`` or ``variant``, or a variant that is not
            binary (``"reference"``); the rest of the checks when called (:meth:`forward`).
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        use_softmax: bool = False,
        reduction: str = "mean",
        variant: str = "paper",
        spacing=None,
        alpha: float | None = None,
        gamma: float | None = None,
        gamma_terms: Sequence[str] | None = None,
        check_values: bool | None = None,
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose from {REDUCTIONS} (MONAI's)")
        options = {} if gamma_terms is None else {"gamma_terms": gamma_terms}
        # The binary loss of every channel; mean or none, since MONAI's sum is a sum of means.
        self.binary = AdaptiveFocalLoss(
            variant,
            alpha=alpha,
            gamma=gamma,
            reduction="none" if reduction == "none" else "mean",
            check_values=check_values,
            **options,
        )
        if variant in VARIANTS and VARIANTS[variant].channels != 1:
            raise ValueError(
                f"variant={variant!r} takes the authors' (B, 2, *S) logits as a whole and has no "
                "per-channel form; use afl_core.losses.AdaptiveFocalLoss(variant='reference') on them, "
                "or variant='paper' here"
            )
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.use_softmax = use_softmax
        self.reduction = reduction
        self.spacing = spacing
        self.check_values = check_values

    def forward(self, input: torch.Tensor, target: torch.Tensor, spacing=None) -> torch.Tensor:
        """The loss of ``input`` against ``target``.

        Args:
            input: ``(B, C, *S)`` raw network outputs (logits), ``S`` two- or three-dimensional.
            target: one-hot ``(B, C, *S)`` (0/1), or with ``to_onehot_y`` a label map
                ``(B, 1, *S)`` holding ``0 .. C-1``.
            spacing: overrides the constructor's ``spacing`` for this batch.

        Returns:
            A scalar for ``reduction="mean"``/``"sum"``; ``(B, C', *S)`` for ``"none"``
            (float32, or float64 for float64 input).

        Raises:
            ValueError: ``input`` not ``(B, C, H, W)`` or ``(B, C, D, H, W)``; ``use_softmax``
                with one channel; a target whose shape does not fit (a label map without
                ``to_onehot_y``, say); label values outside ``0 .. C-1``; non-binary one-hot
                values or non-finite logits (checked on the CPU, see ``check_values``).
        """
        if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("input and target must be torch.Tensors")
        if input.ndim not in (4, 5):
            raise ValueError(
                f"input must be shaped (B, C, H, W) or (B, C, D, H, W), got {tuple(input.shape)}; "
                "add the channel axis for a single-channel output (input[:, None])"
            )
        channels = input.shape[1]
        if self.use_softmax and channels < 2:
            raise ValueError(
                f"use_softmax=True needs at least two channels (background, foreground, ...), got "
                f"{tuple(input.shape)}; a one-channel output is a sigmoid: use use_softmax=False"
            )
        target = self._one_hot(target, input)
        # float32 under autocast: x_1 - x_0 of two float16 logits would lose digits
        input = input.to(torch.float64 if input.dtype == torch.float64 else torch.float32)
        logits = one_vs_rest_logits(input) if self.use_softmax else input
        if not self.include_background:
            if channels == 1:
                warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=2)
            else:
                logits, target = logits[:, 1:], target[:, 1:]
        batch, kept, spatial = logits.shape[0], logits.shape[1], logits.shape[2:]
        spacing = self.spacing if spacing is None else spacing
        if spacing is not None:  # one row per (sample, channel), channels of a sample adjacent
            spacing = np.repeat(spacing_per_sample(spacing, batch, len(spatial)), kept, axis=0)
        # Channels become samples: each gets its own alpha and gamma, and their mean over all
        # elements is MONAI's "mean"; MONAI's "sum" adds up each (b, c)'s mean over space.
        loss = self.binary(
            logits.reshape(batch * kept, 1, *spatial), target.reshape(batch * kept, 1, *spatial), spacing=spacing
        )
        if self.reduction == "none":
            return loss.reshape(batch, kept, *spatial)
        return loss * (batch * kept) if self.reduction == "sum" else loss

    def _one_hot(self, target: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """``target`` as one-hot ``(B, C, *S)``, checked against ``input``."""
        channels = input.shape[1]
        label_map = (input.shape[0], 1, *input.shape[2:])
        if self.to_onehot_y and channels == 1:
            warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=3)
        elif self.to_onehot_y:
            if tuple(target.shape) != label_map:
                raise ValueError(
                    f"with to_onehot_y=True the target must be a label map of shape {label_map} "
                    f"(values 0 .. {channels - 1}), got {tuple(target.shape)}"
                )
            check = self.check_values
            if check or (check is None and target.device.type == "cpu"):
                bad = (target < 0) | (target > channels - 1) | (target != torch.round(target))
                if bad.any():
                    found = torch.unique(target[bad].float().cpu())[:10].tolist()
                    raise ValueError(
                        f"the label map holds values {found} outside the {channels} classes 0 .. {channels - 1} "
                        "of the output; check the number of output channels or remap the labels"
                    )
            return one_hot(target.long(), num_classes=channels, dtype=input.dtype)
        if tuple(target.shape) != tuple(input.shape):
            hint = (
                "; it looks like a label map: pass to_onehot_y=True"
                if tuple(target.shape) == label_map and channels > 1
                else ""
            )
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match input {tuple(input.shape)}: expected "
                f"one-hot (B, C, *S){hint}"
            )
        return target

    def extra_repr(self) -> str:
        return (
            f"include_background={self.include_background}, "
            f"to_onehot_y={self.to_onehot_y}, use_softmax={self.use_softmax}, reduction={self.reduction!r}"
        )
