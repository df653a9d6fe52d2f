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
            with ddformat.open(url) as f:  # the first 16 KiB come whole; the error is at the first read past them
                f.samples()
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


def test_inspect_of_a_large_remote_file_reads_at_most_header_and_64_kib(tmp_path):
    from ddformat.cli.main import main
    from ddformat.container.layout import Container, PREAMBLE_SIZE
    from ddformat import codecs

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(2000, 3, 32, 32), dtype=np.uint8)
    path = ddformat.save(tmp_path / "large.dd", x, np.arange(2000) % 10, weights=rng.integers(1, 50, size=2000),
                         recipe={"weighting": {"scheme": "sqrt", "normalization": "global"}})
    with Container(path, codecs.is_known) as local:
        header_length = local.header_length
    assert path.stat().st_size > 5_000_000
    server = _RangeServer(tmp_path)
    try:
        assert main(["inspect", f"{server.url}/large.dd"]) == 0
        assert 0 < server.bytes_sent <= PREAMBLE_SIZE + header_length + 2**16
    finally:
        server.close()


@pytest.fixture
def s3_endpoint(monkeypatch):
    """moto's S3 server on loopback, reached through s3fs (botocore reads the endpoint and keys
    from the environment, as it would for any S3-compatible store)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_s3_url_through_s3fs_decodes_to_the_local_tensors(s3_endpoint, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(300, 3, 32, 32), dtype=np.uint8)
    soft = rng.dirichlet(np.ones(5), size=300).astype(np.float32)
    path = ddformat.save(tmp_path / "soft.dd", x, soft, weights=rng.random(300).astype(np.float32) + 0.1,
                         recipe={"weighting": {"scheme": "explicit", "normalization": "global"}})
    s3_endpoint.mkdir("sets")
    s3_endpoint.put(str(path), "sets/soft.dd")
    with ddformat.open("s3://sets/soft.dd") as remote, ddformat.open(path) as local:
        assert np.array_equal(remote.samples(), local.samples())
        assert np.array_equal(remote.labels(), local.labels())
        assert np.array_equal(remote.loss_weights(), local.loss_weights())
        remote.verify()
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        ddformat.open("s3://sets/absent.dd")
    assert info.value.filename == "s3://sets/absent.dd"
