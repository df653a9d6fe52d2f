"""``ruo``: samples as entropy-coded integer latents plus tiny per-slice networks (paper 000).

A *slice* is a group of samples sharing one entropy network (ARM) and one decoder (upsampler +
synthesis); by default one slice per class. The file holds three sections (spec § 3.6):

* ``samples`` (codec ``ruo``, component ``samples``): the latents, cut into independent rANS
  streams of ``samples_per_stream`` samples, coded in wavefront order (:mod:`.grid`) under
  integer Laplace tables (:mod:`.laplace`) whose rows the integer ARM (:mod:`.arm`) picks;
* ``ruo.arm`` (component ``entropy_networks``) and ``ruo.decoder`` (component ``decoders``):
  per slice, the network's integer weights (step 2^-k), in streams of ``weights_per_stream``,
  under a zero-mean integer Laplace table of a σ index and a range.

Each section's payload is varints — for a network section first each slice's step exponent, σ
index and range (they are the slice's bytes, not the header's), then the streams' word counts —
then the streams' words (:mod:`ddformat.codecs.rans`). Decoding (:mod:`.coding`) advances all streams together, one
batched ARM call per wavefront step and one batched rANS pop per symbol of a stream: with numpy
(reading a file needs no torch) or with torch on any device (:meth:`RuoCodec.decode_tensor`),
bit for bit the same integers. Every number that sizes this work is checked first
(:data:`CONFIG_LIMITS`, :data:`MAX_CHANNELS`, at most :data:`LATENTS_PER_WORD` latents and
:data:`WEIGHTS_PER_WORD` network weights per 32-bit word of a stream,
:data:`MIN_LATENTS_PER_STEP`, and the reader's decoded-size limit).

Format 1.x files coded latents under constriction's floating-point Laplace instead; readers of
format 2 refuse them by their version (spec § 3.6).

Public API (``__all__``), for producers: the codec and its data classes, the geometry of the
latents (:func:`scale_shapes`, :func:`schedule`, :func:`split_scales`), the fixed-point tables
(:data:`LATENT_RANGE`, :data:`SIGMAS`, :data:`WEIGHT_LIMIT`), the decoder's tensors
(:data:`DECODER_VERSIONS`, :func:`decoder_shapes`) and the one synthesis function in torch that
producers train through (:func:`synthesize_torch`), the rate estimate :func:`estimated_bits`.
The submodules are the implementation.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ...errors import DecodeError
from .. import rans
from ..base import AuxReader, EncodedSection, Layout, Section, param
from ..frames import (
    check_class_bytes,
    check_decoded_size,
    int_list_param,
    int_param,
    section_bytes,
    varint_decode,
    varint_encode,
    varint_lengths,
)
from .arm import LATENT_RANGE, MAX_INPUTS, SIGMAS, WEIGHT_LIMIT, IntegerArm, to_device
from .coding import (
    LatentStreams,
    NetworkStreams,
    decode_latents,
    decode_weights,
    encode_latents,
    encode_weights,
    latent_parameters,
    latent_streams_of,
    latent_tables,
    stream_counts,
    symbol_bits,
    weight_chunks,
)
from .grid import (
    latents_per_sample,
    scale_shapes,
    schedule,
    split_scales,
    wavefront_steps,
)
from .laplace import latent_cdf, weight_cdf
from .synthesis import (
    CPU_ROWS,
    DECODER_VERSIONS,
    decoder_shapes,
    synthesize_numpy,
    synthesize_torch,
)

__all__ = [
    "CONFIG_LIMITS", "DECODER_VERSIONS", "FREE_STEPS", "LATENTS_PER_WORD", "LATENT_RANGE", "MAX_CHANNELS",
    "MAX_STEP", "MIN_LATENTS_PER_STEP", "NETWORK_SIGMA_LIMITS", "RUO", "RuoSamples", "RuoSlice", "SIGMAS",
    "STREAM_BITS", "TABLE_ENTRIES", "WEIGHTS_PER_WORD", "WEIGHT_LIMIT", "decoder_shapes", "estimated_bits", "scale_shapes",
    "schedule", "split_scales", "synthesize", "synthesize_tensor", "synthesize_torch",
]

CONFIG_LIMITS = {"scales": (1, 16), "context": (1, 64), "arm_width": (1, MAX_INPUTS), "arm_depth": (0, 8)}
"""Allowed range of each shared parameter: they size the schedule, the ARM (whose exact
float64 evaluation needs at most 128 inputs per layer) and the decoder."""
MAX_CHANNELS = 64
"""Image channels C: the residual convolutions hold 2·9·C² weights."""
MAX_STEP = 30
"""Largest quantisation step exponent k of a network (step 2^-k)."""
NETWORK_SIGMA_LIMITS = (-4, 60)
"""σ indices of network weight tables: σ from ½ to 2^15."""
LATENTS_PER_WORD = 2**17
"""A stream of n samples may claim at most this many latents (n·M) per 32-bit word, plus one
word's worth. No latent costs less than −log₂(1 − e^−8) ≈ 4.8·10⁻⁴ bits (σ ≥ 1/16 with μ on
the integer), i.e. ≤ 66,000 latents per word; more would decode from nothing."""
MIN_LATENTS_PER_STEP = 16
"""Beyond :data:`FREE_STEPS` wavefront steps, a sample's grid must give each step this many
latents on average: a step costs a fixed ARM and rANS call, so tall thin grids (a 1×4096×6
header on a 2 KB file: 14,341 steps of 2 latents) would be decoding time without payload."""
FREE_STEPS = 1024
WEIGHTS_PER_WORD = 2**7
"""The same bound for a network stream: a weight costs at least ~0.66 bits (σ ≥ ½), ≤ 49 a word."""
TABLE_ENTRIES = 2**22
"""Most entries of the weight tables one file's networks need (Σ 2·range + 2 over their distinct
(σ, range) pairs): a table costs memory and time in proportion to its range, not its weights."""
STREAM_BITS = 2**15
"""Default size of a stream: about this many bits, so that the ~64 bits a stream costs beyond
its symbols (its final state) stay near 0.2 % of the section. Smaller streams decode on more
parallel lanes (``samples_per_stream=1`` is the most parallel file)."""
_SYNTHESIS_PIXELS = 2**18
"""Pixels torch synthesises per chunk: bounds the D₁-wide activations on a device."""
_NUMPY_PIXELS = 2**15
"""Pixels per chunk of numpy synthesis, one chunk per core at a time (a few MB each)."""
NETWORK_FIELDS = 3
"""Varints per slice at the start of a network section: step exponent, σ index + 4, range."""
_PARALLEL_LATENTS = 2**18
"""Latents per core below which numpy decodes a group of slices on one thread."""
AUX_KINDS = ("ruo.arm", "ruo.decoder")


@dataclass
class RuoSlice:
    """One slice: integer latents (n, M) (scales concatenated, finest first, each raster order),
    integer ARM layers at step 2^-``arm_step``, integer decoder tensors at 2^-``decoder_step``
    (names and order of :func:`decoder_shapes`)."""

    latents: np.ndarray
    arm: list[tuple[np.ndarray, np.ndarray]]
    arm_step: int
    decoder: dict[str, np.ndarray]
    decoder_step: int

    def decoder_tensors(self) -> dict[str, np.ndarray]:
        """The decoder's float32 values (integer · 2^-step)."""
        return {k: (v.astype(np.float64) / 2**self.decoder_step).astype(np.float32) for k, v in self.decoder.items()}


@dataclass
class RuoSamples:
    sample_shape: tuple[int, int, int]
    scales: int
    context: int
    arm_width: int
    arm_depth: int
    decoder_version: str
    slices: list[RuoSlice]

    @property
    def num_samples(self) -> int:
        return sum(len(s.latents) for s in self.slices)

    def arm_shapes(self) -> list[tuple[int, int]]:
        sizes = [self.context] + [self.arm_width] * self.arm_depth + [2]
        return list(zip(sizes[1:], sizes[:-1]))

    def decoder_shapes(self) -> dict[str, tuple[int, ...]]:
        return decoder_shapes(self.scales, self.sample_shape[0], self.decoder_version)


def _chunks(samples: RuoSamples, pixels: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first output row, slice index, integer latents) in chunks of about ``pixels`` pixels."""
    _, h, w = samples.sample_shape
    chunk, start = max(1, pixels // (h * w)), 0
    for index, s in enumerate(samples.slices):
        for i in range(0, len(s.latents), chunk):
            yield start + i, index, s.latents[i:i + chunk]
        start += len(s.latents)


def synthesize(samples: RuoSamples) -> np.ndarray:
    """(N, C, H, W) float32 samples from integer latents and quantised decoders, with numpy;
    chunks of samples run on all cores (numpy releases the GIL in its kernels)."""
    _, h, w = samples.sample_shape
    out = np.empty((samples.num_samples, *samples.sample_shape), np.float32)
    tensors = [s.decoder_tensors() for s in samples.slices]

    def run(chunk: tuple[int, int, np.ndarray]) -> None:
        start, index, z = chunk
        out[start:start + len(z)] = synthesize_numpy(tensors[index], z, (h, w), samples.scales)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(run, _chunks(samples, _NUMPY_PIXELS)))
    return out


def synthesize_tensor(samples: RuoSamples, device: Any = "cpu") -> Any:
    """The same samples as a torch tensor synthesised on ``device``, equal to :func:`synthesize`
    within the float tolerance of spec § 7 (imports torch)."""
    import torch

    device = torch.device(device)
    _, h, w = samples.sample_shape
    out = torch.empty((samples.num_samples, *samples.sample_shape), device=device)
    rows = CPU_ROWS if device.type == "cpu" else None
    tensors = [{k: torch.from_numpy(v).to(device) for k, v in s.decoder_tensors().items()} for s in samples.slices]
    with torch.no_grad():
        for start, index, z in _chunks(samples, _SYNTHESIS_PIXELS):
            latents = split_scales(torch.as_tensor(z, device=device).float(), h, w, samples.scales)
            out[start:start + len(z)] = synthesize_torch(tensors[index], latents, (h, w), rows)
    return out


def _network_vector(s: RuoSlice, which: str) -> np.ndarray:
    if which == "arm":
        parts = [a for w, b in s.arm for a in (w, b)]
    else:
        parts = list(s.decoder.values())
    return np.concatenate([p.reshape(-1) for p in parts]).astype(np.int64)


def _network_model(values: np.ndarray) -> tuple[int, int]:
    """Range and σ index of the table a network's integer weights cost least under: the range
    is their largest magnitude, σ the quarter-octave nearest their mean magnitude (the Laplace
    maximum-likelihood scale) or a neighbour of it."""
    limit = max(int(np.abs(values).max(initial=0)), 1)
    lo, hi = NETWORK_SIGMA_LIMITS
    guess = round(4 * math.log2(max(float(np.abs(values).mean()) if values.size else 0.5, 0.5)))
    candidates = range(max(lo, guess - 2), min(hi, guess + 2) + 1)
    return limit, min(candidates, key=lambda i: float(_weight_bits(values, i, limit).sum()))


def _weight_bits(values: np.ndarray, sigma_index: int, limit: int) -> np.ndarray:
    return symbol_bits(np.zeros(values.shape, np.int64), values + limit, weight_cdf(sigma_index, limit)[None])


def _latent_symbols(samples: RuoSamples, s: RuoSlice) -> tuple[np.ndarray, np.ndarray]:
    _, h, w = samples.sample_shape
    return latent_parameters(s.latents, s.arm, s.arm_step, (h, w), samples.scales, samples.context)


def estimated_bits(samples: RuoSamples) -> dict[str, float]:
    """Ideal code lengths (bits) of latents and networks under the integer tables the codec
    codes them with; the file adds about 64 bits per stream (:data:`STREAM_BITS`), the streams'
    word-count tables and the container."""
    bits = {"samples": 0.0, "entropy_networks": 0.0, "decoders": 0.0}
    for s in samples.slices:
        bits["samples"] += float(symbol_bits(*_latent_symbols(samples, s), latent_cdf()).sum())
        for which, key in (("arm", "entropy_networks"), ("decoder", "decoders")):
            v = _network_vector(s, which)
            limit, sigma_index = _network_model(v)
            bits[key] += float(_weight_bits(v, sigma_index, limit).sum())
    return bits


def _slice_classes(sizes: Sequence[int], groups: list[int] | None, num_classes: int) -> list[int] | None:
    """The class of each slice when slices never straddle a class boundary."""
    if groups is None:
        return None
    bounds = np.cumsum([0, *groups])
    out, start = [], 0
    for n in sizes:
        c = int(np.searchsorted(bounds, start, side="right") - 1)
        if n and start + n > bounds[c + 1]:
            return None
        out.append(min(c, num_classes - 1))
        start += n
    return out


def _class_bytes(lengths: Sequence[int], classes: list[int] | None, num_classes: int) -> list[int] | None:
    if classes is None:
        return None
    out = [0] * num_classes
    for c, n in zip(classes, lengths):
        out[c] += n
    return out


def _check_ranges(values: dict[str, int], channels: int) -> None:
    """Encoder side of :data:`CONFIG_LIMITS` and :data:`MAX_CHANNELS`."""
    for name, (lo, hi) in CONFIG_LIMITS.items():
        if not lo <= values[name] <= hi:
            raise ValueError(f"{name} must be within [{lo}, {hi}], got {values[name]}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"ruo samples need 1 to {MAX_CHANNELS} channels, got {channels}")


def _too_many_steps(height: int, width: int, scales: int, context: int) -> str | None:
    """Why the wavefront schedule of this grid is refused (:data:`MIN_LATENTS_PER_STEP`), if it is."""
    steps, m = wavefront_steps(height, width, scales, context), latents_per_sample(height, width, scales)
    if steps > FREE_STEPS + m // MIN_LATENTS_PER_STEP:
        return (f"{height}×{width} grids with {scales} scales and context {context} take {steps} wavefront steps "
                f"for {m} latents, more than {FREE_STEPS} + 1 per {MIN_LATENTS_PER_STEP} latents")
    return None


def _check_integers(what: str, value: np.ndarray, limit: int) -> None:
    if not np.issubdtype(value.dtype, np.integer) or np.abs(value).max(initial=0) > limit:
        raise ValueError(f"{what} must be integers within ±{limit}")


def _stream_size(given: int | None, bits: float, count: int, largest: int, name: str) -> int:
    """``given``, or enough items per stream for about :data:`STREAM_BITS` bits."""
    if given is not None:
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            raise ValueError(f"{name} must be a positive integer, got {given!r}")
        return min(given, max(largest, 1))
    return min(max(1, math.ceil(STREAM_BITS * count / max(bits, 1.0))), max(largest, 1))


def _slice_bytes(fields: np.ndarray, lengths: np.ndarray, per_slice: Sequence[int]) -> list[int]:
    """Bytes each slice owns: its fields' varints, and the word-count varint and words of each of
    its ``per_slice[i]`` consecutive streams."""
    owned = varint_lengths(fields).sum(axis=1) if fields.size else np.zeros(len(per_slice), np.int64)
    sizes = varint_lengths(lengths) + 4 * lengths
    ends = np.cumsum([0, *per_slice])
    return [int(owned[i] + sizes[a:b].sum()) for i, (a, b) in enumerate(zip(ends[:-1], ends[1:]))]


def _payload(streams: Sequence[bytes], per_slice: Sequence[int], fields: Sequence[Sequence[int]] = ()
             ) -> tuple[bytes, list[int]]:
    """A section payload — each slice's ``fields`` (if any), then the word counts of all streams,
    as varints, then the words — and the bytes of each slice (:func:`_slice_bytes`)."""
    words = np.array([len(b) // 4 for b in streams], dtype=np.int64)
    head = np.asarray(fields, dtype=np.int64).reshape(len(per_slice), -1)
    return varint_encode(head) + varint_encode(words) + b"".join(streams), _slice_bytes(head, words, per_slice)


class _Streams:
    """A section's payload as a decoder needs it: per slice its ``fields`` integers (``head``,
    (slices, fields)), the streams' word counts, word offsets into :meth:`words` and the bytes of
    each slice."""

    def __init__(self, section: Section, per_slice: Sequence[int], fields: int = 0) -> None:
        data = section_bytes(section)
        count = fields * len(per_slice) + sum(per_slice)
        ends = np.flatnonzero(np.frombuffer(data[:5 * count], dtype=np.uint8) < 0x80)
        if len(ends) < count:
            raise DecodeError(f"the payload is too short for the {count} varints of its tables",
                              section=section.kind, field="payload")
        table = int(ends[count - 1]) + 1 if count else 0
        values = varint_decode(section, data[:table], count, "payload")
        split = fields * len(per_slice)
        self.head, self.lengths = values[:split].reshape(len(per_slice), fields), values[split:]
        if self.lengths.size and self.lengths.min() < 2:
            raise DecodeError(f"stream {int(np.argmin(self.lengths))} has fewer than 2 words (its final state)",
                              section=section.kind, field="payload")
        if table + 4 * int(self.lengths.sum()) != len(data):
            raise DecodeError(f"word counts of {4 * int(self.lengths.sum())} bytes after a {table}-byte table do not "
                              f"fill the {len(data)}-byte section", section=section.kind, field="payload")
        self.section, self.data, self.table = section, data, table
        self.starts, self.ends = rans.stream_bounds(self.lengths)
        self.slice_bytes = _slice_bytes(self.head, self.lengths, per_slice)

    def words(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype="<u4", offset=self.table).astype(np.int64)

    def check_capacity(self, items: np.ndarray, per_word: int, what: str) -> None:
        """Refuse streams claiming more items than their words can code (:data:`LATENTS_PER_WORD`)."""
        over = np.flatnonzero(items > per_word * (self.lengths + 1))
        if over.size:
            i = int(over[0])
            raise DecodeError(f"stream {i} claims {int(items[i])} {what}, more than {int(self.lengths[i])} words "
                              f"can code (at most {per_word} per 32-bit word)", section=self.section.kind,
                              field="payload")

    def refuse_failed(self, failed: np.ndarray, what: str) -> None:
        if failed.any():
            i = int(np.flatnonzero(failed)[0])
            raise DecodeError(f"{what} stream {i} is corrupt: it reads past its end, leaves words unread, or does not "
                              "end in the rANS initial state", section=self.section.kind, field="payload")


class RuoCodec:
    name = "ruo"
    aux_kinds = AUX_KINDS

    def accepts(self, samples: Any, groups: list[int] | None) -> bool:
        return isinstance(samples, RuoSamples)

    def describe(self, samples: RuoSamples) -> tuple[int, tuple[int, ...], str]:
        return samples.num_samples, tuple(samples.sample_shape), "float32"

    def take(self, samples: RuoSamples, order: np.ndarray) -> RuoSamples:
        if np.any(order != np.arange(len(order))):
            raise ValueError("ruo samples must come class-grouped, in the order of their labels")
        return samples

    def encode(self, samples: RuoSamples, layout: Layout, groups: list[int] | None, *,
               samples_per_stream: int | None = None, weights_per_stream: int | None = None) -> list[EncodedSection]:
        """The three sections. Smaller streams decode in parallel on more lanes and cost about
        64 bits each: by default each stream carries about :data:`STREAM_BITS` bits;
        ``samples_per_stream=1`` gives the most parallel file (e.g. for GPU decoding)."""
        c, h, w = samples.sample_shape
        common = {"scales": samples.scales, "context": samples.context, "arm_width": samples.arm_width,
                  "arm_depth": samples.arm_depth, "decoder_version": samples.decoder_version}
        _check_ranges(common, c)
        if reason := _too_many_steps(h, w, samples.scales, samples.context):
            raise ValueError(reason)
        shapes = samples.decoder_shapes()
        m, steps = schedule(h, w, samples.scales, samples.context)
        symbols, networks = [], {"arm": [], "decoder": []}
        for i, s in enumerate(samples.slices):
            if s.latents.ndim != 2 or s.latents.shape[1] != m:
                raise ValueError(f"slice {i}: latents must be (n, {m})")
            _check_integers(f"slice {i} latents", s.latents, LATENT_RANGE)
            if [tuple(w_.shape) for w_, _ in s.arm] != samples.arm_shapes():
                raise ValueError(f"slice {i}: ARM layer shapes do not match context, width and depth")
            if list(s.decoder) != list(shapes) or any(s.decoder[k].shape != v for k, v in shapes.items()):
                raise ValueError(f"slice {i}: decoder tensors must be {shapes}")
            symbols.append(_latent_symbols(samples, s))
            for which in networks:
                step = s.arm_step if which == "arm" else s.decoder_step
                if not 0 <= step <= MAX_STEP:
                    raise ValueError(f"slice {i}: {which} step exponent must be within [0, {MAX_STEP}]")
                v = _network_vector(s, which)
                _check_integers(f"slice {i} {which} weights", v, WEIGHT_LIMIT)
                networks[which].append((v, step, *_network_model(v)))
        sizes = [len(s.latents) for s in samples.slices]
        bits = sum(float(symbol_bits(r, col, latent_cdf()).sum()) for r, col in symbols)
        group = _stream_size(samples_per_stream, bits, sum(sizes), max(sizes, default=1), "samples_per_stream")
        streams = [encode_latents(r, col, group, steps) for r, col in symbols]
        payload, slice_bytes = _payload([b for part in streams for b in part], [len(p) for p in streams])
        classes = _slice_classes(sizes, groups, layout.num_classes)
        out = [EncodedSection("samples", self.name, "samples", payload,
                              {**common, "slices": sizes, "samples_per_stream": group},
                              class_bytes=_class_bytes(slice_bytes, classes, layout.num_classes))]
        for which, component in (("arm", "entropy_networks"), ("decoder", "decoders")):
            nets = networks[which]
            cost = sum(float(_weight_bits(v, sigma_index, limit).sum()) for v, _, limit, sigma_index in nets)
            per = _stream_size(weights_per_stream, cost, sum(len(v) for v, *_ in nets), len(nets[0][0]) if nets else 1,
                               "weights_per_stream")
            parts = [encode_weights(v, sigma_index, limit, per) for v, _, limit, sigma_index in nets]
            fields = [(step, sigma_index - NETWORK_SIGMA_LIMITS[0], limit) for _, step, limit, sigma_index in nets]
            payload, slice_bytes = _payload([b for part in parts for b in part], [len(p) for p in parts], fields)
            out.append(EncodedSection(f"{self.name}.{which}", self.name, component, payload,
                                      {"weights_per_stream": per},
                                      class_bytes=_class_bytes(slice_bytes, classes, layout.num_classes)))
        return out

    # ------------------------------------------------------------------ decoding
    def _config(self, section: Section, layout: Layout) -> tuple[RuoSamples, list[int], int]:
        """The shared parameters, slice sizes and samples per stream, after every check that
        bounds decoding work that depends on the header alone (ranges, decoding memory) — before
        anything proportional to the number of latents is built."""
        if len(layout.sample_shape) != 3:
            raise DecodeError("ruo samples must be (C, H, W) images", section=section.kind, field="sample_shape")
        c, h, w = layout.sample_shape
        if not 1 <= c <= MAX_CHANNELS:
            raise DecodeError(f"ruo samples have 1 to {MAX_CHANNELS} channels, not {c}", section=section.kind,
                              field="dataset.sample_shape")
        scales, context, width, depth = (int_param(section, name, lo, hi) for name, (lo, hi) in CONFIG_LIMITS.items())
        version = param(section, "decoder_version", str)
        if version not in DECODER_VERSIONS:
            raise DecodeError(f"unknown decoder version {version!r} (known: {', '.join(DECODER_VERSIONS)})",
                              section=section.kind, field="params.decoder_version")
        slices = param(section, "slices", list)
        sizes = int_list_param(section, "slices", (len(slices),))
        if sum(sizes) != layout.num_samples:
            raise DecodeError(f"slices hold {sum(sizes)} samples, the dataset has {layout.num_samples}",
                              section=section.kind, field="params.slices")
        group = int_param(section, "samples_per_stream", 1, max(1, max(sizes, default=1)))
        if reason := _too_many_steps(h, w, scales, context):
            raise DecodeError(reason, section=section.kind, field="dataset.sample_shape")
        m = latents_per_sample(h, w, scales)
        # float64 latents (padding to the largest slice of a group at most doubles them, plus a
        # scratch row per slice), int64 result, the wavefront schedule, the samples
        work = (layout.num_samples + len(sizes)) * 16 * (m + 1) + layout.num_samples * (8 * m + 4 * c * h * w) \
            + 8 * m * (context + 1)
        check_decoded_size(section, work, layout.max_decoded_bytes, "ruo latents, schedule and samples")
        return RuoSamples((c, h, w), scales, context, width, depth, version, []), sizes, group

    def _networks(self, section: Section, slices: int, total: int) -> tuple[_Streams, tuple[list[int], ...]]:
        """A network section's streams and, per slice, its step exponent, σ index and range
        (payload fields, checked), and the weights per stream."""
        per = int_param(section, "weights_per_stream", 1, max(total, 1))
        streams = _Streams(section, stream_counts([total] * slices, per), NETWORK_FIELDS)
        offset = -NETWORK_SIGMA_LIMITS[0]
        limits = ((0, MAX_STEP), (0, NETWORK_SIGMA_LIMITS[1] + offset), (1, WEIGHT_LIMIT))
        for j, (name, (lo, hi)) in enumerate(zip(("step", "σ index + 4", "range"), limits)):
            bad = np.flatnonzero((streams.head[:, j] < lo) | (streams.head[:, j] > hi))
            if bad.size:
                raise DecodeError(f"slice {int(bad[0])}: {name} must be within [{lo}, {hi}]", section=section.kind,
                                  field="payload")
        steps, sigmas, ranges = (streams.head[:, j].tolist() for j in range(NETWORK_FIELDS))
        return streams, (steps, [v - offset for v in sigmas], ranges, per)

    def _check_class_bytes(self, streams: Sequence[_Streams], num_classes: int) -> None:
        """``class_bytes``, when the encoder wrote them, are per-class sums of whole slices: the
        slices form one run per class, in class order, and each section charges a class the bytes
        of its run's streams (spec § 3.6). A slice belongs to the first class whose cumulative
        bytes reach the slice's end in the first section that states them (``ruo.arm``, whose
        slices are never empty, when it does); every section, that one included, must then state
        exactly its sums."""
        stated = [st for st in streams if st.section.class_bytes is not None]
        if not stated:
            return
        bounds = np.cumsum(stated[0].section.class_bytes, dtype=np.int64)
        classes = np.searchsorted(bounds, np.cumsum(stated[0].slice_bytes, dtype=np.int64), side="left")
        for st in streams:
            attributed = np.bincount(classes, weights=st.slice_bytes, minlength=num_classes).astype(np.int64)
            check_class_bytes(st.section, attributed.tolist())

    def decode(self, section: Section, layout: Layout, aux: AuxReader) -> np.ndarray:
        return synthesize(self.read(section, layout, aux))

    def decode_tensor(self, section: Section, layout: Layout, aux: AuxReader, device: Any) -> Any:
        """Samples synthesised on ``device`` with torch. On an accelerator the lockstep entropy
        decoder runs there too (the same integers as numpy); on a CPU numpy decodes them, which
        is faster than torch's small integer kernels there."""
        import torch

        device = torch.device(device)
        on_device = device.type != "cpu"
        samples = self.read(section, layout, aux, torch if on_device else np, device if on_device else None)
        return synthesize_tensor(samples, device)

    def read(self, section: Section, layout: Layout, aux: AuxReader, xp: Any = np, device: Any = None) -> RuoSamples:
        """Entropy-decode latents and networks (bit-exact), without synthesis: with numpy, or with
        torch (``xp``) on ``device`` — then the latents are int64 tensors there."""
        config, sizes, group = self._config(section, layout)
        _, h, w = config.sample_shape
        m = latents_per_sample(h, w, config.scales)
        arm_shapes = [shape for pair in config.arm_shapes() for shape in (pair, (pair[0],))]
        decoder_shapes = config.decoder_shapes()
        sections = {"arm": aux(f"{self.name}.arm"), "decoder": aux(f"{self.name}.decoder")}
        totals = {"arm": sum(math.prod(s) for s in arm_shapes), "decoder": sum(math.prod(s) for s in decoder_shapes.values())}
        net_streams, nets = {}, {}
        for k, s in sections.items():
            net_streams[k], nets[k] = self._networks(s, len(sizes), totals[k])
        tables = {(s, r) for k in nets for s, r in zip(nets[k][1], nets[k][2])}
        if sum(2 * r + 2 for _, r in tables) > TABLE_ENTRIES:
            raise DecodeError(f"the networks' (σ, range) pairs need weight tables of more than {TABLE_ENTRIES} entries",
                              section=sections["decoder"].kind, field="payload")
        latent_streams = _Streams(section, stream_counts(sizes, group))
        self._check_class_bytes([net_streams["arm"], net_streams["decoder"], latent_streams], layout.num_classes)
        layout_of = latent_streams_of(sizes, group)
        latent_streams.check_capacity(layout_of.count * m, LATENTS_PER_WORD, "latents")
        chunks = {k: [b - a for a, b in weight_chunks(totals[k], nets[k][3])] for k in sections}
        for k, st in net_streams.items():
            st.check_capacity(np.tile(chunks[k], len(sizes)), WEIGHTS_PER_WORD, "weights")
        weights = self._decode_networks(xp, device, net_streams, nets, chunks, len(sizes))
        decoder_parts = {k: [] for k in sections}
        for k, shapes in (("arm", arm_shapes), ("decoder", list(decoder_shapes.values()))):
            for flat in weights[k]:
                ends = np.cumsum([0] + [math.prod(s) for s in shapes])
                decoder_parts[k].append([flat[a:b].reshape(s) for a, b, s in zip(ends[:-1], ends[1:], shapes)])
        latents = self._decode_latents(xp, device, latent_streams, config, sizes, group, layout_of, decoder_parts["arm"],
                                       nets["arm"][0])
        for i, n in enumerate(sizes):
            arm = list(zip(decoder_parts["arm"][i][0::2], decoder_parts["arm"][i][1::2]))
            config.slices.append(RuoSlice(latents[i], arm, nets["arm"][0][i],
                                          dict(zip(decoder_shapes, decoder_parts["decoder"][i])), nets["decoder"][0][i]))
        return config

    def _decode_networks(self, xp: Any, device: Any, streams: dict[str, _Streams], nets: dict[str, tuple],
                         chunks: dict[str, list[int]], count: int) -> dict[str, list[np.ndarray]]:
        """Both sections' network streams in one lockstep: per network its flat integer weights
        (numpy: small, and synthesis takes its decoder tensors from the host)."""
        order = list(streams)
        words = np.concatenate([streams[k].words() for k in order])
        offsets = np.cumsum([0] + [int(streams[k].lengths.sum()) for k in order])
        starts = np.concatenate([streams[k].starts + offsets[i] for i, k in enumerate(order)])
        ends = np.concatenate([streams[k].ends + offsets[i] for i, k in enumerate(order)])
        table = NetworkStreams(
            network=np.concatenate([np.repeat(np.arange(count) + i * count, len(chunks[k])) for i, k in enumerate(order)]),
            first=np.concatenate([np.tile(np.cumsum([0, *chunks[k][:-1]]), count) for k in order]),
            count=np.concatenate([np.tile(chunks[k], count) for k in order]),
            sigma=np.concatenate([np.repeat(nets[k][1], len(chunks[k])) for k in order]),
            limit=np.concatenate([np.repeat(nets[k][2], len(chunks[k])) for k in order]))
        put = to_device(xp, device)
        values, failed = decode_weights(xp, put(words), put(starts), put(ends), table, 2 * count)
        failed = failed if xp is np else failed.cpu().numpy()
        values = [v if xp is np else v.cpu().numpy() for v in values]
        split = np.cumsum([0] + [len(chunks[k]) * count for k in order])
        for i, k in enumerate(order):
            streams[k].refuse_failed(failed[split[i]:split[i + 1]], "network")
        return {k: values[i * count:(i + 1) * count] for i, k in enumerate(order)}

    def _decode_latents(self, xp: Any, device: Any, streams: _Streams, config: RuoSamples, sizes: list[int],
                        group: int, layout_of: LatentStreams, arms: list[list[np.ndarray]], steps: list[int]
                        ) -> list[Any]:
        """Lockstep decode of every latent stream, in groups of slices of about one size (one
        batched ARM per group and step; numpy runs groups on all cores) → each slice's int64
        latents (n, M)."""
        _, h, w = config.sample_shape
        m = latents_per_sample(h, w, config.scales)
        words = streams.words()
        slice_of = layout_of.slice
        workers = (os.cpu_count() or 1) if xp is np else 1
        put = to_device(xp, device)
        words_x = put(words)

        def run(slices: list[int]) -> tuple[list[int], Any, np.ndarray, np.ndarray]:
            index = {s: i for i, s in enumerate(slices)}
            mine = np.flatnonzero(np.isin(slice_of, slices))
            layers = [(np.stack([arms[s][2 * j] for s in slices]), np.stack([arms[s][2 * j + 1] for s in slices]))
                      for j in range(len(arms[0]) // 2)]
            arm = IntegerArm(layers, [steps[s] for s in slices], xp, device)
            table = LatentStreams(np.array([index[s] for s in slice_of[mine]], np.int64), layout_of.first[mine],
                                  layout_of.count[mine])
            z, failed = decode_latents(xp, words_x, put(streams.starts[mine]), put(streams.ends[mine]), table, arm,
                                       [sizes[s] for s in slices], group, (h, w), config.scales, config.context)
            return slices, z, mine, failed if xp is np else failed.cpu().numpy()

        latent_tables()  # built before the threads, which share it
        groups = _lockstep_groups(sizes, m, workers)
        failed = np.zeros(len(slice_of), bool)
        out: list[Any] = [put(np.zeros((0, m), np.int64))] * len(sizes)
        with ThreadPoolExecutor(max(1, min(workers, len(groups)))) as pool:
            for slices, z, mine, bad in pool.map(run, groups):
                failed[mine] = bad
                for i, s in enumerate(slices):
                    out[s] = z[i, :sizes[s], :m].astype(np.int64) if xp is np else z[i, :sizes[s], :m].long()
        streams.refuse_failed(failed, "latent")
        return out


def _lockstep_groups(sizes: Sequence[int], latents_per_sample: int, workers: int) -> list[list[int]]:
    """Slices decoded together, one batched ARM call per step for each group. A group pads its
    slices to its largest, so it takes a slice only while padding at most doubles its latents:
    memory stays within twice the real latents however unequal the slices (no 19 GiB for
    100,000 + 1,023 × 1 samples), and slices of about one size share their per-step overhead.
    A group with work for several cores (:data:`_PARALLEL_LATENTS`) is split across them."""
    groups: list[list[int]] = []
    total = 0
    for s in sorted(range(len(sizes)), key=lambda s: -sizes[s]):
        if not sizes[s]:
            continue
        if not groups or (len(groups[-1]) + 1) * sizes[groups[-1][0]] > 2 * (total + sizes[s]):
            groups.append([])
            total = 0
        groups[-1].append(s)
        total += sizes[s]
    out = []
    for group in groups:
        parts = min(workers, len(group), max(1, sum(sizes[s] for s in group) * latents_per_sample // _PARALLEL_LATENTS))
        out += [group[g::parts] for g in range(parts)]
    return out


RUO = RuoCodec()
