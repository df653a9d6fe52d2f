"""Reading the ``.dd`` container: preamble, compressed msgpack header, checksummed sections.

This module finds and checks bytes; it does not interpret payloads (that is ``codecs``). Every
number read from a file is checked against the file length and the reader limits before it is
used, and every byte of a file is covered by a CRC-32 or must be zero padding.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from typing import Callable, Sequence

from ..errors import (
    ChecksumError,
    HeaderError,
    LayoutError,
    LimitError,
    MagicError,
    TruncatedError,
    UnsupportedError,
    VersionError,
)
from ..limits import DEFAULT_LIMITS, MAGIC, MAJOR, PREAMBLE_SIZE, Limits
from .header import Header, decode_header, parse_header
from .sections import Section
from .sources import ByteSource, open_source

PREAMBLE = struct.Struct("<8sHHIQI")  # magic, major, minor, header_length, file_length, header_crc32
assert PREAMBLE.size + 4 == PREAMBLE_SIZE  # followed by the preamble's own CRC-32
OLD_LAYOUT = (" (1.x stored the header as plain msgpack with offsets and a bit account, 2.x compresses it and "
              "derives them; ddformat 1.0 reads the file, and its tensors can be saved again with this version)")


def crc32(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def content_hash(payloads: Sequence[bytes]) -> bytes:
    """SHA-256 over all section payloads in table order: the file's identity for citing it."""
    h = hashlib.sha256()
    for p in payloads:
        h.update(p)
    return h.digest()


class Container:
    """A ``.dd`` file opened for reading: the validated header, and sections on demand.

    ``is_known(kind, codec)`` tells whether this reader can interpret a section; a file with a
    required section it cannot interpret is refused at open, unknown optional ones are skipped.
    """

    def __init__(self, location: str | os.PathLike[str] | ByteSource,
                 is_known: Callable[[str, str], bool], limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.source = location if hasattr(location, "read") else open_source(location)
        try:
            self.header_length, self.header = self._read_header()
            self._check_layout()
            self._check_sections(is_known)
        except BaseException:
            self.close()
            raise
        self.entries = {e.kind: e for e in self.header.sections}
        self._table_index = {e.kind: i for i, e in enumerate(self.header.sections)}
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._ahead: dict[int, bytes | memoryview] = {}
        self._hash_verified = False

    @property
    def size(self) -> int:
        return self.source.size

    def _read_header(self) -> tuple[int, Header]:
        size = self.source.size
        if size < PREAMBLE_SIZE:
            raise TruncatedError(f"file has {size} bytes, fewer than the {PREAMBLE_SIZE}-byte preamble", offset=0)
        pre = self.source.read(0, PREAMBLE_SIZE)
        magic, major, minor, header_length, file_length, header_crc = PREAMBLE.unpack_from(pre)
        if magic != MAGIC:
            hint = ""
            if magic[:4] == MAGIC[:4] or magic[1:4] == MAGIC[1:4]:
                hint = " (looks damaged by a text-mode transfer: line endings or the high bit were changed)"
            raise MagicError(f"not a .dd file: magic is {magic!r}{hint}", field="magic", offset=0)
        (stored,) = struct.unpack_from("<I", pre, 28)
        if crc32(pre[:28]) != stored:
            raise ChecksumError("preamble CRC-32 mismatch", section="preamble", offset=28)
        if major != MAJOR:
            raise VersionError(f"file is version {major}.{minor}; this reader implements {MAJOR}.x"
                               + (OLD_LAYOUT if major < MAJOR else ""), field="major", offset=8)
        if file_length != size:
            raise TruncatedError(f"file has {size} bytes but its preamble says {file_length}",
                                 field="file_length", offset=16)
        if header_length > self.limits.max_header_bytes:
            raise LimitError(f"header of {header_length} bytes exceeds the limit of {self.limits.max_header_bytes}",
                             field="header_length", offset=12)
        if PREAMBLE_SIZE + header_length > size:
            raise TruncatedError(f"header of {header_length} bytes runs past the end of the file",
                                 field="header_length", offset=12)
        raw = self.source.read(PREAMBLE_SIZE, header_length)
        if crc32(raw) != header_crc:
            raise ChecksumError("header CRC-32 mismatch", section="header", offset=PREAMBLE_SIZE)
        header = decode_header(raw, self.limits.max_header_bytes)
        return header_length, parse_header(header, self.limits, header_length, size)

    def _check_layout(self) -> None:
        """Sections follow the header in table order, each at the first offset its alignment
        allows (their offsets are derived so); the gaps are zero and the last section ends the
        file. No holes, no overlaps."""
        pos = PREAMBLE_SIZE + self.header_length
        for i, e in enumerate(self.header.sections):
            if e.offset + e.length > self.size:
                raise LayoutError(f"section of {e.length} bytes at offset {e.offset} runs past the end of the file",
                                  section=e.kind, field=f"sections[{i}].length", offset=e.offset)
            if e.offset > pos and any(self.source.read(pos, e.offset - pos)):
                raise LayoutError("padding before section is not zero", section=e.kind, offset=pos)
            pos = e.offset + e.length
        if pos != self.size:
            raise LayoutError(f"{self.size - pos} bytes after the last section", offset=pos)

    def _check_sections(self, is_known: Callable[[str, str], bool]) -> None:
        for e in self.header.sections:
            if e.required and not is_known(e.kind, e.codec):
                raise UnsupportedError(f"required section uses kind {e.kind!r} with codec {e.codec!r}, "
                                       "which this reader does not implement", section=e.kind, field="codec")

    def has(self, kind: str) -> bool:
        return kind in self.entries

    def section(self, kind: str) -> Section:
        """Read one section and verify its CRC-32 before anyone decodes it."""
        e = self.entries.get(kind)
        if e is None:
            raise HeaderError("file has no such section", section=kind)
        data = self.source.read(e.offset, e.length)
        if crc32(data) != e.crc32:
            raise ChecksumError("section CRC-32 mismatch", section=kind, offset=e.offset)
        self._feed(self._table_index[kind], data)
        return Section(e.kind, e.codec, e.component, e.offset, e.length, e.params, data, e.class_bytes)

    def _feed(self, index: int, data: bytes | memoryview) -> None:
        """Hash payloads in table order as they are read, whatever order they are read in: a
        section read ahead of its turn waits (and is released) until those before it are read."""
        if index < self._hashed or index in self._ahead:
            return
        self._ahead[index] = data
        while self._hashed in self._ahead:
            self._hash.update(self._ahead.pop(self._hashed))
            self._hashed += 1

    def verify_content_hash(self) -> None:
        """Check ``provenance.content_hash`` (spec § 6). Sections already read were hashed then;
        only the others are read now, so a consumer that decodes everything reads nothing twice."""
        if self._hash_verified:
            return
        sections = self.header.sections
        while self._hashed < len(sections):
            self.section(sections[self._hashed].kind)
        if "sha256:" + self._hash.hexdigest() != self.header.provenance["content_hash"]:
            raise ChecksumError("content hash does not match the sections", section="header",
                                field="provenance.content_hash")
        self._hash_verified = True

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
