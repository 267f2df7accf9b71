"""MonaiAdaptiveFocalLoss against the binary A-FL, MONAI's FocalLoss and a NumPy reference."""

import numpy as np
import pytest
import torch
from monai.losses import FocalLoss
from monai.networks.nets import UNet

from afl_core.integrations.monai import MonaiAdaptiveFocalLoss, one_vs_rest_logits
from afl_core.losses import DEGENERATE_ALPHA, AdaptiveFocalLoss
from tests.test_shape import numpy_gradient_magnitude


def label_map(shape, classes, seed):
    """(B, 1, *S) integer labels: blobs of classes 1 .. classes-1 on background 0, one sample empty."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int64)
    grid = np.indices(shape[2:])
    for b in range(shape[0] - 1):  # the last sample stays lesion-free (the degenerate alpha)
        for c in range(1, classes):
            centre = [rng.integers(1, s - 1) for s in shape[2:]]
            radius = rng.uniform(1.5, min(shape[2:]) / 4)
            labels[b, 0][sum((g - m) ** 2 for g, m in zip(grid, centre)) <= radius**2] = c
    return torch.from_numpy(labels)


def one_hot_np(labels, classes):
    return np.concatenate([(labels == c) for c in range(classes)], axis=1).astype(np.float64)


def logits_like(shape, seed):
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 3, size=shape))


def np_one_vs_rest_loss(x, t, softmax):
    """Per element (B, C, *S) A-FL of each channel against the rest, straight from the formula, float64."""
    if softmax:
        log_p = x - np.logaddexp.reduce(x, axis=1, keepdims=True)
        log_1mp = np.log(-np.expm1(log_p))  # accurate enough for |x| ~ 3
    else:
        log_p, log_1mp = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    p = np.exp(log_p)
    loss = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            mask = t[b, c]
            f = mask.mean()
            alpha = DEGENERATE_ALPHA if f in (0.0, 1.0) else 1 - f
            gamma = f + numpy_gradient_magnitude(mask).mean()
            pc, lp, l1p = p[b, c], log_p[b, c], log_1mp[b, c]
            loss[b, c] = -(alpha * mask * (1 - pc) ** gamma * lp + (1 - alpha) * (1 - mask) * pc**gamma * l1p)
    return loss


def grad_of(loss_fn, x, *args):
    x = x.clone().requires_grad_(True)
    value = loss_fn(x, *args)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("spatial", [(24, 20), (6, 12, 10)])
def test_one_sigmoid_channel_equals_adaptive_focal_loss(spatial):
    x = logits_like((3, 1, *spatial), seed=0)
    t = (label_map((3, 1, *spatial), 2, seed=1) > 0).double()
    ours, ours_grad = grad_of(MonaiAdaptiveFocalLoss(), x, t)
    binary, binary_grad = grad_of(AdaptiveFocalLoss(variant="paper"), x, t)
    torch.testing.assert_close(ours, binary, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours_grad, binary_grad, rtol=1e-12, atol=0)


def test_two_channel_softmax_is_one_channel_on_logit_difference():
    x = logits_like((3, 2, 20, 24), seed=2)
    t = (label_map((3, 1, 20, 24), 2, seed=3) > 0).double()
    two = MonaiAdaptiveFocalLoss(include_background=False, use_softmax=True)
    value, grad = grad_of(two, x, torch.cat([1 - t, t], dim=1))
    difference = (x[:, 1:] - x[:, :1]).clone().requires_grad_(True)
    expected = AdaptiveFocalLoss(variant="paper")(difference, t)
    expected.backward()
    torch.testing.assert_close(value, expected.detach(), rtol=1e-12, atol=0)
    # d/dx1 = dL/dz and d/dx0 = -dL/dz for z = x1 - x0
    torch.testing.assert_close(grad, torch.cat([-difference.grad, difference.grad], dim=1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("channels", [2, 3, 5])
def test_one_vs_rest_logit_is_the_softmax_probability(channels):
    x = logits_like((2, channels, 7, 9), seed=channels)
    z = one_vs_rest_logits(x)
    torch.testing.assert_close(torch.sigmoid(z), torch.softmax(x, dim=1), rtol=1e-12, atol=1e-15)
    if channels == 2:
        assert torch.equal(z[:, 1], x[:, 1] - x[:, 0]) and torch.equal(z[:, 0], x[:, 0] - x[:, 1])


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multichannel_against_numpy(softmax, include_background, reduction):
    labels = label_map((3, 1, 18, 22), 3, seed=4)
    x = logits_like((3, 3, 18, 22), seed=5)
    loss = MonaiAdaptiveFocalLoss(include_background, to_onehot_y=True, use_softmax=softmax, reduction=reduction)
    elements = np_one_vs_rest_loss(x.numpy(), one_hot_np(labels.numpy(), 3), softmax)
    if not include_background:
        elements = elements[:, 1:]
    expected = {"mean": elements.mean(), "sum": elements.mean(axis=(2, 3)).sum(), "none": elements}[reduction]
    # gamma's gradient term is computed in float32 by afl_core.shape, hence 1e-6
    np.testing.assert_allclose(loss(x, labels).numpy(), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_label_map_with_to_onehot_y_equals_one_hot_target(softmax, include_background):
    labels = label_map((2, 1, 6, 16, 16), 4, seed=6)
    x = logits_like((2, 4, 6, 16, 16), seed=7)
    from_labels = MonaiAdaptiveFocalLoss(include_background, to_onehot_y=True, use_softmax=softmax)(x, labels)
    one_hot = torch.from_numpy(one_hot_np(labels.numpy(), 4))
    from_one_hot = MonaiAdaptiveFocalLoss(include_background, use_softmax=softmax)(x, one_hot)
    assert torch.equal(from_labels, from_one_hot)


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_reductions_match_monai_focal_loss(include_background, reduction):
    labels = label_map((3, 1, 16, 20), 3, seed=8)
    x = logits_like((3, 3, 16, 20), seed=9)
    options = dict(include_background=include_background, to_onehot_y=True, reduction=reduction)
    ours = MonaiAdaptiveFocalLoss(alpha=0.25, gamma=2.0, **options)(x, labels)
    monai = FocalLoss(alpha=0.25, gamma=2.0, use_softmax=False, **options)(x, labels)
    torch.testing.assert_close(ours, monai.to(ours.dtype), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_two_channel_softmax_is_monai_softmax_focal_loss_on_the_true_class(reduction):
    # MONAI's softmax focal loss keeps the true class's term in each of the two channels
    # (weights 1 - alpha, alpha); their sum is the binary focal loss of the foreground channel.
    labels = label_map((3, 1, 16, 20), 2, seed=10)
    x = logits_like((3, 2, 16, 20), seed=11)
    options = dict(alpha=0.3, gamma=1.5, to_onehot_y=True, reduction=reduction)
    ours = MonaiAdaptiveFocalLoss(include_background=False, use_softmax=True, **options)(x, labels)
    monai = FocalLoss(include_background=True, use_softmax=True, **options)(x, labels).to(ours.dtype)
    expected = 2 * monai if reduction == "mean" else monai.sum(dim=1, keepdim=True)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_scale_aware_spacing_follows_each_sample_into_its_channels():
    labels = label_map((2, 1, 24, 24), 3, seed=12)
    one_hot = torch.from_numpy(one_hot_np(labels.numpy(), 3))
    x = logits_like((2, 3, 24, 24), seed=13)
    spacing = torch.tensor([[0.5, 0.5], [2.0, 1.0]], dtype=torch.float64)
    ours = MonaiAdaptiveFocalLoss(variant="scale_aware", reduction="none", spacing=[9.0, 9.0])(x, one_hot, spacing)
    binary = AdaptiveFocalLoss(variant="scale_aware", reduction="none")
    for b in range(2):
        for c in range(3):
            expected = binary(x[b : b + 1, c : c + 1], one_hot[b : b + 1, c : c + 1], spacing=spacing[b].tolist())
            torch.testing.assert_close(ours[b : b + 1, c : c + 1], expected, rtol=1e-12, atol=0)


def test_single_channel_ignores_background_and_onehot_options_with_a_warning():
    x = logits_like((2, 1, 12, 12), seed=14)
    t = (label_map((2, 1, 12, 12), 2, seed=15) > 0).double()
    with pytest.warns(UserWarning, match="include_background=False"):
        dropped = MonaiAdaptiveFocalLoss(include_background=False)(x, t)
    with pytest.warns(UserWarning, match="to_onehot_y=True"):
        onehot = MonaiAdaptiveFocalLoss(to_onehot_y=True)(x, t)
    expected = AdaptiveFocalLoss()(x, t)
    assert torch.equal(dropped, expected) and torch.equal(onehot, expected)


@pytest.mark.parametrize(
    "options, x_shape, target, message",
    [
        ({}, (2, 3, 16), torch.zeros(2, 3, 16), r"\(B, C, H, W\)"),
        ({"use_softmax": True}, (2, 1, 8, 8), torch.zeros(2, 1, 8, 8), "use_softmax=False"),
        ({}, (2, 3, 8, 8), torch.zeros(2, 1, 8, 8), "to_onehot_y=True"),
        ({}, (2, 3, 8, 8), torch.zeros(2, 2, 8, 8), r"one-hot \(B, C, \*S\)"),
        ({"to_onehot_y": True}, (2, 3, 8, 8), torch.zeros(2, 3, 8, 8), "label map of shape"),
        ({"to_onehot_y": True}, (2, 3, 8, 8), torch.full((2, 1, 8, 8), 3.0), r"outside the 3 classes"),
        ({"to_onehot_y": True}, (2, 3, 8, 8), torch.full((2, 1, 8, 8), 0.5), r"outside the 3 classes"),
        ({}, (2, 2, 8, 8), torch.full((2, 2, 8, 8), 0.5), "only 0 and 1"),
    ],
)
def test_bad_inputs_say_what_to_fix(options, x_shape, target, message):
    with pytest.raises(ValueError, match=message):
        MonaiAdaptiveFocalLoss(**options)(torch.zeros(x_shape), target)


def test_bad_options_say_what_to_fix():
    with pytest.raises(ValueError, match="reduction"):
        MonaiAdaptiveFocalLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="variant"):
        MonaiAdaptiveFocalLoss(variant="papper")
    with pytest.raises(ValueError, match=r"AdaptiveFocalLoss\(variant='reference'\)"):
        MonaiAdaptiveFocalLoss(variant="reference")
    with pytest.raises(ValueError, match="alpha"):
        MonaiAdaptiveFocalLoss(alpha=1.5)


def test_two_training_steps_of_a_monai_unet():
    torch.manual_seed(0)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0)
    labels = label_map((4, 1, 32, 32), 2, seed=16)
    images = labels.float() + 0.3 * torch.randn(labels.shape)
    loss_fn = MonaiAdaptiveFocalLoss(include_background=False, to_onehot_y=True, use_softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in net.parameters()]
    losses = []
    for _ in range(3):  # two steps, then the loss after them
        loss = loss_fn(net(images), labels)
        losses.append(loss.item())
        if len(losses) == 3:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert all(np.isfinite(losses))
    assert losses[2] < losses[0]
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
