"""Evaluation of a trained run: predictions put back on each case's grid, 3D scores.

``python -m afl_core.evaluate --run RUN`` (or :func:`evaluate_run`) loads a checkpoint of
the run, predicts the run's validation cases (or other cases / another dataset) slice by
slice (2D runs) or volume by volume (3D runs), puts the prediction back on each case's
evaluation grid (undoing the crop/pad of training; a run trained with the authors' resize
is scored on that resized grid, as they score) and scores each case in 3D with
:func:`afl_core.metrics.evaluate_cases` under both protocols: the standard one (Dice, IoU,
sensitivity, specificity and HD95 of the thresholded prediction) and the authors' soft
protocol on the probabilities (``paper_*`` columns; for a two-output network with the
network's own background channel, as their ``utils.py:10-18`` does), and lesion-wise
detection. It writes::

    RUN/eval/per_case.csv   one row per case
    RUN/eval/lesions.csv    one row per ground-truth lesion (size, irregularity, detected)
    RUN/eval/summary.json   the means (afl_core.metrics.results_table) and what was evaluated

``RUN/eval`` holds the run's own evaluation only: its validation cases. Scores of all cases
of another dataset go to ``RUN/eval-<name of the dataset>``, scores of chosen cases (``--cases``)
to ``RUN/eval-<name>-<case>`` (one case) or ``RUN/eval-<name>-<n>cases-<digest of the ids>``,
so that each selection keeps its own tables (or ``--out``); a dataset of the same name as the
one already scored there is refused rather than replacing it. The run's dataset is where its
``config.json`` records it (an absolute path); a dataset that moved is named, and ``--data NEW``
holding the run's cases takes its place (:func:`run_data`).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import numbers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from afl_core._io import (
    NotEnoughMemory,
    check_not_held,
    export_csv,
    folder_lock,
    gib,
    read_json,
    write_json,
)
from afl_core.data import DATASET_JSON, SliceDataset, VolumeDataset, list_cases
from afl_core.metrics import evaluate_cases
from afl_core.models import autocast_dtype, build_model, load_checkpoint, resolve_device
from afl_core.paper import results_table

# Case ids that may end a folder name as they are.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

__all__ = [
    "EvaluationResult",
    "foreground_probability",
    "loss_with_spacing",
    "predict_cases",
    "predict_volume",
    "load_model",
    "evaluate_run",
    "run_data",
    "main",
]


@dataclass
class EvaluationResult:
    """Tables of :func:`evaluate_run`: ``per_case``, ``per_lesion``, and ``summary``
    (means and what was evaluated, as written to ``summary.json``)."""

    per_case: pd.DataFrame
    per_lesion: pd.DataFrame
    summary: dict
    #: the folder the tables were written to
    out_dir: Path | None = None


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` lesion probability: the sigmoid of the last logit channel (the only
    one of a binary network; the foreground one of a (background, foreground) network,
    each channel of which is an independent sigmoid in the authors' focal loss)."""
    return torch.sigmoid(logits[:, -1:].float())


def loss_with_spacing(
    loss_fn: nn.Module,
    logits: torch.Tensor,
    target: torch.Tensor,
    spacing: torch.Tensor | None,
    parameters: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``loss_fn(logits, target)``, with the batch's precomputed ``parameters=`` (A-FL's
    per-sample alpha and gamma) when given, else with ``spacing=`` when the loss uses it
    (its ``uses_spacing`` attribute is true) and a spacing is known; both moved to the
    logits' device."""
    if parameters is not None:
        return loss_fn(logits, target, parameters=tuple(p.to(logits.device, non_blocking=True) for p in parameters))
    if spacing is not None and getattr(loss_fn, "uses_spacing", False):
        return loss_fn(logits, target, spacing=spacing.to(logits.device, non_blocking=True))
    return loss_fn(logits, target)


@torch.no_grad()
def predict_cases(
    model: nn.Module,
    dataset: SliceDataset | VolumeDataset,
    cases: Sequence[str] | None = None,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 16,
    amp_dtype: torch.dtype | None = None,
    loss_fn: nn.Module | None = None,
    progress: bool = False,
    all_channels: bool = False,
) -> tuple[dict[str, np.ndarray], float]:
    """Lesion probabilities of every item (slice or volume) of ``cases`` (default: all of
    ``dataset``), put back as float32 volumes on each case's evaluation grid
    (``dataset.assemble``; voxels cropped away get 0).

    Returns ``({case: volume (X, Y, Z)}, mean_loss)``: ``mean_loss`` is ``loss_fn`` averaged
    over items (NaN without ``loss_fn``), leaving out batches where it is undefined
    (A-FL's ``variant="reference"`` on a batch without lesion voxels). With
    ``all_channels=True`` each volume is ``(C, X, Y, Z)``: the sigmoid of every output
    channel (a two-output network's background is channel 0, its lesion channel 1).
    """
    if dataset.augmentation is not None:
        raise ValueError(
            "predict on a SliceDataset built with augment=False: augmented slices "
            "would not line up with the case's grid"
        )
    cases = list(dataset.cases if cases is None else cases)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    items = [i for case in cases for i in dataset.case_items(case)]
    loader = DataLoader(Subset(dataset, items), batch_size=batch_size, shuffle=False, pin_memory=device.type == "cuda")
    parts: dict[str, dict[int, np.ndarray]] = {case: {} for case in cases}
    loss_sum = torch.zeros((), device=device)
    loss_count = torch.zeros((), device=device)
    for batch in tqdm(loader, desc="predicting", leave=False, disable=not progress):
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images).float()
        if loss_fn is not None:
            loss = loss_with_spacing(loss_fn, logits, batch["label"].to(device, non_blocking=True), batch["spacing"])
            defined = torch.isfinite(loss)
            loss_sum += torch.where(defined, loss, 0.0) * len(images)
            loss_count += defined * len(images)
        probabilities = torch.sigmoid(logits) if all_channels else foreground_probability(logits)
        for case, k, part in zip(batch["case"], batch["index"].tolist(), probabilities.cpu().numpy()):
            parts[case][k] = part
    mean_loss = (loss_sum / loss_count).item() if loss_fn is not None and loss_count.item() > 0 else math.nan
    return {case: _assemble(dataset, case, parts[case], all_channels) for case in cases}, mean_loss


def _assemble(dataset, case: str, parts: dict[int, np.ndarray], all_channels: bool) -> np.ndarray:
    """Each channel of the ``(C, *S)`` parts of a case on its evaluation grid."""
    channels = next(iter(parts.values())).shape[0]
    volumes = [dataset.assemble(case, {k: part[c] for k, part in parts.items()}) for c in range(channels)]
    return np.stack(volumes) if all_channels else volumes[0]


def predict_volume(model: nn.Module, dataset: SliceDataset | VolumeDataset, case: str, **kwargs) -> np.ndarray:
    """Lesion probability volume ``(X, Y, Z)`` of one case (see :func:`predict_cases`)."""
    return predict_cases(model, dataset, [case], **kwargs)[0][case]


def load_model(
    run_dir: str | Path, checkpoint: str = "best", device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """The network of a run from ``checkpoint_{checkpoint}.pt`` (``"best"`` or ``"last"``),
    in eval mode on ``device``, and the checkpoint's metadata (``epoch``, ``config``,
    ``best``, ``history``)."""
    path = Path(run_dir) / f"checkpoint_{checkpoint}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: is {run_dir} a training run folder "
            "(python -m afl_core.train ... --out RUN) with at least one epoch done?"
        )
    # On the CPU: a last checkpoint also holds optimiser state, which evaluation never needs.
    saved = load_checkpoint(path, ("model", "config", "epoch", "best", "history"))
    config = saved["config"]
    # The weights come from the checkpoint: no need to fetch pretrained ones.
    model = build_model(
        config["encoder"],
        None,
        in_channels=config["in_channels"],
        classes=config["classes"],
        dims=config.get("dims", 2),
    )
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:
        raise ValueError(
            f"the weights in {path} do not fit the network its own config describes (encoder "
            f"{config['encoder']!r}, {config['classes']} class(es)): the file was altered or comes from "
            f"another program ({str(error).splitlines()[0][:160]})"
        ) from None
    return model.to(device).eval(), {key: saved[key] for key in ("epoch", "config", "best", "history")}


def _scored_cases(model, dataset, cases, threshold, batch_size, amp_dtype) -> Iterator[tuple]:
    """``(case, pred, label, prob, spacing, background)`` for :func:`afl_core.metrics.evaluate_cases`;
    ``background`` is a two-output network's own background channel, else ``None`` (``1 - prob``)."""
    # One case at a time, so only one probability volume is held in memory.
    for case in cases:
        channels = predict_volume(model, dataset, case, batch_size=batch_size, amp_dtype=amp_dtype, all_channels=True)
        prob, background = channels[-1], (channels[0] if len(channels) == 2 else None)
        yield case, prob > threshold, dataset.case_label(case), prob, dataset.spacing(case), background


def _dataset(config: dict, root: Path, cases: Sequence[str]) -> SliceDataset | VolumeDataset:
    """The run's items, without augmentation: slices or volumes of the size it trained on."""
    if config.get("dims", 2) == 2:
        return SliceDataset(root, cases, size=tuple(config["slice_size"]))
    return VolumeDataset(root, cases, size=tuple(config["volume_size"]), resize=config["resize"])


def _same_data(root: str | Path, training_data: str | Path) -> bool:
    return Path(root).resolve() == Path(training_data).resolve()


def _recorded_data(run_dir: Path, config: dict) -> Path | None:
    """Where the run's dataset was: its absolute ``data``; a relative one (recorded before
    paths were made absolute) against the folder the run was started in, known when the
    run's recorded ``out`` is relative and ends the run folder's path; else ``None``."""
    data = Path(config["data"])
    if data.is_absolute():
        return data
    out = Path(os.path.normpath(config.get("out") or "/"))
    run_parts = run_dir.absolute().parts
    if out.is_absolute() or out.parts[0] == ".." or run_parts[-len(out.parts) :] != out.parts:
        return None
    return Path(*run_parts[: -len(out.parts)]) / data


def run_data(run_dir: str | Path, config: dict, data: str | Path | None = None, *, command: str) -> Path:
    """The folder of the dataset the run trained on (``config``: its ``config.json``): where
    it records it; else ``data``, its new place after a move, when ``data`` holds every case
    the run trained and validated on. ``command`` is the command being run, for the message
    (``"--resume"``, ``"afl-evaluate"``).

    Raises:
        ValueError: the dataset is not where the run records it and ``data`` does not hold
            its cases (or is not given); the message names the recorded path and the option.
    """
    run_dir = Path(run_dir)
    recorded = _recorded_data(run_dir, config)
    if recorded is not None and recorded.is_dir():
        return recorded
    where = (
        f"its dataset {recorded}, which is not there"
        if recorded is not None
        else f"its dataset as {config['data']!r}, relative to the folder the run was started in (not recorded)"
    )
    again = (
        f"python -m afl_core.train --out {run_dir} --resume --data NEW"
        if command == "--resume"
        else f"python -m afl_core.evaluate --run {run_dir} --data NEW"
    )
    cases = sorted(set(config.get("train_cases", [])) | set(config.get("val_cases", [])))
    if data is None:
        raise ValueError(
            f"{run_dir}/config.json records {where}. If it moved, give its new folder: {again} "
            f"(it must hold the run's {len(cases)} cases)"
        )
    missing = sorted(set(cases) - set(list_cases(data))) if Path(data).is_dir() else cases
    if missing:
        raise ValueError(
            f"{run_dir}/config.json records {where}, and {data} is not that dataset moved: it lacks "
            f"{len(missing)} of the run's {len(cases)} cases ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}). Give the dataset's new folder: {again}"
        )
    data = Path(os.path.abspath(data))
    print(f"note: the run's dataset {config['data']} is not there; using {data}: it holds its cases", file=sys.stderr)
    return data


def _training_data(run_dir: Path, data: str | Path | None) -> Path | None:
    """The folder of the dataset the run trained on (:func:`run_data`); ``None`` when it is
    gone and ``data``, another dataset, is what is scored."""
    config = read_json(
        run_dir / "config.json",
        hint=f"is {run_dir} a training run folder (python -m afl_core.train ... --out RUN)? Restore it from a copy",
    )
    try:
        return run_data(run_dir, config, data, command="afl-evaluate")
    except ValueError:
        if data is None:
            raise
        return None


def _default_out_dir(run_dir: Path, root: Path, own_validation: bool, cases: Sequence[str] | None) -> Path:
    """``RUN/eval`` for the run's own evaluation, ``RUN/eval-<name of the dataset>`` for all
    cases of another dataset, ``RUN/eval-<name>-<case>`` or ``RUN/eval-<name>-<n>cases-<digest>``
    for chosen cases (each selection its own folder); refused when that folder holds the
    scores of another dataset of the same name."""
    if own_validation:
        return run_dir / "eval"
    out_dir = run_dir / f"eval-{root.resolve().name}"
    if cases is not None:
        chosen = sorted(set(cases))
        digest = hashlib.sha1("\n".join(chosen).encode()).hexdigest()[:8]
        suffix = chosen[0] if len(chosen) == 1 and _SAFE_NAME.fullmatch(chosen[0]) else f"{len(chosen)}cases-{digest}"
        out_dir = out_dir.with_name(f"{out_dir.name}-{suffix}")
    summary = out_dir / "summary.json"
    if summary.is_file():
        scored = read_json(summary, hint="delete the folder (its tables are incomplete) or give --out").get("data")
        if scored is not None and not _same_data(scored, root):
            raise ValueError(
                f"{out_dir} holds the scores of {scored}, another dataset of the same name as {root}: "
                "give --out (out_dir=) to keep both"
            )
    return out_dir


def _check_out_dir(out_dir: Path, run_dir: Path) -> None:
    """Refuse an ``--out`` that is a file, or whose tables would replace or mix with the files
    of a dataset (its ``lesions.csv``, the ground truth of synthetic data), of another run
    (its ``eval/`` would score it with this run's scores, and a sweep would collect them) or
    of a sweep (its ``per_case.csv``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder: choose a folder for the tables")
    resolved, own = out_dir.resolve(), run_dir.resolve()
    leave_out = "or leave --out out to write them into the run folder"
    for folder in (resolved, *resolved.parents):
        where = "is" if folder == resolved else "is inside"
        if (folder / DATASET_JSON).is_file():
            raise ValueError(
                f"--out {out_dir} {where} {'a dataset' if folder == resolved else f'the dataset {folder}'} "
                f"(it holds {DATASET_JSON}): the tables (per_case.csv, lesions.csv, summary.json) would replace or "
                f"mix with its files. Choose a folder outside any dataset, {leave_out}"
            )
        if folder == own:  # the run's own folder: its tables
            return
        if _is_run_folder(folder):
            raise ValueError(
                f"--out {out_dir} {where} the run {folder}, not the run evaluated ({run_dir}): its tables would "
                f"pass for that run's scores (a sweep collects RUN/eval). Choose a folder outside other runs, "
                f"{leave_out}"
            )
    if (resolved / "sweep.json").is_file():
        raise ValueError(
            f"--out {out_dir} is a sweep folder (it holds sweep.json): the tables would replace its per_case.csv. "
            f"Choose a folder outside the sweep's own files, {leave_out}"
        )
    _check_tables_are_this_runs(out_dir, run_dir, leave_out)


#: the files an evaluation writes into its folder
TABLES = ("per_case.csv", "lesions.csv", "summary.json")


def _check_tables_are_this_runs(out_dir: Path, run_dir: Path, leave_out: str) -> None:
    """Refuse an ``--out`` outside the run whose table files an evaluation would replace but
    which are not this run's scores: the user's own files, or another run's evaluation. Its
    own earlier evaluation there (``summary.json`` naming this run) is scored again."""
    found = [name for name in TABLES if (out_dir / name).exists()]
    if not found:
        return
    try:
        recorded = read_json(out_dir / "summary.json")
        scored = Path(recorded["run"]) if "means" in recorded else None
    except (OSError, ValueError, KeyError, TypeError):
        scored = None
    if scored is None:
        raise ValueError(
            f"--out {out_dir} holds {', '.join(found)}, which python -m afl_core.evaluate did not write (no "
            f"evaluation summary.json): the tables would replace them, so nothing is written. Choose a new or empty "
            f"folder, {leave_out}"
        )
    moved = scored.name == run_dir.resolve().name and not scored.exists()
    if scored.resolve() != run_dir.resolve() and not moved:
        raise ValueError(
            f"--out {out_dir} holds the evaluation of another run ({scored}, as its summary.json records), not "
            f"of {run_dir}: the tables would replace its scores, so nothing is written. Choose a new or empty "
            f"folder, {leave_out}"
        )


def _is_run_folder(folder: Path) -> bool:
    """A training run's folder: its ``config.json`` beside a checkpoint, its history or its lock."""
    marks = ("checkpoint_last.pt", "checkpoint_best.pt", "history.csv", "run.lock")
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in marks)


def _note_what_is_scored(config: dict, root: Path, data, cases: Sequence[str] | None) -> None:
    """Say when the cases are another dataset's (resized to the training grid) or were trained on."""
    if data is not None and not _same_data(root, config["data"]):
        grid = config.get("slice_size") or config.get("volume_size")
        print(
            f"note: scoring on {root}, not the run's training data ({config['data']}): every case is "
            f"cropped or padded to the training grid {grid} before prediction",
            file=sys.stderr,
        )
    elif cases is not None:
        trained_on = sorted(set(cases) - set(config["val_cases"]))
        if trained_on:
            print(
                f"note: {len(trained_on)} of the {len(cases)} case(s) were trained on ({', '.join(trained_on[:5])}"
                f"{', ...' if len(trained_on) > 5 else ''}): their scores are optimistic",
                file=sys.stderr,
            )


def _summary(
    run_dir: Path, config: dict, checkpoint: str, epoch: int, root: Path, cases, threshold: float, per_case
) -> dict:
    """What ``summary.json`` records: the run, the checkpoint scored and the mean scores."""
    means = results_table({"run": per_case}).iloc[0]  # the run's one row
    return {
        "run": str(run_dir.absolute()),
        "loss": config["loss"],
        "variant": config.get("variant"),
        "loss_options": config.get("loss_options", {}),
        "seed": config.get("seed"),
        "encoder": config["encoder"],
        "checkpoint": checkpoint,
        "epoch": epoch,
        "data": str(root),
        "training_data": config["data"],
        "cases": list(cases),
        "threshold": threshold,
        "dims": config.get("dims", 2),
        "grid": "resized" if config.get("resize") else "original",
        "paper_protocol_background": "network channel 0" if config["classes"] == 2 else "1 - p",
        "means": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in means.items()},
    }


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    cases: Sequence[str] | None = None,
    checkpoint: str | None = None,
    threshold: float = 0.5,
    device: str = "auto",
    batch_size: int = 16,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate a run's checkpoint per case in 3D and write ``per_case.csv``,
    ``lesions.csv`` and ``summary.json`` into ``out_dir`` (default ``RUN/eval`` for the
    run's own dataset, ``RUN/eval-<name of data>`` for another one, so that scores on other
    data never replace the run's own tables).

    Cases: ``cases`` if given; else every case of ``data`` if it is another dataset; else
    the run's validation cases (never seen in training). ``data`` defaults to the run's
    dataset; the run's own dataset given as ``data`` is the same as leaving it out (a note
    says so), and chosen cases that were trained on are named as scoring optimistically.

    Checkpoint: ``"best"`` or ``"last"``. By default ``"last"`` on the run's own
    validation cases, since the best epoch was picked on them and would score them
    optimistically, and ``"best"`` on any other cases.

    Raises:
        ValueError: a bad option (named); ``out_dir`` inside a dataset, another run or a
            sweep's own files; the run's files do not fit together.
        afl_core._io.FolderBusy: the run is still being trained (the message names the
            process), or another process writes ``out_dir``.
    """
    run_dir = Path(run_dir)
    _check_request(run_dir, threshold, batch_size, out_dir)
    torch_device = resolve_device(device)
    training_data = _training_data(run_dir, data)
    if data is not None and training_data is not None and _same_data(data, training_data):
        data = None  # the run's own dataset: scored as without it
        if cases is None:
            print(
                "note: --data is the run's own dataset: scoring its validation cases (choose others with --cases)",
                file=sys.stderr,
            )
    if checkpoint is None:
        checkpoint = "last" if cases is None and data is None else "best"
    model, saved = load_model(run_dir, checkpoint, torch_device)
    config = saved["config"]
    root = Path(data) if data is not None else training_data
    chosen = cases
    cases = _cases_to_score(config, root, data, cases)
    own_validation = data is None and list(cases) == list(config["val_cases"])
    if out_dir is None:
        out_dir = _default_out_dir(run_dir, root, own_validation, None if own_validation else chosen)
    out_dir = Path(out_dir)
    # one process writes a tables folder: two would mix (or silently replace) their tables
    with folder_lock(out_dir, then="run the evaluation again"):
        dataset = _checked_dataset(run_dir, checkpoint, config, root, cases)
        amp_dtype = autocast_dtype(torch_device, config.get("amp", True))
        per_case, per_lesion = evaluate_cases(
            _scored_cases(model, dataset, dataset.cases, threshold, batch_size, amp_dtype), progress=progress
        )
        summary = _summary(run_dir, config, checkpoint, saved["epoch"], root, dataset.cases, threshold, per_case)
        export_csv(per_case, out_dir / "per_case.csv")
        export_csv(per_lesion, out_dir / "lesions.csv")
        write_json(out_dir / "summary.json", summary, default=float)  # last: a complete summary marks complete tables
        return EvaluationResult(per_case, per_lesion, summary, out_dir)


def _check_request(run_dir: Path, threshold: float, batch_size: int, out_dir: str | Path | None) -> None:
    """The options, and the run: refused while a process still trains it (its checkpoints
    change every epoch, so the scores would belong to no epoch the finished run keeps)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"--threshold must lie strictly between 0 and 1 (a probability), got {threshold}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"--batch-size must be a whole number of 1 or more (slices per batch), got {batch_size!r}")
    if out_dir is not None:
        _check_out_dir(Path(out_dir), run_dir)
    check_not_held(
        run_dir,
        why="the run is still training, and its checkpoints change every epoch: the scores would be of an "
        "unfinished model",
        then=f"evaluate it: python -m afl_core.evaluate --run {run_dir}",
    )


def _cases_to_score(config: dict, root: Path, data, cases: Sequence[str] | None) -> list[str]:
    """``cases`` (each checked to be in ``root``); else every case of another dataset ``data``;
    else the run's validation cases. A note says what is scored."""
    # read first: a --data that is no dataset is refused before any note about scoring it
    listed = list_cases(root) if cases is not None or data is not None else None
    if cases is not None:
        unknown = sorted(set(cases) - set(listed))
        if unknown:
            raise ValueError(
                f"--cases names {len(unknown)} case(s) that {root} does not hold ({', '.join(unknown[:5])}"
                f"{', ...' if len(unknown) > 5 else ''}): choose from its cases (afl_core.data.list_cases)"
            )
    _note_what_is_scored(config, root, data, cases)
    if cases is None:
        cases = listed if data is not None else config["val_cases"]
    return list(cases)


def _checked_dataset(run_dir: Path, checkpoint: str, config: dict, root: Path, cases: Sequence[str]):
    """The items to predict (:func:`_dataset`), refused when one case on the run's grid would not
    fit in memory or when the data's channels are not the run's."""
    grid_key = "slice_size" if config.get("dims", 2) == 2 else "volume_size"
    try:
        dataset = _dataset(config, root, cases)
    except NotEnoughMemory as error:
        raise ValueError(
            f"{run_dir / f'checkpoint_{checkpoint}.pt'} records a {grid_key.replace('_', ' ')} of "
            f"{' x '.join(map(str, config[grid_key]))}: one case on that grid needs about {gib(error.needed)} of "
            f"memory, {gib(error.available)} are available. The file was altered or comes from another program, "
            "or the run needs a machine with more memory"
        ) from None
    if dataset.in_channels != config["in_channels"]:
        raise ValueError(
            f"{root} has {dataset.in_channels} image channel(s) per case, the run was trained on "
            f"{config['in_channels']}: evaluate it on data with the same channels (modalities)"
        )
    return dataset


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m afl_core.evaluate",
        description="Score a training run per case in 3D, under the standard and the authors' soft protocol.",
    )
    p.add_argument("--run", required=True, help="run folder written by python -m afl_core.train")
    p.add_argument("--data", help="dataset to evaluate on (default: the run's)")
    p.add_argument("--cases", nargs="+", help="case ids (default: the run's validation cases, or all of --data)")
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        help="default: last on the run's validation cases (best was picked on them), else best",
    )
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--out",
        help="output folder (default RUN/eval for the validation cases, RUN/eval-<name of the dataset> for all of "
        "--data, RUN/eval-<name>-<case or n cases-digest> for --cases)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    try:
        result = evaluate_run(
            args.run,
            data=args.data,
            cases=args.cases,
            checkpoint=args.checkpoint,
            threshold=args.threshold,
            device=args.device,
            batch_size=args.batch_size,
            out_dir=args.out,
            progress=args.progress,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a read-only --out, a full disk
        print(
            f"error: cannot write the tables ({error}); check that --out is writable and the disk has room",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; no table was left half-written: run the same command again", file=sys.stderr)
        return 130
    print(pd.Series(result.summary["means"], dtype=object).to_string())
    print(f"{len(result.per_case)} case(s) from epoch {result.summary['epoch']}; tables in {result.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
