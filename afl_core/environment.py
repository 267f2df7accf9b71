"""What the notebooks' setup cells call: versions and device, GPU-or-CPU defaults, the
data folder, numeric checks and the real example lesions, so that every notebook resolves
them the same way. (Device and seeding themselves: :func:`afl_core.models.resolve_device`,
:func:`afl_core.train.seed_everything`.)"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path
from typing import Any, Collection, Mapping, TypeVar

import numpy as np
import torch

from afl_core.models import resolve_device

__all__ = [
    "print_config",
    "describe_device",
    "choose",
    "data_root",
    "in_colab",
    "on_binder",
    "check_close",
    "check_parameters",
    "real_examples_dir",
    "REAL_EXAMPLE_FILES",
]

T = TypeVar("T")

_PACKAGES = (
    "torch",
    "torchvision",
    "segmentation_models_pytorch",
    "numpy",
    "scipy",
    "nibabel",
    "pandas",
    "matplotlib",
    "ipywidgets",
    "papermill",
)


def in_colab() -> bool:
    return "google.colab" in sys.modules


def on_binder() -> bool:
    """Whether this runs in a Binder session (mybinder.org: CPU only, a 2 GB memory limit);
    BinderHub starts the server with ``BINDER_REPO_URL`` and ``BINDER_LAUNCH_HOST`` set."""
    return "BINDER_REPO_URL" in os.environ or "BINDER_LAUNCH_HOST" in os.environ


def print_config(device: torch.device | None = None) -> None:
    """Print Python and the package versions on one line, then the compute device."""
    versions = []
    for name in _PACKAGES:
        try:
            versions.append(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
        except ImportError:
            versions.append(f"{name} not installed")
    print(f"python {platform.python_version()} ({platform.system()}) | " + ", ".join(versions))
    device = resolve_device("auto") if device is None else device
    note = "" if device.type == "cuda" else "; no GPU, so the notebooks pick small settings"
    print(f"device: {describe_device(device)}{note}")


def describe_device(device: torch.device) -> str:
    """The compute device in a few words: a GPU's name and memory, a CPU's core count.

    Args:
        device: as :func:`afl_core.models.resolve_device` returns it.

    Returns:
        e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB)"`` or ``"cpu (2 cores)"``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    return str(device)


def choose(value: T | None, *, gpu: T, cpu: T, quick: T | None = None, on_gpu: bool, is_quick: bool = False) -> T:
    """A parameter's effective value: the learner's own when given (not None), otherwise
    the CI value when ``is_quick``, otherwise the GPU or the CPU default."""
    if value is not None:
        return value
    if is_quick and quick is not None:
        return quick
    return gpu if on_gpu else cpu


def data_root(data_dir: str | os.PathLike | None = None, default: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$AFL_DATA_DIR``, else ``default``;
    without a default, the repository's ``data/`` (``../data`` from the notebook folder,
    the kernel's working directory) or ``/content/data`` on Colab, where the notebook
    runs outside any clone."""
    if default is None:
        default = "/content/data" if in_colab() else "../data"
    chosen: Any = data_dir or os.environ.get("AFL_DATA_DIR") or default
    return Path(chosen).expanduser().resolve()


def check_close(name: str, actual: Any, expected: Any, *, atol: float = 1e-6) -> None:
    """Compare two computations of the same quantity, print the largest absolute
    difference and raise ``AssertionError`` above ``atol``."""
    a = np.asarray(actual.detach().cpu() if hasattr(actual, "detach") else actual, dtype=np.float64)
    b = np.asarray(expected.detach().cpu() if hasattr(expected, "detach") else expected, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: shapes differ, {a.shape} vs {b.shape}")
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    verdict = "ok " if diff <= atol else "BAD"
    print(f"{verdict} {name:44s} max abs diff {diff:.1e} (tolerance {atol:.0e})")
    if diff > atol:
        raise AssertionError(f"{name}: max abs difference {diff:.3g} exceeds {atol:.0e}")


_KIND_NAMES = {bool: "True or False", int: "an integer", float: "a number", str: "a string", list: "a list"}


def _describe(kinds: tuple, at_least: float | None, between: tuple | None, choices: Collection | None) -> str:
    words = []
    for kind in kinds:
        if kind is None:
            continue
        word = _KIND_NAMES.get(kind, kind.__name__)
        if at_least is not None:
            word += f" >= {at_least}"
        if between is not None:
            word += f" strictly between {between[0]} and {between[1]}"
        words.append(word)
    if choices is not None:
        listed = ", ".join(repr(c) for c in choices if c is not None)
        words = [f"{words[0]} of {listed}" if words and words[0] == "a list" else f"one of {listed}"]
    if None in kinds or (choices is not None and None in choices):
        words.append("None")
    return " or ".join(words)


def _is_kind(value: Any, kind: type | None) -> bool:
    if kind is None:
        return value is None
    if isinstance(value, bool):  # True is an int to Python, not to a learner
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_parameters(
    values: Mapping[str, Any],
    kinds: Mapping[str, type | None | tuple],
    *,
    at_least: Mapping[str, float] | None = None,
    between: Mapping[str, tuple[float, float]] | None = None,
    choices: Mapping[str, Collection] | None = None,
) -> None:
    """Check a notebook's parameters (as papermill's ``-p`` may have set them) before any
    work, and name each one that is wrong with what it accepts.

    Args:
        values: the parameters by name (a notebook passes ``globals()``).
        kinds: name -> the accepted type, or a tuple of them; ``None`` in it accepts None.
            ``int`` refuses True/False; ``float`` accepts integers.
        at_least: name -> the smallest number accepted (inclusive).
        between: name -> ``(low, high)``: numbers strictly between them.
        choices: name -> the accepted values; for a list, the values its items may take.

    A parameter named ``device`` (every notebook that trains has one) must also name a device
    (:func:`afl_core.models.resolve_device`), whether or not ``kinds`` lists it.

    Raises:
        ValueError: one line per wrong parameter: its name, the value given, what it
            accepts, and how to set it.
    """
    problems = []
    for name, accepted in kinds.items():
        kinds_of = accepted if isinstance(accepted, tuple) else (accepted,)
        value = values[name]
        low = (at_least or {}).get(name)
        interval = (between or {}).get(name)
        allowed = (choices or {}).get(name)
        if value is None:
            good = None in kinds_of or (allowed is not None and None in allowed)
        elif not any(_is_kind(value, kind) for kind in kinds_of):
            good = False
        else:
            items = value if isinstance(value, list) else [value]
            good = (
                (low is None or value >= low)
                and (interval is None or interval[0] < value < interval[1])
                and (allowed is None or all(item in allowed for item in items))
            )
        if not good:
            problems.append(
                f"parameter {name} = {value!r}: it accepts {_describe(kinds_of, low, interval, allowed)}; "
                f"set it in the parameters cell or with papermill's -p {name} VALUE"
            )
    if isinstance(values.get("device"), str):
        try:
            resolve_device(values["device"], option="parameter device")
        except ValueError as error:
            problems.append(f"{error}; set it in the parameters cell or with papermill's -p device VALUE")
    if problems:
        raise ValueError("\n".join(problems))


# The two real MRI examples (pyradiomics' brain1 and breast1, BSD-3) and their licence: name -> sha256.
REAL_EXAMPLE_FILES = {
    "brain1_image.nii.gz": "d9236f05325d61524348ad6b1dce940f64e89f79852d10c3ddd450970ef8345b",
    "brain1_label.nii.gz": "421adc71d049db62ccc1076dd92f297ebc3a4bd7940b7eddc0c7b966cab6df03",
    "breast1_image.nii.gz": "c69bfd5ad98dfd100ea58a4803e35286f9533de35007a461793b85ffad6d790f",
    "breast1_label.nii.gz": "98907279e7eced28792b05264496041360899bc4dd0ef3da10f443d553abb280",
    "LICENSE-pyradiomics.txt": "5c1fc504fb0865a72a29e035b25ef3513e6d7e9c7169cb445eae855f03b006e2",
}
REAL_EXAMPLES_PATH = "tests/data/real-mri"


def real_examples_dir(
    cache: str | os.PathLike = "~/.cache/afl-tutorial/real-mri", *, base_url: str | None = None
) -> Path:
    """Folder holding the two real MRI examples (pyradiomics' brain1 and breast1, BSD-3).

    In a clone of the repository they are ``tests/data/real-mri``; where only the package
    is installed (Colab) they are downloaded once into ``cache`` from ``base_url`` (default:
    that folder of the repository on GitHub) with :func:`data_download.remote.fetch`, which
    retries, resumes and keeps a file only when its sha256 is the one in
    :data:`REAL_EXAMPLE_FILES` (else :class:`data_download.remote.DownloadError`).
    """
    in_repo = Path(__file__).resolve().parent.parent / REAL_EXAMPLES_PATH
    if all((in_repo / name).is_file() for name in REAL_EXAMPLE_FILES):
        return in_repo
    from afl_core.links import raw_url
    from data_download.remote import RemoteFile, fetch

    base = (base_url or raw_url(REAL_EXAMPLES_PATH)).rstrip("/")
    target = Path(cache).expanduser()
    for name, sha256 in REAL_EXAMPLE_FILES.items():
        fetch(RemoteFile(f"{base}/{name}", name, checksum=f"sha256:{sha256}"), target, progress=False)
    return target
