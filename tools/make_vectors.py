"""Regenerate ``spec/vectors/``: small valid files with the SHA-256 of their decoded tensors, and
invalid files with the error a reader must raise.

    python -m tools.make_vectors [--out spec/vectors]

Every file is deterministic, so regenerating after an intended format change shows exactly what
changed in ``git diff``. Invalid files are made from valid ones with all checks but the one
under test kept consistent (CRCs recomputed), so each pins one rule of the spec.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import msgpack
import numpy as np
import zstandard

import ddformat
from ddformat import codecs
from ddformat.codecs import views as views_codec
from ddformat.codecs.ruo import RuoSamples, RuoSlice, schedule
from ddformat.codecs.views import Views, quantise_views
from ddformat.container.bits import bit_account
from ddformat.container.header import compress_header
from ddformat.container.sections import EncodedSection, Layout, Section, align
from ddformat.container.writing import build
from ddformat.limits import DEFAULT_LIMITS, MAGIC, PREAMBLE_SIZE
from tests.support import decoded_digests, reseal, split_header, store_header


def float_samples(f: ddformat.DDFile) -> dict[str, Any]:
    """The decoded samples of a `ruo` file as numbers, with the tolerance a decoder must meet;
    the values are torch's CPU synthesis, against which the numpy decoder is checked."""
    from ddformat.torch import samples_tensor

    values = samples_tensor(f).numpy()
    return {"samples_values": np.round(values.astype(np.float64), 7).tolist(),
            "tolerance": SYNTHESIS_TOLERANCE}


def _rng_images(seed: int, n: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        base = np.linspace(0, 255, shape[-1] * shape[-2]).reshape(shape[-2], shape[-1])
        noise = rng.integers(0, 40, size=(n, *shape))
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    return rng.normal(size=(n, *shape)).astype(dtype)


def _soft(seed: int, n: int, k: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def valid_files(out: Path) -> dict[str, Path]:
    files = {}
    files["hard_grouped_uint8"] = ddformat.save(
        out / "hard_grouped_uint8.dd", _rng_images(0, 6, (1, 8, 8), "uint8"), np.array([2, 0, 1, 0, 2, 1]),
        num_classes=3, class_names=["zero", "one", "two"], name="vector-hard-grouped")
    files["hard_indices_float32"] = ddformat.save(
        out / "hard_indices_float32.dd", _rng_images(1, 7, (3, 4, 4), "float32"), np.array([1, 0, 1, 1, 0, 3, 2]),
        num_classes=4, sort_by_class=False, name="vector-hard-indices",
        normalization={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "applied": True},
        recipe={"loss": "ce", "epochs": 300, "batch_size": 256, "architecture": "ConvNet-D3",
                "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}})
    files["soft_dense_float16_counts_sqrt"] = ddformat.save(
        out / "soft_dense_float16_counts_sqrt.dd", _rng_images(2, 8, (2, 3, 5), "float16"), _soft(2, 8, 3),
        weights=np.array([5, 1, 9, 3, 2, 2, 7, 1], dtype=np.int64), name="vector-soft-dense",
        recipe={"loss": "kl", "temperature": 20.0, "weighting": {"scheme": "sqrt", "normalization": "global"}})
    files["soft_topk_float_weights_batch"] = ddformat.save(
        out / "soft_topk_float_weights_batch.dd", _rng_images(3, 9, (1, 6, 6), "uint8"), _soft(3, 9, 5),
        weights=np.linspace(0.5, 2.0, 9).astype(np.float32), labels_codec="topk",
        codec_options={"labels": {"k": 2, "bits": 6}}, name="vector-soft-topk",
        recipe={"loss": "kl", "temperature": 4.0, "weighting": {"scheme": "explicit", "normalization": "batch"}})
    files["ruo_two_slices"] = ddformat.save(out / "ruo_two_slices.dd", _ruo_samples(), np.array([0, 0, 1]),
                                            name="vector-ruo")
    files["ruo_v5_rgb_streams"] = ddformat.save(
        out / "ruo_v5_rgb_streams.dd", _ruo_rgb_samples(), np.array([0, 1, 1, 2]), name="vector-ruo-v5",
        codec_options={"samples": {"samples_per_stream": 1, "weights_per_stream": 300}})
    files["views_topk_cutmix"] = ddformat.save(
        out / "views_topk_cutmix.dd", _rng_images(4, 6, (3, 6, 6), "uint8"), np.array([1, 0, 2, 0, 1, 2]),
        num_classes=3, views=_views(4, rounds=2, n=6, num_classes=3, size=6), name="vector-views",
        recipe={"loss": "kl", "temperature": 20.0, "regime": "sl", "view_schedule": "cycle"})
    files["unknown_optional_section"] = _with_extra_section(
        out / "unknown_optional_section.dd", EncodedSection("vendor.note", "utf8", "other", b"skip me", required=False))
    return files


def _views(seed: int, rounds: int, n: int, num_classes: int, size: int) -> Views:
    """Per-view records of every kind (mixed and unmixed views, an empty mix box) and the top-2
    of random teacher distributions at 5 bits (spec § 3.8)."""
    rng = np.random.default_rng(seed)
    ch, cw = rng.integers(1, size + 1, (rounds, n)), rng.integers(1, size + 1, (rounds, n))
    crops = np.stack([rng.integers(0, size - ch + 1), rng.integers(0, size - cw + 1), ch, cw], -1)
    partners = np.where(rng.random((rounds, n)) < 0.6, rng.integers(0, n, (rounds, n)), -1)
    mh, mw = rng.integers(0, size // 2 + 1, (rounds, n)), rng.integers(0, size // 2 + 1, (rounds, n))
    boxes = np.stack([rng.integers(0, size - mh), rng.integers(0, size - mw), mh, mw], -1) * (partners >= 0)[..., None]
    idx, q, kl = quantise_views(_soft(seed, rounds * n, num_classes).reshape(rounds, n, num_classes), 2, 5)
    return Views(crops, rng.random((rounds, n)) < 0.5, partners, boxes, idx, q, 5, 20.0, kl)


def views_invalid_files(data: bytes) -> dict[str, tuple[bytes, str]]:
    """Invalid variants of the ``views_topk_cutmix`` vector (spec § 3.8)."""
    def entry(h: dict[str, Any]) -> dict[str, Any]:
        return next(s for s in h["sections"] if s["kind"] == "views")

    def move_class_bytes(h: dict[str, Any]) -> None:
        cb = entry(h)["class_bytes"]
        cb[0], cb[1] = cb[0] + 4, cb[1] - 4

    def outside(h: dict[str, Any]) -> None:
        # A crop box that runs past the sample, coded so that every stream reproduces its histogram.
        layout = Layout(h["dataset"]["num_samples"], h["dataset"]["num_classes"], tuple(h["dataset"]["sample_shape"]),
                        h["dataset"]["sample_dtype"], DEFAULT_LIMITS.max_decoded_bytes)
        views = views_codec.VIEWS.decode(Section("views", views_codec.VIEWS.name, "labels", 0, len(entry(h)["_body"]),
                                                 entry(h)["params"], entry(h)["_body"], entry(h)["class_bytes"]), layout)
        views.crops[1, 2] = [5, 0, 6, 1]
        check, views_codec._check_views = views_codec._check_views, lambda v, lay: None
        try:
            encoded = views_codec.VIEWS.encode(views, layout, entry(h)["params"]["frame_rows"])
        finally:
            views_codec._check_views = check
        entry(h).update(_body=bytes(encoded.data), params=encoded.params, class_bytes=encoded.class_bytes)

    return {
        "views_class_bytes_moved": (reseal(data, move_class_bytes), "DecodeError"),
        "views_rounds_past_expansion_limit": (reseal(data, lambda h: entry(h)["params"].update(rounds=65536)),
                                              "LimitError"),
        "views_marked_optional": (reseal(data, lambda h: entry(h).update(required=False)), "HeaderError"),
        "views_crop_outside_sample": (reseal(data, outside), "DecodeError"),
        "recipe_unknown_view_schedule": (reseal(data, lambda h: h["recipe"].update(view_schedule="sometimes")),
                                         "HeaderError"),
    }


def _ruo_samples() -> RuoSamples:
    """Two slices of 6×6 gray samples with 3 latent scales and hand-set integer networks."""
    rng = np.random.default_rng(7)
    template = RuoSamples((1, 6, 6), 3, 4, 3, 1, "v4-40", [])
    m, _ = schedule(6, 6, 3, 4)
    slices = []
    for n in (2, 1):
        arm = [(rng.integers(-40, 41, size=(3, 4)), rng.integers(-20, 21, size=3)),
               (rng.integers(-40, 41, size=(2, 3)), np.array([0, 256]))]
        decoder = {k: rng.integers(-64, 65, size=shape) for k, shape in template.decoder_shapes().items()}
        latents = rng.integers(-3, 4, size=(n, m))
        slices.append(RuoSlice(latents, arm, 6, decoder, 8))
    return RuoSamples((1, 6, 6), 3, 4, 3, 1, "v4-40", slices)


def _ruo_rgb_samples() -> RuoSamples:
    """Two slices of 3×5×7 colour samples through the v5-240 decoder (two hidden 1×1 layers);
    the second slice straddles classes 1 and 2, so its bytes are shared (no class_bytes). Written
    with one stream per sample and 300 weights per network stream: many streams per section."""
    rng = np.random.default_rng(11)
    template = RuoSamples((3, 5, 7), 2, 6, 4, 2, "v5-240", [])
    m, _ = schedule(5, 7, 2, 6)
    slices = []
    for n in (1, 3):
        arm = [(rng.integers(-60, 61, size=shape), rng.integers(-30, 31, size=shape[0])) for shape in template.arm_shapes()]
        decoder = {k: rng.integers(-200, 201, size=shape) for k, shape in template.decoder_shapes().items()}
        slices.append(RuoSlice(rng.integers(-5, 6, size=(n, m)), arm, 7, decoder, 10))
    return RuoSamples((3, 5, 7), 2, 6, 4, 2, "v5-240", slices)


def _varints(body: bytes, count: int, pos: int = 0) -> tuple[list[int], int]:
    values = []
    for _ in range(count):
        value, shift = 0, 0
        while True:
            byte, pos, shift = body[pos], pos + 1, shift + 7
            value |= (byte & 0x7F) << (shift - 7)
            if byte < 0x80:
                break
        values.append(value)
    return values, pos


def _ruo_stream(data: bytes, kind: str, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
                ) -> bytes:
    """The file with one ``ruo`` section's streams changed — ``change(word counts, words)``
    returns new ones — and every check but the streams' own kept consistent."""
    def edit(h: dict[str, Any]) -> None:
        entry = next(s for s in h["sections"] if s["kind"] == kind)
        body, template = entry["_body"], _ruo_samples()
        slices = h["sections"][0]["params"]["slices"]
        if kind == "samples":
            fields, counts = 0, sum(-(-n // entry["params"]["samples_per_stream"]) for n in slices)
        else:
            shapes = template.decoder_shapes().values() if kind.endswith("decoder") else \
                [shape for pair in template.arm_shapes() for shape in (pair, pair[:1])]
            total = sum(math.prod(shape) for shape in shapes)
            fields, counts = 3 * len(slices), len(slices) * -(-total // entry["params"]["weights_per_stream"])
        _, start = _varints(body, fields)
        lengths, words_at = _varints(body, counts, start)
        lengths = np.array(lengths, np.int64)
        lengths, words = change(lengths, np.frombuffer(body[words_at:], "<u4").astype(np.int64))
        entry["_body"] = body[:start] + bytes(lengths.astype(np.uint8)) + words.astype("<u4").tobytes()
        entry["class_bytes"][0] += len(entry["_body"]) - len(body)  # stream 0 is class 0's
    return reseal(data, edit)


def _drop_last_word(lengths: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = lengths.copy()
    out[0] -= 1
    return out, np.delete(words, lengths[0] - 1)


def _add_word(lengths: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = lengths.copy()
    out[0] += 1
    return out, np.insert(words, lengths[0], 0x12345678)


def _flip_word(lengths: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = words.copy()
    out[2] ^= 1 << 7
    return lengths, out


def ruo_invalid_files(data: bytes) -> dict[str, tuple[bytes, str]]:
    """Streams of the ``ruo_two_slices`` vector cut, extended or changed, with every CRC, length,
    the bit account and the content hash recomputed: only the coder's end condition catches them."""
    def version(h: dict[str, Any]) -> None:
        h["sections"][0]["params"]["decoder_version"] = "v4-160"

    return {
        "ruo_latent_stream_missing_last_word": (_ruo_stream(data, "samples", _drop_last_word), "DecodeError"),
        "ruo_decoder_stream_extra_word": (_ruo_stream(data, "ruo.decoder", _add_word), "DecodeError"),
        "ruo_arm_stream_word_changed": (_ruo_stream(data, "ruo.arm", _flip_word), "DecodeError"),
        "ruo_latent_stream_word_changed": (_ruo_stream(data, "samples", _flip_word), "DecodeError"),
        "ruo_decoder_version_swapped": (reseal(data, version), "DecodeError"),
    }


FROZEN = {"ruo_format_1_0": "VersionError"}
"""Invalid vectors that no current writer can make, kept as they are: a format 1.0 ``ruo`` file,
its latents coded under constriction's floating-point Laplace (spec § 3.6)."""


def _base_sections(n: int = 6, k: int = 2) -> tuple[dict[str, Any], list[EncodedSection]]:
    x = _rng_images(9, n, (1, 4, 4), "uint8")
    y = np.repeat(np.arange(k), n // k)
    layout = Layout(n, k, (1, 4, 4), "uint8", DEFAULT_LIMITS.max_decoded_bytes)
    groups = [n // k] * k
    sections = list(codecs.lookup("samples", "pixels").encode(x, layout, groups))
    sections.append(codecs.lookup("labels", "grouped").encode(y, layout, groups))
    sections[-1].alignment = 64  # zero padding before the labels, for readers to check
    dataset = {"name": "vector", "num_classes": k, "class_names": [str(c) for c in range(k)], "num_samples": n,
               "sample_shape": [1, 4, 4], "sample_dtype": "uint8", "value_range": [0.0, 1.0]}
    return dataset, sections


SYNTHESIS_TOLERANCE = 1e-4
"""Largest absolute difference allowed between a reader's `ruo` samples and the recorded ones."""

_PROVENANCE = {"producer": "tools/make_vectors.py", "producer_version": ddformat.__version__,
               "parameters": {}, "source_dataset": "synthetic"}
_RECIPE = {"loss": "ce", "temperature": 1.0, "weighting": {"scheme": "uniform", "normalization": "global"}}


def _with_extra_section(path: Path, extra: EncodedSection) -> Path:
    dataset, sections = _base_sections()
    path.write_bytes(build(dataset, _PROVENANCE, _RECIPE, [*sections, extra]))
    return path


def _patch_preamble(data: bytes, **fields: int) -> bytes:
    """Change preamble fields (``major``, ``header_length``) and recompute the preamble CRC."""
    pre = bytearray(data[:PREAMBLE_SIZE])
    for name, value in fields.items():
        struct.pack_into(*{"major": ("<H", pre, 8), "header_length": ("<I", pre, 12)}[name], value)
    struct.pack_into("<I", pre, 28, zlib.crc32(bytes(pre[:28])))
    return bytes(pre) + data[PREAMBLE_SIZE:]


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1:]


def _edited_header(data: bytes, edit: Any) -> bytes:
    header, _ = split_header(data)
    edit(header)
    return store_header(data, compress_header(msgpack.packb(header, use_bin_type=True)))


def _version_1_0(data: bytes) -> bytes:
    """The file as format 1.0 laid it out: the header plain msgpack, with every section's offset,
    alignment and ``required`` flag, the bit account, and the content hash in hex, solved to a
    fixed point because the header counts itself."""
    header, _ = split_header(data)
    with ddformat.open(_Bytes(data)) as f:
        bodies = [bytes(f.container.source.read(e.offset, e.length)) for e in f.header.sections]
    header["provenance"]["content_hash"] = "sha256:" + header["provenance"]["content_hash"].hex()
    raw = b""
    while True:
        pos = PREAMBLE_SIZE + len(raw)
        for s in header["sections"]:
            s.update(alignment=s.get("alignment", 1), required=s.get("required", True), params=s.get("params", {}),
                     class_bytes=s.get("class_bytes"))
            s["offset"] = pos = align(pos, s["alignment"])
            pos += s["length"]
        placed = [SimpleNamespace(component=s["component"], length=s["length"], class_bytes=s["class_bytes"])
                  for s in header["sections"]]
        header["bits"] = bit_account(len(raw), pos, placed, header["dataset"]["num_classes"])
        settled = len(raw)
        raw = msgpack.packb(header, use_bin_type=True)
        if len(raw) == settled:
            break
    out = bytearray(pos)
    out[PREAMBLE_SIZE:PREAMBLE_SIZE + len(raw)] = raw
    for s, body in zip(header["sections"], bodies):
        out[s["offset"]:s["offset"] + len(body)] = body
    pre = struct.pack("<8sHHIQI", MAGIC, 1, 0, len(raw), pos, zlib.crc32(raw))
    out[:PREAMBLE_SIZE] = pre + struct.pack("<I", zlib.crc32(pre))
    return bytes(out)


class _Bytes:
    """A file in memory as a byte source for the reader."""

    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    def close(self) -> None:
        pass


def _zstd_declaring(size: int) -> bytes:
    """A zstd frame whose header declares ``size`` content bytes and whose one raw block holds 1."""
    return struct.pack("<IBQ", 0xFD2FB528, 0b11100000, size) + (1 | 1 << 3).to_bytes(3, "little") + b"\0"


def invalid_files(base: bytes) -> dict[str, tuple[bytes, str]]:
    with ddformat.open(_Bytes(base)) as f:
        samples, labels = f.header.sections
    assert labels.offset > samples.offset + samples.length, "base vector needs padding before labels"
    header_text = msgpack.packb(split_header(base)[0], use_bin_type=True)
    frame = compress_header(header_text)

    def unknown_required(h: dict[str, Any]) -> None:
        h["sections"].append({"kind": "vendor.secret", "codec": "x", "component": "other", "length": 0, "crc32": 0})

    def hex_hash(h: dict[str, Any]) -> None:
        h["provenance"]["content_hash"] = "sha256:" + h["provenance"]["content_hash"].hex()

    def no_classes(h: dict[str, Any]) -> None:
        del h["dataset"]["num_classes"]

    def rows_mismatch(h: dict[str, Any]) -> None:
        h["sections"][0]["params"]["frame_rows"] = [r + 1 for r in h["sections"][0]["params"]["frame_rows"]]

    return {
        "text_mode_crlf_to_lf": (base.replace(b"\r\n", b"\n", 1), "MagicError"),
        "not_a_dd_file": (b"PK\x03\x04" + bytes(60), "MagicError"),
        "truncated": (base[:-3], "TruncatedError"),
        "appended_bytes": (base + b"\0", "TruncatedError"),
        "preamble_bit_flip": (_flip(base, 13), "ChecksumError"),
        "major_version_3": (_patch_preamble(base, major=3), "VersionError"),
        "version_1_0_layout": (_version_1_0(base), "VersionError"),
        "header_length_over_limit": (_patch_preamble(base, header_length=2**31), "LimitError"),
        "header_bit_flip": (_flip(base, PREAMBLE_SIZE + 5), "ChecksumError"),
        "header_plain_msgpack": (store_header(base, header_text), "HeaderError"),
        "header_without_content_size": (store_header(base, zstandard.ZstdCompressor(
            write_content_size=False).compress(header_text)), "HeaderError"),
        "header_declares_over_limit": (store_header(base, _zstd_declaring(2**31)), "LimitError"),
        "header_then_skippable_frame": (store_header(base, frame + struct.pack("<II", 0x184D2A50, 1) + b"x"),
                                        "HeaderError"),
        "header_names_a_dictionary": (store_header(base, frame[:4] + bytes([frame[4] | 1, 7]) + frame[5:]),
                                      "HeaderError"),
        "content_hash_as_hex": (_edited_header(base, hex_hash), "HeaderError"),
        "samples_bit_flip": (_flip(base, samples.offset + 2), "ChecksumError"),
        "nonzero_padding": (_flip(base, labels.offset - 1), "LayoutError"),
        "section_longer_than_the_file": (_edited_header(
            base, lambda h: h["sections"][0].update(length=h["sections"][0]["length"] + 64)), "LayoutError"),
        "unknown_required_section": (reseal(base, unknown_required), "UnsupportedError"),
        "schema_missing_num_classes": (reseal(base, no_classes), "HeaderError"),
        "pixels_frame_rows_mismatch": (reseal(base, rows_mismatch), "DecodeError"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "spec" / "vectors")
    args = ap.parse_args()
    valid_dir, invalid_dir = args.out / "valid", args.out / "invalid"
    frozen = {name: (invalid_dir / f"{name}.dd").read_bytes() for name in FROZEN}
    for d in (valid_dir, invalid_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for name, data in frozen.items():
        (invalid_dir / f"{name}.dd").write_bytes(data)
    for name, path in valid_files(valid_dir).items():
        with ddformat.open(path) as f:
            f.verify()
            meta = {"num_classes": f.num_classes, "num_samples": f.num_samples, "size": f.size, "bpc": f.bpc,
                    "sha256": decoded_digests(f)}
            if meta["sha256"]["samples"] is None:
                meta |= float_samples(f)
        (valid_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    dataset, sections = _base_sections()
    invalid = invalid_files(build(dataset, _PROVENANCE, _RECIPE, sections))
    invalid |= ruo_invalid_files((valid_dir / "ruo_two_slices.dd").read_bytes())
    invalid |= views_invalid_files((valid_dir / "views_topk_cutmix.dd").read_bytes())
    invalid |= {name: (data, FROZEN[name]) for name, data in frozen.items()}
    for name, (data, error) in invalid.items():
        (invalid_dir / f"{name}.dd").write_bytes(data)
        (invalid_dir / f"{name}.json").write_text(json.dumps({"error": error}) + "\n")
    print(f"wrote {len(list(valid_dir.glob('*.dd')))} valid and {len(list(invalid_dir.glob('*.dd')))} invalid vectors to {args.out}")


if __name__ == "__main__":
    main()
