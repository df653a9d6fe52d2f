"""Container behaviour: round trips, robustness against damaged files, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ddformat
from ddformat.errors import ChecksumError, DecodeError, FormatError, HeaderError, LayoutError, UnsupportedError
from tests.support import reseal

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "valid"


@st.composite
def distilled_sets(draw):
    k = draw(st.integers(1, 6))
    n = draw(st.integers(1, 12))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from(["uint8", "float16", "float32"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == "uint8":
        x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    else:
        x = (rng.normal(size=(n, *shape)) * draw(st.sampled_from([1e-3, 1.0, 1e4]))).astype(dtype)
    if draw(st.booleans()):
        y = rng.integers(0, k, size=n)
    else:
        y = rng.dirichlet(np.full(k, 0.3), size=n).astype(np.float32)
        y /= y.sum(axis=1, keepdims=True)
    weights = draw(st.sampled_from([None, "counts", "float"]))
    w = None if weights is None else (
        rng.integers(1, 1000, size=n) if weights == "counts" else rng.uniform(0.1, 3, size=n).astype(np.float32))
    return x, y, w, k, draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distilled_sets())
def test_round_trip_preserves_tensors_and_metadata(tmp_path_factory, case):
    x, y, w, k, sort = case
    path = tmp_path_factory.mktemp("rt") / "x.dd"
    scheme = "uniform" if w is None else "sqrt"
    recipe = {"loss": "kl" if y.ndim == 2 else "ce", "temperature": 3.0, "epochs": 7,
              "weighting": {"scheme": scheme, "normalization": "batch"}}
    ddformat.save(path, x, y, num_classes=k, weights=w, sort_by_class=sort, name="rt", recipe=recipe,
                  class_names=[f"c{i}" for i in range(k)], parameters={"seed": 3, "nested": {"a": [1, 2.5]}},
                  codec_options={"labels": {"dtype": "float32"}} if y.ndim == 2 else None)
    classes = y if y.ndim == 1 else y.argmax(axis=1)
    order = np.argsort(classes, kind="stable") if sort else np.arange(len(classes))
    with ddformat.open(path) as f:
        f.verify()
        assert np.array_equal(f.samples(), x[order])
        got_y = f.labels()
        assert got_y.dtype == (np.int64 if y.ndim == 1 else np.float32)
        assert np.array_equal(got_y, y[order])
        if w is None:
            assert f.stored_weights() is None
        else:
            assert np.array_equal(f.stored_weights(), w[order])
        assert f.num_classes == k and f.class_names == [f"c{i}" for i in range(k)]
        assert f.recipe["epochs"] == 7 and f.recipe["weighting"]["scheme"] == scheme
        assert f.provenance["parameters"] == {"seed": 3, "nested": {"a": [1, 2.5]}}
        assert sum(f.bits["per_class"]) == sum(f.bits["components"].values()) == 8 * path.stat().st_size


_DAMAGE = r"""
import json, random, re, struct, sys, zlib
from pathlib import Path

import ddformat
from ddformat import FormatError

vectors, tmp = Path(sys.argv[1]), Path(sys.argv[2])
rng = random.Random(1234)
cases, accepted = 0, []


def peak_kib():
    # This process's own high-water mark: ru_maxrss would carry the parent's over fork and exec.
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())[1])


baseline = peak_kib()


def check(data, what):
    global cases
    cases += 1
    tmp.write_bytes(data)
    try:
        with ddformat.open(tmp) as f:
            f.verify()
        accepted.append(what)
    except FormatError:
        pass


for path in sorted(vectors.glob("*.dd")):
    base = path.read_bytes()
    for _ in range(300):
        i = rng.randrange(len(base))
        check(base[:i] + bytes([base[i] ^ (1 << rng.randrange(8))]) + base[i + 1:], f"{path.name}: bit flip at {i}")
        n = rng.randrange(len(base))
        check(base[:n], f"{path.name}: truncated to {n}")
    for field, off, fmt, values in (("header_length", 12, "<I", (2**31, 2**32 - 1, len(base) + 1)),
                                    ("file_length", 16, "<Q", (2**63, len(base) * 2))):
        for value in values:
            pre = bytearray(base[:32])
            struct.pack_into(fmt, pre, off, value)
            struct.pack_into("<I", pre, 28, zlib.crc32(bytes(pre[:28])))
            check(bytes(pre) + base[32:], f"{path.name}: {field} {value}")
growth = (peak_kib() - baseline) / 1024
print(json.dumps({"cases": cases, "accepted": accepted, "growth_mib": growth}))
"""


def test_damaged_files_raise_format_error_only(tmp_path):
    """Bit flips, truncations and wrong preamble lengths: each fails a CRC-32 or a length check
    (the semantic checks behind them are fuzzed with resealed checksums in test_fuzz.py). Run in
    a fresh process, whose peak memory (VmHWM) is then the reader's own, not an earlier test's."""
    proc = subprocess.run([sys.executable, "-c", _DAMAGE, str(VECTORS), str(tmp_path / "m.dd")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["cases"] >= 3000 and result["accepted"] == []
    assert result["growth_mib"] < 64, f"peak memory grew by {result['growth_mib']:.0f} MiB reading damaged files"


_WRITER = """
import sys, numpy as np, ddformat
n = int(sys.argv[2])
x = np.random.default_rng(0).integers(0, 256, size=(n, 3, 64, 64), dtype=np.uint8)
ddformat.save(sys.argv[1], x, np.arange(n) % 10, codec_options={"samples": {"level": 1}})
"""


def test_killed_writer_leaves_previous_file_intact(tmp_path):
    target = tmp_path / "set.dd"
    ddformat.save(target, np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 1, 0, 1]))
    before = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), "20000"])
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".set.dd.*.tmp")):
        assert proc.poll() is None, "writer finished before it could be killed mid-write"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".set.dd.*.tmp")), "the kill did not land while the file was being written"
    assert target.read_bytes() == before
    with ddformat.open(target) as f:
        f.verify()


def test_unknown_optional_section_is_skipped_and_counted():
    with ddformat.open(VECTORS / "unknown_optional_section.dd") as f:
        f.verify()
        assert f.bits["components"]["other"] == 8 * len(b"skip me")


def test_reader_limits_refuse_large_decodes(tmp_path):
    path = ddformat.save(tmp_path / "x.dd", np.zeros((10, 1, 8, 8), np.uint8), np.arange(10) % 2)
    with pytest.raises(ddformat.errors.LimitError):
        ddformat.open(path, limits=ddformat.limits.Limits(max_decoded_bytes=100))


def test_writer_names_an_unknown_codec(tmp_path):
    with pytest.raises(ValueError, match="unknown labels codec 'fancy'"):
        ddformat.save(tmp_path / "x.dd", np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 1]), labels_codec="fancy")
    assert not (tmp_path / "x.dd").exists()


def test_zca_transform_round_trips_and_is_counted_as_other(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 1, 3, 3)).astype(np.float32)
    mean, matrix = rng.normal(size=9).astype(np.float32), rng.normal(size=(9, 9)).astype(np.float32)
    path = ddformat.save(tmp_path / "z.dd", x, np.arange(6) % 2, zca=(mean, matrix))
    with ddformat.open(path) as f:
        f.verify()
        got_mean, got_matrix = f.zca()
        assert np.array_equal(got_mean, mean) and np.array_equal(got_matrix, matrix)
        assert f.bits["components"]["other"] == 8 * f.container.entries["zca"].length


def _vector(name: str) -> bytes:
    return (VECTORS / f"{name}.dd").read_bytes()


def _read_all(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    with ddformat.open(path) as f:
        f.verify()


class _Repeated(dict):
    """A map that msgpack writes with one key twice, as msgpack allows and the spec does not."""

    def __init__(self, base: dict, key: str, value: object) -> None:
        super().__init__(base)
        self.extra = (key, value)

    def items(self):
        return [*super().items(), self.extra]

    def __len__(self) -> int:
        return super().__len__() + 1


@pytest.mark.parametrize("where, key, field", [
    ("dataset", "name", "dataset.name"),
    ("params", "filter", "sections[0].params.filter"),
    ("parameters", "seed", "provenance.parameters.seed"),
])
def test_a_key_repeated_in_any_header_map_is_refused(tmp_path, where, key, field):
    def edit(h):
        if where == "dataset":
            h["dataset"] = _Repeated(h["dataset"], key, "another name")
        elif where == "params":
            h["sections"][0]["params"] = _Repeated(h["sections"][0]["params"], key, h["sections"][0]["params"][key])
        else:
            h["provenance"]["parameters"] = _Repeated({"seed": 1}, key, 2)

    with pytest.raises(HeaderError, match="appears twice") as info:
        _read_all(reseal(_vector("hard_grouped_uint8"), edit), tmp_path / "x.dd")
    assert info.value.field == field


@pytest.mark.parametrize("key", [b"bytes", 7])
def test_map_keys_that_are_not_strings_are_refused(tmp_path, key):
    data = reseal(_vector("hard_grouped_uint8"), lambda h: h["sections"][0]["params"].__setitem__(key, 1))
    with pytest.raises(HeaderError, match="is not a string") as info:
        _read_all(data, tmp_path / "x.dd")
    assert info.value.field == "sections[0].params"


@pytest.mark.parametrize("innermost", ["array", "map"])
@pytest.mark.parametrize("depth", [32, 33])
def test_header_nesting_is_counted_from_the_top_level_map(tmp_path, depth, innermost):
    """provenance.parameters is a map at depth 3 (header 1, provenance 2), so a value of
    ``depth - 3`` nested maps and arrays puts the deepest at ``depth``; 32 is allowed, 33 is not."""
    value: object = 0
    for i in range(depth - 3):
        value = [value] if (i % 2 == 0) == (innermost == "array") else {"d": value}
    data = reseal(_vector("hard_grouped_uint8"),
                  lambda h: h["provenance"].__setitem__("parameters", {"deep": value}))
    if depth <= 32:
        _read_all(data, tmp_path / "x.dd")
    else:
        with pytest.raises(HeaderError, match="nest deeper than 32") as info:
            _read_all(data, tmp_path / "x.dd")
        assert info.value.field.startswith("provenance.parameters.deep")


@pytest.mark.parametrize("vector, index, class_bytes", [
    ("hard_grouped_uint8", 0, [127, 129, 128]),  # pixels: a byte of class 0's frame charged to class 1
    ("hard_grouped_uint8", 1, [2, 0, 1]),  # grouped labels: class_bytes are the varints' lengths
    ("soft_dense_float16_counts_sqrt", 2, None),  # class-grouped frames without class_bytes
    ("hard_indices_float32", 1, [12, 0, 0, 0]),  # indices: no byte belongs to one class alone
    ("hard_indices_float32", 0, [1293, 0, 0, 0]),  # one frame for all classes
])
def test_class_bytes_must_be_what_the_payload_attributes_to_each_class(tmp_path, vector, index, class_bytes):
    """The bit account is recounted from the edited class_bytes, so it is consistent with them:
    only the codec, which knows the payload, can tell they are stale."""
    data = reseal(_vector(vector), lambda h: h["sections"][index].__setitem__("class_bytes", class_bytes))
    with pytest.raises(DecodeError, match="class_bytes") as info:
        _read_all(data, tmp_path / "x.dd")
    assert info.value.field == "class_bytes"


@pytest.mark.parametrize("vector, edit, error", [
    ("ruo_two_slices", lambda h: h["sections"][1].update(required=False), HeaderError),
    ("ruo_two_slices", lambda h: h["sections"].pop(2), HeaderError),
    ("ruo_two_slices", lambda h: h["sections"][1].update(codec="zzz"), UnsupportedError),
    ("soft_dense_float16_counts_sqrt", lambda h: h["sections"][2].update(codec="zzz", required=False), HeaderError),
], ids=["aux-optional", "aux-missing", "aux-unknown-codec", "known-kind-unknown-codec-optional"])
def test_sections_a_file_needs_are_present_known_and_required(tmp_path, vector, edit, error):
    path = tmp_path / "x.dd"
    path.write_bytes(reseal(_vector(vector), edit))
    with pytest.raises(error):
        ddformat.open(path)


def test_content_hash_is_checked_by_verify_and_by_the_dataset_from_the_sections_they_read(tmp_path):
    path = tmp_path / "x.dd"
    path.write_bytes(reseal(_vector("soft_dense_float16_counts_sqrt"),
                            lambda h: h["provenance"].__setitem__("content_hash", bytes(32))))
    with ddformat.open(path) as f:
        f.samples(), f.labels(), f.stored_weights()  # decoding alone does not need the hash
        with pytest.raises(ChecksumError, match="content hash"):
            f.verify_content_hash()
    with pytest.raises(ChecksumError, match="content hash"), ddformat.open(path) as f:
        f.verify()
    with pytest.raises(ChecksumError, match="content hash"):
        ddformat.DistilledDataset(path)


class _CountingSource:
    def __init__(self, path: Path) -> None:
        from ddformat.container.sources import LocalSource

        self.inner = LocalSource(path)
        self.size = self.inner.size
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.inner.read(offset, length)

    def close(self) -> None:
        self.inner.close()


def test_content_hash_check_reads_only_sections_not_read_before():
    source = _CountingSource(VECTORS / "unknown_optional_section.dd")
    with ddformat.open(source) as f:
        f.labels()
        f.samples()  # after labels: the labels payload waits for the samples to be hashed first
        source.reads.clear()
        f.verify_content_hash()
        note = f.container.entries["vendor.note"]
        assert source.reads == [(note.offset, note.length)]


def _with_defects(*defects: str) -> bytes:
    def edit(h):
        if "schema" in defects:
            del h["dataset"]["name"]
        if "unsupported" in defects:
            h["sections"].append({"kind": "vendor.secret", "codec": "x", "component": "other", "length": 0,
                                  "crc32": 0})
        if "class_bytes" in defects:
            h["sections"][0]["class_bytes"] = [127, 129, 128]
        if "content_hash" in defects:
            h["provenance"]["content_hash"] = bytes(32)
        if "layout" in defects:
            h["sections"][0]["alignment"] = 4096  # zero padding from the header's end to 4096

    data = bytearray(reseal(_vector("hard_grouped_uint8"), edit))
    if "layout" in defects:
        data[4095] = 1
    return bytes(data)


@pytest.mark.parametrize("defects, error", [
    (("schema", "layout"), HeaderError),
    (("layout", "unsupported"), LayoutError),
    (("unsupported", "class_bytes"), UnsupportedError),
    (("content_hash", "class_bytes"), ChecksumError),
])
def test_of_two_defects_the_first_in_the_spec_check_order_is_reported(tmp_path, defects, error):
    """spec § 6: preamble, header decoding, schema, layout, supported sections, rules across
    sections, then (verify) CRCs and content hash before any decoding."""
    for subset in (defects[:1], defects):
        with pytest.raises(error):
            _read_all(_with_defects(*subset), tmp_path / "x.dd")
    with pytest.raises(FormatError) as info:
        _read_all(_with_defects(defects[1]), tmp_path / "x.dd")
    assert type(info.value) is not error, "the second defect alone must raise another error"


def test_errors_name_the_file_as_the_user_gave_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("at_open.dd").write_bytes(_with_defects("schema"))
    with pytest.raises(HeaderError, match=r"\(file 'at_open\.dd', section 'header'"):
        ddformat.open("at_open.dd")
    Path("decoding.dd").write_bytes(_with_defects("class_bytes"))
    with ddformat.open(Path("decoding.dd")) as f, pytest.raises(DecodeError, match=r"file 'decoding\.dd'"):
        f.samples()


def test_samples_must_decode_to_the_declared_dtype(tmp_path):
    """``ruo`` synthesises float32 whatever the header says; the reader holds every codec to
    ``dataset.sample_dtype``."""
    data = reseal(_vector("ruo_two_slices"), lambda h: h["dataset"].__setitem__("sample_dtype", "uint8"))
    with pytest.raises(DecodeError, match="declares uint8") as info:
        _read_all(data, tmp_path / "x.dd")
    assert info.value.field == "dataset.sample_dtype"
