"""Recipes: a named set of training choices that one flag applies (``--recipe authors``).

``authors`` is the A-FL authors' PI-CAI experiment as their code runs it
(``rakibuliuict/AFL-CIBM`` at commit 1b57412; paths below are in that repository). Each
:class:`Choice` names the :class:`~afl_core.train.TrainConfig` field it sets, the value, and
the file and line it comes from; ``docs/authors_recipe.md`` explains each one and what the
project does differently where it cannot do the same.

A recipe fills only the settings left unset: anything given explicitly (``--size``,
``--encoder``, ...) wins, and :func:`describe` marks it as changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Choice", "RECIPES", "AUTHORS_COMMIT", "describe"]

AUTHORS_COMMIT = "rakibuliuict/AFL-CIBM@1b57412"
_PICAI = "src/PICAI/training_setup"


@dataclass(frozen=True)
class Choice:
    """One setting of a recipe: ``field`` of ``TrainConfig`` gets ``value``, as ``source`` does."""

    field: str
    value: Any
    source: str
    what: str
    #: ``(field, value)``: the choice applies only where that setting has that value
    #: (the reference variant only to A-FL, lr 0.1 only to SGD).
    requires: tuple[str, Any] | None = None


RECIPES: dict[str, tuple[Choice, ...]] = {
    "authors": (
        Choice("dims", 3, f"{_PICAI}/model.py:21-26", "a 3D U-Net on whole volumes"),
        Choice("batch_size", 1, f"{_PICAI}/Dataloader.py:59", "one volume per step"),
        Choice(
            "size",
            (24, 160, 128),
            f"{_PICAI}/augmentations/train_augment.py:13",
            "Resized(spatial_size=(160, 128, 24)) in NIfTI order (X, Y, Z), i.e. (D, H, W) = (24, 160, 128)",
        ),
        Choice(
            "resize",
            True,
            f"{_PICAI}/augmentations/train_augment.py:13 and {_PICAI}/train.py:36",
            "area resampling (MONAI Resized's default mode) of image and label, then label != 0; "
            "scored on that resized grid",
        ),
        Choice("loss", "afl", f"{_PICAI}/train.py:51-57", "their AFLoss"),
        Choice(
            "variant",
            "reference",
            f"{_PICAI}/train.py:42-53 and {_PICAI}/utils/utils.py:20-27",
            "2 output channels, gamma and class weights as their code computes them",
            requires=("loss", "afl"),
        ),
        Choice("encoder", "resnet50", f"{_PICAI}/model.py:22", "ResNet50 encoder"),
        Choice(
            "encoder_weights",
            None,
            f"{_PICAI}/model.py:21-26",
            "theirs: smp-3d's default ImageNet weights; no 3D ImageNet weights here, so random",
        ),
        Choice("optimizer", "sgd", "src/PICAI/main.py:10", "SGD, momentum 0.9, Nesterov"),
        Choice("lr", 0.1, "src/PICAI/main.py:10", "learning rate 0.1", requires=("optimizer", "sgd")),
        Choice("weight_decay", 1e-5, "src/PICAI/main.py:10", "weight decay 1e-5"),
        Choice("schedule", "constant", "src/PICAI/main.py:10", "no learning-rate scheduler"),
        Choice("oversample_lesions", 0.0, f"{_PICAI}/Dataloader.py:59", "every volume once per epoch"),
        Choice(
            "augment",
            True,
            f"{_PICAI}/augmentations/train_augment.py:16-18",
            "flips of all three axes (p 0.5 each); intensity scale and shift (lines 21-22)",
        ),
        Choice("amp", False, f"{_PICAI}/train.py:49", "float32: no autocast"),
    ),
}


def describe(name: str, config) -> str:
    """The recipe's choices, one per line, with the value ``config`` uses and where it comes
    from; a value that differs from the recipe's (an explicit override) is marked."""
    lines = [f"recipe {name!r}: the choices of {AUTHORS_COMMIT} (docs/authors_recipe.md)"]
    for choice in RECIPES[name]:
        used = getattr(config, choice.field)
        if isinstance(used, (list, tuple)):
            used = tuple(used)
        mark = "" if used == choice.value else f"   <- changed from the recipe's {choice.value!r}"
        lines.append(f"  {choice.field:<18} = {used!r:<18} {choice.source}: {choice.what}{mark}")
    return "\n".join(lines)
