"""Byte sources (``ddformat/container/sources.py``) without a server: reads inside and past the
end, the empty file, closing, the remote head cache (fsspec's in-memory filesystem stands in for
a server), and the one error each backend failure becomes. ``test_remote.py`` has the same paths
against real HTTP and S3 servers.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest

from ddformat.container.sources import NO_RANGES, LocalSource, RemoteSource, _remote_error, open_source
from ddformat.errors import TruncatedError

DATA = bytes(range(256)) * 40
URL = "memory://sources-test/file.dd"


@pytest.fixture
def remote():
    fs = fsspec.filesystem("memory")
    fs.pipe(URL, DATA)
    yield
    fs.rm(URL)


@pytest.fixture(params=["local", "remote"])
def source(request, tmp_path, remote):
    if request.param == "local":
        path = tmp_path / "file.dd"
        path.write_bytes(DATA)
        src = open_source(path)
    else:
        src = open_source(URL)
    yield src
    src.close()


@pytest.mark.parametrize(("offset", "length"), [(-1, 4), (0, -1), (len(DATA) - 3, 4), (len(DATA) + 1, 0)])
def test_reads_outside_the_file_are_truncation_errors_at_their_offset(source, offset: int, length: int) -> None:
    with pytest.raises(TruncatedError) as info:
        source.read(offset, length)
    assert info.value.reason == f"read of {length} bytes past the end of a {len(DATA)}-byte file"
    assert info.value.offset == offset


@pytest.mark.parametrize(("offset", "length"), [(0, 0), (7, 0), (len(DATA), 0), (len(DATA) - 4, 4), (0, len(DATA))])
def test_reads_up_to_the_last_byte_and_empty_reads_return_exactly_those_bytes(source, offset, length) -> None:
    assert source.read(offset, length) == DATA[offset:offset + length]


def test_sources_are_named_as_the_user_gave_them(tmp_path, remote) -> None:
    path = tmp_path / "file.dd"
    path.write_bytes(DATA)
    for location in (path, str(path), f"file://{path}", URL):
        src = open_source(location)
        assert src.name == (URL if location == URL else str(path))
        src.close()


def test_an_empty_local_file_opens_and_serves_empty_reads(tmp_path: Path) -> None:
    path = tmp_path / "empty.dd"
    path.write_bytes(b"")
    src = LocalSource(path)
    assert (src.size, src.read(0, 0)) == (0, b"")
    with pytest.raises(TruncatedError):
        src.read(0, 1)
    src.close()


def test_closing_a_local_source_unmaps_the_file_and_may_be_repeated(tmp_path: Path) -> None:
    path = tmp_path / "mapped.dd"
    path.write_bytes(DATA)
    src = LocalSource(path)
    assert str(path) in Path("/proc/self/maps").read_text()
    src.close()
    src.close()
    assert str(path) not in Path("/proc/self/maps").read_text()


def test_remote_reads_inside_the_head_fetch_nothing_and_others_exactly_their_bytes(remote, monkeypatch) -> None:
    src = RemoteSource(URL, readahead=1000)
    fetched: list[tuple[int, int]] = []
    fetch = src._fetch
    monkeypatch.setattr(src, "_fetch", lambda offset, length: fetched.append((offset, length)) or fetch(offset, length))
    assert src.read(0, 1000) == DATA[:1000] and src.read(996, 4) == DATA[996:1000]
    assert src.read(5000, 0) == b"" and fetched == []
    assert src.read(999, 2) == DATA[999:1001] and src.read(4000, 10) == DATA[4000:4010]
    assert fetched == [(999, 2), (4000, 10)]
    src.close()
    src.close()


class _File:
    """What ``fs.open`` returns, for servers fsspec cannot fake: no length, or short reads."""

    def __init__(self, size: int | None, short: int = 0) -> None:
        self.size, self.short, self.position = size, short, 0

    def seek(self, offset: int) -> None:
        self.position = offset

    def read(self, length: int) -> bytes:
        return DATA[self.position:self.position + length - self.short]

    def close(self) -> None:
        pass


def _serve(monkeypatch, file: _File) -> None:
    fs = SimpleNamespace(open=lambda path, mode, cache_type: file)
    monkeypatch.setattr(fsspec.core, "url_to_fs", lambda url: (fs, url))


def test_a_server_that_does_not_say_the_length_is_refused_saying_to_download(monkeypatch) -> None:
    _serve(monkeypatch, _File(None))
    with pytest.raises(OSError) as info:
        RemoteSource("https://example.org/set.dd")
    assert (info.value.errno, info.value.filename) == (errno.EPROTO, "https://example.org/set.dd")
    assert info.value.strerror == ("the server does not say how long the file is, which reading it in place "
                                   "needs: download the file first and open the local copy")


def test_a_short_answer_is_a_truncation_error_at_the_requested_offset(monkeypatch) -> None:
    _serve(monkeypatch, _File(len(DATA)))
    src = RemoteSource("https://example.org/set.dd", readahead=16)
    src._file.short = 3
    with pytest.raises(TruncatedError) as info:
        src.read(100, 10)
    assert (info.value.reason, info.value.offset) == ("the server returned 7 of 10 bytes", 100)


def _chained(outer: BaseException, inner: BaseException, implicit: bool = False) -> BaseException:
    if implicit:
        outer.__context__ = inner
    else:
        outer.__cause__ = inner
    return outer


def _status_error(status: int, via_response: bool = False) -> Exception:
    exc = RuntimeError(f"backend error {status}")
    if via_response:
        exc.response = SimpleNamespace(status_code=status)  # type: ignore[attr-defined]
    else:
        exc.status = status  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("exc", "kind", "code", "message"), [
    (ConnectionRefusedError(), ConnectionRefusedError, errno.ECONNREFUSED,
     "connection refused: is the server running and are host and port right?"),
    (_chained(RuntimeError("client error"), OSError("Connect call failed: Connection refused"), implicit=True),
     ConnectionRefusedError, errno.ECONNREFUSED,
     "connection refused: is the server running and are host and port right?"),
    (ValueError("The HTTP server doesn't appear to support range requests"), OSError, errno.EOPNOTSUPP, NO_RANGES),
    (_chained(RuntimeError("open failed"), ImportError("No module named 's3fs'")), OSError, errno.ENOSYS,
     "reading this URL needs a package that is not installed (No module named 's3fs'); "
     "pip install 'ddformat[remote]'"),
    (FileNotFoundError("gone"), FileNotFoundError, errno.ENOENT,
     "no such file on the server (HTTP 404 or no such object)"),
    (_status_error(404), FileNotFoundError, errno.ENOENT, "no such file on the server (HTTP 404 or no such object)"),
    (PermissionError("no"), PermissionError, errno.EACCES,
     "access denied: check the credentials (token, keys) for this URL"),
    (_status_error(401), PermissionError, errno.EACCES,
     "access denied: check the credentials (token, keys) for this URL"),
    (_status_error(403, via_response=True), PermissionError, errno.EACCES,
     "access denied: check the credentials (token, keys) for this URL"),
    (TimeoutError(), TimeoutError, errno.ETIMEDOUT, "no answer from the server in time"),
    (_chained(RuntimeError("outer"), _status_error(503, via_response=True)), OSError, errno.EIO,
     "the server answered HTTP 503"),
    (KeyError("x"), OSError, errno.EIO, "cannot read the file: KeyError: 'x'"),
], ids=["refused", "refused-in-context", "no-ranges", "missing-package", "not-found", "status-404", "permission",
        "status-401", "response-403", "timeout", "status-503-in-cause", "other"])
def test_backend_failures_become_one_error_naming_the_url_cause_and_remedy(exc, kind, code, message) -> None:
    err = _remote_error(exc, "s3://bucket/set.dd")
    assert type(err) is kind
    assert (err.errno, err.strerror, err.filename) == (code, message, "s3://bucket/set.dd")


def test_an_exception_chain_with_a_cycle_is_read_once() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    err = _remote_error(a, "https://example.org/set.dd")
    assert err.strerror == "cannot read the file: RuntimeError: a"


def test_reading_a_closed_source_says_it_is_closed(source) -> None:
    source.close()
    with pytest.raises(ValueError, match=f"^read from {source.name}, which is closed$"):
        source.read(0, 4)


def test_an_unrelated_value_error_is_not_taken_for_missing_range_support() -> None:
    err = _remote_error(ValueError("bad value"), "https://example.org/set.dd")
    assert (err.errno, err.strerror) == (errno.EIO, "cannot read the file: ValueError: bad value")


def test_url_schemes_are_recognised_in_any_case() -> None:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        open_source(f"HTTP://127.0.0.1:{port}/set.dd")


def test_a_url_whose_path_holds_a_scheme_separator_reads_from_that_path() -> None:
    """Only the first ``://`` ends the scheme (an object key may contain another)."""
    fs = fsspec.filesystem("memory")
    fs.pipe("memory://sources-test/a://b.dd", DATA[:10])
    src = open_source("MEMORY://sources-test/a://b.dd")
    assert (src.size, src.read(2, 3)) == (10, DATA[2:5])
    src.close()
    fs.rm("memory://sources-test/a://b.dd")
