"""The ``ruo`` codec: bit-exact latents, an integer entropy model and coder every decoder agrees
on (numpy, torch on any device, and an independent reference written from the spec), numpy and
torch synthesis that agree, decoding without torch, corrupt streams refused, and decoding work
bounded before it starts."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ddformat
from ddformat import FormatError
from ddformat.codecs import rans
from ddformat.codecs.ruo import (
    LATENTS_PER_WORD,
    MAX_CHANNELS,
    RUO,
    RuoSamples,
    RuoSlice,
    decoder_shapes,
    estimated_bits,
    split_scales,
    synthesize,
    synthesize_tensor,
    synthesize_torch,
)
from ddformat.codecs.ruo.arm import (
    SIGMA_INDEX_MAX,
    SIGMA_INDEX_MIN,
    integer_arm,
    integer_arm_numpy,
)
from ddformat.codecs.ruo.grid import (
    context_pattern,
    latents_per_sample,
    scale_shapes,
    schedule,
    wavefront_slope,
    wavefront_steps,
)
from ddformat.codecs.ruo import laplace
from ddformat.codecs.ruo.laplace import LATENT_TABLE_SHA256, latent_cdf, table_digest
from ddformat.limits import Limits
from ddformat.torch import samples_tensor
from tests.codecs import ruo_reference
from tests.support import reseal

REPO = Path(__file__).resolve().parents[2]
VECTOR = REPO / "spec" / "vectors" / "valid" / "ruo_two_slices.dd"


def random_networks(template: RuoSamples, rng: np.random.Generator, arm_std: float = 77.0,
                    decoder_std: float = 300.0) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    """Integer ARM layers (for step 2^-8) and decoder tensors (for step 2^-10) of plausible size."""
    arm = [(np.round(rng.normal(0, arm_std, (o, i))).astype(np.int64), rng.integers(-256, 257, o))
           for o, i in template.arm_shapes()]
    decoder = {k: np.round(rng.normal(0, decoder_std, shape)).astype(np.int64)
               for k, shape in template.decoder_shapes().items()}
    return arm, decoder


def random_samples(per_slice: list[int], shape=(1, 12, 10), scales=4, context=8, width=8, depth=2,
                   version="v4-40", seed=0, spread=2.0) -> RuoSamples:
    rng = np.random.default_rng(seed)
    template = RuoSamples(shape, scales, context, width, depth, version, [])
    m = latents_per_sample(shape[1], shape[2], scales)
    slices = []
    for n in per_slice:
        arm, decoder = random_networks(template, rng)
        latents = np.clip(np.round(rng.laplace(0, spread, size=(n, m))), -64, 64).astype(np.int64)
        slices.append(RuoSlice(latents, arm, 8, decoder, 10))
    return RuoSamples(shape, scales, context, width, depth, version, slices)


def _read(path) -> RuoSamples:
    with ddformat.open(path) as f:
        c = f.container
        return RUO.read(c.section("samples"), f.layout, c.section)


def test_latents_and_networks_round_trip_bit_exact(tmp_path):
    samples = random_samples([3, 4, 2])
    path = ddformat.save(tmp_path / "r.dd", samples, np.repeat(np.arange(3), [3, 4, 2]))
    back = _read(path)
    for a, b in zip(samples.slices, back.slices):
        assert np.array_equal(a.latents, b.latents)
        assert all(np.array_equal(x, y) for pa, pb in zip(a.arm, b.arm) for x, y in zip(pa, pb))
        assert list(a.decoder) == list(b.decoder)
        assert all(np.array_equal(a.decoder[k], b.decoder[k]) for k in a.decoder)
        assert (a.arm_step, a.decoder_step) == (b.arm_step, b.decoder_step)
    with ddformat.open(path) as f:
        f.verify()
        assert np.array_equal(f.samples(), synthesize(samples))


def test_bit_account_splits_latents_entropy_networks_and_decoders_per_class(tmp_path):
    samples = random_samples([2, 2])
    path = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1, 1]))
    with ddformat.open(path) as f:
        comps = f.bits["components"]
        assert {"samples", "entropy_networks", "decoders"} <= set(comps)
        ideal = estimated_bits(samples)
        for key in ideal:  # ANS costs at most a few words per stream over the ideal length
            assert ideal[key] <= comps[key] <= ideal[key] + 2 * 64 + 0.01 * ideal[key]
        assert sum(f.bits["per_class"]) == 8 * path.stat().st_size


def test_float64_batched_arm_equals_the_int64_reference_on_every_index():
    """Weights up to the ±2^15 limit, steps 2^0 … 2^-15, two networks per batched call."""
    rng = np.random.default_rng(3)
    for depth, width, steps in ((0, 4, (6, 0)), (2, 16, (8, 3)), (3, 32, (12, 15))):
        template = RuoSamples((1, 4, 4), 1, 24, width, depth, "v4-40", [])
        nets = [[(np.clip(np.round(rng.normal(0, 2.0**k / i**0.5, (o, i))), -2**15, 2**15).astype(np.int64),
                  np.clip(np.round(rng.normal(0, 2.0**k, o)), -2**15, 2**15).astype(np.int64))
                 for o, i in template.arm_shapes()] for k in steps]
        context = np.clip(np.round(rng.laplace(0, 4, size=(len(steps), 5000, 24))), -64, 64).astype(np.int64)
        batched = [(np.stack([net[j][0] for net in nets]), np.stack([net[j][1] for net in nets]))
                   for j in range(depth + 1)]
        mu_b, sigma_b = integer_arm(context, batched, list(steps))
        for i, (net, step) in enumerate(zip(nets, steps)):
            mu_ref, sigma_ref = integer_arm_numpy(context[i], net, step)
            mu, sigma = integer_arm(context[i], net, step)
            assert np.array_equal(mu, mu_ref) and np.array_equal(sigma, sigma_ref)
            assert np.array_equal(mu_b[i], mu_ref) and np.array_equal(sigma_b[i], sigma_ref)
            assert sigma_ref.min() >= SIGMA_INDEX_MIN and sigma_ref.max() <= SIGMA_INDEX_MAX
            assert len(np.unique(mu_ref)) > 10 and (depth == 0 or len(np.unique(sigma_ref)) > 1)


def _spec_order(h: int, w: int, scales: int, context: int) -> list[tuple[list[int], list[list[int]]]]:
    """Spec § 3.6's coding order, written out position by position."""
    pattern = context_pattern(context)
    a = wavefront_slope(context)
    shapes = scale_shapes(h, w, scales)
    offsets = np.cumsum([0] + [sh * sw for sh, sw in shapes])
    out = []
    for level in reversed(range(scales)):
        sh, sw = shapes[level]
        for t in range((a + 1) * sh + sw):
            cells = [(y, x) for y in range(sh) for x in range(sw) if x + a * y == t]
            if cells:
                out.append(([offsets[level] + y * sw + x for y, x in cells],
                            [[offsets[level] + (y + dy) * sw + x + dx if 0 <= y + dy < sh and 0 <= x + dx < sw
                              else -1 for dy, dx in pattern] for y, x in cells]))
    return out


def test_wavefront_schedule_is_the_spec_order_and_decodes_each_latent_after_its_neighbours():
    for h, w, scales, context in ((28, 28, 5, 8), (7, 13, 3, 24), (9, 1, 2, 3), (1, 9, 3, 64), (13, 2, 2, 16)):
        m, steps = schedule(h, w, scales, context)
        assert m == latents_per_sample(h, w, scales) and len(steps) == wavefront_steps(h, w, scales, context)
        expected = _spec_order(h, w, scales, context)
        assert [(step.positions.tolist(), step.neighbours.tolist()) for step in steps] == expected
        done: set[int] = set()
        for step in steps:
            assert all(n in done for n in step.neighbours.reshape(-1) if n >= 0)
            done.update(step.positions.tolist())
        assert len(done) == m
    assert context_pattern(4) == ((-1, 0), (0, -1), (-1, -1), (-1, 1))


def test_any_corrupted_byte_of_a_ruo_section_is_caught_before_decoding(tmp_path):
    samples = random_samples([2, 1], shape=(1, 6, 6), scales=3)
    path = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1]))
    data = path.read_bytes()
    with ddformat.open(path) as f:
        regions = [(e.offset, e.length) for e in f.header.sections if e.codec == RUO.name]
    assert len(regions) == 3
    bad = tmp_path / "bad.dd"
    for offset, length in regions:
        for i in range(offset, offset + length):
            bad.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
            with pytest.raises(ddformat.errors.ChecksumError):
                with ddformat.open(bad) as f:
                    f.samples()


def _refusal(path: Path, limits: Limits = Limits()) -> FormatError:
    with pytest.raises(FormatError) as info:
        with ddformat.open(path, limits=limits) as f:
            f.samples()
    return info.value


def test_inconsistent_ruo_params_raise_format_errors(tmp_path):
    samples = random_samples([2, 2], shape=(1, 6, 6), scales=3)
    base = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1, 1])).read_bytes()
    edits = {
        "slices": lambda h: h["sections"][0]["params"].update(slices=[3, 1]),
        "version": lambda h: h["sections"][0]["params"].update(decoder_version="v9"),
        "width": lambda h: h["sections"][0]["params"].update(arm_width=129),
        "group": lambda h: h["sections"][0]["params"].update(samples_per_stream=0),
        "group type": lambda h: h["sections"][0]["params"].update(samples_per_stream=1.0),
        "weights per stream": lambda h: h["sections"][2]["params"].update(weights_per_stream=0),
        "weights per stream type": lambda h: h["sections"][1]["params"].update(weights_per_stream="all"),
    }
    for name, edit in edits.items():
        (tmp_path / "e.dd").write_bytes(reseal(base, edit))
        error = _refusal(tmp_path / "e.dd")
        assert isinstance(error, ddformat.errors.DecodeError) and error.field.startswith(("params", "payload")), (name, error)


def test_class_bytes_must_be_the_streams_of_each_class_in_every_section(tmp_path):
    samples = random_samples([2, 1, 2], shape=(1, 6, 6), scales=3)
    base = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1, 2, 2])).read_bytes()

    def edit(index, change):
        return lambda h: h["sections"][index].update(class_bytes=change(h["sections"][index]["class_bytes"]))

    edits = {
        "swapped": edit(0, lambda b: [b[1], b[0], b[2]]),
        "stale": edit(2, lambda b: [b[0] + 4, b[1] - 4, b[2]]),
        "merged": edit(1, lambda b: [b[0] + b[1], 0, b[2]]),
        "dropped": edit(2, lambda b: None),
    }
    for name, change in edits.items():
        (tmp_path / "e.dd").write_bytes(reseal(base, change))
        error = _refusal(tmp_path / "e.dd")
        assert isinstance(error, ddformat.errors.DecodeError) and error.field == "class_bytes", (name, error)
    with ddformat.open(tmp_path / "r.dd") as f:
        assert all(sum(e.class_bytes) == e.length and 0 not in e.class_bytes for e in f.header.sections[:3])
        f.verify()


CRAFTED = """
import sys, time
import ddformat
from ddformat.limits import Limits
limits = Limits(max_expansion={expansion})
start = time.perf_counter()
try:
    with ddformat.open({path!r}, limits=limits) as f:
        f.samples()
    print("decoded")
except ddformat.FormatError as exc:
    print(f"{{time.perf_counter() - start:.3f}} {{type(exc).__name__}}: {{exc}}")
"""


@pytest.mark.parametrize("expansion", [Limits().max_expansion, 2**40], ids=["default-limits", "expansion-raised"])
def test_a_2kb_file_claiming_2048x2048_samples_is_refused_within_a_second(tmp_path, expansion):
    """The reader's expansion limit refuses it at open; with that limit raised, the codec itself
    refuses latents its stream cannot hold, before building the schedule."""

    def huge(h):
        h["dataset"]["sample_shape"] = [1, 2048, 2048]
        h["dataset"]["normalization"] = None

    path = tmp_path / "huge.dd"
    path.write_bytes(reseal(VECTOR.read_bytes(), huge))
    assert path.stat().st_size < 2200
    done = subprocess.run([sys.executable, "-c", CRAFTED.format(path=str(path), expansion=expansion)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    seconds, message = done.stdout.strip().split(" ", 1)
    assert float(seconds) < 1.0, message
    assert message.startswith("LimitError" if expansion == Limits().max_expansion else "DecodeError"), message
    if expansion != Limits().max_expansion:
        assert "'payload'" in message and "stream 0 claims" in message and f"{LATENTS_PER_WORD}" in message


def test_channel_counts_the_decoder_stream_cannot_hold_are_refused_before_decoding(tmp_path):
    """4,095 channels once reached the entropy coder's allocator (which aborted the process); the
    channel limit refuses it, and any count within the limit must still fit the decoder streams."""
    raised = Limits(max_expansion=2**40)
    base = VECTOR.read_bytes()
    for channels, field in ((4095, "dataset.sample_shape"), (MAX_CHANNELS, "payload")):
        def wide(h, channels=channels):
            h["dataset"]["sample_shape"] = [channels, 6, 6]
            h["dataset"]["normalization"] = None

        (tmp_path / "wide.dd").write_bytes(reseal(base, wide))
        error = _refusal(tmp_path / "wide.dd", raised)
        assert isinstance(error, ddformat.errors.DecodeError) and error.field == field, error


def test_tall_thin_grids_whose_decoding_would_be_per_step_overhead_are_refused(tmp_path):
    """1×4096×6 on the 2 KB vector: 14,341 wavefront steps of 2 latents took 3.9 s to fail."""
    raised = Limits(max_expansion=2**40)
    for shape in ([1, 4096, 6], [1, 65536, 1]):
        def thin(h, shape=shape):
            h["dataset"]["sample_shape"] = shape

        (tmp_path / "thin.dd").write_bytes(reseal(VECTOR.read_bytes(), thin))
        start = time.perf_counter()
        error = _refusal(tmp_path / "thin.dd", raised)
        assert time.perf_counter() - start < 0.5
        assert isinstance(error, ddformat.errors.DecodeError) and error.field == "dataset.sample_shape", error
    thin_samples = RuoSamples((1, 4096, 6), 3, 4, 3, 1, "v4-40", [])
    with pytest.raises(ValueError, match="wavefront steps"):
        ddformat.save(tmp_path / "never.dd", thin_samples, np.zeros(0, np.int64), num_classes=1)


def test_slices_of_very_unequal_sizes_decode_in_memory_proportional_to_their_latents(tmp_path):
    """One slice of 4,000 samples and 200 of one sample: padding every slice to the largest
    would hold 201 × 4,000 samples' latents (and their contexts) at once."""
    big, small = 4000, 200
    samples = random_samples([big] + [1] * small, shape=(1, 4, 4), scales=2, context=4, width=4, depth=1, seed=5)
    labels = np.zeros(big + small, dtype=np.int64)
    path = ddformat.save(tmp_path / "unequal.dd", samples, labels)
    latent_bytes = 8 * samples.num_samples * latents_per_sample(4, 4, 2)
    with ddformat.open(path) as f:
        c = f.container
        tracemalloc.start()
        try:
            back = RUO.read(c.section("samples"), f.layout, c.section)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert all(np.array_equal(a.latents, b.latents) for a, b in zip(samples.slices, back.slices))
    assert peak < 12 * latent_bytes + 2**21, f"peak {peak} bytes for {latent_bytes} bytes of latents"


def test_the_encoder_refuses_what_the_decoder_would_refuse(tmp_path):
    layout_labels = np.array([0, 0])
    good = random_samples([2], shape=(1, 6, 6), scales=3)
    s = good.slices[0]
    reordered = RuoSlice(s.latents, s.arm, s.arm_step, dict(reversed(list(s.decoder.items()))), s.decoder_step)
    cases = {
        "decoder tensors must be": RuoSamples(good.sample_shape, 3, 8, 8, 2, "v4-40", [reordered]),
        "arm_width must be within": RuoSamples(good.sample_shape, 3, 8, 200, 2, "v4-40", [s]),
        "within ±32768": RuoSamples(good.sample_shape, 3, 8, 8, 2, "v4-40",
                                    [RuoSlice(s.latents, [(w * 2**12, b) for w, b in s.arm], 8, s.decoder, 10)]),
        "step exponent": RuoSamples(good.sample_shape, 3, 8, 8, 2, "v4-40",
                                    [RuoSlice(s.latents, s.arm, 31, s.decoder, 10)]),
    }
    for message, samples in cases.items():
        with pytest.raises(ValueError, match=message):
            ddformat.save(tmp_path / "never.dd", samples, layout_labels)
        assert not (tmp_path / "never.dd").exists()


def test_numpy_and_torch_synthesis_agree_within_the_vector_tolerance():
    tolerance = json.loads(VECTOR.with_suffix(".json").read_text())["tolerance"]
    for version, shape, scales in (("v4-160", (3, 20, 18), 4), ("v5-240", (2, 9, 16), 5)):
        samples = random_samples([3, 2], shape=shape, scales=scales, version=version, seed=1)
        numpy_values = synthesize(samples)
        blocked = synthesize_tensor(samples, "cpu").numpy()
        s = samples.slices[0]
        h, w = shape[1:]
        params = {k: torch.from_numpy(v) for k, v in s.decoder_tensors().items()}
        latents = split_scales(torch.from_numpy(s.latents).float(), h, w, scales)
        unblocked = synthesize_torch(params, latents, (h, w)).numpy()
        assert np.abs(numpy_values).max() > 1  # the comparison below is not between near-zeros
        np.testing.assert_allclose(numpy_values, blocked, rtol=0, atol=tolerance)
        np.testing.assert_allclose(blocked[:len(s.latents)], unblocked, rtol=0, atol=tolerance)


def test_decoder_shapes_follow_the_spec_table():
    shapes = decoder_shapes(6, 3, "v5-240")
    assert list(shapes) == ["upsampler.kernel",
                            "synthesis.pointwise.0.weight", "synthesis.pointwise.0.bias",
                            "synthesis.pointwise.1.weight", "synthesis.pointwise.1.bias",
                            "synthesis.pointwise.2.weight", "synthesis.pointwise.2.bias",
                            "synthesis.residual.0.weight", "synthesis.residual.0.bias",
                            "synthesis.residual.1.weight", "synthesis.residual.1.bias"]
    assert [shapes[f"synthesis.pointwise.{j}.weight"] for j in range(3)] == [(240, 6, 1, 1), (40, 240, 1, 1),
                                                                           (3, 40, 1, 1)]
    assert shapes["synthesis.residual.1.weight"] == (3, 3, 3, 3)


BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked for this test")

sys.meta_path.insert(0, _NoTorch())
"""


def test_a_ruo_file_decodes_to_its_recorded_values_where_torch_cannot_be_imported():
    code = BLOCK_TORCH + f"""
import hashlib
import json
import numpy as np
import ddformat
from ddformat.codecs.ruo import RUO

expected = json.load(open({str(VECTOR.with_suffix('.json'))!r}))
with ddformat.open({str(VECTOR)!r}) as f:
    x = f.samples()
    slices = RUO.read(f.container.section("samples"), f.layout, f.container.section).slices
latents = np.concatenate([s.latents for s in slices]).astype("<i8")
assert hashlib.sha256(latents.tobytes()).hexdigest() == expected["sha256"]["latents"]
assert x.dtype == np.float32 and x.shape == (3, 1, 6, 6)
error = np.abs(x - np.array(expected["samples_values"])).max()
assert error <= expected["tolerance"], error
assert "torch" not in sys.modules
print("ok", error)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_decoding_matches_cpu_bit_for_bit_in_latents(tmp_path):
    samples = random_samples([3, 3], shape=(3, 16, 16))
    path = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 0, 1, 1, 1]),
                         codec_options={"samples": {"samples_per_stream": 1}})
    with ddformat.open(path) as f:
        cpu, gpu = f.samples(), samples_tensor(f, "cuda")
        c = f.container
        on_gpu = RUO.read(c.section("samples"), f.layout, c.section, torch, torch.device("cuda"))
    assert gpu.is_cuda and all(s.latents.is_cuda for s in on_gpu.slices)
    for a, b in zip(samples.slices, on_gpu.slices):
        assert np.array_equal(a.latents, b.latents.cpu().numpy())
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, rtol=0, atol=1e-4)


def test_the_latent_table_is_the_specs_integer_table():
    """The table every decoder codes with: its SHA-256 is in the spec, and the reference
    computes the same rows from the spec's procedure in Python integers."""
    cdf = latent_cdf()
    assert table_digest(cdf) == LATENT_TABLE_SHA256
    for sigma_index, fraction in ((-16, 0), (-16, 9), (0, 8), (13, 3), (27, 15)):
        row = (sigma_index + 16) * 16 + fraction
        reference = ruo_reference.table(sigma_index, fraction, tuple(range(-128, 129)))
        assert cdf[row].tolist() == list(reference), (sigma_index, fraction)


def test_the_table_procedures_recomputed_give_the_specs_published_values():
    """Recomputed now, not read from the module's import-time values and caches: the 80 ratios
    G_i equal the list printed in spec § 3.6 (and its SHA-256), the latent table hashes to the
    spec's digest, and weight tables equal the reference's rows from the spec's procedure."""
    text = (Path(__file__).parents[2] / "spec" / "format.md").read_text(encoding="utf-8")
    block = text.split("G_−16 … G_63", 1)[1]
    digest = re.search(r"`([0-9a-f]{64})`", block).group(1)
    printed = [int(v) for v in block.split("```")[1].split()]
    ratios = laplace._ratios()
    assert ratios.tolist() == printed and len(printed) == 80
    assert hashlib.sha256(ratios.astype("<u8").tobytes()).hexdigest() == digest
    assert table_digest(laplace.latent_cdf.__wrapped__()) == LATENT_TABLE_SHA256
    for sigma_index, limit in ((-16, 1), (0, 5), (7, 40), (27, 127), (63, 3)):
        reference = ruo_reference.table(sigma_index, 0, tuple(range(-limit, limit + 1)))
        assert laplace.weight_cdf.__wrapped__(sigma_index, limit).tolist() == list(reference), (sigma_index, limit)


def _decode_everywhere(path: Path) -> list[list[np.ndarray]]:
    """Latents of every slice from the numpy decoder, the torch decoder on the CPU and the
    reference decoder written from the spec; numpy's two searches of a table row (whole-table
    ``searchsorted`` for few streams, per-row bisection for many) must agree too."""
    with ddformat.open(path) as f:
        c = f.container
        numpy_read = RUO.read(c.section("samples"), f.layout, c.section)
        with mock.patch.object(rans, "BISECT_STREAMS", 0):
            bisected = RUO.read(c.section("samples"), f.layout, c.section)
        torch_read = RUO.read(c.section("samples"), f.layout, c.section, torch, torch.device("cpu"))
        sections = {e.kind: c.section(e.kind) for e in f.header.sections}
    samples, arm, decoder = sections["samples"], sections["ruo.arm"], sections["ruo.decoder"]
    p = samples.params
    template = RuoSamples(f.layout.sample_shape, p["scales"], p["context"], p["arm_width"], p["arm_depth"],
                          p["decoder_version"], [])
    arm_shapes = [shape for pair in template.arm_shapes() for shape in (pair, (pair[0],))]
    slices = len(p["slices"])
    arm_weights, arm_steps = ruo_reference.weights(bytes(arm.data), sum(int(np.prod(s)) for s in arm_shapes),
                                                   arm.params["weights_per_stream"], slices)
    decoder_total = sum(int(np.prod(s)) for s in template.decoder_shapes().values())
    decoder_weights, _ = ruo_reference.weights(bytes(decoder.data), decoder_total, decoder.params["weights_per_stream"],
                                               slices)
    arms = []
    for flat in arm_weights:
        ends = np.cumsum([0] + [int(np.prod(s)) for s in arm_shapes])
        parts = [np.array(flat[a:b]).reshape(s) for a, b, s in zip(ends[:-1], ends[1:], arm_shapes)]
        arms.append(list(zip(parts[0::2], parts[1::2])))
    reference = ruo_reference.latents(bytes(samples.data), p["slices"], p["samples_per_stream"],
                                      f.layout.sample_shape[1:], p["scales"], p["context"], arms, arm_steps)
    for s, b in zip(numpy_read.slices, bisected.slices):
        assert np.array_equal(s.latents, b.latents)
        assert all(np.array_equal(s.decoder[k], b.decoder[k]) for k in s.decoder)
    for s, flat_arm, flat_decoder in zip(numpy_read.slices, arm_weights, decoder_weights):
        assert np.concatenate([a.reshape(-1) for pair in s.arm for a in pair]).tolist() == flat_arm
        assert np.concatenate([v.reshape(-1) for v in s.decoder.values()]).tolist() == flat_decoder
    return [[s.latents for s in numpy_read.slices], [s.latents.numpy() for s in torch_read.slices], reference]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_numpy_torch_and_reference_decoders_agree_bit_for_bit_on_random_latents_under_random_networks(tmp_path, data):
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3), label="slices")
    channels, h, w = data.draw(st.tuples(st.integers(1, 3), st.integers(2, 7), st.integers(2, 7)), label="shape")
    scales, context = data.draw(st.integers(1, 3), label="scales"), data.draw(st.integers(1, 6), label="context")
    depth, spread = data.draw(st.integers(0, 2), label="depth"), data.draw(st.sampled_from([0.3, 2.0, 20.0]))
    samples = random_samples(sizes, shape=(channels, h, w), scales=scales, context=context,
                             width=data.draw(st.integers(1, 5), label="width"), depth=depth,
                             seed=data.draw(st.integers(0, 2**16), label="seed"), spread=spread)
    options = {"samples_per_stream": data.draw(st.sampled_from([1, 2, None]), label="samples_per_stream"),
               "weights_per_stream": data.draw(st.sampled_from([7, 64, None]), label="weights_per_stream")}
    path = ddformat.save(tmp_path / "h.dd", samples, np.repeat(np.arange(len(sizes)), sizes),
                         codec_options={"samples": options})
    numpy_latents, torch_latents, reference = _decode_everywhere(path)
    for original, a, b, c in zip(samples.slices, numpy_latents, torch_latents, reference):
        assert np.array_equal(original.latents, a) and np.array_equal(a, b) and np.array_equal(a, c)


@pytest.mark.parametrize("vector", ["ruo_two_slices", "ruo_v5_rgb_streams"])
def test_every_vector_decodes_to_the_same_latents_in_numpy_torch_and_the_reference(vector):
    path = VECTOR.parent / f"{vector}.dd"
    numpy_latents, torch_latents, reference = _decode_everywhere(path)
    for a, b, c in zip(numpy_latents, torch_latents, reference):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def _payloads(path: Path) -> dict[str, bytes]:
    """The payload of each ruo section of a file."""
    with ddformat.open(path) as f:
        return {kind: bytes(f.container.section(kind).data) for kind in ("samples", "ruo.arm", "ruo.decoder")}


def _with_payload(data: bytes, kind: str, payload: bytes) -> bytes:
    """The file with one section's payload replaced, every check but the codec's own consistent
    (a one-class file's class_bytes follow the length)."""
    def edit(h):
        entry = next(s for s in h["sections"] if s["kind"] == kind)
        entry["_body"] = payload
        if entry.get("class_bytes") and len(entry["class_bytes"]) == 1:
            entry["class_bytes"] = [len(payload)]
    return reseal(data, edit)


def test_every_byte_of_every_stream_flipped_is_refused_even_with_every_checksum_recomputed(tmp_path):
    """The coder's own end condition (final state 2^31, every word read, latents within ±64)
    catches what the CRCs would: no flipped byte of any stream (word counts and words) decodes to
    anything. (A network's step exponent, before its streams, scales values the coder never
    sees: like any parameter, only the CRC guards it.)"""
    samples = random_samples([2, 1], shape=(1, 5, 5), scales=2, context=4, width=3, depth=1, seed=4)
    path = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1]),
                         codec_options={"samples": {"samples_per_stream": 1, "weights_per_stream": 40}})
    data = path.read_bytes()
    for kind, body in _payloads(path).items():
        _, streams_start = ruo_reference.varints(body, 0 if kind == "samples" else 3 * 2)  # after the fields
        for i in range(streams_start, len(body)):
            for bit in (0x01, 0x80):
                changed = body[:i] + bytes([body[i] ^ bit]) + body[i + 1:]
                (tmp_path / "bad.dd").write_bytes(_with_payload(data, kind, changed))
                with pytest.raises(ddformat.errors.DecodeError):
                    with ddformat.open(tmp_path / "bad.dd") as f:
                        f.samples()


def test_streams_cut_short_or_read_past_their_end_are_refused(tmp_path):
    """constriction returned symbols past the end of a cut stream and still reported it empty:
    latent streams cut by 8–16 words, and a swapped decoder version, decoded to garbage."""
    samples = random_samples([6], shape=(1, 8, 8), scales=2, context=4, width=3, depth=1, seed=5)
    path = ddformat.save(tmp_path / "r.dd", samples, np.zeros(6, np.int64),
                         codec_options={"samples": {"samples_per_stream": 6}})
    data = path.read_bytes()
    body = _payloads(path)["samples"]
    words = body[1:] if body[0] < 0x80 else body[2:]
    count = len(words) // 4
    assert count > 20
    for cut in (1, 8, 16):
        table = bytes([count - cut]) if count - cut < 128 else bytes([(count - cut) & 0x7F | 0x80, (count - cut) >> 7])
        (tmp_path / "cut.dd").write_bytes(_with_payload(data, "samples", table + words[:4 * (count - cut)]))
        error = _refusal(tmp_path / "cut.dd")
        assert isinstance(error, ddformat.errors.DecodeError) and "latent stream 0 is corrupt" in str(error), error
    for version in ("v4-160", "v4-1200", "v5-240"):
        def swap(h, version=version):
            h["sections"][0]["params"]["decoder_version"] = version
        (tmp_path / "swap.dd").write_bytes(reseal(data, swap))
        assert isinstance(_refusal(tmp_path / "swap.dd"), ddformat.errors.DecodeError)


def test_ruo_files_of_the_floating_point_bitstream_are_refused_by_their_format_version():
    """Format 1.0 coded latents under constriction's float64 Laplace; 2.0 readers refuse 1.x."""
    path = REPO / "spec" / "vectors" / "invalid" / "ruo_format_1_0.dd"
    with pytest.raises(ddformat.errors.VersionError):
        ddformat.open(path)


def test_network_fields_out_of_range_are_refused_naming_the_slice(tmp_path):
    """Each network's step exponent, σ index and range lead its section's payload (spec § 3.6)."""
    samples = random_samples([2, 1], shape=(1, 6, 6), scales=2, context=4, width=3, depth=1, seed=6)
    for s in samples.slices:
        s.arm = [(w // 8, b // 8) for w, b in s.arm]  # ARM ranges below 128: one-byte fields
    path = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1]))
    data, payloads = path.read_bytes(), _payloads(path)
    for kind, field, value, message in (("ruo.arm", 0, 31, "slice 0: step"), ("ruo.decoder", 4, 65, "slice 1: σ"),
                                        ("ruo.arm", 2, 0, "slice 0: range")):
        body = payloads[kind]
        _, at = ruo_reference.varints(body, field)
        assert body[at] < 0x80  # a one-byte field: the edit keeps every length
        (tmp_path / "e.dd").write_bytes(_with_payload(data, kind, body[:at] + bytes([value]) + body[at + 1:]))
        error = _refusal(tmp_path / "e.dd")
        assert isinstance(error, ddformat.errors.DecodeError) and error.reason.startswith(message), error
