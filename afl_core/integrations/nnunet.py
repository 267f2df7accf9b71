"""nnU-Net v2 with A-FL: a trainer, and the commands that run it without touching nnU-Net's install.

nnU-Net trains a softmax network (one output channel per label, background first) with
Dice + cross-entropy at every deep-supervision level. :class:`nnUNetTrainerAFL` keeps
everything of nnU-Net (planning, preprocessing, augmentation, network, schedule,
deep-supervision weights) and replaces the loss of each level by A-FL on the foreground
logit: for nnU-Net's two-channel output ``(background, lesion)`` that is ``x_1 - x_0``,
whose sigmoid is the softmax's lesion probability
(:class:`afl_core.integrations.monai.MonaiAdaptiveFocalLoss` with ``use_softmax=True``,
``include_background=False``, ``to_onehot_y=True``; several foreground labels: one
against the rest each, averaged). The variant is the class attribute ``afl_variant``:
``nnUNetTrainerAFL`` is the paper's, ``nnUNetTrainerAFL_scale_aware`` this project's.

nnU-Net finds trainers by class name inside its own package (``nnUNetv2_train -tr``). This
module's command builds the trainer itself instead, so nothing is copied into nnU-Net::

    export nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=...
    python -m afl_core.integrations.nnunet raw data/picai --id 501            # the layout -> nnU-Net raw
    nnUNetv2_plan_and_preprocess -d 501 -c 2d --verify_dataset_integrity       # nnU-Net's own
    python -m afl_core.integrations.nnunet train 501 2d 0 --variant paper     # or --baseline
    python -m afl_core.integrations.nnunet predict 501 2d --input IMAGES --output PRED --fold 0
    python -m afl_core.integrations.nnunet score PRED LABELS --out scores.csv

Needs the ``nnunet`` extra (``pip install -e '.[nnunet]'``); see docs/nnunet.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

try:
    import nnunetv2  # noqa: F401  (the message below is the point)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "afl_core.integrations.nnunet needs nnU-Net v2: install the extra with pip install -e '.[nnunet]' "
        "(or pip install 'afl-tutorial[nnunet]')"
    ) from error

import numpy as np
import pandas as pd
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from afl_core._io import export_csv
from afl_core.data.layout import (
    DATASET_JSON,
    FILE_ENDING,
    LABELS_DIR,
    channel_path,
    label_path,
    list_cases,
    read_dataset_json,
)
from afl_core.data.splits import patient_grouping, split_cases
from afl_core.integrations.monai import MonaiAdaptiveFocalLoss
from afl_core.metrics import segmentation_scores

__all__ = [
    "nnUNetTrainerAFL",
    "nnUNetTrainerAFL_scale_aware",
    "TRAINERS",
    "AFLPatchLoss",
    "make_raw_dataset",
    "train",
    "predict",
    "score",
    "main",
]

NNUNET_ENVIRONMENT = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class AFLPatchLoss(nn.Module):
    """A-FL of nnU-Net's ``(B, C, *P)`` softmax logits against its ``(B, 1, *P)`` label map.

    The loss of one deep-supervision level (nnU-Net's ``DeepSupervisionWrapper`` calls it
    once per level with the output and the label map downsampled to that level).
    ``variant="scale_aware"`` measures lesions in mm: a level's voxel size is the
    configuration's spacing times how much the level is downsampled from the patch,
    ``spacing * patch_size / level_shape`` per axis.

    Args:
        variant: the A-FL variant (``"paper"`` or ``"scale_aware"``).
        spacing: the configuration's voxel size in mm per patch axis (nnU-Net's
            ``configuration_manager.spacing``, the in-plane axes for ``2d``).
        patch_size: the configuration's patch size (full resolution).

    Raises:
        ValueError: ``spacing`` and ``patch_size`` of different lengths.
    """

    def __init__(self, variant: str, spacing: Sequence[float], patch_size: Sequence[int]) -> None:
        super().__init__()
        if len(spacing) != len(patch_size):
            raise ValueError(f"spacing {list(spacing)} and patch_size {list(patch_size)} must have one value per axis")
        self.afl = MonaiAdaptiveFocalLoss(include_background=False, to_onehot_y=True, use_softmax=True, variant=variant)
        self.spacing = [float(s) for s in spacing]
        self.patch_size = [int(p) for p in patch_size]

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        spacing = None
        if self.afl.binary.uses_spacing:
            spacing = [s * p / n for s, p, n in zip(self.spacing, self.patch_size, output.shape[2:])]
        return self.afl(output, target, spacing=spacing)


class nnUNetTrainerAFL(nnUNetTrainer):
    """nnU-Net's trainer with A-FL (``afl_variant``) in place of Dice + cross-entropy.

    Each deep-supervision level's loss is :class:`AFLPatchLoss` (A-FL on the foreground
    logit ``x_1 - x_0`` for a lesion/background dataset), combined with nnU-Net's own
    level weights (``1/2^i``, the lowest level 0, normalised to sum 1). Everything else is
    nnU-Net's. Runs, checkpoints and predictions are nnU-Net's, under the class name
    (``nnUNet_results/DatasetXXX/nnUNetTrainerAFL__nnUNetPlans__2d``).

    Raises:
        ValueError: (when the loss is built) a region-based dataset (sigmoid outputs) or
            one with an ignore label, neither of which A-FL's formulation covers.
    """

    afl_variant = "paper"

    def _build_loss(self):
        if self.label_manager.has_regions:
            raise ValueError(
                f"{type(self).__name__} trains softmax outputs (one label per voxel); this dataset's "
                "dataset.json declares regions (overlapping labels), which it does not support"
            )
        if self.label_manager.ignore_label is not None:
            raise ValueError(
                f"{type(self).__name__} does not support an ignore label (dataset.json 'ignore'); "
                "A-FL's alpha and gamma count every voxel of a patch"
            )
        patch_size = self.configuration_manager.patch_size
        spacing = self.configuration_manager.spacing[-len(patch_size) :]  # 2d: the in-plane axes
        afl = AFLPatchLoss(self.afl_variant, spacing, patch_size)
        nnunet_loss = super()._build_loss()  # nnU-Net's weights for the levels, if it uses several
        if isinstance(nnunet_loss, DeepSupervisionWrapper):
            return DeepSupervisionWrapper(afl, nnunet_loss.weight_factors)
        return afl


class nnUNetTrainerAFL_scale_aware(nnUNetTrainerAFL):
    """:class:`nnUNetTrainerAFL` with this project's scale-aware A-FL (gamma from lesion size in mm)."""

    afl_variant = "scale_aware"


#: the trainers this module can build, by the name nnU-Net records in checkpoints.
TRAINERS = {cls.__name__: cls for cls in (nnUNetTrainer, nnUNetTrainerAFL, nnUNetTrainerAFL_scale_aware)}


def trainer_class(variant: str | None):
    """The trainer for an A-FL ``variant``, or nnU-Net's own for None."""
    if variant is None:
        return nnUNetTrainer
    for cls in TRAINERS.values():
        if getattr(cls, "afl_variant", None) == variant:
            return cls
    choices = [cls.afl_variant for cls in TRAINERS.values() if hasattr(cls, "afl_variant")]
    raise ValueError(f"no nnU-Net trainer for A-FL variant {variant!r}; choose from {choices}")


def _check_environment() -> None:
    missing = [name for name in NNUNET_ENVIRONMENT if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            f"nnU-Net's folders are not set: {', '.join(missing)}; export nnUNet_raw, nnUNet_preprocessed "
            "and nnUNet_results (three directories) before running nnU-Net (docs/nnunet.md)"
        )


def _dataset_name(dataset: str | int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    return maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)


def make_raw_dataset(
    layout: str | os.PathLike,
    raw_root: str | os.PathLike,
    dataset_id: int,
    *,
    name: str | None = None,
    holdout: Sequence[str] = (),
    force: bool = False,
) -> Path:
    """Turn this project's dataset layout into an nnU-Net raw dataset, by symbolic links.

    The layout (``afl-data``, ``afl_core.synthetic.make_dataset``) already is nnU-Net's raw
    format; this names it ``Dataset{id:03d}_{name}`` under ``raw_root`` and moves the
    ``holdout`` cases to ``imagesTs``/``labelsTs`` (nnU-Net trains and cross-validates on
    ``imagesTr`` only), with a ``dataset.json`` holding nnU-Net's four keys.

    Args:
        layout: a dataset in this project's layout.
        raw_root: nnU-Net's raw folder (``$nnUNet_raw``).
        dataset_id: nnU-Net's dataset number, 1 to 999.
        name: the name after the number (default: the layout folder's name, letters and
            digits only).
        holdout: case ids kept out of training, for a final test.
        force: replace an existing dataset of that number.

    Returns:
        The new dataset folder.

    Raises:
        ValueError: a bad id or name, a holdout case the layout lacks, or no training case left.
        FileExistsError: a dataset with that number exists and ``force`` is False.
    """
    layout = Path(layout).resolve()
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"nnU-Net dataset ids are 1 to 999, got {dataset_id}")
    name = name or "".join(ch for ch in layout.name if ch.isalnum()) or "AFL"
    if not name.isalnum():
        raise ValueError(f"the dataset name must hold letters and digits only, got {name!r}")
    cases = list_cases(layout)
    unknown = sorted(set(holdout) - set(cases))
    if unknown:
        raise ValueError(f"holdout cases {unknown} are not in {layout / LABELS_DIR}")
    training = [case for case in cases if case not in set(holdout)]
    if not training:
        raise ValueError("every case is held out: nnU-Net needs training cases")
    raw_root = Path(raw_root)
    existing = sorted(raw_root.glob(f"Dataset{int(dataset_id):03d}_*"))
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists: pass force=True (--force) to replace it, or choose another id")
    meta = read_dataset_json(layout)
    channels = len(meta["channel_names"])
    destination = raw_root / f"Dataset{int(dataset_id):03d}_{name}"
    partial = raw_root / f".{destination.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for folder, group in (("Tr", training), ("Ts", list(holdout))):
        (partial / f"images{folder}").mkdir(parents=True, exist_ok=True)
        (partial / f"labels{folder}").mkdir(exist_ok=True)
        for case in group:
            for channel in range(channels):
                source = channel_path(layout, case, channel)
                (partial / f"images{folder}" / source.name).symlink_to(source)
            (partial / f"labels{folder}" / f"{case}{FILE_ENDING}").symlink_to(label_path(layout, case))
    nnunet_keys = {
        "channel_names": meta["channel_names"],
        "labels": meta["labels"],
        "numTraining": len(training),
        "file_ending": FILE_ENDING,
        "source_layout": str(layout),
    }
    (partial / DATASET_JSON).write_text(json.dumps(nnunet_keys, indent=2) + "\n")
    for old in existing:
        shutil.rmtree(old)
    partial.rename(destination)
    return destination


def train(
    dataset: str | int,
    configuration: str,
    fold: int | str,
    *,
    variant: str | None = "paper",
    plans: str = "nnUNetPlans",
    epochs: int | None = None,
    iterations: int | None = None,
    val_iterations: int | None = None,
    device: str = "cuda",
    resume: bool = False,
    validate: bool = True,
) -> Path:
    """Train one fold with A-FL (``variant``) or nnU-Net's default (``variant=None``).

    What ``nnUNetv2_train DATASET CONFIG FOLD -tr TRAINER`` does (nnU-Net's
    ``run_training``), with the trainer built here: nnU-Net's plans and preprocessed data
    are read from ``$nnUNet_preprocessed``, the run written to ``$nnUNet_results``.

    Args:
        dataset: nnU-Net's dataset id or ``DatasetXXX_Name``.
        configuration: ``2d``, ``3d_fullres``, ... (planned by ``nnUNetv2_plan_and_preprocess``).
        fold: 0-4 or ``"all"``.
        variant: the A-FL variant (``"paper"``, ``"scale_aware"``), or None for nnU-Net's
            own Dice + cross-entropy trainer (the baseline, trained with the same settings).
        plans: nnU-Net's plans identifier.
        epochs, iterations, val_iterations: override nnU-Net's 1000 epochs of 250 training
            and 50 validation iterations (for a quick run).
        device: ``cuda``, ``cpu`` or ``mps``.
        resume: continue from the run's latest checkpoint.
        validate: predict the fold's validation cases at the end (nnU-Net's ``validation/``
            folder and ``summary.json``).

    Returns:
        The fold's output folder.
    """
    _check_environment()
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.run.run_training import maybe_load_checkpoint

    cuts = {
        "num_epochs": epochs,
        "num_iterations_per_epoch": iterations,
        "num_val_iterations_per_epoch": val_iterations,
    }
    for attribute, value in cuts.items():
        if value is not None and value < 1:
            raise ValueError(f"{attribute} must be at least 1, got {value}")
    fold = fold if fold == "all" else int(fold)
    preprocessed = Path(nnUNet_preprocessed) / _dataset_name(dataset)
    plans_file = preprocessed / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(
            f"{plans_file} is missing: run nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration} first"
        )
    plans_dict = load_json(str(plans_file))
    plans_dict["continue_training"] = resume
    trainer = trainer_class(variant)(
        plans=plans_dict,
        configuration=configuration,
        fold=fold,
        dataset_json=load_json(str(preprocessed / DATASET_JSON)),
        device=torch.device(device),
    )
    for attribute, value in cuts.items():
        if value is not None:
            setattr(trainer, attribute, int(value))
    maybe_load_checkpoint(trainer, resume, False)
    trainer.run_training()
    if validate:
        trainer.perform_actual_validation(False)
    return Path(trainer.output_folder)


def _load_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint, read without running pickled code (``weights_only=True``).

    nnU-Net logs NumPy scalars (its Dice values) into the checkpoint; their rebuilding
    function and dtypes are the only globals allowed besides torch's own.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train that fold first (or pass --checkpoint)")
    numpy_scalars = [np.float32(0).__reduce__()[0], np.dtype]
    numpy_scalars += [type(np.dtype(kind)) for kind in (np.float16, np.float32, np.float64, np.int32, np.int64)]
    with torch.serialization.safe_globals(numpy_scalars):
        return torch.load(path, map_location="cpu", weights_only=True)


def predict(
    dataset: str | int,
    configuration: str,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    variant: str | None = "paper",
    folds: Sequence[int | str] = (0,),
    plans: str = "nnUNetPlans",
    checkpoint: str = "checkpoint_final.pth",
    device: str = "cuda",
    mirroring: bool = True,
    step_size: float = 0.5,
) -> Path:
    """Segment every case of ``input_dir`` (``<case>_0000.nii.gz``, ...) with a trained run.

    ``nnUNetv2_predict`` without nnU-Net's trainer lookup: the network is built by the
    trainer class of this module and handed to ``nnUNetPredictor.manual_initialization``;
    several folds are ensembled (mean of their softmax). Labels are written to
    ``output_dir/<case>.nii.gz``.

    Args:
        dataset, configuration, plans: as :func:`train`.
        input_dir: images named as in ``imagesTs``.
        output_dir: where the label maps go (created).
        variant: the run to use: the A-FL variant, or None for nnU-Net's default trainer.
        folds: which trained folds to ensemble.
        checkpoint: ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
        device: ``cuda``, ``cpu`` or ``mps``.
        mirroring: test-time mirroring (nnU-Net's default, 2-8x slower).
        step_size: sliding-window step as a fraction of the patch.

    Returns:
        ``output_dir``.
    """
    _check_environment()
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cls = trainer_class(variant)
    run = Path(get_output_folder(_dataset_name(dataset), cls.__name__, plans, configuration))
    checkpoints = [_load_checkpoint(run / f"fold_{fold}" / checkpoint) for fold in folds]
    dataset_json = load_json(str(run / DATASET_JSON))
    plans_manager = PlansManager(load_json(str(run / "plans.json")))
    configuration_manager = plans_manager.get_configuration(checkpoints[0]["init_args"]["configuration"])
    network = cls.build_network_architecture(
        plans_manager,
        configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    predictor = nnUNetPredictor(
        tile_step_size=step_size,
        use_mirroring=mirroring,
        perform_everything_on_device=device == "cuda",
        device=torch.device(device),
        allow_tqdm=True,
    )
    predictor.manual_initialization(
        network,
        plans_manager,
        configuration_manager,
        parameters,
        dataset_json,
        cls.__name__,
        checkpoints[0].get("inference_allowed_mirroring_axes"),
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Sequential: no worker processes (nnU-Net's pool adds little for a few cases and
    # needs a __main__ guard in the caller).
    predictor.predict_from_files_sequential(str(input_dir), str(output_dir), save_probabilities=False)
    return output_dir


def score(prediction_dir: str | os.PathLike, label_dir: str | os.PathLike) -> pd.DataFrame:
    """Per-case scores of predicted label maps against the ground truth (lesion = label > 0).

    Args:
        prediction_dir: ``<case>.nii.gz`` label maps (:func:`predict`'s output).
        label_dir: the reference ``<case>.nii.gz`` (``labelsTs``, say).

    Returns:
        One row per case: ``case``, ``target_voxels`` and ``pred_voxels`` (lesion voxels of
        the reference and the prediction; 0 marks a lesion-free case) and
        :func:`afl_core.metrics.segmentation_scores`' keys (HD95 in mm from the reference's
        header), sorted by case: the per-case table that
        :func:`afl_core.statistics.compare_runs` pairs with another run's.

    Raises:
        FileNotFoundError: no prediction, or a prediction without its reference.
        ValueError: a prediction on another grid than its reference.
    """
    import nibabel as nib

    predictions = sorted(Path(prediction_dir).glob(f"*{FILE_ENDING}"))
    if not predictions:
        raise FileNotFoundError(f"no *{FILE_ENDING} predictions in {prediction_dir}")
    rows = []
    for path in predictions:
        case = path.name[: -len(FILE_ENDING)]
        reference = Path(label_dir) / path.name
        if not reference.is_file():
            raise FileNotFoundError(f"prediction {path} has no reference {reference}")
        truth_image = nib.load(reference)
        predicted, truth = np.asanyarray(nib.load(path).dataobj), np.asanyarray(truth_image.dataobj)
        if predicted.shape != truth.shape:
            raise ValueError(f"{path} is shaped {predicted.shape}, its reference {reference} {truth.shape}")
        spacing = truth_image.header.get_zooms()[: truth.ndim]
        voxels = {"target_voxels": int((truth > 0).sum()), "pred_voxels": int((predicted > 0).sum())}
        rows.append({"case": case} | voxels | segmentation_scores(predicted > 0, truth > 0, spacing=spacing))
    return pd.DataFrame(rows)


def _variant_option(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--variant",
        default="paper",
        choices=[cls.afl_variant for cls in TRAINERS.values() if hasattr(cls, "afl_variant")],
        help="A-FL variant (trainer nnUNetTrainerAFL[_scale_aware]); default: paper",
    )
    group.add_argument(
        "--baseline",
        action="store_true",
        help="nnU-Net's own trainer (Dice + cross-entropy) instead of A-FL, with the same settings",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m afl_core.integrations.nnunet",
        description="nnU-Net v2 with A-FL, run from this package (needs $nnUNet_raw, $nnUNet_preprocessed, "
        "$nnUNet_results; docs/nnunet.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    raw = commands.add_parser("raw", help="this project's dataset layout -> an nnU-Net raw dataset (links)")
    raw.add_argument("layout", type=Path, help="a dataset written by afl-data or afl_core.synthetic")
    raw.add_argument("--id", type=int, required=True, help="nnU-Net dataset number, 1-999")
    raw.add_argument("--name", help="dataset name after the number (default: the folder's name)")
    held = raw.add_mutually_exclusive_group()
    held.add_argument("--holdout", nargs="+", default=[], metavar="CASE", help="cases kept out of training")
    held.add_argument(
        "--holdout-fraction",
        type=float,
        metavar="F",
        help="hold out afl-train's validation split: the same fraction gives the same cases "
        "(lesion-stratified, patient-grouped; afl-train's default 0.2)",
    )
    raw.add_argument("--split-seed", type=int, default=0, help="with --holdout-fraction: afl-train's --split-seed (0)")
    raw.add_argument("--raw", type=Path, help="nnU-Net's raw folder (default: $nnUNet_raw)")
    raw.add_argument("--force", action="store_true", help="replace an existing dataset of that number")

    fit = commands.add_parser("train", help="train one fold (nnUNetv2_train with this package's trainers)")
    fit.add_argument("dataset", help="dataset id or DatasetXXX_Name")
    fit.add_argument("configuration", help="2d, 3d_fullres, ...")
    fit.add_argument("fold", help="0-4 or all")
    _variant_option(fit)
    fit.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    fit.add_argument("--epochs", type=int, help="epochs (nnU-Net: 1000)")
    fit.add_argument("--iterations", type=int, help="training iterations per epoch (nnU-Net: 250)")
    fit.add_argument("--val-iterations", type=int, help="validation iterations per epoch (nnU-Net: 50)")
    fit.add_argument("--device", default="cuda", choices=["cuda", "cpu", "mps"])
    fit.add_argument("--continue", dest="resume", action="store_true", help="resume from the latest checkpoint")
    fit.add_argument("--no-validation", dest="validate", action="store_false", help="skip the final validation")

    infer = commands.add_parser("predict", help="segment a folder of images with a trained run")
    infer.add_argument("dataset")
    infer.add_argument("configuration")
    infer.add_argument("--input", type=Path, required=True, help="images named <case>_0000.nii.gz, ...")
    infer.add_argument("--output", type=Path, required=True, help="where <case>.nii.gz label maps go")
    _variant_option(infer)
    infer.add_argument("--fold", nargs="+", default=["0"], help="fold(s) to ensemble (default: 0)")
    infer.add_argument("--plans", default="nnUNetPlans")
    infer.add_argument("--checkpoint", default="checkpoint_final.pth")
    infer.add_argument("--device", default="cuda", choices=["cuda", "cpu", "mps"])
    infer.add_argument("--no-mirroring", dest="mirroring", action="store_false", help="no test-time mirroring")

    rate = commands.add_parser("score", help="per-case scores of predictions against references (CSV)")
    rate.add_argument("predictions", type=Path)
    rate.add_argument("labels", type=Path)
    rate.add_argument("--out", type=Path, help="write the table as CSV (default: print it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "raw":
        raw_root = args.raw or os.environ.get("nnUNet_raw")
        if not raw_root:
            raise SystemExit("give --raw or export nnUNet_raw (nnU-Net's raw folder)")
        holdout = args.holdout
        if args.holdout_fraction is not None:
            grouping = patient_grouping(args.layout)
            holdout = split_cases(args.layout, args.holdout_fraction, seed=args.split_seed, group_of=grouping)[1]
        print(make_raw_dataset(args.layout, raw_root, args.id, name=args.name, holdout=holdout, force=args.force))
    elif args.command == "train":
        variant = None if args.baseline else args.variant
        print(
            train(
                args.dataset,
                args.configuration,
                args.fold,
                variant=variant,
                plans=args.plans,
                epochs=args.epochs,
                iterations=args.iterations,
                val_iterations=args.val_iterations,
                device=args.device,
                resume=args.resume,
                validate=args.validate,
            )
        )
    elif args.command == "predict":
        folds = [f if f == "all" else int(f) for f in args.fold]
        variant = None if args.baseline else args.variant
        predict(
            args.dataset,
            args.configuration,
            args.input,
            args.output,
            variant=variant,
            folds=folds,
            plans=args.plans,
            checkpoint=args.checkpoint,
            device=args.device,
            mirroring=args.mirroring,
        )
    else:
        table = score(args.predictions, args.labels)
        if args.out:
            export_csv(table, args.out)
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
