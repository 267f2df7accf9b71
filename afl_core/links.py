"""Where the tutorial lives online: the one place Colab, Binder and install links come from.

Forked or moved the repository? Change ``REPO_URL`` (and ``BRANCH``) below, then rebuild
the badges with :func:`badges_markdown`; ``tests/test_notebooks.py`` checks that every
notebook's badges and Colab install cell agree with these settings.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlparse

__all__ = [
    "REPO_URL",
    "BRANCH",
    "NOTEBOOK_DIR",
    "colab_url",
    "binder_url",
    "badges_markdown",
    "raw_url",
]

# ---------------------------------------------------------------------------------------
# THE ONE SETTING TO CHANGE: the public GitHub repository (https, no trailing slash or .git)
REPO_URL = "https://github.com/afl-tutorial/afl-tutorial"
BRANCH = "main"
# ---------------------------------------------------------------------------------------

NOTEBOOK_DIR = "notebooks"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"


def _owner_repo() -> str:
    repo_url = REPO_URL  # read at call time, so a changed setting takes effect
    parsed = urlparse(repo_url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme != "https" or parsed.netloc != "github.com" or len(parts) != 2:
        raise ValueError(
            f"REPO_URL must look like https://github.com/<owner>/<repo>, got {repo_url!r}; "
            "Colab and Binder only open public GitHub repositories"
        )
    return "/".join(parts)


def _notebook_path(notebook: str) -> str:
    """``"00_setup.ipynb"`` or ``"notebooks/00_setup.ipynb"`` -> ``"notebooks/00_setup.ipynb"``."""
    path = PurePosixPath(notebook)
    if path.suffix != ".ipynb":
        raise ValueError(f"expected a .ipynb notebook name, got {notebook!r}")
    return str(PurePosixPath(NOTEBOOK_DIR) / path.name)


def colab_url(notebook: str) -> str:
    """``https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/notebooks/<nb>``."""
    return f"https://colab.research.google.com/github/{_owner_repo()}/blob/{BRANCH}/{_notebook_path(notebook)}"


def binder_url(notebook: str = "00_setup.ipynb") -> str:
    """mybinder.org launch link opening ``notebook`` in JupyterLab."""
    return f"https://mybinder.org/v2/gh/{_owner_repo()}/{BRANCH}?urlpath=lab/tree/{_notebook_path(notebook)}"


def raw_url(path: str) -> str:
    """Download link of a file in the repository (``raw.githubusercontent.com``)."""
    return f"https://raw.githubusercontent.com/{_owner_repo()}/{BRANCH}/{PurePosixPath(path)}"


def badges_markdown(notebook: str) -> str:
    """The two badges placed under each notebook's title."""
    return (
        f"[![Open In Colab]({COLAB_BADGE})]({colab_url(notebook)}) [![Binder]({BINDER_BADGE})]({binder_url(notebook)})"
    )
