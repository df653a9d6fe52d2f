"""The implementation against the normative test vectors of spec/vectors/."""

import json
from pathlib import Path

import pytest
import torch

import ddformat
from ddformat import errors
from tests.support import decoded_digests

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"
VALID = sorted((VECTORS / "valid").glob("*.dd"))
INVALID = sorted((VECTORS / "invalid").glob("*.dd"))


def test_vectors_exist():
    assert len(VALID) >= 5 and len(INVALID) >= 10


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_vector_decodes_to_recorded_tensors(path):
    expected = json.loads(path.with_suffix(".json").read_text())
    with ddformat.open(path) as f:
        f.verify()
        assert decoded_digests(f) == expected["sha256"]
        if expected["sha256"]["samples"] is None:
            values = torch.tensor(expected["samples_values"], dtype=torch.float64)
            assert torch.allclose(torch.from_numpy(f.samples()).double(), values, rtol=0, atol=expected["tolerance"])
        assert (f.num_classes, f.num_samples) == (expected["num_classes"], expected["num_samples"])


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_vector_bit_account_sums_to_file_size(path):
    with ddformat.open(path) as f:
        size_bits = 8 * path.stat().st_size
        assert f.bits["total"] == size_bits
        assert sum(f.bits["components"].values()) == size_bits
        assert sum(f.bits["per_class"]) == size_bits
        assert f.bpc == size_bits / f.num_classes


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_vector_raises_its_error(path):
    expected = getattr(errors, json.loads(path.with_suffix(".json").read_text())["error"])
    with pytest.raises(expected):
        with ddformat.open(path) as f:
            f.verify()
