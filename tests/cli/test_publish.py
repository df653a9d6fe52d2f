"""``ddformat publish``: a Hub dataset folder whose card the Hub's own classes read, refused for a
file that does not verify, uploaded through huggingface_hub to a loopback stand-in for the Hub
and read back from there with an ``hf://`` URL."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard
from PIL import Image

import ddformat
from ddformat.cli.main import main
from ddformat.cli.publish import publish_folder, size_category
from tests.support import reseal

@pytest.fixture
def digits_set(tmp_path):
    rng = np.random.default_rng(0)
    return ddformat.save(tmp_path / "digits.dd", rng.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8),
                         np.arange(40) % 10, weights=rng.integers(1, 9, 40), name="tiny digits",
                         source_dataset="mnist",
                         recipe={"weighting": {"scheme": "sqrt", "normalization": "global"},
                                 "optimizer": {"name": "sgd", "lr": 0.01}})


def _front_matter(card: Path) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card.read_text(encoding="utf-8"), re.DOTALL)
    assert match, "README.md does not start with YAML front matter"
    return yaml.safe_load(match[1])


def test_card_yaml_parses_and_carries_the_required_fields(digits_set, tmp_path):
    out = publish_folder(digits_set, tmp_path / "hub", repo_id="someone/tiny-digits", license="cc-by-4.0")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "bits.png", "digits.dd", "preview.png"]
    meta = _front_matter(out / "README.md")
    assert meta == {"license": "cc-by-4.0", "task_categories": ["image-classification"],
                    "size_categories": ["n<1K"], "source_datasets": ["extended|mnist"], "pretty_name": "tiny digits",
                    "tags": ["dataset-distillation", "distilled-dataset", "ddformat"], "viewer": False}
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0" and "dataset-distillation" in card.data.tags
    text = card.text
    assert 'ddformat.DistilledDataset("hf://datasets/someone/tiny-digits/digits.dd")' in text
    with ddformat.open(digits_set) as dd:
        assert f"**{dd.bpc:,.1f} bits per class**" in text
        assert dd.provenance["content_hash"] in text
    assert '| optimizer | {"lr": 0.01, "name": "sgd"} |' in text
    assert "| samples | pixels |" in text and "| weights | counts |" in text
    assert (out / "digits.dd").read_bytes() == digits_set.read_bytes()
    for png in ("preview.png", "bits.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 100


@pytest.mark.parametrize("n, category", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M")])
def test_size_category_follows_the_hub_buckets(n, category):
    assert size_category(n) == category


@pytest.mark.parametrize("damage", ["section_crc", "content_hash"])
def test_publish_refuses_a_file_that_does_not_verify(digits_set, tmp_path, capsys, damage):
    data = digits_set.read_bytes()
    if damage == "section_crc":
        data = data[:-1] + bytes([data[-1] ^ 1])  # the last section's CRC-32 no longer matches
    else:  # every CRC-32 consistent, only the content hash wrong: what only a full verify finds
        data = reseal(data, lambda h: h["provenance"].update(content_hash=bytes(32)))
    bad = tmp_path / "bad.dd"
    bad.write_bytes(data)
    assert main(["publish", str(bad), str(tmp_path / "hub")]) == 1
    assert ("CRC-32 mismatch" if damage == "section_crc" else "content hash does not match") in capsys.readouterr().err
    assert not (tmp_path / "hub").exists()


class _LoopbackHub:
    """The Hub API calls ``create_repo`` + ``upload_folder`` make (create, validate-yaml,
    preupload, commit) and those ``hf://`` reads make (repo info, tree, resolve with Range),
    answered from memory on loopback."""

    def __init__(self) -> None:
        hub = self
        self.files: dict[str, bytes] = {}
        self.commits = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, value, status: int = 200) -> None:
                self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/repos/create":
                    repo = json.loads(body)
                    return self._json({"url": f"{hub.url}/datasets/{repo['organization']}/{repo['name']}"})
                if self.path == "/api/validate-yaml":
                    return self._json({})
                if re.fullmatch(r"/api/datasets/[^/]+/[^/]+/preupload/main", self.path):
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in json.loads(body)["files"]]})
                match = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/main", self.path)
                if match:
                    for line in body.decode().splitlines():
                        op = json.loads(line)
                        if op["key"] == "file":
                            hub.files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
                    hub.commits += 1
                    return self._json({"commitUrl": f"{hub.url}/datasets/{match[1]}/commit/{'a' * 40}",
                                       "commitOid": "a" * 40})
                self._json({"error": "not served"}, 404)

            def do_GET(self):
                if re.fullmatch(r"/api/datasets/[^/]+/[^/]+(/revision/main)?(\?.*)?", self.path):
                    return self._json({"id": "someone/tiny-digits", "sha": "a" * 40,
                                       "siblings": [{"rfilename": k} for k in hub.files]})
                if re.fullmatch(r"/api/datasets/[^/]+/[^/]+/tree/main/?(\?.*)?", self.path):
                    return self._json([{"type": "file", "path": k, "size": len(v), "oid": hashlib.sha1(v).hexdigest()}
                                       for k, v in hub.files.items()])
                match = re.fullmatch(r"/datasets/[^/]+/[^/]+/resolve/main/(.+)", self.path)
                if match and match[1] in hub.files:
                    data = hub.files[match[1]]
                    headers = {"ETag": '"e"', "X-Repo-Commit": "a" * 40}
                    wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                    if wanted is None:
                        return self._send(200, data, headers)
                    start, end = int(wanted[1]), min(int(wanted[2]), len(data) - 1)
                    return self._send(206, data[start:end + 1],
                                      {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})
                self._json({"error": "not served"}, 404)

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback_hub(monkeypatch):
    """huggingface_hub pointed at :class:`_LoopbackHub`: the endpoint and URL template it derives
    from ``HF_ENDPOINT`` when imported (so set here directly), a token as from ``HF_TOKEN``, no
    cached filesystems."""
    from huggingface_hub import HfFileSystem, constants

    hub = _LoopbackHub()
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_TOKEN", "hf_loopback")
    HfFileSystem.clear_instance_cache()
    yield hub
    HfFileSystem.clear_instance_cache()
    hub.close()


def test_publish_uploads_through_huggingface_hub_and_reads_back_over_hf_urls(digits_set, tmp_path, loopback_hub,
                                                                             capsys):
    hub = loopback_hub
    out = tmp_path / "hub"
    assert main(["publish", str(digits_set), str(out), "--repo-id", "someone/tiny-digits"]) == 0
    assert f"uploaded to {hub.url}/datasets/someone/tiny-digits/commit/" in capsys.readouterr().out
    assert hub.commits == 1
    assert hub.files == {p.name: p.read_bytes() for p in out.iterdir()}
    url = "hf://datasets/someone/tiny-digits/digits.dd"
    assert main(["verify", url]) == 0
    assert capsys.readouterr().out.startswith(f"OK {url}")
    with ddformat.open(url) as remote, ddformat.open(digits_set) as local:
        assert np.array_equal(remote.samples(), local.samples())
    assert main(["inspect", "hf://datasets/someone/tiny-digits/absent.dd"]) == 2
    assert "no such file on the server" in capsys.readouterr().err
