"""The arms of notebooks 04-06 and the settings they train with; training and scoring them.

* **Arms** (:data:`ARMS`, :data:`STUDIES`): a name for each trained configuration, e.g.
  ``"afl_alpha_only"`` = A-FL (paper) with ``gamma=0``. :func:`arm_config` turns one into a
  :class:`~afl_core.train.TrainConfig` (with :func:`tutorial_settings`, the machine's
  defaults shared by notebooks 04 and 06); :func:`training_set` gives the items a run
  trains on.
* **Runs** (:func:`train_arms`, :func:`evaluate_arms`): arms x seeds trained into
  ``RUNS/<arm>-seed<k>`` (:mod:`afl_core.runs`; resuming finished or interrupted runs) and
  scored into a :class:`Study`, the same tables as the committed studies
  (:mod:`afl_core.studies`).

Beside it: :mod:`afl_core.statistics` (seeds and cases, intervals and corrections),
:mod:`afl_core.analysis` (the two protocols, who carries the loss), :mod:`afl_core.viz`
(the figures).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from afl_core.data import SliceDataset, VolumeDataset
from afl_core.environment import choose
from afl_core.evaluate import evaluate_run
from afl_core.models import resolve_device
from afl_core.runs import RunKey, collect, is_finished, is_trained, run_folders
from afl_core.train import HISTORY_COLUMNS, TrainConfig, build_datasets, fit

__all__ = [
    "ARMS",
    "STUDIES",
    "Study",
    "tutorial_settings",
    "arm_config",
    "recorded_arm",
    "training_set",
    "run_folder",
    "train_arms",
    "evaluate_arms",
]

#: arm -> (loss, A-FL variant, A-FL options)
ARMS: dict[str, tuple[str, str | None, dict]] = {
    "ce": ("ce", None, {}),
    "dice": ("dice", None, {}),
    "iou": ("iou", None, {}),
    "tversky": ("tversky", None, {}),
    "focal": ("focal", None, {}),
    "dice_ce": ("dice_ce", None, {}),
    "dice_focal": ("dice_focal", None, {}),
    "afl": ("afl", "paper", {}),
    "afl_reference": ("afl", "reference", {}),
    "afl_scale_aware": ("afl", "scale_aware", {}),
    "afl_gamma_va_only": ("afl", "paper", {"gamma_terms": ["volume"]}),
    "afl_gamma_msa_only": ("afl", "paper", {"gamma_terms": ["smoothness"]}),
    "afl_alpha_only": ("afl", "paper", {"gamma": 0.0}),
    "afl_alpha_half": ("afl", "paper", {"alpha": 0.5}),
    "afl_gamma_2": ("afl", "paper", {"gamma": 2.0}),
}
STUDIES: dict[str, list[str]] = {
    "comparison": [
        "ce",
        "dice",
        "iou",
        "tversky",
        "focal",
        "dice_ce",
        "dice_focal",
        "afl",
        "afl_reference",
        "afl_scale_aware",
    ],
    "ablation": [
        "ce",
        "afl",
        "afl_gamma_va_only",
        "afl_gamma_msa_only",
        "afl_alpha_only",
        "afl_alpha_half",
        "afl_gamma_2",
        "afl_reference",
        "afl_scale_aware",
    ],
}


def check_arm(arm: str) -> None:
    """Raise a ``ValueError`` naming the arms when ``arm`` is not one of :data:`ARMS`."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {list(ARMS)}")


def recorded_arm(config: dict) -> tuple[str | None, str | None, dict]:
    """``(loss, variant, options)`` as a run's ``config.json`` records them, in the form of
    :data:`ARMS`' entries: a run of ``arm`` records exactly ``ARMS[arm]``. An A-FL run from
    before the ``variant`` setting reads as its default, ``"paper"``."""
    loss = config.get("loss")
    variant = config.get("variant") or ("paper" if loss == "afl" else None)
    return loss, variant, config.get("loss_options") or {}


# --------------------------------------------------------------------------- training and scoring arms


def tutorial_settings(
    data: str | Path,
    *,
    device: str = "auto",
    quick: bool = False,
    encoder: str | None = None,
    encoder_weights: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    val_fraction: float | None = None,
) -> dict:
    """The training settings of notebooks 04 and 06 (shared, so that 06 reuses 04's runs):
    each ``None`` chooses for the machine (:func:`afl_core.environment.choose`):

    ============== ===================== ====================== ===========================
    setting        GPU                   CPU                    ``quick`` (CI)
    ============== ===================== ====================== ===========================
    encoder        resnet50 (paper's)    tu-resnet10t           tu-mobilenetv3_small_050
    weights        imagenet              none                   as CPU / GPU
    epochs         30                    12                     2
    batch size     16                    8                      as CPU / GPU
    optimiser      sgd (lr 0.1, paper's) adam (lr 1e-3)         as CPU / GPU
    val fraction   0.2                   0.5 (8 of 16 cases)    as CPU / GPU
    ============== ===================== ====================== ===========================

    The GPU column is a 2D setup (slices, batch 16) with the paper's encoder and optimiser,
    this project's choice; the paper trained 3D volumes with batch 1, which
    ``recipe="authors"`` reproduces (:mod:`afl_core.recipes`).

    Returns keywords for :func:`arm_config` (all but ``out`` and ``seed``), without
    progress bars (the notebooks print one line per run).
    """
    on_gpu = resolve_device(device).type == "cuda"
    return dict(
        data=str(data),
        device=device,
        progress=False,
        encoder=choose(
            encoder, gpu="resnet50", cpu="tu-resnet10t", quick="tu-mobilenetv3_small_050", on_gpu=on_gpu, is_quick=quick
        ),
        encoder_weights=choose(encoder_weights, gpu="imagenet", cpu="none", on_gpu=on_gpu),
        epochs=choose(epochs, gpu=30, cpu=12, quick=2, on_gpu=on_gpu, is_quick=quick),
        batch_size=choose(batch_size, gpu=16, cpu=8, on_gpu=on_gpu),
        optimizer=choose(optimizer, gpu="sgd", cpu="adam", on_gpu=on_gpu),
        val_fraction=choose(val_fraction, gpu=0.2, cpu=0.5, on_gpu=on_gpu),
    )


def arm_config(arm: str, **settings) -> TrainConfig:
    """The :class:`~afl_core.train.TrainConfig` of ``arm``: its loss, variant and options,
    plus ``settings`` (``data``, ``out``, ``encoder``, ``epochs``, ``seed``, ...)."""
    check_arm(arm)
    loss, variant, options = ARMS[arm]
    return TrainConfig(**settings, loss=loss, variant=variant, loss_options=dict(options))


def training_set(config: TrainConfig, *, augment: bool | None = None) -> SliceDataset | VolumeDataset:
    """The training items (2D slices, or volumes with ``dims=3``) of a run exactly as
    :func:`~afl_core.train.fit` builds them: the same case split, item size, lesion
    oversampling and seed; ``augment`` overrides the config's (``False``: the stored items)."""
    if augment is not None:
        config = dataclasses.replace(config, augment=augment)
    return build_datasets(config)[0]


def run_folder(runs: str | Path, arm: str, seed: int) -> Path:
    """``runs/<arm>-seed<seed>`` (:class:`afl_core.runs.RunKey`): where :func:`train_arms` puts a run."""
    check_arm(arm)
    return Path(runs) / RunKey(arm, int(seed)).name


def train_arms(arms: Sequence[str], seeds: Sequence[int], runs: str | Path, **settings) -> pd.DataFrame:
    """Train every arm with every seed (same data, split and settings; the seed changes
    the initialisation, the order of the slices and their augmentation) into
    :func:`run_folder`, resuming a run that already has epochs (a finished one is not
    trained again). Prints one line per run; returns the runs' histories stacked, led by
    ``arm`` and ``seed`` (as :func:`afl_core.runs.collect` labels them)."""
    histories = []
    for seed in seeds:
        for arm in arms:
            out = run_folder(runs, arm, seed)
            result = fit(
                arm_config(arm, **settings, seed=int(seed), out=str(out)), resume=(out / "config.json").is_file()
            )
            last = result.history.iloc[-1]
            print(
                f"{arm:<18s} seed {seed}: {len(result.history)} epochs, train loss {last['train_loss']:.4f}, "
                f"validation Dice {last['val_dice']:.3f} (last epoch), {result.history['seconds'].sum():.0f} s"
            )
            histories.append(result.history.assign(**RunKey(arm, int(seed)).labels))
    history = pd.concat(histories, ignore_index=True)
    first = ["arm", "seed", *HISTORY_COLUMNS]
    return history[first + [c for c in history if c not in first]]


@dataclass
class Study:
    """The tables of a study: ``per_case`` (arm x seed x case), ``history`` (arm x seed
    x epoch), ``config`` (how they were made) and ``source`` (a folder or a run root)."""

    name: str
    per_case: pd.DataFrame
    history: pd.DataFrame
    config: dict = field(default_factory=dict)
    source: str = ""

    @property
    def arms(self) -> list[str]:
        """The arms in the order of :data:`STUDIES` (others after them, as found)."""
        found = list(dict.fromkeys(self.per_case["arm"]))
        order = STUDIES.get(self.name, [])
        return [a for a in order if a in found] + [a for a in found if a not in order]


def evaluate_arms(
    runs: str | Path, arms: Iterable[str] | None = None, *, device: str = "auto", name: str = "runs"
) -> Study:
    """Score every trained ``<arm>-seed<k>`` run in ``runs`` on its validation cases that is
    not scored yet (:func:`afl_core.evaluate.evaluate_run`: the last epoch's weights, 3D per
    case, into ``RUN/eval/``) and gather them (:func:`afl_core.runs.collect`) into the tables
    :func:`load_study` reads, arms in the order of the study ``name`` (else of :data:`ARMS`)."""
    runs = Path(runs)
    order = STUDIES.get(name, list(ARMS))
    found = {
        key: folder
        for key, folder in run_folders(runs).items()
        if key.fold is None and key.arm in ARMS and (arms is None or key.arm in arms) and is_trained(folder)
    }
    if not found:
        raise FileNotFoundError(
            f"no trained <arm>-seed<k> run in {runs}: train them first "
            "(notebook 04, or afl_core.experiments.train_arms)"
        )
    for folder in found.values():
        if not is_finished(folder):
            evaluate_run(folder, device=device, progress=False)
    keys = sorted(found, key=lambda k: (order.index(k.arm) if k.arm in order else len(order), list(ARMS).index(k.arm)))
    tables = collect(found[key] for key in keys)
    config = {"runs": str(runs), "arms": sorted({k.arm for k in keys})}
    return Study(name, tables.per_case, tables.history, config, str(runs))
