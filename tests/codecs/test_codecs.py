"""Payload codecs: exact round trips, sensible compression, and refusal of every bad payload
with a FormatError that names the section and field (never another exception, never an
allocation sized by an unchecked number)."""

from __future__ import annotations

import copy

import msgpack
import numpy as np
import pytest
import zstandard

from ddformat import codecs
from ddformat.codecs import frames
from ddformat.container.sections import EncodedSection, Layout, Section
from ddformat.codecs.hard_labels import GROUPED, INDICES
from ddformat.codecs.pixels import PIXELS, _UINT8_FILTERS, _forward, _inverse
from ddformat.codecs.soft_labels import DENSE, TOPK, mean_kl
from ddformat.codecs.weights import COUNTS, FLOAT
from ddformat.errors import DecodeError, FormatError, LimitError

BIG = 2**34


def layout(n: int, k: int, shape=(1,), dtype="uint8", cap=BIG) -> Layout:
    return Layout(num_samples=n, num_classes=k, sample_shape=tuple(shape), sample_dtype=dtype, max_decoded_bytes=cap)


def as_section(e: EncodedSection, data=None, params=None, length=None) -> Section:
    """What a reader would hand over, with optional tampering; params pass through msgpack as
    they would in a real header."""
    data = e.data if data is None else data
    params = msgpack.unpackb(msgpack.packb(e.params if params is None else params), raw=False)
    return Section(e.kind, e.codec, e.component, 0, len(data) if length is None else length,
                   params, data, e.class_bytes)


def decode(e: EncodedSection, lay: Layout, **tamper):
    s = as_section(e, **tamper)
    if e.kind == "samples":
        return codecs.lookup("samples", e.codec).decode(s, lay, lambda kind: None)
    return codecs.lookup(e.kind, e.codec).decode(s, lay)


def class_sorted(rng, k: int, ipc: list[int]) -> tuple[np.ndarray, list[int]]:
    labels = np.repeat(np.arange(k), ipc)
    return labels, list(ipc)


def softmax_rows(rng, labels: np.ndarray, k: int, temperature: float = 2.0) -> np.ndarray:
    logits = rng.normal(0, 2, (len(labels), k))
    logits[np.arange(len(labels)), labels] += 5
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def smooth_field(rng, n: int, c: int = 3, h: int = 32, w: int = 32) -> np.ndarray:
    """Low-frequency random float64 images."""
    coarse = rng.normal(size=(n, c, h // 8 + 2, w // 8 + 2))
    up = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
    kernel = np.ones(8) / 8
    for axis in (2, 3):
        up = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, up)
    return up[:, :, 4:4 + h, 4:4 + w]


def smooth_images(rng, n: int, c: int = 3, h: int = 32, w: int = 32) -> np.ndarray:
    """Low-frequency random uint8 images with mild noise: what filters should help on."""
    img = smooth_field(rng, n, c, h, w)
    img = (img - img.min()) / (img.max() - img.min()) * 220 + 16 + rng.normal(0, 1.0, img.shape)
    return np.clip(img.round(), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- round trips: samples


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 5, 7), (16,), (2, 3, 4, 5)])
@pytest.mark.parametrize("grouped", [False, True])
def test_pixels_round_trip_is_bit_exact(dtype, shape, grouped):
    rng = np.random.default_rng(0)
    k, ipc = 4, [3, 0, 5, 2]
    n = sum(ipc)
    if dtype == "uint8":
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    else:
        x = rng.normal(size=(n, *shape)).astype(dtype)
        x.reshape(-1)[:3] = [-0.0, np.finfo(dtype).tiny / 4, np.finfo(dtype).max]
    lay = layout(n, k, shape, dtype)
    (e,) = PIXELS.encode(x, lay, ipc if grouped else None)
    assert (e.kind, e.codec, e.component) == ("samples", "pixels", "samples")
    out = decode(e, lay)
    assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype) and out.shape == (n, *shape)
    assert np.array_equal(out.view(np.uint8), x.view(np.uint8))
    assert e.params["dtype"] == dtype and sum(e.params["frame_rows"]) == n
    if grouped:
        assert e.class_bytes == e.params["frames"] and sum(e.class_bytes) == len(e.data)
        assert e.class_bytes[1] == 0
    else:
        assert e.class_bytes is None


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_pixels_zero_samples_round_trip_with_empty_groups(dtype):
    lay = layout(0, 3, (2, 4, 4), dtype)
    (e,) = PIXELS.encode(np.zeros((0, 2, 4, 4), dtype), lay, [0, 0, 0])
    assert e.data == b"" and e.class_bytes == [0, 0, 0]
    assert decode(e, lay).shape == (0, 2, 4, 4)


@pytest.mark.parametrize("name", _UINT8_FILTERS)
@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (4, 1, 1), (3, 6, 1), (2, 2, 5, 5, 4)])
def test_every_uint8_filter_is_a_bijection(name, shape):
    x = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(_inverse(name, _forward(name, x)), x)


def test_filter_choice_pays_on_smooth_images():
    rng = np.random.default_rng(2)
    x = smooth_images(rng, 40)
    lay = layout(len(x), 1, x.shape[1:])
    (e,) = PIXELS.encode(x, lay, None)
    unfiltered = len(frames.compress_rows(x.reshape(len(x), -1), None, 10)[0])
    assert e.params["filter"] != "none"
    assert len(e.data) < 0.85 * unfiltered
    assert np.array_equal(decode(e, lay), x)


def test_filter_none_and_raw_storage_chosen_for_noise():
    x = np.random.default_rng(3).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    lay = layout(20, 2, x.shape[1:])
    (e,) = PIXELS.encode(x, lay, [10, 10])
    assert e.params["filter"] == "none" and e.params["compression"] == "none"
    assert len(e.data) == x.nbytes and e.class_bytes == [x.nbytes // 2] * 2
    assert np.array_equal(decode(e, lay), x)


def test_float_samples_shuffle_pays_on_continuous_floats():
    rng = np.random.default_rng(4)
    x = smooth_field(rng, 20, 3, 16, 16).astype(np.float32)
    lay = layout(len(x), 1, x.shape[1:], "float32")
    (e,) = PIXELS.encode(x, lay, None)
    plain = len(frames.compress_rows(x.reshape(20, -1).view(np.uint8), None, 10)[0])
    assert e.params["filter"] == "shuffle" and len(e.data) < 0.95 * plain
    assert np.array_equal(decode(e, lay), x)


def test_float_samples_quantised_to_256_levels_keep_no_filter():
    """Floats that were uint8 pixels repeat whole 4-byte values, which zstd finds unshuffled."""
    x = (smooth_images(np.random.default_rng(4), 20).astype(np.float32) / 255 - 0.5) / 0.25
    lay = layout(len(x), 1, x.shape[1:], "float32")
    (e,) = PIXELS.encode(x, lay, None)
    assert e.params["filter"] == "none" and len(e.data) < 0.3 * x.nbytes
    assert np.array_equal(decode(e, lay), x)


# --------------------------------------------------------------------------- round trips: labels


@pytest.mark.parametrize("ipc", [[3, 1, 4, 1, 5], [0, 0, 7, 0, 0], [0, 0, 0, 0, 0], [200, 130, 0, 1, 127]])
def test_grouped_labels_round_trip_and_attribute_bytes_per_class(ipc):
    labels, groups = class_sorted(None, len(ipc), ipc)
    lay = layout(len(labels), len(ipc))
    e = GROUPED.encode(labels, lay, groups)
    assert e.class_bytes == [1 if c < 128 else 2 for c in ipc] and sum(e.class_bytes) == len(e.data)
    out = decode(e, lay)
    assert out.dtype == np.int64 and np.array_equal(out, labels)


def test_grouped_labels_refuse_unsorted_labels():
    with pytest.raises(ValueError):
        GROUPED.encode(np.array([1, 0]), layout(2, 2), None)
    with pytest.raises(ValueError):
        GROUPED.encode(np.array([0, 1]), layout(2, 2), [2, 0])


@pytest.mark.parametrize("n,k,present", [(500, 10, 10), (300, 1000, 7), (50, 3, 1), (0, 4, 0), (1, 1, 1),
                                         (2000, 100000, 2000)])
def test_index_labels_round_trip_any_order(n, k, present):
    rng = np.random.default_rng(n + k)
    classes = rng.choice(k, size=present, replace=False) if present else np.zeros(0, np.int64)
    labels = rng.choice(classes, size=n) if n else np.zeros(0, np.int64)
    lay = layout(n, k)
    e = INDICES.encode(labels, lay, None)
    assert e.class_bytes is None
    out = decode(e, lay)
    assert out.dtype == np.int64 and np.array_equal(out, labels)


def test_index_labels_cost_close_to_empirical_entropy():
    rng = np.random.default_rng(5)
    k, n = 10, 5000
    labels = rng.choice(k, size=n, p=np.arange(1, k + 1) / sum(range(1, k + 1)))
    e = INDICES.encode(labels, layout(n, k), None)
    freq = np.bincount(labels, minlength=k) / n
    entropy_bytes = -(freq[freq > 0] * np.log2(freq[freq > 0])).sum() * n / 8
    words_bytes = 4 * e.params["words"]
    assert words_bytes <= entropy_bytes * 1.01 + 8


def test_index_labels_bitstream_is_pinned():
    """The stream is defined by integers only (see frames.py); pin it so a dependency update
    that changes it is noticed."""
    labels = np.array([0, 2, 2, 1, 0, 2, 2, 2, 3, 0])
    e = INDICES.encode(labels, layout(10, 5), None)
    assert e.data.hex() == "0301050100" + "e602000b" + "0d000000"
    assert e.params == {"tables": 5, "table_compression": "none", "words": 2}


def test_ans_model_uses_exactly_the_integer_frequencies():
    """constriction must code with the frequencies frames.model_frequencies defines, so the
    format does not depend on its float quantiser: pushing one symbol onto an empty coder
    leaves the state equal to that symbol's left cumulative frequency."""
    import constriction

    counts = np.array([7, 0, 3, 1000, 1, 1, 0, 250000])
    present, freq = frames.model_frequencies(counts)
    assert present.tolist() == [0, 2, 3, 4, 5, 7]
    assert freq.sum() == 2**24 and (freq >= 1).all()
    _, model = frames._model(counts)
    left = np.concatenate(([0], np.cumsum(freq)[:-1]))
    for s in range(1, len(present)):
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.array([s], dtype=np.int32), model)
        assert coder.get_compressed().tolist() == [left[s]]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("grouped", [False, True])
def test_dense_soft_labels_round_trip(dtype, grouped):
    rng = np.random.default_rng(6)
    labels, groups = class_sorted(rng, 6, [4, 0, 3, 5, 2, 6])
    probs = softmax_rows(rng, labels, 6).astype(np.float32)
    probs[0] = [1e-12, 1 - 1e-12, 0, 0, 0, 0]
    lay = layout(len(labels), 6)
    e = DENSE.encode(probs, lay, groups if grouped else None, dtype=dtype)
    out = decode(e, lay)
    assert out.dtype == np.float32 and out.shape == probs.shape
    assert (out >= 0).all() and np.abs(out.sum(axis=1, dtype=np.float64) - 1).max() <= 1e-6
    if dtype == "float32":
        assert np.array_equal(out.view(np.uint32), probs.view(np.uint32))
        assert e.params["kl_to_source"] == 0.0
    else:
        assert out[0, 0] > 0, "a positive probability must not round to zero"
        assert 0 < e.params["kl_to_source"] < 1e-4
        assert e.params["kl_to_source"] == pytest.approx(mean_kl(probs, out), rel=1e-6, abs=1e-12)
    if grouped:
        assert e.class_bytes == e.params["frames"] and e.class_bytes[1] == 0


def test_topk_gives_valid_distributions_and_sensible_kl():
    rng = np.random.default_rng(7)
    labels, groups = class_sorted(rng, 100, [10] * 100)
    logits = rng.normal(0, 1.5, (len(labels), 100))
    logits[np.arange(len(labels)), labels] += 6
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    lay = layout(len(labels), 100)
    kls, sizes = {}, {}
    for k, bits in [(1, 4), (4, 6), (8, 8), (32, 10), (100, 12)]:
        e = TOPK.encode(probs, lay, groups, k=k, bits=bits)
        out = decode(e, lay)
        assert out.dtype == np.float32 and out.shape == probs.shape
        assert (out >= 0).all() and np.abs(out.sum(axis=1, dtype=np.float64) - 1).max() <= 1e-5
        assert e.params["k"] == k and e.params["bits"] == bits
        kl = e.params["kl_to_source"]
        assert kl == pytest.approx(mean_kl(probs, out), rel=1e-6, abs=1e-12)
        assert np.isfinite(kl) and kl >= 0
        kls[k], sizes[k] = kl, len(e.data)
    assert kls[1] > kls[4] > kls[8] > kls[32] > kls[100]
    assert kls[100] < 1e-3 and kls[8] < 0.2
    assert sizes[8] < probs.size * 2 / 4, "top-8 of 100 at 8 bits is far below dense float16"


def test_topk_keeps_leftover_mass_so_kl_is_finite():
    probs = np.array([[0.999, 0.001, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    lay = layout(3, 4)
    e = TOPK.encode(probs, lay, None, k=1, bits=4)
    out = decode(e, lay)
    assert np.isfinite(e.params["kl_to_source"])
    assert out[0, 0] == pytest.approx(15 / 16) and out[0, 1:].sum() == pytest.approx(1 / 16)
    assert out[1, 0] == pytest.approx(0.5) and out[1, 1] == pytest.approx(0.5 / 3)
    assert np.allclose(out[2], 0.25)


def test_topk_with_k_equal_num_classes_renormalises():
    probs = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    lay = layout(2, 3)
    e = TOPK.encode(probs, lay, None, k=50, bits=3)
    assert e.params["k"] == 3
    out = decode(e, lay)
    assert np.abs(out.sum(axis=1) - 1).max() < 1e-6 and (out > 0).all()


def test_topk_zero_rows_and_single_class():
    assert decode(TOPK.encode(np.zeros((0, 5)), layout(0, 5), None), layout(0, 5)).shape == (0, 5)
    one = np.ones((4, 1))
    assert np.array_equal(decode(TOPK.encode(one, layout(4, 1), None), layout(4, 1)), one.astype(np.float32))


# --------------------------------------------------------------------------- round trips: weights


@pytest.mark.parametrize("values", [[0, 1, 2, 3], [0, 255, 256, 7], [65535, 65536, 0, 1], [2**32 - 1, 0, 5, 5]])
@pytest.mark.parametrize("grouped", [False, True])
def test_count_weights_are_exact_in_the_narrowest_width(values, grouped):
    w = np.array(values, dtype=np.int64)
    lay = layout(4, 2)
    e = COUNTS.encode(w, lay, [3, 1] if grouped else None)
    top = max(values)
    assert e.params["width"] == (1 if top < 256 else 2 if top < 65536 else 4)
    out = decode(e, lay)
    assert out.dtype == np.int64 and np.array_equal(out, w)


def test_count_weights_compress_repetitive_counts():
    w = np.tile(np.arange(50), 40)
    lay = layout(len(w), 1)
    e = COUNTS.encode(w, lay, None)
    assert e.params["compression"] == "zstd" and len(e.data) < len(w) // 4
    assert np.array_equal(decode(e, lay), w)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_float_weights_round_trip(dtype):
    w = np.random.default_rng(8).random(64).astype(np.float32) * 10
    lay = layout(64, 4)
    e = FLOAT.encode(w, lay, [16] * 4, dtype=dtype)
    out = decode(e, lay)
    assert out.dtype == np.float32
    assert np.array_equal(out, w.astype(dtype).astype(np.float32))


# --------------------------------------------------------------------------- encoder input checks


@pytest.mark.parametrize("call", [
    lambda: PIXELS.encode(np.zeros((2, 3), np.float32), layout(2, 1, (3,), "uint8"), None),
    lambda: PIXELS.encode(np.zeros((2, 4), np.uint8), layout(2, 1, (3,), "uint8"), None),
    lambda: PIXELS.encode(np.zeros((3, 3), np.uint8), layout(2, 1, (3,), "uint8"), None),
    lambda: PIXELS.encode(np.zeros((2, 3), np.int32), layout(2, 1, (3,), "int32"), None),
    lambda: PIXELS.encode(np.full((2, 3), np.nan, np.float32), layout(2, 1, (3,), "float32"), None),
    lambda: PIXELS.encode(np.zeros((2, 3), np.uint8), layout(2, 2, (3,), "uint8"), [1, 2]),
    lambda: PIXELS.encode(np.zeros((2, 3), np.uint8), layout(2, 2, (3,), "uint8"), [2]),
    lambda: INDICES.encode(np.array([0, 3]), layout(2, 3), None),
    lambda: INDICES.encode(np.array([0, -1]), layout(2, 3), None),
    lambda: INDICES.encode(np.array([0.0, 1.0]), layout(2, 3), None),
    lambda: INDICES.encode(np.array([0, 1, 1]), layout(2, 3), None),
    lambda: DENSE.encode(np.array([[0.5, 0.6]]), layout(1, 2), None),
    lambda: DENSE.encode(np.array([[1.5, -0.5]]), layout(1, 2), None),
    lambda: DENSE.encode(np.array([[0.5, 0.5]]), layout(1, 2), None, dtype="float64"),
    lambda: DENSE.encode(np.array([[1, 0]]), layout(1, 2), None),
    lambda: TOPK.encode(np.array([[0.5, 0.5]]), layout(1, 2), None, k=0),
    lambda: TOPK.encode(np.array([[0.5, 0.5]]), layout(1, 2), None, bits=17),
    lambda: TOPK.encode(np.array([[0.5, 0.5]]), layout(1, 2), None, bits=True),
    lambda: COUNTS.encode(np.array([1, -1]), layout(2, 1), None),
    lambda: COUNTS.encode(np.array([1.0, 2.0]), layout(2, 1), None),
    lambda: COUNTS.encode(np.array([2**32, 0]), layout(2, 1), None),
    lambda: FLOAT.encode(np.array([1.0, -1.0]), layout(2, 1), None),
    lambda: FLOAT.encode(np.array([1.0, np.inf]), layout(2, 1), None),
    lambda: FLOAT.encode(np.array([1.0, 1e6]), layout(2, 1), None, dtype="float16"),
])
def test_encoders_reject_invalid_arrays_with_value_error(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------- corrupt payloads


def _samples_source() -> np.ndarray:
    return smooth_images(np.random.default_rng(9), 6, c=1, h=8, w=8)


def _samples():
    lay = layout(6, 3, (1, 8, 8))
    (e,) = PIXELS.encode(_samples_source(), lay, [2, 2, 2])
    assert e.params["compression"] == "zstd"
    return e, lay


def _fixtures():
    """One encoded section per codec (zstd-compressed where the codec frames) with its layout,
    and the array each was encoded from."""
    rng = np.random.default_rng(10)
    labels, groups = class_sorted(rng, 3, [20, 20, 20])
    lay = layout(60, 3)
    probs = softmax_rows(rng, labels, 3)
    sources = {"pixels": _samples_source(), "grouped": labels, "indices": rng.permutation(labels),
               "dense16": np.repeat(probs[:1], 60, axis=0), "dense32": np.repeat(probs[:1], 60, axis=0),
               "topk": probs, "counts": np.tile([1, 2, 3], 20), "float": np.tile([0.5, 2.0], 30)}
    out = {"pixels": _samples(),
           "grouped": (GROUPED.encode(labels, lay, groups), lay),
           "indices": (INDICES.encode(sources["indices"], lay, None), lay),
           "dense16": (DENSE.encode(sources["dense16"], lay, groups), lay),
           "dense32": (DENSE.encode(sources["dense32"], lay, groups, dtype="float32"), lay),
           "topk": (TOPK.encode(probs, lay, groups, k=2, bits=6), lay),
           "counts": (COUNTS.encode(sources["counts"], lay, groups), lay),
           "float": (FLOAT.encode(sources["float"], lay, groups), lay)}
    for name in ("dense16", "dense32", "counts", "float"):
        assert out[name][0].params["compression"] == "zstd", name
    return out, sources


FIXTURES, FIXTURE_SOURCES = _fixtures()
DECODED_DTYPES = {"pixels": np.uint8, "grouped": np.int64, "indices": np.int64, "dense16": np.float32,
                  "dense32": np.float32, "topk": np.float32, "counts": np.int64, "float": np.float32}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_decodes_to_what_was_encoded(name):
    """Lossless codecs give back the array exactly; lossy soft labels (float16, top-k) give back
    distributions at exactly the KL from the source that the encoder recorded, same arg-max."""
    e, lay = FIXTURES[name]
    source = FIXTURE_SOURCES[name]
    out = decode(e, lay)
    assert out.dtype == DECODED_DTYPES[name] and out.shape == source.shape
    kl = e.params.get("kl_to_source", 0.0)
    if kl == 0.0:
        assert np.array_equal(out, source.astype(out.dtype))
    else:
        assert mean_kl(source, out) == pytest.approx(kl, rel=1e-6)
        assert np.array_equal(out.argmax(axis=1), source.argmax(axis=1))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_payload_length_must_match_section_table(name):
    e, lay = FIXTURES[name]
    with pytest.raises(DecodeError) as info:
        decode(e, lay, length=len(e.data) + 1)
    assert info.value.section == e.kind and info.value.field == "length"


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("cut", [1, 3])
def test_truncated_payload_raises_decode_error(name, cut):
    e, lay = FIXTURES[name]
    with pytest.raises(DecodeError) as info:
        decode(e, lay, data=e.data[:-cut])
    assert info.value.section == e.kind


def test_truncated_zstd_frame_names_the_frame():
    e, lay = _samples()
    params = copy.deepcopy(e.params)
    start = sum(params["frames"][:1])
    data = e.data[:start + params["frames"][1] - 2] + e.data[start + params["frames"][1]:]
    params["frames"][1] -= 2
    with pytest.raises(DecodeError) as info:
        decode(e, lay, data=data, params=params)
    assert info.value.field == "params.frames[1]" and info.value.section == "samples"


def test_frame_declaring_a_different_size_is_refused_before_decompressing():
    e, lay = _samples()
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(10**7))
    params = copy.deepcopy(e.params)
    params["frames"] = [len(bomb), 0, 0]
    params["frame_rows"] = [6, 0, 0]
    with pytest.raises(DecodeError, match="declares 10000000 bytes") as info:
        decode(e, lay, data=bomb, params=params)
    assert info.value.field == "params.frames[0]"


def test_bytes_after_a_zstd_frame_are_refused():
    e, lay = _samples()
    params = copy.deepcopy(e.params)
    params["frames"][-1] += 2
    with pytest.raises(DecodeError, match="follow the zstd frame") as info:
        decode(e, lay, data=e.data + b"\x00\x00", params=params)
    assert info.value.field == "params.frames[2]"


def test_frame_lengths_must_cover_the_payload():
    e, lay = _samples()
    params = copy.deepcopy(e.params)
    params["frames"][0] += 1
    with pytest.raises(DecodeError) as info:
        decode(e, lay, params=params)
    assert info.value.field == "params.frames"


def test_frame_rows_must_sum_to_num_samples():
    e, lay = _samples()
    params = copy.deepcopy(e.params)
    params["frame_rows"][0] += 1
    with pytest.raises(DecodeError) as info:
        decode(e, lay, params=params)
    assert info.value.field == "params.frame_rows"


def test_sample_dtype_must_match_layout():
    e, lay = _samples()
    with pytest.raises(DecodeError):
        decode(e, layout(6, 3, (1, 8, 8), "float16"), params={**e.params, "dtype": "float16", "filter": "none"})
    with pytest.raises(DecodeError) as info:
        decode(e, layout(6, 3, (1, 8, 8), "float16"))
    assert info.value.field == "params.dtype"


@pytest.mark.parametrize("name,key,value", [
    ("pixels", "frames", "12"), ("pixels", "frames", [1, 2]), ("pixels", "frames", [1, -2, 3]),
    ("pixels", "frames", [1, True, 3]), ("pixels", "frames", [1, 2.0, 3]), ("pixels", "frame_rows", None),
    ("pixels", "filter", "paeth"), ("pixels", "filter", 1), ("pixels", "compression", "lz4"),
    ("pixels", "dtype", None), ("indices", "words", -1), ("indices", "words", "3"), ("indices", "tables", 2**40),
    ("indices", "table_compression", True), ("topk", "k", 0), ("topk", "k", 4), ("topk", "bits", 17),
    ("topk", "bits", 2.0), ("topk", "level_tables", 1), ("counts", "width", 3), ("counts", "width", True),
    ("float", "dtype", "float64"), ("dense16", "dtype", "bfloat16"), ("dense16", "frames", {}),
])
def test_bad_params_raise_decode_error_naming_the_field(name, key, value):
    e, lay = FIXTURES[name]
    with pytest.raises(DecodeError) as info:
        decode(e, lay, params={**e.params, key: value})
    assert info.value.section == e.kind
    assert info.value.field is not None and info.value.field.startswith(f"params.{key}")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_missing_params_raise_decode_error(name):
    e, lay = FIXTURES[name]
    for key in e.params:
        if key == "kl_to_source":
            continue
        params = {k: v for k, v in e.params.items() if k != key}
        with pytest.raises(DecodeError) as info:
            decode(e, lay, params=params)
        assert info.value.field.startswith(f"params.{key}")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_decoded_size_cap_enforced_before_allocation(name):
    e, lay = FIXTURES[name]
    small = Layout(lay.num_samples, lay.num_classes, lay.sample_shape, lay.sample_dtype, max_decoded_bytes=16)
    with pytest.raises(LimitError) as info:
        decode(e, small)
    assert info.value.section == e.kind


def test_huge_claimed_sample_count_is_refused_without_allocating():
    e, _ = _samples()
    huge = layout(2**31 - 1, 3, (1, 8, 8), cap=2**40)
    params = {**e.params, "frame_rows": [2**31 - 3, 1, 1]}
    with pytest.raises(DecodeError) as info:
        decode(e, huge, params=params)
    assert info.value.field == "params.frames[0]"
    with pytest.raises(LimitError):
        decode(e, layout(2**31 - 1, 3, (1, 8, 8)), params=params)


def test_grouped_counts_must_sum_to_num_samples():
    e, lay = FIXTURES["grouped"]
    with pytest.raises(DecodeError):
        decode(e, layout(61, 3))
    with pytest.raises(DecodeError):
        decode(e, lay, data=bytes([20, 20, 21]))


def test_non_canonical_varints_are_refused():
    e, lay = FIXTURES["grouped"]
    with pytest.raises(DecodeError, match="canonical"):
        decode(e, lay, data=bytes([0x94, 0x00, 20, 20]))
    with pytest.raises(DecodeError):
        decode(e, lay, data=bytes([20, 20, 0x94]))


@pytest.mark.parametrize("varint_values", [[0], [127, 128], [16383, 16384, 2**21, 2**28, 2**32 - 1]])
def test_varints_round_trip(varint_values):
    buf = frames.varint_encode(np.array(varint_values))
    s = Section("labels", "x", "labels", 0, len(buf), {}, buf)
    assert frames.varint_decode(s, buf, len(varint_values), "data").tolist() == varint_values
    assert len(buf) == int(frames.varint_lengths(np.array(varint_values)).sum())


def test_index_label_garbage_words_raise_decode_error():
    e, lay = FIXTURES["indices"]
    tables = e.params["tables"]
    rng = np.random.default_rng(11)
    for _ in range(50):
        words = rng.integers(1, 2**32, e.params["words"], dtype=np.uint64).astype("<u4").tobytes()
        with pytest.raises(DecodeError) as info:
            decode(e, lay, data=e.data[:tables] + words)
        assert info.value.field in ("data.words", "data.tables")


def test_index_label_stream_ending_in_zero_word_is_refused():
    e, lay = FIXTURES["indices"]
    with pytest.raises(DecodeError, match="ANS"):
        decode(e, lay, data=e.data[:-4] + bytes(4))


def test_index_label_histogram_must_match_num_samples():
    e, lay = FIXTURES["indices"]
    with pytest.raises(DecodeError) as info:
        decode(e, layout(59, 3))
    assert info.value.field == "data.tables"


def test_topk_rows_repeating_a_class_are_refused():
    probs = np.array([[0.6, 0.4, 0.0]] * 4)
    lay = layout(4, 3)
    e = TOPK.encode(probs, lay, None, k=2, bits=4)
    idx = np.array([[0, 0]] * 4).reshape(-1)
    counts = np.bincount(idx, minlength=3)
    levels = [np.full(4, 10), np.full(4, 6)]
    tables = [counts] + [np.bincount(v, minlength=17) for v in levels]
    data, params = frames.pack_coded(tables, [(idx, counts)] + list(zip(levels, tables[1:])), 10)
    with pytest.raises(DecodeError, match="repeats"):
        decode(e, lay, data=data, params={**e.params, **params})


def test_float_weights_negative_on_disk_are_refused():
    lay = layout(2, 1)
    e = FLOAT.encode(np.array([1.0, 2.0]), lay, None)
    with pytest.raises(DecodeError) as info:
        decode(e, lay, data=np.array([1.0, -2.0], "<f4").tobytes())
    assert info.value.field == "data"
    with pytest.raises(DecodeError):
        decode(e, lay, data=np.array([1.0, np.nan], "<f4").tobytes())


def test_dense_float32_rows_must_be_distributions():
    lay = layout(1, 2)
    e = DENSE.encode(np.array([[0.5, 0.5]]), lay, None, dtype="float32")
    with pytest.raises(DecodeError):
        decode(e, lay, data=np.array([0.5, 0.7], "<f4").tobytes())
    e16 = DENSE.encode(np.array([[0.5, 0.5]]), lay, None)
    with pytest.raises(DecodeError):
        decode(e16, lay, data=np.array([0.0, 0.0], "<f2").tobytes())


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_random_corruption_yields_format_error_or_valid_output(name):
    e, lay = FIXTURES[name]
    rng = np.random.default_rng(12)
    for trial in range(150):
        data = bytearray(e.data)
        op = trial % 4
        if op == 0 and data:
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        elif op == 1 and data:
            i = rng.integers(len(data))
            data[i:i + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        elif op == 2:
            data = data[:rng.integers(len(data) + 1)]
        else:
            data += rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8).tobytes()
        try:
            out = decode(e, lay, data=bytes(data))
        except FormatError:
            continue
        assert tuple(out.shape)[0] == lay.num_samples


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("value", [None, -1, 0, 2**64 - 1, 1.5, "zstd", "", True, [], [0], [-1, 2], {"a": 1}, b"x"])
def test_any_param_value_yields_format_error_or_valid_output(name, value):
    e, lay = FIXTURES[name]
    for key in e.params:
        try:
            out = decode(e, lay, params={**e.params, key: value})
        except FormatError:
            continue
        assert tuple(out.shape)[0] == lay.num_samples


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_params_survive_msgpack_unchanged(name):
    e, _ = FIXTURES[name]
    assert msgpack.unpackb(msgpack.packb(e.params), raw=False) == e.params
    assert all(type(v) in (int, float, str, list, bool) for v in e.params.values())


def test_memoryview_payloads_decode():
    e, lay = _samples()
    buf = memoryview(b"\x00" * 7 + e.data)[7:]
    out = PIXELS.decode(Section(e.kind, e.codec, e.component, 0, len(e.data), e.params, buf, e.class_bytes), lay,
                        None)
    assert out.shape == (6, 1, 8, 8)
