"""The U-Net factory: offline fallback, pretrained weights when they can be fetched, devices."""

from __future__ import annotations

import warnings

import pytest
import segmentation_models_pytorch as smp
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from afl_core import models
from afl_core.models import PretrainedWeightsWarning, autocast_dtype, build_model, resolve_device


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """smp's Hub download replaced: ``hub.offline`` makes it fail as it does without a
    network; otherwise it serves a known resnet18 encoder state dict."""

    class FakeHub:
        offline = True
        calls: list[str] = []
        torch.manual_seed(123)
        weights = smp.encoders.get_encoder("resnet18", weights=None).state_dict()

        def __call__(self, repo_id, filename, revision=None, **kwargs):
            self.calls.append(filename)
            if self.offline:
                raise LocalEntryNotFoundError("cannot reach the Hub and the file is not in the local cache")
            path = tmp_path / filename
            if filename.endswith(".safetensors"):
                save_file({k: v.contiguous() for k, v in self.weights.items()}, path)
            else:
                path.write_text("{}")
            return str(path)

    fake = FakeHub()
    monkeypatch.setattr(smp.encoders, "hf_hub_download", fake)
    monkeypatch.setattr(models, "_UNAVAILABLE", set())
    return fake


def test_offline_falls_back_to_random_weights_with_a_warning(hub):
    expected = r"could not fetch 'imagenet' weights for encoder 'resnet18'.*random initialisation"
    with pytest.warns(PretrainedWeightsWarning, match=expected):
        model = build_model("resnet18", "imagenet", in_channels=2, classes=1)
    assert hub.calls  # the download was tried
    assert isinstance(model, smp.Unet)
    assert model(torch.zeros(2, 2, 64, 64)).shape == (2, 1, 64, 64)


def test_a_failed_download_is_not_retried_in_the_same_session(hub):
    with pytest.warns(PretrainedWeightsWarning):
        build_model("resnet18", "imagenet")
    tried = len(hub.calls)
    with pytest.warns(PretrainedWeightsWarning, match="an earlier attempt in this session failed"):
        build_model("resnet18", "imagenet")
    assert len(hub.calls) == tried


def test_pretrained_weights_are_loaded_when_available(hub):
    hub.offline = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsWarning)
        model = build_model("resnet18", "imagenet", in_channels=3, classes=2)
    for name, tensor in hub.weights.items():
        if name in model.encoder.state_dict():
            assert torch.equal(model.encoder.state_dict()[name], tensor), name
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("weights", [None, "none", "None"])
def test_no_weights_means_no_download_and_no_warning(hub, weights):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model("resnet18", weights, in_channels=1, classes=1)
    assert not hub.calls


def test_other_errors_are_not_hidden(hub):
    with pytest.raises(KeyError, match="Wrong encoder name"):
        build_model("no-such-encoder", None)
    with pytest.raises(ValueError, match="in_channels and classes"):
        build_model("resnet18", None, in_channels=0)


def test_devices_and_mixed_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cuda"), amp=False) is None
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_pad_to_multiple_pads_runs_and_crops_back():
    seen = []

    class Record(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return x * 2

    x = torch.randn(2, 3, 5, 37, 64)
    out = models.PadToMultiple(Record(), 32)(x)
    assert seen[0].shape == (2, 3, 32, 64, 64)
    assert torch.equal(seen[0][:, :, :5, :37], x)
    # replicate: the padding repeats the last slice / row
    assert torch.equal(seen[0][:, :, 20, :37], x[:, :, 4]) and torch.equal(seen[0][:, :, :5, 50], x[:, :, :, 36])
    assert torch.equal(out, x * 2)  # the padding never reaches the output


def test_3d_unet_is_monai_flexible_unet_with_a_resnet_encoder():
    from monai.networks.nets import FlexibleUNet

    torch.manual_seed(0)
    model = build_model("resnet10", None, in_channels=2, classes=2, dims=3).eval()
    assert isinstance(model, models.PadToMultiple) and isinstance(model.net, FlexibleUNet)
    x = torch.randn(1, 2, 16, 40, 64)
    with torch.no_grad():
        out = model(x)
        # The same as the bare network on the input padded by repeating its border, cropped.
        padded = torch.nn.functional.pad(x, (0, 0, 0, 24, 0, 16), mode="replicate")
        expected = model.net(padded)[:, :, :16, :40, :64]
    assert out.shape == (1, 2, 16, 40, 64)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="3D encoder 'resnet9'"):
        build_model("resnet9", None, dims=3)
    with pytest.raises(ValueError, match="random weights"):
        build_model("resnet18", "imagenet", dims=3)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        build_model("resnet18", None, dims=4)


def test_the_commands_start_without_the_network_libraries():
    """smp pulls timm, torchvision and torch._dynamo (about 1.5 s per start): the commands import
    it only where a 2D network is checked or made, so a refusal of bad input comes that much sooner."""
    import subprocess
    import sys

    heavy = ("segmentation_models_pytorch", "timm", "torchvision", "monai")
    code = (
        "import sys, afl_core.train, afl_core.evaluate, afl_core.sweep, data_download.cli; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    models.check_encoder("resnet18")  # and the check itself still knows smp's encoders
    with pytest.raises(ValueError, match="unknown encoder 'resnet7'"):
        models.check_encoder("resnet7")
