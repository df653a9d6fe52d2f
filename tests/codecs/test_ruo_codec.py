"""The ``ruo`` codec: bit-exact latents, an integer entropy model every decoder agrees on,
corruption caught before decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ddformat
from ddformat import FormatError
from ddformat.codecs.ruo import RUO, RuoSamples, RuoSlice, estimated_bits, quantize_decoder, synthesize
from ddformat.codecs.ruo.arm import (
    SIGMA_INDEX_MAX,
    SIGMA_INDEX_MIN,
    ArmMLP,
    integer_arm,
    integer_arm_numpy,
    quantize_arm,
)
from ddformat.codecs.ruo.grid import context_pattern, scale_shapes, schedule
from ddformat.codecs.ruo.synthesis import Decoder


def random_samples(per_slice: list[int], shape=(1, 12, 10), scales=4, context=8, width=8, depth=2,
                   version="v4-40", seed=0, spread=2.0) -> RuoSamples:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m, _ = schedule(shape[1], shape[2], scales, context)
    template = RuoSamples(shape, scales, context, width, depth, version, [])
    slices = []
    for n in per_slice:
        arm = ArmMLP(context, width, depth)
        with torch.no_grad():
            for layer in arm.layers:
                layer.weight.normal_(0, 0.3)
        latents = np.clip(np.round(rng.laplace(0, spread, size=(n, m))), -64, 64).astype(np.int64)
        slices.append(RuoSlice(latents, quantize_arm(arm, 8), 8, quantize_decoder(template.new_decoder(), 10), 10))
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
        assert all(np.array_equal(a.decoder[k], b.decoder[k]) for k in a.decoder)
        assert (a.arm_step, a.decoder_step) == (b.arm_step, b.decoder_step)
    with ddformat.open(path) as f:
        f.verify()
        assert np.array_equal(f.samples(), synthesize(samples).numpy())


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


def test_numpy_reference_agrees_with_torch_on_every_index():
    rng = np.random.default_rng(3)
    for depth, width, step in ((0, 4, 6), (2, 16, 8), (3, 32, 12)):
        arm = ArmMLP(24, width, depth)
        with torch.no_grad():
            for layer in arm.layers:
                layer.weight.normal_(0, 0.5)
                layer.bias.normal_(0, 2)
        layers = quantize_arm(arm, step)
        context = rng.integers(-64, 65, size=(5000, 24))
        mu_np, sigma_np = integer_arm_numpy(context, layers, step)
        torch_layers = [(torch.from_numpy(w.astype(np.float64)), torch.from_numpy(b.astype(np.float64)))
                        for w, b in layers]
        mu_t, sigma_t = integer_arm(torch.from_numpy(context), torch_layers, step)
        assert np.array_equal(mu_np, mu_t.numpy()) and np.array_equal(sigma_np, sigma_t.numpy())
        assert sigma_np.min() >= SIGMA_INDEX_MIN and sigma_np.max() <= SIGMA_INDEX_MAX
        assert len(np.unique(sigma_np)) > 1 or depth == 0


def test_wavefront_schedule_decodes_every_latent_once_after_its_neighbours():
    for h, w, scales, context in ((28, 28, 5, 8), (32, 32, 6, 16), (7, 13, 3, 24)):
        m, steps = schedule(h, w, scales, context)
        done: set[int] = set()
        for st in steps:
            assert all(n in done for n in st.neighbours.reshape(-1) if n >= 0)
            done.update(st.positions.tolist())
        assert len(done) == m
    assert context_pattern(4) == ((-1, 0), (0, -1), (-1, -1), (-1, 1))


def test_any_corrupted_byte_of_a_ruo_section_is_caught_before_decoding(tmp_path):
    samples = random_samples([2, 1], shape=(1, 6, 6), scales=3)
    path = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1]))
    data = path.read_bytes()
    with ddformat.open(path) as f:
        regions = [(e.offset, e.length) for e in f.header.sections if e.codec == "ruo"]
    assert len(regions) == 3
    bad = tmp_path / "bad.dd"
    for offset, length in regions:
        for i in range(offset, offset + length):
            bad.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
            with pytest.raises(ddformat.errors.ChecksumError):
                with ddformat.open(bad) as f:
                    f.samples()


def test_inconsistent_ruo_params_raise_format_errors(tmp_path):
    from tests.support import reseal

    samples = random_samples([2, 2], shape=(1, 6, 6), scales=3)
    base = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 1, 1])).read_bytes()
    edits = {
        "slices": lambda h: h["sections"][0]["params"].update(slices=[3, 1]),
        "frames": lambda h: h["sections"][0]["params"].update(frames=[4, 4]),
        "version": lambda h: h["sections"][0]["params"].update(decoder_version="v9"),
        "step": lambda h: h["sections"][1]["params"]["networks"][0].update(step=99),
        "scale": lambda h: h["sections"][2]["params"]["networks"][1].update(scale=1e9),
    }
    for name, edit in edits.items():
        (tmp_path / "e.dd").write_bytes(reseal(base, edit, rebits=True))
        with pytest.raises(FormatError):
            with ddformat.open(tmp_path / "e.dd") as f:
                f.samples()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_decoding_matches_cpu(tmp_path):
    samples = random_samples([3, 3], shape=(3, 16, 16))
    path = ddformat.save(tmp_path / "r.dd", samples, np.array([0, 0, 0, 1, 1, 1]))
    with ddformat.open(path) as f:
        cpu, gpu = f.samples("cpu"), f.samples("cuda")
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_non_finite_network_weights_are_refused_not_written_as_zeros():
    template = random_samples([1])
    decoder = template.new_decoder()
    with torch.no_grad():
        decoder.synthesis.residual[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        quantize_decoder(decoder, 10)
    arm = ArmMLP(8, 8, 1)
    with torch.no_grad():
        arm.layers[0].bias[0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        quantize_arm(arm, 8)


def test_blocked_inference_synthesis_matches_the_training_path():
    torch.manual_seed(0)
    for version in ("v4-160", "v5-240"):
        decoder = Decoder(4, 3, version)
        latents = [torch.randn(3, h, w) for h, w in scale_shapes(20, 20, 4)]
        reference = decoder(latents, (20, 20))
        with torch.no_grad():
            blocked = decoder(latents, (20, 20), rows=37)
        torch.testing.assert_close(blocked, reference.detach(), rtol=1e-5, atol=1e-5)
