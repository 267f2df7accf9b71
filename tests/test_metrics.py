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

from afl_core import _io, metrics, paper, statistics
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


def test_hd95_penalty_is_the_image_diagonal():
    # BraTS-style evaluations give a missed tumour 373.13 mm: the diagonal of 240 x 240 x 155 at 1 mm.
    assert metrics.hd95_penalty((155, 240, 240), 1.0) == pytest.approx(373.13, abs=5e-3)
    assert metrics.hd95_penalty((10, 20, 30), (3.0, 0.5, 0.5)) == pytest.approx(35.0)  # sqrt(30^2 + 10^2 + 15^2)
    assert metrics.hd95_penalty((3, 4)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="2 or 3 positive sizes"):
        metrics.hd95_penalty((1, 2, 3, 4))


def test_hd95_penalised_replaces_only_undefined_distances():
    spacing = (3.0, 0.5, 0.5)
    empty = np.zeros((10, 20, 30), bool)
    lesion = empty.copy()
    lesion[2:5, 3:9, 4:12] = True
    shifted = np.roll(lesion, 2, axis=2)
    for pred, target in [(empty, lesion), (lesion, empty)]:
        s = metrics.segmentation_scores(pred, target, spacing)
        assert math.isnan(s["hd95"]) and s["hd95_penalised"] == pytest.approx(35.0)
    assert metrics.segmentation_scores(empty, empty, spacing)["hd95_penalised"] == 0.0
    both = metrics.segmentation_scores(shifted, lesion, spacing)
    assert both["hd95_penalised"] == both["hd95"] == pytest.approx(1.0)  # 2 voxels of 0.5 mm


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
        (lambda z: metrics.paper_protocol_scores(z, z, background=z[:-1]), "background and target"),
        (lambda z: metrics.paper_protocol_scores(z, z, background=z - 1), r"background must hold .*\[0, 1\]"),
        (lambda z: metrics.lesion_detection(z, z, matching="iou"), "any_overlap"),
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


@pytest.mark.parametrize("shape", [(24, 28), (6, 16, 18)])
def test_paper_protocol_of_a_two_channel_network_matches_the_authors_metric(shape):
    # utils.py:10-18: 1 - DiceLoss(to_onehot_y=True, sigmoid=True, squared_pred=True) on the raw
    # 2-channel logits and the label map; the background channel is the network's own.
    rng = np.random.default_rng(16)
    t = _blob(rng, shape, threshold=0.4)
    logits = torch.from_numpy(rng.normal(0.0, 2.0, (1, 2, *shape)))
    label = torch.from_numpy(t.astype(np.float64))[None, None]
    prob = torch.sigmoid(logits[0])
    s = metrics.paper_protocol_scores(prob[1], t, background=prob[0])
    for key, jaccard in (("dice", False), ("iou", True)):
        loss = monai_losses.DiceLoss(to_onehot_y=True, sigmoid=True, squared_pred=True, jaccard=jaccard)
        assert s[key] == pytest.approx(1 - loss(logits, label).item(), rel=1e-6)  # MONAI's one-hot is float32
    # The two sigmoids do not sum to one: 1 - p is not the network's background channel.
    assert abs(metrics.paper_protocol_scores(prob[1], t)["dice_background"] - s["dice_background"]) > 1e-3
    assert metrics.paper_protocol_scores(prob[1], t)["dice_foreground"] == s["dice_foreground"]


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


def _counts(detection):
    return detection["tp"], detection["fp"], detection["fn"]


def test_picai_matching_one_blob_over_two_lesions_detects_one():
    t = np.zeros((12, 14), bool)
    t[2:5, 2:5] = t[2:5, 8:11] = True  # lesions A (9 voxels) and B (9 voxels)
    p = np.zeros_like(t)
    p[2:5, 2:10] = True  # IoU 9/24 with A, 6/27 with B
    assert _counts(metrics.lesion_detection(p, t)) == (2, 0, 0)
    d = metrics.lesion_detection(p, t, matching="picai")
    assert d["matching"] == "picai" and _counts(d) == (1, 0, 1)
    assert d["per_lesion"]["detected"].tolist() == [True, False]  # matched to A, the larger IoU
    assert d["per_lesion"]["best_iou"].tolist() == pytest.approx([9 / 24, 6 / 27])
    assert d["f1"] == pytest.approx(1 / (1 + 1 / 2))


def test_picai_matching_lesion_split_in_two_counts_once():
    t = np.zeros((14, 14), bool)
    t[2:12, 2:12] = True  # 100 voxels
    halves = np.zeros_like(t)
    halves[2:12, 2:6] = halves[2:12, 8:12] = True  # two components, IoU 0.4 each
    assert _counts(metrics.lesion_detection(halves, t)) == (1, 0, 0)
    # The second half reaches IoU 0.1 but lost the assignment: neither TP nor FP (PI-CAI's default).
    assert _counts(metrics.lesion_detection(halves, t, matching="picai")) == (1, 0, 0)
    crumb = np.zeros_like(t)
    crumb[2:12, 2:7] = True  # IoU 0.5
    crumb[11, 9:11] = True  # IoU 0.02: overlaps, but too little to count as a detection
    assert _counts(metrics.lesion_detection(crumb, t)) == (1, 0, 0)
    assert _counts(metrics.lesion_detection(crumb, t, matching="picai")) == (1, 1, 0)


@pytest.mark.parametrize("inside,outside,detected", [(9, 0, False), (10, 0, True), (11, 0, True), (10, 1, False)])
def test_picai_matching_iou_threshold_is_inclusive_at_one_tenth(inside, outside, detected):
    t = np.zeros((20, 20), bool)
    t[0:10, 0:10] = True  # 100 voxels
    p = np.zeros_like(t)
    p[0, :inside] = True if inside <= 10 else False
    if inside > 10:
        p[0, :10] = p[1, : inside - 10] = True
    p[0, 10 : 10 + outside] = True  # grows the same component beyond the lesion
    iou = inside / (100 + outside)
    d = metrics.lesion_detection(p, t, matching="picai")
    assert d["per_lesion"]["best_iou"].item() == pytest.approx(iou)
    assert _counts(d) == ((1, 0, 0) if detected else (0, 1, 1))
    assert _counts(metrics.lesion_detection(p, t)) == (1, 0, 0)  # any overlap detects every time


def test_picai_matching_maximises_the_number_of_matches_not_greedy_iou():
    t = np.zeros((12, 18), bool)
    t[0:10, 0:10] = True  # lesion A, 100 voxels
    t[0:4, 12:16] = True  # lesion B, 16 voxels
    p = np.zeros_like(t)
    p[0:6, 0:10] = True  # P1: 60 voxels of A ...
    p[0, 10:12] = True  # ... a bridge ...
    p[0:4, 12:16] = True  # ... and all of B: IoU 60/118 with A, 16/78 with B
    p[8:10, 0:10] = True  # P2: 20 voxels of A, IoU 0.2
    assert ndimage.label(p, np.ones((3, 3)))[1] == 2 and ndimage.label(t, np.ones((3, 3)))[1] == 2
    # Greedy by IoU would give A to P1 and leave B unmatched; the assignment detects both.
    d = metrics.lesion_detection(p, t, matching="picai")
    assert _counts(d) == (2, 0, 0)
    assert d["per_lesion"]["best_iou"].tolist() == pytest.approx([60 / 118, 16 / 78])


def test_picai_matching_empty_cases_and_given_lesion_labels():
    z = np.zeros((4, 8, 8), bool)
    assert _counts(metrics.lesion_detection(z, z, matching="picai")) == (0, 0, 0)
    p = z.copy()
    p[1, 1, 1] = p[3, 6, 6] = True
    assert _counts(metrics.lesion_detection(p, z, matching="picai")) == (0, 2, 0)
    assert _counts(metrics.lesion_detection(z, p, matching="picai")) == (0, 0, 2)
    t = np.zeros((12, 12), bool)
    t[2:6, 2:10] = True
    lesions = np.zeros((12, 12), np.int16)
    lesions[2:6, 2:6], lesions[2:6, 6:10] = 1, 4
    d = metrics.lesion_detection(t, t, lesions=lesions, matching="picai")  # one blob, two labelled lesions
    assert _counts(d) == (1, 0, 1)
    assert d["per_lesion"]["best_iou"].tolist() == pytest.approx([0.5, 0.5])


def test_picai_matching_agrees_with_picai_eval():
    picai = pytest.importorskip("picai_eval.eval")
    rng = np.random.default_rng(17)
    for _ in range(6):
        t = _blob(rng, (8, 24, 24), threshold=1.2, sigma=1.5)
        p = _blob(rng, (8, 24, 24), threshold=1.2, sigma=1.5) | (t & (rng.random(t.shape) < 0.5))
        y_list, *_ = picai.evaluate_case(p.astype(np.float32), t.astype(np.int32))
        tp = sum(1 for is_lesion, _, overlap in y_list if is_lesion and overlap > 0)
        fn = sum(1 for is_lesion, _, overlap in y_list if is_lesion and overlap == 0)
        fp = sum(1 for is_lesion, _, _ in y_list if not is_lesion)
        assert _counts(metrics.lesion_detection(p, t, matching="picai")) == (tp, fp, fn)


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
    same = statistics.paired_bootstrap_ci(a, a)
    assert same["mean_diff"] == 0 and same["low"] == 0 and same["high"] == 0
    shifted = statistics.paired_bootstrap_ci(a, a + 0.1, n_boot=500)
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    assert shifted["n"] == 25


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_equals_scipy_on_the_differences(method):
    # Resampling pairs of cases is resampling their differences: scipy's one-sample bootstrap of
    # b - a with the same generator draws the same indices.
    rng = np.random.default_rng(18)
    a = rng.uniform(0.3, 0.9, 15)
    b = a + rng.exponential(0.05, 15) - 0.03
    ours = statistics.paired_bootstrap_ci(a, b, n_boot=5000, ci=0.9, seed=3, method=method)
    ref = stats.bootstrap(
        (b - a,),
        np.mean,
        n_resamples=5000,
        confidence_level=0.9,
        method=method,
        random_state=np.random.default_rng(3),
    ).confidence_interval
    assert (ours["low"], ours["high"]) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert ours["method"] == method and ours["n"] == 15
    paired = stats.bootstrap(
        (a, b),
        lambda x, y: np.mean(y - x),
        paired=True,
        n_resamples=5000,
        confidence_level=0.9,
        method=method,
        random_state=np.random.default_rng(3),
    ).confidence_interval
    assert (ours["low"], ours["high"]) == pytest.approx((paired.low, paired.high), rel=1e-12)


def test_bootstrap_intervals_cover_the_true_mean_at_their_level():
    # Normal per-case differences, 20 cases: a 95 % interval should hold the true mean in roughly
    # 95 % of samples (a little less: the bootstrap uses the plug-in spread), a 50 % interval in half.
    rng = np.random.default_rng(19)
    samples = rng.normal(0.05, 0.1, (400, 20))
    for ci, lo, hi in ((0.95, 0.87, 0.98), (0.5, 0.38, 0.60)):
        for method in ("BCa", "percentile"):
            hits = [
                (c := statistics.paired_bootstrap_ci(np.zeros(20), d, n_boot=1000, ci=ci, seed=i, method=method))["low"]
                <= 0.05
                <= c["high"]
                for i, d in enumerate(samples)
            ]
            assert lo < np.mean(hits) < hi, (ci, method, np.mean(hits))


def test_bootstrap_warns_below_ten_cases_and_not_at_ten():
    assert issubclass(statistics.FewCasesWarning, UserWarning) and statistics.MIN_PAIRED_CASES == 10
    rng = np.random.default_rng(20)
    a, b = rng.random(10), rng.random(10)
    with pytest.warns(statistics.FewCasesWarning, match="only 9 paired case.*at most 24310 distinct"):
        statistics.paired_bootstrap_ci(a[:9], b[:9], n_boot=200)
    with pytest.warns(statistics.FewCasesWarning, match="only 3 .* at most 10 distinct"):
        statistics.compare_runs(_per_case(list("xyz"), a[:3]), _per_case(list("xyz"), b[:3]), n_boot=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", statistics.FewCasesWarning)
        statistics.paired_bootstrap_ci(a, b, n_boot=200)


def test_bootstrap_percentile_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(9)
    a = rng.uniform(0.4, 0.8, 30)
    b = a + rng.normal(0.03, 0.05, 30)
    ours = statistics.paired_bootstrap_ci(a, b, n_boot=20000, seed=1, method="percentile")
    ref = stats.bootstrap(
        (b - a,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95, random_state=0
    ).confidence_interval
    standard_error = (b - a).std(ddof=1) / np.sqrt(a.size)
    assert ours["mean_diff"] == pytest.approx((b - a).mean())
    assert abs(ours["low"] - ref.low) < 0.15 * standard_error
    assert abs(ours["high"] - ref.high) < 0.15 * standard_error
    assert ours == statistics.paired_bootstrap_ci(a, b, n_boot=20000, seed=1, method="percentile")  # reproducible
    narrower = statistics.paired_bootstrap_ci(a, b, n_boot=20000, ci=0.5, seed=1, method="percentile")
    assert ours["low"] < narrower["low"] < narrower["high"] < ours["high"]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same|1D"):
        statistics.paired_bootstrap_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        statistics.paired_bootstrap_ci([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="ci"):
        statistics.paired_bootstrap_ci([1.0, 2.0], [1.0, 3.0], ci=95)
    with pytest.raises(ValueError, match="BCa"):
        statistics.paired_bootstrap_ci([1.0, 2.0], [1.0, 3.0], method="student")


def test_wilcoxon_exact_small_sample_and_zero_differences():
    a = np.array([0.5, 0.6, 0.7, 0.55, 0.65])
    # Five positive differences with distinct ranks: exact two-sided p = 2 / 2**5.
    assert statistics.wilcoxon_signed_rank(a, a + np.array([0.01, 0.02, 0.03, 0.04, 0.05])) == pytest.approx(2 / 32)
    rng = np.random.default_rng(10)
    x, y = rng.random(15), rng.random(15)
    assert statistics.wilcoxon_signed_rank(x, y) == pytest.approx(statistics.wilcoxon_signed_rank(y, x))
    assert statistics.wilcoxon_signed_rank(a, a) == 1.0


def _per_case(cases, values, **extra):
    return pd.DataFrame({"case": cases, "dice": values, **extra})


def test_compare_runs_aligns_cases_and_drops_nan_pairs():
    rng = np.random.default_rng(11)
    cases = [f"c{i:02d}" for i in range(12)]
    a = rng.uniform(0.4, 0.8, 12)
    b = a + rng.normal(0.05, 0.03, 12)
    run_a = _per_case(cases, a)
    run_b = _per_case(cases, b).iloc[::-1].reset_index(drop=True)  # other order
    out = statistics.compare_runs(run_a, run_b, n_boot=2000)
    ci = statistics.paired_bootstrap_ci(a, b, n_boot=2000)
    assert out["n"] == 12
    assert out["mean_a"] == pytest.approx(a.mean()) and out["mean_b"] == pytest.approx(b.mean())
    assert (out["mean_diff"], out["low"], out["high"]) == pytest.approx((ci["mean_diff"], ci["low"], ci["high"]))
    assert out["p_value"] == pytest.approx(stats.wilcoxon(b - a).pvalue)

    with_nan = run_a.assign(sensitivity=np.r_[np.nan, np.ones(11)])
    assert statistics.compare_runs(with_nan, run_b.assign(sensitivity=1.0), "sensitivity", n_boot=100)["n"] == 11


def test_compare_runs_refuses_different_or_duplicated_cases():
    run = _per_case(["a", "b", "c"], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="different cases"):
        statistics.compare_runs(run, _per_case(["a", "b", "d"], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="more than once"):
        statistics.compare_runs(run, _per_case(["a", "b", "b"], [0.1, 0.2, 0.3]))
    with pytest.raises(KeyError, match="hd95"):
        statistics.compare_runs(run, run, metric="hd95")


def _long_table(seed=21, losses=("afl", "focal", "dice"), seeds=(0, 1, 2), n_cases=12):
    """One row per arm x seed x case, as results/comparison/per_case.csv."""
    rng = np.random.default_rng(seed)
    case_effect = rng.uniform(0.3, 0.8, n_cases)
    rows = [
        {
            "arm": loss,
            "seed": s,
            "case": f"c{c:02d}",
            "dice": case_effect[c] + 0.04 * k + rng.normal(0, 0.05) + 0.03 * s,
        }
        for k, loss in enumerate(losses)
        for s in seeds
        for c in range(n_cases)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # any row order


def test_seed_averaged_means_each_case_over_seeds():
    table = _long_table()
    out = statistics.seed_averaged(table, "dice")
    assert list(out.columns) == ["arm", "case", "dice", "seeds"] and len(out) == 3 * 12
    for row in out.itertuples():
        values = table.loc[(table["arm"] == row.arm) & (table["case"] == row.case), "dice"]
        assert row.dice == pytest.approx(values.to_numpy().mean()) and row.seeds == 3
    with_nan = table.copy()
    with_nan.loc[(with_nan["arm"] == "afl") & (with_nan["case"] == "c03") & (with_nan["seed"] == 1), "dice"] = np.nan
    averaged = statistics.seed_averaged(with_nan, "dice").set_index(["arm", "case"])["dice"]
    assert math.isnan(averaged["afl", "c03"]) and averaged.notna().sum() == 35
    with pytest.raises(ValueError, match="repeats"):
        statistics.seed_averaged(pd.concat([table, table.iloc[:1]]), "dice")
    with pytest.raises(KeyError, match="seed"):
        statistics.seed_averaged(table.drop(columns="seed"), "dice")


def test_seed_summary_shows_the_spread_over_seeds():
    table = _long_table()
    out = statistics.seed_summary(table, "dice")
    assert list(out.columns) == ["seed 0", "seed 1", "seed 2", "mean", "sd", "min", "max", "seeds", "cases"]
    for loss in ("afl", "focal", "dice"):
        rows = table[table["arm"] == loss]
        per_seed = np.array([rows.loc[rows["seed"] == s, "dice"].mean() for s in range(3)])
        assert out.loc[loss, ["seed 0", "seed 1", "seed 2"]].tolist() == pytest.approx(per_seed)
        assert out.loc[loss, "sd"] == pytest.approx(per_seed.std(ddof=1))
        assert (out.loc[loss, "min"], out.loc[loss, "max"]) == pytest.approx((per_seed.min(), per_seed.max()))
        assert (out.loc[loss, "seeds"], out.loc[loss, "cases"]) == (3, 12)


def test_adjust_p_values_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max.
    assert statistics.adjust_p_values(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert statistics.adjust_p_values(p, "bonferroni").tolist() == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert statistics.adjust_p_values([0.5, 0.3]).tolist() == pytest.approx([0.6, 0.6])  # capped, monotone
    for bad, message in (([], "non-empty"), ([0.1, np.nan], r"\[0, 1\]"), ([1.2], r"\[0, 1\]")):
        with pytest.raises(ValueError, match=message):
            statistics.adjust_p_values(bad)
    with pytest.raises(ValueError, match="holm"):
        statistics.adjust_p_values(p, "fdr")


def test_adjust_p_values_match_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(22).uniform(0, 0.2, 9)
    for method in ("holm", "bonferroni"):
        assert statistics.adjust_p_values(p, method) == pytest.approx(multitest.multipletests(p, method=method)[1])


def test_compare_to_reference_averages_seeds_then_corrects():
    table = _long_table()
    out = statistics.compare_to_reference(table, "afl", n_boot=2000)
    assert out.index.tolist() == [loss for loss in table["arm"].unique() if loss != "afl"]  # the table's order
    averaged = statistics.seed_averaged(table, "dice")
    for loss in out.index:
        c = statistics.compare_runs(averaged[averaged["arm"] == "afl"], averaged[averaged["arm"] == loss], n_boot=2000)
        for key in ("n", "mean_diff", "low", "high", "p_value"):
            assert out.loc[loss, key] == pytest.approx(c[key])
        assert out.loc[loss, "mean"] - out.loc[loss, "mean_reference"] == pytest.approx(c["mean_diff"])
    assert out["p_adjusted"].tolist() == pytest.approx(statistics.adjust_p_values(out["p_value"]).tolist())
    assert (out["seeds"] == 3).all() and (out["n"] == 12).all()
    assert out.loc["dice", "mean_diff"] > out.loc["focal", "mean_diff"] > 0  # built in: +0.04 per step
    with pytest.raises(ValueError, match="not an arm"):
        statistics.compare_to_reference(table, "ce")


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
        picai = metrics.lesion_detection(pred, target, matching="picai")
        assert (row.lesion_picai_tp, row.lesion_picai_fp, row.lesion_picai_fn) == _counts(picai)
        assert row.lesion_picai_f1 == pytest.approx(picai["f1"])
        lesions = per_lesion[per_lesion["case"] == case_id]
        assert lesions["detected_picai"].tolist() == picai["per_lesion"]["detected"].tolist()
        assert row.target_voxels == target.sum() and row.pred_voxels == pred.sum()
        assert (per_lesion["case"] == case_id).sum() == len(det["per_lesion"])
    assert list(per_lesion.columns[:2]) == ["case", "lesion"]


def test_evaluate_cases_scores_a_two_channel_network_from_its_background():
    ((case_id, pred, target, prob, spacing),) = _cases(23, n=2)[1:]
    background = np.clip(1 - prob + 0.2, 0, 1)
    row = metrics.per_case_scores([(case_id, pred, target, prob, spacing, background)], progress=False).iloc[0]
    own = metrics.paper_protocol_scores(prob, target, background=background)
    assert row["paper_dice"] == pytest.approx(own["dice"])
    assert row["paper_dice"] != pytest.approx(metrics.paper_protocol_scores(prob, target)["dice"])
    with pytest.raises(ValueError, match=r"spacing\[, background\]"):
        metrics.per_case_scores([(case_id, pred, target)], progress=False)


def test_results_table_means_and_pooled_lesion_f1():
    by_loss = {
        "dice": metrics.per_case_scores(_cases(13), progress=False),
        "afl": metrics.per_case_scores(_cases(14), progress=False),
    }
    table = paper.results_table(by_loss)
    assert table.index.tolist() == ["dice", "afl"] and table.index.name == "arm"
    assert list(table.columns[:6]) == [
        "IoU",
        "DSC",
        "Sensitivity",
        "Specificity",
        "IoU (paper protocol)",
        "DSC (paper protocol)",
    ]
    for loss, df in by_loss.items():
        assert table.loc[loss, "DSC"] == pytest.approx(np.mean(df["dice"]))
        assert table.loc[loss, "Sensitivity"] == pytest.approx(np.nanmean(df["sensitivity"]))
        assert table.loc[loss, "DSC (paper protocol)"] == pytest.approx(np.nanmean(df["paper_dice"]))
        assert table.loc[loss, "HD95"] == pytest.approx(np.nanmean(df["hd95"]))
        assert table.loc[loss, "HD95 (penalised)"] == pytest.approx(np.mean(df["hd95_penalised"]))
        assert table.loc[loss, "HD95 left out"] == df["hd95"].isna().sum()
        for label, prefix in (("Lesion F1", "lesion"), ("Lesion F1 (PI-CAI)", "lesion_picai")):
            tp, fp, fn = (df[f"{prefix}_{k}"].sum() for k in ("tp", "fp", "fn"))
            assert table.loc[loss, label] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert table.loc[loss, "Cases"] == 4 and table.loc[loss, "Cases with lesion"] == 3
        assert table.loc[loss, "Seeds"] == 1
    with pytest.raises(KeyError, match="per_case_scores"):
        paper.results_table({"x": pd.DataFrame({"case": ["a"], "dice": [1.0]})})


def test_results_table_reads_a_long_multi_seed_table():
    missed = np.zeros((6, 20, 20), bool)
    missed_case = [("case9", missed, _cases(24, n=2)[1][2], None, (2.0, 0.8, 0.8))]  # a lesion, nothing predicted
    runs = {
        (loss, seed): metrics.per_case_scores(_cases(seed) + missed_case, progress=False)
        for loss, seed in [("afl", 13), ("afl", 14), ("dice", 15), ("dice", 16)]
    }
    long = pd.concat([df.assign(arm=loss, seed=seed) for (loss, seed), df in runs.items()], ignore_index=True)
    long = long.rename(columns={"hd95": "hd95_mm", "hd95_penalised": "hd95_penalised_mm"})  # the benchmark's names
    table = paper.results_table(long)
    assert table.index.tolist() == ["afl", "dice"]
    afl = pd.concat([runs["afl", 13], runs["afl", 14]])
    assert table.loc["afl", "DSC"] == pytest.approx(afl["dice"].mean())
    assert table.loc["afl", "HD95"] == pytest.approx(np.nanmean(afl["hd95"]))
    assert table.loc["afl", "HD95 left out"] == afl["hd95"].isna().sum() >= 2
    assert table.loc["afl", "HD95 (penalised)"] > table.loc["afl", "HD95"]
    assert table.loc["afl", ["Cases", "Cases with lesion", "Seeds"]].tolist() == [5, 4, 2]


def test_export_csv_round_trip_is_atomic(tmp_path):
    per_case = metrics.per_case_scores(_cases(15, n=2), progress=False)
    path = _io.export_csv(per_case, tmp_path / "sub" / "per_case.csv")
    back = pd.read_csv(path)
    assert back["case"].tolist() == per_case["case"].tolist()
    assert np.allclose(back["dice"], per_case["dice"])
    table = paper.results_table({"dice": per_case})
    back = pd.read_csv(_io.export_csv(table, tmp_path / "table.csv"), index_col="arm")
    assert back.index.tolist() == ["dice"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["per_case.csv", "table.csv"]


def test_paper_results_cover_the_loss_registry():
    losses = pytest.importorskip("afl_core.losses")
    assert set(paper.PAPER_RESULTS.index) == set(losses.LOSS_NAMES)
    picai = paper.PAPER_RESULTS["PICAI"]
    assert list(picai.columns) == ["IoU", "DSC", "Sensitivity", "Specificity"]
    # The paper's claim: A-FL has the best PICAI IoU and DSC of the eight losses.
    assert picai["IoU"].idxmax() == "afl" and picai["DSC"].idxmax() == "afl"
    brats_afl_dsc = paper.PAPER_RESULTS.loc["afl", ("BraTS", "DSC")]
    assert brats_afl_dsc == paper.PAPER_BRATS_AFL_REPORTS["comparison table"]["DSC"]


# --------------------------------------------------------------------------- seed sign test
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
    out = statistics.seed_sign_test(table)
    for name, values in rows.items():
        n, positive = len(values), sum(v > 0 for v in values)
        assert out.loc[name, "seeds"] == n and out.loc[name, "positive"] == positive
        assert out.loc[name, "sign test p"] == pytest.approx(stats.binomtest(positive, n, 0.5).pvalue, rel=1e-12)
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
    out = statistics.seed_sign_test(table)
    assert out.loc["flips", "verdict"].startswith("not resolved: the sign changes")
    assert out.loc["one seed carries it", "verdict"] == "not resolved: one seed carries most of it"
    assert out.loc["one seed carries it", "largest seed share"] == pytest.approx(0.129 / 0.185)
    assert out.loc["steady", "verdict"] == "same side in every seed"
    assert out.loc["one nonzero seed", "verdict"] == "not resolved: it rests on one seed"
    assert out.loc["equal", "largest seed share"] == pytest.approx(1 / 3)
    with pytest.raises(KeyError, match="seed_differences"):
        statistics.seed_sign_test(table.rename(columns=str.upper))
