"""Behaviours of the format core that mutants surviving ``tools/mutation.sh`` showed no test pinned.

Each test says which mutants it kills; ``docs/mutation.md`` lists every survivor of the recorded
runs with its test or the reason it is left (an equivalent mutant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import ddformat
from ddformat.container.bits import bit_account
from ddformat.errors import ChecksumError, DecodeError
from ddformat.weighting import loss_weights
from tests.support import reseal

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
                            lambda h: h["provenance"].__setitem__("content_hash", "sha256:" + "0" * 64)))
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
