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


# --------------------------------------------------------------------------- notebook parameters

KINDS = {"epochs": (int, None), "p_t": float, "quick": bool, "arms": (list, None), "reference": str}
LIMITS = dict(at_least={"epochs": 1}, between={"p_t": (0, 1)}, choices={"arms": ["focal", "afl"], "reference": ["afl"]})
GOOD = {"epochs": None, "p_t": 0.9, "quick": False, "arms": ["afl"], "reference": "afl"}


@pytest.mark.parametrize(
    "given",
    [GOOD, GOOD | {"epochs": 1}, GOOD | {"p_t": 0.5}, GOOD | {"arms": None}, GOOD | {"arms": ["focal", "afl"]}],
)
def test_accepted_parameters_pass(given):
    environment.check_parameters(given, KINDS, **LIMITS)


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        ("epochs", "abc", "an integer >= 1 or None"),
        ("epochs", 0, "an integer >= 1 or None"),
        ("epochs", 2.5, "an integer >= 1 or None"),
        ("epochs", True, "an integer >= 1 or None"),  # a bool is no count of epochs
        ("p_t", 1, "a number strictly between 0 and 1"),
        ("p_t", "0.9", "a number strictly between 0 and 1"),
        ("quick", 1, "True or False"),
        ("arms", ["focal", "bogus"], "a list of 'focal', 'afl' or None"),
        ("arms", "afl", "a list of 'focal', 'afl' or None"),
        ("reference", "bogus", "one of 'afl'"),
        ("reference", None, "one of 'afl'"),
    ],
)
def test_a_wrong_parameter_is_named_with_what_it_accepts(name, value, accepts):
    with pytest.raises(ValueError) as raised:
        environment.check_parameters(GOOD | {name: value}, KINDS, **LIMITS)
    message = str(raised.value)
    assert message == (
        f"parameter {name} = {value!r}: it accepts {accepts}; "
        f"set it in the parameters cell or with papermill's -p {name} VALUE"
    )


def test_every_wrong_parameter_is_reported_at_once():
    with pytest.raises(ValueError) as raised:
        environment.check_parameters(GOOD | {"epochs": 0, "reference": "x"}, KINDS, **LIMITS)
    lines = str(raised.value).splitlines()
    assert [line.split(" = ")[0] for line in lines] == ["parameter epochs", "parameter reference"]


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


@pytest.mark.parametrize("variable", ["BINDER_REPO_URL", "BINDER_LAUNCH_HOST"])
def test_a_binder_session_is_told_by_the_variables_binderhub_sets(monkeypatch, variable):
    for name in ("BINDER_REPO_URL", "BINDER_LAUNCH_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert not environment.on_binder()
    monkeypatch.setenv(variable, "https://mybinder.org/")
    assert environment.on_binder()
