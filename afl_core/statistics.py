"""Comparing runs: paired intervals and tests over cases, and what the training seeds say.

* **Two runs on the same cases** (:func:`paired_bootstrap_ci`, :func:`wilcoxon_signed_rank`,
  :func:`compare_runs`): the mean difference of a per-case score with a bootstrap interval
  and a Wilcoxon signed-rank p-value.
* **Several arms and seeds** (:func:`seed_averaged`, :func:`compare_to_reference`,
  :func:`adjust_p_values`): seeds averaged per case, every arm against a reference, the
  p-values corrected for the number of comparisons.
* **The seeds themselves** (:func:`seed_summary`, :func:`seed_differences`,
  :func:`seed_sign_test`): the spread over seeds to show before a ranking, each arm minus
  the reference seed by seed, and what a sign test over so few seeds can tell.

The tables are study tables (:func:`afl_core.runs.collect`): one row per arm x seed x case,
columns ``arm``, ``seed``, ``case`` and the scores of :mod:`afl_core.metrics`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "MIN_PAIRED_CASES",
    "BOOTSTRAP_METHODS",
    "P_VALUE_CORRECTIONS",
    "FewCasesWarning",
    "paired_bootstrap_ci",
    "wilcoxon_signed_rank",
    "compare_runs",
    "seed_averaged",
    "seed_summary",
    "seed_differences",
    "seed_sign_test",
    "adjust_p_values",
    "compare_to_reference",
]


# Below this many paired cases a bootstrap interval and a Wilcoxon p-value say little.
MIN_PAIRED_CASES = 10
BOOTSTRAP_METHODS = ("BCa", "percentile")
P_VALUE_CORRECTIONS = ("holm", "bonferroni")
_SEED_COLUMN = "seed "  # the per-seed columns of seed_summary and seed_differences


class FewCasesWarning(UserWarning):
    """A paired comparison on fewer than :data:`MIN_PAIRED_CASES` cases.

    With ``n`` cases the bootstrap can draw only ``C(2n - 1, n)`` distinct resamples (10
    at n = 3, 126 at n = 5), so its interval is coarse and too narrow, and the exact
    Wilcoxon test cannot go below ``p = 2 / 2**n`` (0.25 at n = 3). Silence it with
    ``warnings.simplefilter("ignore", FewCasesWarning)`` once the learner has seen it.
    """


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a and b must be 1D with one value per case, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("a and b are empty: there is nothing to compare")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("a and b must be finite; drop the cases where either is NaN (compare_runs does)")
    return x, y


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(y - x, axis=axis)


def paired_bootstrap_ci(
    a: Any, b: Any, n_boot: int = 10000, ci: float = 0.95, seed: int = 0, *, method: str = "BCa"
) -> dict[str, Any]:
    """Bootstrap interval of the mean paired difference ``mean(b - a)`` over cases.

    Cases are resampled with replacement, the pairs staying together, ``n_boot`` times
    (:func:`scipy.stats.bootstrap` with ``paired=True``, seeded with
    ``numpy.random.default_rng(seed)``, so reproducible). ``method``:

    * ``"percentile"``: the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of the
      resampled means;
    * ``"BCa"`` (default, as in SciPy): those quantile levels shifted for the bias of the
      resampled means (``z0``, from the share of them below the observed mean) and for
      their skew (the acceleration ``a``, from a jackknife over cases):
      ``level = Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1`` of each
      percentile level. Closer to the nominal coverage for skewed per-case differences.

    The interval describes the variation from **case to case**: it treats the cases as
    a sample from a population of cases. It says nothing about the training seed; for
    several seeds, average them per case first (:func:`seed_averaged`) and show their
    spread separately (:func:`seed_summary`). When every difference is the same (to
    rounding), every resample has the same mean and the interval is that value.

    Warns :class:`FewCasesWarning` below :data:`MIN_PAIRED_CASES` (10) cases.

    Returns:
        ``mean_diff`` (of the original cases), ``low``, ``high``, ``n`` (cases) and
        ``method``.
    """
    x, y = _paired(a, b)
    if not 0 < ci < 1:
        raise ValueError(f"ci must lie strictly between 0 and 1, got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"method must be one of {BOOTSTRAP_METHODS}, got {method!r}")
    diff = y - x
    if diff.size < MIN_PAIRED_CASES:
        warnings.warn(
            f"only {diff.size} paired case(s): the bootstrap has at most {math.comb(2 * diff.size - 1, diff.size)} "
            f"distinct resamples, so its interval is coarse and too narrow; compare on at least "
            f"{MIN_PAIRED_CASES} cases or show the per-case differences instead",
            FewCasesWarning,
            stacklevel=2,
        )
    if np.ptp(diff) <= 1e-12:  # equal to rounding: every resample has this mean (and BCa is undefined)
        low = high = float(diff.mean())
    else:
        result = stats.bootstrap(
            (x, y),
            _mean_difference,
            paired=True,
            vectorized=True,
            n_resamples=n_boot,
            confidence_level=ci,
            method=method,
            random_state=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {"mean_diff": float(diff.mean()), "low": low, "high": high, "n": int(diff.size), "method": method}


def wilcoxon_signed_rank(a: Any, b: Any) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences ``b - a``.

    :func:`scipy.stats.wilcoxon` with its defaults (zero differences dropped; exact
    distribution for small samples). The test ranks the absolute differences and asks
    whether the positive ones carry more (or less) than half of the rank sum; with ``n``
    cases and no ties its smallest two-sided p-value is ``2 / 2**n`` (0.25 at n = 3,
    0.002 at n = 10), so a handful of cases can never give a small p. Note: when every
    difference is zero the test has no data; the p-value is then 1.0 (no evidence of a
    difference) rather than NaN.
    """
    x, y = _paired(a, b)
    diff = y - x
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff).pvalue)


def _by_case(per_case: pd.DataFrame, metric: str, name: str) -> pd.Series:
    for needed in ("case", metric):
        if needed not in per_case.columns:
            raise KeyError(f"{name} has no column {needed!r} (columns: {list(per_case.columns)})")
    duplicated = per_case["case"][per_case["case"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(
            f"{name} lists cases more than once: {list(duplicated)[:5]}; for several seeds, average them per case "
            "first (seed_averaged)"
        )
    return per_case.set_index("case")[metric].astype(float)


def compare_runs(
    per_case_a: pd.DataFrame,
    per_case_b: pd.DataFrame,
    metric: str = "dice",
    *,
    n_boot: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> dict[str, Any]:
    """Paired comparison of two runs on the same cases (difference ``b - a``).

    The per-case tables (from :func:`per_case_scores`, or :func:`seed_averaged` for
    several seeds) are aligned on ``case``; they must hold the same cases. Cases where
    ``metric`` is NaN in either run (e.g. sensitivity without a lesion) are left out
    and ``n`` says how many remain.

    Returns:
        ``metric``, ``n``, ``mean_a``, ``mean_b``, ``mean_diff``, ``low``, ``high``
        (bootstrap interval, :func:`paired_bootstrap_ci` with ``method``), ``method`` and
        ``p_value`` (:func:`wilcoxon_signed_rank`).
    """
    a = _by_case(per_case_a, metric, "per_case_a")
    b = _by_case(per_case_b, metric, "per_case_b")
    if set(a.index) != set(b.index):
        only_a = sorted(set(a.index) - set(b.index))[:5]
        only_b = sorted(set(b.index) - set(a.index))[:5]
        raise ValueError(
            f"the runs were evaluated on different cases (only in a: {only_a}, only in b: {only_b}); "
            "evaluate both on the same split"
        )
    b = b.loc[a.index]
    both = a.notna() & b.notna()
    x, y = a[both].to_numpy(), b[both].to_numpy()
    interval = paired_bootstrap_ci(x, y, n_boot=n_boot, ci=ci, seed=seed, method=method)
    return {
        "metric": metric,
        "n": interval["n"],
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "mean_diff": interval["mean_diff"],
        "low": interval["low"],
        "high": interval["high"],
        "method": method,
        "p_value": wilcoxon_signed_rank(x, y),
    }


def _long_table(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``table`` checked to be one row per (arm, seed, case), as ``results/comparison/per_case.csv``."""
    missing = [c for c in ("arm", "seed", "case", metric) if c not in table.columns]
    if missing:
        raise KeyError(
            f"the table lacks columns {missing} (columns: {list(table.columns)}); give one row per arm x seed x case, "
            "e.g. pandas.read_csv('results/comparison/per_case.csv')"
        )
    repeated = table.duplicated(["arm", "seed", "case"])
    if repeated.any():
        first = table.loc[repeated, ["arm", "seed", "case"]].iloc[0].tolist()
        raise ValueError(f"the table repeats (arm, seed, case) rows, e.g. {first}; keep one row per run and case")
    return table


def seed_averaged(table: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """``metric`` averaged over the training seeds, one row per (arm, case).

    Seeds and cases are two sources of variation: the seed changes the training run
    (initialisation, sampling, augmentation), the case is what the run is tested on.
    Averaging the seeds per case first and then bootstrapping the cases
    (:func:`compare_runs`, :func:`compare_to_reference`) gives an interval for **these
    seeds' average** score, with the case-to-case variation as its only uncertainty: it
    does not cover the seed-to-seed variation, so it is not an interval for the loss's
    expected score over training runs. A seed that moves every case of one arm shifts
    the average and stays invisible to the interval; show the spread over seeds
    (:func:`seed_summary`) and what the seeds alone can tell (:func:`seed_sign_test`).

    A case whose ``metric`` is NaN in any seed (e.g. ``hd95`` after a missed lesion) is
    NaN here, so a comparison leaves it out rather than average unlike runs.

    Args:
        table: one row per arm x seed x case (columns ``arm``, ``seed``, ``case``,
            ``metric``), as ``results/comparison/per_case.csv``.

    Returns:
        Columns ``arm``, ``case``, ``metric`` and ``seeds`` (how many were averaged),
        in the table's order of arms and cases.
    """
    grouped = _long_table(table, metric).groupby(["arm", "case"], sort=False)[metric]
    out = grouped.agg(["mean", "count", "size"]).reset_index()
    out[metric] = out["mean"].where(out["count"] == out["size"])
    return out.rename(columns={"size": "seeds"})[["arm", "case", metric, "seeds"]]


def seed_summary(table: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """The seed-to-seed spread of each arm's mean ``metric``, to show before a ranking.

    For each arm and seed the mean over cases (NaN cases left out, as in
    :func:`results_table`); then, over the seeds, their ``mean``, standard deviation
    ``sd`` (``ddof=1``), ``min`` and ``max``. When the spread over seeds is as large as
    the gaps between arms, one seed's ranking is noise.

    Returns:
        One row per arm (in the table's order): a column ``seed <s>`` per seed, then
        ``mean``, ``sd``, ``min``, ``max``, ``seeds`` and ``cases``.
    """
    table = _long_table(table, metric)
    per_seed = table.pivot_table(index="arm", columns="seed", values=metric, aggfunc="mean")
    per_seed = per_seed.loc[table["arm"].unique()]
    out = per_seed.rename(columns=lambda s: f"{_SEED_COLUMN}{s}").rename_axis(columns=None)
    for statistic in ("mean", "std", "min", "max"):
        out["sd" if statistic == "std" else statistic] = per_seed.agg(statistic, axis=1)
    out["seeds"] = per_seed.shape[1]
    out["cases"] = table.groupby("arm", sort=False)["case"].nunique()
    return out


def seed_sign_test(differences: pd.DataFrame) -> pd.DataFrame:
    """What the seeds alone say about each arm's difference from a reference.

    ``differences`` holds one row per arm and a column ``seed <s>`` per seed: that seed's
    run minus the reference's run with the same seed, each the mean over the cases
    (:func:`afl_core.statistics.seed_differences`); other columns are ignored. Each seed
    is one draw of the training run, so the seeds, not the cases, are the sample here.

    With no effect each nonzero difference is as likely positive as negative, so all
    ``n`` land on one side with probability ``2 / 2**n``, which is also the smallest
    two-sided p-value an exact sign test on ``n`` seeds can reach: 0.25 for 3 seeds,
    0.0625 for 5; below 0.05 only from 6 seeds. "The same side in every seed" is
    therefore no test with 5 seeds or fewer.

    A difference is labelled *not resolved* when its sign changes from seed to seed, when
    only one seed differs from the reference at all, or when one seed carries it: that
    seed's ``|d_s|`` is more than half of ``sum_s |d_s|`` (the other seeds together move
    less than it does).

    Returns:
        One row per arm (the input's order): ``seeds`` (nonzero differences ``n``),
        ``positive`` (how many are above 0), ``sign test p`` (exact two-sided binomial
        test of ``positive`` out of ``n`` at 1/2), ``p floor`` (``2 / 2**n``),
        ``largest seed share`` (``max |d_s| / sum |d_s|``) and ``verdict``.
    """
    columns = [c for c in differences.columns if str(c).startswith(_SEED_COLUMN)]
    if not columns:
        raise KeyError(
            f"no '{_SEED_COLUMN}<s>' columns in {list(differences.columns)}; pass the table of "
            "afl_core.statistics.seed_differences"
        )
    rows = {}
    for loss, values in differences[columns].astype(float).iterrows():
        d = values.dropna().to_numpy()
        d = d[d != 0]
        n, positive = int(d.size), int((d > 0).sum())
        share = float(np.abs(d).max() / np.abs(d).sum()) if n else math.nan
        if 0 < positive < n:
            verdict = "not resolved: the sign changes between seeds"
        elif n < 2:
            verdict = "not resolved: it rests on one seed"
        elif share > 0.5:
            verdict = "not resolved: one seed carries most of it"
        else:
            verdict = "same side in every seed"
        rows[loss] = {
            "seeds": n,
            "positive": positive,
            "sign test p": float(stats.binomtest(positive, n).pvalue) if n else 1.0,
            "p floor": 2.0 / 2.0**n if n else 1.0,
            "largest seed share": share,
            "verdict": verdict,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(differences.index.name)


def adjust_p_values(p_values: Any, method: str = "holm") -> np.ndarray:
    """p-values adjusted for comparing several losses at once (family-wise error).

    With ``m`` comparisons at level 0.05 each, the chance of at least one false
    "significant" result grows to ``1 - 0.95**m`` (34 % for m = 8). The adjusted values
    keep it at most 0.05 when compared with 0.05:

    * ``"bonferroni"``: ``min(1, m p_i)``;
    * ``"holm"`` (default; never larger than Bonferroni): sort ascending,
      ``p_(1) <= ... <= p_(m)``, then ``adj_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))``,
      returned in the input order.

    Returns:
        A float array in the order of ``p_values``.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p_values must be a non-empty 1D sequence, got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p_values must lie in [0, 1] (no NaN), got {p.tolist()}")
    if method not in P_VALUE_CORRECTIONS:
        raise ValueError(f"method must be one of {P_VALUE_CORRECTIONS}, got {method!r}")
    m = p.size
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return adjusted


def compare_to_reference(
    table: pd.DataFrame,
    reference: str,
    metric: str = "dice",
    *,
    correction: str = "holm",
    method: str = "BCa",
    n_boot: int = 10000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Every arm of a multi-seed table against ``reference``, corrected for multiple comparisons.

    Seeds are averaged per case (:func:`seed_averaged`), then each other arm is compared
    with ``reference`` over the cases (:func:`compare_runs`: difference ``arm -
    reference``, bootstrap interval, Wilcoxon p-value), and the p-values are adjusted
    together (:func:`adjust_p_values` with ``correction``). The intervals are per
    comparison at level ``ci``; for intervals that hold jointly use
    ``ci = 1 - (1 - ci) / m`` for ``m`` comparisons (Bonferroni). Intervals and p-values
    are about these seeds' average over other cases, not about another training run
    (:func:`seed_averaged`; the seeds' own evidence: :func:`seed_sign_test`).

    Returns:
        One row per other arm (index ``arm``, in the table's order): ``n`` (cases),
        ``seeds``, ``mean_reference``, ``mean``, ``mean_diff``, ``low``, ``high``,
        ``p_value`` and ``p_adjusted``.
    """
    averaged = seed_averaged(table, metric)
    losses = averaged["arm"].unique()
    if reference not in losses:
        raise ValueError(f"reference {reference!r} is not an arm of the table ({list(losses)})")
    if losses.size < 2:
        raise ValueError("the table holds only the reference arm: there is nothing to compare")
    base = averaged[averaged["arm"] == reference]
    rows = {}
    for loss, other in averaged.groupby("arm", sort=False):
        if loss == reference:
            continue
        c = compare_runs(base, other, metric, n_boot=n_boot, ci=ci, seed=seed, method=method)
        rows[loss] = {
            "n": c["n"],
            "seeds": int(other["seeds"].min()),
            "mean_reference": c["mean_a"],
            "mean": c["mean_b"],
            "mean_diff": c["mean_diff"],
            "low": c["low"],
            "high": c["high"],
            "p_value": c["p_value"],
        }
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("arm")
    out["p_adjusted"] = adjust_p_values(out["p_value"].to_numpy(), correction)
    return out


def seed_differences(per_case: pd.DataFrame, reference: str, metric: str = "dice") -> pd.DataFrame:
    """Each arm minus ``reference``, seed by seed: the mean of ``metric`` over the cases of
    the arm's run with seed ``s`` minus that of the reference's run with the same seed (the
    same initialisation, slice order and augmentation draws). Columns ``seed <s>``, then
    ``min``, ``max`` and ``same sign`` (True when every seed puts the arm on the same side
    of the reference). A case bootstrap cannot see a seed that moves all cases at once;
    this table shows it."""
    _long_table(per_case, metric)
    means = per_case.pivot_table(index="arm", columns="seed", values=metric, aggfunc="mean", sort=False)
    if reference not in means.index:
        raise ValueError(f"reference {reference!r} is not an arm of the table ({list(means.index)})")
    diff = means.drop(index=reference) - means.loc[reference]
    out = diff.rename(columns=lambda s: f"seed {s}").rename_axis(index="arm", columns=None)
    out["min"], out["max"] = diff.min(axis=1), diff.max(axis=1)
    out["same sign"] = (diff > 0).all(axis=1) | (diff < 0).all(axis=1)
    return out
