"""The experiments behind notebooks 04-06: the arms compared, where their results live,
how seeds and cases are aggregated, who carries the loss, and the figures.

* **Arms** (:data:`ARMS`, :data:`STUDIES`): a name for each trained configuration, e.g.
  ``"afl_alpha_only"`` = A-FL (paper) with ``gamma=0``. :func:`arm_config` turns one into a
  :class:`~afl_core.train.TrainConfig` (with :func:`tutorial_settings`, the machine's
  defaults shared by notebooks 04 and 06); :func:`training_set` gives the items a run
  trains on; :func:`train_arms` trains arms x seeds into ``RUNS/<arm>-seed<k>``
  (resuming finished or interrupted runs) and :func:`evaluate_arms` scores them into the
  same tables as the committed studies.
* **Committed studies** (:func:`load_study`): ``results/<study>/per_case.csv`` (one row
  per arm x seed x case), ``history.csv`` (one row per arm x seed x epoch) and
  ``config.json`` (the command that made them), written by
  ``benchmarks/compare_losses.py``.
* **Two protocols** (:func:`protocol_effects`): what separates the authors' soft DSC
  from the standard Dice, arm by arm. (Seeds and cases, intervals and corrections:
  :func:`afl_core.metrics.seed_summary`, :func:`afl_core.metrics.compare_to_reference`.)
* **Who carries the loss** (:func:`confident_logits`, :func:`voxel_losses`,
  :func:`training_batches`, :func:`loss_shares`): the loss of every voxel when the
  network gives the true class probability ``p_t`` (one value, or one for background and
  one for lesion voxels), summed over lesion-free slices, the background of lesion slices
  and the lesion voxels of the batches training draws.
* **Figures** (:func:`plot_runs`, :func:`plot_seed_spread`, :func:`plot_comparisons`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from afl_core.data import SliceDataset, VolumeDataset
from afl_core.environment import choose
from afl_core.losses import AdaptiveFocalLoss
from afl_core.models import resolve_device
from afl_core.train import TrainConfig, _datasets, fit

__all__ = [
    "ARMS",
    "STUDIES",
    "PER_CASE_COLUMNS",
    "HISTORY_COLUMNS",
    "DISTANCE_COLUMNS",
    "study_table",
    "SHARE_PARTS",
    "Study",
    "tutorial_settings",
    "arm_config",
    "training_set",
    "run_folder",
    "train_arms",
    "evaluate_arms",
    "results_dir",
    "load_study",
    "make_study_data",
    "protocol_effects",
    "seed_differences",
    "confident_logits",
    "voxel_losses",
    "training_batches",
    "loss_shares",
    "plot_runs",
    "plot_seed_spread",
    "plot_comparisons",
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
PER_CASE_COLUMNS = ("loss", "seed", "case", "dice", "iou", "hd95_mm", "lesion_f1", "paper_dice", "paper_iou")
#: :func:`afl_core.evaluate.evaluate_run`'s distances, named with their unit in every study table
DISTANCE_COLUMNS = {"hd95": "hd95_mm", "hd95_penalised": "hd95_penalised_mm"}
HISTORY_COLUMNS = ("loss", "seed", "epoch", "train_loss", "val_loss", "val_dice")
#: the three parts of the loss :func:`loss_shares` reports
SHARE_PARTS = ("lesion-free slices", "background of lesion slices", "lesion voxels")
_RESULT_FILES = ("per_case.csv", "history.csv", "config.json")
#: the repository's committed tables (absent where only the package is installed)
REPO_RESULTS = Path(__file__).resolve().parent.parent / "results"
_RUN_NAME = re.compile(r"(?P<arm>[a-z0-9_]+)-seed(?P<seed>\d+)")


def _check_arm(arm: str) -> None:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {list(ARMS)}")


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
    _check_arm(arm)
    loss, variant, options = ARMS[arm]
    return TrainConfig(**settings, loss=loss, variant=variant, loss_options=dict(options))


def training_set(config: TrainConfig, *, augment: bool | None = None) -> SliceDataset | VolumeDataset:
    """The training items (2D slices, or volumes with ``dims=3``) of a run exactly as
    :func:`~afl_core.train.fit` builds them: the same case split, item size, lesion
    oversampling and seed; ``augment`` overrides the config's (``False``: the stored items)."""
    if augment is not None:
        config = dataclasses.replace(config, augment=augment)
    return _datasets(config)[0]


def run_folder(runs: str | Path, arm: str, seed: int) -> Path:
    """``runs/<arm>-seed<seed>``: where :func:`train_arms` puts a run."""
    _check_arm(arm)
    return Path(runs) / f"{arm}-seed{int(seed)}"


def train_arms(arms: Sequence[str], seeds: Sequence[int], runs: str | Path, **settings) -> pd.DataFrame:
    """Train every arm with every seed (same data, split and settings; the seed changes
    the initialisation, the order of the slices and their augmentation) into
    :func:`run_folder`, resuming a run that already has epochs (a finished one is not
    trained again). Prints one line per run; returns the runs' histories stacked, with
    ``loss`` (the arm) and ``seed`` columns."""
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
            histories.append(result.history.assign(loss=arm, seed=int(seed)))
    return _history_columns_first(pd.concat(histories, ignore_index=True))


def study_table(per_case: Iterable[pd.DataFrame], first: Sequence[str] = PER_CASE_COLUMNS) -> pd.DataFrame:
    """Per-case tables of :func:`afl_core.evaluate.evaluate_run`, each already labelled with
    its run (``loss``, ``seed``, ...), as one study table: distances named in mm
    (:data:`DISTANCE_COLUMNS`), ``first`` leading, the other columns as they come. The one
    shape of ``per_case.csv`` for the committed studies, the notebooks' runs and sweeps."""
    table = pd.concat(per_case, ignore_index=True).rename(columns=DISTANCE_COLUMNS)
    return table[list(first) + [c for c in table if c not in first]]


def _history_columns_first(history: pd.DataFrame) -> pd.DataFrame:
    return history[list(HISTORY_COLUMNS) + [c for c in history if c not in HISTORY_COLUMNS]]


def _finished_runs(runs: Path, arms: Iterable[str] | None) -> Iterator[tuple[str, int, Path]]:
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        match = _RUN_NAME.fullmatch(folder.name)
        if (
            match
            and match["arm"] in ARMS
            and (arms is None or match["arm"] in arms)
            and (folder / "checkpoint_last.pt").is_file()
        ):
            yield match["arm"], int(match["seed"]), folder


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
        found = list(dict.fromkeys(self.per_case["loss"]))
        order = STUDIES.get(self.name, [])
        return [a for a in order if a in found] + [a for a in found if a not in order]


def evaluate_arms(
    runs: str | Path, arms: Iterable[str] | None = None, *, device: str = "auto", name: str = "runs"
) -> Study:
    """Score every finished ``<arm>-seed<k>`` run in ``runs`` on its validation cases
    (:func:`afl_core.evaluate.evaluate_run`: the last epoch's weights, 3D per case; it
    also writes ``RUN/eval/``) into the tables :func:`load_study` reads."""
    from afl_core.evaluate import evaluate_run

    runs = Path(runs)
    found = list(_finished_runs(runs, None if arms is None else set(arms)))
    if not found:
        raise FileNotFoundError(
            f"no finished <arm>-seed<k> run in {runs}: train them first "
            "(notebook 04, or afl_core.experiments.train_arms)"
        )
    per_case, history = [], []
    for arm, seed, folder in found:
        scores = evaluate_run(folder, device=device, progress=False).per_case
        per_case.append(scores.assign(loss=arm, seed=seed))
        history.append(pd.read_csv(folder / "history.csv").assign(loss=arm, seed=seed))
    table = study_table(per_case)
    return Study(
        name,
        table,
        _history_columns_first(pd.concat(history, ignore_index=True)),
        {"runs": str(runs), "arms": sorted({a for a, _, _ in found})},
        str(runs),
    )


# --------------------------------------------------------------------------- committed studies


def results_dir(
    study: str, root: str | Path | None = None, cache: str | Path = "~/.cache/afl-tutorial/results"
) -> Path:
    """Folder holding the tables of ``study`` (:data:`_RESULT_FILES`): ``root/<study>`` when
    ``root`` is given (e.g. the ``--results`` of a re-run benchmark); otherwise the
    repository's ``results/<study>`` in a clone, or (an installed package, e.g. on Colab)
    a copy downloaded once from the repository into ``cache``."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose from {list(STUDIES)}")
    if root is not None:
        return Path(root) / study
    in_repo = REPO_RESULTS / study
    if all((in_repo / name).is_file() for name in _RESULT_FILES):
        return in_repo
    import urllib.request

    from afl_core._io import atomic_target
    from afl_core.links import raw_url

    target = Path(cache).expanduser() / study
    for name in _RESULT_FILES:
        if not (target / name).is_file():
            with atomic_target(target / name) as tmp:
                urllib.request.urlretrieve(raw_url(f"results/{study}/{name}"), tmp)
    return target


def load_study(study: str, root: str | Path | None = None) -> Study:
    """The committed tables of ``study`` (``"comparison"`` or ``"ablation"``) from
    :func:`results_dir` ``(study, root)``, with their columns checked."""
    import json

    folder = results_dir(study, root)
    missing = [name for name in _RESULT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}: make them with benchmarks/compare_losses.py (the command is in the README)"
        )
    per_case = pd.read_csv(folder / "per_case.csv")
    history = pd.read_csv(folder / "history.csv")
    for name, table, needed in (
        ("per_case.csv", per_case, PER_CASE_COLUMNS),
        ("history.csv", history, HISTORY_COLUMNS),
    ):
        absent = [c for c in needed if c not in table]
        if absent:
            raise ValueError(
                f"{folder / name} lacks columns {absent}; it was not written by benchmarks/compare_losses.py"
            )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return Study(study, per_case, history, config, str(folder))


def make_study_data(
    root: str | Path, *, cases: int = 40, depth: int = 8, size: int = 64, progress: bool = False
) -> Path:
    """The synthetic dataset of the committed studies (``benchmarks/compare_losses.py``):
    ``cases`` volumes of ``depth x size x size`` voxels, small lesions (radius 1.5 voxels
    to 10 % of ``size``), 15 % lesion-free cases, seed 0. Returns its folder."""
    from afl_core.synthetic import make_dataset

    return make_dataset(
        root,
        cases,
        seed=0,
        shape=(depth, size, size),
        lesion_radius=(1.5, 0.1 * size),
        irregularity=(0.0, 0.6),
        empty_fraction=0.15,
        progress=progress,
    )


# --------------------------------------------------------------------------- seeds and cases


def _check_columns(per_case: pd.DataFrame, *columns: str) -> None:
    absent = [c for c in ("loss", "seed", "case", *columns) if c not in per_case]
    if absent:
        raise KeyError(f"the per-case table lacks columns {absent} (columns: {list(per_case.columns)})")


def protocol_effects(per_case: pd.DataFrame) -> pd.DataFrame:
    """Per arm (all seeds and cases pooled): the standard ``dice``, the soft lesion Dice
    of the authors' protocol (``paper_dice_foreground``), their DSC (``paper_dice``:
    lesion and background channel averaged) and the differences that make the gap:
    ``softness`` (soft minus hard lesion Dice) and ``background`` (what averaging in the
    background channel adds to the soft lesion Dice); ``paper - standard`` is their sum.
    The last two columns split ``paper - standard`` by cases with and without a lesion."""
    _check_columns(per_case, "dice", "paper_dice", "paper_dice_foreground", "target_voxels")
    rows = {}
    for arm, df in per_case.groupby("loss", sort=False):
        gap = df["paper_dice"] - df["dice"]
        lesion = df["target_voxels"] > 0
        rows[arm] = {
            "standard DSC": df["dice"].mean(),
            "soft lesion Dice": df["paper_dice_foreground"].mean(),
            "paper DSC": df["paper_dice"].mean(),
            "softness": (df["paper_dice_foreground"] - df["dice"]).mean(),
            "background": (df["paper_dice"] - df["paper_dice_foreground"]).mean(),
            "paper - standard": gap.mean(),
            "paper - standard (lesion cases)": gap[lesion].mean(),
            "paper - standard (lesion-free cases)": gap[~lesion].mean(),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("arm")


def seed_differences(per_case: pd.DataFrame, reference: str, metric: str = "dice") -> pd.DataFrame:
    """Each arm minus ``reference``, seed by seed: the mean of ``metric`` over the cases of
    the arm's run with seed ``s`` minus that of the reference's run with the same seed (the
    same initialisation, slice order and augmentation draws). Columns ``seed <s>``, then
    ``min``, ``max`` and ``same sign`` (True when every seed puts the arm on the same side
    of the reference). A case bootstrap cannot see a seed that moves all cases at once;
    this table shows it."""
    _check_columns(per_case, metric)
    means = per_case.pivot_table(index="loss", columns="seed", values=metric, aggfunc="mean", sort=False)
    if reference not in means.index:
        raise ValueError(f"reference {reference!r} is not an arm of the table ({list(means.index)})")
    diff = means.drop(index=reference) - means.loc[reference]
    out = diff.rename(columns=lambda s: f"seed {s}").rename_axis(index="arm", columns=None)
    out["min"], out["max"] = diff.min(axis=1), diff.max(axis=1)
    out["same sign"] = (diff > 0).all(axis=1) | (diff < 0).all(axis=1)
    return out


# --------------------------------------------------------------------------- who carries the loss


def confident_logits(target: torch.Tensor, p_t: float | tuple[float, float], channels: int = 1) -> torch.Tensor:
    """Logits under which every voxel's true class has probability ``p_t``, or
    ``p_t = (p_background, p_lesion)`` for background and lesion voxels apart:
    ``x = log(p / (1 - p))`` on a lesion voxel, ``-log(p / (1 - p))`` on a background one.
    ``channels=2`` gives the (background, foreground) logits of A-FL's
    ``variant="reference"``."""
    p_background, p_lesion = (p_t, p_t) if np.isscalar(p_t) else p_t
    for p in (p_background, p_lesion):
        if not 0.0 < p < 1.0:
            raise ValueError(f"p_t must lie strictly between 0 and 1, got {p_t}")
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    fg = torch.where(
        target > 0, math.log(p_lesion / (1.0 - p_lesion)), -math.log(p_background / (1.0 - p_background))
    ).float()
    return fg if channels == 1 else torch.cat([-fg, fg], dim=1)


def _per_voxel_loss(arm: str) -> AdaptiveFocalLoss:
    loss, variant, options = ARMS[arm]
    if loss == "afl":
        return AdaptiveFocalLoss(variant, reduction="none", check_values=False, **options)
    # Per-voxel forms of the two baselines, up to a constant factor that no share sees:
    # ce = 2 x (alpha 0.5, gamma 0) and focal = 2 x (alpha 0.5, gamma 2).
    fixed = {"ce": 0.0, "focal": 2.0}
    if loss not in fixed:
        raise ValueError(
            f"arm {arm!r}: {loss!r} has no per-voxel loss (overlap losses are defined per batch); "
            f"use an A-FL arm, 'ce' or 'focal'"
        )
    return AdaptiveFocalLoss("paper", alpha=0.5, gamma=fixed[loss], reduction="none", check_values=False)


def voxel_losses(
    arm: str, target: torch.Tensor, p_t: float | tuple[float, float], spacing: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of ``arm`` on every voxel of the batch ``target`` ``(N, 1, *S)`` when the
    network gives the true class probability ``p_t`` (:func:`confident_logits`),
    shaped like ``target`` (``variant="reference"``: its two channels summed per voxel).
    ``"ce"`` and ``"focal"`` are returned at half their value (alpha 0.5). ``spacing`` goes
    to a loss that uses it."""
    _check_arm(arm)
    module = _per_voxel_loss(arm)
    channels = 2 if ARMS[arm][1] == "reference" else 1
    logits = confident_logits(target, p_t, channels)
    if getattr(module, "uses_spacing", False):
        values = module(logits, target.float(), spacing=spacing)
    else:
        values = module(logits, target.float())
    return values.sum(dim=1, keepdim=True)


def training_batches(dataset: SliceDataset, epochs: Sequence[int], batch_size: int) -> Iterator[dict]:
    """The batches of ``label`` (and ``spacing`` when items carry it) that
    :func:`afl_core.train.fit` draws in ``epochs`` (its sampler, whole batches only),
    without augmentation: build ``dataset`` with ``augment=False`` and the run's
    ``oversample_lesions`` and ``seed``."""
    for epoch in epochs:
        order = list(dataset.sampler(epoch))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            items = [dataset[i] for i in order[start : start + batch_size]]
            batch = {"label": torch.stack([item["label"] for item in items])}
            if "spacing" in items[0]:
                batch["spacing"] = torch.stack([torch.as_tensor(item["spacing"]) for item in items])
            yield batch


def loss_shares(arm: str, batches: Iterable[dict], p_t: float | tuple[float, float]) -> dict[str, float]:
    """Where the loss of ``arm`` sits at confidence ``p_t``, summed over ``batches``
    (:func:`training_batches`): the shares of :data:`SHARE_PARTS` (summing to 1),
    ``empty / lesion slice`` (the mean loss of a lesion-free slice over that of a lesion
    slice) and ``skipped batches`` (lesion-free batches, which ``variant="reference"``
    leaves out as training does).
    """
    totals = dict.fromkeys(SHARE_PARTS, 0.0)
    per_slice = {True: [], False: []}
    skipped = 0
    for batch in batches:
        label = batch["label"]
        if ARMS[arm][1] == "reference" and not label.any():
            skipped += 1
            continue
        values = voxel_losses(arm, label, p_t, batch.get("spacing")).double()
        lesion_voxels = label > 0
        slice_sums = values.flatten(1).sum(1)
        has_lesion = lesion_voxels.flatten(1).any(1)
        totals["lesion-free slices"] += float(slice_sums[~has_lesion].sum())
        lesion_sum = float(values[lesion_voxels].sum())
        totals["lesion voxels"] += lesion_sum
        totals["background of lesion slices"] += float(slice_sums[has_lesion].sum()) - lesion_sum
        for flag in (True, False):
            per_slice[flag] += slice_sums[has_lesion == flag].tolist()
    whole = sum(totals.values())
    if whole == 0:
        raise ValueError(f"arm {arm!r}: no loss in the batches given (no batch, or every one skipped)")
    shares = {part: value / whole for part, value in totals.items()}
    ratio = np.mean(per_slice[False]) / np.mean(per_slice[True]) if per_slice[False] and per_slice[True] else math.nan
    return shares | {"empty / lesion slice": float(ratio), "skipped batches": skipped}


# --------------------------------------------------------------------------- figures


def plot_runs(
    history: pd.DataFrame, metrics: Sequence[str] = ("train_loss", "val_dice"), labels: Mapping[str, str] | None = None
) -> plt.Figure:
    """Training curves of arms x seeds: one panel per metric, a thin line per seed and a
    thick one for the mean over seeds, one colour per arm. ``labels`` name the y axes."""
    labels = {
        "train_loss": "training loss (mean over the epoch's batches)",
        "val_loss": "validation loss (mean over slices)",
        "val_dice": "validation Dice (mean over cases)",
    } | dict(labels or {})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), layout="constrained", squeeze=False)
    arms = list(dict.fromkeys(history["loss"]))
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes[0], metrics):
        for i, arm in enumerate(arms):
            runs = history[history["loss"] == arm]
            for _, run in runs.groupby("seed"):
                ax.plot(run["epoch"], run[metric], color=colours(i % 10), lw=0.7, alpha=0.5)
            mean = runs.groupby("epoch")[metric].mean()
            ax.plot(
                mean.index,
                mean.to_numpy(),
                color=colours(i % 10),
                lw=2,
                label=f"{arm} (mean of {runs['seed'].nunique()} seeds)",
            )
        ax.set(xlabel="epoch", ylabel=labels.get(metric, metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return fig


def plot_seed_spread(table: pd.DataFrame, *, ax: Axes | None = None, ylabel: str = "Dice (mean over cases)") -> Axes:
    """Each seed's value per arm (dots) and the mean over seeds with +/- one standard
    deviation (bar with error bar), from :func:`afl_core.metrics.seed_summary`."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    seeds = [c for c in table if str(c).startswith("seed ")]
    x = np.arange(len(table))
    ax.bar(x, table["mean"], color="0.85", yerr=table["sd"], capsize=3, label="mean over seeds +/- 1 sd")
    for column in seeds:
        ax.plot(x, table[column], "o", ms=3.5, color="tab:blue", alpha=0.75)
    ax.plot([], [], "o", ms=3.5, color="tab:blue", label="one seed")
    ax.set_xticks(x, table.index, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_comparisons(table: pd.DataFrame, *, ax: Axes | None = None, xlabel: str = "difference in Dice") -> Axes:
    """Forest plot of :func:`afl_core.metrics.compare_to_reference`: each arm's mean
    difference from the reference with its interval; filled markers where the adjusted
    p-value (``p_adjusted``) is below 0.05."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * len(table) + 1.2), layout="constrained")
    y = np.arange(len(table))[::-1]
    ax.errorbar(
        table["mean_diff"],
        y,
        xerr=[table["mean_diff"] - table["low"], table["high"] - table["mean_diff"]],
        fmt="none",
        ecolor="tab:blue",
        capsize=3,
    )
    significant = table["p_adjusted"].to_numpy() < 0.05
    ax.plot(table["mean_diff"][significant], y[significant], "o", color="tab:blue", label="adjusted p < 0.05")
    ax.plot(
        table["mean_diff"][~significant],
        y[~significant],
        "o",
        mfc="white",
        color="tab:blue",
        label="adjusted p >= 0.05",
    )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, table.index, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    return ax
