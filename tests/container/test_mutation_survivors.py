"""Behaviours of the format core that mutants surviving ``tools/mutation.sh`` showed no test pinned.

Each test says which mutants it kills; ``docs/mutation.md`` lists every survivor of the recorded
runs with its test or the reason it is left (an equivalent mutant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest

import ddformat
from ddformat.container.bits import bit_account
from ddformat.container.header import compress_header
from ddformat.errors import (ChecksumError, DecodeError, FormatError, HeaderError, LayoutError, LimitError,
                             UnsupportedError)
from ddformat.limits import EXPANSION_ALLOWANCE, PREAMBLE_SIZE
from ddformat.weighting import loss_weights
from tests.support import reseal, split_header, store_header

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "valid"

CLASSES = np.array([0, 0, 1, 1, 1])
VALUES = np.array([1.0, 3.0, 2.0, 2.0, 4.0])


# --------------------------------------------------------------------------- weighting


def test_misshapen_weight_values_are_refused_naming_their_shape_and_the_sample_count() -> None:
    """Kills weighting._check_values 7 (message dropped)."""
    with pytest.raises(ValueError, match=r"^weight values of shape \(4,\) do not match 5 samples$"):
        loss_weights(VALUES[:4], CLASSES, 2, "explicit", "none")


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
def test_negative_or_non_finite_weight_values_are_refused_saying_so(bad: float) -> None:
    """Kills weighting._check_values 17, 18, 19 (message dropped or changed)."""
    values = VALUES.copy()
    values[2] = bad
    with pytest.raises(ValueError, match="^weight values must be finite and non-negative$"):
        loss_weights(values, CLASSES, 2, "explicit", "none")


@pytest.mark.parametrize("classes", [[0, 0, 1, 1, 2], [0, -1, 1, 1, 1]], ids=["num_classes", "negative"])
def test_sample_classes_outside_the_class_count_are_refused(classes: list[int]) -> None:
    """Kills weighting._check_values 21 (``or`` → ``and``), 26 (``>=`` → ``>``), 27 (message dropped)."""
    with pytest.raises(ValueError, match=r"^sample classes must lie in \[0, 2\)$"):
        loss_weights(VALUES, np.array(classes), 2, "explicit", "none")


@pytest.mark.parametrize("scheme", ["proportional", "sqrt"])
def test_a_one_sample_class_whose_value_is_zero_is_refused_naming_scheme_and_class(scheme: str) -> None:
    """Kills weighting._per_class_share 14 (a class counts as present only from 2 samples; its
    share would be 0/0 = NaN), 22, 23 (message changed) and loss_weights 37, 57 (scheme not named)."""
    with pytest.raises(ValueError, match=rf"^weighting scheme '{scheme}': the weight values of class\(es\) \[1\] "
                                         r"sum to 0, so their per-class shares are undefined$"):
        loss_weights(np.array([1.0, 3.0, 0.0]), np.array([0, 0, 1]), 2, scheme, "none")


def test_the_refusal_of_zero_sum_classes_lists_at_most_ten_of_them() -> None:
    """Kills weighting._per_class_share 21 (``[:10]`` → ``[:11]``)."""
    with pytest.raises(ValueError, match=r"class\(es\) \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] sum to 0"):
        loss_weights(np.zeros(12), np.arange(12), 12, "proportional", "none")


@pytest.mark.parametrize("scheme,normalization,message", [
    ("mean", "none", "weighting scheme 'mean' is not one of uniform, proportional, sqrt, explicit"),
    ("uniform", "sum", "weight normalization 'sum' is not one of none, global, batch"),
], ids=["scheme", "normalization"])
def test_an_unknown_scheme_or_normalization_is_refused_listing_the_choices(scheme: str, normalization: str,
                                                                           message: str) -> None:
    """Kills weighting.loss_weights 4, 8 (the list of choices garbled)."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        loss_weights(VALUES, CLASSES, 2, scheme, normalization)


def test_global_normalisation_of_all_zero_weights_is_refused_saying_why() -> None:
    """Kills weighting.loss_weights 71 (message changed)."""
    message = "^global weight normalization: every weight is 0, so the mean cannot be made 1$"
    with pytest.raises(ValueError, match=message):
        loss_weights(np.zeros(5), CLASSES, 2, "explicit", "global")


# --------------------------------------------------------------------------- bit account


@dataclass
class _Placed:
    component: str
    length: int
    class_bytes: list[int] | None = None


def test_sections_of_one_component_add_up_in_the_bit_account() -> None:
    """Kills container.bits.bit_account 9 (each section overwrote its component's earlier bits,
    the difference landing in ``container``). No file the suite writes has two sections in one
    component; spec § 5 sums them."""
    sections = [_Placed("samples", 10), _Placed("labels", 3), _Placed("samples", 20)]
    account = bit_account(100, 32 + 100 + 33, sections, 2)
    assert account["components"] == {"samples": 8 * 30, "labels": 8 * 3, "metadata": 8 * 100, "container": 8 * 32}


# --------------------------------------------------------------------------- reader and container


@pytest.mark.parametrize("shape,dtype,message,field", [
    ((6, 1, 4), "uint8", "decoded samples have shape (6, 1, 4)", "dataset.sample_shape"),
    ((6, 1, 4, 4), "float64", "samples decode to float64, the header declares uint8", "dataset.sample_dtype"),
], ids=["shape", "dtype"])
def test_samples_a_codec_decodes_against_the_header_are_refused_naming_section_and_field(
        shape: tuple[int, ...], dtype: str, message: str, field: str) -> None:
    """Kills reader._checked_samples 5-15 (shape error: message, section or field dropped or
    changed) and 31, 34, 38, 39 (dtype error: section dropped or changed)."""
    path = str(VECTORS / "unknown_optional_section.dd")
    with ddformat.open(path) as f, pytest.raises(DecodeError) as info:
        f.decode_samples(lambda codec, section, layout, aux: np.zeros(shape, dtype))
    assert str(info.value) == f"{message} (file {path!r}, section 'samples', field {field!r})"
    assert (info.value.section, info.value.field) == ("samples", field)


def test_a_wrong_content_hash_is_refused_naming_the_header_field(tmp_path: Path) -> None:
    """Kills container.layout.Container.verify_content_hash 11, 12, 14-16, 18-21 (section or
    field dropped or changed, message changed)."""
    path = tmp_path / "x.dd"
    path.write_bytes(reseal((VECTORS / "unknown_optional_section.dd").read_bytes(),
                            lambda h: h["provenance"].__setitem__("content_hash", bytes(32))))
    with ddformat.open(path) as f, pytest.raises(ChecksumError) as info:
        f.verify_content_hash()
    assert str(info.value) == ("content hash does not match the sections "
                               f"(file {str(path)!r}, section 'header', field 'provenance.content_hash')")
    assert (info.value.section, info.value.field) == ("header", "provenance.content_hash")


def test_a_section_read_again_after_it_was_hashed_is_not_kept() -> None:
    """Kills container.layout.Container._feed 1 (``or`` → ``and``: a section read again after
    its turn to be hashed was parked for hashing, never to be released: each re-read of a
    section held a copy of its payload for the life of the file)."""
    with ddformat.open(VECTORS / "unknown_optional_section.dd") as f:
        f.labels()  # ahead of its turn: parked until the samples are hashed
        f.samples()
        assert f.container._ahead == {}
        f.container.section("labels")
        f.container.section("samples")
        assert f.container._ahead == {}


def _drop(kind: str):
    return lambda h: h.__setitem__("sections", [s for s in h["sections"] if s["kind"] != kind])


def _optional(kind: str):
    return lambda h: next(s for s in h["sections"] if s["kind"] == kind).__setitem__("required", False)


@pytest.mark.parametrize("vector,edit,reason,section,field", [
    ("unknown_optional_section", _drop("labels"), "file has no such section, which every file needs", "labels", None),
    ("unknown_optional_section", _optional("labels"), "a section of this kind must be marked required", "labels",
     "required"),
    ("ruo_two_slices", _drop("ruo.arm"), "the 'ruo' samples codec needs this section", "ruo.arm", None),
    ("ruo_two_slices", _optional("ruo.arm"), "a section of this kind must be marked required", "ruo.arm",
     "required"),
], ids=["missing", "optional", "missing_aux", "optional_aux"])
def test_files_lacking_a_section_they_need_are_refused_at_open_naming_it(
        tmp_path: Path, vector: str, edit, reason: str, section: str, field: str | None) -> None:
    """Kills reader.DDFile._check_semantics 7-12, 16-18, 20-25, 31-34, 36-40 (reason, section or
    field of these refusals dropped or changed)."""
    path = tmp_path / "x.dd"
    path.write_bytes(reseal((VECTORS / f"{vector}.dd").read_bytes(), edit))
    with pytest.raises(HeaderError) as info:
        ddformat.open(path)
    assert (info.value.reason, info.value.section, info.value.field, info.value.offset) == (reason, section, field,
                                                                                           None)


def test_a_section_is_returned_with_its_table_entry_and_a_damaged_or_absent_one_is_refused_naming_it(
        tmp_path: Path) -> None:
    """Kills container.layout.Container.section 4-9 (no such section: reason or section dropped
    or changed), 17-25 (CRC mismatch: reason, section or offset dropped or changed) and 30, 32,
    33 (the returned section lost its kind, component or offset)."""
    data = bytearray((VECTORS / "unknown_optional_section.dd").read_bytes())
    with ddformat.open(VECTORS / "unknown_optional_section.dd") as f:
        labels = f.container.section("labels")
        assert (labels.kind, labels.codec, labels.component, labels.offset, labels.length) == (
            "labels", f.container.entries["labels"].codec, "labels", 384, f.container.entries["labels"].length)
        with pytest.raises(HeaderError) as info:
            f.container.section("weights")
        assert (info.value.reason, info.value.section, info.value.offset) == ("file has no such section", "weights",
                                                                              None)
    data[384] ^= 1
    path = tmp_path / "x.dd"
    path.write_bytes(bytes(data))
    with ddformat.open(path) as f, pytest.raises(ChecksumError) as info:
        f.labels()
    assert (info.value.reason, info.value.section, info.value.field, info.value.offset) == (
        "section CRC-32 mismatch", "labels", None, 384)


def _shape(shape: list[int]):
    return lambda h: h["dataset"].__setitem__("sample_shape", shape)


def _open_with(path: Path, **limits: int) -> None:
    ddformat.open(path, ddformat.Limits(**limits)).close()


def test_the_decoded_size_limit_counts_sample_bytes_and_admits_exactly_the_limit(tmp_path: Path) -> None:
    """Kills reader.DDFile._check_semantics 48 (``* itemsize`` → ``/``), 57 (``>`` → ``>=``),
    58-63 (reason or section dropped or changed). 7 float32 samples of 3×4×4: 1,344 bytes."""
    path = VECTORS / "hard_indices_float32.dd"
    _open_with(path, max_decoded_bytes=1344)
    with pytest.raises(LimitError) as info:
        _open_with(path, max_decoded_bytes=1343)
    assert (info.value.reason, info.value.section) == ("samples decode to 1344 bytes, over the limit of 1343",
                                                       "samples")


@pytest.mark.parametrize("vector,payload", [("unknown_optional_section", 96), ("ruo_two_slices", 106 + 66 + 528)],
                         ids=["samples_only", "with_aux_sections"])
def test_the_expansion_limit_weighs_the_samples_and_their_codecs_sections_only(
        tmp_path: Path, vector: str, payload: int) -> None:
    """Kills reader.DDFile._check_semantics 67 (payload summed over every other section: here
    labels and a vendor note), 74 (the samples codec's own ``ruo.*`` sections left out), 80-88
    (reason or section dropped or changed). A header edited to 1024×1024 samples makes the check
    decide: the least ``max_expansion`` that admits them is exact for the right payload only."""
    path = tmp_path / "x.dd"
    path.write_bytes(reseal((VECTORS / f"{vector}.dd").read_bytes(), _shape([1, 1024, 1024])))
    with ddformat.open(path, ddformat.Limits(max_expansion=10**6)) as f:
        decoded = f.num_samples * 2**20 * np.dtype(f.dataset["sample_dtype"]).itemsize
    least = -(-(decoded - EXPANSION_ALLOWANCE) // payload)
    _open_with(path, max_expansion=least)
    with pytest.raises(LimitError) as info:
        _open_with(path, max_expansion=least - 1)
    assert (info.value.reason, info.value.section) == (
        f"samples would decode to {decoded} bytes from {payload} bytes of payload, more than the expansion limit "
        f"of {least - 1}× allows (raise Limits.max_expansion for a file you trust)", "samples")


def test_a_zca_section_too_small_for_its_matrix_is_refused_at_open_and_the_bound_is_exact(tmp_path: Path) -> None:
    """Kills reader.DDFile._check_semantics 89, 90 (ZCA check skipped), 101-105 (the matrix's
    4·D·(D+1) bytes miscounted) and 108-116 (reason or section dropped or changed). Saved with a
    16-feature ZCA, the header then declares 256×256 samples: D = 65,536."""
    path = tmp_path / "x.dd"
    x = np.zeros((2, 1, 4, 4), np.uint8)
    ddformat.save(path, x, np.array([0, 1]), num_classes=2, zca=(np.zeros(16, np.float32), np.eye(16, dtype=np.float32)))
    path.write_bytes(reseal(path.read_bytes(), _shape([1, 256, 256])))
    with ddformat.open(path, ddformat.Limits(max_expansion=10**9)) as f:
        length = f.container.entries["zca"].length
    features = 256 * 256
    least = -(-(4 * features * (features + 1) - EXPANSION_ALLOWANCE) // length)
    _open_with(path, max_expansion=least)
    with pytest.raises(LimitError) as info:
        _open_with(path, max_expansion=least - 1)
    assert (info.value.reason, info.value.section) == (
        f"a 65536×65536 ZCA matrix is implausible for {length} bytes of payload (Limits.max_expansion)", "zca")


def test_soft_labels_past_the_decoded_size_limit_are_refused_at_open_and_the_limit_is_exact(tmp_path: Path) -> None:
    """Kills reader.DDFile._check_semantics 120-124, 129, 130 (the soft-label size miscounted or
    compared with ``>=``) and 131-138 (reason or section dropped or changed). 2 samples of 1 byte,
    soft labels over 8 classes: 2·8·4 = 64 bytes."""
    path = tmp_path / "x.dd"
    ddformat.save(path, np.zeros((2, 1, 1, 1), np.uint8), np.full((2, 8), 1 / 8, np.float32), num_classes=8)
    _open_with(path, max_decoded_bytes=64)
    with pytest.raises(LimitError) as info:
        _open_with(path, max_decoded_bytes=63)
    assert (info.value.reason, info.value.section) == ("soft labels decode past the decoded-size limit", "labels")


@pytest.mark.parametrize("edit,error,reason,section,field", [
    (lambda h: h["recipe"]["weighting"].__setitem__("scheme", "sqrt"), HeaderError,
     "weighting scheme needs a weights section", "header", "recipe.weighting.scheme"),
    (lambda h: h["sections"][1].__setitem__("codec", "vendor.labels"), UnsupportedError,
     "required section uses kind 'labels' with codec 'vendor.labels', which this reader does not implement",
     "labels", "codec"),
], ids=["weights_missing", "unknown_codec"])
def test_a_file_this_reader_cannot_honour_is_refused_at_open_naming_what(
        tmp_path: Path, edit, error: type[FormatError], reason: str, section: str, field: str) -> None:
    """Kills reader.DDFile._check_semantics 150-161 and container.layout.Container._check_sections
    7-16 (reason, section or field dropped or changed)."""
    path = tmp_path / "x.dd"
    path.write_bytes(reseal((VECTORS / "unknown_optional_section.dd").read_bytes(), edit))
    with pytest.raises(error) as info:
        ddformat.open(path)
    assert (info.value.reason, info.value.section, info.value.field) == (reason, section, field)


def test_a_section_running_past_the_end_of_the_file_is_refused_naming_it_and_its_offset(tmp_path: Path) -> None:
    """Kills container.layout.Container._check_layout (reason, section, field or offset of the
    refusal dropped or changed). The samples entry claims 128 bytes more than the file holds
    after it (padding is under 64), every checksum still right."""
    data = (VECTORS / "unknown_optional_section.dd").read_bytes()
    header, _ = split_header(data)
    header["sections"][0]["length"] += 128
    raw = compress_header(msgpack.packb(header, use_bin_type=True))
    path = tmp_path / "x.dd"
    path.write_bytes(store_header(data, raw))
    with pytest.raises(LayoutError) as info:
        ddformat.open(path)
    length, offset = header["sections"][0]["length"], PREAMBLE_SIZE + len(raw)
    assert (info.value.reason, info.value.section, info.value.field, info.value.offset) == (
        f"section of {length} bytes at offset {offset} runs past the end of the file", "samples",
        "sections[0].length", offset)
