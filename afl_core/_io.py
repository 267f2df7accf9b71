"""Atomic file writes: nothing is ever left half-written under its final name."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    For libraries that write by file name (``nibabel.save``, ``torch.save``,
    ``DataFrame.to_csv``). The file is flushed to disk before the rename. On any
    exception the temporary file is removed and the previous content of ``path``, if any,
    is left untouched. The temporary name keeps
    the final name at its end (``.nii.gz``) because some writers choose the format from it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{final.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # on disk before it takes the final name
            os.fsync(written.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` when
    the block ends without an exception (after flushing it to disk)."""
    if not any(c in mode for c in "wax"):
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    with atomic_target(path) as tmp:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh


def write_json(path: str | os.PathLike, payload, *, default=str) -> None:
    """``payload`` as indented JSON (``default`` turns what JSON lacks into text), atomically."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, default=default)
        fh.write("\n")


def export_csv(table, path: str | os.PathLike) -> Path:
    """Write the ``pandas.DataFrame`` ``table`` to CSV atomically (the index only when it is
    meaningful, e.g. the ``arm`` index of :func:`afl_core.paper.results_table`). Returns the path."""
    import pandas as pd  # here: the rest of this module serves the data downloaders, which need no pandas

    with atomic_target(path) as tmp:
        table.to_csv(tmp, index=not isinstance(table.index, pd.RangeIndex))
    return Path(path)
