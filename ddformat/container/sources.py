"""Random-access byte sources: a local file through mmap, or a URL through HTTP range requests.

The container reads only the preamble, the header and the sections it is asked for, so a
source must serve arbitrary ``(offset, length)`` reads without loading the whole file.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Protocol

from ..errors import TruncatedError


class ByteSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class LocalSource:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self.size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedError(f"read of {length} bytes past the end of a {self.size}-byte file", offset=offset)
        return self._map[offset:offset + length] if length else b""

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


class RemoteSource:
    """Any fsspec URL (``https://``, ``s3://``, ...); HTTP(S) is served with range requests."""

    def __init__(self, url: str, block_size: int = 2**18) -> None:
        import fsspec

        self.url = url
        self._file = fsspec.open(url, "rb", block_size=block_size).open()
        self.size = int(self._file.size)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedError(f"read of {length} bytes past the end of a {self.size}-byte file", offset=offset)
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            raise TruncatedError(f"server returned {len(data)} of {length} bytes", offset=offset)
        return data

    def close(self) -> None:
        self._file.close()


def open_source(location: str | os.PathLike[str]) -> ByteSource:
    text = os.fspath(location)
    if isinstance(text, str) and "://" in text and not text.startswith("file://"):
        return RemoteSource(text)
    return LocalSource(text.removeprefix("file://") if isinstance(text, str) else text)
