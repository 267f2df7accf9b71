"""The segmentation network (segmentation-models-pytorch's 2D U-Net, built offline too) and the device it runs on.

The paper trains a U-Net with a ResNet50 encoder pretrained on ImageNet. Pretrained
weights come from the Hugging Face Hub (smp >= 0.4) or timm; on a machine without
internet (a CI runner, a hospital workstation, this project's sandbox) fetching them
fails, and :func:`build_model` then warns and falls back to random initialisation
instead of crashing, so every notebook still runs.
"""

from __future__ import annotations

import warnings

import segmentation_models_pytorch as smp
import torch
from torch import nn

__all__ = ["PretrainedWeightsWarning", "build_model", "resolve_device", "autocast_dtype"]


class PretrainedWeightsWarning(UserWarning):
    """Pretrained encoder weights could not be fetched; the encoder starts from random values."""


def _fetch_errors() -> tuple[type[BaseException], ...]:
    # Offline, smp's Hub download raises huggingface_hub's LocalEntryNotFoundError (an
    # OSError); torch.hub / urllib raise URLError (an OSError) and requests/httpx
    # connection errors are OSErrors or ConnectionErrors too. HTTP errors from the Hub
    # (rate limits, 5xx) have their own class.
    errors: list[type[BaseException]] = [OSError, ConnectionError]
    try:
        from huggingface_hub.errors import HfHubHTTPError
        errors.append(HfHubHTTPError)
    except ImportError:  # an old huggingface_hub: its HTTP errors are OSErrors already
        pass
    return tuple(errors)


# (encoder, weights) whose download failed in this process: offline, each attempt costs
# about 25 s of hub retries, and a notebook builds eight models in a row.
_UNAVAILABLE: set[tuple[str, str]] = set()


def build_model(
    encoder: str = "resnet50",
    encoder_weights: str | None = "imagenet",
    in_channels: int = 3,
    classes: int = 1,
    **unet_kwargs,
) -> nn.Module:
    """``smp.Unet(encoder, encoder_weights, in_channels, classes)``, offline-safe.

    Args:
        encoder: any smp encoder name (``"resnet50"`` as in the paper, ``"resnet18"``,
            ``"mobilenet_v2"``, timm's ``"tu-resnet10t"``, ...).
        encoder_weights: ``"imagenet"`` (or another tag smp knows for that encoder) to
            start from pretrained weights, ``None`` (or ``"none"``) for random values.
            For timm encoders (``"tu-..."``) any tag means "timm's default pretrained
            weights", as smp expects ``True`` there.
        in_channels: input channels (MRI modalities); with pretrained weights smp adapts
            the first convolution.
        classes: output channels, 1 for the binary losses, 2 for A-FL's
            ``variant="reference"`` (background, foreground).
        **unet_kwargs: passed to ``smp.Unet`` (``decoder_channels``, ``encoder_depth``...).

    Returns the network producing logits ``(N, classes, H, W)``; ``H`` and ``W`` must be
    multiples of ``2 ** encoder_depth`` (32 by default).

    When the weights cannot be fetched a :class:`PretrainedWeightsWarning` is issued and
    the encoder is randomly initialised.
    """
    if in_channels < 1 or classes < 1:
        raise ValueError(f"in_channels and classes must be >= 1, got {in_channels} and {classes}")
    if isinstance(encoder_weights, str) and encoder_weights.lower() == "none":
        encoder_weights = None
    weights = encoder_weights
    if encoder.startswith("tu-") and weights is not None:
        weights = True

    def unet(weights):
        return smp.Unet(encoder_name=encoder, encoder_weights=weights, in_channels=in_channels,
                        classes=classes, **unet_kwargs)

    if weights is None:
        return unet(None)
    key = (encoder, str(encoder_weights))
    try:
        if key in _UNAVAILABLE:  # failed before in this process: skip the slow retries
            raise OSError("an earlier attempt in this session failed")
        return unet(weights)
    except _fetch_errors() as error:
        _UNAVAILABLE.add(key)
        warnings.warn(
            f"could not fetch {encoder_weights!r} weights for encoder {encoder!r} (offline?): "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}; "
            "using random initialisation instead. Pass encoder_weights=None "
            "(--encoder-weights none) to silence this, or download the weights once online "
            "so they are cached.",
            PretrainedWeightsWarning,
            stacklevel=2,
        )
        return unet(None)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU. Asking for CUDA without one is a
    ``ValueError`` (a setting to change, not a crash)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but PyTorch sees no CUDA GPU; "
                           "use --device cpu (or auto), or install a CUDA build of PyTorch")
    return device


def autocast_dtype(device: torch.device, amp: bool = True) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bfloat16 on CUDA GPUs that support it
    (no gradient scaling needed), float16 on older ones, ``None`` (float32) on the CPU."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
