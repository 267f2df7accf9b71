"""Safe extraction of zip and tar archives.

Every member is checked before anything is written: its path must stay inside the
destination (no absolute paths, no ``..``) and name a file (not ``.``), no two members may
claim the same path or use one file's path as another's folder, link and device members
are refused (none of the datasets contains them and they are the usual vehicle of archive
attacks), and so are encrypted members. The bytes the selected members expand to are
capped, in total and relative to the archive's size, so a small archive cannot fill the
disk (a "zip bomb"); a member that produces more than its declared size is stopped.
Files are copied out by hand rather than with ``extractall`` so the same rules hold on
every supported Python version (``tarfile``'s ``filter="data"`` exists only from 3.10.12,
3.11.4 and 3.12, and zip has no equivalent). macOS junk (``._*`` AppleDouble files,
``__MACOSX/``, ``.DS_Store``) is skipped. Extraction goes to a temporary folder that is
renamed when complete, so a half-extracted tree never appears under the final name; one
left by a killed run is removed by the next.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from tqdm.auto import tqdm

from ._layout import remove_stale
from .remote import CHUNK_BYTES, DownloadError, ensure_free_space, format_bytes

JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store"})
# Largest extraction of one archive: the biggest published archive (MSD Task01, 7.1 GiB)
# with a wide margin.
MAX_EXTRACT_BYTES = 64 << 30
# Medical images compress a few times at most; a higher ratio is a decompression bomb ...
MAX_EXPANSION_RATIO = 100
# ... once the expansion is large enough to matter.
RATIO_EXEMPT_BYTES = 64 << 20
TMP_PREFIX = ".tmp-extract-"
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the destination, clashes with another, or
    is a link, a device or a decompression bomb."""


@dataclass(frozen=True)
class Member:
    """One archive entry, independent of the archive format."""

    name: str
    size: int
    kind: str  # "file", "dir" or "other" (links, devices, fifos)
    link_target: str = ""
    encrypted: bool = False


def is_junk(name: str) -> bool:
    """True for macOS metadata entries: ``._*``, ``__MACOSX/...``, ``.DS_Store``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part in JUNK_NAMES or part.startswith("._") for part in parts)


def _parts(name: str) -> tuple[str, ...]:
    """The path components a member name stands for (``\\`` counts as ``/``; ``.`` and empty
    components drop out, as the file system would treat them)."""
    return PurePosixPath(name.replace("\\", "/")).parts


def remove_stale_extractions(folder: str | os.PathLike) -> list[str]:
    """Delete temporary extraction folders left in ``folder`` by a killed run."""
    return remove_stale(folder, f"{TMP_PREFIX}*")


def _selected_members(handle, archive: Path, include: Callable[[str], bool] | None) -> list:
    """The ``(member, source)`` pairs to extract: every member checked, then the files that
    are not junk and that ``include`` takes, their paths checked together."""
    selected = []
    for member, source in _iter_members(handle):
        _check_member(member, archive)
        if member.kind == "file" and not is_junk(member.name) and (include is None or include(member.name)):
            selected.append((member, source))
    _check_paths([member for member, _ in selected], archive)
    return selected


def _extract_member(handle, member, source, folder: Path, archive: Path, bar) -> None:
    """Write one member under ``folder``, refusing more bytes than its declared size."""
    target = folder.joinpath(*_parts(member.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with _open_member(handle, source) as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            written += len(chunk)
            if written > member.size:
                raise UnsafeArchiveError(
                    _bomb(
                        archive, f"the member {member.name!r} expands beyond its declared {format_bytes(member.size)}"
                    )
                )
            dst.write(chunk)
            bar.update(len(chunk))


def safe_extract(
    archive: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    include: Callable[[str], bool] | None = None,
    progress: bool = True,
    max_bytes: int = MAX_EXTRACT_BYTES,
    max_ratio: float = MAX_EXPANSION_RATIO,
) -> Path:
    """Extract ``archive`` into the new folder ``destination`` and return it.

    ``include(name)`` selects members by their archive path (junk is always skipped).
    The selected members may expand to at most ``max_bytes``, and to at most ``max_ratio``
    times the archive's size once that exceeds :data:`RATIO_EXEMPT_BYTES`.
    If ``destination`` already exists it is taken as a previous, complete extraction
    (it can only appear through the final rename) and returned untouched.
    Raises :class:`UnsafeArchiveError` for a member that escapes the destination, clashes
    with another, is a link or device, or expands too far, and :class:`DownloadError` for
    a damaged or encrypted archive.
    """
    archive, destination = Path(archive), Path(destination)
    if destination.parent.is_dir():
        remove_stale_extractions(destination.parent)
    if destination.exists():
        return destination
    tmp = destination.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{destination.name}")
    try:
        with _open(archive) as handle:
            selected = _selected_members(handle, archive, include)
            total = sum(m.size for m, _ in selected)
            _check_expansion(archive, total, max_bytes=max_bytes, max_ratio=max_ratio)
            ensure_free_space(destination.parent, total, what=f"extracting {archive.name}")
            tmp.mkdir(parents=True)
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"extract {archive.name}",
                disable=not progress,
            ) as bar:
                for member, source in selected:
                    _extract_member(handle, member, source, tmp, archive, bar)
        os.replace(tmp, destination)
    except _DAMAGED as exc:
        raise DownloadError(
            f"The archive {archive} is damaged and cannot be extracted ({exc}). Delete it and re-run "
            "the same command to download it again."
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return destination


def archive_problem(archive: str | os.PathLike) -> str | None:
    """``None`` when ``archive`` is a whole zip or tar archive (every member read to its end,
    a zip's CRCs checked), else what is wrong, as a phrase completing "the file ..."."""
    try:
        with _open(archive) as handle:
            if isinstance(handle, zipfile.ZipFile):
                if any(info.flag_bits & 0x1 for info in handle.infolist()):
                    return "is an encrypted (password-protected) zip archive"
                bad = handle.testzip()
                return None if bad is None else f"is damaged: its member {bad!r} fails its CRC check"
            for info in handle:
                if info.isreg():
                    with handle.extractfile(info) as member:
                        while member.read(CHUNK_BYTES):
                            pass
    except _NotAnArchive:
        return "is not a zip or tar archive"
    except _DAMAGED as exc:
        return f"is not a complete archive ({exc})"
    return None


def _check_member(member: Member, archive: Path) -> None:
    name = member.name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise UnsafeArchiveError(
            f"The archive {archive} contains the member {member.name!r}, whose path leads outside "
            "the extraction folder. Nothing was extracted. The file is not the published dataset "
            "(a damaged or tampered copy): delete it and download it again from the official "
            "address (drop --base-url if you used a mirror)."
        )
    if member.kind == "other":
        target = f" pointing to {member.link_target!r}" if member.link_target else ""
        raise UnsafeArchiveError(
            f"The archive {archive} contains {member.name!r}, a link or special file{target}. "
            "The published datasets contain only regular files, so nothing was extracted: delete "
            "the archive and download it again from the official address."
        )
    if member.kind == "file" and not path.parts:
        raise UnsafeArchiveError(
            f"The archive {archive} contains a file named {member.name!r}, which names the extraction "
            "folder itself rather than a file in it. Nothing was extracted. The file is not the "
            "published dataset: delete it and download it again from the official address."
        )
    if member.encrypted:
        raise DownloadError(
            f"The archive {archive} is encrypted (password-protected) at {member.name!r}; the published "
            "datasets are not, so this is not the published file. Nothing was extracted: delete it and "
            "download it again from the official address (drop --base-url if you used a mirror)."
        )


def _check_paths(files: list[Member], archive: Path) -> None:
    """No two files on one path, and no file where another needs a folder."""
    seen: dict[tuple[str, ...], str] = {}
    for member in files:
        parts = _parts(member.name)
        if parts in seen:
            raise _clash(archive, f"both {seen[parts]!r} and {member.name!r} are the file {'/'.join(parts)!r}")
        seen[parts] = member.name
    folders = {parts[:i]: name for parts, name in seen.items() for i in range(1, len(parts))}
    for parts, name in seen.items():
        if parts in folders:
            raise _clash(archive, f"{name!r} is a file, but {folders[parts]!r} needs a folder of that name")


def _clash(archive: Path, clash: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"The archive {archive} cannot be extracted as it is: {clash}. Nothing was extracted. The "
        "published datasets have no such clashes, so this is a damaged or tampered copy: delete it "
        "and download it again from the official address (drop --base-url if you used a mirror)."
    )


def _check_expansion(archive: Path, total: int, *, max_bytes: int, max_ratio: float) -> None:
    size = archive.stat().st_size
    if total > max_bytes:
        raise UnsafeArchiveError(
            _bomb(
                archive,
                f"it would expand to {format_bytes(total)}, more than the "
                f"{format_bytes(max_bytes)} allowed for one archive",
            )
        )
    if total > max(RATIO_EXEMPT_BYTES, max_ratio * size):
        raise UnsafeArchiveError(
            _bomb(
                archive,
                f"its {format_bytes(size)} would expand to {format_bytes(total)}, "
                f"more than {max_ratio:g} times its size",
            )
        )


def _bomb(archive: Path, what: str) -> str:
    return (
        f"The archive {archive} was not extracted: {what}. Medical images do not compress like "
        "that, so this is not the published dataset but a damaged or tampered copy (a "
        "decompression bomb): delete it and download it again from the official address "
        "(drop --base-url if you used a mirror)."
    )


class _NotAnArchive(DownloadError):
    pass


def _open(archive: str | os.PathLike):
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        return zipfile.ZipFile(archive)
    if tarfile.is_tarfile(archive):
        return tarfile.open(archive, "r:*")
    raise _NotAnArchive(
        f"{archive} is neither a zip nor a tar archive (damaged or incomplete?). "
        "Delete it and re-run the same command to download it again."
    )


def _iter_members(handle) -> Iterator[tuple[Member, object]]:
    if isinstance(handle, zipfile.ZipFile):
        for info in handle.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                kind = "dir"
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                kind = "other"  # Info-ZIP stores symlinks with S_IFLNK in the Unix mode
            else:
                kind = "file"
            yield Member(info.filename, info.file_size, kind, encrypted=bool(info.flag_bits & 0x1)), info
    else:
        for info in handle:
            kind = "file" if info.isreg() else "dir" if info.isdir() else "other"
            yield Member(info.name, info.size, kind, info.linkname), info


def _open_member(handle, source):
    if isinstance(handle, zipfile.ZipFile):
        return handle.open(source)  # checks the CRC when the member is read to its end
    return handle.extractfile(source)
