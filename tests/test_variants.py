"""A-FL's variants as declarations: the call a learner reads, and a new variant in one place."""

from __future__ import annotations

import inspect
import os
import sys

import pandas as pd
import pytest
import torch

import afl_core
from afl_core import losses
from afl_core.losses import VARIANTS, AdaptiveFocalLoss, Variant, adaptive_focal_loss
from afl_core.train import TrainConfig, fit
from tests.test_losses import random_case, tensors


def functions_entered(call) -> dict[str, int]:
    """The functions of afl_core that ``call()`` enters, with their source lines."""
    root = os.path.dirname(afl_core.__file__)
    entered = {}

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(root) and not code.co_name.startswith("<"):
            entered[f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}"] = len(
                inspect.getsourcelines(code)[0]
            )

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return entered


def test_the_default_call_reads_in_a_few_short_functions():
    """AdaptiveFocalLoss()(logits, target), forward and backward: at most 8 functions of
    afl_core and 200 source lines (docstrings included) between the call and the loss."""
    x, t = tensors(*random_case((4, 1, 32, 32), seed=1))
    x.requires_grad_()
    loss_fn = AdaptiveFocalLoss()
    entered = functions_entered(lambda: loss_fn(x, t).backward())
    assert len(entered) <= 8 and sum(entered.values()) <= 200, entered
    assert any("paper_parameters" in name for name in entered)  # the rule is there to read


def test_every_variant_is_one_complete_declaration():
    for name, variant in VARIANTS.items():
        assert isinstance(variant, Variant) and variant.name == name
        assert variant.channels in (1, 2) and variant.lesion_free
        assert AdaptiveFocalLoss(name).spec is variant


@pytest.mark.parametrize("variant", [name for name, v in VARIANTS.items() if v.per_sample])
def test_parameters_computed_item_by_item_give_the_loss_of_the_batch(variant):
    """What DataLoader workers compute per item (ItemParameters) and hand to the loss."""
    x, t = tensors(*random_case((4, 1, 32, 32), seed=2))
    spacing = torch.tensor([[0.5, 0.5], [1.0, 1.0], [0.7, 0.9], [2.0, 2.0]])
    loss_fn = AdaptiveFocalLoss(variant)
    per_item = [loss_fn.adaptive_parameters(t[i : i + 1], spacing[i : i + 1]) for i in range(4)]
    alpha, gamma = (torch.cat(values) for values in zip(*per_item))
    expected = loss_fn(x, t, spacing=spacing)
    assert torch.equal(loss_fn(x, t, parameters=(alpha, gamma)), expected)


def test_a_new_variant_is_one_declaration_that_trains_through_fit(dataset, tmp_path, monkeypatch):
    """A toy variant registered here alone trains an epoch: nothing else names variants."""
    seen_shapes = []

    def half_alpha_size_gamma(target, spacing=None, gamma_terms=losses.GAMMA_TERMS):
        seen_shapes.append(tuple(target.shape))
        f = target.flatten(1).double().mean(1)
        return torch.full_like(f, 0.5), 10 * f

    toy = Variant("toy", half_alpha_size_gamma, lesion_free="alpha 0.5, gamma 0")
    monkeypatch.setitem(VARIANTS, "toy", toy)
    result = fit(
        TrainConfig(
            data=dataset,
            out=tmp_path / "toy",
            loss="afl",
            variant="toy",
            encoder="tu-mobilenetv3_small_050",
            encoder_weights=None,
            epochs=1,
            batch_size=4,
            progress=False,
        )
    )
    history = pd.read_csv(result.run_dir / "history.csv")
    assert len(history) == 1 and history["train_loss"].notna().all()
    assert (1, 1, *seen_shapes[0][2:]) in seen_shapes  # one item at a time: in the DataLoader's items
    x, t = tensors(*random_case((2, 1, 16, 16), seed=3))
    f = t.flatten(1).mean(1).view(-1, 1, 1, 1)
    expected = losses.focal_loss(x.double(), t.double(), 0.5, 10 * f.double()).float()
    torch.testing.assert_close(adaptive_focal_loss(x, t, variant="toy"), expected)
