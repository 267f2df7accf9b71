"""Check a MetaImage (``.mha`` / ``.mhd``) header before an image reader sees the file.

A MetaImage header is text, ``Key = Value`` per line, ending with ``ElementDataFile``:
``LOCAL`` when the voxels follow the header in the same file, otherwise the name of another
file (any path, ``../`` or absolute, or a ``LIST`` of files) that SimpleITK would read. A
downloaded scan must never make the reader open other local files, nor allocate memory for
voxels it does not hold, so :func:`check_metaimage` accepts a file only when

- ``ElementDataFile`` is ``LOCAL`` and the data is binary;
- the header's claim, ``prod(DimSize) x bytes(ElementType) x ElementNumberOfChannels``
  bytes, is at most ``max_bytes``;
- the bytes after the header are exactly that many, or, with ``CompressedData = True``,
  a zlib or gzip stream (``CompressedDataSize`` bytes when given) that inflates to exactly
  that many. The stream is inflated in bounded pieces and abandoned as soon as it exceeds
  the claim, so checking costs no memory.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

from .remote import CHUNK_BYTES, DownloadError, format_bytes

# MetaIO's element types and their sizes in bytes (MET_LONG is 32-bit in MetaIO).
ELEMENT_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
# A PI-CAI scan holds tens of MB; a claim above this is not a scan.
MAX_VOXEL_BYTES = 2 << 30
_MAX_HEADER_BYTES = 64 << 10
_TRUE = ("true", "1")


def _fail(path: Path, problem: str) -> DownloadError:
    return DownloadError(
        f"The scan {path} was not read: {problem}. Published scans keep their voxels in the file "
        "itself, so this is a damaged or tampered copy: delete the archive it came from (and its "
        "extracted folder) and download it again from the official address (drop --base-url if you "
        "used a mirror); converted cases are kept."
    )


def read_header(path: str | os.PathLike) -> tuple[dict[str, str], int]:
    """The header's ``{key: value}`` (keys as written) and its length in bytes, up to and
    including the ``ElementDataFile`` line."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(_MAX_HEADER_BYTES)
    fields, offset = {}, 0
    for line in head.splitlines(keepends=True):
        offset += len(line)
        key, equals, value = line.decode("latin-1").partition("=")
        if not equals:
            break
        fields[key.strip()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            return fields, offset
    raise _fail(path, "it has no MetaImage header ending in an ElementDataFile line")


def check_metaimage(path: str | os.PathLike, *, max_bytes: int = MAX_VOXEL_BYTES) -> None:
    """Raise :class:`DownloadError` unless ``path`` is a self-contained MetaImage whose voxel
    data has exactly the size its header claims (see the module docstring)."""
    path = Path(path)
    raw, header_bytes = read_header(path)
    fields = {key.lower(): value for key, value in raw.items()}
    data_file = fields["elementdatafile"]
    if data_file.upper() != "LOCAL":
        raise _fail(path, f"its header names another file for the voxel data (ElementDataFile = {data_file})")
    if fields.get("binarydata", "true").lower() not in _TRUE:
        raise _fail(path, "its header declares text (BinaryData = False) instead of binary voxel data")
    if fields.get("headersize", "0") != "0":
        raise _fail(path, f"its header asks to skip bytes before the voxels (HeaderSize = {fields['headersize']})")
    element = fields.get("elementtype", "")
    try:
        dims = [int(n) for n in fields["dimsize"].split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        ndims = int(fields.get("ndims", len(dims)))
    except (KeyError, ValueError):
        raise _fail(
            path, f"its DimSize ({fields.get('dimsize')!r}) or channel count is not a list of whole numbers"
        ) from None
    if element not in ELEMENT_BYTES or not dims or len(dims) != ndims or min(dims + [channels]) < 1:
        raise _fail(
            path,
            f"its header (NDims {ndims}, DimSize {dims}, ElementType {element!r}, "
            f"{channels} channel(s)) does not describe an image",
        )
    claimed = math.prod(dims) * ELEMENT_BYTES[element] * channels
    if claimed > max_bytes:
        raise _fail(
            path,
            f"its header claims {format_bytes(claimed)} of voxels, more than the "
            f"{format_bytes(max_bytes)} any scan holds",
        )
    present = path.stat().st_size - header_bytes
    if fields.get("compresseddata", "false").lower() not in _TRUE:
        if present != claimed:
            raise _fail(path, f"its header claims {claimed} bytes of voxels, but {present} follow it")
        return
    stored = fields.get("compresseddatasize")
    if stored is not None and stored != str(present):
        raise _fail(path, f"its header claims {stored} bytes of compressed voxels, but {present} follow it")
    inflated = _inflated_size(path, header_bytes, limit=claimed)
    if inflated is None:
        raise _fail(path, "its compressed voxel data is damaged or cut short")
    if inflated != claimed:
        shown = f"more than {claimed}" if inflated > claimed else str(inflated)
        raise _fail(path, f"its header claims {claimed} bytes of voxels, but its compressed data inflates to {shown}")


def _inflated_size(path: Path, start: int, *, limit: int) -> int | None:
    """Bytes the zlib/gzip stream from ``start`` inflates to, counted only up to just past
    ``limit``; ``None`` for a stream that is damaged or ends early."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # 32: accept a zlib or a gzip header
    total, pending, at_end = 0, b"", False
    with open(path, "rb") as fh:
        fh.seek(start)
        try:
            while not inflater.eof and total <= limit:
                if not pending and not at_end:
                    pending = fh.read(CHUNK_BYTES)
                    at_end = not pending
                out = inflater.decompress(pending, CHUNK_BYTES)  # bounded output: a bomb costs no memory
                pending = inflater.unconsumed_tail
                total += len(out)
                if at_end and not out:
                    break
        except zlib.error:
            return None
    return total if inflater.eof or total > limit else None
