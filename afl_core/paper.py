"""The A-FL paper's headline table: its published numbers (:data:`PAPER_RESULTS`) and the
same table from this package's per-case scores (:func:`results_table`), to set side by side.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from afl_core.metrics import DISTANCE_COLUMNS

__all__ = ["results_table", "PAPER_RESULTS", "PAPER_BRATS_AFL_REPORTS"]

_RESULT_COLUMNS = {
    "IoU": "iou",
    "DSC": "dice",
    "Sensitivity": "sensitivity",
    "Specificity": "specificity",
    "IoU (paper protocol)": "paper_iou",
    "DSC (paper protocol)": "paper_dice",
    "HD95": "hd95",
    "HD95 (penalised)": "hd95_penalised",
}
_LESION_F1 = {"Lesion F1": "lesion", "Lesion F1 (PI-CAI)": "lesion_picai"}


def results_table(per_case_by_loss: Mapping[str, pd.DataFrame] | pd.DataFrame) -> pd.DataFrame:
    """One row per loss in the paper's format, from per-case tables.

    Columns ``IoU``, ``DSC``, ``Sensitivity``, ``Specificity`` (standard protocol) and
    ``IoU (paper protocol)``, ``DSC (paper protocol)`` are means over cases, NaN cases
    left out; ``HD95`` is the mean over the cases where both masks are present,
    ``HD95 (penalised)`` the mean over all cases with :func:`afl_core.metrics.hd95_penalty` for the
    others, and ``HD95 left out`` how many rows the first mean leaves out. ``Lesion F1``
    (the authors' any-overlap rule) and ``Lesion F1 (PI-CAI)`` (one-to-one, IoU >= 0.1;
    see :func:`afl_core.metrics.lesion_detection`) are pooled: from the summed lesion TP/FP/FN of all
    rows. Then ``Cases``, ``Cases with lesion`` (the cases behind the sensitivity mean)
    and ``Seeds``.

    Args:
        per_case_by_loss: ``{loss: per-case table}`` (from :func:`afl_core.metrics.per_case_scores`), or
            one long table with an ``arm`` column and optionally a ``seed`` column, such
            as ``results/comparison/per_case.csv`` (``hd95_mm`` and
            ``hd95_penalised_mm`` read as ``hd95`` and ``hd95_penalised``). With several
            seeds, means and pooled counts run over every (seed, case) row.
    """
    if isinstance(per_case_by_loss, pd.DataFrame):
        if "arm" not in per_case_by_loss.columns:
            raise KeyError("a single table needs an 'arm' column (afl_core.runs.read_table); else give {arm: table}")
        per_case_by_loss = dict(tuple(per_case_by_loss.groupby("arm", sort=False)))
    if not per_case_by_loss:
        raise ValueError("per_case_by_loss is empty: give one per-case table per loss")
    counts = [f"{prefix}_{k}" for prefix in _LESION_F1.values() for k in ("tp", "fp", "fn")]
    rows = {}
    for loss, df in per_case_by_loss.items():
        df = df.rename(columns={mm: name for name, mm in DISTANCE_COLUMNS.items()})
        missing = [c for c in ("case", *_RESULT_COLUMNS.values(), *counts) if c not in df]
        if missing:
            raise KeyError(
                f"the table for {loss!r} lacks columns {missing}; build it with per_case_scores (a table written by an "
                "older version needs scoring again)"
            )
        row = {label: df[column].astype(float).mean() for label, column in _RESULT_COLUMNS.items()}
        row["HD95 left out"] = int(df["hd95"].isna().sum())
        for label, prefix in _LESION_F1.items():
            tp, fp, fn = (int(df[f"{prefix}_{k}"].sum()) for k in ("tp", "fp", "fn"))
            row[label] = tp / (tp + (fp + fn) / 2) if tp + fp + fn else 1.0  # no lesion, none found: 1
        row["Cases"] = df["case"].nunique()
        row["Cases with lesion"] = df.loc[df["sensitivity"].notna(), "case"].nunique()
        row["Seeds"] = df["seed"].nunique() if "seed" in df else 1
        rows[loss] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("arm")


# The paper's headline table (ResNet50 U-Net), rows in its order, indexed by this
# package's loss names (afl_core.losses.LOSS_NAMES). Its IoU and DSC follow the authors'
# soft protocol (paper_protocol_scores), so set them beside the "(paper protocol)"
# columns of results_table, not beside the standard ones.
PAPER_RESULTS = pd.DataFrame(
    {
        ("PICAI", "IoU"): [0.641, 0.630, 0.654, 0.665, 0.670, 0.685, 0.690, 0.696],
        ("PICAI", "DSC"): [0.654, 0.705, 0.727, 0.739, 0.742, 0.757, 0.726, 0.769],
        ("PICAI", "Sensitivity"): [0.917, 0.870, 0.917, 0.904, 0.938, 0.896, 0.715, 0.951],
        ("PICAI", "Specificity"): [0.948, 0.876, 0.947, 0.952, 0.927, 0.949, 0.924, 0.950],
        ("BraTS", "IoU"): [0.875, 0.813, 0.893, 0.891, 0.829, 0.884, 0.869, 0.884],
        ("BraTS", "DSC"): [0.921, 0.881, 0.930, 0.933, 0.889, 0.927, 0.922, 0.927],
    },
    index=pd.Index(["tversky", "ce", "iou", "dice", "dice_ce", "dice_focal", "focal", "afl"], name="loss"),
).rename_axis(columns=["dataset", "metric"])

# The paper reports the same A-FL BraTS configuration three ways; PAPER_RESULTS uses the
# comparison table's numbers.
PAPER_BRATS_AFL_REPORTS = {
    "comparison table": {"IoU": 0.884, "DSC": 0.927},
    "abstract": {"IoU": 0.883, "DSC": 0.931},
    "per-architecture table": {"IoU": 0.898, "DSC": 0.951},
}
