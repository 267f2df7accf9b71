"""Safe extraction of zip and tar archives.

Every member is checked before anything is written: its path must stay inside the
destination (no absolute paths, no ``..``), and link or device members are refused, since
none of the datasets contains them and they are the usual vehicle of archive attacks.
Files are copied out by hand rather than with ``extractall`` so the same rules hold on
every Python version (``tarfile``'s ``filter="data"`` exists only from 3.12). macOS junk
(``._*`` AppleDouble files, ``__MACOSX/``, ``.DS_Store``) is skipped. Extraction goes to a
temporary folder that is renamed when complete, so a half-extracted tree never appears
under the final name.
"""

from __future__ import annotations

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

from .remote import CHUNK_BYTES, DownloadError, ensure_free_space

JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store"})


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the destination, or is a link or device."""


@dataclass(frozen=True)
class Member:
    """One archive entry, independent of the archive format."""

    name: str
    size: int
    kind: str  # "file", "dir" or "other" (links, devices, fifos)
    link_target: str = ""


def is_junk(name: str) -> bool:
    """True for macOS metadata entries: ``._*``, ``__MACOSX/...``, ``.DS_Store``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part in JUNK_NAMES or part.startswith("._") for part in parts)


def safe_extract(
    archive: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    include: Callable[[str], bool] | None = None,
    progress: bool = True,
) -> Path:
    """Extract ``archive`` into the new folder ``destination`` and return it.

    ``include(name)`` selects members by their archive path (junk is always skipped).
    If ``destination`` already exists it is taken as a previous, complete extraction
    (it can only appear through the final rename) and returned untouched.
    Raises :class:`UnsafeArchiveError` for a member that escapes the destination or is a
    link or device, and :class:`DownloadError` for a damaged archive.
    """
    archive, destination = Path(archive), Path(destination)
    if destination.exists():
        return destination
    tmp = destination.with_name(f".tmp-extract-{uuid.uuid4().hex[:8]}-{destination.name}")
    try:
        with _open(archive) as handle:
            selected = []
            for member, source in _iter_members(handle):
                _check_member(member, archive)
                if member.kind == "file" and not is_junk(member.name) and (include is None or include(member.name)):
                    selected.append((member, source))
            ensure_free_space(destination.parent, sum(m.size for m, _ in selected),
                              what=f"extracting {archive.name}")
            tmp.mkdir(parents=True)
            root = tmp.resolve()
            with tqdm(total=sum(m.size for m, _ in selected), unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"extract {archive.name}", disable=not progress) as bar:
                for member, source in selected:
                    target = (root / member.name).resolve()
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with _open_member(handle, source) as src, open(target, "wb") as dst:
                        while chunk := src.read(CHUNK_BYTES):
                            dst.write(chunk)
                            bar.update(len(chunk))
        os.replace(tmp, destination)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DownloadError(
            f"The archive {archive} is damaged and cannot be extracted ({exc}). Delete it and re-run "
            "the same command to download it again."
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return destination


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


def _open(archive: str | os.PathLike):
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        return zipfile.ZipFile(archive)
    if tarfile.is_tarfile(archive):
        return tarfile.open(archive, "r:*")
    raise DownloadError(f"{archive} is neither a zip nor a tar archive (damaged or incomplete?). "
                        "Delete it and re-run the same command to download it again.")


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
            yield Member(info.filename, info.file_size, kind), info
    else:
        for info in handle:
            kind = "file" if info.isreg() else "dir" if info.isdir() else "other"
            yield Member(info.name, info.size, kind, info.linkname), info


def _open_member(handle, source):
    if isinstance(handle, zipfile.ZipFile):
        return handle.open(source)  # checks the CRC when the member is read to its end
    return handle.extractfile(source)
