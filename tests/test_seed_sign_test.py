"""metrics.seed_sign_test: what the seeds alone can tell, against the binomial distribution by hand."""

import math

import pandas as pd
import pytest

from afl_core.metrics import seed_sign_test


def _two_sided_sign_p(positive: int, n: int) -> float:
    """Exact two-sided sign test by enumeration: outcomes at most as likely as the observed one."""
    probability = [math.comb(n, k) / 2**n for k in range(n + 1)]
    return min(1.0, sum(p for p in probability if p <= probability[positive] * (1 + 1e-12)))


def test_p_values_and_floor_follow_the_binomial_distribution():
    rows = {
        "all up, 3": [0.1, 0.2, 0.15],
        "all down, 5": [-0.1, -0.2, -0.15, -0.12, -0.11],
        "4 of 5 up": [0.1, 0.2, 0.15, 0.12, -0.11],
        "all up, 6": [0.1, 0.2, 0.15, 0.12, 0.11, 0.13],
    }
    width = max(len(v) for v in rows.values())
    table = pd.DataFrame(
        {f"seed {s}": [v[s] if s < len(v) else None for v in rows.values()] for s in range(width)}, index=list(rows)
    )
    table["min"] = 0.0  # other columns are ignored
    out = seed_sign_test(table)
    for name, values in rows.items():
        n, positive = len(values), sum(v > 0 for v in values)
        assert out.loc[name, "seeds"] == n and out.loc[name, "positive"] == positive
        assert out.loc[name, "sign test p"] == pytest.approx(_two_sided_sign_p(positive, n), rel=1e-12)
        assert out.loc[name, "p floor"] == pytest.approx(2 / 2**n)
    assert out.loc["all up, 3", "sign test p"] == pytest.approx(0.25)
    assert out.loc["all down, 5", "sign test p"] == pytest.approx(0.0625)
    assert out.loc["all up, 6", "sign test p"] < 0.05  # six seeds are the fewest that can reach 5 %


def test_verdicts_name_sign_changes_and_single_seeds():
    table = pd.DataFrame(
        {
            "seed 0": [0.1, -0.006, 0.095, 0.0, 0.1],
            "seed 1": [-0.05, -0.050, 0.201, 0.0, 0.1],
            "seed 2": [0.2, -0.129, 0.194, 0.3, 0.1],
        },
        index=["flips", "one seed carries it", "steady", "one nonzero seed", "equal"],
    )
    out = seed_sign_test(table)
    assert out.loc["flips", "verdict"].startswith("not resolved: the sign changes")
    assert out.loc["one seed carries it", "verdict"] == "not resolved: one seed carries most of it"
    assert out.loc["one seed carries it", "largest seed share"] == pytest.approx(0.129 / 0.185)
    assert out.loc["steady", "verdict"] == "same side in every seed"
    assert out.loc["one nonzero seed", "verdict"] == "not resolved: it rests on one seed"
    assert out.loc["equal", "largest seed share"] == pytest.approx(1 / 3)
    with pytest.raises(KeyError, match="seed_differences"):
        seed_sign_test(table.rename(columns=str.upper))
