"""Random-access byte sources: a local file through mmap, or a URL through HTTP range requests.

The container reads only the preamble, the header and the sections it is asked for, so a
source must serve arbitrary ``(offset, length)`` reads without loading the whole file. When a
source cannot (a missing file, a refused connection, a server that ignores ``Range``), the
error says so, names the path or URL as the user gave it, and says what to do.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from ..errors import TruncatedError


class ByteSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class LocalSource:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        with open(path, "rb") as f:
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


NO_RANGES = ("the server does not support HTTP range requests, which reading a file in place needs: "
             "download the file first (e.g. curl -o set.dd URL) and open the local copy")


class HttpSource:
    """``http://`` and ``https://`` URLs, read with one ``Range`` request per read (the first
    read also fetches ``readahead`` bytes, which usually covers preamble and header)."""

    def __init__(self, url: str, timeout: float = 60.0, readahead: int = 2**16) -> None:
        self.name = self.url = url
        self.timeout = timeout
        self._cache = (0, b"")
        try:
            self._cache = (0, self._get(0, readahead, size=None))
        except _EmptyFile:
            self.size = 0

    def _request(self, start: int, end: int) -> tuple[int, str, bytes]:
        """(status, Content-Range, body of at most ``end - start + 1`` bytes) for one range."""
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
                if status != 206:
                    raise OSError(errno.EOPNOTSUPP, NO_RANGES, self.url)
                return status, response.headers.get("Content-Range", ""), response.read(end - start + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(errno.ENOENT, "no such file on the server (HTTP 404)", self.url) from None
            if exc.code == 416:
                return 416, exc.headers.get("Content-Range", ""), b""
            raise OSError(errno.EIO, f"the server answered HTTP {exc.code} {exc.reason}", self.url) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused: is the server running "
                                             "and are host and port right?", self.url) from None
            raise OSError(errno.EIO, f"cannot reach the server: {reason}", self.url) from None
        except TimeoutError:
            raise TimeoutError(errno.ETIMEDOUT, f"no answer within {self.timeout:.0f} s", self.url) from None

    def _get(self, offset: int, length: int, size: int | None) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end of the file when ``size`` is not
        known yet); sets ``size`` from the first answer and checks it on every later one."""
        status, content_range, body = self._request(offset, offset + max(length, 1) - 1)
        match = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+)", content_range.strip())
        if match is None:
            raise OSError(errno.EPROTO, f"the server answered a range request with Content-Range "
                          f"{content_range!r}, which is not a byte range", self.url)
        total = int(match[3])
        if size is None:
            self.size = total
            if status == 416 and total == 0:
                raise _EmptyFile
        elif total != size:
            raise OSError(errno.ESTALE, f"the file changed on the server while being read ({size} bytes, "
                          f"now {total})", self.url)
        if status == 416 or int(match[1]) != offset:
            raise TruncatedError(f"the server could not serve {length} bytes at offset {offset} of a "
                                 f"{total}-byte file", offset=offset)
        want = min(length, total - offset)
        if len(body) != want:
            raise TruncatedError(f"the server returned {len(body)} of {want} bytes", offset=offset)
        return body

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedError(f"read of {length} bytes past the end of a {self.size}-byte file", offset=offset)
        start, cached = self._cache
        if start <= offset and offset + length <= start + len(cached):
            return cached[offset - start:offset - start + length]
        return self._get(offset, length, self.size) if length else b""

    def close(self) -> None:
        self._cache = (0, b"")


class _EmptyFile(Exception):
    """The server holds the file but it has no bytes (HTTP 416 for any range)."""


class RemoteSource:
    """Other fsspec URLs (``s3://``, ``gs://``, ...), through fsspec's own range reads."""

    def __init__(self, url: str, block_size: int = 2**18) -> None:
        import fsspec

        self.name = self.url = url
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
    """A source for a local path, a ``file://`` URL, an ``http(s)://`` URL or any other URL
    fsspec knows."""
    text = os.fspath(location)
    if isinstance(text, str) and re.match(r"https?://", text, re.IGNORECASE):
        return HttpSource(text)
    if isinstance(text, str) and "://" in text and not text.startswith("file://"):
        return RemoteSource(text)
    return LocalSource(Path(text.removeprefix("file://")) if isinstance(text, str) else text)
