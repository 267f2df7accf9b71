#!/usr/bin/env python
"""Execute the tutorial notebooks in order with papermill (``make tutorial``).

    python tools/run_tutorial.py --out outputs                 # learner defaults (GPU or CPU)
    python tools/run_tutorial.py --out outputs --quick         # CI sizes
    python tools/run_tutorial.py --only 02 03 -p seed 1        # a subset, an override

Each ``notebooks/NN_*.ipynb`` is executed into ``OUT/NN_*.ipynb`` with the kernel
working in ``notebooks/`` (so notebooks' relative paths mean the same as in Jupyter).
Training runs go to ``OUT/runs`` (04 writes them afresh unless ``--keep-runs``, in a runs
folder this runner made; it never deletes one it did not make, see :func:`prepare_runs_dir`; 05 and
06 read them), which is why the notebooks run in order and the run stops at the first failure unless
``--keep-going``. Widgets are drawn as static figures (``AFL_STATIC_WIDGETS=1``, see
:mod:`afl_core.viz`). A parameter is passed only to notebooks whose ``parameters`` cell
defines it. The text printed by each notebook's cell tagged ``summary`` is collected
into ``OUT/summary.md`` with every notebook's status, time and peak memory: the largest
proportional set size (PSS) of the kernel and every process it started, summed (a page that
processes share is split between them, so the sum is what they take together, as a container's
memory limit counts it; RSS where PSS cannot be read, which counts shared pages once per process),
sampled every 0.1 s with psutil (a shorter spike can be missed). Exit status 1 if any notebook failed;
the message names the cell.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from afl_core.viz import STATIC_WIDGETS_ENV

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SUMMARY_TAG = "summary"


@dataclass
class Result:
    notebook: str
    status: str = "not run"
    seconds: float = 0.0
    detail: str = ""
    summary: list[str] = field(default_factory=list)
    peak_mib: float | None = None  # None: not measured (psutil missing)


class PeakMemory:
    """The peak, over the time inside ``with``, of the summed memory (PSS, else RSS) of this
    process's descendants: the kernel papermill starts and whatever it starts in turn
    (DataLoader workers, which share the kernel's pages after fork). Sampled every ``interval``
    seconds on a thread; ``peak_mib`` stays None where psutil is not installed."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak_mib: float | None = None
        self._stop = threading.Event()

    def _sample(self, me) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += _proportional_memory(child)
                except psutil.Error:  # exited between the listing and the reading
                    pass
            self.peak_mib = max(self.peak_mib or 0.0, total / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        try:
            import psutil
        except ImportError:
            return self
        self._thread = threading.Thread(target=self._sample, args=(psutil.Process(),), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if hasattr(self, "_thread"):
            self._thread.join()


def _proportional_memory(process) -> int:
    """Bytes of ``process``'s PSS (Linux), else its RSS."""
    import psutil

    if psutil.LINUX:  # elsewhere memory_full_info has no PSS (and is slow to compute)
        try:
            return process.memory_full_info().pss
        except psutil.AccessDenied:  # not readable: RSS is
            pass
    return process.memory_info().rss


def tutorial_notebooks(directory: Path = NOTEBOOKS) -> list[Path]:
    """The tutorial notebooks in teaching order (``00_*.ipynb``, ``01_*.ipynb``, ...)."""
    found = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no NN_*.ipynb notebooks in {directory}")
    return found


def parse_value(text: str):
    """papermill's ``-p`` typing: Python literals (True, None, 3, 0.5, [1, 2]) or a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def declared_parameters(notebook: Path) -> set[str]:
    return set(papermill.inspect_notebook(str(notebook)))


def summary_lines(executed: Path) -> list[str]:
    """Text printed by the cells tagged ``summary`` of an executed notebook."""
    nb = nbformat.read(executed, as_version=4)
    lines: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code" and SUMMARY_TAG in cell.metadata.get("tags", []):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stdout":
                    lines += [ln for ln in out["text"].splitlines() if ln.strip()]
    return lines


def run_one(notebook: Path, out_dir: Path, parameters: dict, *, timeout: float | None) -> Result:
    result = Result(notebook.stem)
    accepted = declared_parameters(notebook)
    params = {k: v for k, v in parameters.items() if k in accepted}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    start = time.perf_counter()
    memory = PeakMemory()
    try:
        with memory:
            papermill.execute_notebook(
                str(notebook),
                str(target),
                parameters=params,
                kernel_name="python3",
                cwd=str(notebook.parent),
                progress_bar=False,
                execution_timeout=timeout,
            )
        result.status = "ok"
        result.summary = summary_lines(target)
    except PapermillExecutionError as err:
        result.status = "FAILED"
        code_lines = [ln for ln in err.source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        first_line = code_lines[0].strip() if code_lines else ""
        result.detail = (
            f"cell {err.cell_index} (execution count {err.exec_count}, starting {first_line!r}): "
            f"{err.ename}: {err.evalue}"
        )
    except Exception as err:  # a dead kernel (often out of memory), a timeout, a bad notebook
        result.status = "FAILED"
        result.detail = f"{type(err).__name__}: {err}"
    result.seconds = time.perf_counter() - start
    result.peak_mib = memory.peak_mib
    return result


def write_summary(path: Path, results: list[Result], parameters: dict) -> None:
    from afl_core._io import atomic_write

    total = sum(r.seconds for r in results)
    lines = [
        "# Tutorial run summary",
        "",
        f"Parameters: `{parameters}`; total {total:.0f} s.",
        "",
        "Peak memory: the kernel's and its child processes' proportional set size (shared pages split "
        "between them), summed, sampled every 0.1 s.",
        "",
        "| notebook | status | time (s) | peak memory (MiB) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r.notebook} | {r.status} | {r.seconds:.1f} | {'n/a' if r.peak_mib is None else f'{r.peak_mib:.0f}'} |"
        for r in results
    ]
    for r in results:
        if r.summary or r.detail:
            lines += ["", f"## {r.notebook}", ""]
            lines += [f"- {ln.strip()}" for ln in r.summary]
            if r.detail:
                lines.append(f"- failure: {r.detail}")
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs", help="folder for executed notebooks")
    parser.add_argument("--quick", action="store_true", help="CI sizes: every notebook in a minute or two on a CPU")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (number prefixes)")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="papermill parameter for every notebook that declares it (repeatable)",
    )
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $AFL_DATA_DIR or the notebooks' own)")
    parser.add_argument("--timeout", type=float, default=3600, help="per-cell limit in seconds")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    parser.add_argument(
        "--keep-runs",
        action="store_true",
        help="let 04 resume the runs already in OUT/runs (default: 04 starts them afresh)",
    )
    return parser


def notebook_parameters(args: argparse.Namespace, out_dir: Path) -> dict:
    """The papermill parameters of the command line: the runs folder under ``out_dir``,
    ``quick``, ``data_dir``, then each ``-p NAME VALUE``."""
    parameters: dict = {"runs_dir": str(out_dir / "runs")}
    if args.quick:
        parameters["quick"] = True
    if args.data_dir:
        parameters["data_dir"] = str(args.data_dir.resolve())
    parameters.update({name: parse_value(value) for name, value in args.parameter})
    return parameters


#: the file that marks a runs folder as made by this runner: only such a folder's runs are ever removed
OWN_RUNS_MARK = ".made-by-run_tutorial"


def prepare_runs_dir(runs: Path, *, fresh: bool) -> None:
    """Make the runs folder ``runs`` if missing, marked as this runner's. With ``fresh`` (04
    selected, no ``--keep-runs``), remove the training runs an earlier tutorial run left in
    it, since runs of other settings (other sizes, ``--quick``) cannot be resumed with these:
    only the run folders (``runs/<dataset>/<name>`` holding ``config.json``) of a folder
    this runner made. A folder it did not make is never cleared (it may be the user's):
    04 resumes the runs there, and refuses, naming it, one made with other settings."""
    if not runs.exists():
        runs.mkdir(parents=True)
        (runs / OWN_RUNS_MARK).write_text("runs of tools/run_tutorial.py: a fresh tutorial run removes them\n")
        return
    if not fresh:
        return
    if not (runs / OWN_RUNS_MARK).is_file():
        print(
            f"note: {runs} was not made by this runner, so nothing in it is deleted: 04 resumes the runs "
            f"there (use another --out or -p runs_dir to train afresh)",
            file=sys.stderr,
        )
        return
    for dataset in (d for d in runs.iterdir() if d.is_dir() and not d.is_symlink()):
        for run in (r for r in dataset.iterdir() if r.is_dir() and not r.is_symlink()):
            if (run / "config.json").is_file():
                shutil.rmtree(run)
        with contextlib.suppress(OSError):  # kept when it holds anything else
            dataset.rmdir()


def run_in_order(
    notebooks: list[Path], out_dir: Path, parameters: dict, *, timeout: float, keep_going: bool
) -> list[Result]:
    """Execute the notebooks one after another, printing each one's status; after a failure
    the rest are skipped unless ``keep_going``."""
    results = [Result(nb.stem) for nb in notebooks]
    failed = False
    for i, nb in enumerate(notebooks):
        if failed and not keep_going:
            results[i].status = "skipped"
            continue
        print(f"[{i + 1}/{len(notebooks)}] {nb.name} ...", end=" ", flush=True)
        results[i] = run_one(nb, out_dir, parameters, timeout=timeout)
        peak = "" if results[i].peak_mib is None else f", peak memory {results[i].peak_mib:.0f} MiB"
        print(f"{results[i].status} in {results[i].seconds:.1f} s{peak}", flush=True)
        if results[i].status != "ok":
            failed = True
            print(f"    {nb.name}: {results[i].detail}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    parameters = notebook_parameters(args, out_dir)

    notebooks = tutorial_notebooks()
    if args.only:
        notebooks = [nb for nb in notebooks if nb.name[:2] in set(args.only)]
        if not notebooks:
            parser.error(f"--only {' '.join(args.only)} matches no notebook")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning in each kernel
    # Widgets draw their default view as a plain figure: nbclient can hang on widget
    # messages (jupyter/nbclient#312), and a figure reads better in the executed copy.
    os.environ.setdefault(STATIC_WIDGETS_ENV, "1")

    runs = NOTEBOOKS / Path(parameters["runs_dir"]).expanduser()  # as the kernels, working in notebooks/, see it
    prepare_runs_dir(runs, fresh=any(nb.name.startswith("04_") for nb in notebooks) and not args.keep_runs)

    results = run_in_order(notebooks, out_dir, parameters, timeout=args.timeout, keep_going=args.keep_going)
    write_summary(out_dir / "summary.md", results, parameters)
    total = sum(r.seconds for r in results)
    print(
        f"{sum(r.status == 'ok' for r in results)}/{len(results)} notebooks ok in {total:.0f} s; "
        f"executed copies and summary.md in {out_dir}"
    )
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
