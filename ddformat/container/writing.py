"""Writing the ``.dd`` container: plan the layout from the sections' lengths and checksums,
have the reader open the plan, then stream the file into a temporary file that
atomically replaces the destination.

Nothing is written before the header is complete and valid: the header holds every section's
length and CRC-32 and the SHA-256 of all payloads, which the encoded sections give
without being copied. Writing then streams the preamble, header, padding and each payload in
turn, so the file never exists as one buffer in memory.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from ..errors import TruncatedError
from ..limits import MAGIC, MAJOR, MINOR, PREAMBLE_SIZE
from .header import SectionEntry, encode_header, place
from .layout import PREAMBLE, content_hash, crc32
from .sections import EncodedSection

WRITE_PIECE = 16 * 2**20


def pack_preamble(header: bytes, file_length: int, major: int = MAJOR, minor: int = MINOR) -> bytes:
    pre = PREAMBLE.pack(MAGIC, major, minor, len(header), file_length, crc32(header))
    return pre + struct.pack("<I", crc32(pre))


@dataclass(frozen=True)
class Plan:
    """A complete file before it is written: its preamble and header, and where each payload
    goes. It serves reads like a byte source (``size``, ``read``, ``close``), so a reader can
    open the file it describes before a single byte reaches the disk."""

    head: bytes
    entries: list[SectionEntry]
    payloads: list[Any]
    size: int

    def pieces(self) -> Iterator[tuple[int, bytes | memoryview]]:
        """(offset, bytes) of the file in order: preamble and header, zero padding, payloads."""
        yield 0, self.head
        pos = len(self.head)
        for entry, payload in zip(self.entries, self.payloads):
            if entry.offset > pos:
                yield pos, bytes(entry.offset - pos)
            yield entry.offset, memoryview(payload).cast("B")
            pos = entry.offset + entry.length

    def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes ``offset`` to ``offset + length`` of the planned file; a view, without copying,
        when they lie within one payload."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedError(f"read of {length} bytes past the end of a {self.size}-byte file", offset=offset)
        parts = []
        for start, piece in self.pieces():
            lo, hi = max(offset, start), min(offset + length, start + len(piece))
            if lo < hi:
                parts.append(piece[lo - start:hi - start])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        pass

    def write_to(self, f: BinaryIO) -> None:
        for _, piece in self.pieces():
            for a in range(0, len(piece), WRITE_PIECE):
                f.write(piece[a:a + WRITE_PIECE])


def plan(dataset: dict[str, Any], provenance: dict[str, Any], recipe: dict[str, Any],
         sections: Sequence[EncodedSection]) -> Plan:
    """Lay out a file: the header holds no offsets and no bit account (both follow from it and
    its length), so it is encoded once and the sections placed after it. The plan serves reads,
    so ``save`` checks it by opening it with the reader (header schema, layout, limits) before
    writing it."""
    payloads = [s.data for s in sections]
    provenance = {**provenance, "content_hash": content_hash(payloads)}
    entries = [SectionEntry(s.kind, s.codec, s.component, 0, memoryview(s.data).nbytes, s.alignment, crc32(s.data),
                            s.required, s.params, s.class_bytes) for s in sections]
    header = encode_header(dataset, entries, provenance, recipe)
    entries = place(entries, PREAMBLE_SIZE + len(header))
    size = entries[-1].offset + entries[-1].length if entries else PREAMBLE_SIZE + len(header)
    return Plan(pack_preamble(header, size) + header, entries, payloads, size)


def build(dataset: dict[str, Any], provenance: dict[str, Any], recipe: dict[str, Any],
          sections: Sequence[EncodedSection]) -> bytes:
    """A complete file as bytes, through the same code that streams files to disk (for small
    files such as test vectors)."""
    out = io.BytesIO()
    plan(dataset, provenance, recipe, sections).write_to(out)
    return out.getvalue()


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Have ``write`` fill a new file so that ``path`` holds either its old content or all of
    the new, never a mix: a temporary file in the same directory, fsync, rename, fsync the
    directory. The file gets the permissions the umask gives (``0o666 & ~umask``), like any
    newly created file. Errors name ``path``, not the temporary file."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        for _ in range(100):
            candidate = directory / f".{path.name}.{os.urandom(6).hex()}.tmp"
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise FileExistsError(f"no free temporary name next to {path}")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        raise
    return path
