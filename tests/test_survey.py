"""afl_core.survey against SciPy's labelling, NumPy's gradient and the canvas independence
the scale-aware variant promises."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from afl_core.data import SliceDataset, VolumeDataset, write_case, write_dataset_json
from afl_core.losses import SCALE_AWARE_ALPHA
from afl_core.survey import lesion_tables, parameter_table

SPACING = (0.5, 0.75, 3.0)


def _label_a() -> np.ndarray:
    label = np.zeros((20, 24, 6), dtype=np.uint8)
    label[2:8, 3:7, 1:4] = 1  # 6 x 4 x 3 = 72 voxels
    label[14:16, 15:18, 2] = 1  # 2 x 3 x 1 = 6 voxels, apart from the first
    label[17, 20, 5] = 1  # one voxel touching nothing
    return label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("survey")
    affine = np.diag([*SPACING, 1.0])
    rng = np.random.default_rng(0)
    empty = np.zeros((20, 24, 6), dtype=np.uint8)
    for case, label in (("a", _label_a()), ("b", empty)):
        write_case(root, case, [rng.normal(size=label.shape).astype(np.float32)], label, affine)
    write_dataset_json(root, channel_names=["t2"])
    return root


def test_lesion_tables_match_scipy_components(dataset):
    cases, lesions = lesion_tables(dataset)
    assert list(cases["case"]) == ["a", "b"]
    label = _label_a()
    components, count = ndimage.label(label, structure=np.ones((3, 3, 3)))
    sizes = sorted(np.bincount(components.ravel())[1:], reverse=True)
    a = lesions[lesions["case"] == "a"]
    assert list(a["voxels"]) == sizes == [72, 6, 1]
    assert list(a["lesion"]) == [1, 2, 3]
    voxel_ml = np.prod(SPACING) / 1000
    np.testing.assert_allclose(a["volume_ml"], np.array(sizes) * voxel_ml, rtol=1e-9)
    # the equivalent diameter is that of the ball of the lesion's volume (within the outline smoothing)
    np.testing.assert_allclose(a["diameter_mm"].iloc[0], (6 * 72 * np.prod(SPACING) / np.pi) ** (1 / 3), rtol=0.1)
    row = cases.set_index("case").loc["a"]
    assert row["lesions"] == count == 3 and row["lesion_voxels"] == label.sum()
    assert row["lesion_ml"] == pytest.approx(label.sum() * voxel_ml)
    assert row["foreground_fraction"] == pytest.approx(label.mean())
    assert row["lesion_slices"] == 4 and row["slices"] == 6  # slices 1, 2, 3 and 5 hold lesion
    assert row["spacing_mm"] == pytest.approx(SPACING) and row["shape"] == label.shape
    empty = cases.set_index("case").loc["b"]
    assert empty["lesions"] == 0 and empty["lesion_ml"] == 0 and not (lesions["case"] == "b").any()


def test_lesion_tables_refuse_unknown_cases(dataset):
    with pytest.raises(ValueError, match="not in"):
        lesion_tables(dataset, ["a", "zz"])


def test_paper_parameters_per_slice_against_numpy(dataset):
    slices = SliceDataset(dataset, size=(32, 32))
    table = parameter_table(slices)
    label = _label_a()
    lesion_slices = [k for k in range(label.shape[2]) if label[:, :, k].any()]
    assert list(table["case"]) == ["a"] * len(lesion_slices) and list(table["index"]) == lesion_slices
    for row in table.itertuples():
        padded = np.zeros((32, 32))
        padded[6:26, 4:28] = label[:, :, row.index]  # centred, as SliceDataset pads
        f = padded.mean()
        g = np.sqrt(sum(d**2 for d in np.gradient(padded))).mean()
        assert row.lesion_voxels == label[:, :, row.index].sum()
        assert row.foreground_fraction == pytest.approx(f)
        assert row.alpha_paper == pytest.approx(1 - f, abs=1e-6)
        assert row.gamma_paper == pytest.approx(f + g, abs=1e-6)
        assert row.alpha_scale_aware == pytest.approx(SCALE_AWARE_ALPHA)


def test_padding_changes_the_paper_gamma_not_the_scale_aware_one(dataset):
    small = parameter_table(SliceDataset(dataset, size=(32, 32)))
    large = parameter_table(SliceDataset(dataset, size=(64, 64)))
    # four times the canvas: f and g (both per canvas voxel) a quarter
    np.testing.assert_allclose(large["gamma_paper"], small["gamma_paper"] / 4, rtol=1e-5)
    np.testing.assert_allclose(large["gamma_scale_aware"], small["gamma_scale_aware"], rtol=1e-6)


def test_all_items_and_volumes(dataset):
    every = parameter_table(SliceDataset(dataset), ["paper"], lesion_only=False)
    assert len(every) == 12 and list(every.columns[-2:]) == ["alpha_paper", "gamma_paper"]
    free = every[every["lesion_voxels"] == 0]
    assert (free["gamma_paper"] == 0).all() and (free["alpha_paper"] == 0.5).all()
    volumes = parameter_table(VolumeDataset(dataset), ["paper"])
    assert list(volumes["case"]) == ["a"] and volumes["lesion_voxels"].iloc[0] == _label_a().sum()
    assert volumes["foreground_fraction"].iloc[0] == pytest.approx(_label_a().mean())


def test_batch_wide_or_unknown_variants_are_refused(dataset):
    slices = SliceDataset(dataset)
    with pytest.raises(ValueError, match="whole batch"):
        parameter_table(slices, ["reference"])
    with pytest.raises(ValueError, match="unknown A-FL variant"):
        parameter_table(slices, ["nope"])
