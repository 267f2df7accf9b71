"""JupyterLab on a copy of the notebooks, and Debian's Chromium driven by Playwright.

These tests run with ``make test-browser`` (``AFL_BROWSER_TESTS=1``), which installs
Chromium and the pinned Playwright first; plain ``make test`` reports them skipped.
Playwright launches the system Chromium by path (``AFL_CHROMIUM``, default
``/usr/bin/chromium``): ``playwright install`` is never needed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("AFL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAB_START_SECONDS = 90


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    browser_items = [item for item in items if here in Path(item.fspath).parents]
    if not browser_items:
        return
    if os.environ.get("AFL_BROWSER_TESTS") != "1":
        skip = pytest.mark.skip(reason="browser tests run with `make test-browser` (AFL_BROWSER_TESTS=1)")
    elif not Path(CHROMIUM).is_file():
        skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM}: `make test-browser` installs it (apt-get)")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            skip = pytest.mark.skip(reason="Playwright is not installed: `make test-browser` installs it")
        else:
            return
    for item in browser_items:
        item.add_marker(skip)


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    notebooks: Path

    def notebook_url(self, name: str) -> str:
        # ?reset: start from an empty workspace, whatever an earlier session left open.
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"


def _parameterize(path: Path, parameters: dict) -> None:
    """Inject ``parameters`` after the cell tagged ``parameters``, as papermill does, for
    the names that cell defines."""
    import nbformat
    import papermill

    declared = set(papermill.inspect_notebook(str(path)))
    chosen = {name: value for name, value in parameters.items() if name in declared}
    if chosen:
        nb = papermill.parameterize.parameterize_notebook(papermill.iorw.load_notebook_node(str(path)), chosen)
        nbformat.write(nb, path)


# User settings of this Lab: start the notebook's own kernel without asking, every cell in the
# DOM (not only those in view), no news (nothing to fetch offline, no toast over the page).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def _write_settings(folder: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll the server's API (no browser yet, so no Playwright wait applies) until it answers."""
    deadline = time.monotonic() + LAB_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"JupyterLab did not answer within {LAB_START_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    """JupyterLab on 127.0.0.1 with a token, a copy of ``notebooks/`` and its own
    configuration, data, runtime, settings and workspace folders (nothing of the user's)."""
    root = tmp_path_factory.mktemp("lab")
    notebooks = root / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in notebooks.glob("[0-9][0-9]_*.ipynb"):
        _parameterize(path, {"quick": True})  # CI sizes, as `make tutorial NOTEBOOK_PARAMS="--quick"`
    _write_settings(root / "settings")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "AFL_DATA_DIR": str(root / "data"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    env.pop("AFL_STATIC_WIDGETS", None)  # the real widgets, not their static figures
    token, port = secrets.token_hex(16), _free_port()
    log = root / "lab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebooks}",
        "--LabApp.expose_app_in_browser=True",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=notebooks, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/api/status?token={token}", process, log)
        yield Lab(url, token, notebooks)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.failed_call = report.failed


@pytest.fixture
def page(browser, lab, request):
    """A fresh page whose console errors and uncaught exceptions are collected in ``page.errors``.
    When the test fails, a screenshot and the page's HTML are saved next to the Lab log."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Nothing leaves the machine: the notebooks' badges (Colab, Binder) get an empty answer
    # instead of a failed DNS lookup (which Chromium logs as an error), online or not.
    context.route(lambda url: not url.startswith(lab.url), lambda route: route.fulfill(status=204))
    page = context.new_page()
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(f"uncaught: {error}"))
    yield page
    if getattr(request.node, "failed_call", False):
        shot = lab.notebooks.parent / f"{request.node.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        shot.with_suffix(".html").write_text(page.content(), encoding="utf-8")
        print(f"screenshot and page: {shot}, .html; JupyterLab log: {lab.notebooks.parent / 'lab.log'}")
    context.close()
