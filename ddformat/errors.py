"""One exception hierarchy for everything a reader can find wrong with a file.

Every error a reader raises on bad input is a :class:`FormatError`, so callers need a single
``except``. Each carries where the problem is (section, field path, byte offset) both as
attributes and in its message, because "invalid file" alone helps nobody fix a producer.
"""

from __future__ import annotations


class FormatError(Exception):
    """A file is not a valid ``.dd`` file, or cannot be read by this implementation."""

    def __init__(
        self,
        message: str,
        *,
        section: str | None = None,
        field: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.section = section
        self.field = field
        self.offset = offset
        self.path: str | None = None
        self.reason = message
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"file {self.path!r}")
        if self.section is not None:
            where.append(f"section {self.section!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return f"{self.reason} ({', '.join(where)})" if where else self.reason

    def in_file(self, path: str) -> "FormatError":
        """Name the file as its user gave it (path or URL). Readers add it where they catch the
        error, because codecs that raise it do not know which file they decode."""
        if self.path is None:
            self.path = path
            self.args = (self._describe(),)
        return self


class MagicError(FormatError):
    """The preamble's magic is wrong: not a ``.dd`` file, or damaged by a text-mode transfer."""


class VersionError(FormatError):
    """The file's major version is not one this reader implements."""


class TruncatedError(FormatError):
    """The file is shorter (or longer) than its preamble says."""


class ChecksumError(FormatError):
    """A CRC-32 over the preamble, the header or a section does not match."""


class HeaderError(FormatError):
    """The header is not valid msgpack or breaks the schema of ``spec/format.md``."""


class LayoutError(FormatError):
    """Sections overlap, leave holes, are misaligned or point outside the file."""


class LimitError(FormatError):
    """A size or count exceeds a reader limit (header size, section count, decoded size)."""


class UnsupportedError(FormatError):
    """A required section or codec is unknown to this reader."""


class DecodeError(FormatError):
    """A section's payload is inconsistent with its codec parameters."""
