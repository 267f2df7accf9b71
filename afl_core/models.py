"""The segmentation networks and the device they run on.

2D (the teaching path): segmentation-models-pytorch's U-Net. 3D (the authors' path): MONAI's
``FlexibleUNet``, a U-Net with a 3D ResNet encoder (:func:`build_model` with ``dims=3``).

The authors train a 3D U-Net with a ResNet50 encoder from segmentation-models-pytorch-3d
(``src/PICAI/training_setup/model.py:21-26``). That package pins ``timm==0.9.7`` (it would
downgrade the ``timm`` that segmentation-models-pytorch needs) and had its last release in
August 2024; MONAI is maintained by Project MONAI, has no such pins, and its ``FlexibleUNet``
takes the same ResNet family (``resnet10`` ... ``resnet200``) as encoder, so the 3D network is
MONAI's. Differences from theirs: the encoder halves every axis five times (theirs keeps the
24 slices of their grid from being halved as often: strides ``(4, 2, 1)``, ``(2, 2, 1)``,
``(1, 2, 3)``), so :class:`PadToMultiple` pads the input to a multiple of 32 and crops the
output back; and it starts from random weights (MONAI's pretrained 3D ResNets, MedicalNet,
take one input channel only; theirs inflate ImageNet weights).

In 2D the paper's U-Net has a ResNet50 encoder pretrained on ImageNet. Pretrained
weights come from the Hugging Face Hub (smp >= 0.4) or timm; on a machine without
internet (a CI runner, a hospital workstation, this project's sandbox) fetching them
fails, and :func:`build_model` then warns and falls back to random initialisation
instead of crashing, so every notebook still runs.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PretrainedWeightsWarning",
    "ENCODERS_3D",
    "PadToMultiple",
    "check_encoder",
    "check_encoder_weights",
    "pretrained_weights",
    "load_checkpoint",
    "build_model",
    "DEVICES",
    "resolve_device",
    "autocast_dtype",
]

#: Encoders of the 3D U-Net (MONAI FlexibleUNet's ResNet backbones).
ENCODERS_3D = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")


def check_encoder(encoder: str, dims: int = 2) -> None:
    """Raise a ``ValueError`` naming the choices when ``encoder`` does not exist (before any
    data is loaded): smp's encoder names or ``"tu-<timm model>"`` in 2D, :data:`ENCODERS_3D` in 3D."""
    if dims == 3:
        if encoder not in ENCODERS_3D:
            raise ValueError(f"3D encoder {encoder!r} is not available; choose from {ENCODERS_3D}")
        return
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise ValueError(
                f"timm has no model {encoder[3:]!r} (from encoder {encoder!r}); list them with "
                "timm.list_models(), e.g. 'tu-resnet10t'"
            )
        return
    import segmentation_models_pytorch as smp  # 1.5 s with torchvision and timm: only where a 2D model is made

    if encoder not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"unknown encoder {encoder!r}; e.g. 'resnet50' (the paper's), 'resnet18', 'tu-resnet10t'; "
            "all: segmentation_models_pytorch.encoders.get_encoder_names()"
        )


def pretrained_weights(weights: str | None) -> str | None:
    """``weights`` with the command line's word for random weights, ``"none"`` (any case), as
    ``None``: the one place where the two meet."""
    return None if weights is None or weights.lower() == "none" else weights


def check_encoder_weights(encoder: str, weights: str | None) -> None:
    """Raise a ``ValueError`` naming the choices when ``weights`` is not a tag of pretrained
    weights that smp knows for the 2D ``encoder`` (``"imagenet"`` for timm's ``tu-`` ones);
    ``None`` or ``"none"`` (random weights) always fit."""
    weights = pretrained_weights(weights)
    if weights is None:
        return
    if encoder.startswith("tu-"):
        tags = ("imagenet",)
    else:
        import segmentation_models_pytorch as smp

        tags = tuple(smp.encoders.encoders[encoder]["pretrained_settings"])
    if weights not in tags:
        raise ValueError(f"encoder {encoder!r} has no {weights!r} weights; choose from {', '.join(tags)} or none")


#: the lines of torch.load's errors that surround the reason with advice
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def load_checkpoint(path, keys: tuple[str, ...] = ("model", "config", "epoch"), *, mmap: bool = False) -> dict:
    """A checkpoint of :mod:`afl_core.train` read with ``weights_only=True`` (a file from
    elsewhere cannot run code), on the CPU; a truncated, corrupt or foreign file raises a
    ``ValueError`` that says what to do (and never suggests ``weights_only=False``).
    ``mmap=True`` maps the tensors instead of reading them: cheap when only the metadata
    (``epoch``, ``best``) is wanted."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        # torch's own advice around the reason (load it with weights_only=False) is what not to do here
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if not line.startswith(_TORCH_ADVICE)), type(error).__name__)[:160]
        raise ValueError(
            f"{path} cannot be read as a checkpoint of afl_core.train ({reason}): it is truncated (an interrupted "
            "copy or a full disk), corrupt, or not made by this program. Do not load it with weights_only=False. "
            "Restore the run folder from a copy, or start the run again with --overwrite"
        ) from None
    missing = [key for key in keys if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise ValueError(
            f"{path} is not a checkpoint of afl_core.train (it lacks {missing}); start the run again with --overwrite"
        )
    return saved


# The 3D U-Net's encoder halves every axis five times.
_MULTIPLE_3D = 32


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


class PadToMultiple(nn.Module):
    """Run ``net`` on the input padded at the end of every spatial axis to a multiple of
    ``multiple``, and crop its output back to the input's size, so any size goes in and the
    logits cover exactly the input's voxels (a loss or a metric never sees the padding).
    Padding repeats the border voxels (``replicate``) rather than inventing an edge."""

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net, self.multiple = net, int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [n for length in reversed(size) for n in (0, -length % self.multiple)]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        return self.net(x)[(..., *(slice(0, n) for n in size))]


def _unet_3d(encoder: str, encoder_weights: str | None, in_channels: int, classes: int, **unet_kwargs) -> nn.Module:
    check_encoder(encoder, dims=3)
    if encoder_weights is not None:
        raise ValueError(
            f"3D encoders start from random weights (got encoder_weights={encoder_weights!r}): MONAI's "
            "pretrained 3D ResNets take one input channel only; use --encoder-weights none"
        )
    from monai.networks.nets import FlexibleUNet  # MONAI only for 3D: it takes a second to import

    net = FlexibleUNet(
        in_channels=in_channels, out_channels=classes, backbone=encoder, pretrained=False, spatial_dims=3, **unet_kwargs
    )
    return PadToMultiple(net, _MULTIPLE_3D)


def build_model(
    encoder: str = "resnet50",
    encoder_weights: str | None = "imagenet",
    in_channels: int = 3,
    classes: int = 1,
    *,
    dims: int = 2,
    **unet_kwargs,
) -> nn.Module:
    """``smp.Unet(encoder, encoder_weights, in_channels, classes)``, offline-safe; with
    ``dims=3`` MONAI's 3D ``FlexibleUNet`` with a ResNet encoder (:data:`ENCODERS_3D`,
    random weights only) in :class:`PadToMultiple`, for inputs ``(N, C, D, H, W)`` of any size.

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
        dims: 2 (slices) or 3 (volumes).
        **unet_kwargs: passed to ``smp.Unet`` (``decoder_channels``, ``encoder_depth``...), or
            in 3D to ``FlexibleUNet`` (``decoder_channels``, ``norm``, ...).

    Returns the network producing logits ``(N, classes, H, W)``; ``H`` and ``W`` must be
    multiples of ``2 ** encoder_depth`` (32 by default). In 3D: logits ``(N, classes, D, H, W)``
    for any ``D, H, W``; batch normalisation in training needs more than one value per channel
    at the deepest level, i.e. (padded size / 32) summed over the batch above one.

    When the weights cannot be fetched a :class:`PretrainedWeightsWarning` is issued and
    the encoder is randomly initialised.
    """
    if in_channels < 1 or classes < 1:
        raise ValueError(f"in_channels and classes must be >= 1, got {in_channels} and {classes}")
    encoder_weights = pretrained_weights(encoder_weights)
    if dims == 3:
        return _unet_3d(encoder, encoder_weights, in_channels, classes, **unet_kwargs)
    if dims != 2:
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    weights = encoder_weights
    if encoder.startswith("tu-") and weights is not None:
        weights = True

    import segmentation_models_pytorch as smp

    def unet(weights):
        return smp.Unet(
            encoder_name=encoder, encoder_weights=weights, in_channels=in_channels, classes=classes, **unet_kwargs
        )

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


#: the devices a ``device`` setting accepts, as messages name them
DEVICES = "auto, cpu, cuda or cuda:N (N the GPU's number, e.g. cuda:0)"


def resolve_device(name: str = "auto", *, option: str = "--device") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU. Asking for CUDA without one, or for a
    device PyTorch does not know, is a ``ValueError`` (a setting to change, not a crash)
    naming ``option``, the setting that chose the device (a notebook's ``parameter device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option} must be {DEVICES}, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{option} {name!r} was requested but PyTorch sees no CUDA GPU; "
            f"use {option} cpu (or auto), or install a CUDA build of PyTorch"
        )
    return device


def autocast_dtype(device: torch.device, amp: bool = True) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bfloat16 on CUDA GPUs that support it
    (no gradient scaling needed), float16 on older ones, ``None`` (float32) on the CPU."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
