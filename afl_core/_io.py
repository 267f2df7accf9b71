"""Files the project writes and reads back: atomic writes (nothing is ever left half-written
under its final name), JSON read with the file named, memory checked before work starts, and
one process at a time writing a folder (:func:`folder_lock`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None


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


def read_json(path: str | os.PathLike, *, expect: type | None = dict, hint: str = "write it again") -> Any:
    """The JSON value in ``path``, with every failure naming the file.

    Args:
        path: a JSON file this project wrote (``dataset.json``, ``config.json``, ...).
        expect: the type the top-level value must have (``None``: any).
        hint: what to do about a damaged file, ending the message.

    Returns:
        The decoded value.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not UTF-8 JSON, or its value is not an ``expect``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {hint}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is damaged: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); {hint}"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is damaged: not UTF-8 text; {hint}") from None
    if expect is not None and not isinstance(value, expect):
        expected = {dict: "a JSON object {...}", list: "a JSON list [...]"}.get(expect, expect.__name__)
        raise ValueError(f"{path} must hold {expected}, not {type(value).__name__}; {hint}")
    return value


def available_memory() -> int | None:
    """Bytes of memory this process could still allocate: the kernel's ``MemAvailable``,
    capped by the container's limit (cgroup); the physical memory where those are not
    readable; ``None`` where nothing is known."""
    known = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                known.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            known.append(int(Path(limit).read_text()) - int(Path(usage).read_text()))
        except (OSError, ValueError):  # absent, or "max": no limit
            pass
    if not known:
        try:
            known.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (AttributeError, OSError, ValueError):
            return None
    return max(min(known), 0)


class NotEnoughMemory(MemoryError, ValueError):
    """Work refused before it starts because it would not fit in memory: a ``ValueError``
    too, so the command lines that report bad options report it in one paragraph.
    ``needed`` and ``available``: the bytes of the check."""

    needed: float = 0.0
    available: float = 0.0


def check_memory(nbytes: float, *, what: str, option: str) -> None:
    """Refuse, before allocating, work that needs more memory than is available.

    Args:
        nbytes: the bytes the work would hold at once (an estimate from the sizes asked for).
        what: the work, for the message (e.g. ``"one synthetic case of 2000 x 2000 x 2000 voxels"``).
        option: the option or parameter that sets the size, named in the message as the thing
            to change (e.g. ``"--shape"``).

    Raises:
        NotEnoughMemory: ``nbytes`` exceeds :func:`available_memory` (never raised when that is unknown).
    """
    available = available_memory()
    if available is not None and nbytes > available:
        error = NotEnoughMemory(
            f"{what} needs about {gib(nbytes)} of memory, but {gib(available)} are available: choose a smaller {option}"
        )
        error.needed, error.available = nbytes, available
        raise error


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


# --------------------------------------------------------------------------- one writer per folder

#: the lock file of a folder that one process at a time writes (a training run)
LOCK_NAME = "run.lock"
# Lock files this process holds, and how many blocks hold each: a sweep holds a run's lock
# and the training it starts takes the same lock again.
_held_locks: dict[Path, int] = {}


class FolderBusy(ValueError):
    """Another process holds the folder's lock (:func:`folder_lock`); the message names it."""


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike,
    *,
    option: str = "--out",
    then: str = "--resume continues or --overwrite replaces its run",
) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/run.lock`` for the block, so that one process
    at a time writes ``folder`` (created if missing). The file names the holder (process id,
    host, start time, command). ``flock`` locks die with their process, however it ends, so
    no lock outlives its holder. Re-entrant within one process. The folders it created are
    removed again when the block leaves nothing in them but the lock (a command refused
    before it wrote anything leaves no folder behind). Where ``flock`` is missing (Windows)
    nothing is locked: run one process per folder there.

    Args:
        folder: the folder to hold.
        option: the option that chose the folder, named in the message.
        then: what the user can do once the holder has ended, named in the message.

    Raises:
        FolderBusy: another process holds the lock; the message names it and what to do.
        ValueError: ``folder/run.lock`` is a symbolic link (never followed: writing the holder's
            record would overwrite its target).
    """
    path = Path(folder).absolute() / LOCK_NAME
    if path in _held_locks:
        _held_locks[path] += 1
        try:
            yield
        finally:
            _held_locks[path] -= 1
        return
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_open_lock_file(path), "r+", encoding="utf-8") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise FolderBusy(_busy_message(path, handle.read(), option, then)) from None
        handle.seek(0)
        handle.truncate()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(getattr(sys, "orig_argv", sys.argv)),
        }
        json.dump(holder, handle)
        handle.flush()
        _held_locks[path] = 1
        try:
            yield
        finally:
            del _held_locks[path]  # closing the file releases the lock
            if created:  # still held: no other process writes the folder meanwhile
                _remove_if_only_lock(path, created)


def _open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (created if missing), never through a symbolic
    link: the holder's record is written into it, which would overwrite the link's target."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as error:
        if not path.is_symlink():
            raise
        raise ValueError(
            f"{path} is a symbolic link (to {os.readlink(path)}), not the lock file this project writes: the "
            f"holder's record would overwrite its target, so nothing is written. Remove the link "
            f"(rm {path}), then run the command again"
        ) from error


def _remove_if_only_lock(path: Path, created: list[Path]) -> None:
    """Remove the folders :func:`folder_lock` created (deepest first) when the work left
    nothing in them but the lock file ``path``: a command refused before it wrote anything
    leaves nothing behind."""
    try:
        if [entry.name for entry in path.parent.iterdir()] != [LOCK_NAME]:
            return
        path.unlink()
        for folder in created:
            folder.rmdir()  # an OSError: another process put something there; it stays
    except OSError:
        pass


def check_not_held(
    folder: str | os.PathLike,
    *,
    why: str,
    then: str,
) -> None:
    """Refuse to read ``folder`` while another process holds its lock (:func:`folder_lock`):
    a training run still writing its checkpoints. The lock is tried and let go at once
    (a shared lock, which the writer's exclusive one excludes); a lock this process holds
    does not count.

    Args:
        folder: the folder to read (a run).
        why: what reading it now would do wrong, for the message.
        then: what to do once the holder has ended, for the message.

    Raises:
        FolderBusy: another process holds the lock; the message names it (process id, host,
            start time, command), ``why`` and ``then``.
    """
    path = Path(folder).absolute() / LOCK_NAME
    if fcntl is None or path in _held_locks or not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(_busy_message(path, handle.read(), None, then, why)) from None


def _busy_message(
    path: Path,
    recorded: str,
    option: str | None,
    then: str,
    why: str = "a second process would mix their files in one folder",
) -> str:
    """Who holds the lock on ``path``, from what the holder wrote into it, and what to do
    (``option``: the option that chose the folder, to choose another; ``None``: none to offer)."""
    other = f", or choose another {option}" if option else ""
    try:
        holder = json.loads(recorded)
        pid, host, started, command = (holder[k] for k in ("pid", "host", "started", "command"))
    except (ValueError, TypeError, KeyError):  # written by an older version, or not yet written
        return f"{path.parent} is being written by another process (it holds {path}): wait for it to end{other}"
    who = f"process {pid} on {host}, started {started} ({command})"
    if host == socket.gethostname() and not _alive(pid):
        return (
            f"{path.parent} is locked by {path}, which names {who}; that process has ended, but one it "
            f"started (a DataLoader worker, a torchrun rank) still holds the lock. The lock goes when that "
            f"process ends: find it with `fuser -v {path}` and end it, then run the command again "
            f"(the folder is left as its last complete write){other}"
        )
    return f"{path.parent} is being written by {who}: {why}. Wait for it to end (then {then}){other}"


def _alive(pid: int) -> bool:
    """Does process ``pid`` exist on this host?"""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True  # another user's process, or a pid we cannot judge: assume it lives
    return True
