"""Tests of afl_core.metrics against independent references: NumPy re-implementations
written here, brute-force distances (SciPy cdist), MONAI, and hand-built volumes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage, stats
from scipy.spatial.distance import cdist

from afl_core import metrics
from afl_core.shape import boundary_irregularity

monai_metrics = pytest.importorskip("monai.metrics")
monai_losses = pytest.importorskip("monai.losses")

# MONAI's own hausdorff code passes an argument it has deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _blob(rng, shape, threshold=0.1, sigma=2.0):
    """A random smooth binary mask: smoothed noise above ``threshold`` standard deviations."""
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return smooth / smooth.std() > threshold


def _bc(mask):
    """(1, 1, *S) float tensor for MONAI."""
    return torch.from_numpy(np.asarray(mask, dtype=np.float64))[None, None]


SHAPES_SPACINGS = [
    ((40, 48), None),
    ((40, 48), (0.7, 1.3)),
    ((10, 26, 24), None),
    ((10, 26, 24), (3.0, 0.8, 0.9)),
]


# --------------------------------------------------------------------------- overlap scores


@pytest.mark.parametrize("shape", [(30, 33), (7, 20, 21)])
def test_overlap_scores_match_numpy_counts(shape):
    rng = np.random.default_rng(1)
    for _ in range(4):
        p = rng.random(shape) < 0.3
        t = rng.random(shape) < 0.2
        pf, tf = p.astype(float), t.astype(float)
        tp = (pf * tf).sum()
        fp = (pf * (1 - tf)).sum()
        fn = ((1 - pf) * tf).sum()
        tn = ((1 - pf) * (1 - tf)).sum()
        s = metrics.segmentation_scores(p, t)
        assert s["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert s["iou"] == pytest.approx(tp / (tp + fp + fn))
        assert s["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert s["specificity"] == pytest.approx(tn / (tn + fp))


@pytest.mark.parametrize("shape", [(30, 33), (7, 20, 21)])
def test_dice_and_iou_match_monai(shape):
    rng = np.random.default_rng(2)
    pairs = [(_blob(rng, shape), _blob(rng, shape)) for _ in range(3)]
    empty = np.zeros(shape, bool)
    pairs += [(empty, empty), (pairs[0][0], empty), (empty, pairs[0][1])]
    for p, t in pairs:
        s = metrics.segmentation_scores(p, t)
        dice = monai_metrics.compute_dice(_bc(p), _bc(t), include_background=True, ignore_empty=False)
        iou = monai_metrics.compute_iou(_bc(p), _bc(t), include_background=True, ignore_empty=False)
        assert s["dice"] == pytest.approx(dice.item(), rel=1e-6, abs=1e-9)
        assert s["iou"] == pytest.approx(iou.item(), rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------- HD95


def _surface_numpy(mask):
    """Voxels of the mask with a face neighbour outside it (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded.copy()
    for axis in range(mask.ndim):
        interior &= np.roll(padded, 1, axis) & np.roll(padded, -1, axis)
    return (padded & ~interior)[tuple(slice(1, -1) for _ in range(mask.ndim))]


def _hd95_brute_force(p, t, spacing):
    sp = np.ones(p.ndim) if spacing is None else np.asarray(spacing, float)
    sp_pts = np.argwhere(_surface_numpy(p)) * sp
    st_pts = np.argwhere(_surface_numpy(t)) * sp
    d = cdist(sp_pts, st_pts)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


@pytest.mark.parametrize("shape,spacing", SHAPES_SPACINGS)
def test_hd95_matches_monai_and_brute_force(shape, spacing):
    rng = np.random.default_rng(3)
    for _ in range(3):
        p, t = _blob(rng, shape), _blob(rng, shape)
        assert p.any() and t.any()
        ours = metrics.hd95(p, t, spacing)
        ref = monai_metrics.compute_hausdorff_distance(
            _bc(p), _bc(t), include_background=True, percentile=95, spacing=spacing
        ).item()
        assert ours == pytest.approx(ref, rel=1e-6, abs=1e-6)
        assert ours == pytest.approx(_hd95_brute_force(p, t, spacing), rel=1e-12)
        assert metrics.segmentation_scores(p, t, spacing)["hd95"] == ours


def test_hd95_is_max_of_directed_percentiles_not_percentile_of_union():
    rng = np.random.default_rng(13)
    t = _blob(rng, (40, 40), threshold=0.5)
    p = _blob(rng, (40, 40), threshold=1.0)
    d = cdist(np.argwhere(_surface_numpy(p)), np.argwhere(_surface_numpy(t)))
    union = np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95)
    directed_max = max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))
    assert not math.isclose(union, directed_max, rel_tol=1e-3)
    assert metrics.hd95(p, t) == pytest.approx(directed_max)


def test_hd95_shift_is_scaled_by_spacing():
    t = np.zeros((30, 30), bool)
    t[5:15, 5:15] = True
    p = np.roll(t, 3, axis=0)
    assert metrics.hd95(p, t) == pytest.approx(3.0)
    assert metrics.hd95(p, t, spacing=(2.5, 1.0)) == pytest.approx(7.5)
    assert metrics.hd95(p, t, spacing=2.0) == pytest.approx(6.0)


def test_hd95_on_mask_touching_the_border_matches_monai():
    t = np.zeros((20, 20, 20), bool)
    t[0:6, 3:12, 14:20] = True
    p = np.zeros_like(t)
    p[1:8, 0:10, 12:20] = True
    ref = monai_metrics.compute_hausdorff_distance(_bc(p), _bc(t), include_background=True, percentile=95).item()
    assert metrics.hd95(p, t) == pytest.approx(ref, rel=1e-6)


# --------------------------------------------------------------------------- empty masks


def test_empty_mask_conventions():
    empty = np.zeros((6, 8, 8), bool)
    lesion = empty.copy()
    lesion[2:4, 2:5, 3:6] = True
    full = np.ones_like(empty)

    both = metrics.segmentation_scores(empty, empty)
    assert (both["dice"], both["iou"], both["specificity"], both["hd95"]) == (1.0, 1.0, 1.0, 0.0)
    assert math.isnan(both["sensitivity"])

    false_alarm = metrics.segmentation_scores(lesion, empty)
    assert (false_alarm["dice"], false_alarm["iou"]) == (0.0, 0.0)
    assert math.isnan(false_alarm["sensitivity"])
    assert false_alarm["specificity"] == pytest.approx(1 - lesion.sum() / lesion.size)
    assert math.isnan(false_alarm["hd95"])

    missed = metrics.segmentation_scores(empty, lesion)
    assert (missed["dice"], missed["iou"], missed["sensitivity"], missed["specificity"]) == (0.0, 0.0, 0.0, 1.0)
    assert math.isnan(missed["hd95"])

    assert math.isnan(metrics.segmentation_scores(full, full)["specificity"])

    # MONAI: one side empty gives inf distances (NaN once a percentile is taken), like
    # ours undefined; both empty gives NaN where ours is a perfect 0.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isinf(monai_metrics.compute_hausdorff_distance(_bc(empty), _bc(lesion), True))
        assert math.isnan(monai_metrics.compute_hausdorff_distance(_bc(empty), _bc(lesion), True, percentile=95))
        assert math.isnan(monai_metrics.compute_hausdorff_distance(_bc(empty), _bc(empty), True, percentile=95))


# --------------------------------------------------------------------------- inputs


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(4)
    p, t = _blob(rng, (8, 20, 20)), _blob(rng, (8, 20, 20))
    ref = metrics.segmentation_scores(p, t, (2.0, 1.0, 1.0))
    for pp, tt in [
        (torch.from_numpy(p), torch.from_numpy(t)),
        (torch.from_numpy(p).float().requires_grad_(), torch.from_numpy(t).to(torch.uint8)),
        (p.astype(np.uint8), t.astype(np.float32)),
    ]:
        assert metrics.segmentation_scores(pp, tt, [2, 1, 1]) == ref


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda z: metrics.segmentation_scores(z, z[:, :-1]), "same shape"),
        (lambda z: metrics.segmentation_scores(z * 0.5, z), "binary"),
        (lambda z: metrics.segmentation_scores(z[None, None], z[None, None]), "2D image or a 3D volume"),
        (lambda z: metrics.segmentation_scores(z, z, spacing=(1.0, 1.0)), "one value per axis"),
        (lambda z: metrics.segmentation_scores(z, z, spacing=(1.0, 0.0, 1.0)), "positive"),
        (lambda z: metrics.paper_protocol_scores(z * 1.5, z), r"\[0, 1\]"),
        (lambda z: metrics.paper_protocol_scores(np.full(z.shape, np.nan), z), "non-finite"),
        (lambda z: metrics.paper_protocol_scores(z, z * 0.3), "binary"),
        (lambda z: metrics.lesion_detection(z, z, lesions=z * 2 + 1), "foreground"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    z = np.zeros((4, 6, 6))
    z[1:3, 2:4, 2:4] = 1
    with pytest.raises(ValueError, match=message):
        call(z)


def test_non_numeric_input_is_refused():
    with pytest.raises(TypeError, match="numbers"):
        metrics.segmentation_scores(np.full((3, 3), "a"), np.zeros((3, 3)))


# --------------------------------------------------------------------------- the authors' protocol


@pytest.mark.parametrize("shape", [(24, 28), (6, 16, 18)])
def test_paper_protocol_matches_monai_dice_loss(shape):
    rng = np.random.default_rng(5)
    t = _blob(rng, shape, threshold=0.4)
    for prob in (rng.random(shape), ndimage.gaussian_filter(t.astype(float), 1.0), t.astype(float)):
        s = metrics.paper_protocol_scores(prob, t)
        x = torch.from_numpy(np.stack([1 - prob, prob]))[None]
        y = torch.from_numpy(np.stack([1 - t, t]).astype(np.float64))[None]

        def one_minus(**kw):
            return 1 - monai_losses.DiceLoss(squared_pred=True, reduction="mean", **kw)(x, y).item()

        assert s["dice"] == pytest.approx(one_minus(include_background=True), rel=1e-10)
        assert s["iou"] == pytest.approx(one_minus(include_background=True, jaccard=True), rel=1e-10)
        assert s["dice_foreground"] == pytest.approx(one_minus(include_background=False), rel=1e-10)
        assert s["iou_foreground"] == pytest.approx(one_minus(include_background=False, jaccard=True), rel=1e-10)
        assert s["dice"] == pytest.approx((s["dice_foreground"] + s["dice_background"]) / 2)


def test_paper_protocol_inflates_small_lesion_dice():
    # A hard prediction of a small lesion: the foreground channel is the hard Dice,
    # the background channel ~1, and the reported value their average.
    t = np.zeros((24, 64, 64), bool)
    t[10:14, 20:30, 20:30] = True
    p = np.zeros_like(t)
    p[11:15, 24:34, 20:30] = True
    hard = metrics.segmentation_scores(p, t)["dice"]
    s = metrics.paper_protocol_scores(p.astype(float), torch.from_numpy(t))
    assert s["dice_foreground"] == pytest.approx(hard, abs=1e-6)
    assert s["dice_background"] > 0.99
    assert s["dice"] == pytest.approx((hard + s["dice_background"]) / 2)
    assert s["dice"] > hard + 0.15


# --------------------------------------------------------------------------- lesion detection


def test_lesion_detection_hit_miss_and_false_positive():
    t = np.zeros((10, 20, 20), bool)
    t[2:5, 2:6, 2:6] = True  # lesion A, hit
    t[6:9, 12:17, 12:17] = True  # lesion B, missed
    p = np.zeros_like(t)
    p[3:6, 4:8, 4:8] = True  # overlaps A
    p[1:3, 14:18, 1:4] = True  # overlaps nothing
    d = metrics.lesion_detection(p, t, spacing=(3.0, 0.5, 0.5))
    assert (d["tp"], d["fp"], d["fn"]) == (1, 1, 1)
    assert d["f1"] == pytest.approx(1 / (1 + (1 + 1) / 2))
    assert d["precision"] == 0.5 and d["recall"] == 0.5
    table = d["per_lesion"].sort_values("volume_voxels")
    assert table["volume_voxels"].tolist() == [48, 75]
    assert table["volume_mm3"].tolist() == pytest.approx([48 * 0.75, 75 * 0.75])
    assert table["detected"].tolist() == [True, False]
    assert table["overlap_voxels"].tolist() == [int((p & t)[2:5, 2:6, 2:6].sum()), 0]


def test_corner_touching_voxels_are_one_lesion_in_3d_and_2d():
    t = np.zeros((5, 5, 5), bool)
    t[1, 1, 1] = t[2, 2, 2] = True  # touch at a corner only
    assert ndimage.label(t)[1] == 2  # 6-connectivity: two components
    d = metrics.lesion_detection(np.zeros_like(t), t)
    assert (d["tp"], d["fn"]) == (0, 1)
    p = t.copy()
    p[2, 2, 2] = False
    assert metrics.lesion_detection(p, t)["tp"] == 1

    t2 = np.zeros((5, 5), bool)
    t2[1, 1] = t2[2, 2] = True
    assert metrics.lesion_detection(t2, t2)["per_lesion"].shape[0] == 1
    # Predicted components are 8/26-connected too: this diagonal pair is one false positive.
    assert metrics.lesion_detection(t2, np.zeros_like(t2))["fp"] == 1


def test_one_blob_over_two_lesions_detects_both_and_two_blobs_on_one_lesion_count_once():
    t = np.zeros((20, 20), bool)
    t[2:5, 2:5] = t[2:5, 8:11] = True
    p = np.zeros_like(t)
    p[3, 2:11] = True
    assert (lambda d: (d["tp"], d["fp"], d["fn"]))(metrics.lesion_detection(p, t)) == (2, 0, 0)
    t = np.zeros((20, 20), bool)
    t[2:12, 2:12] = True
    p = np.zeros_like(t)
    p[3, 3] = p[9, 9] = True
    assert (lambda d: (d["tp"], d["fp"], d["fn"]))(metrics.lesion_detection(p, t)) == (1, 0, 0)


def test_lesion_detection_empty_cases():
    z = np.zeros((4, 8, 8), bool)
    d = metrics.lesion_detection(z, z)
    assert (d["tp"], d["fp"], d["fn"], d["f1"]) == (0, 0, 0, 1.0)
    assert math.isnan(d["recall"]) and math.isnan(d["precision"])
    assert d["per_lesion"].empty and "irregularity" in d["per_lesion"]
    p = z.copy()
    p[1, 1, 1] = True
    d = metrics.lesion_detection(p, z)
    assert (d["fp"], d["f1"]) == (1, 0.0)
    assert metrics.lesion_detection(z, p)["per_lesion"]["volume_mm3"].isna().all()


def test_lesion_irregularity_equals_whole_image_descriptor():
    t = _blob(np.random.default_rng(6), (12, 30, 30), threshold=1.5, sigma=1.5)
    labels, n = ndimage.label(t, structure=np.ones((3, 3, 3)))
    inner = np.zeros_like(t)
    inner[1:-1, 1:-1, 1:-1] = True
    on_border = set(np.unique(labels[~inner])) - {0}
    assert n > len(on_border) > 0, "the test needs lesions inside and on the image border"
    table = metrics.lesion_detection(t, t)["per_lesion"].set_index("lesion")
    assert len(table) == n
    for k in range(1, n + 1):
        own = torch.from_numpy(labels == k)[None, None]
        assert table.loc[k, "irregularity"] == pytest.approx(float(boundary_irregularity(own)[0]), rel=1e-5)
        assert table.loc[k, "volume_voxels"] == (labels == k).sum()


def test_given_lesion_labels_split_touching_lesions():
    t = np.zeros((12, 12), bool)
    t[2:6, 2:10] = True
    lesions = np.zeros((12, 12), np.int16)
    lesions[2:6, 2:6] = 1
    lesions[2:6, 6:10] = 4
    p = np.zeros_like(t)
    p[3, 3] = True
    assert metrics.lesion_detection(p, t)["tp"] == 1  # one component without labels
    d = metrics.lesion_detection(p, t, lesions=torch.from_numpy(lesions))
    assert (d["tp"], d["fn"]) == (1, 1)
    assert d["per_lesion"]["lesion"].tolist() == [1, 4]
    assert d["per_lesion"]["detected"].tolist() == [True, False]


def test_recall_by_bucket_matches_hand_count():
    rng = np.random.default_rng(7)
    table = pd.DataFrame({"volume_voxels": rng.integers(1, 500, 60), "detected": rng.random(60) < 0.6})
    edges = [0, 50, 200, 1000, np.inf]
    out = metrics.recall_by_bucket(table, "volume_voxels", edges)
    assert list(out.columns) == ["bucket", "n", "detected", "recall"]
    assert len(out) == 4
    for row, lo, hi in zip(out.itertuples(), edges[:-1], edges[1:]):
        inside = (table["volume_voxels"] > lo) & (table["volume_voxels"] <= hi)
        assert row.n == inside.sum()
        assert row.detected == (inside & table["detected"]).sum()
        if row.n:
            assert row.recall == pytest.approx(row.detected / row.n)
        else:
            assert math.isnan(row.recall)
    with pytest.raises(ValueError, match="outside the bins"):
        metrics.recall_by_bucket(table, "volume_voxels", [0, 10, 100])
    with pytest.raises(KeyError, match="irregularity"):
        metrics.recall_by_bucket(table, "irregularity", 3)


# --------------------------------------------------------------------------- statistics


def test_bootstrap_degenerate_differences():
    a = np.random.default_rng(8).uniform(0.3, 0.9, 25)
    same = metrics.paired_bootstrap_ci(a, a)
    assert same["mean_diff"] == 0 and same["low"] == 0 and same["high"] == 0
    shifted = metrics.paired_bootstrap_ci(a, a + 0.1, n_boot=500)
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    assert shifted["n"] == 25


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(9)
    a = rng.uniform(0.4, 0.8, 30)
    b = a + rng.normal(0.03, 0.05, 30)
    ours = metrics.paired_bootstrap_ci(a, b, n_boot=20000, seed=1)
    ref = stats.bootstrap(
        (b - a,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95, random_state=0
    ).confidence_interval
    standard_error = (b - a).std(ddof=1) / np.sqrt(a.size)
    assert ours["mean_diff"] == pytest.approx((b - a).mean())
    assert abs(ours["low"] - ref.low) < 0.15 * standard_error
    assert abs(ours["high"] - ref.high) < 0.15 * standard_error
    assert ours == metrics.paired_bootstrap_ci(a, b, n_boot=20000, seed=1)  # reproducible
    narrower = metrics.paired_bootstrap_ci(a, b, n_boot=20000, ci=0.5, seed=1)
    assert ours["low"] < narrower["low"] < narrower["high"] < ours["high"]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same|1D"):
        metrics.paired_bootstrap_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        metrics.paired_bootstrap_ci([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="ci"):
        metrics.paired_bootstrap_ci([1.0, 2.0], [1.0, 3.0], ci=95)


def test_wilcoxon_exact_small_sample_and_zero_differences():
    a = np.array([0.5, 0.6, 0.7, 0.55, 0.65])
    # Five positive differences with distinct ranks: exact two-sided p = 2 / 2**5.
    assert metrics.wilcoxon_signed_rank(a, a + np.array([0.01, 0.02, 0.03, 0.04, 0.05])) == pytest.approx(2 / 32)
    rng = np.random.default_rng(10)
    x, y = rng.random(15), rng.random(15)
    assert metrics.wilcoxon_signed_rank(x, y) == pytest.approx(metrics.wilcoxon_signed_rank(y, x))
    assert metrics.wilcoxon_signed_rank(a, a) == 1.0


def _per_case(cases, values, **extra):
    return pd.DataFrame({"case": cases, "dice": values, **extra})


def test_compare_runs_aligns_cases_and_drops_nan_pairs():
    rng = np.random.default_rng(11)
    cases = [f"c{i:02d}" for i in range(12)]
    a = rng.uniform(0.4, 0.8, 12)
    b = a + rng.normal(0.05, 0.03, 12)
    run_a = _per_case(cases, a)
    run_b = _per_case(cases, b).iloc[::-1].reset_index(drop=True)  # other order
    out = metrics.compare_runs(run_a, run_b, n_boot=2000)
    ci = metrics.paired_bootstrap_ci(a, b, n_boot=2000)
    assert out["n"] == 12
    assert out["mean_a"] == pytest.approx(a.mean()) and out["mean_b"] == pytest.approx(b.mean())
    assert (out["mean_diff"], out["low"], out["high"]) == pytest.approx((ci["mean_diff"], ci["low"], ci["high"]))
    assert out["p_value"] == pytest.approx(stats.wilcoxon(b - a).pvalue)

    with_nan = run_a.assign(sensitivity=np.r_[np.nan, np.ones(11)])
    assert metrics.compare_runs(with_nan, run_b.assign(sensitivity=1.0), "sensitivity", n_boot=100)["n"] == 11


def test_compare_runs_refuses_different_or_duplicated_cases():
    run = _per_case(["a", "b", "c"], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="different cases"):
        metrics.compare_runs(run, _per_case(["a", "b", "d"], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="more than once"):
        metrics.compare_runs(run, _per_case(["a", "b", "b"], [0.1, 0.2, 0.3]))
    with pytest.raises(KeyError, match="hd95"):
        metrics.compare_runs(run, run, metric="hd95")


# --------------------------------------------------------------------------- tables


def _cases(seed, n=4, shape=(6, 20, 20)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = _blob(rng, shape, threshold=1.0) if i else np.zeros(shape, bool)  # case 0 empty
        prob = np.clip(ndimage.gaussian_filter(t.astype(float), 1.0) + rng.normal(0, 0.1, shape), 0, 1)
        out.append((f"case{i}", prob > 0.5, t, prob if i != 2 else None, (2.0, 0.8, 0.8)))
    return out


def test_per_case_scores_rows_match_single_case_functions():
    cases = _cases(12)
    per_case, per_lesion = metrics.evaluate_cases(cases, progress=False)
    assert per_case.equals(metrics.per_case_scores(cases, progress=False))
    assert per_case["case"].tolist() == [c[0] for c in cases]
    for (case_id, pred, target, prob, spacing), row in zip(cases, per_case.itertuples()):
        scores = metrics.segmentation_scores(pred, target, spacing)
        for key, value in scores.items():
            assert getattr(row, key) == pytest.approx(value, nan_ok=True)
        if prob is None:
            assert math.isnan(row.paper_dice)
        else:
            assert row.paper_dice == pytest.approx(metrics.paper_protocol_scores(prob, target)["dice"])
        det = metrics.lesion_detection(pred, target, spacing=spacing)
        assert (row.lesion_tp, row.lesion_fp, row.lesion_fn) == (det["tp"], det["fp"], det["fn"])
        assert row.target_voxels == target.sum() and row.pred_voxels == pred.sum()
        assert (per_lesion["case"] == case_id).sum() == len(det["per_lesion"])
    assert list(per_lesion.columns[:2]) == ["case", "lesion"]


def test_results_table_means_and_pooled_lesion_f1():
    by_loss = {
        "dice": metrics.per_case_scores(_cases(13), progress=False),
        "afl": metrics.per_case_scores(_cases(14), progress=False),
    }
    table = metrics.results_table(by_loss)
    assert table.index.tolist() == ["dice", "afl"] and table.index.name == "loss"
    assert list(table.columns[:6]) == [
        "IoU", "DSC", "Sensitivity", "Specificity", "IoU (paper protocol)", "DSC (paper protocol)",
    ]
    for loss, df in by_loss.items():
        assert table.loc[loss, "DSC"] == pytest.approx(np.mean(df["dice"]))
        assert table.loc[loss, "Sensitivity"] == pytest.approx(np.nanmean(df["sensitivity"]))
        assert table.loc[loss, "DSC (paper protocol)"] == pytest.approx(np.nanmean(df["paper_dice"]))
        assert table.loc[loss, "HD95"] == pytest.approx(np.nanmean(df["hd95"]))
        tp, fp, fn = df["lesion_tp"].sum(), df["lesion_fp"].sum(), df["lesion_fn"].sum()
        assert table.loc[loss, "Lesion F1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert table.loc[loss, "Cases"] == 4 and table.loc[loss, "Cases with lesion"] == 3
    with pytest.raises(KeyError, match="per_case_scores"):
        metrics.results_table({"x": pd.DataFrame({"case": ["a"], "dice": [1.0]})})


def test_export_csv_round_trip_is_atomic(tmp_path):
    per_case = metrics.per_case_scores(_cases(15, n=2), progress=False)
    path = metrics.export_csv(per_case, tmp_path / "sub" / "per_case.csv")
    back = pd.read_csv(path)
    assert back["case"].tolist() == per_case["case"].tolist()
    assert np.allclose(back["dice"], per_case["dice"])
    table = metrics.results_table({"dice": per_case})
    back = pd.read_csv(metrics.export_csv(table, tmp_path / "table.csv"), index_col="loss")
    assert back.index.tolist() == ["dice"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["per_case.csv", "table.csv"]


def test_paper_results_cover_the_loss_registry():
    losses = pytest.importorskip("afl_core.losses")
    assert set(metrics.PAPER_RESULTS.index) == set(losses.LOSS_NAMES)
    picai = metrics.PAPER_RESULTS["PICAI"]
    assert list(picai.columns) == ["IoU", "DSC", "Sensitivity", "Specificity"]
    # The paper's claim: A-FL has the best PICAI IoU and DSC of the eight losses.
    assert picai["IoU"].idxmax() == "afl" and picai["DSC"].idxmax() == "afl"
    assert metrics.PAPER_RESULTS.loc["afl", ("BraTS", "DSC")] == metrics.PAPER_BRATS_AFL_REPORTS["comparison table"]["DSC"]
