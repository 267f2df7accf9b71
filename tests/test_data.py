"""afl_core.data: the on-disk layout, its errors, and the 2D slice dataset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from afl_core import data as D

REAL_MRI = Path(__file__).parent / "data" / "real-mri"
AFFINE = np.array([[0.5, 0, 0, -10.0], [0, 0.5, 0, 5.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]])


def _volume(rng, shape=(12, 10, 6), lesion_slices=(2, 3)):
    """Two channels (int16 with outliers, float32) and a label with a blob on some slices."""
    t2 = rng.integers(100, 900, size=shape).astype(np.int16)
    t2[0, 0, 0] = 30000  # an outlier for the percentile clipping to remove
    adc = rng.normal(5.0, 2.0, size=shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for k in lesion_slices:
        label[4:8, 3:6, k] = 1
    return [t2, adc], label


@pytest.fixture
def dataset(tmp_path):
    """Six cases: four with a lesion, two without; different in-plane sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    truth = {}
    for i in range(6):
        shape = (12, 10, 6) if i % 2 == 0 else (9, 14, 5)
        channels, label = _volume(rng, shape, lesion_slices=(2, 3) if i < 4 else ())
        D.write_case(root, f"case{i}", channels, label, AFFINE)
        truth[f"case{i}"] = (channels, label)
    D.write_dataset_json(root, channel_names=["T2W", "ADC"], source="test", spacing=[0.5, 0.5, 3.0])
    return root, truth


# --------------------------------------------------------------------------- layout


def test_write_then_read_round_trip(dataset):
    root, truth = dataset
    assert D.list_cases(root) == [f"case{i}" for i in range(6)]
    meta = D.read_dataset_json(root)
    assert meta["channel_names"] == {"0": "T2W", "1": "ADC"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 6 and meta["file_ending"] == ".nii.gz" and meta["source"] == "test"
    for case, (channels, label) in truth.items():
        # The files are plain NIfTI, named as nnU-Net expects.
        assert nib.load(root / "imagesTr" / f"{case}_0001.nii.gz").shape == label.shape
        loaded = D.load_case(root, case)
        assert loaded.image.dtype == np.float32 and loaded.image.shape == (2, *label.shape)
        np.testing.assert_array_equal(loaded.image[0], channels[0].astype(np.float32))
        np.testing.assert_array_equal(loaded.image[1], channels[1])
        assert loaded.label.dtype == np.uint8
        np.testing.assert_array_equal(loaded.label, label)
        np.testing.assert_allclose(loaded.affine, AFFINE)
        assert loaded.spacing == pytest.approx((0.5, 0.5, 3.0))


def test_written_files_are_reproducible_bytes(tmp_path):
    channels, label = _volume(np.random.default_rng(1))
    for name in ("a", "b"):
        D.write_case(tmp_path / name, "c", channels, label, AFFINE)
    for rel in ("imagesTr/c_0000.nii.gz", "imagesTr/c_0001.nii.gz", "labelsTr/c.nii.gz"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert not [p for p in (tmp_path / "a").rglob(".tmp-*")]


def test_dataset_json_with_only_nnunet_keys(tmp_path):
    channels, label = _volume(np.random.default_rng(2))
    root = tmp_path / "ds"
    D.write_case(root, "only", channels[:1], label, np.diag([0.7, 0.8, 2.5, 1.0]))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T2"},
                "labels": {"background": 0, "tumour": 1},
                "numTraining": 1,
                "file_ending": ".nii.gz",
            }
        )
    )
    ds = D.SliceDataset(root)
    assert ds.in_channels == 1 and len(ds) == label.shape[2]
    assert ds.spacing("only") == pytest.approx((0.7, 0.8, 2.5))  # from the NIfTI header


def test_write_dataset_json_refuses_overriding_nnunet_keys(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        D.write_dataset_json(tmp_path, channel_names=["a"], num_training=0, labels={"x": 1})


# --------------------------------------------------------------------------- errors


def test_missing_channel_names_expected_file(dataset):
    root, _ = dataset
    (root / "imagesTr" / "case1_0001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"channel 1 \('ADC'\) of case 'case1'.*case1_0001\.nii\.gz"):
        D.load_case(root, "case1")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_nifti_names_the_file(dataset, damage):
    root, _ = dataset
    path = root / "imagesTr" / "case2_0000.nii.gz"
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2] if damage == "truncate" else b"not a nifti file at all" * 20)
    with pytest.raises(ValueError, match=r"case2_0000\.nii\.gz.*corrupt"):
        D.load_case(root, "case2")


def test_an_image_without_a_label_is_named_not_left_out(dataset):
    root, _ = dataset
    cases = D.list_cases(root)
    (root / "labelsTr" / f"{cases[-1]}.nii.gz").unlink()
    with pytest.raises(ValueError, match=rf"1 case\(s\) without a label in labelsTr \({cases[-1]}\).*imagesTs"):
        D.list_cases(root)


def test_non_binary_label_lists_values(dataset):
    root, truth = dataset
    label = truth["case0"][1].copy()
    label[0, 0, 0] = 2
    nib.save(nib.Nifti1Image(label, AFFINE), root / "labelsTr" / "case0.nii.gz")
    with pytest.raises(ValueError, match=r"\{0, 1, 2\}.*data_download"):
        D.load_case(root, "case0")
    with pytest.raises(ValueError, match=r"\{0, 1, 2\}"):
        D.write_case(root, "bad", truth["case0"][0], label, AFFINE)


def test_grid_mismatch(dataset):
    root, truth = dataset
    channels, label = truth["case0"]
    nib.save(nib.Nifti1Image(channels[1][:-1], AFFINE), root / "imagesTr" / "case0_0001.nii.gz")
    with pytest.raises(ValueError, match=r"case0_0001\.nii\.gz has shape \(11, 10, 6\).*\(12, 10, 6\)"):
        D.load_case(root, "case0")
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(channels[1], shifted), root / "imagesTr" / "case0_0001.nii.gz")
    with pytest.raises(ValueError, match="different affines"):
        D.load_case(root, "case0")
    with pytest.raises(ValueError, match="resample"):
        D.write_case(root, "bad", [channels[0][:, :, :-1]], label, AFFINE)


def test_wrong_layout(tmp_path, dataset):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.list_cases(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="imagesTr, labelsTr, dataset.json missing"):
        D.SliceDataset(tmp_path / "empty")
    root, _ = dataset
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "a"}}))
    with pytest.raises(ValueError, match="lacks the nnU-Net keys"):
        D.read_dataset_json(root)
    (root / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        D.SliceDataset(root)


# --------------------------------------------------------------------------- slices


def _reference_normalised(path: Path) -> np.ndarray:
    """Clip at the 0.5 / 99.5 percentiles, then z-score: the PI-CAI baseline, in NumPy."""
    x = np.asarray(nib.load(path).dataobj).astype(np.float64)
    lo, hi = np.percentile(x, [0.5, 99.5])
    x = np.clip(x, lo, hi)
    return (x - x.mean()) / x.std()


def test_items_shapes_values_and_normalisation(dataset):
    root, truth = dataset
    ds = D.SliceDataset(root)
    assert len(ds) == sum(label.shape[2] for _, label in truth.values())
    refs = {
        case: [_reference_normalised(root / "imagesTr" / f"{case}_{c:04d}.nii.gz") for c in range(2)] for case in truth
    }
    for i in range(len(ds)):
        item = ds[i]
        case, k = item["case"], item["index"]
        label = truth[case][1]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (2, *label.shape[:2])
        assert item["label"].dtype == torch.float32 and item["label"].shape == (1, *label.shape[:2])
        np.testing.assert_array_equal(item["label"][0].numpy(), label[:, :, k])
        for c in range(2):
            np.testing.assert_allclose(item["image"][c].numpy(), refs[case][c][:, :, k], atol=1e-5)
    assert np.abs(refs["case0"][0]).max() < 10  # the 30000 outlier was clipped away


def test_fixed_size_crops_and_pads_at_the_centre(dataset):
    root, truth = dataset
    ds = D.SliceDataset(root, size=(10, 12))
    label = truth["case1"][1]  # 9 x 14: pad the rows by 1 (at the end), crop the columns by 2 (1 each side)
    item = ds[ds.case_items("case1")[2]]
    assert item["image"].shape == (2, 10, 12) and item["label"].shape == (1, 10, 12)
    np.testing.assert_array_equal(item["label"][0, :9].numpy(), label[:, 1:13, 2])
    assert not item["label"][0, 9].any()
    ref = _reference_normalised(root / "imagesTr" / "case1_0000.nii.gz")
    np.testing.assert_allclose(item["image"][0, :9].numpy(), ref[:, 1:13, 2], atol=1e-5)
    np.testing.assert_allclose(item["image"][0, 9].numpy(), ref.min(), atol=1e-5)  # padding is background


@pytest.mark.parametrize("size", [None, (16, 16), (8, 8), (10, 12)])
def test_assemble_volume_inverts_crop_and_pad(dataset, size):
    root, truth = dataset
    ds = D.SliceDataset(root, size=size)
    for case, (_, label) in truth.items():
        slices = {ds[i]["index"]: ds[i]["label"] for i in ds.case_items(case)}
        volume = ds.assemble(case, slices)
        assert volume.shape == label.shape == ds.volume_shape(case)
        # What the crop kept comes back exactly; what it cut away is background.
        h, w = size or label.shape[:2]
        r0, c0 = max((label.shape[0] - h) // 2, 0), max((label.shape[1] - w) // 2, 0)
        seen = np.zeros(label.shape, bool)
        seen[r0 : r0 + h, c0 : c0 + w] = True
        np.testing.assert_array_equal(volume[seen], label[seen])
        assert not volume[~seen].any()
    # A stacked array and a partial mapping work too.
    stacked = np.stack([ds[i]["label"].numpy() for i in ds.case_items("case0")])
    by_index = ds.assemble("case0", {k: stacked[k] for k in range(6)})
    np.testing.assert_array_equal(D.assemble_volume(stacked, (12, 10, 6)), by_index)
    partial = ds.assemble("case0", {3: stacked[3]})
    assert partial[..., 3].any() and not partial[..., [0, 1, 2, 4, 5]].any()


def test_split_cases(dataset):
    root, truth = dataset
    train, val = D.split_cases(root, val_fraction=0.34, seed=3)
    assert not set(train) & set(val) and sorted(train + val) == sorted(truth)
    assert len(val) == 2
    lesion = {case for case, (_, label) in truth.items() if label.any()}
    assert set(train) & lesion and set(val) & lesion  # both sides see lesions
    assert D.split_cases(root, val_fraction=0.34, seed=3) == (train, val)
    many = [f"c{i}" for i in range(40)]
    splits = {tuple(D.split_cases(many, 0.25, seed=s)[1]) for s in range(5)}
    assert len(splits) > 1 and all(len(v) == 10 for v in splits)
    with pytest.raises(ValueError):
        D.split_cases(many, 1.0)


def test_augmentation_is_seeded_and_keeps_labels_binary(tmp_path):
    # Channel 0 is the label itself, so the image and label must move together.
    rng = np.random.default_rng(4)
    label = np.zeros((24, 20, 3), np.uint8)
    label[6:15, 5:12, :] = 1
    image = (label * 1000.0 + rng.normal(0, 10, label.shape)).astype(np.float32)
    D.write_case(tmp_path, "a", [image], label, AFFINE)
    D.write_dataset_json(tmp_path, channel_names=["x"])
    aug = D.Augmentation(flip_prob=0.5, affine_prob=1.0, rotate_deg=30, scale=(0.8, 1.2), translate=0.1)
    ds = D.SliceDataset(tmp_path, augment=aug, seed=7)
    first = [ds[i] for i in range(len(ds))]
    again = D.SliceDataset(tmp_path, augment=aug, seed=7)
    for a, b in zip(first, [again[i] for i in range(len(ds))]):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    ds.set_epoch(1)
    assert any(not torch.equal(a["image"], ds[i]["image"]) for i, a in enumerate(first))
    plain = D.SliceDataset(tmp_path)[0]["image"]
    assert not torch.equal(first[0]["image"], plain)
    for item in first + [ds[i] for i in range(len(ds))]:
        assert set(item["label"].unique().tolist()) <= {0.0, 1.0}
        img = item["image"][0]
        bright = img > (img.max() + img.min()) / 2
        agreement = (bright == item["label"][0].bool()).float().mean()
        assert agreement > 0.97
    # Workers give the same items as the main process (seeded by index, not by worker).
    loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=2)
    for i, batch in enumerate(loader):
        assert torch.equal(batch["image"][0], ds[i]["image"])


def test_oversampling_sampler(dataset):
    root, _ = dataset
    ds = D.SliceDataset(root, oversample_lesions=0.6, seed=1)
    lesion = ds.lesion_items()
    assert lesion.sum() == 8  # two lesion slices in each of four cases
    weights = ds.sample_weights()
    assert weights.sum() == pytest.approx(1.0) and weights[lesion].sum() == pytest.approx(0.6)
    drawn = list(ds.sampler(epoch=2, num_samples=3000))
    assert list(ds.sampler(epoch=2, num_samples=3000)) == drawn
    assert list(ds.sampler(epoch=3, num_samples=3000)) != drawn
    assert abs(lesion[drawn].mean() - 0.6) < 0.04
    # Without oversampling the sampler is a seeded permutation of every slice.
    uniform = D.SliceDataset(root, seed=1)
    order = list(uniform.sampler(epoch=0))
    assert sorted(order) == list(range(len(uniform))) and order == list(uniform.sampler(epoch=0))


# --------------------------------------------------------------------------- real MRI


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    for name in ("brain1", "breast1"):
        image = nib.load(REAL_MRI / f"{name}_image.nii.gz")
        label = nib.load(REAL_MRI / f"{name}_label.nii.gz")
        D.write_case(root, name, [np.asarray(image.dataobj)], np.asarray(label.dataobj), image.affine)
    D.write_dataset_json(root, channel_names=["MRI"], source="pyradiomics test data", licence="BSD-3-Clause")
    return root


def test_real_mri_smoke(real_dataset):
    root = real_dataset
    for name, shape in (("brain1", (256, 256, 25)), ("breast1", (45, 120, 21))):
        case = D.load_case(root, name)
        assert case.image.shape == (1, *shape)
        assert set(np.unique(case.label).tolist()) == {0, 1}
    ds = D.SliceDataset(root)
    brain = [ds[i] for i in ds.case_items("brain1")]
    assert [item["index"] for item in brain if item["label"].any()] == list(range(11, 18))
    assert all(torch.isfinite(item["image"]).all() for item in brain)
    lesion_sum = sum(int(item["label"].sum()) for item in brain)
    assert lesion_sum == int(np.asarray(nib.load(REAL_MRI / "brain1_label.nii.gz").dataobj).sum())
    # A fixed size batches the two cases together and comes back exactly for the padded one.
    sized = D.SliceDataset(root, size=(128, 128))
    batch = next(iter(DataLoader(sized, batch_size=len(sized), shuffle=False)))
    assert batch["image"].shape == (46, 1, 128, 128) and batch["label"].shape == (46, 1, 128, 128)
    breast = {sized[i]["index"]: sized[i]["label"] for i in sized.case_items("breast1")}
    np.testing.assert_array_equal(sized.assemble("breast1", breast), sized.case_label("breast1"))
    assert sized.spacing("brain1") == pytest.approx((0.78125, 0.78125, 6.5))


def test_rotation_keeps_shapes_on_non_square_slices():
    # A disc on a 24 x 48 slice must stay a disc of the same area when rotated.
    u, v = np.meshgrid(np.arange(24) - 11.5, np.arange(48) - 23.5, indexing="ij")
    disc = torch.from_numpy((u**2 + v**2 < 8.0**2).astype(np.float32))[None]
    rotate = D.Augmentation(
        flip_prob=0.0, affine_prob=1.0, rotate_deg=60, scale=(1, 1), translate=0.0, gain=(1, 1), shift=0.0
    )
    for seed in range(4):
        _, out = rotate(disc.clone(), disc.clone(), np.random.default_rng(seed))
        assert abs(out.sum() - disc.sum()) <= 0.03 * disc.sum()
        rows, cols = np.nonzero(out[0].numpy())
        assert np.var(rows) == pytest.approx(np.var(cols), rel=0.08)


def test_split_keeps_each_patient_on_one_side(tmp_path):
    # PI-CAI style ids <patient>_<study>: patient 10035 has three studies.
    studies = {
        "10035_1000035": True,
        "10035_1000036": False,
        "10035_1000037": True,
        **{f"{10040 + i}_{1000040 + i}": i % 3 == 0 for i in range(17)},
    }
    for seed in range(20):
        train, val = D.split_cases(studies, 0.3, seed=seed, group_of=lambda case: case.split("_")[0])
        assert not {c.split("_")[0] for c in train} & {c.split("_")[0] for c in val}
        assert sorted(train + val) == sorted(studies)
    leaks = 0
    for seed in range(20):  # without the grouping the same studies do get separated
        train, val = D.split_cases(studies, 0.3, seed=seed)
        leaks += bool({c.split("_")[0] for c in train} & {c.split("_")[0] for c in val})
    assert leaks > 0
    root = tmp_path / "picai"
    for folder in (root, tmp_path / "other"):
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(parents=True)
    D.write_dataset_json(root, channel_names=["T2W"], source="picai")
    assert D.patient_grouping(root)("10035_1000035") == "10035"
    D.write_dataset_json(tmp_path / "other", channel_names=["T1"], source="synthetic")
    assert D.patient_grouping(tmp_path / "other") is None


# --------------------------------------------------------------------------- package, spacing, volumes


def test_layout_and_splits_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; from afl_core.data import write_case, list_cases, split_cases, load_case; "
        "assert 'torch' not in sys.modules, 'the layout imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_slice_items_carry_their_spacing(tmp_path):
    channels, label = _volume(np.random.default_rng(5))
    D.write_case(tmp_path, "c", channels, label, np.diag([0.7, 0.8, 2.5, 1.0]))
    D.write_dataset_json(tmp_path, channel_names=["T2W", "ADC"])
    ds = D.SliceDataset(tmp_path)
    item = ds[0]
    assert item["spacing"].dtype == torch.float32
    np.testing.assert_allclose(item["spacing"].numpy(), [0.7, 0.8])  # (H, W) = NIfTI (X, Y)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["spacing"].shape == (3, 2)


@pytest.fixture
def anisotropic(tmp_path):
    """Two cases of different shapes on 0.7 x 0.8 x 2.5 mm voxels (all three sizes differ)."""
    rng = np.random.default_rng(6)
    root = tmp_path / "aniso"
    truth = {}
    for name, shape in (("a", (12, 10, 6)), ("b", (9, 14, 5))):
        channels, label = _volume(rng, shape, lesion_slices=(2, 3))
        D.write_case(root, name, channels, label, np.diag([0.7, 0.8, 2.5, 1.0]))
        truth[name] = (channels, label)
    D.write_dataset_json(root, channel_names=["T2W", "ADC"])
    return root, truth


def test_volume_items_are_slices_first_with_spacing_in_that_order(anisotropic):
    root, truth = anisotropic
    ds = D.VolumeDataset(root)
    assert len(ds) == 2 and ds.in_channels == 2
    for i, (case, (_, label)) in enumerate(truth.items()):
        item = ds[i]
        x, y, z = label.shape
        assert item["case"] == case and item["index"] == 0
        assert item["image"].shape == (2, z, x, y) and item["label"].shape == (1, z, x, y)
        np.testing.assert_array_equal(item["label"][0].numpy(), label.transpose(2, 0, 1))
        ref = _reference_normalised(root / "imagesTr" / f"{case}_0001.nii.gz")
        np.testing.assert_allclose(item["image"][1].numpy(), ref.transpose(2, 0, 1), atol=1e-5)
        np.testing.assert_allclose(item["spacing"].numpy(), [2.5, 0.7, 0.8])  # (D, H, W) = (Z, X, Y)
        assert ds.spacing(case) == pytest.approx((0.7, 0.8, 2.5))
        # A prediction on the item's grid comes back on the case's grid.
        np.testing.assert_array_equal(ds.assemble(case, {0: item["label"]}), label)
    assert list(ds.lesion_items()) == [True, True]


def test_volume_crop_pad_is_undone_on_the_case_grid(anisotropic):
    root, truth = anisotropic
    ds = D.VolumeDataset(root, size=(6, 10, 12))
    batch = next(iter(DataLoader(ds, batch_size=2)))  # one size batches both cases
    assert batch["image"].shape == (2, 2, 6, 10, 12)
    label = truth["b"][1]  # (9, 14, 5): pad D 5 -> 6 (at the end), pad X 9 -> 10, crop Y 14 -> 12 (1 each side)
    item = ds[1]
    np.testing.assert_array_equal(item["label"][0, :5, :9].numpy(), label[:, 1:13, :].transpose(2, 0, 1))
    assert not item["label"][0, 5].any() and not item["label"][0, :, 9].any()
    back = ds.assemble("b", item["label"][0].numpy())
    seen = np.zeros(label.shape, bool)
    seen[:, 1:13, :] = True
    np.testing.assert_array_equal(back[seen], label[seen])
    assert not back[~seen].any() and ds.case_label("b") is ds.case_label("b")
    np.testing.assert_allclose(item["spacing"].numpy(), [2.5, 0.7, 0.8])  # cropping keeps the voxel size


def test_authors_resize_equals_monai_resized(anisotropic):
    transforms = pytest.importorskip("monai.transforms")
    root, _ = anisotropic
    size = (4, 16, 7)  # (D, H, W): up in X, down in Z, both ways in Y across the cases
    ds = D.VolumeDataset(root, size=size, resize=True)
    monai_resize = transforms.Resize(spatial_size=(16, 7, 4))  # NIfTI order, MONAI's default mode 'area'
    for i, case in enumerate(ds.cases):
        loaded = D.load_case(root, case)
        expected_label = np.asarray(monai_resize(loaded.label[None].astype(np.float32)))[0] != 0
        expected_image = np.asarray(monai_resize(D.normalise_channels(loaded.image)))
        item = ds[i]
        np.testing.assert_array_equal(item["label"][0].numpy(), expected_label.transpose(2, 0, 1))
        np.testing.assert_allclose(item["image"].numpy(), expected_image.transpose(0, 3, 1, 2), atol=1e-5)
        # Evaluated on the resized grid, with the voxel size that keeps the extent in mm.
        np.testing.assert_array_equal(ds.case_label(case), expected_label)
        assert ds.volume_shape(case) == (16, 7, 4)
        x, y, z = loaded.label.shape
        assert ds.spacing(case) == pytest.approx((0.7 * x / 16, 0.8 * y / 7, 2.5 * z / 4))
        np.testing.assert_allclose(item["spacing"].numpy(), [2.5 * z / 4, 0.7 * x / 16, 0.8 * y / 7], rtol=1e-6)
    # Area resampling then != 0 grows a lesion: a voxel is lesion when its box touches one.
    assert D.resize_label(np.pad(np.ones((1, 1, 1)), 1), (2, 2, 2)).all()
    with pytest.raises(ValueError, match="needs size"):
        D.VolumeDataset(root, resize=True)


def test_volume_augmentation_is_seeded_and_moves_image_and_label_together(tmp_path):
    rng = np.random.default_rng(8)
    label = np.zeros((12, 10, 6), np.uint8)
    label[2:7, 3:5, 1:3] = 1
    image = (label * 1000.0 + rng.normal(0, 10, label.shape)).astype(np.float32)
    D.write_case(tmp_path, "a", [image], label, AFFINE)
    D.write_dataset_json(tmp_path, channel_names=["x"])
    ds = D.VolumeDataset(tmp_path, augment=True, seed=3)
    assert isinstance(ds.augmentation, D.VolumeAugmentation)
    drawn = [ds[0]]
    for epoch in range(1, 8):
        ds.set_epoch(epoch)
        drawn.append(ds[0])
    ds.set_epoch(0)
    assert torch.equal(ds[0]["image"], drawn[0]["image"])
    assert len({tuple(item["label"].flatten().nonzero()[:, 0].tolist()) for item in drawn}) > 1  # flips happened
    for item in drawn:
        assert int(item["label"].sum()) == int(label.sum())
        img = item["image"][0]
        assert torch.equal(img > (img.max() + img.min()) / 2, item["label"][0].bool())


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_that_claims_a_terabyte_is_refused_before_reading(tmp_path, suffix):
    import gzip

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape((32767, 32767, 256))  # 2 TiB of float64
    header["vox_offset"] = 352
    payload = header.binaryblock + b"\0" * 4 + b"\0" * 4096
    path = tmp_path / f"forged{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix.endswith(".gz") else payload)
    with pytest.raises(ValueError, match=r"forged\.nii.*claims .*2\.05e\+03 GiB.*truncated or forged"):
        D.layout.read_nifti(path, "a test volume")
