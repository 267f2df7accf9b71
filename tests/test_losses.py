"""A-FL and the baseline registry against independent references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from afl_core.losses import (
    DEGENERATE_ALPHA,
    LOSS_NAMES,
    VARIANTS,
    AdaptiveFocalLoss,
    _FusedFocalLoss,
    adaptive_focal_loss,
    adaptive_parameters,
    focal_loss,
    get_loss,
)
from tests.test_shape import disc, numpy_gradient_magnitude


# ---------------------------------------------------------------- NumPy references
def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def np_focal(x, t, alpha, gamma):
    """Per-voxel focal loss, float64, straight from the paper's formula."""
    log_p, log_1mp = np_log_sigmoid(x), np_log_sigmoid(-x)
    p = np.exp(log_p)
    return -(alpha * t * (1 - p) ** gamma * log_p + (1 - alpha) * (1 - t) * p**gamma * log_1mp)


def np_paper_parameters(t):
    """alpha = 1 - f, gamma = f + g per sample, with the documented degenerate fallback."""
    alphas, gammas = [], []
    for sample in t:
        f = sample.mean()
        g = numpy_gradient_magnitude(sample[0]).mean()
        alphas.append(DEGENERATE_ALPHA if f in (0.0, 1.0) else 1 - f)
        gammas.append(f + g)
    return np.array(alphas), np.array(gammas)


def np_paper_loss(x, t):
    alpha, gamma = np_paper_parameters(t)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return np_focal(x, t, alpha.reshape(shape), gamma.reshape(shape))


def random_case(shape, seed, radius=None):
    """Logits and a mask with a few blobs (or a disc of ``radius``) per sample."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, size=shape)
    t = np.zeros(shape)
    for n in range(shape[0]):
        grid = np.indices(shape[2:])
        centre = [rng.integers(2, s - 2) for s in shape[2:]]
        r = radius if radius is not None else rng.uniform(1.5, min(shape[2:]) / 3)
        t[n, 0] = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= r**2
    return x, t


def tensors(x, t, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype), torch.tensor(t, dtype=dtype)


# ---------------------------------------------------------------- paper variant
@pytest.mark.parametrize("shape", [(4, 1, 32, 40), (2, 1, 6, 20, 24)])
def test_paper_variant_matches_numpy_formula(shape):
    x, t = random_case(shape, seed=len(shape))
    expected = np_paper_loss(x, t)
    xt, tt = tensors(x, t)
    np.testing.assert_allclose(adaptive_focal_loss(xt, tt).item(), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(adaptive_focal_loss(xt, tt, reduction="sum").item(), expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(adaptive_focal_loss(xt, tt, reduction="none").numpy(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(AdaptiveFocalLoss()(xt, tt).item(), expected.mean(), rtol=1e-5)


def test_adaptive_parameters_match_paper_definitions():
    x, t = random_case((5, 1, 48, 48), seed=3)
    alpha, gamma = adaptive_parameters(torch.tensor(t))
    np_alpha, np_gamma = np_paper_parameters(t)
    np.testing.assert_allclose(alpha.numpy(), np_alpha, rtol=1e-6)
    np.testing.assert_allclose(gamma.numpy(), np_gamma, rtol=1e-5)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.75, 0.5), (0.5, 0.0), (0.9, 3.0)])
def test_fixed_alpha_and_gamma_is_torchvision_focal_loss(alpha, gamma):
    x, t = random_case((3, 1, 24, 24), seed=7)
    xt, tt = tensors(x, t)
    for reduction in ("mean", "sum", "none"):
        expected = sigmoid_focal_loss(xt.double(), tt.double(), alpha=alpha, gamma=gamma, reduction=reduction)
        got = adaptive_focal_loss(xt, tt, alpha=alpha, gamma=gamma, reduction=reduction)
        np.testing.assert_allclose(got.double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_one_override_keeps_the_other_term_adaptive():
    x, t = random_case((3, 1, 24, 24), seed=8)
    xt, tt = tensors(x, t)
    alpha, gamma = np_paper_parameters(t)
    only_alpha = np_focal(x, t, 0.3, gamma.reshape(-1, 1, 1, 1)).mean()
    only_gamma = np_focal(x, t, alpha.reshape(-1, 1, 1, 1), 1.5).mean()
    np.testing.assert_allclose(adaptive_focal_loss(xt, tt, alpha=0.3).item(), only_alpha, rtol=1e-5)
    np.testing.assert_allclose(adaptive_focal_loss(xt, tt, gamma=1.5).item(), only_gamma, rtol=1e-5)


def test_stable_for_extreme_logits():
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 3)
    x = torch.tensor([100.0, -100.0, -100.0, 100.0, 0.0, 30.0]).view(1, 1, 2, 3).requires_grad_()
    for variant in ("paper", "scale_aware"):
        loss = adaptive_focal_loss(x, t, variant=variant, reduction="none")
        assert torch.isfinite(loss).all()
        mean = adaptive_focal_loss(x, t, variant=variant)
        (grad,) = torch.autograd.grad(mean, x)
        assert torch.isfinite(grad).all()
    expected = np_paper_loss(x.detach().double().numpy(), t.double().numpy())
    np.testing.assert_allclose(
        adaptive_focal_loss(x, t, reduction="none").detach().numpy(), expected, rtol=1e-5, atol=1e-30
    )  # below float32 range


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("variant", ["paper", "scale_aware"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_fused_gradient(variant, reduction):
    x, t = random_case((2, 1, 6, 7), seed=11, radius=2)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda logits: adaptive_focal_loss(logits, tt, variant=variant, reduction=reduction), (xt,)
    )


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0, 4.5])
def test_fused_loss_is_the_plain_focal_formula_values_and_gradients(gamma, dtype, rtol):
    """The fast path (_FusedFocalLoss, gradient derived by hand) against autograd through
    focal_loss, the plain formula the notebooks show, with per-sample alpha and gamma."""
    x, t = random_case((4, 1, 32, 32), seed=12)
    xt, tt = tensors(2 * x, t, dtype)  # logits up to about +-20: saturated voxels too
    xt.requires_grad_()
    alpha = torch.tensor([0.9, 0.7, 0.5, 0.99], dtype=dtype).view(-1, 1, 1, 1)
    gammas = torch.tensor([gamma, gamma / 2, 0.0, gamma], dtype=dtype).view(-1, 1, 1, 1)
    plain = focal_loss(xt, tt, alpha, gammas, reduction="none")
    for reduction in ("mean", "sum", "none"):
        fused = _FusedFocalLoss.apply(xt, tt, alpha, 1 - alpha, gammas, reduction)
        expected = {"mean": plain.mean(), "sum": plain.sum(), "none": plain}[reduction]
        np.testing.assert_allclose(fused.detach().numpy(), expected.detach().numpy(), rtol=rtol, atol=1e-30)
        weights = torch.rand_like(fused)  # a vector-Jacobian product (one number for mean / sum)
        (by_hand,) = torch.autograd.grad(fused, xt, weights)
        (autograd,) = torch.autograd.grad(expected, xt, weights, retain_graph=True)
        np.testing.assert_allclose(by_hand.numpy(), autograd.numpy(), rtol=rtol, atol=1e-12 * rtol)
    if dtype == torch.float64:
        expected = np_focal(2 * x, t, alpha.numpy(), gammas.numpy())
        np.testing.assert_allclose(plain.detach().numpy(), expected, rtol=1e-6)  # NumPy forms 1 - p


def test_plain_focal_loss_is_torchvision_focal_loss():
    x, t = random_case((3, 1, 24, 24), seed=9)
    xt, tt = tensors(x, t, torch.float64)
    for alpha, gamma in ((0.25, 2.0), (0.8, 0.5), (None, 1.0)):
        expected = sigmoid_focal_loss(xt, tt, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="sum")
        got = focal_loss(xt, tt, alpha, gamma, reduction="sum").item()
        np.testing.assert_allclose(got, expected.item(), rtol=1e-7)  # torchvision forms 1 - p_t


def test_gradcheck_reference_variant():
    x, t = random_case((2, 1, 5, 6), seed=13, radius=2)
    x2 = np.random.default_rng(0).normal(size=(2, 2, 5, 6))
    xt = torch.tensor(x2, requires_grad=True)
    tt = torch.tensor(t)
    assert torch.autograd.gradcheck(lambda logits: adaptive_focal_loss(logits, tt, variant="reference"), (xt,))


def test_no_gradient_flows_into_the_adaptive_terms():
    x, t = random_case((2, 1, 16, 16), seed=14)
    tt = torch.tensor(t, requires_grad=True)
    loss = adaptive_focal_loss(torch.tensor(x, requires_grad=True), tt, reduction="none").sum()
    (grad_t,) = torch.autograd.grad(loss, tt, allow_unused=True)
    # the target enters only through where(): no gradient w.r.t. the statistics
    assert grad_t is None or torch.count_nonzero(grad_t) == 0


# ---------------------------------------------------------------- degenerate masks
def test_empty_mask_falls_back_to_balanced_cross_entropy_and_punishes_false_positives():
    t = torch.zeros(2, 1, 16, 16)
    calm = torch.full((2, 1, 16, 16), -4.0)
    wrong = calm.clone()
    wrong[:, :, 4:8, 4:8] = 4.0  # false positives on a lesion-free slice
    alpha, gamma = adaptive_parameters(t)
    assert torch.all(alpha == DEGENERATE_ALPHA) and torch.all(gamma == 0)
    expected = DEGENERATE_ALPHA * F.binary_cross_entropy_with_logits(wrong, t)
    np.testing.assert_allclose(adaptive_focal_loss(wrong, t).item(), expected.item(), rtol=1e-6)
    assert adaptive_focal_loss(wrong, t) > 10 * adaptive_focal_loss(calm, t)
    for variant in ("paper", "scale_aware"):
        assert torch.isfinite(adaptive_focal_loss(wrong, t, variant=variant))


def test_full_mask_falls_back_to_balanced_alpha():
    t = torch.ones(1, 1, 8, 8)
    alpha, gamma = adaptive_parameters(t)
    assert alpha.item() == DEGENERATE_ALPHA and gamma.item() == pytest.approx(1.0)
    x = torch.full((1, 1, 8, 8), -2.0)  # all false negatives: must cost something
    expected = np_focal(x.double().numpy(), t.double().numpy(), DEGENERATE_ALPHA, 1.0).mean()
    np.testing.assert_allclose(adaptive_focal_loss(x, t).item(), expected, rtol=1e-6)


# ---------------------------------------------------------------- reference variant
def np_reference_gamma_and_weights(t):
    fg = t.sum()
    return fg / t.size + numpy_gradient_magnitude(t[0, 0]).mean(), np.array([1 - fg / t.size, fg / t.size])


@pytest.mark.parametrize("shape", [(3, 1, 24, 28), (2, 1, 6, 16, 16)])
def test_reference_variant_equals_monai_focal_loss(shape):
    from monai.losses import FocalLoss

    _, t = random_case(shape, seed=21)
    x2 = np.random.default_rng(1).normal(0, 2, size=(shape[0], 2, *shape[2:]))
    gamma, weights = np_reference_gamma_and_weights(t)
    monai_loss = FocalLoss(gamma=float(gamma), weight=weights.tolist(), use_softmax=False, reduction="mean")
    one_hot = torch.tensor(np.concatenate([1 - t, t], axis=1))
    expected = monai_loss(torch.tensor(x2), one_hot).item()
    got = adaptive_focal_loss(
        torch.tensor(x2, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), variant="reference"
    ).item()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_reference_variant_elementwise_and_sum_equal_monai():
    from monai.losses import FocalLoss

    _, t = random_case((2, 1, 12, 14), seed=23)
    x2 = np.random.default_rng(2).normal(0, 2, size=(2, 2, 12, 14))
    gamma, weights = np_reference_gamma_and_weights(t)
    one_hot = torch.tensor(np.concatenate([1 - t, t], axis=1))
    expected = FocalLoss(gamma=float(gamma), weight=weights.tolist(), reduction="none")(torch.tensor(x2), one_hot)
    got = adaptive_focal_loss(torch.tensor(x2), torch.tensor(t), variant="reference", reduction="none")
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)  # MONAI runs in float32
    total = adaptive_focal_loss(torch.tensor(x2), torch.tensor(t), variant="reference", reduction="sum")
    np.testing.assert_allclose(total.item(), expected.sum().item(), rtol=1e-6)


def test_reference_variant_uses_only_the_first_samples_smoothness():
    from monai.losses import FocalLoss

    # Two samples with the same foreground count but very different outlines.
    smooth = disc(48, 10)
    rough = np.zeros_like(smooth)
    rough.flat[np.random.default_rng(0).choice(rough.size, int(smooth.sum()), replace=False)] = 1
    t = np.stack([smooth, rough])[:, None].astype(np.float64)
    x2 = np.random.default_rng(1).normal(0, 2, size=(2, 2, 48, 48))
    got = adaptive_focal_loss(torch.tensor(x2), torch.tensor(t), variant="reference").item()
    gamma, weights = np_reference_gamma_and_weights(t)  # smoothness of sample 0 only
    one_hot = torch.tensor(np.concatenate([1 - t, t], axis=1))
    expected = FocalLoss(gamma=float(gamma), weight=weights.tolist())(torch.tensor(x2), one_hot).item()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    swapped = adaptive_focal_loss(torch.tensor(x2[::-1].copy()), torch.tensor(t[::-1].copy()), variant="reference")
    assert abs(swapped.item() - got) > 1e-3 * got  # same voxels, other first sample: other gamma


def test_reference_variant_with_fixed_alpha_is_defined_without_foreground():
    from monai.losses import FocalLoss

    x2 = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    t = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    got = adaptive_focal_loss(x2, t, variant="reference", alpha=0.25)
    expected = FocalLoss(gamma=0.0, weight=[0.75, 0.25])(x2, torch.cat([1 - t, t], dim=1))
    np.testing.assert_allclose(got.item(), expected.item(), rtol=1e-6)  # MONAI keeps weights in float32


def test_reference_variant_without_foreground_is_an_error():
    with pytest.raises(ValueError, match="without foreground"):
        adaptive_focal_loss(torch.randn(2, 2, 8, 8), torch.zeros(2, 1, 8, 8), variant="reference")
    unchecked = adaptive_focal_loss(
        torch.randn(2, 2, 8, 8), torch.zeros(2, 1, 8, 8), variant="reference", check_values=False
    )
    assert torch.isnan(unchecked)


# ---------------------------------------------------------------- ablations (scale-aware: tests/test_scale_aware.py)
def test_gamma_terms_select_the_ablation_parts():
    _, t = random_case((3, 1, 32, 32), seed=31)
    tt = torch.tensor(t, dtype=torch.float32)
    f = t.reshape(3, -1).mean(1)
    g = np.array([numpy_gradient_magnitude(s[0]).mean() for s in t])
    np.testing.assert_allclose(adaptive_parameters(tt, gamma_terms=("volume",))[1].numpy(), f, rtol=1e-5)
    np.testing.assert_allclose(adaptive_parameters(tt, gamma_terms=("smoothness",))[1].numpy(), g, rtol=1e-5)
    assert torch.all(adaptive_parameters(tt, gamma_terms=())[1] == 0)


# ---------------------------------------------------------------- precision, errors
@pytest.mark.parametrize("shape", [(1, 1, 24, 128, 160), (2, 1, 61, 67, 71)])
def test_tiny_lesion_in_a_large_volume_keeps_full_precision(shape):
    # A lesion of one or two voxels: the background weight f must not come out of 1 - (1 - f).
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, size=shape)
    t = np.zeros(shape)
    t.flat[[1234, 98765][: shape[0]]] = 1
    expected = np_paper_loss(x, t).mean()
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        got = adaptive_focal_loss(*tensors(x, t, dtype)).item()
        np.testing.assert_allclose(got, expected, rtol=rtol)


def test_extreme_logit_gradients_match_torchvision_in_float64():
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 3)
    x = torch.tensor([100.0, -100.0, -100.0, 100.0, 0.0, 30.0]).view(1, 1, 2, 3)
    ours = x.clone().requires_grad_()
    adaptive_focal_loss(ours, t, alpha=0.25, gamma=2.0).backward()
    ref = x.double().requires_grad_()
    sigmoid_focal_loss(ref, t.double(), alpha=0.25, gamma=2.0, reduction="mean").backward()
    np.testing.assert_allclose(ours.grad.numpy(), ref.grad.numpy(), rtol=1e-5, atol=1e-12)


def test_no_host_sync_inside_the_loss():
    """CPU stand-in for CUDA's sync debug mode: no op may read a value back to Python."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {"_local_scalar_dense", "is_nonzero", "nonzero", "equal", "item"}

    class RecordSyncs(TorchDispatchMode):
        seen: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in syncing:
                self.seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    x, t = tensors(*random_case((3, 1, 16, 16), seed=52))
    x2 = torch.randn(3, 2, 16, 16)
    # scale_aware measures lesions on the host: here only with a fixed gamma (below: precomputed)
    for logits, kwargs in (
        (x, {}),
        (x2, {"variant": "reference"}),
        (x, {"variant": "scale_aware", "gamma": 2.0}),
        (x2, {"variant": "reference", "alpha": 0.3}),
        (x, {"alpha": 0.3, "gamma": 1.0}),
    ):
        logits = logits.clone().requires_grad_()
        with RecordSyncs() as mode:
            adaptive_focal_loss(logits, t, check_values=False, **kwargs).backward()
        assert mode.seen == [], (kwargs, mode.seen)
    # every per-sample variant, with its parameters computed beforehand (as DataLoader workers do)
    for name, variant in VARIANTS.items():
        if variant.per_sample:
            loss_fn = AdaptiveFocalLoss(name, check_values=False)
            parameters = loss_fn.adaptive_parameters(t, spacing=(0.8, 0.8))
            logits = x.clone().requires_grad_()
            with RecordSyncs() as mode:
                loss_fn(logits, t, parameters=parameters).backward()
            assert mode.seen == [], (name, mode.seen)
    with RecordSyncs() as mode:  # the detector itself works
        adaptive_focal_loss(x, t, check_values=True)
    assert mode.seen


def test_bfloat16_logits_are_computed_in_float32():
    x, t = random_case((2, 1, 16, 16), seed=41)
    xt, tt = tensors(x, t)
    for variant in ("paper", "scale_aware"):
        low = adaptive_focal_loss(xt.bfloat16(), tt, variant=variant)
        assert low.dtype == torch.float32
        reference = adaptive_focal_loss(xt.bfloat16().float(), tt, variant=variant)
        assert torch.equal(low, reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert adaptive_focal_loss(xt, tt).dtype == torch.float32


@pytest.mark.parametrize(
    "logits,target,kwargs,message",
    [
        (torch.full((1, 1, 4, 4), float("nan")), torch.zeros(1, 1, 4, 4), {}, "NaN or Inf"),
        (torch.full((1, 1, 4, 4), float("inf")), torch.zeros(1, 1, 4, 4), {}, "NaN or Inf"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), {}, "does not match"),
        (torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 2.0), {}, "only 0 and 1"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4), {}, "expected 1 logit channel"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {"variant": "reference"}, "expected 2 logit channel"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {"variant": "nope"}, "unknown A-FL variant"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {"reduction": "max"}, "unknown reduction"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {"gamma_terms": ("size",)}, "unknown gamma term"),
        (torch.zeros(4, 4), torch.zeros(4, 4), {}, r"\(N, C, H, W\)"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4), {}, "floating-point"),
        (torch.zeros(0, 1, 4, 4), torch.zeros(0, 1, 4, 4), {}, "batch is empty"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {"alpha": -1.0}, r"alpha must lie in \[0, 1\]"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), {"gamma": -1.0}, "gamma must be >= 0"),
    ],
)
def test_bad_input_gets_a_clear_error(logits, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        adaptive_focal_loss(logits, target, **kwargs)


def test_module_checks_its_settings_when_built():
    with pytest.raises(ValueError, match="unknown reduction"):
        AdaptiveFocalLoss(reduction="avg")
    with pytest.raises(ValueError, match="alpha must lie"):
        AdaptiveFocalLoss(alpha=2.0)


def one_value(value, base=0.0, shape=(2, 1, 8, 8)):
    tensor = torch.full(shape, base)
    tensor[1, 0, 3, 5] = value
    return tensor


@pytest.mark.parametrize(
    "target",
    [
        one_value(0.5, 1.0),
        one_value(1e-30),
        one_value(1 - 2**-24, 1.0),
        one_value(float("nan")),
        one_value(2.0),
        one_value(-1.0),
        one_value(2.0) + one_value(0.5).flip(0),
    ],
)
def test_every_non_binary_label_is_caught(target):
    with pytest.raises(ValueError, match="only 0 and 1"):
        adaptive_focal_loss(torch.zeros_like(target), target)


@pytest.mark.parametrize("logits", [one_value(float("inf")), one_value(-float("inf")), one_value(float("nan"))])
def test_every_non_finite_logit_is_caught(logits):
    with pytest.raises(ValueError, match="NaN or Inf"):
        adaptive_focal_loss(logits, torch.ones_like(logits))  # +inf on a lesion voxel too


def test_value_checks_raise_no_false_alarm():
    huge = one_value(3e38, 3e38)  # finite, but their sum overflows: confirmed voxel by voxel
    assert not torch.isfinite(huge.sum())
    target = torch.rand(2, 1, 8, 8) > 0.5
    for mask in (target, target.to(torch.uint8), target.float(), target.double(), target.half()):
        adaptive_focal_loss(huge, mask, gamma=1.0)  # no error
        get_loss("dice")(torch.zeros(2, 1, 8, 8), mask)


def test_value_checks_can_be_switched_off():
    x = torch.full((1, 1, 4, 4), float("nan"))
    assert torch.isnan(adaptive_focal_loss(x, torch.zeros(1, 1, 4, 4), check_values=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_host_sync_on_cuda():
    """Every variant: paper and reference compute their statistics on the device; per-sample
    variants (scale_aware measures lesions on the host) with parameters computed beforehand."""
    x, t = tensors(*random_case((4, 1, 64, 64), seed=51))
    for name, variant in VARIANTS.items():
        loss_fn = AdaptiveFocalLoss(name, check_values=False)
        parameters = None
        if variant.per_sample:
            parameters = tuple(p.cuda() for p in loss_fn.adaptive_parameters(t, spacing=(0.8, 0.8)))
        elif variant.uses_spacing:
            pytest.fail(f"{name}: a variant that reads the spacing must be per sample to avoid a sync")
        logits = torch.randn(4, variant.channels, 64, 64, device="cuda", requires_grad=True)
        target = t.cuda()
        loss_fn(logits, target, parameters=parameters).backward()  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss_fn(logits, target, parameters=parameters).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------- baseline registry
def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_registry_has_the_eight_losses_of_the_paper():
    assert LOSS_NAMES == ("ce", "dice", "iou", "tversky", "focal", "dice_ce", "dice_focal", "afl")
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("lovasz")
    with pytest.raises(ValueError, match="takes no options"):
        get_loss("dice", smooth=1.0)


def test_baselines_match_numpy_formulas():
    x, t = random_case((3, 1, 20, 20), seed=61)
    xt, tt = tensors(x, t)
    p = np_sigmoid(x)
    tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
    bce = -(t * np_log_sigmoid(x) + (1 - t) * np_log_sigmoid(-x)).mean()
    dice = 1 - 2 * tp / (p.sum() + t.sum())
    focal = np_focal(x, t, 0.5, 2.0).mean() * 2  # no alpha: both classes weight 1
    expected = {
        "ce": bce,
        "dice": dice,
        "iou": 1 - tp / (p.sum() + t.sum() - tp),
        "tversky": 1 - tp / (tp + 0.3 * fp + 0.7 * fn),
        "focal": focal,
        "dice_ce": dice + bce,
        "dice_focal": dice + focal,
        "afl": np_paper_loss(x, t).mean(),
    }
    for name in LOSS_NAMES:
        np.testing.assert_allclose(get_loss(name)(xt, tt).item(), expected[name], rtol=1e-4, err_msg=name)


def test_baselines_validate_their_input_too():
    with pytest.raises(ValueError, match="only 0 and 1"):
        get_loss("dice")(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 3.0))
    afl = get_loss("afl", variant="scale_aware", gamma_terms=("volume",))
    assert isinstance(afl, AdaptiveFocalLoss) and afl.variant == "scale_aware"
