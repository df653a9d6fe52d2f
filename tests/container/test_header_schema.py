"""One header schema in both directions: ``save`` refuses, naming the field and before touching
the destination, exactly the metadata ``open`` would refuse, and converts numpy values and tuples
to plain msgpack values instead of failing inside msgpack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ddformat
from ddformat.container.header import check_metadata
from ddformat.errors import FormatError, HeaderError
from ddformat.torch.values import to_model_units
from tests.support import reseal

X = np.arange(4 * 9, dtype=np.uint8).reshape(4, 1, 3, 3)
Y = np.array([0, 1, 2, 0])


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """A good file at the destination, which a refused save must leave byte for byte."""
    return ddformat.save(tmp_path / "set.dd", X, Y, name="previous")


def assert_refused(path: Path, before: bytes, error: type[Exception], field: str, **kwargs: Any) -> Exception:
    with pytest.raises(error) as info:
        ddformat.save(path, kwargs.pop("samples", X), kwargs.pop("labels", Y), **kwargs)
    assert field in str(info.value)
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"
    return info.value


# The 12 kinds of bad metadata of issue 8: each was written, then refused by the reader.
BAD_METADATA = {
    "negative temperature": ({"recipe": {"loss": "kl", "temperature": -1}}, "recipe.temperature"),
    "epochs as a string": ({"recipe": {"epochs": "10"}}, "recipe.epochs"),
    "integer class names": ({"class_names": [0, 1, 2]}, "dataset.class_names[0]"),
    "name None": ({"name": None}, "dataset.name"),
    "two means for one channel": ({"normalization": {"mean": [0.5, 0.5], "std": [0.2], "applied": False}},
                                  "dataset.normalization.mean"),
    "std 0": ({"normalization": {"mean": [0.5], "std": [0.0], "applied": False}}, "dataset.normalization.std[0]"),
    "value range (1, 0)": ({"value_range": (1, 0)}, "dataset.value_range"),
    "producer 1": ({"producer": 1}, "provenance.producer"),
    "architecture 3": ({"recipe": {"architecture": 3}}, "recipe.architecture"),
    "augmentation a string": ({"recipe": {"augmentation": "dsa"}}, "recipe.augmentation"),
    "numpy value msgpack cannot hold": ({"parameters": {"shift": np.complex64(1j)}}, "provenance.parameters.shift"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata_is_refused_naming_the_field_and_keeps_the_previous_file(previous, case):
    kwargs, field = BAD_METADATA[case]
    error = assert_refused(previous, previous.read_bytes(), HeaderError, field, **kwargs)
    assert error.field == field


def test_label_outside_the_class_count_is_refused_naming_its_index(previous):
    assert_refused(previous, previous.read_bytes(), ValueError, "label 7 at index 2",
                   labels=np.array([0, 1, 7, 0]), num_classes=3)


def test_numpy_scalars_arrays_and_tuples_are_stored_as_plain_values(tmp_path):
    path = ddformat.save(tmp_path / "np.dd", X, Y, num_classes=np.int64(3), value_range=np.array([0, 2]),
                         class_names=np.array(["a", "b", "c"]),
                         normalization={"mean": (np.float32(0.5),), "std": np.array([0.25]), "applied": np.bool_(False)},
                         recipe={"epochs": np.int32(5), "optimizer": {"lr": np.float16(0.5)}},
                         parameters={"seed": np.uint8(7), "pair": (1, np.float64(2.5)), "grid": np.arange(4).reshape(2, 2),
                                     "flag": np.bool_(True), "tag": np.str_("x")})
    with ddformat.open(path) as f:
        f.verify()
        assert f.dataset["class_names"] == ["a", "b", "c"] and f.dataset["value_range"] == [0.0, 2.0]
        assert f.dataset["normalization"] == {"mean": [0.5], "std": [0.25], "applied": False}
        assert f.recipe["epochs"] == 5 and f.recipe["optimizer"]["lr"] == 0.5
        params = f.provenance["parameters"]
    assert params == {"seed": 7, "pair": [1, 2.5], "grid": [[0, 1], [2, 3]], "flag": True, "tag": "x"}
    assert [type(params[k]) for k in ("seed", "flag", "tag")] == [int, bool, str]


@pytest.mark.parametrize("value, reason", [
    ({1, 2}, "set"), (object(), "object"), (2**64, "64 bits"), (-(2**63) - 1, "64 bits"),
    (np.datetime64("2024-01-01"), "datetime64"), ({1: "a"}, "map key 1"), ({b"k": 1}, "map key b'k'"),
    ("\ud800", "UTF-8"), (Path("/x"), "Path"),
])
def test_values_msgpack_cannot_hold_are_refused_by_name(previous, value, reason):
    error = assert_refused(previous, previous.read_bytes(), HeaderError, reason, parameters={"odd": value})
    assert error.field.startswith("provenance.parameters")


def test_nesting_is_bounded_alike_on_writing_and_reading(tmp_path):
    def nested(depth: int) -> Any:
        value: Any = 0
        for _ in range(depth):
            value = [value]
        return value

    # provenance is at depth 2 and parameters at 3, so lists fill depths 4 … 3 + k
    path = ddformat.save(tmp_path / "deep.dd", X, Y, parameters={"a": nested(29)})
    ddformat.open(path).verify()
    assert_refused(path, path.read_bytes(), HeaderError, "nest deeper", parameters={"a": nested(30)})


# ------------------------------------------------------------------------ fields the code reads

READ_BACK_FIELDS = [
    ("recipe.regime", {"recipe": {"regime": "sl+kd"}}, lambda h: h["recipe"].__setitem__("regime", "kd")),
    ("recipe.optimizer.warmup_epochs", {"recipe": {"optimizer": {"warmup_epochs": 5}}},
     lambda h: h["recipe"]["optimizer"].__setitem__("warmup_epochs", -1)),
    ("recipe.optimizer.lr", {"recipe": {"optimizer": {"lr": 0.01}}},
     lambda h: h["recipe"]["optimizer"].__setitem__("lr", 0)),
    ("recipe.optimizer.momentum", {"recipe": {"optimizer": {"momentum": 0.9}}},
     lambda h: h["recipe"]["optimizer"].__setitem__("momentum", "high")),
    ("recipe.optimizer.weight_decay", {"recipe": {"optimizer": {"weight_decay": 0.0}}},
     lambda h: h["recipe"]["optimizer"].__setitem__("weight_decay", -1e-4)),
    ("recipe.optimizer.name", {"recipe": {"optimizer": {"name": "SGD"}}},
     lambda h: h["recipe"]["optimizer"].__setitem__("name", 1)),
    ("recipe.optimizer.schedule", {"recipe": {"optimizer": {"schedule": "step"}}},
     lambda h: h["recipe"]["optimizer"].__setitem__("schedule", ["step"])),
    ("provenance.parameters.zca", {"parameters": {"zca": True}},
     lambda h: h["provenance"]["parameters"].__setitem__("zca", "yes")),
    ("provenance.content_hash", {}, lambda h: h["provenance"].__setitem__("content_hash", "sha256:XYZ")),
]


@pytest.mark.parametrize("field, good, spoil", READ_BACK_FIELDS, ids=[f[0] for f in READ_BACK_FIELDS])
def test_fields_the_code_reads_are_validated_when_reading_and_writing(tmp_path, field, good, spoil):
    path = ddformat.save(tmp_path / "good.dd", X, Y, **good)
    ddformat.open(path).verify()
    bad = tmp_path / "bad.dd"
    bad.write_bytes(reseal(path.read_bytes(), spoil))
    with pytest.raises(HeaderError) as info:
        ddformat.open(bad)
    assert info.value.field == field
    if field != "provenance.content_hash":  # the writer computes the hash itself
        spoiled: dict[str, Any] = {"recipe": {"optimizer": {}}, "provenance": {"parameters": {}}}
        spoil(spoiled)
        kwargs = {"recipe": spoiled["recipe"]} if field.startswith("recipe") else \
            {"parameters": spoiled["provenance"]["parameters"]}
        assert_refused(path, path.read_bytes(), HeaderError, field, **kwargs)


# ------------------------------------------------------------------------ finite sample values

FINITE = st.floats(allow_nan=False, allow_infinity=False)
EXTREME = st.one_of(FINITE, st.sampled_from([0.0, 2.0**127, -(2.0**127), 2.0**126, -(2.0**126), 1.7014116e38, -1.7014116e38, 2.0**-126, 2.0**-149, 3.4e38, 1e-300]))


@settings(max_examples=300, deadline=None)
@given(lo=EXTREME, hi=EXTREME, mean=EXTREME, std=EXTREME, applied=st.booleans())
def test_accepted_value_range_and_normalization_give_finite_float32_samples(lo, hi, mean, std, applied):
    """Whatever the schema accepts, the torch layer turns every uint8 code into a finite,
    normalised float32 value, and distinct codes stay distinct before normalisation."""
    dataset = {"name": "", "num_classes": 1, "class_names": ["a"], "num_samples": 256, "sample_shape": [1, 16, 16],
               "sample_dtype": "uint8", "value_range": [lo, hi],
               "normalization": {"mean": [mean], "std": [std], "applied": applied}}
    try:
        check_metadata(dataset, {"producer": "", "producer_version": "", "source_dataset": ""}, {})
    except HeaderError:
        return
    codes = torch.arange(256, dtype=torch.uint8).reshape(256, 1, 1, 1)
    raw, _ = to_model_units(codes.clone(), {**dataset, "normalization": None})
    assert torch.isfinite(raw).all() and (raw[1:] > raw[:-1]).any()
    out, _ = to_model_units(codes.clone(), {**dataset, "normalization": {**dataset["normalization"], "applied": False}})
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kwargs, field", [
    ({"value_range": (0.0, 1e300)}, "dataset.value_range"),
    ({"value_range": (-3e38, 3e38)}, "dataset.value_range"),
    ({"value_range": (0.0, 1e-40)}, "dataset.value_range"),
    ({"normalization": {"mean": [0.5], "std": [1e-39], "applied": False}}, "dataset.normalization.std[0]"),
    ({"normalization": {"mean": [0.5], "std": [1e39], "applied": False}}, "dataset.normalization.std[0]"),
    ({"normalization": {"mean": [1e39], "std": [1.0], "applied": False}}, "dataset.normalization.mean[0]"),
    ({"value_range": (0.0, 1e30), "normalization": {"mean": [0.0], "std": [1e-10], "applied": False}},
     "dataset.normalization.std[0]"),
])
def test_extreme_but_finite_ranges_are_refused(previous, kwargs, field):
    assert_refused(previous, previous.read_bytes(), HeaderError, field, **kwargs)


# ------------------------------------------------------------------------ any metadata at all

CONVERTIBLE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=6), st.binary(max_size=4),
    st.sampled_from([np.int64(3), np.uint8(200), np.float32(0.25), np.float64("nan"), np.bool_(False), np.str_("s"),
                     np.arange(3), np.array(["a", "b"])]))
LEAVES = st.one_of(CONVERTIBLE, st.sampled_from([np.complex64(1j), np.datetime64("2020-01-01"), frozenset({1}), object(),
                                                 Path("p"), 2**64, -(2**63) - 1, "\ud800"]))


def nested(leaves: st.SearchStrategy, keys: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(keys, inner, max_size=3)), max_leaves=8)


GARBAGE = nested(LEAVES, st.one_of(st.text(max_size=4), st.integers(0, 2)))
OPTIMIZER = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["sgd", "adamw", "Adam"]), "lr": st.floats(1e-6, 1.0), "momentum": st.floats(0, 1),
    "weight_decay": st.floats(0, 1), "schedule": st.sampled_from(["cosine", "step", "constant"]),
    "warmup_epochs": st.integers(0, 10)})
VALID = {
    "name": st.text(max_size=8),
    "num_classes": st.sampled_from([3, 4, np.int64(5), None]),
    "class_names": st.sampled_from([None, ["a", "b", "c"], ("x", "y", "z")]),
    "value_range": st.one_of(st.none(), st.tuples(st.floats(-1e6, 0), st.floats(1, 1e6))),
    "normalization": st.one_of(st.none(), st.fixed_dictionaries(
        {"mean": st.lists(st.floats(-10, 10), min_size=1, max_size=1),
         "std": st.lists(st.floats(0.01, 100), min_size=1, max_size=1), "applied": st.booleans()})),
    "recipe": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "loss": st.sampled_from(["ce", "kl"]), "temperature": st.floats(0.1, 50), "epochs": st.integers(1, 1000),
        "batch_size": st.integers(1, 512), "architecture": st.text(max_size=8),
        "augmentation": st.lists(st.sampled_from(["dsa", "cutmix"]), max_size=2),
        "regime": st.sampled_from(["hl", "sl", "sl+kd"]), "optimizer": OPTIMIZER,
        "weighting": st.fixed_dictionaries({"scheme": st.just("uniform"),
                                            "normalization": st.sampled_from(["none", "global", "batch"])})})),
    "producer": st.text(max_size=8),
    "producer_version": st.text(max_size=8),
    "parameters": st.one_of(st.none(), st.dictionaries(st.text(max_size=6), nested(CONVERTIBLE, st.text(max_size=4)),
                                                       max_size=3)),
    "source_dataset": st.text(max_size=8),
}
OPTIMIZER_KEYS = ("lr", "momentum", "name", "schedule", "warmup_epochs", "weight_decay")


@st.composite
def metadata(draw) -> dict[str, Any]:
    """Keyword metadata for ``save``: every field valid or absent, except up to two drawn from
    anything (wrong types, numpy values, tuples, NaN, huge numbers, nested maps, bytes, None...)
    and maybe one optimizer key."""
    spoiled = draw(st.sets(st.sampled_from(sorted(VALID)), max_size=2))
    kwargs = {}
    for name, strategy in VALID.items():
        value = draw(GARBAGE if name in spoiled else strategy)
        if value is not None or name in spoiled:
            kwargs[name] = value
    optimizer = kwargs["recipe"].get("optimizer") if isinstance(kwargs.get("recipe"), dict) else None
    if isinstance(optimizer, dict) and draw(st.booleans()):
        optimizer[draw(st.sampled_from(OPTIMIZER_KEYS))] = draw(GARBAGE)
    return kwargs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kwargs=metadata())
def test_save_refuses_before_touching_the_path_or_writes_a_file_that_verifies(tmp_path, kwargs):
    path = tmp_path / "any.dd"
    ddformat.save(path, X, Y, name="previous")
    before = path.read_bytes()
    try:
        ddformat.save(path, X, Y, **kwargs)
    except (FormatError, ValueError) as exc:
        event(f"refused: {type(exc).__name__}")
        assert path.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["any.dd"], "a temporary file was left behind"
        return
    event("written")
    with ddformat.open(path) as f:
        f.verify()
        for key in ("name", "producer", "source_dataset"):
            if isinstance(kwargs.get(key), str):
                assert (f.dataset if key == "name" else f.provenance)[key] == kwargs[key]

