"""afl-data folder: a user's own folder into the common layout, checked before anything is
written, every problem named with its file; resumes and refuses like the other sources.
Every converted array is compared with nibabel's (or SimpleITK's) own read of the source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from afl_core.data import (
    SliceDataset,
    channel_path,
    label_path,
    list_cases,
    patient_grouping,
    read_dataset_json,
    split_cases,
)
from data_download.folder import convert_folder, read_volume, write_example_folder
from data_download.remote import DownloadError

REPO = Path(__file__).resolve().parents[1]
AFFINE = np.array([[0.5, 0, 0, -10.0], [0, 0.6, 0, 4.0], [0, 0, 3.0, 7.5], [0, 0, 0, 1]])
SHAPE = (6, 5, 4)
TEMPLATES = ["--image", "{case}_t2.nii.gz", "--image", "{case}_adc.nii.gz", "--label", "{case}_seg.nii.gz"]


def run_cli(*args: str, python: tuple[str, ...] = ("-m", "data_download")) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *python, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


def words(text: str) -> str:
    return " ".join(text.split())


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


def user_folder(src: Path, cases=("a", "b", "c"), *, seed: int = 0) -> Path:
    """Cases ``{case}_t2 / _adc / _seg.nii.gz``: random int16 channels, 0/1 labels."""
    rng = np.random.default_rng(seed)
    for case in cases:
        for modality in ("t2", "adc"):
            save(src / f"{case}_{modality}.nii.gz", rng.integers(0, 2000, SHAPE).astype(np.int16))
        save(src / f"{case}_seg.nii.gz", (rng.random(SHAPE) < 0.2).astype(np.uint8))
    return src


def convert_cli(src: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("folder", str(src), "--dest", str(dest), *TEMPLATES, "--no-progress", *extra)


# ----------------------------------------------------------------------------- conversion


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example folder, converted through the command line."""
    root = tmp_path_factory.mktemp("example")
    templates = write_example_folder(root / "src", n_cases=5, seed=1, shape=(4, 32, 32))
    args = [a for t in templates["images"] for a in ("--image", t)] + ["--label", templates["label"]]
    done = run_cli(
        "folder", str(root / "src"), "--dest", str(root / "dest"), *args, "--lesion-values",
        *map(str, templates["lesion_values"]), "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root / "src", root / "dest", templates


def test_example_folder_converts_into_the_layout(example):
    src, dest, templates = example
    assert templates == {
        "images": ["{case}_t2.nii.gz", "{case}_adc.nii.gz"],
        "label": "{case}_seg.nii.gz",
        "lesion_values": [1, 2],
    }
    cases = sorted(p.name[: -len("_seg.nii.gz")] for p in src.glob("*_seg.nii.gz"))
    assert list_cases(dest) == cases == [f"case{i:02d}" for i in range(1, 6)]
    seen = set()
    for case in cases:
        seg, seg_affine = nifti(src / f"{case}_seg.nii.gz")
        seen |= set(np.unique(seg).tolist())
        for index, modality in enumerate(("t2", "adc")):
            source, source_affine = nifti(src / f"{case}_{modality}.nii.gz")
            written, written_affine = nifti(channel_path(dest, case, index))
            np.testing.assert_array_equal(written, source)
            np.testing.assert_allclose(written_affine, source_affine, atol=1e-6)
        mask, mask_affine = nifti(label_path(dest, case))
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, (seg == 1) | (seg == 2))
        np.testing.assert_allclose(mask_affine, seg_affine, atol=1e-6)
    assert seen == {0, 1, 2}  # the example's labels need --lesion-values
    info = read_dataset_json(dest)
    assert info["source"] == "folder" and info["channel_names"] == {"0": "t2", "1": "adc"}
    assert info["templates"] == {"images": templates["images"], "label": templates["label"]}
    assert info["lesion_values"] == [1, 2] and info["label_values_found"] == [0, 1, 2]
    assert info["numTraining"] == 5 and "patients" not in info


def test_converted_folder_reads_as_slices(example):
    _, dest, _ = example
    data = SliceDataset(dest)
    depth = sum(nifti(label_path(dest, case))[0].shape[2] for case in list_cases(dest))
    assert len(data) == depth
    item = data[0]
    assert item["image"].shape[0] == 2 and item["label"].shape[0] == 1
    assert set(np.unique(item["label"].numpy()).tolist()) <= {0.0, 1.0}


def test_afl_train_runs_on_the_converted_folder(example, tmp_path):
    _, dest, _ = example
    run = tmp_path / "run"
    args = ["--data", str(dest), "--loss", "afl", "--encoder", "tu-mobilenetv3_small_050", "--encoder-weights"]
    args += ["none", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(run), "--no-progress"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    trained = subprocess.run(
        [sys.executable, "-m", "afl_core.train", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert trained.returncode == 0, trained.stderr
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1] and np.isfinite(history["train_loss"]).all()
    config = json.loads((run / "config.json").read_text())
    assert sorted(config["train_cases"] + config["val_cases"]) == list_cases(dest)


def test_real_cases_join_with_their_licence(tmp_path):
    from afl_core.environment import real_examples_dir

    templates = write_example_folder(tmp_path / "src", n_cases=2, seed=0, shape=(4, 32, 32), include_real=True)
    assert templates["images"] == ["{case}_image.nii.gz"]
    assert (tmp_path / "src" / "LICENSE-pyradiomics.txt").is_file()
    convert_folder(tmp_path / "src", tmp_path / "dest", **templates, progress=False)
    assert list_cases(tmp_path / "dest") == ["brain1", "breast1", "case01", "case02"]
    real = real_examples_dir()
    for name in ("brain1", "breast1"):
        image, affine = nifti(real / f"{name}_image.nii.gz")
        written, written_affine = nifti(channel_path(tmp_path / "dest", name, 0))
        np.testing.assert_array_equal(written, image)
        np.testing.assert_allclose(written_affine, affine, atol=1e-5)
        np.testing.assert_array_equal(
            nifti(label_path(tmp_path / "dest", name))[0], nifti(real / f"{name}_label.nii.gz")[0]
        )
    # A second call replaces its own earlier example; a folder of other files is refused.
    assert write_example_folder(tmp_path / "src", n_cases=1, shape=(4, 32, 32))["images"][1] == "{case}_adc.nii.gz"
    assert not (tmp_path / "src" / "brain1_image.nii.gz").exists()
    with pytest.raises(FileExistsError, match="holds other files"):
        write_example_folder(tmp_path / "dest")


def test_subfolders_and_patients_keep_a_patients_cases_together(tmp_path):
    rng = np.random.default_rng(2)
    cases = ["p1_v1", "p1_v2", "p1_v3", "p2_v1", "p3_v1", "p4_v1", "p4_v2", "p5_v1"]
    for case in cases:
        save(tmp_path / "src" / case / "t2.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        save(tmp_path / "src" / "labels" / f"{case}.nii.gz", (rng.random(SHAPE) < 0.3).astype(np.uint8))
    dest = tmp_path / "dest"
    args = ["--image", "{case}/t2.nii.gz", "--label", "labels/{case}.nii.gz", "--patient", "{patient}_{visit}"]
    done = run_cli("folder", str(tmp_path / "src"), "--dest", str(dest), *args, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert list_cases(dest) == cases
    for case in cases:
        np.testing.assert_array_equal(
            nifti(channel_path(dest, case, 0))[0], nifti(tmp_path / "src" / case / "t2.nii.gz")[0]
        )
    info = read_dataset_json(dest)
    assert info["patients"] == {case: case.split("_")[0] for case in cases}
    with pytest.raises(DownloadError, match=r"case p1_v2 does not fit --patient '\{patient\}_v1'"):
        convert_folder(tmp_path / "src", tmp_path / "other", images=["{case}/t2.nii.gz"], label="labels/{case}.nii.gz",
                       patient="{patient}_v1", progress=False)  # fmt: skip
    assert not (tmp_path / "other").exists()
    group_of = patient_grouping(dest)
    for seed in range(5):
        train, val = split_cases(dest, 0.4, seed, group_of=group_of)
        assert not {c.split("_")[0] for c in train} & {c.split("_")[0] for c in val}


def test_mha_and_nrrd_are_read_with_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    (tmp_path / "src").mkdir()
    rng = np.random.default_rng(3)
    zyx = {case: rng.integers(0, 900, (4, 5, 6)).astype(np.int16) for case in ("a", "b")}
    spacing, origin = (0.7, 0.8, 2.5), (10.0, -20.0, 5.0)
    for case, array in zyx.items():
        for name, values in ((f"{case}_t2.mha", array), (f"{case}_seg.nrrd", (array > 450).astype(np.uint8))):
            image = sitk.GetImageFromArray(values)
            image.SetSpacing(spacing)
            image.SetOrigin(origin)
            sitk.WriteImage(image, str(tmp_path / "src" / name))
    convert_folder(
        tmp_path / "src", tmp_path / "dest", images=["{case}_t2.mha"], label="{case}_seg.nrrd", progress=False
    )
    # SimpleITK's arrays are (z, y, x) in LPS; the layout's (x, y, z) in RAS.
    expected_affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    expected_affine[:3, 3] = (-origin[0], -origin[1], origin[2])
    for case, array in zyx.items():
        image, affine = nifti(channel_path(tmp_path / "dest", case, 0))
        np.testing.assert_array_equal(image, array.transpose(2, 1, 0))
        np.testing.assert_allclose(affine, expected_affine, atol=1e-6)
        np.testing.assert_array_equal(nifti(label_path(tmp_path / "dest", case))[0], (array > 450).transpose(2, 1, 0))


@pytest.mark.parametrize("name, fields", [("a_t2.mha", "ElementSpacing"), ("a_seg.nrrd", "space directions")])
def test_mha_and_nrrd_voxel_sizes_get_the_check_of_nifti(tmp_path, monkeypatch, name, fields):
    # ITK refuses most damaged headers itself; the image it would otherwise return is made in memory.
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    image.SetSpacing((float("nan"), 0.8, 2.5))
    monkeypatch.setattr(sitk, "ReadImage", lambda path: image)
    with pytest.raises(ValueError) as raised:
        read_volume(tmp_path / name)
    message = str(raised.value)
    assert f"{tmp_path / name}: its header gives the voxel size (nan, 0.8, 2.5) mm" in message
    assert "must be positive and finite" in message and f"repair the header ({fields}" in message


# ----------------------------------------------------------------------------- resume and refuse


def test_rerun_resumes_and_a_different_command_is_refused_unless_forced(tmp_path):
    src, dest = user_folder(tmp_path / "src"), tmp_path / "dest"
    assert convert_cli(src, dest).returncode == 0
    assert "already complete" in convert_cli(src, dest).stdout
    # A killed run: dataset.json not yet written, case b's label missing.
    (dest / "dataset.json").unlink()
    label_path(dest, "b").unlink()
    kept = {case: label_path(dest, case).stat().st_mtime_ns for case in ("a", "c")}
    done = convert_cli(src, dest)
    assert done.returncode == 0, done.stderr
    assert list_cases(dest) == ["a", "b", "c"]
    assert {case: label_path(dest, case).stat().st_mtime_ns for case in ("a", "c")} == kept  # skipped, not redone
    np.testing.assert_array_equal(nifti(label_path(dest, "b"))[0], nifti(src / "b_seg.nii.gz")[0])

    before = (dest / "dataset.json").read_bytes()
    refused = convert_cli(src, dest, "--lesion-values", "1")
    assert refused.returncode == 1
    message = words(refused.stderr)
    assert "--lesion-values was None, now [1]" in message and "--force" in message
    assert (dest / "dataset.json").read_bytes() == before
    forced = convert_cli(src, dest, "--lesion-values", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert read_dataset_json(dest)["lesion_values"] == [1]

    # An interrupted conversion with other options is refused too (its marker names them).
    (dest / "dataset.json").unlink()
    refused = convert_cli(src, dest)
    assert refused.returncode == 1 and "--lesion-values was [1], now None" in words(refused.stderr)


def test_force_never_replaces_another_sources_dataset(tmp_path):
    from afl_core.synthetic import make_dataset

    dest = make_dataset(tmp_path / "synthetic", 2, seed=0, shape=(2, 32, 32), lesion_radius=(2.0, 4.0), progress=False)
    labels = {case: label_path(dest, case).read_bytes() for case in list_cases(dest)}
    refused = convert_cli(user_folder(tmp_path / "src"), dest, "--force")
    assert refused.returncode == 1 and "'synthetic'" in words(refused.stderr)
    assert {case: label_path(dest, case).read_bytes() for case in list_cases(dest)} == labels
    assert read_dataset_json(dest)["source"] == "synthetic"


# ----------------------------------------------------------------------------- problems


def _missing_channel(src):
    (src / "b_adc.nii.gz").unlink()
    return [], ["case b lacks the channel --image '{case}_adc.nii.gz'", f"expected {src / 'b_adc.nii.gz'}"]


def _missing_label(src):
    (src / "c_seg.nii.gz").unlink()
    return [], ["case c has no label", f"expected {src / 'c_seg.nii.gz'}"]


def _label_without_images(src):
    save(src / "d_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    return [], [f"{src / 'd_seg.nii.gz'} is a label without images", f"expected {src / 'd_t2.nii.gz'}"]


def _shape_differs(src):
    save(src / "b_adc.nii.gz", np.zeros((6, 5, 3), np.int16))
    return [], [f"{src / 'b_adc.nii.gz'} has shape (6, 5, 3) but {src / 'b_t2.nii.gz'} has (6, 5, 4)"]


def _affine_differs(src):
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    save(src / "a_seg.nii.gz", nifti(src / "a_seg.nii.gz")[0], shifted)
    return [], [f"{src / 'a_seg.nii.gz'} and {src / 'a_t2.nii.gz'} have different affines", "up to 5 mm"]


def _nan_voxel_size(src):
    image = nib.Nifti1Image(nifti(src / "a_adc.nii.gz")[0], AFFINE)
    image.header["pixdim"][1] = np.nan
    nib.save(image, src / "a_adc.nii.gz")
    return [], [f"{src / 'a_adc.nii.gz'}: its header gives the voxel size (nan, 0.6", "must be positive and finite"]


def _nan_affine(src):
    data = nifti(src / "b_t2.nii.gz")[0]
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_zooms((0.5, 0.6, 3.0))
    broken = AFFINE.copy()
    broken[1, 3] = np.nan
    header.set_sform(broken, code=1)
    nib.save(nib.Nifti1Image(data, None, header=header), src / "b_t2.nii.gz")
    return [], [f"{src / 'b_t2.nii.gz'}: its header gives the voxel size", "voxel-to-world matrix that is not finite"]


def _label_values(src):
    seg = nifti(src / "b_seg.nii.gz")[0].copy()
    seg[0, 0, 0] = 2
    save(src / "b_seg.nii.gz", seg)
    return [], [f"{src / 'b_seg.nii.gz'} holds the label values [0, 1, 2]", "--lesion-values 1 2"]


def _absent_lesion_value(src):
    return ["--lesion-values", "1", "4"], ["--lesion-values 4: no label holds it", "the labels hold 0, 1"]


def _case_clash(src):
    for modality in ("t2", "adc", "seg"):
        (src / f"a_{modality}.nii.gz").rename(src / f"A_{modality}.nii.gz")
    user_folder(src, cases=("a",), seed=5)
    return [], ["the case ids A and a differ only in letter case", str(src / "A_t2.nii.gz")]


def _two_templates(src):
    return ["--image", "{case}.nii.gz"], [
        f"{src / 'a_seg.nii.gz'} fits both --image '{{case}}.nii.gz' and --label '{{case}}_seg.nii.gz'"
    ]


def _four_d(src):
    save(src / "c_adc.nii.gz", np.zeros((*SHAPE, 2), np.int16))
    return [], [f"{src / 'c_adc.nii.gz'} holds a 4D array (6, 5, 4, 2)", "one --image template for each"]


def _corrupt(src):
    path = src / "a_t2.nii.gz"
    path.write_bytes(path.read_bytes()[:100])
    return [], [f"cannot read {path}", "corrupt"]


def _nothing_matches(src):
    return ["--image", "{case}_hbv.nii.gz"], [
        f"--image '{{case}}_hbv.nii.gz' matches no file under {src} (found there: a_adc.nii.gz, a_seg.nii.gz"
    ]


def _several_at_once(src):
    (src / "b_adc.nii.gz").unlink()
    _label_values(src)
    # case b lacks a channel, its label's values are still checked (and summed up in one hint)
    return [], ["3 problem(s)", "case b lacks the channel", f"{src / 'b_seg.nii.gz'} holds the label values [0, 1, 2]",
                "--lesion-values 1 2"]  # fmt: skip


PROBLEMS = [
    _missing_channel,
    _missing_label,
    _label_without_images,
    _shape_differs,
    _affine_differs,
    _nan_voxel_size,
    _nan_affine,
    _label_values,
    _absent_lesion_value,
    _case_clash,
    _two_templates,
    _four_d,
    _corrupt,
    _nothing_matches,
    _several_at_once,
]


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.__name__.strip("_") for p in PROBLEMS])
def test_each_problem_is_named_and_nothing_is_written(problem, tmp_path):
    src = user_folder(tmp_path / "src")
    extra, expected = problem(src)
    done = convert_cli(src, tmp_path / "dest", *extra)
    assert done.returncode == 1, done.stdout
    message = words(done.stderr)
    for fragment in expected:
        assert fragment in message, message
    assert "nothing was written" in message and "Traceback" not in message
    assert not (tmp_path / "dest").exists()


def test_two_files_for_one_case_and_an_empty_folder(tmp_path):
    src = tmp_path / "src"
    for date in ("2020", "2021"):
        save(src / "a" / f"{date}_t2.nii.gz", np.zeros(SHAPE, np.int16))
    save(src / "a" / "seg.nii.gz", np.zeros(SHAPE, np.uint8))
    done = run_cli("folder", str(src), "--dest", str(tmp_path / "dest"), "--image", "{case}/{date}_t2.nii.gz",
                   "--label", "{case}/seg.nii.gz")  # fmt: skip
    assert done.returncode == 1
    assert f"case a: 2 files fit --image '{{case}}/{{date}}_t2.nii.gz' ({src / 'a/2020_t2.nii.gz'}" in words(
        done.stderr
    )
    (tmp_path / "empty").mkdir()
    done = convert_cli(tmp_path / "empty", tmp_path / "dest")
    assert done.returncode == 1 and "holds no files" in words(done.stderr)
    assert not (tmp_path / "dest").exists()


def test_bad_templates_are_refused_naming_the_option(tmp_path):
    src = user_folder(tmp_path / "src")
    done = run_cli(
        "folder", str(src), "--dest", str(tmp_path / "dest"), "--image", "t2.nii.gz", "--label", "{case}.nii.gz"
    )
    assert done.returncode == 1 and "--image 't2.nii.gz' must hold {case} exactly once" in words(done.stderr)
    done = run_cli(
        "folder", str(src), "--dest", str(tmp_path / "dest"), "--image", "{case}.png", "--label", "{case}.nii.gz"
    )
    assert done.returncode == 1 and "--image '{case}.png' must end in a file type" in words(done.stderr)
    assert not (tmp_path / "dest").exists()


def test_mha_without_simpleitk_names_the_extra(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a_t2.mha", "a_seg.nii.gz"):
        (src / name).write_bytes(b"unused: never read without SimpleITK")
    code = (
        "import sys; sys.modules['SimpleITK'] = None; from data_download.cli import main; "
        f"sys.exit(main(['folder', {str(src)!r}, '--dest', {str(tmp_path / 'dest')!r}, '--image', '{{case}}_t2.mha', "
        "'--label', '{case}_seg.nii.gz', '--no-progress']))"
    )
    done = run_cli(python=("-c", code))
    assert done.returncode == 1
    assert "needs SimpleITK" in words(done.stderr) and "afl-tutorial[picai]" in words(done.stderr)
    assert str(src / "a_t2.mha") in words(done.stderr)
    assert not (tmp_path / "dest").exists()
