"""Per-view soft labels (FKD / SRe2L relabelling): section kind ``views``, codec ``topk``.

Large-scale methods train on a teacher's output for each *augmented view* of a sample rather
than one label per sample. A view is the record that rebuilds the teacher's input from the
stored sample — a random-resized-crop box, a horizontal flip and, for CutMix, a partner sample
and the pasted box — plus the teacher's probabilities on that input, kept as the ``topk`` labels
codec keeps them (``k`` largest, quantised to ``2**bits`` levels).

The file holds ``V`` *rounds*; round ``r`` has exactly one view of every sample, and a mixed
view's partner is the partner sample's view of the same round (CutMix pastes from the augmented
batch, in which every sample appears once). A round is what one epoch of FKD replays; the
recipe's ``view_schedule`` says which round each epoch uses. Storing fewer rounds than epochs
and reusing them is label pruning (LPLD).

Why a section kind of its own and not a labels codec: the per-sample ``labels`` section still
gives every sample its class, which groups samples, weighs them (spec § 4) and charges their
bytes to a class (§ 5); views add to it and keep it meaningful for the hard-label regime.
Every field is ANS-coded under stored histograms (``frames``), one word stream per class so the
bit account charges each view to its sample's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DecodeError, LimitError
from .base import EncodedSection, Layout, Section, param
from .frames import (
    ans_decode,
    ans_encode,
    check_class_bytes,
    check_decoded_size,
    int_list_param,
    int_param,
    pack_tables,
    unpack_coded,
)
from .soft_labels import MAX_BITS, expand_top_k, mean_kl, quantise_top_k

MAX_ROUNDS = 2**16
DIGIT = 256
"""Partner sample indices are coded as little-endian base-256 digits, one histogram per digit."""
MAX_SHARED_TABLE = 2**12
"""Per-rank level histograms unless ``k·(2**bits + 1)`` exceeds this; then one shared histogram."""


@dataclass
class Views:
    """``V`` rounds of one view per sample, in the file's sample order.

    * ``crops`` (V, N, 4) int: random-resized-crop box ``(top, left, height, width)`` in sample
      pixels, height and width ≥ 1, inside the sample;
    * ``flips`` (V, N) bool: the crop mirrored left-right;
    * ``partners`` (V, N) int: CutMix partner sample index, −1 for an unmixed view;
    * ``mix_boxes`` (V, N, 4) int: the box ``(top, left, height, width)`` of the output image
      (the sample's size) that shows the partner's view; zeros when unmixed;
    * ``indices``/``levels`` (V, N, k) int: the teacher probabilities as ``topk`` stores them;
    * ``bits``: levels are out of ``2**bits``; ``temperature``: the softmax temperature at
      which the stored probabilities were computed (informative: they are used as stored);
    * ``kl_to_source``: mean KL(teacher ‖ stored) in nats, when the writer knows it.
    """

    crops: np.ndarray
    flips: np.ndarray
    partners: np.ndarray
    mix_boxes: np.ndarray
    indices: np.ndarray
    levels: np.ndarray
    bits: int
    temperature: float = 1.0
    kl_to_source: float | None = None

    @property
    def rounds(self) -> int:
        return self.crops.shape[0]

    @property
    def num_samples(self) -> int:
        return self.crops.shape[1]

    @property
    def k(self) -> int:
        return self.indices.shape[2]

    def probabilities(self, num_classes: int, rounds: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """float32 (n, K) stored distributions of views ``(rounds[j], samples[j])``."""
        return expand_top_k(self.indices[rounds, samples], self.levels[rounds, samples], num_classes, self.bits)

    def take(self, order: np.ndarray) -> "Views":
        """The views of samples ``order`` (a permutation of the sample indices), partners renumbered
        to the new positions: what ``save`` needs when it groups samples by class."""
        order = np.asarray(order, dtype=np.int64)
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        partners = self.partners[:, order]
        partners = np.where(partners >= 0, position[np.maximum(partners, 0)], -1)
        return Views(self.crops[:, order], self.flips[:, order], partners, self.mix_boxes[:, order],
                     self.indices[:, order], self.levels[:, order], self.bits, self.temperature, self.kl_to_source)


def quantise_views(probs: np.ndarray, k: int, bits: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Teacher probabilities (..., K) → top-k ``indices`` and ``levels`` (..., k) and the mean
    KL(probs ‖ stored) in nats: the labels part of :class:`Views`."""
    shape = probs.shape
    p = probs.reshape(-1, shape[-1]).astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    idx, q = quantise_top_k(p, min(k, shape[-1]), bits)
    kl = mean_kl(p, expand_top_k(idx, q, shape[-1], bits))
    kk = idx.shape[1]
    return idx.reshape(*shape[:-1], kk), q.reshape(*shape[:-1], kk), kl


def _digits(num_samples: int) -> list[int]:
    """Alphabet size of each base-256 digit of a partner index below ``num_samples``."""
    top, sizes = max(num_samples - 1, 0), []
    while top >= DIGIT:
        sizes.append(DIGIT)
        top >>= 8
    return sizes + [top + 1]


def _level_tables(k: int, bits: int) -> int:
    return k if k * (2**bits + 1) <= MAX_SHARED_TABLE else 1


def _alphabets(layout: Layout, bits: int, level_tables: int) -> list[int]:
    """The histogram sizes of one group, in stream order (spec § 3.8)."""
    h, w = layout.sample_shape[-2], layout.sample_shape[-1]
    return ([h, w, h, w, 2, 2] + _digits(layout.num_samples) + [h, w, h + 1, w + 1, layout.num_classes]
            + [2**bits + 1] * level_tables)


def _check_views(views: Views, layout: Layout) -> None:
    """Encoder-side validation with messages naming the array and the first bad view."""
    v, n = views.crops.shape[:2] if views.crops.ndim == 3 else (0, 0)
    h, w = layout.sample_shape[-2], layout.sample_shape[-1]
    if views.crops.ndim != 3 or views.crops.shape[1:] != (layout.num_samples, 4):
        raise ValueError(f"crops have shape {views.crops.shape}, expected (V, {layout.num_samples}, 4)")
    if not 1 <= v <= MAX_ROUNDS:
        raise ValueError(f"{v} rounds of views; between 1 and {MAX_ROUNDS} are allowed")
    if not isinstance(views.bits, (int, np.integer)) or not 1 <= views.bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [1, {MAX_BITS}], got {views.bits!r}")
    if not (views.temperature > 0 and np.isfinite(views.temperature)):
        raise ValueError(f"temperature must be positive and finite, got {views.temperature!r}")
    for name, shape in (("flips", (v, n)), ("partners", (v, n)), ("mix_boxes", (v, n, 4))):
        if getattr(views, name).shape != shape:
            raise ValueError(f"{name} have shape {getattr(views, name).shape}, expected {shape}")
    k = views.indices.shape[2] if views.indices.ndim == 3 else 0
    if views.indices.shape != (v, n, k) or views.levels.shape != (v, n, k) or not 1 <= k <= layout.num_classes:
        raise ValueError(f"indices {views.indices.shape} and levels {views.levels.shape} must both be (V, N, k) "
                         f"with 1 <= k <= {layout.num_classes}")

    def first(bad: np.ndarray, what: str) -> None:
        if bad.any():
            r, i = np.argwhere(bad)[0][:2]
            raise ValueError(f"view (round {r}, sample {i}): {what}")

    top, left, ch, cw = np.moveaxis(views.crops.astype(np.int64), -1, 0)
    first((ch < 1) | (cw < 1) | (top < 0) | (left < 0) | (top + ch > h) | (left + cw > w),
          f"crop box is not a non-empty box inside the {h}×{w} sample")
    partners = views.partners.astype(np.int64)
    first((partners < -1) | (partners >= n), f"partner index outside [-1, {n})")
    mt, ml, mh, mw = np.moveaxis(views.mix_boxes.astype(np.int64), -1, 0)
    mixed = partners >= 0
    outside = (mh < 0) | (mw < 0) | (mt < 0) | (ml < 0) | (mt >= h) | (ml >= w) | (mt + mh > h) | (ml + mw > w)
    first(mixed & outside, f"mix box is not inside the {h}×{w} image")
    first(~mixed & (views.mix_boxes != 0).any(axis=-1), "an unmixed view has a non-zero mix box")
    idx, q = views.indices.astype(np.int64), views.levels.astype(np.int64)
    first(((idx < 0) | (idx >= layout.num_classes)).any(axis=-1), f"class index outside [0, {layout.num_classes})")
    first((np.diff(np.sort(idx, axis=-1), axis=-1) == 0).any(axis=-1), "repeats a class index")
    first((q < 0).any(axis=-1) | (q.sum(axis=-1) > 2**views.bits), f"levels are negative or exceed {2**views.bits}")


def _streams(views: Views, layout: Layout, rows: np.ndarray, level_tables: int) -> list[np.ndarray]:
    """One group's symbol streams, in table order, for the samples ``rows`` (views round-major)."""
    crops = views.crops[:, rows].reshape(-1, 4).astype(np.int64)
    partners = views.partners[:, rows].reshape(-1).astype(np.int64)
    mixed = partners >= 0
    boxes = views.mix_boxes[:, rows].reshape(-1, 4).astype(np.int64)[mixed]
    digits = [(partners[mixed] >> (8 * d)) & (DIGIT - 1) for d in range(len(_digits(layout.num_samples)))]
    levels = views.levels[:, rows].reshape(-1, views.k).astype(np.int64)
    level_streams = [levels[:, j] for j in range(views.k)] if level_tables > 1 else [levels.reshape(-1)]
    return ([crops[:, 0], crops[:, 1], crops[:, 2] - 1, crops[:, 3] - 1,
             views.flips[:, rows].reshape(-1).astype(np.int64), mixed.astype(np.int64)] + digits
            + [boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], views.indices[:, rows].reshape(-1).astype(np.int64)]
            + level_streams)


class ViewsCodec:
    """Augmentation records and top-k quantised teacher probabilities, ANS-coded per class."""

    name = "topk"

    def accepts(self, views: Any, groups: list[int] | None) -> bool:
        return isinstance(views, Views)

    def encode(self, views: Views, layout: Layout, groups: list[int] | None, level: int = 10) -> EncodedSection:
        _check_views(views, layout)
        k, bits = views.k, int(views.bits)
        level_tables = _level_tables(k, bits)
        sizes = _alphabets(layout, bits, level_tables)
        counts = [layout.num_samples] if groups is None else [int(g) for g in groups]
        ends = np.cumsum([0, *counts])
        tables, chunks = [], []
        for a, b in zip(ends[:-1], ends[1:]):
            streams = _streams(views, layout, np.arange(a, b), level_tables)
            hist = [np.bincount(s, minlength=size) for s, size in zip(streams, sizes)]
            tables += hist
            chunks.append(ans_encode(list(zip(streams, hist))))
        blob, compression = pack_tables(tables, level)
        words = [len(c) // 4 for c in chunks]
        params: dict[str, Any] = {
            "rounds": views.rounds, "k": k, "bits": bits, "level_tables": level_tables,
            "temperature": float(views.temperature), "frame_rows": counts, "chunk_words": words,
            "tables": len(blob), "table_compression": compression, "words": sum(words)}
        if views.kl_to_source is not None:
            params["kl_to_source"] = float(views.kl_to_source)
        return EncodedSection(kind="views", codec=self.name, component="labels", data=blob + b"".join(chunks),
                              params=params, class_bytes=[4 * c for c in words] if groups is not None else None)

    @staticmethod
    def decoded_bytes(section: Section, layout: Layout) -> int:
        """Bytes decoding needs at most (symbols as int64, then the :class:`Views` arrays), from
        the parameters alone: what a reader checks against its limits before decoding."""
        rounds = int_param(section, "rounds", 1, MAX_ROUNDS)
        k = int_param(section, "k", 1, layout.num_classes)
        symbols = rounds * layout.num_samples * (10 + len(_digits(layout.num_samples)) + 2 * k)
        return 8 * symbols + rounds * layout.num_samples * (37 + 8 * k)

    def decode(self, section: Section, layout: Layout) -> Views:
        if len(layout.sample_shape) < 2:
            raise DecodeError("views need samples with at least two dimensions (height, width)",
                              section=section.kind, field="dataset.sample_shape")
        rounds = int_param(section, "rounds", 1, MAX_ROUNDS)
        k = int_param(section, "k", 1, layout.num_classes)
        bits = int_param(section, "bits", 1, MAX_BITS)
        level_tables = int_param(section, "level_tables", 1, k)
        if level_tables != _level_tables(k, bits):
            raise DecodeError(f"expected {_level_tables(k, bits)} level tables for k={k}, bits={bits}",
                              section=section.kind, field="params.level_tables")
        temperature = param(section, "temperature", float)
        if not (temperature > 0 and np.isfinite(temperature)):
            raise DecodeError("temperature must be positive and finite", section=section.kind,
                              field="params.temperature")
        frame_rows = int_list_param(section, "frame_rows", (1, layout.num_classes))
        if sum(frame_rows) != layout.num_samples:
            raise DecodeError(f"groups hold {sum(frame_rows)} samples, the dataset has {layout.num_samples}",
                              section=section.kind, field="params.frame_rows")
        chunk_words = int_list_param(section, "chunk_words", (len(frame_rows),))
        check_decoded_size(section, self.decoded_bytes(section, layout), layout.max_decoded_bytes, "views")
        check_class_bytes(section, [4 * c for c in chunk_words] if len(frame_rows) == layout.num_classes else None)
        sizes = _alphabets(layout, bits, level_tables)
        groups = len(frame_rows)
        all_tables, words = unpack_coded(section, sizes * groups)
        if sum(chunk_words) * 4 != len(words):
            raise DecodeError(f"chunk words sum to {sum(chunk_words)}, the payload has {len(words) // 4}",
                              section=section.kind, field="params.chunk_words")
        n = layout.num_samples
        num_digits = len(_digits(n))
        crops = np.zeros((rounds, n, 4), np.int32)
        flips = np.zeros((rounds, n), bool)
        partners = np.full((rounds, n), -1, np.int32)
        boxes = np.zeros((rounds, n, 4), np.int32)
        indices = np.zeros((rounds, n, k), np.int32)
        levels = np.zeros((rounds, n, k), np.int32)
        start, word = 0, 0
        for g, rows in enumerate(frame_rows):
            tables = all_tables[g * len(sizes):(g + 1) * len(sizes)]
            field = f"data.words[group {g}]"
            views_g = rounds * rows
            mixed_g = int(tables[5][1])
            want = [views_g] * 6 + [mixed_g] * (num_digits + 4) + [views_g * k] \
                + [views_g * k // level_tables] * level_tables
            for t, (counts, expected) in enumerate(zip(tables, want)):
                if int(counts.sum()) != expected:
                    raise DecodeError(f"group {g} table {t} counts {int(counts.sum())} symbols, expected {expected}",
                                      section=section.kind, field="data.tables")
            chunk = words[4 * word:4 * (word + chunk_words[g])]
            word += chunk_words[g]
            s = ans_decode(section, chunk, tables, field)
            sl = (slice(None), slice(start, start + rows))
            crops[sl] = np.stack([s[0], s[1], s[2] + 1, s[3] + 1], axis=1).reshape(rounds, rows, 4)
            flips[sl] = s[4].reshape(rounds, rows).astype(bool)
            mixed = s[5].reshape(rounds, rows).astype(bool)
            partner = sum(d << (8 * j) for j, d in enumerate(s[6:6 + num_digits]))
            part, box = np.full((rounds, rows), -1, np.int64), np.zeros((rounds, rows, 4), np.int64)
            part[mixed] = partner
            box[mixed] = np.stack(s[6 + num_digits:10 + num_digits], axis=1)
            partners[sl], boxes[sl] = part, box
            indices[sl] = s[10 + num_digits].reshape(rounds, rows, k)
            lv = s[11 + num_digits:]
            levels[sl] = np.stack(lv, axis=1).reshape(rounds, rows, k)
            start += rows
        self._check_decoded(section, layout, crops, partners, boxes, indices, levels, bits)
        kl = section.params.get("kl_to_source")
        return Views(crops, flips, partners, boxes, indices, levels, bits, float(temperature),
                     float(kl) if isinstance(kl, float) else None)

    @staticmethod
    def _check_decoded(section: Section, layout: Layout, crops: np.ndarray, partners: np.ndarray,
                       boxes: np.ndarray, indices: np.ndarray, levels: np.ndarray, bits: int) -> None:
        h, w = layout.sample_shape[-2:]
        n = layout.num_samples

        def refuse(bad: np.ndarray, what: str) -> None:
            if bad.any():
                r, i = np.argwhere(bad)[0][:2]
                raise DecodeError(f"view (round {r}, sample {i}): {what}", section=section.kind, field="data.words")

        c = crops.astype(np.int64)
        refuse((c[..., 0] + c[..., 2] > h) | (c[..., 1] + c[..., 3] > w), f"crop box outside the {h}×{w} sample")
        refuse(partners >= n, f"partner index outside [0, {n})")
        b = boxes.astype(np.int64)
        refuse((b[..., 0] + b[..., 2] > h) | (b[..., 1] + b[..., 3] > w), f"mix box outside the {h}×{w} image")
        if indices.shape[2] > 1:
            refuse((np.diff(np.sort(indices, axis=-1), axis=-1) == 0).any(axis=-1), "repeats a class index")
        refuse(levels.astype(np.int64).sum(axis=-1) > 2**bits, f"levels exceed {2**bits}")


def check_expansion(section: Section, layout: Layout, limits: Any) -> None:
    """Refuse (``LimitError``) views that would decode to far more bytes than the section holds
    (``Limits.max_expansion``): a few bytes of single-symbol histograms cannot claim gigabytes."""
    decoded = ViewsCodec.decoded_bytes(section, layout)
    if not limits.check_expansion(decoded, section.length):
        raise LimitError(f"views would decode to {decoded} bytes from {section.length} bytes of payload, more than "
                         f"the expansion limit of {limits.max_expansion}× allows", section=section.kind,
                         field="params.rounds")


VIEWS = ViewsCodec()
