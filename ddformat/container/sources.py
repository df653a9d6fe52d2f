"""Random-access byte sources: a local file through mmap, or a URL through fsspec range reads.

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
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

from ..errors import FormatError, TruncatedError


class ByteSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class _Source(ABC):
    """The checks every source makes before reading: inside the file, and not closed (Python's
    files raise ``ValueError`` for the latter too)."""

    name: str
    size: int
    closed = False

    def read(self, offset: int, length: int) -> bytes:
        if self.closed:
            raise ValueError(f"read from {self.name}, which is closed")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedError(f"read of {length} bytes past the end of a {self.size}-byte file", offset=offset)
        return self._read(offset, length)

    @abstractmethod
    def _read(self, offset: int, length: int) -> bytes: ...


class LocalSource(_Source):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        with open(path, "rb") as f:
            self.size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None

    def _read(self, offset: int, length: int) -> bytes:
        return self._map[offset:offset + length] if length else b""

    def close(self) -> None:
        self.closed = True
        if self._map is not None:
            self._map.close()
            self._map = None


NO_RANGES = ("the server does not support HTTP range requests, which reading a file in place needs: "
             "download the file first (e.g. curl -o set.dd URL) and open the local copy")


class RemoteSource(_Source):
    """A URL read in place through fsspec: ``http(s)://``, ``hf://``, ``s3://``, ``gs://`` or any
    other protocol fsspec knows, by one code path.

    Each read is one range request for exactly the bytes asked for (fsspec's own read-ahead
    caches are off, so nothing unasked is fetched), except the first, which fetches the first
    ``readahead`` bytes: usually preamble and header together. Credentials and endpoints come
    from each filesystem's usual environment (``HF_TOKEN``, ``HF_ENDPOINT``, ``AWS_*``, gcloud).
    """

    def __init__(self, url: str, readahead: int = 2**14) -> None:
        self.name = self.url = url
        self._file: Any = None
        try:
            with self._errors():
                import fsspec

                scheme, rest = url.split("://", 1)
                fs, path = fsspec.core.url_to_fs(f"{scheme.lower()}://{rest}")  # schemes are case-insensitive
                self._file = fs.open(path, "rb", cache_type="none")
                size = self._file.size
                if size is None:
                    raise OSError(errno.EPROTO, "the server does not say how long the file is, which reading it "
                                  "in place needs: download the file first and open the local copy", url)
                self.size = int(size)
                self._head = self._fetch(0, min(readahead, self.size))
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """fsspec's and its backends' errors as :class:`OSError` subclasses naming the URL."""
        try:
            yield
        except FormatError:
            raise
        except Exception as exc:  # backends raise their own kinds (aiohttp, botocore, huggingface_hub)
            if isinstance(exc, OSError) and exc.filename == self.url:
                raise
            raise _remote_error(exc, self.url) from exc

    def _fetch(self, offset: int, length: int) -> bytes:
        with self._errors():
            self._file.seek(offset)
            data = self._file.read(length)
        if len(data) != length:
            raise TruncatedError(f"the server returned {len(data)} of {length} bytes", offset=offset)
        return data

    def _read(self, offset: int, length: int) -> bytes:
        if offset + length <= len(self._head) or not length:
            return self._head[offset:offset + length]
        return self._fetch(offset, length)

    def close(self) -> None:
        self.closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _status(exc: BaseException) -> int | None:
    """The HTTP status an fsspec backend's exception carries, if any (aiohttp: ``status``;
    httpx / requests via huggingface_hub: ``response.status_code``)."""
    for value in (getattr(exc, "status", None), getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(value, int):
            return value
    return None


def _remote_error(exc: BaseException, url: str) -> OSError:
    """One clear error for what went wrong reading ``url``, whichever fsspec backend raised it:
    the cause, and what to do about it."""
    chain = list(_causes(exc))
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError) or "connection refused" in str(cause).lower():
            return ConnectionRefusedError(errno.ECONNREFUSED, "connection refused: is the server running "
                                          "and are host and port right?", url)
    for cause in chain:
        text = str(cause)
        if isinstance(cause, ValueError) and "support range requests" in text:
            return OSError(errno.EOPNOTSUPP, NO_RANGES, url)
        if isinstance(cause, ImportError):
            return OSError(errno.ENOSYS, f"reading this URL needs a package that is not installed ({text}); "
                           "pip install 'ddformat[remote]'", url)
    statuses = [s for s in map(_status, chain) if s is not None]
    if isinstance(exc, FileNotFoundError) or 404 in statuses:
        return FileNotFoundError(errno.ENOENT, "no such file on the server (HTTP 404 or no such object)", url)
    if isinstance(exc, PermissionError) or 401 in statuses or 403 in statuses:
        return PermissionError(errno.EACCES, "access denied: check the credentials (token, keys) for this "
                               "URL", url)
    if isinstance(exc, TimeoutError):
        return TimeoutError(errno.ETIMEDOUT, "no answer from the server in time", url)
    if statuses:
        return OSError(errno.EIO, f"the server answered HTTP {statuses[0]}", url)
    return OSError(errno.EIO, f"cannot read the file: {type(exc).__name__}: {exc}", url)


def open_source(location: str | os.PathLike[str]) -> ByteSource:
    """A source for a local path, a ``file://`` URL, or any URL fsspec knows (``http(s)://``,
    ``hf://``, ``s3://``, ``gs://``, ...)."""
    text = os.fspath(location)
    if isinstance(text, str) and re.match(r"[a-z][a-z0-9+.-]*://", text, re.IGNORECASE) \
            and not text.lower().startswith("file://"):
        return RemoteSource(text)
    return LocalSource(Path(text[len("file://"):] if isinstance(text, str) and text.lower().startswith("file://")
                            else text))
