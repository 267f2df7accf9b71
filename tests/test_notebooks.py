"""The tutorial notebooks: their skeleton, their launch links, the environment files, the
runner, and (the slow part) their execution in order plus nbval on the committed outputs.

Set ``AFL_SKIP_NOTEBOOK_RUN=1`` to skip the two executing tests during quick local work.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from afl_core import links
from afl_core.environment import REAL_EXAMPLE_FILES, check_close, choose, data_root, real_examples_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SANITIZE = NOTEBOOKS / "nbval_sanitize.cfg"
# Notebooks committed WITH outputs, regression-checked by nbval (deterministic cells only).
NBVAL_CHECKED = ("02_focal_loss.ipynb", "03_adaptive_focusing.ipynb")
EXPECTED = (
    "00_setup",
    "01_data",
    "02_focal_loss",
    "03_adaptive_focusing",
    "04_training",
    "05_evaluation",
    "06_ablation",
    "07_your_data",
)
COMMON_PARAMETERS = {"quick", "seed"}
CHECK_TAG, IGNORE_TAG = "nbval-check-output", "nbval-ignore-output"
# Issue 8: at least two exercises, each with a self-checking solution, in each of these notebooks.
MIN_EXERCISES = dict.fromkeys(EXPECTED[2:], 2)  # 02-06
EXERCISE = re.compile(r"(?:#+ Exercise (\d+): \S|\*\*Exercise (\d+)\.\*\*)")  # a heading or a bold lead
SELF_CHECK = re.compile(r"^\s*assert\b|check_close\(|np\.testing\.assert_", re.M)
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's "  40%|####      | 4/10"
SKIP_RUN = pytest.mark.skipif(os.environ.get("AFL_SKIP_NOTEBOOK_RUN") == "1", reason="AFL_SKIP_NOTEBOOK_RUN=1")


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_tutorial", REPO / "tools" / "run_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
NOTEBOOK_PATHS = runner.tutorial_notebooks(NOTEBOOKS)


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _tagged(cell, tag: str) -> bool:
    return tag in cell.metadata.get("tags", [])


# --------------------------------------------------------------------------- skeleton


def test_the_notebooks_in_teaching_order():
    assert tuple(p.stem for p in NOTEBOOK_PATHS) == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_notebook_skeleton(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "first cell: the title"
    assert links.badges_markdown(path.name) in first.source, "badges must come from afl_core.links"
    assert "What you will learn" in first.source

    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert "## Setup environment" in headings and "## Setup imports" in headings and "## Summary" in headings

    # The first code cell installs the package on Colab only, from the repository and branch of afl_core.links
    # (no extras: Colab brings Jupyter and ipywidgets, and reinstalling them there can break its runtime).
    install = _code(nb)[0].source.splitlines()
    colab_only = "# Colab only: Binder and local installs already have the package"
    guard = install.index(f'if "google.colab" in sys.modules:  {colab_only}')
    assert install[guard + 1] == f'    %pip install -q "afl-tutorial @ git+{links.REPO_URL}.git@{links.BRANCH}"'
    assert sum("%pip" in c.source or "!pip" in c.source for c in _code(nb)) == 1

    # All imports in the imports cell (the second code cell), which prints the config.
    imports = _code(nb)[1].source
    assert imports.rstrip().endswith("print_config()")
    for cell in _code(nb)[2:]:
        imports_here = re.search(r"^(import|from) \S+", cell.source, flags=re.M)
        assert not imports_here, f"import outside the imports cell: {cell.source[:80]}"

    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    names = {t.id for node in ast.parse(tagged[0].source).body for t in node.targets}
    assert COMMON_PARAMETERS <= names
    assert set(runner.declared_parameters(path)) == names  # papermill sees every parameter
    assert [c for c in nb.cells if "summary" in c.metadata.get("tags", [])], "a cell tagged summary"


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_outputs_only_where_nbval_compares_them(path):
    nb = _read(path)
    outputs = [o for c in _code(nb) for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if path.name in NBVAL_CHECKED:
        # Only the cells nbval compares keep their outputs, from one run top to bottom.
        checked = [c for c in _code(nb) if _tagged(c, CHECK_TAG)]
        assert checked and all(c.outputs for c in checked)
        counts = [c.execution_count for c in checked]
        assert counts == sorted(counts) and len(set(counts)) == len(counts) and counts[0] > 2
        assert all(not c.outputs and c.execution_count is None for c in _code(nb) if c not in checked)
        assert path.stat().st_size < 1_000_000
        assert "injected-parameters" not in str([c.metadata for c in nb.cells])
    else:
        assert outputs == [] and all(c.execution_count is None for c in _code(nb))


def test_widget_cells_are_not_compared():
    for path in NOTEBOOK_PATHS:
        for cell in _code(_read(path)):
            if "slice_viewer(" in cell.source or "adaptive_explorer(" in cell.source:
                if not cell.source.startswith("from ") and "import" not in cell.source:
                    assert _tagged(cell, IGNORE_TAG) and not _tagged(cell, CHECK_TAG), cell.source


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_nbval_markers_are_tags_not_comments(path):
    """A learner reads the cells: nbval's markers live in the cell tags, which nbval reads too."""
    for cell in _read(path).cells:
        assert "NBVAL_" not in cell.source, f"use the tag nbval-check-output / nbval-ignore-output: {cell.source[:80]}"
        assert not (_tagged(cell, CHECK_TAG) and _tagged(cell, IGNORE_TAG)), cell.source[:80]


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_exercises_have_collapsed_self_checking_solutions(path):
    """Each exercise (a line "### Exercise N: title" or "**Exercise N.** ...") is followed, before
    the next one, by one collapsed code cell (its solution) that asserts its answer, so executing
    the notebook checks it; nbval does not store its output, which would give the answer away."""
    exercises = []
    for cell in _read(path).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if re.match(r"(#+ |\*\*)Exercise \d", line):
                    found = EXERCISE.match(line)
                    assert found, f"write '### Exercise N: title' or '**Exercise N.** text', not {line!r}"
                    exercises.append((int(found.group(1) or found.group(2)), []))
        elif cell.cell_type == "code" and cell.metadata.get("jupyter", {}).get("source_hidden"):
            assert exercises, f"a collapsed cell before any exercise: {cell.source[:80]}"
            exercises[-1][1].append(cell)
    assert [n for n, _ in exercises] == list(range(1, len(exercises) + 1)), "exercises numbered 1, 2, ..."
    assert len(exercises) >= MIN_EXERCISES.get(path.stem, 0)
    for number, cells in exercises:
        assert len(cells) == 1, f"exercise {number}: {len(cells)} solution cells"
        assert SELF_CHECK.search(cells[0].source), f"exercise {number}: the solution checks nothing"
        assert not _tagged(cells[0], CHECK_TAG), f"exercise {number}: a stored output would give the answer away"


# --------------------------------------------------------------------------- links


def test_links_follow_the_one_repository_setting(monkeypatch):
    owner_repo = links.REPO_URL.removeprefix("https://github.com/")
    assert links.colab_url("02_focal_loss.ipynb") == (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{links.BRANCH}/notebooks/02_focal_loss.ipynb"
    )
    assert links.binder_url() == (
        f"https://mybinder.org/v2/gh/{owner_repo}/{links.BRANCH}?urlpath=lab/tree/notebooks/00_setup.ipynb"
    )
    Requirement(f"afl-tutorial @ git+{links.REPO_URL}.git@{links.BRANCH}")  # the install cell's: valid PEP 508
    monkeypatch.setattr(links, "REPO_URL", "https://github.com/someone/fork")
    monkeypatch.setattr(links, "BRANCH", "dev")
    assert links.colab_url("notebooks/01_data.ipynb").endswith("/someone/fork/blob/dev/notebooks/01_data.ipynb")
    with pytest.raises(ValueError, match="ipynb"):
        links.colab_url("notes.md")
    monkeypatch.setattr(links, "REPO_URL", "https://gitlab.com/someone/fork")
    with pytest.raises(ValueError, match="github.com"):
        links.binder_url()


# --------------------------------------------------------------------------- notebook helpers


def test_choose_and_data_root(monkeypatch, tmp_path):
    assert choose(5, gpu=30, cpu=2, quick=1, on_gpu=True, is_quick=True) == 5
    assert choose(None, gpu=30, cpu=2, quick=1, on_gpu=True, is_quick=True) == 1
    assert choose(None, gpu=30, cpu=2, quick=1, on_gpu=True) == 30
    assert choose(None, gpu=30, cpu=2, on_gpu=False, is_quick=True) == 2
    monkeypatch.setenv("AFL_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    assert data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    monkeypatch.delenv("AFL_DATA_DIR")
    assert data_root(default=tmp_path / "d") == (tmp_path / "d").resolve()


def test_real_examples_are_found_in_the_repository():
    folder = real_examples_dir(cache="/nonexistent/never-used")
    assert folder == REPO / "tests" / "data" / "real-mri"
    assert all((folder / name).is_file() for name in REAL_EXAMPLE_FILES)


def test_check_close_prints_and_raises(capsys):
    check_close("same", [1.0, 2.0], [1.0, 2.0 + 1e-9])
    assert capsys.readouterr().out.startswith("ok ")
    with pytest.raises(AssertionError, match="exceeds"):
        check_close("far", [1.0], [1.1], atol=1e-3)
    assert "BAD" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="shapes"):
        check_close("shape", [1.0], [1.0, 2.0])


# --------------------------------------------------------------------------- environment files


_CONDA_NAMES = {"torch": "pytorch", "simpleitk": "simpleitk"}


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["notebooks"]]
    return {r.name.lower(): r for r in reqs}


def _floor(spec) -> Version | None:
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        name, _, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", dep).group(1, 0, 2)
        conda[name.lower()] = Requirement(f"x{rest}").specifier if rest else None
    assert conda["python"] is not None and _floor(conda["python"]) >= Version("3.10")
    for name, req in _pyproject_requirements().items():
        conda_name = _CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"environment.yml lacks {conda_name} (pyproject: {req})"
        ours, theirs = _floor(conda[conda_name] or []), _floor(req.specifier)
        if theirs is not None:
            assert ours is not None and ours >= theirs, (
                f"{conda_name}: environment.yml floor {ours} < pyproject {theirs}"
            )
    assert any(p.startswith("-e .[") or p.startswith(".[") for p in pip), "the package itself, editable"
    for extra in (
        "jupyterlab",
        "ipywidgets",
        "papermill",
        "nbval",
        "nibabel",
        "matplotlib",
        "segmentation-models-pytorch",
    ):
        assert extra in conda


def test_binder_installs_cpu_torch_and_this_package():
    lines = [ln.strip() for ln in (REPO / "binder" / "requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert "-e .[notebooks]" in lines  # pyproject's dependencies and notebook extras come with it
    pinned = {Requirement(ln).name.lower(): Requirement(ln) for ln in lines if not ln.startswith(("-", "."))}
    project = _pyproject_requirements()
    for name, req in pinned.items():
        assert name in project, f"binder pins {name}, which pyproject.toml does not list"
        assert _floor(req.specifier) >= _floor(project[name].specifier)
    # With a binder/ folder repo2docker ignores the root environment.yml: only binder/ counts.
    assert not (REPO / "binder" / "environment.yml").exists()
    assert re.fullmatch(r"python-3\.(1[0-9])", (REPO / "binder" / "runtime.txt").read_text().strip())


# --------------------------------------------------------------------------- runner


def test_runner_parses_parameters_like_papermill():
    assert runner.parse_value("True") is True
    assert runner.parse_value("None") is None
    assert runner.parse_value("3") == 3 and runner.parse_value("0.5") == 0.5
    assert runner.parse_value("[1, 2]") == [1, 2]
    assert runner.parse_value("resnet18") == "resnet18"


def test_runner_names_the_failing_cell_and_collects_summaries(tmp_path):
    ok = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print(f'x is {x}')", metadata={"tags": ["summary"]}),
        ]
    )
    bad = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("y = 2"),
            nbformat.v4.new_code_cell("# a comment first\nraise ValueError('broken on purpose')"),
        ]
    )
    for nb, name in ((ok, "ok.ipynb"), (bad, "bad.ipynb")):
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / name)
    out = tmp_path / "out"
    good = runner.run_one(tmp_path / "ok.ipynb", out, {"x": 7, "unknown": 1}, timeout=60)
    assert good.status == "ok" and good.summary == ["x is 7"]
    assert good.peak_mib > 20  # a Python kernel's resident memory, measured while it ran
    failed = runner.run_one(tmp_path / "bad.ipynb", out, {}, timeout=60)
    assert failed.status == "FAILED"
    assert "cell 1" in failed.detail and "raise ValueError" in failed.detail
    assert "ValueError: broken on purpose" in failed.detail
    runner.write_summary(out / "summary.md", [good, failed], {"x": 7})
    summary = (out / "summary.md").read_text()
    assert "| ok | ok |" in summary and "| bad | FAILED |" in summary and "- x is 7" in summary
    assert f"| ok | ok | {good.seconds:.1f} | {good.peak_mib:.0f} |" in summary


# --------------------------------------------------------------------------- execution (slow)


@SKIP_RUN
def test_all_notebooks_run_in_order_with_quick_settings(tmp_path):
    """`make tutorial NOTEBOOK_PARAMS="--quick"`: every notebook through papermill, in order, offline."""
    out, data = tmp_path / "outputs", tmp_path / "data"
    env = os.environ | {"AFL_DATA_DIR": str(data)}
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "run_tutorial.py"), "--out", str(out), "--quick", "--timeout", "900"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    # Each kernel warns on stderr that it uses TCP; the runner's own lines say what failed.
    stderr = "\n".join(ln for ln in result.stderr.splitlines() if "IPKernelApp" not in ln)
    assert result.returncode == 0, result.stdout[-3000:] + stderr[-3000:]
    assert sorted(p.stem for p in out.glob("*.ipynb")) == list(EXPECTED)
    summary = (out / "summary.md").read_text()
    assert summary.count("| ok |") == len(EXPECTED)
    for executed in out.glob("*.ipynb"):
        nb = _read(executed)
        outputs = [o for c in _code(nb) for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        # no progress bar frozen in the saved notebook, neither as text nor as a tqdm widget
        texts = [o.get("text", "") for o in outputs] + [str(o.get("data", {}).get("text/plain", "")) for o in outputs]
        assert not [t for t in texts if PROGRESS_BAR.search(t)], executed.name
        widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert not widgets, f"{executed.name}: widget outputs (a tqdm bar?) in a static run"
    assert (out / "runs" / "synthetic" / "afl-seed0" / "history.csv").is_file()
    assert (out / "runs" / "synthetic" / "afl-seed0" / "eval" / "per_case.csv").is_file()
    assert (data / "synthetic" / "dataset.json").is_file()


@SKIP_RUN
def test_committed_outputs_still_match_nbval():
    """nbval --nbval-lax on the committed notebooks: cells tagged nbval-check-output must
    print what is stored (after sanitising), and no cell may fail (solutions assert)."""
    env = os.environ | {"AFL_STATIC_WIDGETS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            str(SANITIZE),
            *[str(NOTEBOOKS / n) for n in NBVAL_CHECKED],
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)


# --------------------------------------------------------------------------- parameters, as papermill injects them

# (notebook, parameters, what the error must say); each notebook's cases share one kernel.
BAD_DEVICE = "parameter device must be auto, cpu, cuda or cuda:N (N the GPU's number, e.g. cuda:0), got 'foo'"
BAD_PARAMETERS = [
    ("00_setup", {"image_size": "abc"}, "parameter image_size = 'abc': it accepts an integer >= 32 or None"),
    ("01_data", {"n_cases": "abc"}, "parameter n_cases = 'abc': it accepts an integer >= 1 or None"),
    ("01_data", {"picai_folds": [0, 7]}, "parameter picai_folds = [0, 7]: it accepts a list of 0, 1, 2, 3, 4"),
    (
        "02_focal_loss",
        {"foreground_fraction": "abc"},
        "parameter foreground_fraction = 'abc': it accepts a number strictly between 0 and 1",
    ),
    ("03_adaptive_focusing", {"image_size": 16}, "parameter image_size = 16: it accepts an integer >= 64"),
    ("04_training", {"epochs": "abc"}, "parameter epochs = 'abc': it accepts an integer >= 1 or None"),
    ("04_training", {"n_seeds": 0}, "parameter n_seeds = 0: it accepts an integer >= 1 or None"),
    ("04_training", {"device": "foo"}, BAD_DEVICE),
    ("05_evaluation", {"n_boot": "abc"}, "parameter n_boot = 'abc': it accepts an integer >= 100 or None"),
    ("05_evaluation", {"reference": "bogus"}, "parameter reference = 'bogus': it accepts one of 'ce', "),
    ("05_evaluation", {"paper_dataset": "XYZ"}, "parameter paper_dataset = 'XYZ': it accepts one of 'PICAI', 'BraTS'"),
    ("06_ablation", {"p_t": 1.5}, "parameter p_t = 1.5: it accepts a number strictly between 0 and 1"),
    ("06_ablation", {"reference": "focal"}, "parameter reference = 'focal': it accepts one of 'ce', 'afl', "),
    ("07_your_data", {"device": "foo"}, BAD_DEVICE),
    ("07_your_data", {"images": ["{case}_t2.nii.gz"]}, "describe your folder: set source too"),
]


def check_parameters_in_kernel(name: str, parameter_sets: list[dict]) -> list[tuple[str, str] | None]:
    """Run a notebook's cells up to its parameter check (the first code cell after the
    parameters cell; the rest would train or read data) once in a kernel, then, for each set
    of parameters, the parameters cell, the cell papermill would inject and the check again.
    Returns per set ``(exception name, message)``, or None where the check passed."""
    from nbclient import NotebookClient
    from papermill.translators import translate_parameters

    nb = _read(NOTEBOOKS / f"{name}.ipynb")
    tagged = next(i for i, c in enumerate(nb.cells) if _tagged(c, "parameters"))
    check = next(i for i, c in enumerate(nb.cells) if i > tagged and c.cell_type == "code")
    assert "check_parameters(globals()" in nb.cells[check].source.replace("\n", "").replace(" ", ""), (
        f"{name}: the first code cell after the parameters checks them"
    )

    def error_of(index, cell):
        client.execute_cell(cell, index)  # errors are outputs: a raised one would abort the kernel's next requests
        return next(((o.ename, o.evalue) for o in cell.outputs if o.output_type == "error"), None)

    # allow_errors: a failed check must not make the kernel drop the next cases' cells
    client = NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True)
    client.resources = {"metadata": {"path": str(NOTEBOOKS)}}
    head, parameters_cell, check_cell = nb.cells[:tagged], nb.cells[tagged], nb.cells[check]
    results = []
    with client.setup_kernel():  # (execute_cell puts the cell it runs at its index in nb.cells)
        for index, cell in enumerate(head):
            if cell.cell_type == "code":
                assert error_of(index, cell) is None, f"{name}: cell {index} fails"
        for parameters in parameter_sets:
            injected = nbformat.v4.new_code_cell(translate_parameters("python3", "python", parameters, "Injected"))
            assert error_of(tagged, parameters_cell) is None and error_of(tagged, injected) is None
            results.append(error_of(check, check_cell))
    return results


@SKIP_RUN
@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOK_PATHS])
def test_a_bad_notebook_parameter_is_named_before_any_work(name):
    """Each notebook's first cell after its parameters names a bad one and what it accepts
    (a ValueError, not a traceback from deep inside), and passes the quick settings."""
    cases = [(parameters, message) for notebook, parameters, message in BAD_PARAMETERS if notebook == name]
    results = check_parameters_in_kernel(name, [{"quick": True}] + [parameters for parameters, _ in cases])
    assert results[0] is None, f"{name}: quick=True fails the check: {results[0]}"
    for (parameters, message), result in zip(cases, results[1:]):
        assert result is not None, f"{name}: {parameters} passed the check"
        ename, evalue = result
        assert ename == "ValueError" and message in " ".join(evalue.split()), (parameters, result)
        for key in parameters:  # the notebook's parameter, not a command-line option of that name
            assert f"--{key.replace('_', '-')}" not in evalue, (parameters, evalue)


def test_readme_badges_follow_the_links_setting():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for notebook in sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        assert links.colab_url(notebook) in readme and links.binder_url(notebook) in readme, notebook
