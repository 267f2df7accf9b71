#!/usr/bin/env python
"""Re-execute the nbval-checked notebooks in place and keep only the outputs nbval compares.

    python tools/refresh_checked_outputs.py notebooks/02_focal_loss.ipynb notebooks/03_adaptive_focusing.ipynb

Run it after changing such a notebook: cells tagged ``nbval-check-output`` keep their
fresh outputs (the reference `make test` compares against), every other cell is stored
without outputs, so the committed notebooks stay small and free of timings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK_TAG = "nbval-check-output"


def refresh(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code" and CHECK_TAG not in cell.metadata.get("tags", []):
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, path)
    print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    os.environ["AFL_STATIC_WIDGETS"] = "1"  # widgets draw their default view: no comm wait
    for name in sys.argv[1:]:
        refresh(Path(name).resolve())
