"""A small header (format 2.0): a 10-class RUO file that carries its recipe and provenance spends
at most 300 bytes on metadata and container; what follows from other fields is derived on
reading, not stored; the header dictionary is the one the spec names; 1.x files are refused
naming their version."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

import ddformat
from ddformat.cli.report import build_report
from ddformat.container.dictionary import DICTIONARY, SHA256
from ddformat.errors import FormatError, HeaderError, LimitError, VersionError
from ddformat.evaluation.realdata import DIGIT_NAMES
from ddformat.limits import PREAMBLE_SIZE
from producers.ruo.distill import RuoConfig, recipe
from tests.codecs.test_ruo_codec import random_samples
from tests.support import split_header, store_header

ROOT = Path(__file__).resolve().parents[2]
HEADER_BUDGET = 300
"""Bytes of metadata + container (header, preamble, padding) a 10-class RUO file may spend."""


def test_the_header_dictionary_is_the_one_the_spec_names():
    stored = (ROOT / "spec" / "header-dictionary.bin").read_bytes()
    assert stored == DICTIONARY
    assert hashlib.sha256(stored).hexdigest() == SHA256
    assert f"`{SHA256}`" in (ROOT / "spec" / "format.md").read_text()


def _ruo_file(path: Path, per_slice: list[int]) -> tuple[Path, dict, dict]:
    """Like the rate-utility files of docs/rate_utility.md: MNIST-sized RUO samples, 9 per class,
    with the producer's recipe and every hyperparameter in the provenance."""
    config = RuoConfig(spc=9, slice_size=1000 if len(per_slice) == 1 else None, iterations=200, init_iterations=300)
    samples = random_samples(per_slice, shape=(1, 28, 28), scales=6, context=8, width=8, depth=1, seed=1)
    parameters = {**config.to_dict(), "lambda_scale": 0.25, "target_bpc": 4000.0}
    ddformat.save(path, samples, np.repeat(np.arange(10), 9), num_classes=10, class_names=list(DIGIT_NAMES),
                  name="mnist-ruo-dm-spc9", normalization={"mean": [0.1307], "std": [0.3081], "applied": False},
                  recipe=recipe(config), producer="producers.ruo", parameters=parameters, source_dataset="mnist")
    return path, parameters, recipe(config)


@pytest.mark.parametrize("per_slice", [[90], [9] * 10], ids=["one_slice_of_90", "ten_slices_of_9"])
def test_a_10_class_ruo_file_with_recipe_and_provenance_spends_at_most_300_bytes_on_its_header(tmp_path, per_slice):
    path, parameters, wanted = _ruo_file(tmp_path / "ruo.dd", per_slice)
    with ddformat.open(path) as f:
        f.verify()
        assert f.provenance["parameters"] == parameters and f.provenance["producer"] == "producers.ruo"
        assert {k: f.recipe[k] for k in wanted} == wanted
        components = f.bits["components"]
    assert components["metadata"] + components["container"] <= 8 * HEADER_BUDGET, components


def test_offsets_and_the_bit_account_are_derived_on_reading_and_shown_not_stored(tmp_path):
    x = np.zeros((6, 1, 4, 4), np.uint8)
    path = ddformat.save(tmp_path / "x.dd", x, np.arange(6) % 3, weights=np.arange(1, 7),
                         recipe={"weighting": {"scheme": "explicit"}})
    data = path.read_bytes()
    header, _ = split_header(data)
    assert "bits" not in header and not any({"offset", "alignment", "required"} & set(s) for s in header["sections"])
    with ddformat.open(path) as f:
        report = build_report(f)
        h = f.container.header_length
        ends = [PREAMBLE_SIZE + h] + [e.offset + e.length for e in f.header.sections]
    assert [s["offset"] for s in report["sections"]] == ends[:-1] and ends[-1] == len(data)
    assert all(s["alignment"] == 1 and s["required"] for s in report["sections"])
    assert report["bits"]["components"]["metadata"] == 8 * h
    assert report["bits"]["components"]["container"] == 8 * PREAMBLE_SIZE
    assert sum(report["bits"]["per_class"]) == report["bits"]["total"] == 8 * len(data)


def test_a_file_of_format_1_is_refused_naming_its_version_and_what_changed():
    with pytest.raises(VersionError) as info:
        ddformat.open(ROOT / "spec" / "vectors" / "invalid" / "version_1_0_layout.dd")
    assert info.value.reason.startswith("file is version 1.0; this reader implements 2.x (1.x stored the header as "
                                        "plain msgpack")
    assert (info.value.field, info.value.offset) == ("major", 8)


def _truncated_header(data: bytes) -> bytes:
    (h,) = struct.unpack_from("<I", data, 12)
    return store_header(data, data[PREAMBLE_SIZE:PREAMBLE_SIZE + h - 3])


@pytest.mark.parametrize("vector, error, reason", [
    ("header_plain_msgpack", HeaderError, "header is not a zstd frame"),
    ("header_without_content_size", HeaderError, "header zstd frame does not declare its content size"),
    ("header_declares_over_limit", LimitError, "header zstd frame declares 2147483648 bytes"),
    ("header_names_a_dictionary", HeaderError, "header zstd frame names dictionary 7"),
    ("header_then_skippable_frame", HeaderError, "9 bytes follow the header zstd frame"),
    ("truncated frame", HeaderError, "header zstd frame is truncated"),
    ("content_hash_as_hex", HeaderError, "expected the 32-byte SHA-256 of the section payloads"),
])
def test_a_header_not_stored_as_the_spec_says_is_refused_saying_what_is_wrong(tmp_path, vector, error, reason):
    invalid = ROOT / "spec" / "vectors" / "invalid"
    if vector == "truncated frame":
        data = _truncated_header((ROOT / "spec" / "vectors" / "valid" / "hard_grouped_uint8.dd").read_bytes())
    else:
        data = (invalid / f"{vector}.dd").read_bytes()
    path = tmp_path / "x.dd"
    path.write_bytes(data)
    with pytest.raises(FormatError) as info:
        ddformat.open(path)
    assert type(info.value) is error and info.value.reason.startswith(reason) and info.value.section == "header"
