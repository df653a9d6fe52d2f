"""Fast ``pixels`` decoding: the block-wise, threaded inverse filters equal a per-pixel reference
bit for bit on any input; row frames decoded on parallel threads give the same bytes and the same
refusals as frames decoded one at a time; ``size_tolerance`` trades bytes for decode speed as
documented."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ddformat.codecs import frames, pixels
from ddformat.codecs.pixels import PIXELS, _forward, _inverse, _uint8_filters
from ddformat.container.sections import EncodedSection, Layout, Section
from ddformat.errors import DecodeError

# --------------------------------------------------------------------------- the reference


def _prediction(name: str, a: int, b: int, c: int) -> int:
    """Spec § 3.2, one pixel: ``a`` left, ``b`` above, ``c`` above-left (0 outside)."""
    if name == "none":
        return 0
    if name == "sub":
        return a
    if name == "up":
        return b
    if name == "grad" or min(a, b) < c < max(a, b):
        return a + b - c
    return min(a, b) if c >= max(a, b) else max(a, b)


def _planes(x: np.ndarray) -> np.ndarray:
    """Samples as planes of their last two axes; a one-dimensional sample is one row."""
    return x.reshape(-1, 1, x.shape[-1]) if x.ndim == 2 else x.reshape(-1, *x.shape[-2:])


def _neighbours(plane: np.ndarray, i: int, j: int) -> tuple[int, int, int]:
    return (int(plane[i, j - 1]) if j else 0, int(plane[i - 1, j]) if i else 0,
            int(plane[i - 1, j - 1]) if i and j else 0)


def reference_filter(name: str, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(_planes(x))
    for p, plane in enumerate(_planes(x)):
        for i, j in np.ndindex(*plane.shape):
            out[p, i, j] = (int(plane[i, j]) - _prediction(name, *_neighbours(plane, i, j))) % 256
    return out.reshape(x.shape)


def reference_unfilter(name: str, residuals: np.ndarray) -> np.ndarray:
    """Pixel by pixel in raster order, each predicted from its already decoded neighbours."""
    out = np.zeros_like(_planes(residuals))
    for p, plane in enumerate(_planes(residuals)):
        for i, j in np.ndindex(*plane.shape):
            out[p, i, j] = (int(plane[i, j]) + _prediction(name, *_neighbours(out[p], i, j))) % 256
    return out.reshape(residuals.shape)


BLOCKINGS = {
    "default": {},
    "one plane per block, three threads": {"BLOCK_BYTES": 1, "BLOCK_PLANES": 1, "THREADS": 3},
}


def _blocking(monkeypatch: pytest.MonkeyPatch, blocking: str) -> None:
    for name, value in BLOCKINGS[blocking].items():
        monkeypatch.setattr(frames if name == "THREADS" else pixels, name, value)


sample_shapes = st.one_of(
    st.tuples(st.integers(1, 9)),
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
)
pixel_values = st.sampled_from([0, 1, 127, 128, 254, 255]) | st.integers(0, 255)
batches = sample_shapes.flatmap(
    lambda s: st.integers(1, 4).flatmap(lambda n: hnp.arrays(np.uint8, (n, *s), elements=pixel_values)))


@pytest.mark.parametrize("blocking", sorted(BLOCKINGS))
@settings(max_examples=60, deadline=None)
@given(x=batches)
def test_filters_and_their_inverses_equal_the_per_pixel_reference_on_any_samples(blocking, x):
    with pytest.MonkeyPatch.context() as mp:
        _blocking(mp, blocking)
        for name in _uint8_filters(x.shape[1:]):
            residuals = _forward(name, x)
            assert np.array_equal(residuals, reference_filter(name, x)), name
            assert np.array_equal(_inverse(name, x.copy()), reference_unfilter(name, x)), name
            assert np.array_equal(_inverse(name, residuals.copy()), x), name


def test_med_inverse_is_exact_for_every_pair_of_neighbours_and_extreme_corners():
    """Pixel (1, 1) of a 2×2 plane sees left a, above b and above-left c: every (a, b) with c
    at and around the values where the predictor switches branches or wraps."""
    a, b, c = np.meshgrid(np.arange(256), np.arange(256), [0, 1, 2, 127, 128, 129, 253, 254, 255], indexing="ij")
    x = np.zeros((a.size, 2, 2), dtype=np.uint8)
    x[:, 1, 0], x[:, 0, 1], x[:, 0, 0] = a.reshape(-1), b.reshape(-1), c.reshape(-1)
    x[:, 1, 1] = np.random.default_rng(0).integers(0, 256, a.size)
    assert np.array_equal(_inverse("med", _forward("med", x)), x)
    spot = np.random.default_rng(1).choice(a.size, 300, replace=False)
    assert np.array_equal(_forward("med", x[spot]), reference_filter("med", x[spot]))


# --------------------------------------------------------------------------- real photos, odd shapes


@pytest.fixture(scope="module")
def photo_patches():
    """Crops of two real photographs (colour and grey), in the shapes to try."""
    data = pytest.importorskip("skimage.data")
    colour, grey = data.astronaut().transpose(2, 0, 1), data.camera()[None]
    rng = np.random.default_rng(5)

    def crops(photo: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
        ys, xs = rng.integers(0, photo.shape[1] - h, n), rng.integers(0, photo.shape[2] - w, n)
        return np.stack([photo[:, y:y + h, x:x + w] for y, x in zip(ys, xs)])

    return {
        "1x1": crops(colour, 12, 1, 1)[:, :1],
        "1xW": crops(grey, 12, 1, 37),
        "Hx1": crops(colour, 12, 29, 1),
        "3x13x17": crops(colour, 12, 13, 17),
        "3x32x32": crops(colour, 40, 32, 32),
        "5 channels": np.concatenate([crops(colour, 12, 11, 9), crops(grey, 12, 11, 9).repeat(2, axis=1)], axis=1),
        "one dimension": crops(grey, 12, 1, 31)[:, 0, 0],
    }


def _encoded_with(name: str, x: np.ndarray, groups: list[int]) -> tuple[Section, Layout]:
    """A ``pixels`` section of ``x`` stored with filter ``name`` (the writer would pick one)."""
    residuals = _forward(name, x).reshape(len(x), -1)
    data, lengths = frames.compress_rows(residuals, groups, 3)
    params = {"dtype": "uint8", "filter": name, "compression": "zstd", "frames": lengths, "frame_rows": groups}
    lay = Layout(len(x), len(groups), x.shape[1:], "uint8", 2**30)
    return Section("samples", "pixels", "samples", 0, len(data), params, bytes(data), lengths), lay


@pytest.mark.parametrize("blocking", sorted(BLOCKINGS))
@pytest.mark.parametrize("shape", ["1x1", "1xW", "Hx1", "3x13x17", "5 channels", "one dimension"])
def test_every_filter_round_trips_real_photo_patches_through_the_codec(photo_patches, shape, blocking, monkeypatch):
    _blocking(monkeypatch, blocking)
    x = photo_patches[shape]
    for name in _uint8_filters(x.shape[1:]):
        section, lay = _encoded_with(name, x, [5, 0, 7])
        out = PIXELS.decode(section, lay, lambda kind: None)
        assert out.shape == x.shape and out.flags.c_contiguous and np.array_equal(out, x), name
        assert np.array_equal(reference_unfilter(name, _forward(name, x[:2])), x[:2]), name


# --------------------------------------------------------------------------- row frames on threads


def test_in_threads_runs_items_concurrently_in_order_and_at_most_threads_at_once(monkeypatch):
    monkeypatch.setattr(frames, "THREADS", 2)
    meet = threading.Barrier(2, timeout=10)
    assert frames.in_threads(lambda i: (meet.wait(), i)[1], range(2)) == [0, 1]
    lock, running, most = threading.Lock(), [0], [0]

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return -i

    assert frames.in_threads(work, range(8)) == [-i for i in range(8)]
    assert most[0] == 2


def test_frames_are_decoded_on_as_many_threads_as_cpus():
    assert frames.THREADS == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("kind", ["zstd", "raw", "float shuffle"])
def test_frames_decoded_in_parallel_equal_frames_decoded_one_at_a_time(kind, monkeypatch):
    rng = np.random.default_rng(6)
    groups = [9, 0, 4, 13, 1, 0, 6]
    if kind == "float shuffle":
        x = rng.normal(size=(sum(groups), 3, 6, 6)).astype(np.float32).round(2)
    else:
        x = rng.integers(0, 256 if kind == "raw" else 4, (sum(groups), 3, 6, 6), dtype=np.uint8)
    lay = Layout(len(x), len(groups), x.shape[1:], x.dtype.name, 2**30)
    (e,) = PIXELS.encode(x, lay, groups)
    assert e.params["compression"] == ("none" if kind == "raw" else "zstd")
    section = Section(e.kind, e.codec, e.component, 0, len(e.data), e.params, bytes(e.data), e.class_bytes)
    decoded = {}
    for threads in (1, 4):
        monkeypatch.setattr(frames, "THREADS", threads)
        decoded[threads] = PIXELS.decode(section, lay, lambda kind: None)
    assert np.array_equal(decoded[1].view(np.uint8), x.view(np.uint8))
    assert np.array_equal(decoded[4].view(np.uint8), x.view(np.uint8))


def _grouped_section() -> tuple[EncodedSection, Layout]:
    rng = np.random.default_rng(7)
    groups = [20, 4000, 20, 20, 20, 20]
    x = (rng.integers(0, 3, (sum(groups), 2, 16, 16)) * 40).astype(np.uint8)
    lay = Layout(len(x), len(groups), x.shape[1:], "uint8", 2**30)
    (e,) = PIXELS.encode(x, lay, groups)
    assert e.params["compression"] == "zstd" and min(e.params["frames"]) > 40
    return e, lay


def _damaged(e: EncodedSection, frame: int, how: str) -> tuple[bytes, dict]:
    """The payload and params with one frame damaged: a byte flipped where zstd checks it
    (``corrupt``), its last bytes cut (``truncated``), bytes appended (``trailing``), another
    size declared (``declared``)."""
    lengths = list(e.params["frames"])
    start, end = sum(lengths[:frame]), sum(lengths[:frame + 1])
    body = bytearray(e.data[start:end])
    if how == "corrupt":
        body[len(body) // 2:] = bytes(255 - v for v in body[len(body) // 2:])
    elif how == "truncated":
        del body[-3:]
    elif how == "trailing":
        body += b"\x00\x00"
    else:
        raw = zstandard.ZstdDecompressor().decompress(bytes(body))
        body = bytearray(zstandard.ZstdCompressor(write_content_size=True).compress(raw + b"\x00"))
    lengths[frame] = len(body)
    data = bytes(e.data[:start]) + bytes(body) + bytes(e.data[end:])
    return data, {**e.params, "frames": lengths}


@pytest.mark.parametrize("threads", [1, 2, 6])
@pytest.mark.parametrize("how,message", [("corrupt", "corrupt zstd frame"), ("truncated", "truncated"),
                                         ("trailing", "follow the zstd frame"), ("declared", "declares")])
def test_each_bad_frame_is_refused_naming_it_whatever_the_thread_count(how, message, threads, monkeypatch):
    monkeypatch.setattr(frames, "THREADS", threads)
    e, lay = _grouped_section()
    data, params = _damaged(e, 3, how)
    section = Section(e.kind, e.codec, e.component, 0, len(data), params, data, params["frames"])
    with pytest.raises(DecodeError, match=message) as info:
        PIXELS.decode(section, lay, lambda kind: None)
    assert info.value.section == "samples" and info.value.field == "params.frames[3]"


@pytest.mark.parametrize("threads", [1, 6])
def test_of_two_bad_frames_the_first_is_reported_even_when_a_later_one_fails_sooner(threads, monkeypatch):
    """Frame 1 (2 MB) fails only at its end, frame 4 at once; the loop order decides, not the
    clock."""
    monkeypatch.setattr(frames, "THREADS", threads)
    e, lay = _grouped_section()
    lengths = e.params["frames"]
    data = bytearray(e.data)
    data[sum(lengths[:2]) - 2] ^= 0xFF
    second = sum(lengths[:4])
    data[second + 12:second + lengths[4]] = bytes(255 - v for v in data[second + 12:second + lengths[4]])
    section = Section(e.kind, e.codec, e.component, 0, len(data), e.params, bytes(data), e.class_bytes)
    with pytest.raises(DecodeError) as info:
        PIXELS.decode(section, lay, lambda kind: None)
    assert info.value.field == "params.frames[1]"


# --------------------------------------------------------------------------- bytes for speed


def _trial_sizes(x: np.ndarray) -> dict[str, int]:
    """What the writer's trial sees for a set smaller than its trial budget: every row, one frame."""
    return {name: len(frames.compress_rows(_forward(name, x).reshape(len(x), -1), None, 10)[0])
            for name in _uint8_filters(x.shape[1:])}


def test_size_tolerance_keeps_the_fastest_filter_within_that_fraction_of_the_fewest_bytes(photo_patches):
    """Filters are listed fastest-decoding first; just above and just below each filter's own
    size ratio the choice flips as the rule says."""
    x = photo_patches["3x32x32"]
    sizes = _trial_sizes(x)
    smallest = min(sizes.values())
    lay = Layout(len(x), 1, x.shape[1:], "uint8", 2**30)
    chosen = set()
    ratios = ((size - smallest) / smallest for size in sizes.values())
    exact = {t for t in ratios if smallest * (1 + t) in sizes.values()}
    assert len(exact) >= 2
    nearby = {min(1.0, max(0.0, sizes[f] / smallest - 1 + eps)) for f in sizes for eps in (-1e-9, 1e-9)}
    for tolerance in sorted(exact | nearby):
        (e,) = PIXELS.encode(x, lay, None, size_tolerance=tolerance)
        expected = next(f for f in pixels._UINT8_FILTERS if sizes[f] <= smallest * (1 + tolerance))
        assert e.params["filter"] == expected, tolerance
        chosen.add(expected)
        section = Section(e.kind, e.codec, e.component, 0, len(e.data), e.params, bytes(e.data), e.class_bytes)
        assert np.array_equal(PIXELS.decode(section, lay, lambda kind: None), x)
    assert len(chosen) >= 3
    (default,) = PIXELS.encode(x, lay, None)
    assert default.params["filter"] == min(sizes, key=sizes.get) != "none"


@pytest.mark.parametrize("tolerance", [-0.01, 1.5, float("nan")])
def test_size_tolerance_outside_zero_to_one_is_refused(tolerance):
    x = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="size_tolerance"):
        PIXELS.encode(x, Layout(2, 1, (1, 4, 4), "uint8", 2**30), None, size_tolerance=tolerance)
