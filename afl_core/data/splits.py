"""Training / validation splits of a dataset's cases (no torch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from afl_core.data.layout import LABELS_DIR, case_has_lesion, list_cases, read_dataset_json

__all__ = ["split_cases", "kfold_cases", "patient_grouping"]


def split_cases(
    root_or_cases: str | os.PathLike | Iterable[str] | Mapping[str, bool],
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    group_of: Callable[[str], str] | None = None,
) -> tuple[list[str], list[str]]:
    """Split cases into training and validation sets; no case is on both sides.

    ``root_or_cases`` is a dataset folder (lesion-bearing cases are found from the labels),
    a mapping ``{case: has_lesion}``, or a plain list of case ids (no stratification).
    Lesion-bearing and lesion-free cases are split separately, each in proportion
    ``val_fraction`` (rounded), so both sides get lesion-bearing cases whenever there are
    at least two of them. The same arguments always give the same split.

    ``group_of`` maps a case id to its patient: the patients are split instead, so no
    patient is on both sides (PI-CAI has several studies of some patients; see
    :func:`patient_grouping`).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = None
    if isinstance(root_or_cases, (str, os.PathLike)):
        root = Path(root_or_cases)
        has_lesion = {case: case_has_lesion(root, case) for case in list_cases(root)}
    elif isinstance(root_or_cases, Mapping):
        has_lesion = {str(case): bool(flag) for case, flag in root_or_cases.items()}
    else:
        cases = [str(case) for case in root_or_cases]
        if len(set(cases)) != len(cases):
            raise ValueError("split_cases got duplicate case ids")
        has_lesion = dict.fromkeys(cases, False)
    if not has_lesion:
        where = f"the dataset {root} holds no cases ({LABELS_DIR}/ is empty)" if root else "no cases were given"
        raise ValueError(f"nothing to split: {where}; add cases (a label per case) before training")
    if group_of is not None:
        groups: dict[str, list[str]] = {}
        for case in has_lesion:
            groups.setdefault(str(group_of(case)), []).append(case)
        if len(groups) == 1 and len(has_lesion) > 1 and val_fraction > 0:
            (patient,) = groups
            raise ValueError(
                f"all {len(has_lesion)} cases{f' of {root}' if root else ''} belong to one patient ({patient!r}: "
                f"{', '.join(sorted(has_lesion)[:3])}{', ...' if len(has_lesion) > 3 else ''}), and a patient's "
                "cases never go to both sides of the split, so none is left to validate on: add cases of "
                "other patients"
            )
        train_groups, val_groups = split_cases(
            {group: any(has_lesion[c] for c in members) for group, members in groups.items()}, val_fraction, seed
        )
        return (sorted(c for g in train_groups for c in groups[g]), sorted(c for g in val_groups for c in groups[g]))
    rng = np.random.default_rng(seed)
    n_val_total = round(val_fraction * len(has_lesion))
    if val_fraction > 0 and len(has_lesion) >= 2:
        n_val_total = min(max(n_val_total, 1), len(has_lesion) - 1)
    positives = sorted(c for c, flag in has_lesion.items() if flag)
    negatives = sorted(c for c, flag in has_lesion.items() if not flag)
    n_val_pos = round(val_fraction * len(positives))
    if val_fraction > 0 and len(positives) >= 2:
        n_val_pos = min(max(n_val_pos, 1), len(positives) - 1)
    n_val_pos = min(n_val_pos, n_val_total)
    n_val_neg = min(max(n_val_total - n_val_pos, 0), len(negatives))
    val = [positives[i] for i in rng.permutation(len(positives))[:n_val_pos]]
    val += [negatives[i] for i in rng.permutation(len(negatives))[:n_val_neg]]
    train = sorted(set(has_lesion) - set(val))
    return train, sorted(val)


def patient_grouping(root: str | os.PathLike) -> Callable[[str], str] | None:
    """How a dataset's case ids name patients, for :func:`split_cases`: PI-CAI's
    ``<patient>_<study>`` gives the patient id; a dataset.json with ``patients`` (``afl-data
    folder --patient``) maps each case to its patient; other sources have one case per patient."""
    info = read_dataset_json(root)
    if info.get("source") == "picai":
        return lambda case: case.split("_")[0]
    if isinstance(info.get("patients"), dict):
        return info["patients"].__getitem__
    return None


def kfold_cases(
    root: str | os.PathLike,
    folds: int,
    seed: int = 0,
    *,
    group_of: Callable[[str], str] | None = None,
) -> list[list[str]]:
    """``folds`` disjoint validation sets that together hold every case once (k-fold
    cross-validation): lesion-bearing and lesion-free patients are shuffled with ``seed``
    and dealt round-robin, so each fold gets its share of both; with ``group_of`` every
    patient's cases land in one fold. Returns the sorted case ids of each fold."""
    has_lesion = {case: case_has_lesion(root, case) for case in list_cases(root)}
    if not has_lesion:
        raise ValueError(f"nothing to split: the dataset {root} holds no cases ({LABELS_DIR}/ is empty)")
    groups: dict[str, list[str]] = {}
    for case in has_lesion:
        groups.setdefault(str(group_of(case)) if group_of else case, []).append(case)
    if not 2 <= folds <= len(groups):
        raise ValueError(f"folds must be at least 2 and at most the number of patients ({len(groups)}), got {folds}")
    rng = np.random.default_rng(seed)
    positives = sorted(g for g, members in groups.items() if any(has_lesion[c] for c in members))
    negatives = sorted(g for g in groups if g not in set(positives))
    dealt = (
        [*rng.permutation(positives).tolist(), *rng.permutation(negatives).tolist()]
        if positives
        else rng.permutation(negatives).tolist()
    )
    return [sorted(c for g in dealt[fold::folds] for c in groups[g]) for fold in range(folds)]
