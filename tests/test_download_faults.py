"""data_download against bad inputs and hostile or broken sources (issue 11): option checks
before any transfer, downloads that are bounded and verified before they take their final
name, mirrors checked against Zenodo's record and the pinned sha256, MetaImage headers checked before SimpleITK,
archive bombs and malformed archives, and temporaries of a killed run. Faults a user meets
at the command line are run through ``python -m data_download`` in a subprocess: exit
status 1, one paragraph on stderr, no traceback, and the files left behind."""

from __future__ import annotations

import inspect
import io
import json
import re
import subprocess
import sys
import time
import zipfile
import zlib
from collections import namedtuple

import numpy as np
import pytest

from afl_core.data import list_cases, read_dataset_json
from data_download import archives, msd, picai, remote
from data_download.archives import UnsafeArchiveError, archive_problem, safe_extract
from data_download.cli import main
from data_download.metaimage import check_metaimage
from data_download.remote import ChecksumError, DownloadError, OptionError, PinnedChecksumError, RemoteFile, fetch

from ._download_fixtures import (
    CASE_A,
    CASE_B,
    HAVE_SITK,
    MATRIX_SIZE,
    brats_folder,
    metaimage,
    picai_archives,
    rezip,
    zenodo_record,
    zip_flagged_encrypted,
)
from ._http_server import HTML_PAGE, FileServer
from .test_download import LABELS, NET, REPO, ZENODO, md5, pins_file, run_cli, serve_picai, sha256, words


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def picai_files(tmp_path_factory):
    if not HAVE_SITK:
        pytest.skip("SimpleITK (the picai extra) is not installed")
    return picai_archives(tmp_path_factory.mktemp("picai-build"))


needs_sitk = pytest.mark.skipif(not HAVE_SITK, reason="SimpleITK (the picai extra) is not installed")
LABELS_ZIP_NAME = f"picai_labels-{picai.LABELS_COMMIT}.zip"


def failed_cleanly(result: subprocess.CompletedProcess, *phrases: str) -> str:
    """The one-paragraph error of a CLI run that must fail with status 1, on one line."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")
    assert "\n\n" not in result.stderr.strip()
    message = words(result.stderr)
    for phrase in phrases:
        assert phrase in message, message
    return message


def small_zip(entries: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


LABELS_LIKE = small_zip({f"top/file{i}.nii.gz": np.random.default_rng(i).bytes(40_000) for i in range(4)})


def unsized(server, data: bytes = LABELS_LIKE, name: str = "labels.zip", **options) -> RemoteFile:
    """A file published without checksum or size, as GitHub's picai_labels archive."""
    return RemoteFile(server.add(f"/files/{name}", data), name, None, None, **options)


# ----------------------------------------------------------------------------- options, before any transfer


def test_bad_retries_fail_before_any_transfer(server, tmp_path):
    dest = tmp_path / "d"
    result = run_cli("msd-brain", "--dest", str(dest), "--base-url", server.url, "--retries", "-1", "--no-progress")
    failed_cleanly(result, "--retries must be a whole number, 0 or more (e.g. --retries 2), not -1.")
    assert server.log == [] and not dest.exists()


@pytest.mark.parametrize("source", ["msd-brain", "picai"])
@pytest.mark.parametrize(
    "args, says",
    [
        (["--timeout", "-1"], "--timeout must be a finite number greater than 0, not -1.0."),
        (["--base-url", "notaurl"], "--base-url 'notaurl' is not a full address starting with http:// or https://"),
    ],
)
def test_bad_network_options_fail_before_any_transfer(server, tmp_path, capsys, source, args, says):
    dest = tmp_path / "d"
    record = ["--record-url", server.url + ZENODO] if source == "picai" else []
    assert main([source, "--dest", str(dest), *record, *args]) == 1
    assert says in words(capsys.readouterr().err)
    assert server.log == [] and not dest.exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--timeout", "nan"], "--timeout must be a finite number greater than 0, not nan."),
        (["--timeout", "inf"], "--timeout must be a finite number greater than 0, not inf."),
        (
            ["--record-url", "notaurl"],
            "--record-url 'notaurl' is not a full address starting with http:// or https:// or file://",
        ),
        (["--labels-base-url", "ftp://example.org"], "--labels-base-url 'ftp://example.org' is not a full address"),
        (["--labels-commit", "../../escape"], "--labels-commit '../../escape' is not a commit"),
        (
            ["--pinned-sha256", "/nonexistent/pins.txt"],
            "--pinned-sha256 /nonexistent/pins.txt: the file cannot be read",
        ),
    ],
)
def test_bad_picai_options_fail_before_any_transfer(server, tmp_path, capsys, args, says):
    dest = tmp_path / "d"
    assert main(["picai", "--dest", str(dest), "--record-url", server.url + ZENODO, *args, "--no-progress"]) == 1
    assert says in words(capsys.readouterr().err)
    assert server.log == [] and not dest.exists()


MAX_CASES_SAYS = "--max-cases must be a whole number greater than 0, not {}. Give how many cases to convert"


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
@pytest.mark.parametrize(
    "source, args, says",
    [
        ("msd-brain", ["--max-cases", "0"], MAX_CASES_SAYS.format(0)),
        ("msd-brain", ["--max-cases", "-1"], MAX_CASES_SAYS.format(-1)),
        ("brats2018", ["--max-cases", "-1"], MAX_CASES_SAYS.format(-1)),
        ("picai", ["--max-cases", "-1"], MAX_CASES_SAYS.format(-1)),
        ("picai", ["--spacing", "0", "0", "0"], "--spacing must be finite numbers greater than 0, not 0.0 0.0 0.0."),
        ("picai", ["--spacing", "nan", "1", "1"], "--spacing must be finite numbers greater than 0, not nan 1.0 1.0."),
        ("picai", ["--spacing", "inf", "1", "1"], "--spacing must be finite numbers greater than 0, not inf 1.0"),
        ("picai", ["--matrix-size", "0", "16", "16"], "--matrix-size must be whole numbers greater than 0, not 0 16"),
        ("picai", ["--matrix-size", "-4", "16", "16"], "--matrix-size must be whole numbers greater than 0, not -4"),
    ],
)
def test_bad_conversion_options_fail_before_any_transfer(server, tmp_path, capsys, source, args, says, dry_run):
    # --max-cases -1 once converted all cases but the last (a slice), --max-cases 0 and --matrix-size 0
    # failed or wrote empty volumes only after the whole download, --spacing 0 blamed the archive.
    dest = tmp_path / "d"
    where = {
        "msd-brain": ["--base-url", server.url, "--retries", "0"],
        "brats2018": ["--source", str(tmp_path / "copy")],  # a complete copy: only the option is wrong
        "picai": ["--base-url", server.url, "--record-url", server.url + ZENODO, "--no-pinned-checksums"],
    }[source]
    if source == "brats2018":
        brats_folder(tmp_path / "copy", np.random.default_rng(0))
    assert main([source, "--dest", str(dest), *where, *args, *dry_run, "--no-progress"]) == 1
    assert says in words(capsys.readouterr().err)
    assert server.log == [] and not dest.exists()


@pytest.mark.parametrize("source", ["synthetic", "msd-brain"])
def test_a_dest_that_is_a_file_is_refused_before_anything_else(server, tmp_path, capsys, source):
    dest = tmp_path / "notes.txt"
    dest.write_text("mine")
    args = ["--cases", "2", "--shape", "4", "16", "16"] if source == "synthetic" else ["--base-url", server.url]
    assert main([source, "--dest", str(dest), *args, "--no-progress"]) == 1
    assert f"--dest {dest} is a file; choose a folder" in words(capsys.readouterr().err)
    assert dest.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert server.log == []


def test_bad_options_are_value_errors_for_the_api(tmp_path):
    for options in (dict(retries=-1), dict(retries=1.5), dict(timeout=0), dict(timeout=float("nan"))):
        with pytest.raises(ValueError, match="must be"):
            fetch(RemoteFile("http://127.0.0.1:9/x", "x"), tmp_path, progress=False, **options)
    with pytest.raises(OptionError, match="not a web address"):
        fetch(RemoteFile("notaurl/x.zip", "x.zip"), tmp_path, progress=False, retries=0)
    with pytest.raises(ValueError, match="--spacing must be finite numbers greater than 0, not 1 0 1"):
        picai.plan_picai(spacing=(1, 0, 1), record_url="http://127.0.0.1:9/record")
    with pytest.raises(ValueError, match="--matrix-size must be whole numbers greater than 0, not 20.5 256 256"):
        picai.convert_picai(tmp_path, tmp_path, tmp_path / "d", matrix_size=(20.5, 256, 256))
    with pytest.raises(ValueError, match="--max-cases must be a whole number greater than 0, not 0"):
        msd.convert_msd(tmp_path, tmp_path / "d", max_cases=0)
    assert sorted(tmp_path.iterdir()) == []


def test_labels_dir_typo_is_found_before_downloading(server, tmp_path):
    dest = tmp_path / "d"
    result = run_cli(
        "picai",
        "--dest",
        str(dest),
        "--labels-dir",
        str(tmp_path / "picai_lables"),
        "--base-url",
        server.url + ZENODO,
        "--record-url",
        server.url + ZENODO,
        "--no-progress",
    )
    failed_cleanly(result, "is not a copy of the picai_labels repository", "--labels-dir")
    assert server.log == [] and not dest.exists()


def test_without_simpleitk_nothing_is_downloaded_and_the_extra_is_named(server, tmp_path):
    # import data_download leaves SimpleITK alone; None in sys.modules then makes "import
    # SimpleITK" fail, as on an install without the extra.
    code = (
        "import sys, data_download; assert 'SimpleITK' not in sys.modules, 'imported eagerly'; "
        "sys.modules['SimpleITK'] = None; from data_download.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    dest = tmp_path / "d"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "picai",
            "--dest",
            str(dest),
            "--base-url",
            server.url,
            "--record-url",
            server.url + ZENODO,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    failed_cleanly(result, "needs SimpleITK", "pip install 'afl-tutorial[picai]'")
    assert server.log == [] and not dest.exists()


# ----------------------------------------------------------------------------- the record and the mirror


@needs_sitk
def test_a_mirror_is_checked_against_zenodo_whatever_its_own_record_says(server, picai_files, tmp_path):
    _, folds, _ = picai_files
    name = picai.fold_archive_name(1)
    middle = len(folds[name]) // 2  # one byte changed: the size Zenodo lists still fits
    tampered = folds[name][:middle] + bytes([folds[name][middle] ^ 0xFF]) + folds[name][middle + 1 :]
    server.add(ZENODO, zenodo_record(folds, md5))  # the official record
    server.add("/mirror", zenodo_record({name: tampered}, md5))  # the mirror's own record vouches for its copy
    server.add(f"/mirror/files/{name}/content", tampered)
    dest = tmp_path / "d"
    result = run_cli(
        "picai",
        "--dest",
        str(dest),
        "--base-url",
        server.url + "/mirror",
        "--record-url",
        server.url + ZENODO,
        "--pinned-sha256",
        str(pins_file(tmp_path, folds)),
        "--folds",
        "1",
        "--retries",
        "0",
        "--no-progress",
    )
    failed_cleanly(result, f"md5 {md5(tampered)}", f"but {md5(folds[name])} was expected", "so it was deleted")
    assert [r.path for r in server.log] == [ZENODO, f"/mirror/files/{name}/content"]  # never /mirror itself
    assert sorted(p.name for p in (dest / ".downloads").iterdir()) == []


@needs_sitk
@pytest.mark.parametrize(
    "cached, pins",
    [(False, "given"), (True, "given"), (False, "default")],
    ids=["downloaded", "already-in-cache", "default-pins"],
)
def test_a_mirror_whose_record_vouches_for_its_altered_copy_is_refused_by_the_pin(
    server, picai_files, tmp_path, cached, pins
):
    _, folds, _ = picai_files
    name = picai.fold_archive_name(1)
    middle = len(folds[name]) // 2
    tampered = folds[name][:middle] + bytes([folds[name][middle] ^ 0xFF]) + folds[name][middle + 1 :]
    mirror = server.url + "/mirror"
    server.add("/mirror", zenodo_record({name: tampered}, md5))  # its md5 and size: the record agrees
    server.add(f"/mirror/files/{name}/content", tampered)
    dest = tmp_path / "d"
    cache = dest / ".downloads"
    if cached:  # left by an earlier run that trusted the mirror (--no-pinned-checksums)
        cache.mkdir(parents=True)
        (cache / name).write_bytes(tampered)
    pinned = sha256(folds[name]) if pins == "given" else picai.PINNED_SHA256[name]
    given = ["--pinned-sha256", str(pins_file(tmp_path, folds))] if pins == "given" else []
    result = run_cli(
        "picai",
        "--dest",
        str(dest),
        "--base-url",
        mirror,
        "--record-url",
        mirror,
        *given,
        "--folds",
        "1",
        "--retries",
        "0",
        "--no-progress",
    )
    failed_cleanly(
        result,
        f"The downloaded file {name} from {mirror}/files/{name}/content has the md5 and size that the record "
        f"at {mirror} lists, but its sha256 is {sha256(tampered)}, not {pinned} as pinned for it in this package, "
        "so it was deleted.",
        "download it from Zenodo itself by leaving --base-url and --record-url out",
        "--pinned-sha256 FILE",
        "--no-pinned-checksums (pinned_sha256=None)",
    )
    assert [r.path for r in server.log] == ["/mirror", f"/mirror/files/{name}/content"]
    assert list(cache.iterdir()) == []  # neither under its final name nor as a .part
    assert not (dest / "dataset.json").exists()


@needs_sitk
def test_the_pinned_sha256_is_refused_through_the_api_too(server, picai_files, tmp_path):
    _, folds, _ = picai_files
    name = picai.fold_archive_name(0)
    server.add(ZENODO, zenodo_record(folds, md5))
    server.add(f"{ZENODO}/files/{name}/content", folds[name])
    with pytest.raises(PinnedChecksumError) as info:
        picai.download_picai(
            tmp_path / "d",
            folds=[0],
            base_url=server.url + ZENODO,
            record_url=server.url + ZENODO,
            pinned_sha256={name: "ab" * 32},
            progress=False,
            **NET,
        )
    assert (info.value.expected, info.value.actual) == ("ab" * 32, sha256(folds[name]))
    assert list((tmp_path / "d" / ".downloads").iterdir()) == []


def test_the_pinned_sha256_cover_the_five_folds_and_are_on_by_default(tmp_path, monkeypatch):
    pins = picai.PINNED_SHA256
    assert set(pins) == {picai.fold_archive_name(fold) for fold in range(5)} and tuple(picai.FOLDS) == (0, 1, 2, 3, 4)
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in pins.values()) and len(set(pins.values())) == 5
    with pytest.raises(TypeError):
        pins[picai.fold_archive_name(0)] = "0" * 64  # read-only: no caller changes everybody's default
    for function in (picai.download_picai, picai.plan_picai, picai.image_archives):
        assert inspect.signature(function).parameters["pinned_sha256"].default is pins, function
    # The command line passes them unless told otherwise.
    seen = []
    monkeypatch.setattr(picai, "download_picai", lambda dest, **options: seen.append(options["pinned_sha256"]))
    own = pins_file(tmp_path, {picai.fold_archive_name(2): b"x"})
    for extra in ([], ["--no-pinned-checksums"], ["--pinned-sha256", str(own)]):
        assert main(["picai", "--dest", str(tmp_path / "d"), *extra]) == 0
    assert seen[0] is pins and seen[1] is None and seen[2] == {picai.fold_archive_name(2): sha256(b"x")}


@needs_sitk
def test_a_correct_archive_with_its_pin_is_used_and_its_sha256_recorded(server, picai_files, tmp_path):
    _, folds, _ = picai_files
    serve_picai(server, picai_files, tmp_path)
    name = picai.fold_archive_name(1)
    dest = tmp_path / "d"
    options = dict(
        folds=[1],
        base_url=server.url + ZENODO,
        record_url=server.url + ZENODO,
        labels_base_url=server.url + LABELS,
        matrix_size=MATRIX_SIZE,
        progress=False,
        **NET,
    )
    assert picai.download_picai(dest, pinned_sha256={name: sha256(folds[name])}, **options) == dest
    info = read_dataset_json(dest)
    assert info["image_archives_sha256"] == {name: sha256(folds[name])}
    assert info["image_archives_md5"] == {name: f"md5:{md5(folds[name])}"}
    assert (dest / ".downloads" / name).read_bytes() == folds[name] and list_cases(dest) == ["10001_1000001"]
    # Converted again: the archive in the cache is checked against the pin and used, not fetched again.
    before = len(server.log)
    assert picai.download_picai(dest, pinned_sha256={name: sha256(folds[name])}, force=True, **options) == dest
    assert [r.path for r in server.log[before:]] == [ZENODO]
    # Without a pin it is used as well, and dataset.json says that no sha256 was checked.
    assert picai.download_picai(dest, pinned_sha256=None, force=True, **options) == dest
    assert read_dataset_json(dest)["image_archives_sha256"] is None


def test_pins_that_lack_a_fold_or_cannot_be_read_fail_before_any_transfer(server, tmp_path, capsys):
    dest = tmp_path / "d"
    with pytest.raises(OptionError, match="have no sha256 for picai_public_images_fold2.zip"):
        picai.download_picai(
            dest, folds=[0, 2], pinned_sha256={picai.fold_archive_name(0): "ab" * 32}, record_url=server.url
        )
    with pytest.raises(OptionError, match="have 'abc', not a sha256 .64 hex digits., for picai_public_images_fold0"):
        picai.plan_picai(folds=[0], pinned_sha256={picai.fold_archive_name(0): "abc"}, record_url=server.url)
    bad = tmp_path / "pins.txt"
    bad.write_text(f"# pins\n\n{'AB' * 32} *dl/{picai.fold_archive_name(0)}\nabc  {picai.fold_archive_name(1)}\n")
    assert main(["picai", "--dest", str(dest), "--record-url", server.url, "--pinned-sha256", str(bad)]) == 1
    says = f"--pinned-sha256 {bad}, line 4: 'abc  {picai.fold_archive_name(1)}' is not '<sha256>  <file name>'"
    assert words(says) in words(capsys.readouterr().err)
    bad.write_text(f"{'AB' * 32} *dl/{picai.fold_archive_name(0)}\n")
    assert picai.read_pinned_sha256(bad) == {picai.fold_archive_name(0): "ab" * 32}
    with pytest.raises(SystemExit) as info:  # one or the other
        main(["picai", "--dest", str(dest), "--pinned-sha256", str(bad), "--no-pinned-checksums"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert server.log == [] and not dest.exists()


@needs_sitk
@pytest.mark.parametrize(
    "entry, says",
    [
        ({"size": "big"}, "the size 'big' is not a positive whole number of bytes"),
        ({"size": -5}, "the size -5 is not a positive whole number"),
        ({"size": True}, "the size True is not"),
        ({"size": 12.5}, "the size 12.5 is not"),
        ({"checksum": "crc32:1234abcd"}, "the checksum 'crc32:1234abcd' is not"),
        ({"checksum": "md5:not-hex"}, "the checksum 'md5:not-hex' is not"),
        ({"checksum": "md5:abc123"}, "the checksum 'md5:abc123' is not"),  # too short for md5
        ({"checksum": ["md5", "abc"]}, "the checksum ['md5', 'abc'] is not"),
    ],
)
def test_unreadable_record_entries_are_explained(server, tmp_path, capsys, entry, says):
    name = picai.fold_archive_name(0)
    record = {"files": [{"key": name, "size": 1000, "checksum": "md5:" + "0" * 32, **entry}]}
    server.add(ZENODO, json.dumps(record).encode())
    dest = tmp_path / "d"
    assert (
        main(
            [
                "picai",
                "--dest",
                str(dest),
                "--record-url",
                server.url + ZENODO,
                "--base-url",
                server.url,
                "--folds",
                "0",
                "--no-progress",
            ]
        )
        == 1
    )
    message = words(capsys.readouterr().err)
    assert f"lists {name}, but {says}" in message and "nothing was fetched" in message
    assert [r.path for r in server.log] == [ZENODO]


@needs_sitk
@pytest.mark.parametrize(
    "record, says",
    [
        ({"files": None}, '"files" is null'),
        ({}, '"files" is null'),
        ({"files": "x"}, '"files" is "x"'),
        ({"files": [1]}, '"files" is [1]'),
        ({"files": {"entries": None}}, '"files" is null'),
    ],
)
def test_a_record_without_a_list_of_files_is_explained(server, tmp_path, capsys, record, says):
    server.add(ZENODO, json.dumps(record).encode())
    dest = tmp_path / "d"
    args = ["picai", "--dest", str(dest), "--record-url", server.url + ZENODO, "--base-url", server.url]
    assert main([*args, "--folds", "0", "--no-progress"]) == 1
    message = words(capsys.readouterr().err)
    assert f"has no list of files (its {says}, not a list of objects" in message and "nothing was fetched" in message
    assert [r.path for r in server.log] == [ZENODO] and not dest.exists()


@pytest.mark.parametrize("size", [5000, 5000.0, "5000"])
def test_record_sizes_of_every_api_version_are_read(server, size):
    name = picai.fold_archive_name(3)
    record = {"files": [{"filename": name, "filesize": size, "checksum": "ab" * 16}]}
    server.add(ZENODO, json.dumps(record).encode())
    (remote_file,) = picai.image_archives([3], base_url=server.url, record_url=server.url + ZENODO, **NET)
    assert (remote_file.size, remote_file.checksum) == (5000, "md5:" + "ab" * 16)
    assert remote_file.pinned == f"sha256:{picai.PINNED_SHA256[name]}"
    assert remote_file.url == f"{server.url}/files/{name}/content"


def test_unreachable_record_names_record_url(tmp_path, capsys):
    assert (
        main(
            [
                "picai",
                "--dest",
                str(tmp_path / "d"),
                "--record-url",
                f"file://{tmp_path}/missing.json",
                "--dry-run",
                "--retries",
                "0",
            ]
        )
        == 1
    )
    assert "--record-url file:///path/to/record.json" in words(capsys.readouterr().err)


# ----------------------------------------------------------------------------- unsized downloads


def test_unsized_download_cut_short_is_never_renamed(server, tmp_path):
    labels = unsized(server)
    server.fail("/files/labels.zip", "unsized-truncate")
    with pytest.raises(DownloadError, match="is not a zip or tar archive, so it was deleted"):
        fetch(labels, tmp_path, progress=False, verify=archive_problem, **NET)
    assert list(tmp_path.iterdir()) == []
    # With a retry the next, whole transfer is verified and kept.
    server.fail("/files/labels.zip", "unsized-truncate", "unsized")
    path = fetch(labels, tmp_path, progress=False, verify=archive_problem, retries=1, retry_wait=0.0)
    assert path.read_bytes() == LABELS_LIKE and sorted(p.name for p in tmp_path.iterdir()) == ["labels.zip"]


def test_damaged_file_under_its_final_name_is_fetched_again(server, tmp_path):
    labels = unsized(server)
    (tmp_path / "labels.zip").write_bytes(LABELS_LIKE[: len(LABELS_LIKE) // 2])  # an unchecked older download
    assert fetch(labels, tmp_path, progress=False, verify=archive_problem, **NET).read_bytes() == LABELS_LIKE
    assert len(server.log) == 1


@pytest.mark.parametrize("fault", ["html", "html-as-binary"])
def test_a_web_page_answered_with_200_is_refused(server, tmp_path, fault):
    server.fail("/files/labels.zip", fault)
    with pytest.raises(DownloadError, match="with a web page") as info:
        fetch(unsized(server), tmp_path, progress=False, verify=archive_problem, **NET)
    assert "Nothing was kept" in str(info.value) and list(tmp_path.iterdir()) == []
    # The same holds for a file with a checksum: no 7 GB of HTML is ever compared.
    server.fail("/files/blob.bin", fault)
    blob = RemoteFile(
        server.add("/files/blob.bin", LABELS_LIKE), "blob.bin", f"md5:{md5(LABELS_LIKE)}", len(LABELS_LIKE)
    )
    with pytest.raises(DownloadError, match="with a web page"):
        fetch(blob, tmp_path, progress=False, **NET)
    assert list(tmp_path.iterdir()) == []


def test_an_endless_body_stops_at_the_ceiling(server, tmp_path):
    server.fail("/files/labels.zip", "endless")
    started = time.monotonic()
    with pytest.raises(DownloadError, match="or more for labels.zip") as info:
        fetch(unsized(server, max_bytes=2 << 20), tmp_path, progress=False, **NET)
    assert "no more than 2.0 MiB is accepted" in words(str(info.value))
    assert list(tmp_path.iterdir()) == [] and time.monotonic() - started < 10


def test_more_bytes_than_the_known_size_are_refused(server, tmp_path):
    blob = RemoteFile(server.add("/files/blob.bin", LABELS_LIKE), "blob.bin", None, len(LABELS_LIKE) - 10)
    with pytest.raises(DownloadError, match="but the file is"):
        fetch(blob, tmp_path, progress=False, **NET)
    assert list(tmp_path.iterdir()) == []


def test_a_trickle_ends_with_a_clear_error(server, tmp_path):
    server.fail("/files/labels.zip", "trickle")
    started = time.monotonic()
    with pytest.raises(DownloadError, match="below the minimum of 1.0 KiB/s") as info:
        fetch(unsized(server), tmp_path, progress=False, verify=archive_problem, retries=0, timeout=0.4)
    assert time.monotonic() - started < 5
    assert "partial file is kept" in str(info.value)  # resumable, verified when complete
    assert [p.name for p in tmp_path.iterdir()] == ["labels.zip.part"]


def test_free_space_is_checked_while_streaming(server, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    calls = []

    def disk_usage(path):  # plenty at the start, then the disk fills up
        calls.append(path)
        return usage(10**12, 0, 10**12 if len(calls) == 1 else 1000)

    monkeypatch.setattr(remote.shutil, "disk_usage", disk_usage)
    monkeypatch.setattr(remote, "SPACE_CHECK_BYTES", 64 << 10)
    monkeypatch.setattr(remote, "CHUNK_BYTES", 16 << 10)
    server.fail("/files/labels.zip", "unsized")
    with pytest.raises(DownloadError, match="Not enough free disk space for downloading labels.zip"):
        fetch(unsized(server), tmp_path, progress=False, verify=archive_problem, **NET)
    assert len(calls) == 2 and not (tmp_path / "labels.zip").exists()
    assert 64 << 10 <= (tmp_path / "labels.zip.part").stat().st_size < len(LABELS_LIKE)


@pytest.mark.parametrize("checksum", [None, "md5"])
def test_garbage_part_resumed_with_206_gives_a_verified_file(server, tmp_path, checksum):
    blob = (
        unsized(server)
        if checksum is None
        else RemoteFile(
            server.add("/files/labels.zip", LABELS_LIKE), "labels.zip", f"md5:{md5(LABELS_LIKE)}", len(LABELS_LIKE)
        )
    )
    part = tmp_path / "labels.zip.part"
    part.write_bytes(b"garbage from another file" * 100)
    path = fetch(blob, tmp_path, progress=False, verify=archive_problem, retries=1, retry_wait=0.0)
    assert path.read_bytes() == LABELS_LIKE and not part.exists()
    ranges = [(r.range, r.status) for r in server.requests("/files/labels.zip")]
    assert ranges == [("bytes=2500-", 206), (None, 200)]
    # Without retries left the garbage is deleted, so the next run starts clean.
    path.unlink()
    part.write_bytes(b"garbage from another file" * 100)
    with pytest.raises(DownloadError, match="starts again from the beginning") as info:
        fetch(blob, tmp_path, progress=False, verify=archive_problem, retries=0)
    assert not isinstance(info.value, ChecksumError) and list(tmp_path.iterdir()) == []
    assert fetch(blob, tmp_path, progress=False, verify=archive_problem, retries=0).read_bytes() == LABELS_LIKE


@needs_sitk
def test_labels_served_as_a_web_page_via_cli(server, picai_files, tmp_path, capsys):
    urls = serve_picai(server, picai_files, tmp_path)
    server.fail(f"{LABELS}/{picai.LABELS_COMMIT}.zip", "html")
    dest = tmp_path / "d"
    assert main(["picai", "--dest", str(dest), *urls, "--folds", "1", "--no-progress"]) == 1
    message = words(capsys.readouterr().err)
    assert "with a web page (HTML) instead of the file " + LABELS_ZIP_NAME in message and "--base-url" in message
    assert sorted(p.name for p in (dest / ".downloads").iterdir()) == [picai.fold_archive_name(1)]


# ----------------------------------------------------------------------------- MetaImage headers


@needs_sitk
def test_simpleitk_follows_an_outside_data_file_so_the_check_matters(tmp_path):
    import SimpleITK as sitk

    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(24)))
    scan = tmp_path / "scan_adc.mha"
    scan.write_bytes(
        metaimage(
            {
                "ObjectType": "Image",
                "NDims": "3",
                "DimSize": "2 3 4",
                "ElementType": "MET_UCHAR",
                "ElementDataFile": str(secret),
            }
        )
    )
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(scan))).ravel().tolist() == list(range(24))
    with pytest.raises(DownloadError, match=f"names another file for the voxel data .ElementDataFile = {secret}"):
        check_metaimage(scan)


@needs_sitk
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("shape, vector", [((5, 26, 30), False), ((4, 300, 300), False), ((3, 4, 5, 2), True)])
def test_files_simpleitk_writes_pass_the_check(tmp_path, compress, shape, vector):
    import SimpleITK as sitk

    array = np.random.default_rng(0).integers(0, 9, shape).astype(np.int16 if vector else np.float32)
    path = tmp_path / "scan.mha"
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(path), useCompression=compress)
    check_metaimage(path)


BASE = {"ObjectType": "Image", "NDims": "3", "DimSize": "4 3 2", "ElementType": "MET_SHORT"}
VOXELS = bytes(48)  # 4 * 3 * 2 voxels of 2 bytes


@pytest.mark.parametrize(
    "fields, data, says",
    [
        ({"ElementDataFile": "../outside.raw"}, b"", "ElementDataFile = ../outside.raw"),
        ({"ElementDataFile": "/dev/zero"}, b"", "ElementDataFile = /dev/zero"),
        ({"ElementDataFile": "LIST"}, b"", "ElementDataFile = LIST"),
        ({"DimSize": "100000 100000 1000", "ElementDataFile": "LOCAL"}, VOXELS, "claims 18.2 TiB of voxels"),
        ({"ElementDataFile": "LOCAL"}, VOXELS[:-1], "claims 48 bytes of voxels, but 47 follow it"),
        ({"ElementDataFile": "LOCAL"}, VOXELS + b"x", "but 49 follow it"),
        ({"ElementType": "MET_STRING", "ElementDataFile": "LOCAL"}, VOXELS, "does not describe an image"),
        ({"DimSize": "4 3", "ElementDataFile": "LOCAL"}, VOXELS, "does not describe an image"),
        ({"DimSize": "4 -3 2", "ElementDataFile": "LOCAL"}, VOXELS, "does not describe an image"),
        ({"DimSize": "4 x 2", "ElementDataFile": "LOCAL"}, VOXELS, "is not a list of whole numbers"),
        ({"BinaryData": "False", "ElementDataFile": "LOCAL"}, VOXELS, "BinaryData = False"),
        ({"HeaderSize": "-1", "ElementDataFile": "LOCAL"}, VOXELS, "HeaderSize = -1"),
        ({"CompressedData": "True", "ElementDataFile": "LOCAL"}, zlib.compress(bytes(47)), "inflates to 47"),
        (
            {"CompressedData": "True", "ElementDataFile": "LOCAL"},
            zlib.compress(bytes(10**6)),
            "inflates to more than 48",
        ),
        ({"CompressedData": "True", "ElementDataFile": "LOCAL"}, zlib.compress(VOXELS)[:-6], "damaged or cut short"),
        (
            {"CompressedData": "True", "CompressedDataSize": "5", "ElementDataFile": "LOCAL"},
            zlib.compress(VOXELS),
            "claims 5 bytes of compressed voxels",
        ),
        ({}, VOXELS, "no MetaImage header ending in an ElementDataFile line"),
    ],
)
def test_metaimage_headers_that_are_refused(tmp_path, fields, data, says):
    path = tmp_path / "10000_1000000_t2w.mha"
    path.write_bytes(metaimage({**BASE, **fields}, data))
    with pytest.raises(DownloadError, match="was not read") as info:
        check_metaimage(path)
    assert says in words(str(info.value)) and str(path) in str(info.value)


def test_metaimage_header_written_by_hand_passes(tmp_path):
    path = tmp_path / "scan.mha"
    path.write_bytes(metaimage({**BASE, "ElementDataFile": "LOCAL"}, VOXELS))
    check_metaimage(path)
    path.write_bytes(metaimage({**BASE, "CompressedData": "True", "ElementDataFile": "LOCAL"}, zlib.compress(VOXELS)))
    check_metaimage(path)


@needs_sitk
def test_picai_scan_reading_an_outside_file_via_cli(server, picai_files, tmp_path):
    cases, folds, labels = picai_files
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"S" * 28 * 28 * 6 * 4)
    patient = CASE_A.split("_")[0]
    name = picai.fold_archive_name(0)
    evil = rezip(
        folds[name],
        {
            f"{patient}/{CASE_A}_adc.mha": metaimage(
                {
                    "ObjectType": "Image",
                    "NDims": "3",
                    "DimSize": "28 28 6",
                    "ElementType": "MET_FLOAT",
                    "ElementDataFile": str(secret),
                }
            )
        },
    )
    urls = serve_picai(server, (cases, {**folds, name: evil}, labels), tmp_path)
    dest = tmp_path / "d"
    shape = [str(n) for n in MATRIX_SIZE]
    result = run_cli("picai", "--dest", str(dest), *urls, "--folds", "0", "--matrix-size", *shape, "--no-progress")
    failed_cleanly(result, f"{CASE_A}_adc.mha was not read", f"ElementDataFile = {secret}")
    assert not list(dest.glob("labelsTr/*")) and not list(dest.glob("imagesTr/*"))  # no case written
    assert not any(b"SSSS" in p.read_bytes() for p in dest.rglob("*") if p.is_file() and p.suffix != ".zip")


@needs_sitk
def test_a_fold_without_an_adc_scan_names_the_missing_file_via_cli(server, picai_files, tmp_path):
    cases, folds, labels = picai_files
    name = picai.fold_archive_name(1)  # case B only
    with zipfile.ZipFile(io.BytesIO(folds[name])) as zf:
        without_adc = small_zip({n: zf.read(n) for n in zf.namelist() if not n.endswith(f"{CASE_B}_adc.mha")})
    urls = serve_picai(server, (cases, {**folds, name: without_adc}, labels), tmp_path)
    dest = tmp_path / "d"
    result = run_cli("picai", "--dest", str(dest), *urls, "--folds", "1", "--no-progress")
    message = failed_cleanly(result, f"has all three scans (T2W, ADC, HBV): {CASE_B}_adc.mha is missing")
    assert "No PI-CAI scans" not in message  # its T2W is there
    assert not list(dest.glob("labelsTr/*")) and not list(dest.glob("imagesTr/*"))


# ----------------------------------------------------------------------------- archives


def test_expansion_is_capped_in_total_and_by_ratio(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(small_zip({"a/x.bin": bytes(300_000), "a/y.bin": bytes(300_000)}, zipfile.ZIP_DEFLATED))
    with pytest.raises(UnsafeArchiveError, match="would expand to 585.9 KiB, more than the 500.0 KiB allowed"):
        safe_extract(archive, tmp_path / "out", progress=False, max_bytes=500 << 10)
    with pytest.raises(UnsafeArchiveError, match="more than 100 times its size"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(archives, "RATIO_EXEMPT_BYTES", 0)
            safe_extract(archive, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]
    # Within the caps (or below the exemption) it is extracted.
    assert (safe_extract(archive, tmp_path / "out", progress=False) / "a" / "x.bin").stat().st_size == 300_000


@needs_sitk
def test_a_zip_bomb_in_a_fold_via_cli(server, picai_files, tmp_path):
    cases, folds, labels = picai_files
    name = picai.fold_archive_name(1)
    bomb = small_zip({"10001/10001_1000001_t2w.mha": bytes(100 << 20)}, zipfile.ZIP_DEFLATED)
    urls = serve_picai(server, (cases, {**folds, name: bomb}, labels), tmp_path)
    dest = tmp_path / "d"
    result = run_cli("picai", "--dest", str(dest), *urls, "--folds", "1", "--no-progress")
    failed_cleanly(result, "would expand to 100.0 MiB", "decompression bomb")
    images = dest / ".downloads" / "images"
    assert not images.exists() or list(images.iterdir()) == []  # not a byte of the fold was extracted
    assert not list(dest.rglob(".tmp-extract-*")) and not list(dest.glob("labelsTr/*"))


def test_encrypted_zip_is_explained(tmp_path):
    archive = tmp_path / "e.zip"
    archive.write_bytes(zip_flagged_encrypted(small_zip({"a/x.txt": b"secret"})))
    with pytest.raises(DownloadError, match="is encrypted .password-protected. at 'a/x.txt'"):
        safe_extract(archive, tmp_path / "out", progress=False)
    assert archive_problem(archive) == "is an encrypted (password-protected) zip archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.zip"]


@pytest.mark.parametrize(
    "entries, says",
    [
        ({".": b"x"}, "a file named '.', which names the extraction folder itself"),
        ({"a": b"1", "a/b": b"2"}, "'a' is a file, but 'a/b' needs a folder of that name"),
        ({"a/b/c": b"1", "a/b": b"2"}, "'a/b' is a file, but 'a/b/c' needs a folder"),
        ({"x/y": b"1", "x/./y": b"2"}, "both 'x/y' and 'x/./y' are the file 'x/y'"),
    ],
)
def test_members_that_cannot_be_files_are_explained(tmp_path, entries, says):
    archive = tmp_path / "m.zip"
    archive.write_bytes(small_zip(entries))
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, tmp_path / "out", progress=False)
    assert says in words(str(info.value)) and "Nothing was extracted" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip"]


def test_archive_problem_reads_every_member(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(LABELS_LIKE)
    assert archive_problem(good) is None
    damaged = bytearray(LABELS_LIKE)
    damaged[200] ^= 0xFF
    (tmp_path / "bad.zip").write_bytes(bytes(damaged))
    assert "fails its CRC check" in archive_problem(tmp_path / "bad.zip")
    (tmp_path / "page.zip").write_bytes(HTML_PAGE)
    assert archive_problem(tmp_path / "page.zip") == "is not a zip or tar archive"


# ----------------------------------------------------------------------------- temporaries of a killed run


@needs_sitk
def test_temporaries_of_a_killed_run_are_removed_on_the_next_start(server, picai_files, tmp_path):
    urls = serve_picai(server, picai_files, tmp_path)
    dest = tmp_path / "d"
    args = [
        "picai",
        "--dest",
        str(dest),
        *urls,
        "--folds",
        "1",
        "--matrix-size",
        *map(str, MATRIX_SIZE),
        "--no-progress",
    ]
    assert main(args) == 0
    cache = dest / ".downloads"
    stale = [
        cache / ".tmp-extract-0123abcd-picai_labels-x",
        cache / "images" / ".tmp-extract-4567cdef-fold1",
        dest / "imagesTr" / ".tmp-0123456789ab-x_0000.nii.gz",
        dest / "labelsTr" / ".tmp-ba9876543210-x.nii.gz",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith(".tmp-extract-"):
            (path / "scan").mkdir(parents=True)
            (path / "scan" / "big.mha").write_bytes(bytes(1000))
        else:
            path.write_bytes(b"half a case")
    # A complete dataset is not converted again, yet the extraction leftovers go ...
    assert main(args) == 0
    assert not stale[0].exists() and not stale[1].exists()
    # ... and a conversion removes the writers' leftovers among the cases.
    assert main([*args, "--force"]) == 0
    assert not any(path.exists() for path in stale)
    assert list_cases(dest) == ["10001_1000001"]


def test_a_saved_record_can_stand_in_for_zenodo(server, tmp_path, capsys):
    name = picai.fold_archive_name(2)
    record = tmp_path / "record-6624726.json"
    record.write_bytes(zenodo_record({name: b"x" * 5000}, md5))
    assert (
        main(
            [
                "picai",
                "--dest",
                str(tmp_path / "d"),
                "--record-url",
                record.as_uri(),
                "--base-url",
                server.url,
                "--folds",
                "2",
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"{name}  4.9 KiB" in out and f"md5:{md5(b'x' * 5000)}" in out and server.log == []
