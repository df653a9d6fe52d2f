"""The streaming atomic writer: bounded memory, the umask's permissions, files the reader accepts
or nothing at all, and write-time refusal of weights no training could use."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

import ddformat
from ddformat.codecs import frames
from ddformat.codecs.pixels import PIXELS, Reordered
from ddformat.container.sections import EncodedSection, Layout, Section
from ddformat.container.writing import build, plan, write_atomic
from ddformat.errors import LimitError, TruncatedError

X = np.arange(6 * 16, dtype=np.uint8).reshape(6, 1, 4, 4)
Y = np.array([0, 1, 0, 1, 2, 2])

_PEAK = """
import json, os, sys
import numpy as np
import ddformat

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak():  # this process's own high-water mark: ru_maxrss would include the parent's from before exec
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

n = 25000
rng = np.random.default_rng(0)
x = np.empty((n, 3, 64, 64), np.uint8)  # 293 MiB: 6 random bits per byte over a ramp, ~84 % after zstd
for a in range(0, n, 1000):
    x[a:a + 1000] = rng.integers(0, 64, size=(min(1000, n - a), 3, 64, 64), dtype=np.uint8)
    x[a:a + 1000] += np.arange(64, dtype=np.uint8)
y = rng.integers(0, 10, size=n)  # not class-sorted: saving must not make a sorted copy either
before = rss()
ddformat.save(sys.argv[1], x, y)
print(json.dumps({"growth": peak() - before, "array": x.nbytes}))
"""


def test_saving_300_mb_needs_at_most_one_fifth_more_than_the_largest_section(tmp_path):
    """Measured in a fresh process, whose high-water mark only this save can have raised
    (``VmHWM``, not ``ru_maxrss``: Linux carries the parent's peak into ``ru_maxrss`` across exec)."""
    path = tmp_path / "big.dd"
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    with ddformat.open(path) as f:
        largest = max(e.length for e in f.header.sections)
        assert f.num_samples == 25000 and f.container.entries["samples"].params["compression"] == "zstd"
    assert largest > 0.5 * figures["array"], "the set compressed too well to show anything"
    assert figures["growth"] <= 1.2 * largest, (
        f"save grew the process by {figures['growth'] / 2**20:.0f} MiB for a {largest / 2**20:.0f} MiB section")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = ddformat.save(tmp_path / "set.dd", X, Y)
        replaced = ddformat.save(path, X[::-1].copy(), Y)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode and replaced.stat().st_mode & 0o777 == mode


def test_file_on_disk_is_the_planned_file_the_reader_checked(tmp_path, monkeypatch):
    """``save`` opens the plan with the reader before writing; the plan must serve the very bytes
    that reach the disk, and ``build`` must return them too."""
    plans = []
    monkeypatch.setattr(ddformat.writer, "plan", lambda *args: plans.append((args, plan(*args))) or plans[-1][1])
    x = np.random.default_rng(0).integers(0, 256, size=(40, 3, 8, 8), dtype=np.uint8)
    path = ddformat.save(tmp_path / "a.dd", x, np.arange(40) % 5, weights=np.arange(40) + 1,
                         zca=(np.zeros(192), np.eye(192)))
    [(args, planned)] = plans
    data = path.read_bytes()
    assert planned.size == len(data) and build(*args) == data
    rng = np.random.default_rng(1)
    for _ in range(300):
        a = int(rng.integers(0, len(data)))
        b = int(rng.integers(a, len(data) + 1))
        assert bytes(planned.read(a, b - a)) == data[a:b]
    with pytest.raises(TruncatedError):
        planned.read(len(data) - 1, 2)


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
@pytest.mark.parametrize("level", [1, 10])
def test_piecewise_encoding_of_reordered_samples_equals_encoding_a_sorted_copy(monkeypatch, dtype, level):
    """Rows are gathered, filtered, byte-shuffled and compressed a piece at a time (here pieces of
    a few rows, so every frame spans several); the payload decodes to the samples in order."""
    rng = np.random.default_rng(3)
    base = np.cumsum(rng.integers(0, 3, size=(50, 2, 5, 7)), axis=-1)
    x = base.astype(np.uint8) if dtype == "uint8" else (base / 7).astype(dtype)
    classes = rng.integers(0, 4, size=50)
    order = np.argsort(classes, kind="stable")
    groups = np.bincount(classes, minlength=4).tolist()
    layout = Layout(50, 4, (2, 5, 7), dtype, 2**30)
    taken = PIXELS.take(x, order)
    assert isinstance(taken, Reordered)
    monkeypatch.setattr(frames, "PIECE_BYTES", 3 * x[0].nbytes)
    [lazy] = PIXELS.encode(taken, layout, groups, level=level)
    [eager] = PIXELS.encode(np.ascontiguousarray(x[order]), layout, groups, level=level)
    assert lazy.params == eager.params and bytes(lazy.data) == bytes(eager.data)
    assert np.array_equal(_decode(lazy, layout), x[order])
    monkeypatch.setattr(frames, "PIECE_BYTES", 2**30)
    [whole] = PIXELS.encode(taken, layout, groups, level=level)
    assert whole.params["filter"] == lazy.params["filter"] and np.array_equal(_decode(whole, layout), x[order])


@pytest.mark.parametrize("itemsize", [1, 2, 4])
def test_byte_planes_span_all_pieces_of_a_frame(monkeypatch, itemsize):
    """``shuffle`` stores byte 0 of every element of a frame, then byte 1, ...: a frame cut into
    pieces must still give whole planes."""
    rows = np.random.default_rng(4).integers(0, 256, size=(30, 4 * itemsize), dtype=np.uint8)
    monkeypatch.setattr(frames, "PIECE_BYTES", 2 * rows.shape[1])
    data, lengths = frames.compress_rows(rows, [10, 0, 20], 3, shuffle=itemsize)
    planes = [np.ascontiguousarray(r.reshape(-1, itemsize).T).tobytes() for r in (rows[:10], rows[10:])]
    assert [zstandard.ZstdDecompressor().decompress(bytes(data[a:a + n])) for a, n in ((0, lengths[0]),
            (lengths[0], lengths[2]))] == planes and lengths[1] == 0


def _decode(e: EncodedSection, layout: Layout) -> np.ndarray:
    return PIXELS.decode(Section(e.kind, e.codec, e.component, 0, len(e.data), e.params, bytes(e.data), e.class_bytes),
                         layout, None)


@pytest.mark.parametrize("weights, message", [
    (np.zeros(6), "all weights are 0"),
    (np.array([1.0, np.nan, 1, 1, 1, 1]), "weight nan at index 1"),
    (np.array([1.0, 1, 1, np.inf, 1, 1]), "weight inf at index 3"),
    (np.array([1, 1, 1, 1, -2, 1]), "weight -2 at index 4"),
    (np.array([True] * 6), "integers or floats"),
])
def test_unusable_weights_are_refused_when_writing(tmp_path, weights, message):
    path = ddformat.save(tmp_path / "set.dd", X, Y)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message):
        ddformat.save(path, X, Y, weights=weights, recipe={"weighting": {"scheme": "explicit"}})
    assert path.read_bytes() == before


def test_weights_that_all_round_to_zero_in_float16_are_refused(tmp_path):
    with pytest.raises(ValueError, match="every weight rounds to 0 as float16"):
        ddformat.save(tmp_path / "set.dd", X, Y, weights=np.full(6, 1e-9), recipe={"weighting": {"scheme": "explicit"}},
                      codec_options={"weights": {"dtype": "float16"}})
    assert not (tmp_path / "set.dd").exists()


def test_weights_the_recipe_cannot_use_are_refused_with_the_readers_reason(tmp_path):
    """Class 2's weights sum to 0, so its ``proportional`` shares are undefined."""
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] sum to 0"):
        ddformat.save(tmp_path / "set.dd", X, Y, weights=np.array([1, 2, 3, 4, 0, 0]),
                      recipe={"weighting": {"scheme": "proportional"}})
    assert not (tmp_path / "set.dd").exists()
    path = ddformat.save(tmp_path / "set.dd", X, Y, weights=np.array([1, 2, 3, 4, 0, 0]),
                         recipe={"weighting": {"scheme": "explicit"}})
    ddformat.open(path).verify()


def test_a_file_the_reader_would_refuse_is_not_written(tmp_path):
    """16 MiB of zeros compress ~10,000-fold, beyond the reader's expansion limit (spec § 6)."""
    path = ddformat.save(tmp_path / "set.dd", X, Y)
    before = path.read_bytes()
    with pytest.raises(LimitError, match="ddformat.open would refuse this file"):
        ddformat.save(path, np.zeros((64, 1, 512, 512), np.uint8), np.arange(64) % 2)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path):
    path = ddformat.save(tmp_path / "set.dd", X, Y)
    before = path.read_bytes()

    def fails_halfway(f: io.BufferedWriter) -> None:
        f.write(b"partial")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        write_atomic(path, fails_halfway)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_write_errors_name_the_destination_not_the_temporary_file(tmp_path):
    target = tmp_path / "missing" / "set.dd"
    with pytest.raises(FileNotFoundError) as info:
        ddformat.save(target, X, Y)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)
