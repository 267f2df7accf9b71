"""data_download: fetching (resume, checksums, HTTP faults), safe extraction, and the
three real sources end to end into the common layout, against a local HTTP server that
serves tiny archives in the published formats."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import zipfile
from collections import namedtuple
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from afl_core.data import channel_path, label_path, list_cases, read_dataset_json
from data_download import archives, brats, msd, picai, remote
from data_download.cli import main
from data_download.remote import (
    ChecksumError,
    DownloadError,
    PinnedChecksumError,
    RemoteFile,
    fetch,
    format_bytes,
    parse_checksum,
)

from ._download_fixtures import (
    ADC_GRADIENT,
    BRATS_MODALITIES,
    CASE_A,
    CASE_B,
    CASE_C,
    HAVE_SITK,
    HBV_GRADIENT,
    MATRIX_SIZE,
    SPACING,
    brats_folder,
    msd_cases,
    msd_tar,
    picai_archives,
    ramp,
    zenodo_record,
)
from ._http_server import FileServer

REPO = Path(__file__).resolve().parents[1]
needs_sitk = pytest.mark.skipif(not HAVE_SITK, reason="SimpleITK (the picai extra) is not installed")
NET = dict(retries=0, retry_wait=0.0, timeout=10.0)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def read_nifti(path: Path):
    image = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


def words(text: str) -> str:
    """A wrapped paragraph back on one line."""
    return " ".join(text.split())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_download", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


# ----------------------------------------------------------------------------- fetch


PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8))


def remote_for(server: FileServer, data: bytes = PAYLOAD, *, checksum: str | None = None, name="blob.bin"):
    url = server.add(f"/files/{name}", data)
    return RemoteFile(url, name, checksum if checksum is not None else f"md5:{md5(data)}", len(data))


def test_fetch_verifies_and_leaves_no_partial_file(server, tmp_path):
    blob = remote_for(server, checksum=f"sha256:{hashlib.sha256(PAYLOAD).hexdigest()}")
    path = fetch(blob, tmp_path, progress=False, **NET)
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]
    # A second call re-verifies the file on disk and does not ask the server again.
    fetch(blob, tmp_path, progress=False, **NET)
    assert len(server.log) == 1


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    blob = remote_for(server)
    server.fail("/files/blob.bin", "truncate")
    with pytest.raises(DownloadError, match="re-run the same command to resume") as info:
        fetch(blob, tmp_path, progress=False, **NET)
    assert "stopped after" in str(info.value)
    part = tmp_path / "blob.bin.part"
    assert not (tmp_path / "blob.bin").exists()
    assert part.stat().st_size == len(PAYLOAD) // 2

    path = fetch(blob, tmp_path, progress=False, **NET)
    first, second = server.requests("/files/blob.bin")
    assert (first.range, first.status) == (None, 200)
    assert (second.range, second.status) == (f"bytes={len(PAYLOAD) // 2}-", 206)
    assert md5(path.read_bytes()) == md5(PAYLOAD) and not part.exists()


def test_automatic_retries_resume_each_time(server, tmp_path):
    blob = remote_for(server)
    server.fail("/files/blob.bin", "truncate", "truncate")
    path = fetch(blob, tmp_path, progress=False, retries=2, retry_wait=0.0)
    assert path.read_bytes() == PAYLOAD
    ranges = [r.range for r in server.requests("/files/blob.bin")]
    half = len(PAYLOAD) // 2
    assert ranges == [None, f"bytes={half}-", f"bytes={half + (len(PAYLOAD) - half) // 2}-"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    blob = remote_for(server)
    (tmp_path / "blob.bin.part").write_bytes(b"garbage that is not the start of the file")
    server.fail("/files/blob.bin", "ignore-range")
    path = fetch(blob, tmp_path, progress=False, **NET)
    assert path.read_bytes() == PAYLOAD
    assert server.log[0].status == 200 and server.log[0].range is not None


def test_a_range_from_another_offset_is_never_appended(server, tmp_path):
    blob = remote_for(server)
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:100])
    server.fail("/files/blob.bin", "wrong-range")
    path = fetch(blob, tmp_path, progress=False, retries=1, retry_wait=0.0)
    assert path.read_bytes() == PAYLOAD
    first, second = server.requests("/files/blob.bin")
    assert (first.range, first.status) == ("bytes=100-", 206)  # answered from the middle: dropped
    assert (second.range, second.status) == (None, 200)


def test_complete_partial_file_is_verified_without_downloading(server, tmp_path):
    blob = remote_for(server)
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    assert fetch(blob, tmp_path, progress=False, **NET).read_bytes() == PAYLOAD
    assert server.log == []


def test_checksum_mismatch_deletes_the_file_and_explains(server, tmp_path):
    blob = remote_for(server, checksum="md5:" + md5(b"another file"))
    with pytest.raises(ChecksumError) as info:
        fetch(blob, tmp_path, progress=False, **NET)
    message = str(info.value)
    assert md5(PAYLOAD) in message and md5(b"another file") in message and "--base-url" in message
    assert list(tmp_path.iterdir()) == []


def test_a_pinned_checksum_is_checked_in_the_same_read_as_the_expected_one(server, tmp_path, monkeypatch):
    reads, checksums = [], remote.file_checksums

    def counted(path, algorithms, **options):
        reads.append(list(algorithms))
        return checksums(path, algorithms, **options)

    monkeypatch.setattr(remote, "file_checksums", counted)
    blob = remote_for(server)  # md5 expected, as a record gives it
    assert fetch(dataclasses.replace(blob, pinned=f"sha256:{sha256(PAYLOAD)}"), tmp_path, progress=False, **NET)
    assert reads == [["md5", "sha256"]]
    # Pinned otherwise: the file on disk is checked again, deleted, fetched again and refused, whatever
    # the expected md5 (which matches) says.
    wrong = dataclasses.replace(blob, pinned="sha256:" + "0" * 64)
    with pytest.raises(PinnedChecksumError) as info:
        fetch(wrong, tmp_path, progress=False, **NET)
    assert (info.value.algorithm, info.value.expected, info.value.actual) == ("sha256", "0" * 64, sha256(PAYLOAD))
    pinned = "(the value pinned for it in the code), so it was deleted"
    assert f"has sha256 {sha256(PAYLOAD)}, but {'0' * 64} was expected {pinned}" in str(info.value)
    assert list(tmp_path.iterdir()) == [] and len(server.log) == 2
    # Both wrong: the expected checksum is the one named, as a plain ChecksumError.
    both = dataclasses.replace(wrong, checksum="md5:" + md5(b"another file"))
    with pytest.raises(ChecksumError) as info:
        fetch(both, tmp_path, progress=False, **NET)
    assert not isinstance(info.value, PinnedChecksumError)
    assert f"but {md5(b'another file')} was expected, so it was deleted" in str(info.value)


@pytest.mark.parametrize("status, hint", [("404", "Nothing is at that address"), ("500", "usually temporary")])
def test_http_errors_are_explained(server, tmp_path, status, hint):
    blob = remote_for(server)
    server.fail("/files/blob.bin", status, status)
    with pytest.raises(DownloadError, match=hint) as info:
        fetch(blob, tmp_path, progress=False, retries=1, retry_wait=0.0)
    assert f"HTTP {status}" in str(info.value)
    # 5xx is retried once (retries=1), 4xx is not retried at all.
    assert len(server.log) == (2 if status == "500" else 1)
    assert not (tmp_path / "blob.bin").exists()


def test_unreachable_server_is_explained(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    blob = RemoteFile(f"http://127.0.0.1:{port}/x.bin", "x.bin", None, None)
    with pytest.raises(DownloadError, match="Could not reach the server"):
        fetch(blob, tmp_path, progress=False, **NET)


def test_free_disk_check_stops_before_writing(server, tmp_path, monkeypatch):
    blob = remote_for(server)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(remote.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match="Not enough free disk space"):
        fetch(blob, tmp_path, progress=False, **NET)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "checksum, expected",
    [
        ("MD5:ABCDEF0123456789ABCDEF0123456789", ("md5", "abcdef0123456789abcdef0123456789")),
        ("ab" * 32, ("sha256", "ab" * 32)),
        ("ab" * 16, ("md5", "ab" * 16)),
    ],
)
def test_parse_checksum(checksum, expected):
    assert parse_checksum(checksum) == expected


def test_parse_checksum_rejects_nonsense():
    with pytest.raises(ValueError, match="Cannot read the checksum"):
        parse_checksum("md5:not-hex")


# ----------------------------------------------------------------------------- archives


def _zip(entries: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "ok/../../escape.txt", "C:\\escape.txt"])
def test_zip_member_outside_destination_is_rejected(tmp_path, evil):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip({"fine.txt": b"ok", evil: b"pwned"}).getvalue())
    with pytest.raises(archives.UnsafeArchiveError, match="outside the extraction folder"):
        archives.safe_extract(archive, tmp_path / "out" / "x", progress=False)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_are_rejected(tmp_path, kind):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("data/passwd")
        info.type, info.linkname = kind, "../../../etc/passwd"
        tar.addfile(info)
    archive = tmp_path / "links.tar"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(archives.UnsafeArchiveError, match="etc/passwd"):
        archives.safe_extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_extraction_skips_macos_junk_and_applies_the_filter(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(
        _zip(
            {
                "top/keep.txt": b"1",
                "top/drop.txt": b"2",
                "top/._keep.txt": b"junk",
                "__MACOSX/top/._keep.txt": b"junk",
                "top/.DS_Store": b"junk",
            }
        ).getvalue()
    )
    out = archives.safe_extract(archive, tmp_path / "out", include=lambda n: "drop" not in n, progress=False)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["top/keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_damaged_archive_is_explained(tmp_path):
    good = _zip({"a.bin": bytes(range(256)) * 40}).getvalue()
    damaged = bytearray(good)
    damaged[60] ^= 0xFF  # inside the stored data: the CRC check fails
    archive = tmp_path / "d.zip"
    archive.write_bytes(bytes(damaged))
    with pytest.raises(DownloadError, match="damaged"):
        archives.safe_extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- PI-CAI


ZENODO = "/api/records/6624726"
LABELS = "/picai_labels/archive"


@pytest.fixture(scope="module")
def picai_files(tmp_path_factory):
    if not HAVE_SITK:
        pytest.skip("SimpleITK (the picai extra) is not installed")
    return picai_archives(tmp_path_factory.mktemp("picai-build"))


def pins_file(folder: Path, archives: dict[str, bytes]) -> Path:
    """A ``--pinned-sha256`` file (sha256sum's format) giving ``archives`` their own sha256."""
    path = folder / "pinned-sha256.txt"
    path.write_text("".join(f"{sha256(data)}  {name}\n" for name, data in archives.items()))
    return path


def serve_picai(server, picai_files, pins_folder: Path, *, corrupt: str | None = None):
    """Serve the record, the folds and the labels; the CLI options for them, with the
    archives' own sha256 as the pins (written into ``pins_folder``). ``corrupt``: that
    archive is served with one byte flipped (the record and the pin keep its true values)."""
    cases, folds, labels = picai_files
    server.add(ZENODO, zenodo_record(folds, md5))
    for name, data in folds.items():
        if name == corrupt:  # one flipped byte in the middle
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        server.add(f"{ZENODO}/files/{name}/content", data)
    server.add(f"{LABELS}/{picai.LABELS_COMMIT}.zip", labels)
    return [
        "--base-url",
        server.url + ZENODO,
        "--record-url",
        server.url + ZENODO,
        "--labels-base-url",
        server.url + LABELS,
        "--pinned-sha256",
        str(pins_file(pins_folder, folds)),
    ]


def _t2w_xyz(image):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def check_picai_case_a(dest: Path, case) -> None:
    """Case A's T2W is on the output spacing, so the output is the input zero-padded by
    (2, 2, 1) voxels in (x, y, z); ADC and HBV are linear ramps, sampled exactly by B-splines."""
    pad = ((2, 2), (2, 2), (1, 1))
    t2w, affine = read_nifti(channel_path(dest, CASE_A, 0))
    np.testing.assert_allclose(t2w, np.pad(_t2w_xyz(case.t2w), pad), atol=1e-2)
    label, label_affine = read_nifti(label_path(dest, CASE_A))
    expected = np.pad(_t2w_xyz(case.label) >= 1, pad)
    np.testing.assert_array_equal(label, expected.astype(np.uint8))
    assert label.sum() == np.count_nonzero(np.isin(_t2w_xyz(case.label), [2, 3]))
    # LPS origin (-7, -7, -9) moved by the padding, then x and y negated for RAS.
    expected_affine = np.diag([-0.5, -0.5, 3.0, 1.0])
    expected_affine[:3, 3] = (7.0 + 1.0, 7.0 + 1.0, -9.0 - 3.0)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-6)
    np.testing.assert_allclose(label_affine, expected_affine, atol=1e-6)
    # ADC / HBV: evaluate the ramp at every output voxel's LPS position, away from the
    # source grids' borders (4 source voxels) where the spline's boundary handling acts.
    index = np.stack(np.meshgrid(*[np.arange(n) for n in t2w.shape], indexing="ij"), -1)
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    lps = ras * np.array([-1.0, -1.0, 1.0])
    for channel, gradient, lo, hi in ((1, ADC_GRADIENT, -12.0, 11.0), (2, HBV_GRADIENT, -8.0, 6.0)):
        values, _ = read_nifti(channel_path(dest, CASE_A, channel))
        inside = np.all((lps[..., :2] >= lo) & (lps[..., :2] <= hi), axis=-1)
        assert inside.sum() > 500
        np.testing.assert_allclose(values[inside], ramp(lps, gradient)[inside], atol=0.05)


def check_picai_case_b(dest: Path, case) -> None:
    """Case B (oblique, resampled): binary label of about the same physical volume and
    position as the input lesion."""
    label, affine = read_nifti(label_path(dest, CASE_B))
    assert label.shape == MATRIX_SIZE[::-1] and set(np.unique(label)) == {0, 1}
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(zooms, SPACING[::-1], atol=1e-6)
    source = _t2w_xyz(case.label) >= 1
    source_volume = source.sum() * np.prod(case.t2w.GetSpacing())
    assert label.sum() * np.prod(zooms) == pytest.approx(source_volume, rel=0.25)
    # Lesion centroids in RAS: the input's from the SimpleITK geometry, the output's from the affine.
    src = np.argwhere(source).mean(axis=0)
    direction = np.asarray(case.t2w.GetDirection()).reshape(3, 3)
    src_lps = np.asarray(case.t2w.GetOrigin()) + direction @ (src * np.asarray(case.t2w.GetSpacing()))
    out_ras = affine[:3, :3] @ np.argwhere(label).mean(axis=0) + affine[:3, 3]
    np.testing.assert_allclose(out_ras, src_lps * np.array([-1, -1, 1]), atol=1.5)


def test_picai_end_to_end_via_cli(server, picai_files, tmp_path):
    cases = picai_files[0]
    dest = tmp_path / "picai"
    urls = serve_picai(server, picai_files, tmp_path)
    shape = [str(n) for n in MATRIX_SIZE]
    result = run_cli("picai", "--dest", str(dest), *urls, "--folds", "0", "1", "--matrix-size", *shape, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "CC BY-NC 4.0" in result.stdout and "1 cases have no label" in result.stdout

    assert list_cases(dest) == [CASE_A, CASE_B]
    info = read_dataset_json(dest)
    assert info["channel_names"] == {"0": "T2W", "1": "ADC", "2": "HBV"} and info["numTraining"] == 2
    assert info["licence"] == "CC BY-NC 4.0"
    labels_zip = picai_files[2]
    assert info["labels_archive_sha256"] == hashlib.sha256(labels_zip).hexdigest()
    assert info["image_archives_sha256"] == {name: sha256(data) for name, data in picai_files[1].items()}
    check_picai_case_a(dest, cases[CASE_A])
    check_picai_case_b(dest, cases[CASE_B])
    # Only the archives stay in the cache; the extracted files were removed.
    assert sorted(p.name for p in (dest / ".downloads").iterdir()) == sorted(
        [*picai_files[1], f"picai_labels-{picai.LABELS_COMMIT}.zip"]
    )

    # A re-run over the complete dataset says so and asks the server nothing.
    requests_before = len(server.log)
    assert (
        main(["picai", "--dest", str(dest), *urls, "--folds", "0", "1", "--matrix-size", *shape, "--no-progress"]) == 0
    )
    assert len(server.log) == requests_before


def test_picai_ai_labels_fill_the_gaps(picai_files, tmp_path):
    cases, folds, labels = picai_files
    images, label_dir = tmp_path / "images", tmp_path / "labels"
    for name, data in folds.items():
        (tmp_path / name).write_bytes(data)
        archives.safe_extract(tmp_path / name, images / name, progress=False)
    (tmp_path / "labels.zip").write_bytes(labels)
    archives.safe_extract(tmp_path / "labels.zip", label_dir, progress=False)
    summary = picai.convert_picai(
        images, label_dir, tmp_path / "out", labels="human+ai", matrix_size=MATRIX_SIZE, progress=False
    )
    assert summary.cases == [CASE_A, CASE_B, CASE_C] and summary.unlabelled == []
    assert summary.label_source[CASE_C] == "AI/Bosma22a"
    label, _ = read_nifti(label_path(tmp_path / "out", CASE_C))
    assert label.sum() == np.count_nonzero(_t2w_xyz(cases[CASE_C].label))  # same grid spacing, fully inside

    # Other options over the same folder: the case without an expert label goes, the others are redone.
    summary = picai.convert_picai(images, label_dir, tmp_path / "out", matrix_size=(8, 24, 24), progress=False)
    assert summary.written == 2 and list_cases(tmp_path / "out") == [CASE_A, CASE_B]
    assert read_nifti(channel_path(tmp_path / "out", CASE_A, 2))[0].shape == (24, 24, 8)
    assert not channel_path(tmp_path / "out", CASE_C, 0).exists()


def test_picai_checksum_mismatch_via_cli(server, picai_files, tmp_path):
    urls = serve_picai(server, picai_files, tmp_path, corrupt=picai.fold_archive_name(1))
    result = run_cli("picai", "--dest", str(tmp_path / "p"), *urls, "--folds", "1", "--no-progress", "--retries", "0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "was expected" in result.stderr
    assert not list((tmp_path / "p" / ".downloads").glob("*.zip*"))


def test_picai_dry_run_lists_sizes_and_fetches_nothing(server, picai_files, tmp_path, capsys):
    urls = serve_picai(server, picai_files, tmp_path)
    assert main(["picai", "--dest", str(tmp_path / "p"), *urls, "--folds", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    size = len(picai_files[1][picai.fold_archive_name(1)])
    assert picai.fold_archive_name(1) in out and format_bytes(size) in out
    assert f"pinned sha256:{sha256(picai_files[1][picai.fold_archive_name(1)])}" in out
    assert f"picai_labels-{picai.LABELS_COMMIT}.zip" in out
    assert [r.path for r in server.log] == [ZENODO]
    assert not (tmp_path / "p").exists()


@needs_sitk
def test_picai_record_without_the_fold_is_explained(server, tmp_path, capsys):
    server.add(ZENODO, json.dumps({"files": []}).encode())
    code = main(["picai", "--dest", str(tmp_path / "p"), "--record-url", server.url + ZENODO, "--folds", "3"])
    assert code == 1
    assert "does not list picai_public_images_fold3.zip" in words(capsys.readouterr().err)


# ----------------------------------------------------------------------------- MSD


@pytest.fixture(scope="module")
def msd_data():
    cases = msd_cases(np.random.default_rng(2))
    return cases, msd_tar(cases)


def serve_msd(server, tar: bytes, monkeypatch) -> str:
    # The real md5 pins the real archive; the test archive's md5 takes its place.
    monkeypatch.setattr(msd, "ARCHIVE_MD5", md5(tar))
    server.add(f"/msd/{msd.TASK}.tar", tar)
    return server.url + "/msd"


def test_msd_interrupted_then_rerun_converts_into_the_layout(server, msd_data, tmp_path, monkeypatch, capsys):
    cases, tar = msd_data
    base = serve_msd(server, tar, monkeypatch)
    dest = tmp_path / "msd"
    server.fail(f"/msd/{msd.TASK}.tar", "truncate")
    args = ["msd-brain", "--dest", str(dest), "--base-url", base, "--retries", "0", "--no-progress", "--max-cases", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "stopped after" in err and "resume" in err and "Traceback" not in err
    assert (dest / ".downloads" / f"{msd.TASK}.tar.part").exists()

    assert main(args) == 0
    assert "CC-BY-SA 4.0" in capsys.readouterr().out
    assert server.log[-1].status == 206
    assert list_cases(dest) == ["BRATS_001", "BRATS_002"]
    assert read_dataset_json(dest)["channel_names"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    for case in ("BRATS_001", "BRATS_002"):
        image, label, affine = cases[case]
        for c in range(4):
            data, written_affine = read_nifti(channel_path(dest, case, c))
            np.testing.assert_array_equal(data, image[..., c])
            np.testing.assert_allclose(written_affine, affine)
        mask, _ = read_nifti(label_path(dest, case))
        assert set(np.unique(mask)) <= {0, 1}
        assert mask.sum() == np.count_nonzero((label == 1) | (label == 2) | (label == 3))
    assert not (dest / ".downloads" / msd.TASK).exists()  # extracted copy removed

    # More cases on a re-run: only the missing one is converted, the download is reused.
    requests_before = len(server.log)
    assert main(args[:-1] + ["3"]) == 0
    assert list_cases(dest) == ["BRATS_001", "BRATS_002", "BRATS_003"] and len(server.log) == requests_before
    assert main(args[:-1] + ["3"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_msd_partial_file_longer_than_the_file_is_deleted_and_says_to_rerun(
    server, msd_data, tmp_path, monkeypatch, capsys
):
    base = serve_msd(server, msd_data[1], monkeypatch)
    dest = tmp_path / "msd"
    part = dest / ".downloads" / f"{msd.TASK}.tar.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(bytes(len(msd_data[1]) + 100))  # the server answers the resume with 416
    args = ["msd-brain", "--dest", str(dest), "--base-url", base, "--retries", "0", "--no-progress", "--max-cases", "1"]
    assert main(args) == 1
    message = words(capsys.readouterr().err)
    assert "was longer than the file on the server, so it was deleted: re-run the same command" in message
    assert "restarts" not in message  # with no retries left, nothing restarts by itself
    assert [r.status for r in server.log] == [416] and not part.exists()
    assert main(args) == 0 and list_cases(dest) == ["BRATS_001"]  # as the message says


def test_msd_http_error_via_cli(server, tmp_path):
    result = run_cli(
        "msd-brain",
        "--dest",
        str(tmp_path / "m"),
        "--base-url",
        server.url + "/missing",
        "--no-progress",
        "--retries",
        "0",
    )
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().split("\n\n")) == 1  # one paragraph


def test_msd_dry_run_reports_size(server, msd_data, tmp_path, monkeypatch, capsys):
    base = serve_msd(server, msd_data[1], monkeypatch)
    assert main(["msd-brain", "--dest", str(tmp_path / "m"), "--base-url", base, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert format_bytes(len(msd_data[1])) in out and "to download" in out
    assert [r.method for r in server.log] == ["HEAD"]


# ----------------------------------------------------------------------------- BraTS 2018


def test_brats2018_conversion(tmp_path):
    cases = brats_folder(tmp_path / "copy", np.random.default_rng(3))
    dest = tmp_path / "brats"
    assert brats.convert_brats2018(tmp_path / "copy", dest, progress=False) == dest
    assert list_cases(dest) == sorted(cases)
    info = read_dataset_json(dest)
    assert info["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert info["grades"]["Brats18_TCIA10_640_1"] == "LGG"
    for case, (channels, seg, affine) in cases.items():
        for index, modality in enumerate(BRATS_MODALITIES):
            data, written_affine = read_nifti(channel_path(dest, case, index))
            np.testing.assert_array_equal(data, channels[modality])
            np.testing.assert_allclose(written_affine, affine)
        mask, _ = read_nifti(label_path(dest, case))
        np.testing.assert_array_equal(mask, np.isin(seg, [1, 2, 4]))
    assert brats.convert_brats2018(tmp_path / "copy", dest, progress=False) is None  # complete: nothing to do


def test_brats2018_incomplete_copy_lists_missing_files(tmp_path, capsys):
    brats_folder(tmp_path, np.random.default_rng(4))
    case = tmp_path / "MICCAI_BraTS_2018_Data_Training" / "LGG" / "Brats18_TCIA10_640_1"
    missing = case / "Brats18_TCIA10_640_1_t1ce.nii.gz"
    missing.unlink()
    assert main(["brats2018", "--source", str(tmp_path), "--dest", str(tmp_path / "out")]) == 1
    err = words(capsys.readouterr().err)
    assert str(missing) in err and "1 expected file(s) are missing" in err
    assert not (tmp_path / "out").exists()


def test_brats2018_unknown_label_value_names_the_file(tmp_path):
    brats_folder(tmp_path, np.random.default_rng(5))
    seg_file = tmp_path / "MICCAI_BraTS_2018_Data_Training" / "HGG" / "Brats18_2013_2_1" / "Brats18_2013_2_1_seg.nii.gz"
    seg = nib.load(seg_file)
    data = np.asanyarray(seg.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, seg.affine), seg_file)
    with pytest.raises(DownloadError, match=r"Brats18_2013_2_1_seg\.nii\.gz holds the label values \[0, 1, 2, 3, 4\]"):
        brats.convert_brats2018(tmp_path, tmp_path / "out", progress=False)


def test_damaged_case_file_is_explained_without_traceback(tmp_path, capsys):
    brats_folder(tmp_path, np.random.default_rng(6))
    flair = tmp_path / "MICCAI_BraTS_2018_Data_Training" / "HGG" / "Brats18_2013_2_1" / "Brats18_2013_2_1_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:200])  # a truncated gzip stream
    assert main(["brats2018", "--source", str(tmp_path), "--dest", str(tmp_path / "out"), "--no-progress"]) == 1
    err = words(capsys.readouterr().err)
    assert "Brats18_2013_2_1 could not be read or converted" in err and "Traceback" not in err


def test_interrupted_reconversion_with_new_options_never_passes_old_cases(tmp_path, monkeypatch):
    brats_folder(tmp_path / "copy", np.random.default_rng(7))
    dest = tmp_path / "brats"
    brats.convert_brats2018(tmp_path / "copy", dest, progress=False)
    old_label = label_path(dest, "Brats18_2013_2_1").read_bytes()
    # A re-conversion with other parameters is interrupted after its first case...
    from data_download import _layout

    original, calls = _layout.write_case, []

    def interrupted(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(args[1])
        return original(*args, **kwargs)

    loaders = {
        case: (lambda folder=folder: brats.load_case(folder))
        for case, (_, folder) in brats.find_cases(tmp_path / "copy").items()
    }
    monkeypatch.setattr(_layout, "write_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _layout.write_cases(dest, loaders, params={"changed": True}, progress=False)
    # ...then the same command runs again: every case not rewritten must be converted anew.
    monkeypatch.setattr(_layout, "write_case", original)
    rewritten = _layout.write_cases(dest, loaders, params={"changed": True}, progress=False)
    assert rewritten == len(loaders) - 1
    assert label_path(dest, "Brats18_2013_2_1").read_bytes() == old_label  # same source, same bytes


def test_brats2018_wrong_folder_is_explained(tmp_path):
    with pytest.raises(DownloadError, match="needs registration"):
        brats.find_cases(tmp_path)


# ----------------------------------------------------------------------------- CLI


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["msd-brain"])
    assert info.value.code == 2


def test_synthetic_via_cli_matches_the_generator(tmp_path, capsys):
    from afl_core.synthetic import make_dataset

    args = [
        "synthetic",
        "--dest",
        str(tmp_path / "cli"),
        "--cases",
        "3",
        "--seed",
        "7",
        "--shape",
        "2",
        "32",
        "32",
        "--lesion-radius",
        "2",
        "4",
        "--spacing",
        "4",
        "0.5",
        "0.75",
        "--no-progress",
    ]
    assert main(args) == 0
    make_dataset(
        tmp_path / "api",
        3,
        seed=7,
        shape=(2, 32, 32),
        lesion_radius=(2.0, 4.0),
        spacing=(4.0, 0.5, 0.75),
        progress=False,
    )
    # (D, H, W) on the command line as in the API: the NIfTI zooms are stored (H, W, D).
    first = label_path(tmp_path / "cli", list_cases(tmp_path / "cli")[0])
    np.testing.assert_allclose(nib.load(first).header.get_zooms(), (0.5, 0.75, 4.0))
    assert list_cases(tmp_path / "cli") == list_cases(tmp_path / "api")
    for case in list_cases(tmp_path / "api"):
        assert label_path(tmp_path / "cli", case).read_bytes() == label_path(tmp_path / "api", case).read_bytes()
    capsys.readouterr()
    assert main(args) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(args[:4] + ["4"] + args[5:]) == 1  # other options over an existing dataset, without --force
    assert "--force" in words(capsys.readouterr().err)


def test_every_source_takes_the_common_command_line(tmp_path, capsys):
    # python -m data_download SOURCE --dest DIR [--base-url URL] (DESIGN.md), defaults elsewhere
    assert (
        main(
            [
                "synthetic",
                "--dest",
                str(tmp_path / "syn"),
                "--base-url",
                "http://127.0.0.1:9/unused",
                "--shape",
                "4",
                "32",
                "32",
                "--lesion-radius",
                "2",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(list_cases(tmp_path / "syn")) == 16


def test_images_whose_label_a_killed_run_never_wrote_are_removed_with_the_other_cases(tmp_path):
    from afl_core.synthetic import make_dataset
    from data_download._layout import remove_other_cases

    root = make_dataset(tmp_path / "data", 3, seed=0, shape=(4, 32, 32), lesion_radius=(2.0, 4.0), progress=False)
    cases = list_cases(root)
    channel_path(root, cases[0], 0).rename(channel_path(root, "ghost", 0))  # an image without its label
    label_path(root, cases[1]).unlink()  # a kept case whose label is still to come
    with pytest.raises(ValueError, match=r"without a label in labelsTr \(.*ghost"):
        list_cases(root)
    assert remove_other_cases(root, keep=set(cases)) == ["ghost"]
    assert not channel_path(root, "ghost", 0).exists() and channel_path(root, cases[1], 0).exists()
