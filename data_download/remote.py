"""HTTP downloads that can be trusted: resumable, verified, bounded, never half-written.

A file is streamed to ``<name>.part``. An existing ``.part`` is resumed with an HTTP
``Range`` request (used only when the server answers ``206 Partial Content`` for the
right offset; a ``200`` restarts from zero). When the transfer is complete it is verified
and only then renamed to ``<name>``, so a file under its final name is always whole:

- against its checksum, when one is known, and against a checksum pinned in the code
  (``RemoteFile.pinned``), in the same read of the file;
- by ``verify(path)``, when given (e.g. an archive's own CRCs, for a file published without
  a checksum), so a body cut short without ``Content-Length`` is never taken as complete.

A resumed file that fails verification (a ``.part`` of another origin) is deleted and
downloaded again from zero. Every transfer is bounded: an HTML page is refused as soon as
it arrives; no more than the expected size (or ``max_bytes`` for a file of unknown size)
is accepted; free disk space is checked before and while writing; and a transfer slower
than ``min_rate`` bytes/s over any ``timeout`` seconds counts as stalled, like silence for
``timeout`` seconds. Every failure becomes a :class:`DownloadError` whose message says what
happened and what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import numbers
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm

CHUNK_BYTES = 1 << 20
USER_AGENT = "afl-tutorial-data-download/0.1"
# Slower than this on average over a whole --timeout window counts as a stalled transfer.
MIN_RATE = 1024
# A file of unknown size larger than this is refused (the largest unsized download, GitHub's
# picai_labels archive, is far smaller); a known size is its own ceiling.
MAX_UNSIZED_BYTES = 4 << 30
# While the size is unknown, free space is checked again after every this many bytes.
SPACE_CHECK_BYTES = 64 << 20
# A JSON record (e.g. Zenodo's) larger than this is not a record.
MAX_JSON_BYTES = 16 << 20
_HEX = re.compile(r"^[0-9a-f]+$")
_DIGEST_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


class DownloadError(RuntimeError):
    """A download or conversion failed; ``str(error)`` is a paragraph for the user."""


class ChecksumError(DownloadError):
    """A completed transfer does not have the expected checksum."""


class PinnedChecksumError(ChecksumError):
    """A completed transfer has its expected checksum but not the one pinned in the code
    (``RemoteFile.pinned``): ``algorithm``, ``expected`` (the pin) and ``actual`` digests."""

    def __init__(self, message: str, *, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.algorithm, self.expected, self.actual = algorithm, expected, actual


class OptionError(DownloadError, ValueError):
    """An option has a value that cannot work (``--retries -1``, ``--base-url notaurl``)."""


class _TransientError(Exception):
    """A failure worth retrying (interrupted transfer, 5xx, network); never leaves fetch()."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: where from, under which name, and what it must hash to.

    ``checksum`` is ``"<algorithm>:<hex>"`` (``"md5:..."``, ``"sha256:..."``) or a bare hex
    digest whose length names the algorithm; ``None`` when no trustworthy value is known.
    ``size`` in bytes, when known in advance (used for the free-disk check and progress, and
    the most bytes accepted); ``max_bytes`` is the most bytes accepted when it is not.
    ``pinned`` (same format) is a checksum written into the code, not read from the server
    or from a record a mirror could supply: it is checked as well, in the same read of the
    file, and a mismatch is a :class:`PinnedChecksumError`.
    """

    url: str
    name: str
    checksum: str | None = None
    size: int | None = None
    max_bytes: int = MAX_UNSIZED_BYTES
    pinned: str | None = None


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:ABC..."`` or bare ``"abc..."`` -> ``("md5", "abc...")``; md5, sha1, sha256 or
    sha512, with a hex digest of that algorithm's length (else :class:`ValueError`)."""
    algorithm, _, digest = checksum.strip().lower().rpartition(":")
    if not algorithm:
        algorithm = next((name for name, length in _DIGEST_LENGTHS.items() if length == len(digest)), "")
    if not _HEX.match(digest) or _DIGEST_LENGTHS.get(algorithm) != len(digest):
        raise ValueError(
            f"Cannot read the checksum {checksum!r}: expected '<algorithm>:<hex digest>' "
            "(e.g. 'md5:240a19d7...') or a bare hex digest, with algorithm md5, sha1, sha256 or "
            "sha512 and a digest of that algorithm's length."
        )
    return algorithm, digest


def check_url(url: str, *, option: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``url`` without a trailing ``/`` if it is an absolute address of one of ``schemes``,
    else :class:`OptionError` naming ``option``."""
    parsed = urllib.parse.urlsplit(str(url))
    if parsed.scheme.lower() not in schemes or not (parsed.netloc or parsed.scheme == "file"):
        raise OptionError(
            f"{option} {url!r} is not a full address starting with {' or '.join(s + '://' for s in schemes)}. "
            f"Give the whole address, e.g. {option} https://example.org/mirror, or leave {option} out to use "
            "the official source."
        )
    return str(url).rstrip("/")


def check_positive(option: str, value, *, whole: bool = False, hint: str) -> None:
    """:class:`OptionError` naming ``option`` unless ``value`` (a number, or a sequence of them
    such as the three of ``--spacing``) is finite and greater than 0, and a whole number where
    ``whole``; ``hint`` says what to give instead."""
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    kind = numbers.Integral if whole else numbers.Real
    # NaN fails 0 < v; inf fails v < inf.
    if values and all(isinstance(v, kind) and not isinstance(v, bool) and 0 < v < math.inf for v in values):
        return
    wanted = ("whole number" if whole else "finite number") + ("s" if len(values) > 1 else "")
    article = "" if len(values) > 1 else "a "
    shown = " ".join(map(str, values)) or "nothing"
    raise OptionError(f"{option} must be {article}{wanted} greater than 0, not {shown}. {hint}")


def check_transfer_options(*, timeout: float, retries: int) -> None:
    """:class:`OptionError` unless ``timeout`` is a positive number of seconds and
    ``retries`` a whole number >= 0."""
    check_positive("--timeout", timeout, hint="Give the seconds to wait for data, e.g. --timeout 60.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise OptionError(f"--retries must be a whole number, 0 or more (e.g. --retries 2), not {retries!r}.")


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256", *, progress: bool = False) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    return file_checksums(path, [algorithm], progress=progress)[algorithm]


def file_checksums(path: str | os.PathLike, algorithms, *, progress: bool = False) -> dict[str, str]:
    """``{algorithm: hex digest}`` of a file for every algorithm named, in one read (1 MiB chunks)."""
    path = Path(path)
    digests = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
    with (
        open(path, "rb") as fh,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"verify {path.name}",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        while chunk := fh.read(CHUNK_BYTES):
            for digest in digests.values():
                digest.update(chunk)
            bar.update(len(chunk))
    return {algorithm: digest.hexdigest() for algorithm, digest in digests.items()}


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
            "the downloaded archives), then re-run the same command; completed downloads are kept "
            "and a partial one resumes."
        )


def _request(url: str, *, method: str = "GET", headers: dict | None = None, timeout: float):
    try:
        request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})})
    except ValueError as exc:  # "unknown url type"
        raise OptionError(
            f"Cannot download from {url!r} ({exc}): it is not a web address. Check --base-url "
            "(and the other address options), or leave them out to use the official source."
        ) from None
    return urllib.request.urlopen(request, timeout=timeout)


def _http_error(url: str, code: int, reason: str) -> DownloadError | _TransientError:
    if code >= 500 or code in (408, 429):
        return _TransientError(
            f"The server answered HTTP {code} ({reason}) for {url}. This is usually temporary "
            "(server overloaded or under maintenance): wait a few minutes and re-run the same "
            "command, which resumes any partial download. If it persists, try a mirror with --base-url."
        )
    if code in (401, 403):
        hint = (
            "The file is not public at this address, or the link expired: check --base-url, "
            "or download the file in a browser and place it in the download folder."
        )
    elif code == 404:
        hint = (
            "Nothing is at that address: if you passed --base-url, check that the mirror serves "
            "the same file names under it; otherwise the dataset may have moved upstream."
        )
    else:
        hint = "Check the address (and --base-url, if given)."
    return DownloadError(
        f"Download failed: the server answered HTTP {code} ({reason}) for {url}. {hint} Then re-run the same command."
    )


def _network_error(url: str, reason: object) -> _TransientError:
    return _TransientError(
        f"Could not reach the server for {url} ({reason}). Check your internet connection, "
        "proxy (HTTPS_PROXY) or firewall, or use a reachable mirror with --base-url; then re-run "
        "the same command, which resumes any partial download."
    )


def _stream(response, write: Callable[[bytes], None], *, timeout: float, min_rate: float) -> None:
    """Hand the body of ``response`` to ``write`` as it arrives. :class:`TimeoutError` when
    less than ``min_rate * t`` bytes arrive in a window of ``t >= timeout`` seconds: the
    socket's own timeout only notices silence, not a trickle."""
    window_start, window_bytes = time.monotonic(), 0
    while chunk := response.read1(CHUNK_BYTES):  # read1: whatever has arrived, never waits for a full chunk
        write(chunk)
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= timeout:
            if window_bytes < min_rate * elapsed:
                raise TimeoutError(
                    f"only {format_bytes(window_bytes)} arrived in {elapsed:.0f} s, below the "
                    f"minimum of {format_bytes(min_rate)}/s"
                )
            window_start, window_bytes = time.monotonic(), 0


def read_json(url: str, *, timeout: float = 60.0, retries: int = 2, retry_wait: float = 2.0) -> dict:
    """GET a JSON object (e.g. a Zenodo record) with the same error handling as :func:`fetch`."""
    check_transfer_options(timeout=timeout, retries=retries)

    def keep(body: bytearray, chunk: bytes) -> None:
        if len(body) + len(chunk) > MAX_JSON_BYTES:
            raise DownloadError(
                f"The answer from {url} is larger than {format_bytes(MAX_JSON_BYTES)}, far more "
                "than a record: check --base-url (and --record-url) and re-run."
            )
        body.extend(chunk)

    def attempt() -> dict:
        body = bytearray()
        try:
            with _request(url, headers={"Accept": "application/json"}, timeout=timeout) as response:
                _stream(response, lambda chunk: keep(body, chunk), timeout=timeout, min_rate=MIN_RATE)
        except urllib.error.HTTPError as exc:
            raise _http_error(url, exc.code, exc.reason) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _network_error(url, getattr(exc, "reason", exc)) from None
        try:
            record = json.loads(body)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise DownloadError(
                f"The answer from {url} is not a JSON record (got {len(body)} bytes starting "
                f"{bytes(body[:60])!r}). The server may be showing an error page; check --base-url "
                "(it must point at the record's API address) and re-run."
            )
        return record

    return _with_retries(attempt, retries=retries, retry_wait=retry_wait)


def remote_size(url: str, *, timeout: float = 30.0) -> int | None:
    """Content-Length from a HEAD request, or ``None`` when the server does not say."""
    check_transfer_options(timeout=timeout, retries=0)
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
    verify: Callable[[Path], str | None] | None = None,
    min_rate: float = MIN_RATE,
) -> Path:
    """Download ``remote`` into ``folder`` and return the verified file's path.

    ``verify(path)`` (optional) returns ``None`` for a good file, else what is wrong with it
    as a phrase completing "the file ..." (e.g. ``"is not a zip or tar archive"``).
    A file already present under its final name is re-verified and kept; a ``.part`` left by
    an interrupted run is resumed. An interrupted or stalled transfer (see :func:`_stream`),
    a network failure or an HTTP 5xx is retried ``retries`` times (resuming each time), and
    so is a file that fails verification after a resume or without a checksum (from zero:
    the ``.part`` is deleted); after that, or on an HTTP 4xx, a :class:`DownloadError`
    explains what to do. A fresh download with the wrong checksum is deleted and raises
    :class:`ChecksumError` at once (:class:`PinnedChecksumError` when only ``remote.pinned``
    differs).
    """
    check_transfer_options(timeout=timeout, retries=retries)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.name
    part = final.with_name(final.name + ".part")
    expected = parse_checksum(remote.checksum) if remote.checksum else None
    pinned = parse_checksum(remote.pinned) if remote.pinned else None

    if final.exists():
        if _problem(final, expected, pinned, verify, progress) is None:
            return final
        # Verified once, different now: the file was changed on disk or upstream re-published it.
        final.unlink()

    def attempt() -> None:
        continued = _transfer(remote, part, timeout=timeout, min_rate=min_rate, progress=progress)
        problem = _problem(part, expected, pinned, verify, progress)
        if problem is None:
            return
        part.unlink()
        message = f"The downloaded file {remote.name} from {remote.url} {problem}, so it was deleted."
        if continued or (expected is None and pinned is None):
            # Resumed bytes may come from another file, and a body without a checksum may have
            # been cut short: both are cured by a transfer from zero.
            raise _TransientError(
                f"{message} The transfer was cut short or the partial download it resumed came from another "
                "file: the download starts again from the beginning (automatically while retries remain, "
                "otherwise when you re-run the same command). If it keeps failing, the address serves "
                "something else: check --base-url (or the other address options)."
            )
        advice = (
            " Either the transfer was corrupted (re-run the same command to download it again), "
            "or the server or mirror (--base-url) serves a different file, or the file changed upstream; "
            "if re-running gives the same mismatch, try another mirror or report it to the maintainers "
            "of this package."
        )
        if isinstance(problem, _Mismatch) and problem.pinned:
            raise PinnedChecksumError(
                message + advice, algorithm=problem.algorithm, expected=problem.expected, actual=problem.actual
            )
        raise ChecksumError(message + advice)

    _with_retries(attempt, retries=retries, retry_wait=retry_wait)
    os.replace(part, final)
    return final


@dataclass(frozen=True)
class _Mismatch:
    """A checksum that differs; as a string, a phrase completing "the file ..."."""

    algorithm: str
    expected: str
    actual: str
    pinned: bool  # the pin in the code differs (the other checksum, if any, matched)

    def __str__(self) -> str:
        note = " (the value pinned for it in the code)" if self.pinned else ""
        return f"has {self.algorithm} {self.actual}, but {self.expected} was expected{note}"


def _problem(path: Path, expected, pinned, verify, progress: bool) -> str | _Mismatch | None:
    """What is wrong with ``path`` (a phrase completing "the file ...", or a :class:`_Mismatch`),
    else ``None``. ``expected`` and ``pinned`` are ``(algorithm, digest)`` or ``None``, both
    computed in one read of the file; when both differ, ``expected`` is the one named."""
    checks = [(check, is_pin) for check, is_pin in ((expected, False), (pinned, True)) if check is not None]
    if checks:
        actual = file_checksums(path, dict.fromkeys(algorithm for (algorithm, _), _ in checks), progress=progress)
        for (algorithm, digest), is_pin in checks:
            if actual[algorithm] != digest:
                return _Mismatch(algorithm, digest, actual[algorithm], is_pin)
    return verify(path) if verify is not None else None


class _Refused(Exception):
    """The body is not the file (a web page, or more bytes than the file can have)."""


def _transfer(remote: RemoteFile, part: Path, *, timeout: float, min_rate: float, progress: bool) -> bool:
    """One attempt to bring ``part`` to the full size of ``remote``. True when it kept bytes
    already on disk, whose origin only verification can confirm."""
    offset = part.stat().st_size if part.exists() else 0
    limit = remote.size if remote.size is not None else remote.max_bytes
    if offset > limit:
        part.unlink()
        offset = 0
    if remote.size is not None and offset == remote.size:
        return True  # a previous run received every byte but stopped before the check
    response = _request_from(remote, part, offset, timeout=timeout)
    if response is None:
        return True  # the server says the bytes on disk are the whole file
    with response:
        offset, total = _check_response(remote, response, part, offset, limit)
        received = _receive(
            remote,
            response,
            part,
            offset=offset,
            total=total,
            limit=limit,
            timeout=timeout,
            min_rate=min_rate,
            progress=progress,
        )
    if total is not None and received < total:
        raise _interrupted(remote, part, received, total, "the connection closed early")
    return offset > 0


def _request_from(remote: RemoteFile, part: Path, offset: int, *, timeout: float):
    """The response to a request for ``remote`` from byte ``offset`` on; ``None`` when the
    server says the ``offset`` bytes of ``part`` are already the whole file."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        return _request(remote.url, headers=headers, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The range starts at or beyond the end: complete, or longer than the file.
            total = _content_range_total(exc.headers.get("Content-Range"))
            if total != offset:
                part.unlink()
                raise _TransientError(
                    f"The partial download of {remote.name} was longer than the file on the server, so it was "
                    "deleted: re-run the same command to download the file again from the beginning."
                ) from None
            return None
        raise _http_error(remote.url, exc.code, exc.reason) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _network_error(remote.url, getattr(exc, "reason", exc)) from None


def _check_response(remote: RemoteFile, response, part: Path, offset: int, limit: int) -> tuple[int, int | None]:
    """Check a response before its body is read: the byte range it resumes from, not a web
    page, not larger than ``limit``, room on the disk. Returns the offset its body starts
    at (0 when the server ignored the range) and the file's total size (``None``: unknown)."""
    if offset and response.status == 206 and _content_range_start(response) != offset:
        part.unlink()  # a piece from elsewhere in the file: appending it would corrupt the file
        raise _TransientError(
            f"The server answered the resume of {remote.name} with another byte range, so the partial file "
            "was deleted: re-run the same command to download the file again from the beginning."
        )
    if offset and response.status != 206:
        offset = 0  # the server ignored the range: the body is the whole file
    if response.headers.get_content_type() == "text/html":
        raise DownloadError(_web_page(remote))
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None and length.isdigit() else remote.size
    if total is not None and total > limit:
        raise DownloadError(_too_large(remote, total, limit))
    ensure_free_space(
        part.parent, (SPACE_CHECK_BYTES if total is None else total) - offset, what=f"downloading {remote.name}"
    )
    return offset, total


def _receive(
    remote: RemoteFile,
    response,
    part: Path,
    *,
    offset: int,
    total: int | None,
    limit: int,
    timeout: float,
    min_rate: float,
    progress: bool,
) -> int:
    """Write the body of ``response`` to ``part`` from byte ``offset`` on; return the size of
    ``part`` then. A web page or a body beyond ``limit`` is deleted, and the disk's free
    space is checked again as the bytes arrive."""
    received = checked = offset

    def write(chunk: bytes) -> None:
        nonlocal received, checked
        if received == 0 and chunk.lstrip()[:16].lower().startswith(_HTML_STARTS):
            raise _Refused(_web_page(remote))
        if received + len(chunk) > limit:
            raise _Refused(_too_large(remote, received + len(chunk), limit))
        fh.write(chunk)
        received += len(chunk)
        bar.update(len(chunk))
        if received - checked >= SPACE_CHECK_BYTES:  # a size announced or not, the disk may fill meanwhile
            ensure_free_space(
                part.parent,
                SPACE_CHECK_BYTES if total is None else total - received,
                what=f"downloading {remote.name}",
            )
            checked = received

    try:
        with (
            open(part, "ab" if offset else "wb") as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=remote.name,
                disable=not progress,
            ) as bar,
        ):
            _stream(response, write, timeout=timeout, min_rate=min_rate)
    except _Refused as exc:
        part.unlink()
        raise DownloadError(str(exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
            raise  # a local disk error is not a network problem; let it surface as such
        raise _interrupted(remote, part, received, total, exc) from None
    return received


def _web_page(remote: RemoteFile) -> str:
    return (
        f"The server answered {remote.url} with a web page (HTML) instead of the file {remote.name}: "
        "an error or sign-in page, or the address points at a page about the file. Nothing was kept. "
        "Open the address in a browser to see what it says, and check --base-url (or the other "
        "address options); then re-run the same command."
    )


def _too_large(remote: RemoteFile, size: int, limit: int) -> str:
    expected = (
        f"the file is {format_bytes(limit)}"
        if remote.size is not None
        else f"no more than {format_bytes(limit)} is accepted for it"
    )
    return (
        f"The server sends {format_bytes(size)} or more for {remote.name} from {remote.url}, but {expected}; "
        "the download was stopped and deleted. The address serves something else (or an endless "
        "stream): check --base-url (or the other address options) and re-run."
    )


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
        if remote.pinned:
            check += f", pinned {remote.pinned}"
        lines.append(f"{remote.name}  {format_bytes(remote.size)}  [{state}]  {check}\n    {remote.url}")
    total = sum(r.size for r in remotes if r.size is not None)
    unknown = sum(r.size is None for r in remotes)
    lines.append(
        f"total: {format_bytes(total)}"
        + (f" plus {unknown} file(s) of unknown size" if unknown else "")
        + f"; still to fetch: {format_bytes(bytes_to_fetch(remotes, folder))}"
    )
    return lines
