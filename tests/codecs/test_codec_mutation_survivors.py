"""Behaviours of the hard-label and weight codecs that mutants surviving ``tools/mutation.sh``
showed no test pinned.

Each test says which mutants it kills; ``docs/mutation.md`` lists every survivor of the recorded
runs with its test or the reason it is left (an equivalent mutant).
"""

from __future__ import annotations

import numpy as np
import pytest

from ddformat.codecs.hard_labels import GROUPED, INDICES
from ddformat.codecs.weights import COUNTS, FLOAT
from ddformat.container.sections import EncodedSection, Layout, Section
from ddformat.errors import DecodeError, FormatError, LimitError

BIG = 2**34


def layout(n: int, k: int, cap: int = BIG) -> Layout:
    return Layout(num_samples=n, num_classes=k, sample_shape=(1,), sample_dtype="uint8", max_decoded_bytes=cap)


def section(e: EncodedSection, data: bytes | None = None, **params: object) -> Section:
    """What a reader hands a codec, with the payload or some params replaced."""
    data = bytes(e.data) if data is None else data
    return Section(e.kind, e.codec, e.component, 0, len(data), {**e.params, **params}, data, e.class_bytes)


def assert_error(info: pytest.ExceptionInfo, reason: str, section: str, field: str) -> None:
    err: FormatError = info.value
    assert (err.reason, err.section, err.field) == (reason, section, field)


# --------------------------------------------------------------------------- hard labels


@pytest.mark.parametrize("codec", [GROUPED, INDICES], ids=["grouped", "indices"])
@pytest.mark.parametrize(("labels", "message"), [
    (np.array([0, 1]), r"^labels have shape \(2,\), expected \(3,\)$"),
    (np.array([0.0, 1.0, 1.0]), "^hard labels must be integers, got float64$"),
    (np.array([0, 1, 2]), r"^labels must lie in \[0, 2\)$"),
    (np.array([-1, 0, 1]), r"^labels must lie in \[0, 2\)$"),
], ids=["shape", "dtype", "too-large", "negative"])
def test_bad_hard_labels_are_refused_saying_what_is_wrong(codec, labels: np.ndarray, message: str) -> None:
    """Kills hard_labels.check_labels 4, 8, 14 (message dropped)."""
    with pytest.raises(ValueError, match=message):
        codec.encode(labels, layout(3, 2), None)


@pytest.mark.parametrize(("labels", "groups", "message"), [
    (np.array([1, 0, 1]), None, "^grouped labels need class-sorted samples$"),
    (np.array([0, 1, 1]), [2, 1], "^groups disagree with the labels' per-class counts$"),
], ids=["unsorted", "groups"])
def test_grouped_labels_refuse_unsorted_samples_and_disagreeing_groups_saying_so(
        labels: np.ndarray, groups: list[int] | None, message: str) -> None:
    """Kills GroupedLabels.encode 13–15, 20–22 (message dropped or changed)."""
    with pytest.raises(ValueError, match=message):
        GROUPED.encode(labels, layout(3, 2), groups)


def test_grouped_counts_that_miss_the_sample_count_are_refused_naming_section_and_field() -> None:
    """Kills hard_labels._check_total 3, 4, 7 (message or section dropped) and GroupedLabels.decode
    28, 33, 34 (field changed)."""
    e = GROUPED.encode(np.array([0, 0, 1]), layout(3, 2), [2, 1])
    with pytest.raises(DecodeError) as info:
        GROUPED.decode(section(e), layout(4, 2))
    assert_error(info, "counts sum to 3, expected 4", "labels", "data")


def test_grouped_counts_that_are_not_varints_are_refused_naming_the_data_field() -> None:
    """Kills GroupedLabels.decode 17, 23, 24 (the varint field changed)."""
    e = GROUPED.encode(np.array([0, 0, 1]), layout(3, 2), [2, 1])
    with pytest.raises(DecodeError) as info:
        GROUPED.decode(section(e, b"\x82\x01"), layout(3, 2))
    assert_error(info, "expected 2 varints filling 2 bytes", "labels", "data")


@pytest.mark.parametrize("codec", [GROUPED, INDICES], ids=["grouped", "indices"])
def test_hard_labels_decode_at_exactly_eight_bytes_per_sample_and_are_refused_one_byte_below(codec) -> None:
    """Kills GroupedLabels.decode and IndexLabels.decode 4, 10, 11, 12 (``9 *`` for ``8 *``; the
    decoded part not named)."""
    labels = np.array([0, 0, 1])
    e = codec.encode(labels, layout(3, 2), [2, 1])
    assert np.array_equal(codec.decode(section(e), layout(3, 2, cap=24)), labels)
    with pytest.raises(LimitError) as info:
        codec.decode(section(e), layout(3, 2, cap=23))
    assert_error(info, "decoding labels needs 24 bytes, more than the limit of 23", "labels", "max_decoded_bytes")


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("codec", [COUNTS, FLOAT], ids=["counts", "float"])
def test_misshapen_weights_are_refused_naming_their_shape_and_the_sample_count(codec) -> None:
    """Kills weights._check_shape 4 (message dropped)."""
    with pytest.raises(ValueError, match=r"^weights have shape \(2,\), expected \(3,\)$"):
        codec.encode(np.array([1, 2]), layout(3, 2), None)


@pytest.mark.parametrize(("weights", "message"), [
    (np.array([1.0, 2.0]), "^count weights must be integers, got float64$"),
    (np.array([-1, 2]), r"^count weights must lie in \[0, 2\*\*32\)$"),
    (np.array([2**32, 2]), r"^count weights must lie in \[0, 2\*\*32\)$"),
], ids=["dtype", "negative", "too-large"])
def test_bad_count_weights_are_refused_saying_what_is_wrong(weights: np.ndarray, message: str) -> None:
    """Kills CountWeights.encode 10, 20, 21, 22 (message dropped or changed)."""
    with pytest.raises(ValueError, match=message):
        COUNTS.encode(weights, layout(2, 2), None)


@pytest.mark.parametrize(("weights", "dtype", "message"), [
    (np.array([1.0, 2.0]), "float64", "^dtype must be float16 or float32, got 'float64'$"),
    (np.array([True, False]), "float32", "^weights must be numbers, got bool$"),
    (np.array([1.0, -2.0]), "float32", "^weights must be non-negative and finite as float32$"),
    (np.array([1.0, 1e300]), "float32", "^weights must be non-negative and finite as float32$"),
    (np.array([1.0, 1e5]), "float16", "^weights must be non-negative and finite as float16$"),
], ids=["dtype", "bool", "negative", "overflow32", "overflow16"])
@pytest.mark.filterwarnings("error")
def test_bad_float_weights_are_refused_saying_what_is_wrong_without_a_numpy_warning(
        weights: np.ndarray, dtype: str, message: str) -> None:
    """Kills FloatWeights.encode 10, 14, 30 (message dropped) and 15, 17 (an overflowing cast
    warns instead of being reported by the error alone)."""
    with pytest.raises(ValueError, match=message):
        FLOAT.encode(weights, layout(2, 2), None, dtype=dtype)


@pytest.mark.parametrize(("codec", "weights"), [
    (COUNTS, np.arange(256) % 7 * 256 + 1000),
    (FLOAT, np.random.default_rng(0).uniform(1, 2, 256).astype(np.float32)),
], ids=["counts", "float"])
def test_weights_of_class_sorted_samples_keep_one_shuffled_frame_per_class(codec, weights: np.ndarray) -> None:
    """Kills weights._section 3, CountWeights.encode 23, 24, 53 and FloatWeights.encode 34, 35, 53
    (groups dropped: one frame, no bytes charged to a class) and _section 13, 14 (the byte-shuffle
    filter stored under a name the decoder refuses; no test stored weights that shuffle)."""
    e = codec.encode(weights, layout(256, 2), [100, 156])
    assert e.params["filter"] == "shuffle"
    assert e.params["frame_rows"] == [100, 156]
    assert e.class_bytes == e.params["frames"] and len(e.class_bytes) == 2
    assert np.array_equal(codec.decode(section(e), layout(256, 2)), weights)


def test_no_count_weights_are_stored_and_read_back() -> None:
    """Kills CountWeights.encode 32 (the largest of no weights taken: numpy raises)."""
    e = COUNTS.encode(np.zeros(0, dtype=np.int64), layout(0, 2), None)
    assert e.params["width"] == 1
    assert COUNTS.decode(section(e), layout(0, 2)).shape == (0,)


@pytest.mark.parametrize(("width", "reason"), [
    (3, "must be 1, 2 or 4"),
    (5, "5 is outside [1, 4]"),
    (8, "8 is outside [1, 4]"),
])
def test_count_width_other_than_1_2_or_4_is_refused_saying_which_widths_are_allowed(width: int, reason: str) -> None:
    """Kills CountWeights.decode 9, 13 (range bound dropped or 5), 15, 21, 22 (message changed)."""
    e = COUNTS.encode(np.array([1, 2]), layout(2, 2), None)
    with pytest.raises(DecodeError) as info:
        COUNTS.decode(section(e, width=width), layout(2, 2))
    assert_error(info, reason, "weights", "params.width")


@pytest.mark.parametrize("codec", [COUNTS, FLOAT], ids=["counts", "float"])
def test_weights_decode_at_exactly_eight_bytes_per_sample_and_are_refused_one_byte_below(codec) -> None:
    """Kills weights._rows 4, 9, 10, 11, 12 (``9 *`` or ``8 /`` for ``8 *``; the part not named)."""
    e = codec.encode(np.array([1, 2, 3]), layout(3, 2), None)
    assert np.array_equal(codec.decode(section(e), layout(3, 2, cap=24)), [1, 2, 3])
    with pytest.raises(LimitError) as info:
        codec.decode(section(e), layout(3, 2, cap=23))
    assert_error(info, "decoding weights needs 24 bytes, more than the limit of 23", "weights", "max_decoded_bytes")


def test_float_weights_of_zero_decode() -> None:
    """Kills FloatWeights.decode 27 (``<= 0``: a zero weight, which the writer accepts, refused)."""
    weights = np.array([0.0, 2.0], dtype=np.float32)
    e = FLOAT.encode(weights, layout(2, 2), None)
    assert np.array_equal(FLOAT.decode(section(e), layout(2, 2)), weights)


@pytest.mark.parametrize("bad", [-1.0, np.inf, np.nan])
def test_decoded_float_weights_that_are_negative_or_not_finite_are_refused_naming_section_and_field(
        bad: float) -> None:
    """Kills FloatWeights.decode 29, 30, 33, 35, 36 (message or section dropped or changed)."""
    e = FLOAT.encode(np.array([1.0, 2.0]), layout(2, 2), None)
    assert e.params["compression"] == "none"
    with pytest.raises(DecodeError) as info:
        FLOAT.decode(section(e, np.array([1.0, bad], dtype="<f4").tobytes()), layout(2, 2))
    assert_error(info, "decoded weights are negative or not finite", "weights", "data")
