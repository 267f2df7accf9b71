"""HTTP downloads that can be trusted: resumable, verified, never half-written.

A file is streamed to ``<name>.part``. An existing ``.part`` is resumed with an HTTP
``Range`` request (used only when the server answers ``206 Partial Content`` for the
right offset; a ``200`` restarts from zero). When the transfer is complete its checksum
is compared with the expected one and only then is it renamed to ``<name>``: a file under
its final name is always whole and verified. Every failure becomes a
:class:`DownloadError` whose message says what happened and what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

CHUNK_BYTES = 1 << 20
USER_AGENT = "afl-tutorial-data-download/0.1"
_HEX = re.compile(r"^[0-9a-f]+$")
_DIGEST_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


class DownloadError(RuntimeError):
    """A download or conversion failed; ``str(error)`` is a paragraph for the user."""


class ChecksumError(DownloadError):
    """A completed transfer does not have the expected checksum."""


class _TransientError(Exception):
    """A failure worth retrying (interrupted transfer, 5xx, network); never leaves fetch()."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: where from, under which name, and what it must hash to.

    ``checksum`` is ``"<algorithm>:<hex>"`` (``"md5:..."``, ``"sha256:..."``) or a bare hex
    digest whose length names the algorithm; ``None`` when no trustworthy value is known.
    ``size`` in bytes, when known in advance (used for the free-disk check and progress).
    """

    url: str
    name: str
    checksum: str | None = None
    size: int | None = None


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:ABC..."`` or bare ``"abc..."`` -> ``("md5", "abc...")``."""
    algorithm, _, digest = checksum.strip().lower().rpartition(":")
    if not algorithm:
        algorithm = _DIGEST_LENGTHS.get(len(digest), "")
    if not _HEX.match(digest) or algorithm not in hashlib.algorithms_available:
        raise ValueError(
            f"Cannot read the checksum {checksum!r}: expected '<algorithm>:<hex digest>' "
            "(e.g. 'md5:240a19d7...') or a bare md5/sha1/sha256/sha512 hex digest."
        )
    return algorithm, digest


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256", *, progress: bool = False) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    path = Path(path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
        desc=f"verify {path.name}", disable=not progress, leave=False,
    ) as bar:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def format_bytes(n: int | None) -> str:
    """``1536 -> '1.5 KiB'``; ``None -> 'unknown size'``."""
    if n is None:
        return "unknown size"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def ensure_free_space(folder: str | os.PathLike, needed_bytes: int, *, what: str) -> None:
    """Raise :class:`DownloadError` unless ``folder`` has ``needed_bytes`` free plus a margin.

    The margin (5 % of the need, at least 64 MiB) leaves room for the file system and
    for whatever else is writing to the disk meanwhile.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    required = needed_bytes + max(needed_bytes // 20, 64 << 20)
    if free < required:
        raise DownloadError(
            f"Not enough free disk space for {what}: it needs about {format_bytes(required)} "
            f"(including a safety margin) in {folder}, but only {format_bytes(free)} is free. "
            "Free some space or choose a folder on a larger disk with --dest (or --cache for "
            "the downloaded archives), then re-run the same command; completed downloads are kept."
        )


def _request(url: str, *, method: str = "GET", headers: dict | None = None, timeout: float):
    request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(request, timeout=timeout)


def _http_error(url: str, code: int, reason: str) -> DownloadError | _TransientError:
    if code >= 500 or code in (408, 429):
        return _TransientError(
            f"The server answered HTTP {code} ({reason}) for {url}. This is usually temporary "
            "(server overloaded or under maintenance): wait a few minutes and re-run the same "
            "command, which resumes any partial download. If it persists, try a mirror with --base-url."
        )
    if code in (401, 403):
        hint = ("The file is not public at this address, or the link expired: check --base-url, "
                "or download the file in a browser and place it in the download folder.")
    elif code == 404:
        hint = ("Nothing is at that address: if you passed --base-url, check that the mirror serves "
                "the same file names under it; otherwise the dataset may have moved upstream.")
    else:
        hint = "Check the address (and --base-url, if given)."
    return DownloadError(f"Download failed: the server answered HTTP {code} ({reason}) for {url}. "
                         f"{hint} Then re-run the same command.")


def _network_error(url: str, reason: object) -> _TransientError:
    return _TransientError(
        f"Could not reach the server for {url} ({reason}). Check your internet connection, "
        "proxy (HTTPS_PROXY) or firewall, or use a reachable mirror with --base-url; then re-run "
        "the same command, which resumes any partial download."
    )


def read_json(url: str, *, timeout: float = 60.0, retries: int = 2, retry_wait: float = 2.0) -> dict:
    """GET a JSON document (e.g. a Zenodo record) with the same error handling as :func:`fetch`."""

    def attempt() -> dict:
        try:
            with _request(url, headers={"Accept": "application/json"}, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(url, exc.code, exc.reason) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _network_error(url, getattr(exc, "reason", exc)) from None
        try:
            return json.loads(body)
        except ValueError:
            raise DownloadError(
                f"The answer from {url} is not valid JSON (got {len(body)} bytes starting "
                f"{body[:60]!r}). The server may be showing an error page; check --base-url "
                "(it must point at the record's API address) and re-run."
            ) from None

    return _with_retries(attempt, retries=retries, retry_wait=retry_wait)


def remote_size(url: str, *, timeout: float = 30.0) -> int | None:
    """Content-Length from a HEAD request, or ``None`` when the server does not say."""
    try:
        with _request(url, method="HEAD", timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        error = _http_error(url, exc.code, exc.reason)
        raise DownloadError(str(error)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(str(_network_error(url, getattr(exc, "reason", exc)))) from None
    return int(length) if length is not None and length.isdigit() else None


def _with_retries(attempt, *, retries: int, retry_wait: float):
    for attempt_number in range(retries + 1):
        try:
            return attempt()
        except _TransientError as exc:
            if attempt_number == retries:
                raise DownloadError(str(exc)) from None
            # Exponential back-off: a busy server gets time to recover.
            time.sleep(retry_wait * 2**attempt_number)
    raise AssertionError("unreachable")


def fetch(
    remote: RemoteFile,
    folder: str | os.PathLike,
    *,
    timeout: float = 60.0,
    retries: int = 2,
    retry_wait: float = 2.0,
    progress: bool = True,
) -> Path:
    """Download ``remote`` into ``folder`` and return the verified file's path.

    A file already present under its final name is re-verified (when a checksum is known)
    and kept; a ``.part`` left by an interrupted run is resumed. An interrupted transfer,
    a network failure or an HTTP 5xx is retried ``retries`` times (resuming each time);
    after that, or on an HTTP 4xx, a :class:`DownloadError` explains what to do, and the
    ``.part`` is kept so that the next run resumes. A checksum mismatch deletes the
    ``.part`` and raises :class:`ChecksumError`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.name
    part = final.with_name(final.name + ".part")
    expected = parse_checksum(remote.checksum) if remote.checksum else None

    if final.exists():
        if expected is None or file_checksum(final, expected[0], progress=progress) == expected[1]:
            return final
        # Verified once, different now: the file was changed on disk or upstream re-published it.
        final.unlink()

    _with_retries(lambda: _transfer(remote, part, timeout=timeout, progress=progress),
                  retries=retries, retry_wait=retry_wait)

    if expected is not None:
        algorithm, digest = expected
        actual = file_checksum(part, algorithm, progress=progress)
        if actual != digest:
            part.unlink()
            raise ChecksumError(
                f"The downloaded file {remote.name} from {remote.url} has {algorithm} {actual}, "
                f"but {digest} was expected, so it was deleted. Either the transfer was corrupted "
                "(re-run the same command to download it again), or the server or mirror (--base-url) "
                "serves a different file, or the file changed upstream; if re-running gives the same "
                "mismatch, try another mirror or report it to the maintainers of this package."
            )
    os.replace(part, final)
    return final


def _transfer(remote: RemoteFile, part: Path, *, timeout: float, progress: bool) -> None:
    """One attempt to bring ``part`` to the full size of ``remote``."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    if remote.size is not None and offset == remote.size:
        return  # a previous run received every byte but stopped before the check

    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _request(remote.url, headers=headers, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The range starts at or beyond the end: complete, or longer than the file.
            total = _content_range_total(exc.headers.get("Content-Range"))
            if total != offset:
                part.unlink()
                raise _TransientError(f"The partial download of {remote.name} was longer than the file "
                                      "on the server; it was deleted and the download restarts.") from None
            return
        raise _http_error(remote.url, exc.code, exc.reason) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _network_error(remote.url, getattr(exc, "reason", exc)) from None

    with response:
        if offset and response.status == 206 and _content_range_start(response) != offset:
            part.unlink()  # a piece from elsewhere in the file: appending it would corrupt the file
            raise _TransientError(f"The server answered the resume of {remote.name} with another byte range; "
                                  "the partial file was deleted and the download restarts.")
        if offset and response.status != 206:
            offset = 0  # the server ignored the range: the body is the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else remote.size
        if total is not None:
            ensure_free_space(part.parent, total - offset, what=f"downloading {remote.name}")
        received = offset
        try:
            with open(part, "ab" if offset else "wb") as fh, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=remote.name, disable=not progress,
            ) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, socket.timeout)):
                raise  # a local disk error is not a network problem; let it surface as such
            raise _interrupted(remote, part, received, total, exc) from None
    if total is not None and received < total:
        raise _interrupted(remote, part, received, total, "the connection closed early")


def _interrupted(remote: RemoteFile, part: Path, received: int, total: int | None, reason) -> _TransientError:
    return _TransientError(
        f"The download of {remote.name} from {remote.url} stopped after {format_bytes(received)} of "
        f"{format_bytes(total)} ({reason}). The partial file is kept as {part}: re-run the same "
        "command to resume from there (check your connection, or use a mirror with --base-url, "
        "if it keeps stopping)."
    )


def _content_range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _content_range_total(header: str | None) -> int | None:
    match = re.match(r"bytes [^/]*/(\d+)", header or "")
    return int(match.group(1)) if match else None


def bytes_to_fetch(remotes: list[RemoteFile], folder: str | os.PathLike) -> int:
    """Bytes still to download for ``remotes`` into ``folder`` (files of unknown size count 0):
    complete files count nothing, partial ones what they lack."""
    folder = Path(folder)
    total = 0
    for remote in remotes:
        if remote.size is None or (folder / remote.name).exists():
            continue
        part = folder / f"{remote.name}.part"
        total += max(remote.size - (part.stat().st_size if part.exists() else 0), 0)
    return total


def describe(remotes: list[RemoteFile], folder: str | os.PathLike) -> list[str]:
    """One line per file for ``--dry-run``: name, size, state in ``folder``, address."""
    folder = Path(folder)
    lines = []
    for remote in remotes:
        part = folder / f"{remote.name}.part"
        if (folder / remote.name).exists():
            state = "downloaded (will be re-verified)"
        elif part.exists():
            state = f"partial: {format_bytes(part.stat().st_size)} received, will resume"
        else:
            state = "to download"
        check = remote.checksum or "no published checksum (sha256 will be recorded)"
        lines.append(f"{remote.name}  {format_bytes(remote.size)}  [{state}]  {check}\n    {remote.url}")
    total = sum(r.size for r in remotes if r.size is not None)
    unknown = sum(r.size is None for r in remotes)
    lines.append(f"total: {format_bytes(total)}" + (f" plus {unknown} file(s) of unknown size" if unknown else "")
                 + f"; still to fetch: {format_bytes(bytes_to_fetch(remotes, folder))}")
    return lines
