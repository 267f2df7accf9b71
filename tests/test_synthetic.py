"""afl_core.synthetic: determinism, the recorded lesion facts, and MRI-like contrasts."""

from __future__ import annotations

import csv
import hashlib
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from afl_core import data as D
from afl_core.shape import boundary_irregularity
from afl_core.synthetic import LESION_COLUMNS, default_lesion_radius, lesion_mask_2d, make_dataset

SMALL = dict(shape=(6, 64, 64), lesion_radius=(2.0, 6.0), irregularity=(0.0, 0.6), progress=False)


def _array_hashes(root):
    """sha256 of every array (not of the files) in a dataset, by file name."""
    return {
        p.name: hashlib.sha256(np.ascontiguousarray(np.asarray(nib.load(p).dataobj)).tobytes()).hexdigest()
        for p in sorted(root.rglob("*.nii.gz"))
    }


def _rows(root):
    with open(root / "lesions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("syn") / "a", 8, seed=11, empty_fraction=0.25, **SMALL)


def test_layout_and_metadata(small):
    cases = D.list_cases(small)
    assert cases == [f"synth_{i:04d}" for i in range(8)]
    meta = D.read_dataset_json(small)
    assert meta["source"] == "synthetic" and meta["numTraining"] == 8
    assert list(meta["channel_names"].values()) == ["T2W-like", "ADC-like", "HBV-like"]
    assert meta["generator"]["seed"] == 11 and meta["generator"]["shape"] == [6, 64, 64]
    case = D.load_case(small, cases[0])
    # shape (D, H, W) is stored (H, W, D): the slices are along the third axis.
    assert case.image.shape == (3, 64, 64, 6) and case.spacing == pytest.approx((0.5, 0.5, 3.0))
    assert np.asarray(nib.load(D.channel_path(small, cases[0], 0)).dataobj).dtype == np.int16
    ds = D.SliceDataset(small)
    assert len(ds) == 8 * 6 and ds[0]["image"].shape == (3, 64, 64)


def test_same_arguments_same_data_other_seed_other_data(tmp_path, small):
    again = make_dataset(tmp_path / "b", 8, seed=11, empty_fraction=0.25, **SMALL)
    assert _array_hashes(again) == _array_hashes(small)
    for p in sorted(small.rglob("*.nii.gz")):  # the files too, byte for byte
        assert p.read_bytes() == (again / p.relative_to(small)).read_bytes()
    assert (again / "lesions.csv").read_bytes() == (small / "lesions.csv").read_bytes()
    other = make_dataset(tmp_path / "c", 8, seed=12, empty_fraction=0.25, **SMALL)
    theirs, ours = _array_hashes(other), _array_hashes(small)
    images = [name for name in ours if name.count("_") == 2]  # <case>_<cccc>.nii.gz, not labels
    assert images and all(theirs[name] != ours[name] for name in images)
    labels = [name for name in ours if name not in images]
    assert [theirs[name] for name in labels] != [ours[name] for name in labels]


def test_empty_fraction_is_respected(small):
    labels = {case: D.load_case(small, case).label for case in D.list_cases(small)}
    empty = {case for case, label in labels.items() if not label.any()}
    assert len(empty) == round(0.25 * 8)
    assert not empty & {row["case"] for row in _rows(small)}


def test_lesion_facts_match_the_labels(small):
    rows = _rows(small)
    assert rows and list(rows[0]) == list(LESION_COLUMNS)
    spacing = np.prod(D.load_case(small, rows[0]["case"]).spacing)
    for case in D.list_cases(small):
        label = D.load_case(small, case).label
        # Face connectivity: lesions are kept apart, so each one is one component.
        components, n = ndimage.label(label)
        mine = [r for r in rows if r["case"] == case]
        assert n == len(mine)
        by_volume = sorted(mine, key=lambda r: int(r["volume_voxels"]))
        sizes = np.bincount(components.ravel())[1:]
        for index, row in zip(np.argsort(sizes, kind="stable"), by_volume):
            mask = components == index + 1
            assert int(row["volume_voxels"]) == mask.sum()
            assert float(row["volume_mm3"]) == pytest.approx(mask.sum() * spacing)
            assert int(row["n_slices"]) == mask.any(axis=(0, 1)).sum()
            assert int(row["max_slice_area_voxels"]) == mask.sum(axis=(0, 1)).max()
            centroid = np.argwhere(mask).mean(axis=0)
            assert np.hypot(*(centroid[:2] - [float(row["centre_x"]), float(row["centre_y"])])) < 2.0
            padded = torch.from_numpy(np.pad(mask, 1).astype(np.float32))[None, None]
            descriptor = float(boundary_irregularity(padded)[0])
            assert float(row["boundary_irregularity_3d"]) == pytest.approx(descriptor, abs=1e-5)
            assert 2.0 <= float(row["radius_vox"]) <= 6.0 and 0.0 <= float(row["irregularity_amplitude"]) <= 0.6


def test_irregularity_argument_raises_the_descriptor(tmp_path):
    common = dict(n_cases=6, seed=5, empty_fraction=0.0, shape=(6, 64, 64), lesion_radius=(5.0, 7.0))
    common["progress"] = False
    smooth = make_dataset(tmp_path / "smooth", irregularity=(0.0, 0.05), **common)
    zigzag = make_dataset(tmp_path / "zigzag", irregularity=(0.5, 0.6), **common)
    smooth_mean, zigzag_mean = (
        np.mean([float(r["boundary_irregularity_2d"]) for r in _rows(root)]) for root in (smooth, zigzag)
    )
    assert zigzag_mean > smooth_mean + 0.15
    # The same outline family in 2D, for the notebooks: a disc-like shape at 0, a star at 0.6.
    masks = {a: [lesion_mask_2d((64, 64), 12.0, a, seed=s) for s in range(10)] for a in (0.0, 0.3, 0.6)}
    scores = {
        a: boundary_irregularity(torch.from_numpy(np.stack(m)[:, None].astype(np.float32))).mean().item()
        for a, m in masks.items()
    }
    assert scores[0.0] < scores[0.3] < scores[0.6] and scores[0.0] < 1.15


def test_lesion_mask_2d_radius_and_partial_volume():
    # Irregularity 0: an ellipse of the area of a disc of the given radius.
    areas = [lesion_mask_2d((80, 80), 15.0, 0.0, seed=s).sum() for s in range(5)]
    assert np.mean(areas) == pytest.approx(math.pi * 15.0**2, rel=0.03)
    soft = lesion_mask_2d((48, 48), 9.0, 0.4, seed=3, soft=True)
    hard = lesion_mask_2d((48, 48), 9.0, 0.4, seed=3)
    np.testing.assert_array_equal(soft > 0.5, hard.astype(bool))  # the label is partial volume > 0.5
    border = (soft > 0) & (soft < 1)
    assert border.sum() > 0.5 * ndimage.binary_dilation(hard).sum() - hard.sum()  # soft all around


def test_channels_have_mri_like_lesion_contrast(small):
    # Lesions are darker than the organ around them on T2W and ADC, brighter on HBV.
    signs = []
    for case in D.list_cases(small):
        loaded = D.load_case(small, case)
        if not loaded.label.any():
            continue
        lesion = loaded.label.astype(bool)
        in_plane = np.zeros((3, 3, 3), bool)
        in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # compare within the lesion's slices
        ring = ndimage.binary_dilation(lesion, in_plane, iterations=3) & ~ndimage.binary_dilation(lesion, in_plane)
        signs.append([np.sign(ch[lesion].mean() - ch[ring].mean()) for ch in loaded.image])
    assert np.all(np.array(signs) == [-1, -1, 1])


def test_existing_dataset_is_kept_or_replaced(tmp_path):
    root = make_dataset(tmp_path / "d", 2, seed=0, **SMALL)
    stamp = (root / "dataset.json").stat().st_mtime_ns
    assert make_dataset(root, 2, seed=0, **SMALL) == root
    assert (root / "dataset.json").stat().st_mtime_ns == stamp  # same arguments: nothing rewritten
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_dataset(root, 3, seed=0, **SMALL)
    make_dataset(root, 1, seed=0, overwrite=True, **SMALL)
    assert D.list_cases(root) == ["synth_0000"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(irregularity=(0.0, 1.0)), "irregularity"),
        (dict(lesion_radius=(2.0, 20.0)), "does not fit an image of 64x64"),
        (dict(empty_fraction=1.5), "empty_fraction"),
        (dict(shape=(4, 8, 64)), "H, W >= 16"),
        (dict(spacing=(3.0, 0.5)), r"\(D, H, W\) like shape"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(tmp_path, 2, seed=0, **{**SMALL, **kwargs})


def test_default_lesion_radius_scales_with_the_image(tmp_path):
    assert default_lesion_radius((16, 128, 128)) == (3.0, 12.0)  # the documented default size
    assert default_lesion_radius((8, 64, 32)) == (1.0, 3.0)  # the smaller side, low end at least one voxel
    # The call: a 64 x 64 image with every other argument left at its default.
    root = make_dataset(tmp_path / "small", 6, seed=0, shape=(8, 64, 64), progress=False)
    lo, hi = default_lesion_radius((8, 64, 64))
    radii = [float(r["radius_vox"]) for r in _rows(root)]
    assert radii and all(lo <= r <= hi for r in radii) and (lo, hi) == (1.5, 6.0)
    assert D.read_dataset_json(root)["generator"]["lesion_radius"] == [1.5, 6.0]


def test_spacing_is_d_h_w_like_shape(tmp_path):
    common = dict(n_cases=4, seed=2, shape=(12, 48, 48), lesion_radius=(4.0, 5.0), empty_fraction=0.0, progress=False)
    root = make_dataset(tmp_path / "thick", spacing=(4.0, 0.5, 0.8), **common)
    zooms = nib.load(D.channel_path(root, "synth_0000", 0)).header.get_zooms()
    assert zooms == pytest.approx((0.5, 0.8, 4.0))  # NIfTI stores (H, W, D)
    assert D.read_dataset_json(root)["spacing"] == [4.0, 0.5, 0.8]
    affine = nib.load(D.channel_path(root, "synth_0000", 0)).affine
    centre = affine @ [23.5, 23.5, 5.5, 1.0]  # the middle voxel (H, W, D) is at the origin
    np.testing.assert_allclose(centre, [0.0, 0.0, 0.0, 1.0], atol=1e-5)
    # A lesion spans about radius * (in-plane / slice spacing) slices either side of its centre:
    # with 4 mm slices of 0.5 mm pixels a 4-5 voxel radius covers at most 3 slices, isotropic many more.
    thin = make_dataset(tmp_path / "thin", spacing=(0.5, 0.5, 0.5), **common)
    thick_slices = [int(r["n_slices"]) for r in _rows(root)]
    thin_slices = [int(r["n_slices"]) for r in _rows(thin)]
    assert max(thick_slices) <= 3 and min(thin_slices) >= 6
