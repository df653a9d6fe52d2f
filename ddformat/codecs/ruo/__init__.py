"""``ruo``: samples as entropy-coded integer latents plus tiny per-slice networks (paper 000).

A *slice* is a group of samples sharing one entropy network (ARM) and one decoder (upsampler +
synthesis); by default one slice per class. The file holds three sections:

* ``samples`` (codec ``ruo``, component ``samples``): per slice, one ANS stream of its latents,
  coded in wavefront order (:mod:`.grid`) under ``QuantizedLaplace(-64, 64)`` with μ and σ from
  the integer ARM (:mod:`.arm`);
* ``ruo.arm`` (component ``entropy_networks``) and ``ruo.decoder`` (component ``decoders``): per
  slice, the network's integer weights (step 2^-k) as one ANS stream under a zero-mean discrete
  Laplace whose scale and range are stored in the params.

Decoding runs the slices in lockstep, one group of slices per core: per wavefront step, one
batched ARM call over a group's slices, samples and positions and one batched ``constriction``
decode per slice; then it synthesises every slice on the device.
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
import torch

from ...errors import DecodeError
from ..base import AuxReader, EncodedSection, Layout, Section, param
from ..frames import check_decoded_size, int_param, int_list_param, section_bytes
from .arm import (
    LATENT_RANGE,
    WEIGHT_LIMIT,
    integer_arm,
    integer_arm_numpy,
    laplace_parameters,
)
from .grid import schedule, split_scales
from .synthesis import DECODER_VERSIONS, Decoder

__all__ = ["RUO", "RuoSamples", "RuoSlice", "estimated_bits", "quantize_decoder", "synthesize"]

_LATENTS = constriction.stream.model.QuantizedLaplace(-LATENT_RANGE, LATENT_RANGE)


@dataclass
class RuoSlice:
    """One slice: integer latents (n, M) (scales concatenated, finest first, each raster order),
    integer ARM layers at step 2^-``arm_step``, integer decoder tensors at 2^-``decoder_step``."""

    latents: np.ndarray
    arm: list[tuple[np.ndarray, np.ndarray]]
    arm_step: int
    decoder: dict[str, np.ndarray]
    decoder_step: int


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
        return {k: tuple(v.shape) for k, v in self.new_decoder().state_dict().items()}

    def new_decoder(self) -> Decoder:
        return Decoder(self.scales, self.sample_shape[0], self.decoder_version)


def quantize_decoder(decoder: Decoder, step_exp: int) -> dict[str, np.ndarray]:
    """Integer tensors of ``decoder``'s parameters at step 2^-``step_exp``."""
    out = {}
    for name, value in decoder.state_dict().items():
        if not torch.isfinite(value).all():
            raise ValueError(f"decoder parameter {name} is not all finite")
        q = torch.round(value.detach().double() * 2**step_exp).long().numpy()
        if np.abs(q).max(initial=0) > WEIGHT_LIMIT:
            raise ValueError(f"decoder parameter {name} exceeds ±2^15 at step 2^-{step_exp}")
        out[name] = q
    return out


def _float_decoder(samples: RuoSamples, s: RuoSlice, device: torch.device) -> Decoder:
    decoder = samples.new_decoder()
    decoder.load_state_dict({k: torch.from_numpy(v.astype(np.float64) / 2**s.decoder_step).float()
                             for k, v in s.decoder.items()})
    return decoder.to(device).eval()


@torch.no_grad()
def synthesize(samples: RuoSamples, device: str | torch.device = "cpu", chunk_pixels: int = 2**18) -> torch.Tensor:
    """(N, C, H, W) float32 samples from integer latents and quantised decoders, synthesised in
    chunks of about ``chunk_pixels`` pixels (bounding the D₁-wide activations on a GPU); on a
    CPU the 1×1 layers take 2,048 pixels at a time, which keeps them in cache."""
    device = torch.device(device)
    _, h, w = samples.sample_shape
    out = torch.empty((samples.num_samples, *samples.sample_shape), device=device)
    chunk = max(1, chunk_pixels // (h * w))
    rows = 2048 if device.type == "cpu" else None
    start = 0
    for s in samples.slices:
        decoder = _float_decoder(samples, s, device)
        z = torch.from_numpy(s.latents).to(device, torch.float32)
        for i in range(0, len(z), chunk):
            part = z[i:i + chunk]
            out[start + i:start + i + len(part)] = decoder(split_scales(part, h, w, samples.scales), (h, w), rows)
        start += len(z)
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
    mu, sigma = integer_arm_numpy(_contexts(s.latents, neighbours), s.arm, s.arm_step)
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
        m, _ = schedule(h, w, samples.scales, samples.context)
        if samples.decoder_version not in DECODER_VERSIONS:
            raise ValueError(f"unknown decoder version {samples.decoder_version!r}")
        streams: dict[str, list[bytes]] = {"samples": [], "arm": [], "decoder": []}
        net_params: dict[str, list[dict[str, Any]]] = {"arm": [], "decoder": []}
        for s in samples.slices:
            if s.latents.ndim != 2 or s.latents.shape[1] != m or np.abs(s.latents).max(initial=0) > LATENT_RANGE:
                raise ValueError(f"slice latents must be (n, {m}) integers within ±{LATENT_RANGE}")
            if [tuple(w_.shape) for w_, _ in s.arm] != samples.arm_shapes():
                raise ValueError("ARM layer shapes do not match context, width and depth")
            symbols, mean, scale = _latent_parameters(samples, s)
            streams["samples"].append(_ans_words(symbols, _LATENTS, mean, scale))
            for which in ("arm", "decoder"):
                v = _network_vector(s, which)
                rng, b = _network_model(v)
                family = constriction.stream.model.QuantizedLaplace(-rng, rng)
                streams[which].append(_ans_words(v, family, np.zeros(v.shape), np.full(v.shape, b)))
                step = s.arm_step if which == "arm" else s.decoder_step
                net_params[which].append({"step": step, "range": rng, "scale": b})
        sizes = [len(s.latents) for s in samples.slices]
        classes = _slice_classes(sizes, groups, layout.num_classes)
        common = {"scales": samples.scales, "context": samples.context, "arm_width": samples.arm_width,
                  "arm_depth": samples.arm_depth, "decoder_version": samples.decoder_version, "slices": sizes}
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
        if len(layout.sample_shape) != 3:
            raise DecodeError("ruo samples must be (C, H, W) images", section=section.kind, field="sample_shape")
        c, h, w = layout.sample_shape
        scales = int_param(section, "scales", 1, 16)
        context = int_param(section, "context", 1, 64)
        width = int_param(section, "arm_width", 1, 128)
        depth = int_param(section, "arm_depth", 0, 8)
        version = param(section, "decoder_version", str)
        if version not in DECODER_VERSIONS:
            raise DecodeError(f"unknown decoder version {version!r}", section=section.kind,
                              field="params.decoder_version")
        slices = param(section, "slices", list)
        sizes = int_list_param(section, "slices", (len(slices),))
        if sum(sizes) != layout.num_samples:
            raise DecodeError(f"slices hold {sum(sizes)} samples, the dataset has {layout.num_samples}",
                              section=section.kind, field="params.slices")
        m, _ = schedule(h, w, scales, context)
        check_decoded_size(section, layout.num_samples * (m * 8 + c * h * w * 4), layout.max_decoded_bytes,
                           "ruo latents and samples")
        return RuoSamples((c, h, w), scales, context, width, depth, version, []), sizes

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
            if not (isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= 30
                    and isinstance(rng, int) and not isinstance(rng, bool) and 1 <= rng <= WEIGHT_LIMIT
                    and isinstance(scale, float) and 0.5 <= scale <= WEIGHT_LIMIT):
                raise DecodeError("needs step in [0, 30], range in [1, 2^15] and scale in [0.5, 2^15]",
                                  section=section.kind, field=field)
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
        return synthesize(self.read(section, layout, aux), "cpu").numpy()

    def decode_tensor(self, section: Section, layout: Layout, aux: AuxReader, device: Any) -> torch.Tensor:
        """Samples synthesised straight on ``device`` (entropy decoding stays on the CPU)."""
        return synthesize(self.read(section, layout, aux), device)

    def read(self, section: Section, layout: Layout, aux: AuxReader) -> RuoSamples:
        """Entropy-decode latents and networks (bit-exact), without synthesis."""
        config, sizes = self._config(section, layout)
        arm_section, decoder_section = aux("ruo.arm"), aux("ruo.decoder")
        arm_shapes = [shape for pair in config.arm_shapes() for shape in (pair, (pair[0],))]
        decoder_shapes = config.decoder_shapes()
        arms = self._networks(arm_section, arm_shapes, len(sizes))
        decoders = self._networks(decoder_section, list(decoder_shapes.values()), len(sizes))
        frames = self._frames(section, len(sizes))
        streams = [_SliceStream(i, frame, n, list(zip(parts[0::2], parts[1::2])), step)
                   for i, (frame, n, (step, parts)) in enumerate(zip(frames, sizes, arms))]
        workers = min(len(streams), os.cpu_count() or 1)
        groups = [streams[g::workers] for g in range(workers)]
        latents: dict[int, np.ndarray] = {}
        with ThreadPoolExecutor(max(workers, 1)) as pool:
            for part in pool.map(lambda group: self._decode_latents(section, config, group), groups):
                latents |= part
        for st, (dec_step, dec_parts) in zip(streams, decoders):
            decoder = dict(zip(decoder_shapes, dec_parts))
            config.slices.append(RuoSlice(latents[st.index], st.arm, st.step_exp, decoder, dec_step))
        return config

    def _decode_latents(self, section: Section, config: RuoSamples,
                        streams: list[_SliceStream]) -> dict[int, np.ndarray]:
        """Lockstep decode of a group of slices: per wavefront step, one batched integer-ARM call
        over every slice, sample and position, then one batched ANS decode per slice's stream.
        :meth:`read` runs one group per core: the ARM's matrix kernels release the GIL, so one
        group's ARM overlaps another's ANS decoding (constriction holds the GIL)."""
        _, h, w = config.sample_shape
        m, steps = schedule(h, w, config.scales, config.context)
        # float64 holds these small integers exactly and is what the ARM computes in; the last
        # column is the zero that stands for neighbours outside the grid
        latents = np.zeros((len(streams), max((st.size for st in streams), default=0), m + 1))
        layers = [(torch.from_numpy(np.stack([st.arm[j][0] for st in streams]).astype(np.float64)),
                   torch.from_numpy(np.stack([st.arm[j][1] for st in streams]).astype(np.float64)))
                  for j in range(len(streams[0].arm) if streams else 0)]
        coders = []
        for st in streams:
            words = np.frombuffer(st.frame, dtype="<u4").astype(np.uint32)
            with self._ans_errors(section, f"params.frames[{st.index}]"):
                coders.append(constriction.stream.stack.AnsCoder(words))
        for step in steps if latents.size else ():
            mu, sigma = integer_arm(torch.from_numpy(latents[:, :, step.neighbours]), layers,
                                    [st.step_exp for st in streams])
            mean, scale = laplace_parameters(mu.numpy(), sigma.numpy())
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
