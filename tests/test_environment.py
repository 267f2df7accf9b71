"""afl_core.environment.real_examples_dir: the real examples fetched with checksums where no clone holds them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from afl_core import environment
from data_download.remote import DownloadError
from tests._http_server import FileServer

REAL = Path(__file__).resolve().parent / "data" / "real-mri"


def test_the_recorded_checksums_are_those_of_the_files_in_the_repository():
    actual = {name: hashlib.sha256((REAL / name).read_bytes()).hexdigest() for name in environment.REAL_EXAMPLE_FILES}
    assert actual == environment.REAL_EXAMPLE_FILES


@pytest.fixture
def outside_a_clone(monkeypatch):
    monkeypatch.setattr(environment, "REAL_EXAMPLES_PATH", "no/such/folder")


def test_outside_a_clone_the_examples_are_downloaded_once_and_verified(tmp_path, outside_a_clone):
    with FileServer() as server:
        for name in environment.REAL_EXAMPLE_FILES:
            server.add(f"/real/{name}", (REAL / name).read_bytes())
        folder = environment.real_examples_dir(tmp_path / "cache", base_url=server.url + "/real/")
        assert folder == tmp_path / "cache"
        for name in environment.REAL_EXAMPLE_FILES:
            assert (folder / name).read_bytes() == (REAL / name).read_bytes()
        served = len(server.log)
        assert served == len(environment.REAL_EXAMPLE_FILES)
        environment.real_examples_dir(tmp_path / "cache", base_url=server.url + "/real/")
        assert len(server.log) == served  # present and verified: nothing fetched again


def test_a_file_that_is_not_the_recorded_one_is_refused(tmp_path, outside_a_clone):
    with FileServer() as server:
        for name in environment.REAL_EXAMPLE_FILES:
            server.add(f"/real/{name}", (REAL / name).read_bytes())
        server.add("/real/brain1_label.nii.gz", b"not the label")
        with pytest.raises(DownloadError, match="brain1_label.nii.gz"):
            environment.real_examples_dir(tmp_path / "cache", base_url=server.url + "/real")
    assert not (tmp_path / "cache" / "brain1_label.nii.gz").exists()


def test_the_device_is_described_by_its_name_and_memory(monkeypatch, capsys):
    """A GPU prints its name and memory (here a stand-in for torch.cuda's properties), a CPU its cores."""
    asked = []

    def properties(device):
        asked.append(device)
        return SimpleNamespace(name="NVIDIA Test GPU", total_memory=80 * 2**30)

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    assert environment.describe_device(torch.device("cuda", 1)) == "cuda:1 (NVIDIA Test GPU, 80.0 GiB)"
    assert asked == [torch.device("cuda", 1)]
    assert environment.describe_device(torch.device("cpu")) == f"cpu ({os.cpu_count()} cores)"
    environment.print_config(torch.device("cuda", 0))
    assert capsys.readouterr().out.splitlines()[-1] == "device: cuda:0 (NVIDIA Test GPU, 80.0 GiB)"
    environment.print_config(torch.device("cpu"))
    assert "device: cpu (" in capsys.readouterr().out
