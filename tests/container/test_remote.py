"""Files served over HTTP are read with range requests, never downloaded whole to open them."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

import ddformat

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")


class _RangeServer:
    """A loopback HTTP server that honours ``Range: bytes=a-b`` and counts the bytes it sends."""

    def __init__(self, root: Path) -> None:
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
                if match:
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


def test_missing_url_is_an_error_not_a_hang(served):
    server, _ = served
    with pytest.raises((FileNotFoundError, OSError)):
        ddformat.open(f"{server.url}/absent.dd")
