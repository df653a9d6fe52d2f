"""Container behaviour: round trips, robustness against damaged files, atomic writes."""

from __future__ import annotations

import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ddformat
from ddformat import FormatError
from ddformat.limits import PREAMBLE_SIZE
from ddformat.container.writing import pack_preamble
from tests.support import reseal

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "valid"


@st.composite
def distilled_sets(draw):
    k = draw(st.integers(1, 6))
    n = draw(st.integers(1, 12))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from(["uint8", "float16", "float32"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == "uint8":
        x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    else:
        x = (rng.normal(size=(n, *shape)) * draw(st.sampled_from([1e-3, 1.0, 1e4]))).astype(dtype)
    if draw(st.booleans()):
        y = rng.integers(0, k, size=n)
    else:
        y = rng.dirichlet(np.full(k, 0.3), size=n).astype(np.float32)
        y /= y.sum(axis=1, keepdims=True)
    weights = draw(st.sampled_from([None, "counts", "float"]))
    w = None if weights is None else (
        rng.integers(1, 1000, size=n) if weights == "counts" else rng.uniform(0.1, 3, size=n).astype(np.float32))
    return x, y, w, k, draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distilled_sets())
def test_round_trip_preserves_tensors_and_metadata(tmp_path_factory, case):
    x, y, w, k, sort = case
    path = tmp_path_factory.mktemp("rt") / "x.dd"
    scheme = "uniform" if w is None else "sqrt"
    recipe = {"loss": "kl" if y.ndim == 2 else "ce", "temperature": 3.0, "epochs": 7,
              "weighting": {"scheme": scheme, "normalization": "batch"}}
    ddformat.save(path, x, y, num_classes=k, weights=w, sort_by_class=sort, name="rt", recipe=recipe,
                  class_names=[f"c{i}" for i in range(k)], parameters={"seed": 3, "nested": {"a": [1, 2.5]}},
                  codec_options={"labels": {"dtype": "float32"}} if y.ndim == 2 else None)
    classes = y if y.ndim == 1 else y.argmax(axis=1)
    order = np.argsort(classes, kind="stable") if sort else np.arange(len(classes))
    with ddformat.open(path) as f:
        f.verify()
        assert np.array_equal(f.samples(), x[order])
        got_y = f.labels()
        assert got_y.dtype == (np.int64 if y.ndim == 1 else np.float32)
        assert np.array_equal(got_y, y[order])
        if w is None:
            assert f.stored_weights() is None
        else:
            assert np.array_equal(f.stored_weights(), w[order])
        assert f.num_classes == k and f.class_names == [f"c{i}" for i in range(k)]
        assert f.recipe["epochs"] == 7 and f.recipe["weighting"]["scheme"] == scheme
        assert f.provenance["parameters"] == {"seed": 3, "nested": {"a": [1, 2.5]}}
        assert sum(f.bits["per_class"]) == sum(f.bits["components"].values()) == 8 * path.stat().st_size


def _bases() -> list[bytes]:
    return [p.read_bytes() for p in sorted(VECTORS.glob("*.dd"))]


def _accepted(data: bytes, tmp: Path) -> bool:
    """Open and fully decode ``data``: True if accepted, False on a FormatError. Any other
    exception fails the test, and so does a hang (SIGALRM ends the run after 10 s)."""
    tmp.write_bytes(data)
    signal.alarm(10)
    try:
        with ddformat.open(tmp) as f:
            f.verify()
        return True
    except FormatError:
        return False
    finally:
        signal.alarm(0)


def _reseal(data: bytes, edit) -> bytes:
    """Apply ``edit`` to the header and fix only the CRCs: the body stays where it was."""
    (h,) = struct.unpack_from("<I", data, 12)
    header = msgpack.unpackb(data[PREAMBLE_SIZE:PREAMBLE_SIZE + h])
    edit(header)
    raw = msgpack.packb(header, use_bin_type=True)
    body = data[PREAMBLE_SIZE + h:]
    return pack_preamble(raw, PREAMBLE_SIZE + len(raw) + len(body)) + raw + body


_HUGE = [2**31, 2**32 - 1, 2**63, 2**64 - 1, -1, 0, 10**12]


def _garbage(rng: random.Random):
    return rng.choice([rng.choice(_HUGE), [rng.choice(_HUGE)] * rng.randint(1, 5), "x", "samples", None, True,
                       -3.5, {}])


def _edited(base: bytes, rng: random.Random) -> bytes:
    """A re-sealed file with one header value replaced: layout fields keep the body in place,
    other fields re-lay the file and recount its bits so the edit reaches the deeper checks."""
    header_part = rng.choice(["dataset", "section", "layout", "bits", "params"])
    if header_part == "layout":
        def edit(h):
            rng.choice(h["sections"])[rng.choice(["offset", "length", "alignment"])] = _garbage(rng)
        return _reseal(base, edit)

    def edit(h):
        if header_part == "dataset":
            key = rng.choice(["num_classes", "num_samples", "sample_shape", "class_names", "sample_dtype",
                              "value_range", "normalization"])
            h["dataset"][key] = _garbage(rng)
        elif header_part == "section":
            rng.choice(h["sections"])[rng.choice(["class_bytes", "kind", "codec", "component", "required"])] = \
                _garbage(rng)
        elif header_part == "bits":
            h["bits"][rng.choice(["total", "components", "per_class"])] = _garbage(rng)
        else:
            section = rng.choice(h["sections"])
            if section["params"]:
                section["params"][rng.choice(sorted(section["params"]))] = _garbage(rng)

    try:
        return reseal(base, edit, rebits=header_part in ("section", "params"))
    except (TypeError, KeyError, IndexError, ValueError, AttributeError, OverflowError):  # too broken to recount
        return reseal(base, edit)


def test_damaged_files_raise_format_error_only(tmp_path):
    rng = random.Random(1234)
    tmp = tmp_path / "m.dd"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cases = 0
    for base in _bases():
        for _ in range(300):
            i = rng.randrange(len(base))
            assert not _accepted(base[:i] + bytes([base[i] ^ (1 << rng.randrange(8))]) + base[i + 1:], tmp)
            assert not _accepted(base[:rng.randrange(len(base))], tmp)
            cases += 2
        for field, off, fmt in (("header_length", 12, "<I"), ("file_length", 16, "<Q")):
            for value in (2**31, 2**32 - 1, len(base) + 1) if fmt == "<I" else (2**63, len(base) * 2):
                pre = bytearray(base[:PREAMBLE_SIZE])
                struct.pack_into(fmt, pre, off, value)
                struct.pack_into("<I", pre, 28, zlib.crc32(bytes(pre[:28])))
                assert not _accepted(bytes(pre) + base[PREAMBLE_SIZE:], tmp)
                cases += 1
        for _ in range(150):
            _accepted(_edited(base, rng), tmp)  # may be valid; must not crash
            cases += 1
    assert cases >= 3000
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 512, f"peak memory grew by {grown_mib:.0f} MiB while reading damaged files"


_WRITER = """
import sys, numpy as np, ddformat
n = int(sys.argv[2])
x = np.random.default_rng(0).integers(0, 256, size=(n, 3, 64, 64), dtype=np.uint8)
ddformat.save(sys.argv[1], x, np.arange(n) % 10, codec_options={"samples": {"level": 1}})
"""


def test_killed_writer_leaves_previous_file_intact(tmp_path):
    target = tmp_path / "set.dd"
    ddformat.save(target, np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 1, 0, 1]))
    before = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), "20000"])
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".set.dd.*.tmp")):
        assert proc.poll() is None, "writer finished before it could be killed mid-write"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".set.dd.*.tmp")), "the kill did not land while the file was being written"
    assert target.read_bytes() == before
    with ddformat.open(target) as f:
        f.verify()


def test_unknown_optional_section_is_skipped_and_counted():
    with ddformat.open(VECTORS / "unknown_optional_section.dd") as f:
        f.verify()
        assert f.bits["components"]["other"] == 8 * len(b"skip me")


def test_reader_limits_refuse_large_decodes(tmp_path):
    path = ddformat.save(tmp_path / "x.dd", np.zeros((10, 1, 8, 8), np.uint8), np.arange(10) % 2)
    with pytest.raises(ddformat.errors.LimitError):
        ddformat.open(path, limits=ddformat.limits.Limits(max_decoded_bytes=100))


def test_writer_names_an_unknown_codec(tmp_path):
    with pytest.raises(ValueError, match="unknown labels codec 'fancy'"):
        ddformat.save(tmp_path / "x.dd", np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 1]), labels_codec="fancy")
    assert not (tmp_path / "x.dd").exists()


def test_zca_transform_round_trips_and_is_counted_as_other(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 1, 3, 3)).astype(np.float32)
    mean, matrix = rng.normal(size=9).astype(np.float32), rng.normal(size=(9, 9)).astype(np.float32)
    path = ddformat.save(tmp_path / "z.dd", x, np.arange(6) % 2, zca=(mean, matrix))
    with ddformat.open(path) as f:
        f.verify()
        got_mean, got_matrix = f.zca()
        assert np.array_equal(got_mean, mean) and np.array_equal(got_matrix, matrix)
        assert f.bits["components"]["other"] == 8 * f.container.entries["zca"].length
