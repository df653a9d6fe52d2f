"""The ``views`` section (spec § 3.8): per-view augmentation records and top-k teacher labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ddformat
from ddformat.codecs.views import VIEWS, Views, quantise_views
from ddformat.container.sections import Layout, Section
from ddformat.errors import DecodeError, HeaderError, LimitError
from tests.support import reseal

FIELDS = ("crops", "flips", "partners", "mix_boxes", "indices", "levels")


def random_views(rng: np.random.Generator, rounds: int, n: int, num_classes: int, height: int, width: int,
                 k: int, bits: int, mixed: float = 0.5) -> Views:
    """Valid records of every kind: crops anywhere inside, some mixed views with boxes (empty
    ones included), and the top-k of random teacher distributions."""
    ch = rng.integers(1, height + 1, (rounds, n))
    cw = rng.integers(1, width + 1, (rounds, n))
    crops = np.stack([rng.integers(0, height - ch + 1), rng.integers(0, width - cw + 1), ch, cw], -1)
    partners = np.where(rng.random((rounds, n)) < mixed, rng.integers(0, n, (rounds, n)), -1)
    mh = rng.integers(0, height + 1, (rounds, n))
    mw = rng.integers(0, width + 1, (rounds, n))
    boxes = np.stack([rng.integers(0, np.minimum(height - mh, height - 1) + 1),
                      rng.integers(0, np.minimum(width - mw, width - 1) + 1), mh, mw], -1)
    boxes[partners < 0] = 0
    probs = rng.dirichlet(np.full(num_classes, 0.3), (rounds, n))
    idx, q, kl = quantise_views(probs, k, bits)
    return Views(crops, rng.random((rounds, n)) < 0.5, partners, boxes, idx, q, bits, 20.0, kl)


def layout(n: int, num_classes: int, height: int, width: int) -> Layout:
    return Layout(n, num_classes, (3, height, width), "uint8", 2**30)


def section(encoded, data: bytes | None = None, **params) -> Section:
    body = encoded.data if data is None else data
    return Section(encoded.kind, encoded.codec, encoded.component, 0, len(body), {**encoded.params, **params},
                   body, encoded.class_bytes)


def assert_same(a: Views, b: Views) -> None:
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.bits, a.temperature) == (b.bits, b.temperature)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), num_classes=st.integers(1, 6),
       rounds=st.integers(1, 3), height=st.integers(1, 7), width=st.integers(1, 7), bits=st.integers(1, 10),
       grouped=st.booleans(), mixed=st.sampled_from([0.0, 0.5, 1.0]), data=st.data())
def test_views_round_trip_exactly_and_decode_to_distributions(seed, n, num_classes, rounds, height, width, bits,
                                                             grouped, mixed, data):
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, num_classes))
    views = random_views(rng, rounds, n, num_classes, height, width, k, bits, mixed)
    lay = layout(n, num_classes, height, width)
    groups = np.bincount(np.sort(rng.integers(0, num_classes, n)), minlength=num_classes).tolist() if grouped else None
    encoded = VIEWS.encode(views, lay, groups)
    decoded = VIEWS.decode(section(encoded), lay)
    assert_same(decoded, views)
    probs = decoded.probabilities(num_classes, *np.divmod(np.arange(rounds * n), n))
    assert probs.dtype == np.float32 and (probs >= 0).all()
    assert np.allclose(probs.sum(axis=1, dtype=np.float64), 1.0, atol=1e-6)
    if grouped:
        assert encoded.class_bytes == [4 * w for w in encoded.params["chunk_words"]]


def test_save_groups_views_with_their_samples_and_renumbers_partners(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.array([2, 0, 1, 0, 2, 1, 1])
    views = random_views(rng, 2, 7, 3, 6, 6, 2, 5, mixed=1.0)
    path = ddformat.save(tmp_path / "v.dd", rng.integers(0, 256, (7, 3, 6, 6), dtype=np.uint8), labels,
                         num_classes=3, views=views)
    order = np.argsort(labels, kind="stable")
    position = np.argsort(order)
    with ddformat.open(path) as f:
        f.verify()
        stored = f.views()
    for r in range(2):
        for i in range(7):  # the view of caller's sample i is stored at its new position, pointing at its partner's
            assert np.array_equal(stored.crops[r, position[i]], views.crops[r, i])
            assert stored.partners[r, position[i]] == position[views.partners[r, i]]
            assert np.array_equal(stored.indices[r, position[i]], views.indices[r, i])


def test_each_class_is_charged_for_the_views_of_its_samples(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.array([0] * 9 + [1])
    views = random_views(rng, 4, 10, 2, 8, 8, 2, 8)
    x = np.zeros((10, 3, 8, 8), np.uint8)
    with ddformat.open(ddformat.save(tmp_path / "v.dd", x, labels, views=views)) as f:
        entry = f.container.entries["views"]
        assert entry.component == "labels"
        assert entry.class_bytes == [4 * w for w in entry.params["chunk_words"]]
        assert entry.class_bytes[0] > 4 * entry.class_bytes[1]  # nine samples' views against one's
        with ddformat.open(ddformat.save(tmp_path / "plain.dd", x, labels)) as plain:
            extra = [a - b for a, b in zip(f.bits["per_class"], plain.bits["per_class"])]
        assert extra[0] - extra[1] == 8 * (entry.class_bytes[0] - entry.class_bytes[1])


def test_encoder_refuses_records_a_reader_would_refuse():
    rng = np.random.default_rng(3)
    lay = layout(4, 3, 5, 5)
    good = random_views(rng, 1, 4, 3, 5, 5, 2, 4, mixed=1.0)
    bad_crop = good.crops.copy()
    bad_crop[0, 2] = [3, 0, 3, 1]
    bad_box = good.mix_boxes.copy()
    bad_box[0, 1] = [0, 4, 1, 2]
    repeated = good.indices.copy()
    repeated[0, 3] = [1, 1]
    for change, message in ((dict(crops=bad_crop), r"round 0, sample 2\): crop box"),
                            (dict(mix_boxes=bad_box), r"round 0, sample 1\): mix box"),
                            (dict(partners=np.full((1, 4), 4)), "partner index"),
                            (dict(indices=repeated), r"sample 3\): repeats a class"),
                            (dict(bits=17), "bits")):
        with pytest.raises(ValueError, match=message):
            VIEWS.encode(dataclasses.replace(good, **change), lay, None)


def _views_file(tmp_path) -> bytes:
    rng = np.random.default_rng(4)
    views = random_views(rng, 3, 6, 3, 6, 6, 2, 6)
    return ddformat.save(tmp_path / "v.dd", np.zeros((6, 3, 6, 6), np.uint8), np.array([0, 0, 1, 1, 2, 2]),
                         views=views).read_bytes()


def _views_entry(h):
    return next(s for s in h["sections"] if s["kind"] == "views")


@pytest.mark.parametrize("edit, error, match", [
    (lambda e: e["class_bytes"].__setitem__(0, e["class_bytes"][0] + 4), DecodeError, "class_bytes"),
    (lambda e: (e["params"]["chunk_words"].reverse(), e["class_bytes"].reverse()), DecodeError,
     "reproduce|ANS|words"),
    (lambda e: e["params"].update(rounds=2), DecodeError, "counts"),
    (lambda e: e["params"].update(rounds=65536), LimitError, "expansion"),
    (lambda e: e["params"].update(k=3), DecodeError, "level tables|counts"),
    (lambda e: e["params"].update(temperature=0.0), DecodeError, "temperature"),
    (lambda e: e["params"].update(frame_rows=[3, 3]), DecodeError, "chunk_words|entries"),
    (lambda e: e.update(required=False), HeaderError, "required"),
])
def test_views_sections_with_inconsistent_parameters_are_refused(tmp_path, edit, error, match):
    bad = tmp_path / "bad.dd"
    bad.write_bytes(reseal(_views_file(tmp_path), lambda h: edit(_views_entry(h))))
    with pytest.raises(error, match=match):
        with ddformat.open(bad) as f:
            f.verify()


def test_changed_view_words_are_refused_or_decode_to_valid_views(tmp_path):
    """A resealed bit flip in the coded words: refused (histograms not reproduced, words left
    over, a record outside the sample), never a crash or an invalid view."""
    data = _views_file(tmp_path)
    refused = 0
    for bit in range(0, 512, 7):
        def flip(h, bit=bit):
            e = _views_entry(h)
            body = bytearray(e["_body"])
            pos = e["params"]["tables"] * 8 + bit % ((len(body) - e["params"]["tables"]) * 8)
            body[pos // 8] ^= 1 << (pos % 8)
            e["_body"] = bytes(body)
        bad = tmp_path / "bad.dd"
        bad.write_bytes(reseal(data, flip))
        try:
            with ddformat.open(bad) as f:
                f.verify()
                probs = f.views().probabilities(3, np.zeros(6, np.int64), np.arange(6))
                assert (probs >= 0).all() and np.allclose(probs.sum(1), 1, atol=1e-6)
        except DecodeError:
            refused += 1
    assert refused >= 60


def test_unknown_view_schedule_is_a_header_error(tmp_path):
    with pytest.raises(HeaderError, match="view_schedule"):
        ddformat.save(tmp_path / "v.dd", np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 1]),
                      recipe={"view_schedule": "sometimes"})


@pytest.mark.parametrize("field, value, n, match", [
    ("crops", [4, 0, 3, 1], 6, "crop box outside"),
    ("mix_boxes", [1, 2, 1, 5], 6, "mix box outside"),
    ("partners", 299, 300, "partner index outside"),
    ("indices", [2, 2], 6, "repeats a class index"),
    ("levels", [40, 40], 6, "levels exceed 64"),
])
def test_records_outside_the_sample_are_refused_even_when_their_streams_decode(monkeypatch, field, value, n, match):
    """Streams that reproduce their histograms can still spell a record the spec forbids (the
    alphabets bound each number, not their sums); the decoder names the view."""
    rng = np.random.default_rng(5)
    views = random_views(rng, 2, n, 3, 6, 6, 2, 6, mixed=1.0)
    array = getattr(views, field)
    array[1, 3] = value
    if field == "partners":
        views.partners[views.partners >= 299] = 0
        views.partners[1, 3] = 300 + 211  # base-256 digits (255, 1): each digit is in its alphabet
    lay = layout(n, 3, 6, 6)
    monkeypatch.setattr("ddformat.codecs.views._check_views", lambda views, layout: None)
    encoded = VIEWS.encode(views, lay, None)
    with pytest.raises(DecodeError, match=rf"view \(round 1, sample 3\): {match}"):
        VIEWS.decode(section(encoded), lay)
