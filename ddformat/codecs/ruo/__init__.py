"""``ruo``: samples as entropy-coded integer latents plus tiny per-slice networks (paper 000).

A *slice* is a group of samples sharing one entropy network (ARM) and one decoder (upsampler +
synthesis); by default one slice per class. The file holds three sections:

* ``samples`` (codec ``ruo``, component ``samples``): per slice, one ANS stream of its latents,
  coded in wavefront order (:mod:`.grid`) under ``QuantizedLaplace(-64, 64)`` with μ and σ from
  the integer ARM (:mod:`.arm`);
* ``ruo.arm`` (component ``entropy_networks``) and ``ruo.decoder`` (component ``decoders``): per
  slice, the network's integer weights (step 2^-k) as one ANS stream under a zero-mean discrete
  Laplace whose scale and range are stored in the params.

Decoding needs numpy and constriction only. It runs groups of slices of about one size in
lockstep: per wavefront step, one batched integer-ARM call over a group's slices, samples and
positions and one batched ``constriction`` decode per slice; then it synthesises every slice
(:func:`synthesize`, numpy; :func:`synthesize_tensor` on a torch device). Every number that
sizes this work is checked first (:data:`CONFIG_LIMITS`, :data:`MAX_CHANNELS`, at most
:data:`LATENTS_PER_WORD` latents and :data:`WEIGHTS_PER_WORD` network weights per 32-bit word
of their stream, :data:`MIN_LATENTS_PER_STEP`, and the reader's decoded-size limit).

Public API (``__all__``), for producers: the codec and its data classes, the geometry of the
latents (:func:`scale_shapes`, :func:`schedule`, :func:`split_scales`), the fixed-point tables
(:data:`LATENT_RANGE`, :data:`SIGMAS`, :data:`WEIGHT_LIMIT`), the decoder's tensors
(:data:`DECODER_VERSIONS`, :func:`decoder_shapes`) and the one synthesis function in torch that
producers train through (:func:`synthesize_torch`), the rate estimate :func:`estimated_bits`.
The submodules are the implementation.
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Sequence

import constriction
import numpy as np

from ...errors import DecodeError
from ..base import AuxReader, EncodedSection, Layout, Section, param
from ..frames import (
    check_class_bytes,
    check_decoded_size,
    int_list_param,
    int_param,
    section_bytes,
)
from .arm import (
    LATENT_RANGE,
    MAX_INPUTS,
    SIGMAS,
    WEIGHT_LIMIT,
    IntegerArm,
    integer_arm,
    laplace_parameters,
)
from .grid import (
    latents_per_sample,
    scale_shapes,
    schedule,
    split_scales,
    wavefront_steps,
)
from .synthesis import (
    CPU_ROWS,
    DECODER_VERSIONS,
    decoder_shapes,
    synthesize_numpy,
    synthesize_torch,
)

__all__ = [
    "CONFIG_LIMITS", "DECODER_VERSIONS", "FREE_STEPS", "LATENTS_PER_WORD", "LATENT_RANGE", "MAX_CHANNELS",
    "MAX_STEP", "MIN_LATENTS_PER_STEP", "RUO", "RuoSamples", "RuoSlice", "SIGMAS", "WEIGHTS_PER_WORD",
    "WEIGHT_LIMIT", "decoder_shapes", "estimated_bits", "scale_shapes", "schedule", "split_scales", "synthesize",
    "synthesize_tensor", "synthesize_torch",
]

_LATENTS = constriction.stream.model.QuantizedLaplace(-LATENT_RANGE, LATENT_RANGE)

CONFIG_LIMITS = {"scales": (1, 16), "context": (1, 64), "arm_width": (1, MAX_INPUTS), "arm_depth": (0, 8)}
"""Allowed range of each shared parameter: they size the schedule, the ARM (whose exact
float64 evaluation needs at most 128 inputs per layer) and the decoder."""
MAX_CHANNELS = 64
"""Image channels C: the residual convolutions hold 2·9·C² weights."""
MAX_STEP = 30
"""Largest quantisation step exponent k of a network (step 2^-k)."""
LATENTS_PER_WORD = 2**17
"""A slice of n samples may claim at most this many latents (n·M) per 32-bit word of its stream,
plus one word's worth. No latent costs less than −log₂(1 − e^−8) ≈ 4.8·10⁻⁴ bits (σ ≥ 1/16 with
μ on the integer), i.e. ≤ 66,000 latents per word; more would decode from nothing."""
MIN_LATENTS_PER_STEP = 16
"""Beyond :data:`FREE_STEPS` wavefront steps, a sample's grid must give each step this many
latents on average: a step costs a fixed ARM and ANS call, so tall thin grids (a 1×4096×6
header on a 2 KB file: 14,341 steps of 2 latents) would be decoding time without payload."""
FREE_STEPS = 1024
WEIGHTS_PER_WORD = 2**7
"""The same bound for a network stream: a weight costs at least ~0.66 bits (scale ≥ ½), ≤ 49 a word."""
_PARALLEL_LATENTS = 2**18
"""Latents per core below which a lockstep group is decoded on one thread."""
_SYNTHESIS_PIXELS = 2**18
"""Pixels torch synthesises per chunk: bounds the D₁-wide activations on a device."""
_NUMPY_PIXELS = 2**15
"""Pixels per chunk of numpy synthesis, one chunk per core at a time (a few MB each)."""


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
            latents = split_scales(torch.from_numpy(z).to(device, torch.float32), h, w, samples.scales)
            out[start:start + len(z)] = synthesize_torch(tensors[index], latents, (h, w), rows)
    return out


def _contexts(latents: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    padded = np.concatenate([latents, np.zeros((len(latents), 1), latents.dtype)], axis=1)
    return padded[:, neighbours]  # index -1 picks the zero column


def _latent_parameters(samples: RuoSamples, s: RuoSlice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symbols, μ and σ of a slice, flat in coding order: step by step, and within a step the
    (samples × positions) block row-major — the order the lockstep decoder reads them in. All
    contexts are known at encode time, so the ARM runs once over everything."""
    _, h, w = samples.sample_shape
    _, steps = schedule(h, w, samples.scales, samples.context)
    order = np.concatenate([st.positions for st in steps])
    neighbours = np.concatenate([st.neighbours for st in steps])
    mu, sigma = integer_arm(_contexts(s.latents, neighbours), s.arm, s.arm_step)
    mean, scale = laplace_parameters(mu, sigma)
    bounds = np.cumsum([0] + [len(st.positions) for st in steps])
    symbols = s.latents[:, order]

    def step_major(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[:, i:j].reshape(-1) for i, j in zip(bounds[:-1], bounds[1:])])

    return step_major(symbols), step_major(mean), step_major(scale)


def _ans_words(symbols: np.ndarray, family: Any, *params: np.ndarray) -> bytes:
    coder = constriction.stream.stack.AnsCoder()
    if symbols.size:
        coder.encode_reverse(symbols.reshape(-1).astype(np.int32), family,
                             *(p.reshape(-1).astype(np.float64) for p in params))
    return coder.get_compressed().astype("<u4").tobytes()


def _laplace_bits(symbols: np.ndarray, mean: np.ndarray, scale: np.ndarray, lo: int, hi: int) -> float:
    """Ideal code length −Σ log₂ P of symbols under discretised Laplaces truncated to [lo, hi]."""
    def cdf(x: np.ndarray) -> np.ndarray:
        t = (x - mean) / scale
        return np.where(t < 0, 0.5 * np.exp(np.minimum(t, 0)), 1 - 0.5 * np.exp(-np.maximum(t, 0)))

    mass = cdf(symbols + 0.5) - cdf(symbols - 0.5)
    total = cdf(np.full_like(mean, hi + 0.5)) - cdf(np.full_like(mean, lo - 0.5))
    return float(-np.log2(np.maximum(mass / total, 2.0**-24)).sum())


def _network_vector(s: RuoSlice, which: str) -> np.ndarray:
    if which == "arm":
        parts = [a for w, b in s.arm for a in (w, b)]
    else:
        parts = list(s.decoder.values())
    return np.concatenate([p.reshape(-1) for p in parts]).astype(np.int64)


def _network_model(values: np.ndarray) -> tuple[int, float]:
    """Range and Laplace scale (std/√2, at least ½) for a vector of integer weights."""
    rng = max(int(np.abs(values).max(initial=0)), 1)
    return rng, max(float(values.std()) / math.sqrt(2), 0.5) if values.size else 0.5


def estimated_bits(samples: RuoSamples) -> dict[str, float]:
    """Ideal code lengths (bits) of latents and networks under the models the codec uses; the
    file adds ANS overhead (about one 32-bit word per stream) and the container."""
    bits = {"samples": 0.0, "entropy_networks": 0.0, "decoders": 0.0}
    for s in samples.slices:
        sym, mean, scale = _latent_parameters(samples, s)
        bits["samples"] += _laplace_bits(sym.astype(np.float64), mean, scale, -LATENT_RANGE, LATENT_RANGE)
        for which, key in (("arm", "entropy_networks"), ("decoder", "decoders")):
            v = _network_vector(s, which)
            rng, b = _network_model(v)
            bits[key] += _laplace_bits(v.astype(np.float64), np.zeros(v.shape), np.full(v.shape, b), -rng, rng)
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


class _SliceStream(NamedTuple):
    """What decoding one slice's latents needs: its position, ANS words, size and integer ARM."""

    index: int
    frame: memoryview
    size: int
    arm: list[tuple[np.ndarray, np.ndarray]]
    step_exp: int


def _lockstep_groups(streams: list[_SliceStream], latents_per_sample: int, workers: int) -> list[list[_SliceStream]]:
    """Slices decoded in lockstep, one batched ARM call per step for each group. A group pads its
    slices to its largest, so it takes a slice only while padding at most doubles its latents:
    memory stays within twice the real latents however unequal the slices (no 19 GiB for
    100,000 + 1,023 × 1 samples), and slices of about one size share their per-step overhead.
    A group with work for several cores (:data:`_PARALLEL_LATENTS`) is split across them: one
    part's ARM (BLAS, GIL released) overlaps another's ANS decoding; small groups stay whole,
    as threads would only contend for the GIL."""
    groups: list[list[_SliceStream]] = []
    total = 0
    for st in sorted(streams, key=lambda st: -st.size):
        if not groups or (len(groups[-1]) + 1) * groups[-1][0].size > 2 * (total + st.size):
            groups.append([])
            total = 0
        groups[-1].append(st)
        total += st.size
    out = []
    for group in groups:
        parts = min(workers, len(group), max(1, sum(st.size for st in group) * latents_per_sample // _PARALLEL_LATENTS))
        out += [group[g::parts] for g in range(parts)]
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


class RuoCodec:
    name = "ruo"
    aux_kinds = ("ruo.arm", "ruo.decoder")

    def accepts(self, samples: Any, groups: list[int] | None) -> bool:
        return isinstance(samples, RuoSamples)

    def describe(self, samples: RuoSamples) -> tuple[int, tuple[int, ...], str]:
        return samples.num_samples, tuple(samples.sample_shape), "float32"

    def take(self, samples: RuoSamples, order: np.ndarray) -> RuoSamples:
        if np.any(order != np.arange(len(order))):
            raise ValueError("ruo samples must come class-grouped, in the order of their labels")
        return samples

    def encode(self, samples: RuoSamples, layout: Layout, groups: list[int] | None,
               **options: Any) -> list[EncodedSection]:
        if options:
            raise ValueError(f"the ruo codec takes no options, got {sorted(options)}")
        c, h, w = samples.sample_shape
        common = {"scales": samples.scales, "context": samples.context, "arm_width": samples.arm_width,
                  "arm_depth": samples.arm_depth, "decoder_version": samples.decoder_version}
        _check_ranges(common, c)
        if reason := _too_many_steps(h, w, samples.scales, samples.context):
            raise ValueError(reason)
        shapes = samples.decoder_shapes()
        m = latents_per_sample(h, w, samples.scales)
        streams: dict[str, list[bytes]] = {"samples": [], "arm": [], "decoder": []}
        net_params: dict[str, list[dict[str, Any]]] = {"arm": [], "decoder": []}
        for i, s in enumerate(samples.slices):
            if s.latents.ndim != 2 or s.latents.shape[1] != m:
                raise ValueError(f"slice {i}: latents must be (n, {m})")
            _check_integers(f"slice {i} latents", s.latents, LATENT_RANGE)
            if [tuple(w_.shape) for w_, _ in s.arm] != samples.arm_shapes():
                raise ValueError(f"slice {i}: ARM layer shapes do not match context, width and depth")
            if list(s.decoder) != list(shapes) or any(s.decoder[k].shape != v for k, v in shapes.items()):
                raise ValueError(f"slice {i}: decoder tensors must be {shapes}")
            symbols, mean, scale = _latent_parameters(samples, s)
            streams["samples"].append(_ans_words(symbols, _LATENTS, mean, scale))
            for which in ("arm", "decoder"):
                step = s.arm_step if which == "arm" else s.decoder_step
                if not 0 <= step <= MAX_STEP:
                    raise ValueError(f"slice {i}: {which} step exponent must be within [0, {MAX_STEP}]")
                v = _network_vector(s, which)
                _check_integers(f"slice {i} {which} weights", v, WEIGHT_LIMIT)
                rng, b = _network_model(v)
                family = constriction.stream.model.QuantizedLaplace(-rng, rng)
                streams[which].append(_ans_words(v, family, np.zeros(v.shape), np.full(v.shape, b)))
                net_params[which].append({"step": step, "range": rng, "scale": b})
        sizes = [len(s.latents) for s in samples.slices]
        classes = _slice_classes(sizes, groups, layout.num_classes)
        common["slices"] = sizes
        lengths = {which: [len(b) for b in parts] for which, parts in streams.items()}
        out = [EncodedSection("samples", self.name, "samples", b"".join(streams["samples"]),
                              {**common, "frames": lengths["samples"]},
                              class_bytes=_class_bytes(lengths["samples"], classes, layout.num_classes))]
        for which, component in (("arm", "entropy_networks"), ("decoder", "decoders")):
            out.append(EncodedSection(f"ruo.{which}", self.name, component, b"".join(streams[which]),
                                      {"frames": lengths[which], "networks": net_params[which]},
                                      class_bytes=_class_bytes(lengths[which], classes, layout.num_classes)))
        return out

    # ------------------------------------------------------------------ decoding
    def _config(self, section: Section, layout: Layout) -> tuple[RuoSamples, list[int]]:
        """The shared parameters and slice sizes, after every check that bounds decoding work:
        ranges, latents per stream word, and the memory decoding will take — all before
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
            raise DecodeError(f"unknown decoder version {version!r}", section=section.kind,
                              field="params.decoder_version")
        slices = param(section, "slices", list)
        sizes = int_list_param(section, "slices", (len(slices),))
        if sum(sizes) != layout.num_samples:
            raise DecodeError(f"slices hold {sum(sizes)} samples, the dataset has {layout.num_samples}",
                              section=section.kind, field="params.slices")
        if reason := _too_many_steps(h, w, scales, context):
            raise DecodeError(reason, section=section.kind, field="dataset.sample_shape")
        m = latents_per_sample(h, w, scales)
        for i, (n, length) in enumerate(zip(sizes, int_list_param(section, "frames", (len(sizes),)))):
            if n * m > LATENTS_PER_WORD * (length // 4 + 1):
                raise DecodeError(f"slice {i} claims {n}×{m} latents, more than a stream of {length} bytes can "
                                  f"code (at most {LATENTS_PER_WORD} per 32-bit word)", section=section.kind,
                                  field=f"params.frames[{i}]")
        # lockstep float64 latents (padding at most doubles them), int64 result, schedule
        # (positions and C neighbours), samples
        work = layout.num_samples * (16 * (m + 1) + 8 * m + 4 * c * h * w) + 8 * m * (context + 1)
        check_decoded_size(section, work, layout.max_decoded_bytes, "ruo latents, schedule and samples")
        return RuoSamples((c, h, w), scales, context, width, depth, version, []), sizes

    def _check_class_bytes(self, sections: Sequence[Section], count: int, num_classes: int) -> None:
        """``class_bytes``, when the encoder wrote them, are per-class sums of whole streams: the
        slices form one run per class, in class order, and each section charges a class the
        streams of its run (spec § 3.6). A slice belongs to the first class whose cumulative
        bytes reach the slice's end in the first section that states them (``ruo.arm``, whose
        streams are never empty, when it does); every section, that one included, must then
        state exactly its sums."""
        lengths = [int_list_param(s, "frames", (count,)) for s in sections]
        stated = [i for i, s in enumerate(sections) if s.class_bytes is not None]
        if not stated:
            return
        bounds = np.cumsum(sections[stated[0]].class_bytes, dtype=np.int64)
        classes = np.searchsorted(bounds, np.cumsum(lengths[stated[0]], dtype=np.int64), side="left")
        for s, frames in zip(sections, lengths):
            check_class_bytes(s, np.bincount(classes, weights=frames, minlength=num_classes).astype(np.int64).tolist())

    def _frames(self, section: Section, count: int) -> list[memoryview]:
        data = section_bytes(section)
        lengths = int_list_param(section, "frames", (count,))
        if sum(lengths) != len(data) or any(n % 4 for n in lengths):
            raise DecodeError("frame lengths must be whole 32-bit words filling the section",
                              section=section.kind, field="params.frames")
        ends = np.cumsum([0, *lengths])
        return [data[a:b] for a, b in zip(ends[:-1], ends[1:])]

    def _networks(self, section: Section, shapes: list[tuple[int, ...]], count: int) -> list[tuple[int, list[np.ndarray]]]:
        frames = self._frames(section, count)
        nets = param(section, "networks", list)
        if len(nets) != count:
            raise DecodeError(f"{len(nets)} networks for {count} slices", section=section.kind, field="params.networks")
        total = sum(math.prod(s) for s in shapes)
        out = []
        for i, (frame, net) in enumerate(zip(frames, nets)):
            field = f"params.networks[{i}]"
            if not isinstance(net, dict):
                raise DecodeError("expected a map", section=section.kind, field=field)
            step, rng, scale = net.get("step"), net.get("range"), net.get("scale")
            if not (isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP
                    and isinstance(rng, int) and not isinstance(rng, bool) and 1 <= rng <= WEIGHT_LIMIT
                    and isinstance(scale, float) and 0.5 <= scale <= WEIGHT_LIMIT):
                raise DecodeError(f"needs step in [0, {MAX_STEP}], range in [1, 2^15] and scale in [0.5, 2^15]",
                                  section=section.kind, field=field)
            if total > WEIGHTS_PER_WORD * (len(frame) // 4 + 1):
                raise DecodeError(f"{total} weights cannot be coded in {len(frame)} bytes (at most "
                                  f"{WEIGHTS_PER_WORD} per 32-bit word)", section=section.kind,
                                  field=f"params.frames[{i}]")
            values = self._ans_decode(section, frame, constriction.stream.model.QuantizedLaplace(-rng, rng),
                                      np.zeros(total), np.full(total, scale), field)
            parts, start = [], 0
            for s in shapes:
                parts.append(values[start:start + math.prod(s)].reshape(s))
                start += math.prod(s)
            out.append((step, parts))
        return out

    def _ans_decode(self, section: Section, frame: memoryview, family: Any, mean: np.ndarray,
                    scale: np.ndarray, field: str) -> np.ndarray:
        words = np.frombuffer(frame, dtype="<u4").astype(np.uint32)
        with self._ans_errors(section, field):
            coder = constriction.stream.stack.AnsCoder(words)
            values = np.asarray(coder.decode(family, mean, scale), dtype=np.int64) if mean.size else np.zeros(0, np.int64)
        if not coder.is_empty():
            raise DecodeError("ANS words left over after the last symbol", section=section.kind, field=field)
        return values

    def decode(self, section: Section, layout: Layout, aux: AuxReader) -> np.ndarray:
        return synthesize(self.read(section, layout, aux))

    def decode_tensor(self, section: Section, layout: Layout, aux: AuxReader, device: Any) -> Any:
        """Samples synthesised straight on ``device`` with torch (entropy decoding stays on the CPU)."""
        return synthesize_tensor(self.read(section, layout, aux), device)

    def read(self, section: Section, layout: Layout, aux: AuxReader) -> RuoSamples:
        """Entropy-decode latents and networks (bit-exact), without synthesis."""
        config, sizes = self._config(section, layout)
        arm_section, decoder_section = aux("ruo.arm"), aux("ruo.decoder")
        self._check_class_bytes([arm_section, decoder_section, section], len(sizes), layout.num_classes)
        arm_shapes = [shape for pair in config.arm_shapes() for shape in (pair, (pair[0],))]
        decoder_shapes = config.decoder_shapes()
        arms = self._networks(arm_section, arm_shapes, len(sizes))
        decoders = self._networks(decoder_section, list(decoder_shapes.values()), len(sizes))
        frames = self._frames(section, len(sizes))
        streams = [_SliceStream(i, frame, n, list(zip(parts[0::2], parts[1::2])), step)
                   for i, (frame, n, (step, parts)) in enumerate(zip(frames, sizes, arms))]
        _, h, w = config.sample_shape
        groups = _lockstep_groups(streams, latents_per_sample(h, w, config.scales), os.cpu_count() or 1)
        latents: dict[int, np.ndarray] = {}
        with ThreadPoolExecutor(max(1, len(groups))) as pool:
            for part in pool.map(lambda group: self._decode_latents(section, config, group), groups):
                latents |= part
        for st, (dec_step, dec_parts) in zip(streams, decoders):
            decoder = dict(zip(decoder_shapes, dec_parts))
            config.slices.append(RuoSlice(latents[st.index], st.arm, st.step_exp, decoder, dec_step))
        return config

    def _decode_latents(self, section: Section, config: RuoSamples,
                        streams: list[_SliceStream]) -> dict[int, np.ndarray]:
        """Lockstep decode of a group of slices (:func:`_lockstep_groups`): per wavefront step,
        one batched integer-ARM call over every slice, sample and position, then one batched ANS
        decode per slice's stream."""
        _, h, w = config.sample_shape
        m, steps = schedule(h, w, config.scales, config.context)
        n = max(st.size for st in streams)
        # float64 holds these small integers exactly and is what the ARM computes in; the last
        # column is the zero that stands for neighbours outside the grid
        latents = np.zeros((len(streams), n, m + 1))
        arm = IntegerArm([(np.stack([st.arm[j][0] for st in streams]), np.stack([st.arm[j][1] for st in streams]))
                          for j in range(len(streams[0].arm))], [st.step_exp for st in streams])
        coders = []
        for st in streams:
            words = np.frombuffer(st.frame, dtype="<u4").astype(np.uint32)
            with self._ans_errors(section, f"params.frames[{st.index}]"):
                coders.append(constriction.stream.stack.AnsCoder(words))
        for step in steps if n else ():
            mean, scale = laplace_parameters(*arm(latents[:, :, step.neighbours]))
            for i, (st, coder) in enumerate(zip(streams, coders)):
                if st.size:
                    with self._ans_errors(section, f"params.frames[{st.index}]"):
                        symbols = coder.decode(_LATENTS, mean[i, :st.size].reshape(-1), scale[i, :st.size].reshape(-1))
                    latents[i][:st.size, step.positions] = np.reshape(symbols, (st.size, -1))
        for st, coder in zip(streams, coders):
            if not coder.is_empty():
                raise DecodeError("ANS words left over after the last latent", section=section.kind,
                                  field=f"params.frames[{st.index}]")
        return {st.index: latents[i, :st.size, :m].astype(np.int64) for i, st in enumerate(streams)}

    @staticmethod
    @contextlib.contextmanager
    def _ans_errors(section: Section, field: str) -> Iterator[None]:
        try:
            yield
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise DecodeError(f"ANS decoding failed: {exc}", section=section.kind, field=field) from None


RUO = RuoCodec()
