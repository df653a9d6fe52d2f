"""Writing the ``.dd`` container: lay out sections after the header, solve the bit account,
and replace the destination atomically."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..limits import MAGIC, MAJOR, MINOR, PREAMBLE_SIZE
from .bits import bit_account
from .header import Header, SectionEntry, encode_header
from .layout import PREAMBLE, align, content_hash, crc32
from .sections import EncodedSection


def pack_preamble(header: bytes, file_length: int, major: int = MAJOR, minor: int = MINOR) -> bytes:
    pre = PREAMBLE.pack(MAGIC, major, minor, len(header), file_length, crc32(header))
    return pre + struct.pack("<I", crc32(pre))


def build(dataset: dict[str, Any], provenance: dict[str, Any], recipe: dict[str, Any],
          sections: Sequence[EncodedSection]) -> bytes:
    """Lay out a complete file in memory. The bit account is solved to a fixed point because
    it counts the header that contains it."""
    provenance = {**provenance, "content_hash": content_hash([s.data for s in sections])}
    header_length = 0
    for _ in range(16):
        offset = PREAMBLE_SIZE + header_length
        entries = []
        for s in sections:
            offset = align(offset, s.alignment)
            entries.append(SectionEntry(s.kind, s.codec, s.component, offset, len(s.data), s.alignment,
                                        crc32(s.data), s.required, s.params, s.class_bytes))
            offset += len(s.data)
        account = bit_account(header_length, offset, entries, dataset["num_classes"])
        header = encode_header(Header(dataset, entries, provenance, recipe, account))
        if len(header) == header_length:
            break
        header_length = len(header)
    else:
        raise RuntimeError("bit account did not reach a fixed point")
    out = bytearray(offset)
    out[:PREAMBLE_SIZE] = pack_preamble(header, offset)
    out[PREAMBLE_SIZE:PREAMBLE_SIZE + header_length] = header
    for e, s in zip(entries, sections):
        out[e.offset:e.offset + e.length] = s.data
    return bytes(out)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` so that ``path`` holds either its old content or all of the new, never a
    mix: temp file in the same directory, fsync, rename, fsync the directory."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
