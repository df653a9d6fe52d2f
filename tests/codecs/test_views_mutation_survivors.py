"""Behaviours of the ``views`` codec (spec § 3.8) that mutants surviving ``tools/mutation.sh``
showed no test pinned: every encoder refusal by itself with its message, the decoder's errors
naming section and field, the spec's limits formula and digit alphabets, the shared level table,
the types of the decoded arrays, and what ``take`` and ``quantise_views`` carry along.

Each test says which mutants it kills; ``docs/mutation.md`` lists the survivors of the recorded
run with their test or the reason they are left (equivalent mutants).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ddformat.codecs.views import VIEWS, Views, _digits, check_expansion, quantise_views
from ddformat.container.sections import Layout
from ddformat.errors import DecodeError, FormatError, LimitError
from ddformat.limits import Limits
from tests.codecs.test_views import assert_same, random_views, section

N, K, H, W = 4, 3, 5, 5


def lay(n: int = N, shape: tuple[int, ...] = (3, H, W), cap: int = 2**30) -> Layout:
    return Layout(n, K, shape, "uint8", cap)


def good(rounds: int = 1, k: int = 2, bits: int = 4) -> Views:
    """Mixed views of 4 samples, 3 classes, 5 × 5 pixels; every sample mixed with sample 0."""
    views = random_views(np.random.default_rng(11), rounds, N, K, H, W, k, bits, mixed=1.0)
    views.partners[:] = 0
    return views


def assert_error(info: pytest.ExceptionInfo, reason: str, section: str, field: str) -> None:
    err: FormatError = info.value
    assert (err.reason, err.section, err.field) == (reason, section, field)


def edited(views: Views, name: str, value: object, at: tuple[int, ...] = (0, 2)) -> Views:
    array = getattr(views, name).copy()
    array[at] = value
    return dataclasses.replace(views, **{name: array})


# --------------------------------------------------------------------------- encoder refusals


CROP = r"^view \(round 0, sample 2\): crop box is not a non-empty box inside the 5×5 sample$"
MIX = r"^view \(round 0, sample 2\): mix box is not inside the 5×5 image$"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("crops", [0, 0, 0, 2], CROP), ("crops", [0, 0, 2, 0], CROP), ("crops", [-1, 0, 2, 2], CROP),
    ("crops", [0, -1, 2, 2], CROP), ("crops", [4, 0, 2, 2], CROP), ("crops", [0, 4, 2, 2], CROP),
    ("mix_boxes", [0, 0, -1, 2], MIX), ("mix_boxes", [0, 0, 2, -1], MIX), ("mix_boxes", [-1, 0, 1, 1], MIX),
    ("mix_boxes", [0, -1, 1, 1], MIX), ("mix_boxes", [3, 0, 3, 1], MIX), ("mix_boxes", [0, 3, 1, 3], MIX),
    ("mix_boxes", [5, 0, 0, 0], MIX), ("mix_boxes", [0, 5, 0, 0], MIX),
    ("partners", -2, r"^view \(round 0, sample 2\): partner index outside \[-1, 4\)$"),
    ("partners", 4, r"^view \(round 0, sample 2\): partner index outside \[-1, 4\)$"),
    ("indices", [0, -1], r"^view \(round 0, sample 2\): class index outside \[0, 3\)$"),
    ("indices", [3, 0], r"^view \(round 0, sample 2\): class index outside \[0, 3\)$"),
    ("indices", [1, 1], r"^view \(round 0, sample 2\): repeats a class index$"),
    ("levels", [-1, 2], r"^view \(round 0, sample 2\): levels are negative or exceed 16$"),
    ("levels", [9, 8], r"^view \(round 0, sample 2\): levels are negative or exceed 16$"),
], ids=["crop-height-0", "crop-width-0", "crop-top", "crop-left", "crop-bottom", "crop-right",
        "mix-height", "mix-width", "mix-top", "mix-left", "mix-bottom", "mix-right", "mix-top-is-H",
        "mix-left-is-W", "partner-below", "partner-N", "class-negative", "class-K", "class-repeated",
        "level-negative", "levels-over-M"])
def test_each_bad_record_alone_is_refused_naming_its_view(name: str, value: object, message: str) -> None:
    """Kills _check_views 94–96, 107, 118, 140–143, 152 (one condition of a box or partner
    check dropped or joined by ``and``), 173, 176–182 (class check), 207, 210–211, 221–223
    (levels check). The empty mix box at top = H or left = W is what spec § 3.8 forbids
    (top < H, left < W) and the encoder used to accept, writing a file no reader opens."""
    with pytest.raises(ValueError, match=message):
        VIEWS.encode(edited(good(), name, value), lay(), None)


def test_an_unmixed_view_with_a_mix_box_is_refused_saying_so() -> None:
    """Kills _check_views 157, 167, 168 (message dropped or changed)."""
    views = edited(edited(good(), "partners", -1), "mix_boxes", [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"^view \(round 0, sample 2\): an unmixed view has a non-zero mix box$"):
        VIEWS.encode(views, lay(), None)


@pytest.mark.parametrize(("change", "message"), [
    (dict(crops=np.zeros((1, 3, 4), np.int64)), r"^crops have shape \(1, 3, 4\), expected \(V, 4, 4\)$"),
    (dict(crops=np.zeros(4, np.int64)), r"^crops have shape \(4,\), expected \(V, 4, 4\)$"),
    (dict(flips=np.zeros((1, 3), bool)), r"^flips have shape \(1, 3\), expected \(1, 4\)$"),
    (dict(partners=np.zeros((2, 4), np.int64)), r"^partners have shape \(2, 4\), expected \(1, 4\)$"),
    (dict(mix_boxes=np.zeros((1, 4), np.int64)), r"^mix_boxes have shape \(1, 4\), expected \(1, 4, 4\)$"),
    (dict(indices=np.zeros((1, 4), np.int64)),
     r"^indices \(1, 4\) and levels \(1, 4, 2\) must both be \(V, N, k\) with 1 <= k <= 3$"),
    (dict(indices=np.zeros((1, 4, 3), np.int64)),
     r"^indices \(1, 4, 3\) and levels \(1, 4, 2\) must both be \(V, N, k\) with 1 <= k <= 3$"),
    (dict(indices=np.zeros((1, 4, 4), np.int64), levels=np.zeros((1, 4, 4), np.int64)),
     r"^indices \(1, 4, 4\) and levels \(1, 4, 4\) must both be \(V, N, k\) with 1 <= k <= 3$"),
    (dict(bits=17), r"^bits must be an integer in \[1, 16\], got 17$"),
    (dict(bits=2.0), r"^bits must be an integer in \[1, 16\], got 2.0$"),
    (dict(temperature=0.0), "^temperature must be positive and finite, got 0.0$"),
    (dict(temperature=float("inf")), "^temperature must be positive and finite, got inf$"),
], ids=["crops-N", "crops-1d", "flips", "partners", "mix_boxes", "indices-2d", "indices-vs-levels", "k-over-K",
        "bits", "bits-float", "temperature-0", "temperature-inf"])
def test_misshapen_arrays_and_parameters_are_refused_saying_what_was_expected(change: dict, message: str) -> None:
    """Kills _check_views 3, 14, 20 (crops shape), 25, 38, 51–55, 58, 63, 64, 71 (messages and
    the shape checks joined by ``and``), 34 (temperature check by ``or``)."""
    with pytest.raises(ValueError, match=message):
        VIEWS.encode(dataclasses.replace(good(), **change), lay(), None)


def test_rounds_must_be_between_1_and_65536_and_both_ends_are_accepted() -> None:
    """Kills _check_views 24, 25 (65,536 rounds refused; message) and 31 (16 bits refused)."""
    one = Layout(1, K, (1, 1), "uint8", 2**30)

    def views(rounds: int, bits: int = 16) -> Views:
        return Views(np.tile([0, 0, 1, 1], (rounds, 1, 1)), np.zeros((rounds, 1), bool), np.full((rounds, 1), -1),
                     np.zeros((rounds, 1, 4), np.int64), np.zeros((rounds, 1, 1), np.int64),
                     np.full((rounds, 1, 1), 2**bits), bits)

    decoded = VIEWS.decode(section(VIEWS.encode(views(65536), one, None)), one)
    assert decoded.rounds == 65536 and int(decoded.levels.max()) == 2**16
    for rounds in (0, 65537):
        with pytest.raises(ValueError, match=f"^{rounds} rounds of views; between 1 and 65536 are allowed$"):
            VIEWS.encode(views(rounds), one, None)


def test_a_temperature_below_1_is_kept() -> None:
    """Kills _check_views 35, 36 and ViewsCodec.decode 90 (temperature ≥ 1 or > 0 required)."""
    views = dataclasses.replace(good(), temperature=0.5)
    assert VIEWS.decode(section(VIEWS.encode(views, lay(), None)), lay()).temperature == 0.5


# --------------------------------------------------------------------------- decoder errors


@pytest.fixture(scope="module")
def encoded():
    return VIEWS.encode(good(rounds=2), lay(), [2, 1, 1])


@pytest.mark.parametrize(("params", "reason", "field"), [
    (dict(rounds=65537), "65537 is outside [1, 65536]", "params.rounds"),
    (dict(k=4), "4 is outside [1, 3]", "params.k"),
    (dict(bits=17), "17 is outside [1, 16]", "params.bits"),
    (dict(level_tables=3), "3 is outside [1, 2]", "params.level_tables"),
    (dict(level_tables=1), "expected 2 level tables for k=2, bits=4", "params.level_tables"),
    (dict(temperature=0.0), "temperature must be positive and finite", "params.temperature"),
    (dict(frame_rows=[2, 1, 2]), "groups hold 5 samples, the dataset has 4", "params.frame_rows"),
    (dict(rounds=1), "group 0 table 0 counts 4 symbols, expected 2", "data.tables"),
], ids=["rounds", "k", "bits", "level-tables-range", "level-tables", "temperature", "frame-rows", "counts"])
def test_inconsistent_parameters_are_refused_naming_section_and_field(encoded, params, reason, field) -> None:
    """Kills ViewsCodec.decode 21, 33, 45, 57 (a parameter's upper bound dropped), 67–77, 92–101,
    114–122, 263–270 (section, field or message of an error dropped or changed)."""
    with pytest.raises(DecodeError) as info:
        VIEWS.decode(section(encoded, **params), lay())
    assert_error(info, reason, "views", field)


def test_chunk_words_that_miss_the_payload_are_refused_naming_the_field(encoded) -> None:
    """Kills ViewsCodec.decode 175–185."""
    words = list(encoded.params["chunk_words"])
    words[0] += 1
    with pytest.raises(DecodeError) as info:
        VIEWS.decode(_with_words(encoded, words), lay())
    total = sum(encoded.params["chunk_words"])
    assert_error(info, f"chunk words sum to {total + 1}, the payload has {total}", "views", "params.chunk_words")


def _with_words(encoded, words: list[int]):
    """The section with other ``chunk_words`` and the ``class_bytes`` that agree with them."""
    return dataclasses.replace(section(encoded, chunk_words=words), class_bytes=[4 * w for w in words])


def test_words_swapped_between_groups_are_refused_naming_the_group(encoded) -> None:
    """Kills ViewsCodec.decode 235, 283 (the field of an ANS error dropped)."""
    words = encoded.params["chunk_words"]
    table_bytes = encoded.params["tables"]
    body = bytes(encoded.data)
    first = 4 * words[0]
    swapped = body[:table_bytes] + body[table_bytes + first:table_bytes + first + 4 * words[1]] \
        + body[table_bytes:table_bytes + first] + body[table_bytes + first + 4 * words[1]:]
    s = _with_words(dataclasses.replace(encoded, data=swapped), [words[1], words[0], *words[2:]])
    with pytest.raises(DecodeError) as info:
        VIEWS.decode(s, lay())
    assert info.value.section == "views" and info.value.field == "data.words[group 0]"


def test_class_bytes_on_views_coded_as_one_group_are_refused(encoded) -> None:
    """Spec § 3.8: with one group there are no ``class_bytes`` (unless K = 1). Kills
    ViewsCodec.decode 151 (the group count ignored)."""
    ungrouped = VIEWS.encode(good(), lay(), None)
    claimed = dataclasses.replace(section(ungrouped), class_bytes=[4 * ungrouped.params["words"]])
    with pytest.raises(DecodeError) as info:
        VIEWS.decode(claimed, lay())
    assert (info.value.section, info.value.field) == ("views", "class_bytes")


def test_samples_without_height_and_width_are_refused_and_two_dimensional_ones_decode() -> None:
    """Kills ViewsCodec.decode 1, 2 (two-dimensional samples refused) and 3–12 (the error's
    message, section or field)."""
    flat = lay(shape=(H, W))
    views = good()
    assert_same(VIEWS.decode(section(VIEWS.encode(views, flat, None)), flat), views)
    with pytest.raises(DecodeError) as info:
        VIEWS.decode(section(VIEWS.encode(views, flat, None)), lay(shape=(H * W,)))
    assert_error(info, "views need samples with at least two dimensions (height, width)", "views",
                 "dataset.sample_shape")


@pytest.mark.parametrize(("field", "value", "n", "what"), [
    ("crops", [0, 4, 1, 2], N, "crop box outside the 5×5 sample"),
    ("mix_boxes", [4, 0, 2, 1], N, "mix box outside the 5×5 image"),
    ("partners", 300, 300, "partner index outside [0, 300)"),
], ids=["crop-right", "mix-bottom", "partner-N"])
def test_decoded_records_outside_the_sample_are_refused_naming_view_section_and_field(
        monkeypatch, field: str, value: object, n: int, what: str) -> None:
    """Streams that reproduce their histograms can still spell such records (a partner equal to
    N = 300 has base-256 digits 44, 1, each inside its alphabet). Kills
    ViewsCodec._check_decoded 10–16 (section, field), 28, 44 (one side of a box unchecked) and
    36 (a partner equal to N accepted)."""
    views = random_views(np.random.default_rng(n), 1, n, K, H, W, 2, 4, mixed=1.0)
    views.partners[:] = 0
    views = edited(views, field, value)
    monkeypatch.setattr("ddformat.codecs.views._check_views", lambda views, layout: None)
    with pytest.raises(DecodeError) as info:
        VIEWS.decode(section(VIEWS.encode(views, lay(n), None)), lay(n))
    assert_error(info, f"view (round 0, sample 2): {what}", "views", "data.words")


# --------------------------------------------------------------------------- limits and alphabets


@pytest.mark.parametrize(("n", "k"), [(4, 2), (300, 1)])
def test_decoded_bytes_limit_is_the_spec_formula(n: int, k: int) -> None:
    """Spec § 3.8: B = 8·V·N·(10 + D + 2k) + V·N·(37 + 8k). A decoded-bytes limit of B is enough,
    B − 1 is refused naming the views. Kills ViewsCodec.decoded_bytes 26–41 and decode 132–145."""
    rng = np.random.default_rng(n)
    views = random_views(rng, 2, n, K, H, W, k, 4)
    digits = len(_digits(n))
    b = 8 * 2 * n * (10 + digits + 2 * k) + 2 * n * (37 + 8 * k)
    encoded = VIEWS.encode(views, lay(n), None)
    assert_same(VIEWS.decode(section(encoded), lay(n, cap=b)), views)
    with pytest.raises(LimitError) as info:
        VIEWS.decode(section(encoded), lay(n, cap=b - 1))
    assert_error(info, f"decoding views needs {b} bytes, more than the limit of {b - 1}", "views",
                 "max_decoded_bytes")


def test_parameters_out_of_range_are_refused_before_the_expansion_limit(encoded) -> None:
    """The expansion check reads ``rounds`` and ``k`` through the same range checks as decoding:
    absurd values are a ``DecodeError`` naming the field, not a computed size. Kills
    ViewsCodec.decoded_bytes 9, 21."""
    for params, field in ((dict(rounds=2**40), "params.rounds"), (dict(k=2**40), "params.k")):
        with pytest.raises(DecodeError) as info:
            check_expansion(section(encoded, **params), lay(), Limits())
        assert info.value.field == field


def test_views_past_the_expansion_limit_are_refused_naming_rounds(encoded) -> None:
    """Kills check_expansion 12–18 (section or field dropped or changed)."""
    with pytest.raises(LimitError) as info:
        check_expansion(section(encoded, rounds=65536), lay(), Limits())
    assert (info.value.section, info.value.field) == ("views", "params.rounds")


@pytest.mark.parametrize(("n", "alphabets"), [
    (1, [1]), (2, [2]), (256, [256]), (257, [256, 2]), (65536, [256, 256]), (65537, [256, 256, 2]),
])
def test_partner_digit_alphabets_follow_the_spec(n: int, alphabets: list[int]) -> None:
    """Spec § 3.8: D base-256 digits of N − 1 (at least 1), the top one ⌊(N − 1)/256^(D−1)⌋ + 1.
    Kills _digits 8, 9, 11."""
    assert _digits(n) == alphabets


@pytest.mark.parametrize(("k", "bits", "classes", "tables"), [
    (3, 10, 4, 3), (4, 10, 4, 1), (1, 12, 4, 1), (2, 11, 4, 1), (1, 11, 4, 1), (1365, 1, 1400, 1365),
])
def test_levels_share_one_table_past_4096_entries_and_round_trip_either_way(k, bits, classes, tables) -> None:
    """Spec § 3.8: k level histograms if k·(2^bits + 1) ≤ 4096, else one (1,365 ranks of 1 bit
    are 4,095 entries: one table each, where 1,365·(2 + 2) would not be). Kills _level_tables 2–9
    and _streams 45 (every rank coded as its own stream under one table)."""
    views = random_views(np.random.default_rng(bits), 2, 6, classes, H, W, k, bits)
    layout = Layout(6, classes, (3, H, W), "uint8", 2**30)
    encoded = VIEWS.encode(views, layout, None)
    assert encoded.params["level_tables"] == tables
    assert_same(VIEWS.decode(section(encoded), layout), views)


# --------------------------------------------------------------------------- what is carried along


def test_decoded_views_are_integer_arrays_with_the_writers_kl() -> None:
    """Consumers index samples with ``partners`` and crop with the boxes: they decode as int32
    (flips bool), and ``kl_to_source`` comes back as written, or None when not written. Kills
    ViewsCodec.decode 192–225 (array types), 411–435 and encode 100–103 (the KL)."""
    views = dataclasses.replace(good(), kl_to_source=0.125)
    decoded = VIEWS.decode(section(VIEWS.encode(views, lay(), None)), lay())
    for name in ("crops", "partners", "mix_boxes", "indices", "levels"):
        assert getattr(decoded, name).dtype == np.int32, name
    assert decoded.flips.dtype == bool
    assert decoded.kl_to_source == 0.125
    unmeasured = dataclasses.replace(views, kl_to_source=None)
    assert VIEWS.decode(section(VIEWS.encode(unmeasured, lay(), None)), lay()).kl_to_source is None


def test_take_renumbers_partner_zero_and_keeps_temperature_and_kl() -> None:
    """Kills Views.take 24 (partner 0 renumbered as 1), 35, 43, 44 (temperature or KL lost)."""
    views = dataclasses.replace(good(), temperature=3.0, kl_to_source=0.5)
    taken = views.take(np.array([3, 2, 1, 0]))
    assert (taken.partners == 3).all()
    assert (taken.temperature, taken.kl_to_source) == (3.0, 0.5)


def test_quantise_views_normalises_each_row_and_keeps_at_most_the_classes_there_are() -> None:
    """Rows are normalised one by one (a teacher's unnormalised scores, as relabelling may pass
    them, give the same labels and KL as their normalised form); ``k`` beyond the class count
    keeps every class. Kills quantise_views 13, 14, 16, 31, 32, 33."""
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(5), (1, 2))
    scaled = probs * np.array([2.0, 7.0])[None, :, None]
    idx, q, kl = quantise_views(probs, 8, 6)
    idx2, q2, kl2 = quantise_views(scaled, 8, 6)
    assert idx.shape == (1, 2, 5) and np.array_equal(idx, idx2) and np.array_equal(q, q2)
    assert kl == pytest.approx(kl2) and 0 < kl < 0.01
