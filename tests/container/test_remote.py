"""Files served over HTTP are read with range requests, never downloaded whole to open them;
when that cannot work, the error names the URL, the cause and what to do."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

import ddformat
from ddformat.errors import ChecksumError


class _RangeServer:
    """A loopback HTTP server that honours ``Range: bytes=a-b`` (unless ``ranges=False``: then it
    sends the whole file, as some servers do) and counts the bytes it sends."""

    def __init__(self, root: Path, ranges: bool = True) -> None:
        server = self
        self.bytes_sent = 0
        self.range_requests = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self) -> bytes | None:
                path = root / self.path.lstrip("/")
                return path.read_bytes() if path.is_file() else None

            def do_HEAD(self):
                data = self._body()
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):
                data = self._body()
                if data is None:
                    self.send_error(404)
                    return
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if match and ranges:
                    start = int(match[1])
                    end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
                    chunk = data[start:end + 1]
                    server.range_requests += 1
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    chunk = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(chunk)
                server.bytes_sent += len(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(400, 3, 32, 32), dtype=np.uint8)
    y = np.arange(400) % 4
    path = ddformat.save(tmp_path / "set.dd", x, y, weights=rng.integers(1, 9, size=400),
                         recipe={"weighting": {"scheme": "sqrt", "normalization": "global"}})
    server = _RangeServer(tmp_path)
    yield server, path
    server.close()


def test_open_over_http_reads_header_by_range_not_whole_file(served):
    server, path = served
    with ddformat.open(f"{server.url}/set.dd") as f:
        assert f.num_samples == 400 and f.bpc == 8 * path.stat().st_size / 4
        assert server.range_requests >= 1
        assert server.bytes_sent < path.stat().st_size / 2
        with ddformat.open(path) as local:
            assert np.array_equal(f.samples(), local.samples())
            assert np.array_equal(f.loss_weights(), local.loss_weights())


def test_distilled_dataset_loads_from_url(served):
    server, path = served
    remote = ddformat.DistilledDataset(f"{server.url}/set.dd")
    local = ddformat.DistilledDataset(path)
    assert torch.equal(remote.samples, local.samples) and torch.equal(remote.weights, local.weights)


def test_missing_url_names_the_url_and_the_404(served):
    server, _ = served
    url = f"{server.url}/absent.dd"
    with pytest.raises(FileNotFoundError, match="HTTP 404") as info:
        ddformat.open(url)
    assert info.value.filename == url and url in str(info.value)


def test_refused_connection_names_the_url():
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/set.dd"
    with pytest.raises(ConnectionRefusedError, match="connection refused") as info:
        ddformat.open(url)
    assert info.value.filename == url


def test_server_without_range_support_says_to_download_the_file_first(served):
    _, path = served
    server = _RangeServer(path.parent, ranges=False)
    try:
        url = f"{server.url}/set.dd"
        with pytest.raises(OSError, match="does not support HTTP range requests.*download the file first") as info:
            ddformat.open(url)
        assert info.value.filename == url
    finally:
        server.close()


def test_format_errors_over_http_name_the_url(served):
    server, path = served
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the last section's CRC-32 no longer matches
    (path.parent / "bad.dd").write_bytes(bytes(data))
    url = f"{server.url}/bad.dd"
    with ddformat.open(url) as f:
        with pytest.raises(ChecksumError, match=re.escape(f"file '{url}'")):
            f.verify()
