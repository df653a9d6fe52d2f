"""The codec registry: lookups, the writer's default choices, and the promise that reader and
writer name no codec (a new codec is one module plus its registration)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import ddformat
from ddformat import codecs
from ddformat.errors import UnsupportedError

REPO = Path(__file__).resolve().parents[2]


def test_unknown_codec_lookup_names_kind_and_codec():
    with pytest.raises(UnsupportedError, match="no labels codec named 'nope'") as info:
        codecs.lookup("labels", "nope")
    assert info.value.section == "labels"


def test_reader_and_writer_name_no_codec():
    names = {name for kind in codecs.KINDS for name in codecs.names(kind)}
    for module in ("ddformat/reader.py", "ddformat/writer.py"):
        tree = ast.parse((REPO / module).read_text(encoding="utf-8"))
        literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
        assert not names & literals, f"{module} names codecs {sorted(names & literals)}"


@pytest.mark.parametrize("codec", codecs.candidates("labels"), ids=lambda c: c.name)
def test_each_labels_codec_declares_the_kind_of_label_it_decodes_to(tmp_path, codec):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
    labels = probs if codec.label_kind == "soft" else probs.argmax(axis=1)
    options = {"labels": {"k": 2, "bits": 8}} if codec.name == "topk" else None
    path = ddformat.save(tmp_path / "l.dd", np.zeros((6, 1, 2, 2), np.uint8), labels, num_classes=3,
                         labels_codec=codec.name, codec_options=options)
    with ddformat.open(path) as f:
        assert f.container.entries["labels"].codec == codec.name
        assert f.label_kind == codec.label_kind
        assert f.labels().ndim == (2 if codec.label_kind == "soft" else 1)


@pytest.mark.parametrize("labels, weights, expected", [
    (np.array([0, 0, 1, 1]), None, {"samples": "pixels", "labels": "grouped"}),
    (np.array([1, 0, 1, 0]), np.array([1, 2, 3, 4]), {"labels": "grouped", "weights": "counts"}),
    (np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32), np.array([0.5, 1, 1, 2], np.float32),
     {"labels": "dense", "weights": "float"}),
])
def test_writer_picks_the_first_registered_codec_that_stores_the_values_as_they_are(tmp_path, labels, weights,
                                                                                    expected):
    path = ddformat.save(tmp_path / "c.dd", np.zeros((4, 1, 2, 2), np.uint8), labels, weights=weights)
    with ddformat.open(path) as f:
        assert {kind: f.container.entries[kind].codec for kind in expected} == expected


def test_unsorted_hard_labels_get_the_codec_for_any_order(tmp_path):
    path = ddformat.save(tmp_path / "u.dd", np.zeros((4, 1, 2, 2), np.uint8), np.array([1, 0, 1, 0]),
                         sort_by_class=False)
    with ddformat.open(path) as f:
        assert f.container.entries["labels"].codec == "indices"
        assert f.labels().tolist() == [1, 0, 1, 0]
