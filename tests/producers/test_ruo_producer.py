"""The RUO producer (paper 000, Algorithm 1) at toy scale on real digits: its files verify, decode
to exactly the samples it reports, cost what it says, and every utility loss trains the latents
and the networks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import ddformat
from ddformat import cli
from ddformat.codecs.ruo import (
    RuoSamples,
    RuoSlice,
    decoder_shapes,
    estimated_bits,
    scale_shapes,
    split_scales,
    synthesize,
)
from ddformat.torch import samples_tensor
from producers.ruo import RealData, RuoConfig, distill, distill_to_budget, laplace_bits, save_result, train_experts
from producers.ruo.__main__ import main as producer_main
from producers.ruo.distill import build_model, build_utility, initialize
from producers.ruo.model import ArmMLP, Decoder
from producers.ruo.quantize import post_quantize, quantize_arm, quantize_decoder

TINY = dict(spc=2, scales=4, init_iterations=15, iterations=4, batch_real=16, gm_outer_loop=2, gm_inner_loop=2,
            tm_syn_steps=2, tm_expert_epochs=1, tm_max_start_epoch=1, tm_batch_syn=4)
"""A few iterations per phase: seconds on a CPU."""
ANS_SLACK_BITS = 96
"""An ANS stream ends with its 64-bit state, in whole 32-bit words: beyond the ideal code length
each stream may cost up to this much."""


@pytest.fixture(scope="module")
def real() -> RealData:
    return RealData.load("digits", classes=3)


@pytest.fixture(scope="module")
def run(real, tmp_path_factory):
    config = RuoConfig(**TINY)
    result = distill(real, config, progress=False)
    path = save_result(tmp_path_factory.mktemp("ruo") / "digits.dd", result, real)
    return config, result, path


def test_a_tiny_run_writes_a_file_that_verifies(run, capsys):
    _, _, path = run
    assert cli.main(["verify", str(path)]) == 0
    with ddformat.open(path) as f:
        assert f.provenance["producer"] == "producers.ruo"
        assert f.recipe["architecture"] == "ConvNet-D3"
        assert f.dataset["normalization"]["applied"] is True
        assert {s.kind for s in f.container.header.sections} >= {"samples", "ruo.arm", "ruo.decoder"}


def test_the_file_decodes_to_the_samples_the_producer_reports(run):
    _, result, path = run
    with ddformat.open(path) as f:
        assert torch.equal(samples_tensor(f, result.images.device), result.images)
        np.testing.assert_allclose(f.samples(), result.images.cpu().numpy(), rtol=0, atol=1e-5)
        assert np.array_equal(f.labels(), result.labels)
    assert result.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_the_reported_rate_is_what_the_file_spends(run):
    _, result, path = run
    slices = len(result.samples.slices)
    with ddformat.open(path) as f:
        components = f.bits["components"]
    for name, ideal in result.estimated_bits.items():
        assert ideal <= components[name] <= 1.02 * ideal + ANS_SLACK_BITS * slices, name


def test_post_quantised_decoders_stay_within_the_mse_threshold(real):
    config = RuoConfig(**TINY, mse_threshold=5e-6)
    model = build_model(config, real)
    initialize(model, real, config, progress=False)
    samples = post_quantize(model, config.mse_threshold, progress=False)
    decoded = torch.from_numpy(synthesize(samples)).split(model.slice_sizes)
    for s, piece in enumerate(decoded):
        latents = torch.from_numpy(samples.slices[s].latents).float()
        assert np.array_equal(samples.slices[s].latents, model.integer_latents(s))
        with torch.no_grad():
            assert float(((piece - model.decode(s, latents)) ** 2).mean()) <= config.mse_threshold


def test_post_quantisation_refuses_a_diverged_model(real):
    model = build_model(RuoConfig(**TINY), real)
    with torch.no_grad():
        model.decoders[1].synthesis.pointwise[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="diverged"):
        post_quantize(model, progress=False)


def test_the_training_rate_is_the_codecs_code_length(real):
    """With rounded latents and an ARM quantised finely, Eq. 13 as trained and the codec's ideal
    code length differ only by the codec's μ/σ tables (a few per cent)."""
    config = RuoConfig(**TINY)
    model = build_model(config, real)
    initialize(model, real, config, progress=False)
    with torch.no_grad():
        _, bits = model(mode="round")
    samples = post_quantize(model, progress=False)
    for s, piece in enumerate(samples.slices):
        piece.arm, piece.arm_step = quantize_arm(model.arms[s], 10), 10
    assert float(bits.sum()) == pytest.approx(estimated_bits(samples)["samples"], rel=0.05)


def test_the_trained_decoder_computes_what_the_codec_decodes():
    """Same tensor names and shapes as the file stores, and with its weights on the quantisation
    grid, the training forward pass (with gradients) gives the codec's numpy samples."""
    torch.manual_seed(0)
    shape, scales = (3, 11, 9), 4
    for version in ("v4-160", "v5-240"):
        decoder = Decoder(scales, shape[0], version)
        assert {k: tuple(v.shape) for k, v in decoder.state_dict().items()} == decoder_shapes(scales, 3, version)
        assert list(decoder.state_dict()) == list(decoder_shapes(scales, 3, version))
        integers = quantize_decoder(decoder, 12)
        with torch.no_grad():
            for name, p in decoder.named_parameters():
                p.copy_(torch.from_numpy(integers[name] / 2**12))
        arm = quantize_arm(ArmMLP(8, 8, 1), 8)
        m = sum(h * w for h, w in scale_shapes(11, 9, scales))
        latents = np.random.default_rng(0).integers(-20, 21, size=(4, m))
        samples = RuoSamples(shape, scales, 8, 8, 1, version, [RuoSlice(latents, arm, 8, integers, 12)])
        trained = decoder(split_scales(torch.from_numpy(latents).float(), 11, 9, scales), (11, 9))
        assert trained.requires_grad
        np.testing.assert_allclose(trained.detach().numpy(), synthesize(samples), rtol=0, atol=1e-4)


def test_quantisation_refuses_non_finite_weights_rather_than_writing_zeros():
    decoder = Decoder(3, 1, "v4-40")
    with torch.no_grad():
        decoder.synthesis.residual[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        quantize_decoder(decoder, 10)
    arm = ArmMLP(8, 8, 1)
    with torch.no_grad():
        arm.layers[0].bias[0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        quantize_arm(arm, 8)


def test_laplace_bits_are_the_exact_interval_mass_even_in_far_tails():
    z = torch.tensor([0.0, 1.0, -3.0, 10.0, 0.2, 40.0], dtype=torch.float64)
    mu = torch.tensor([0.0, 0.3, 0.0, -2.0, 0.0, 0.0], dtype=torch.float64)
    log2_sigma = torch.tensor([0.0, -3.0, 2.0, 1.0, 6.8, -4.0], dtype=torch.float64)
    sigma = 2 ** log2_sigma.clamp(-4, math.log2(112))

    def cdf(x):
        return torch.where(x < mu, 0.5 * torch.exp((x - mu) / sigma), 1 - 0.5 * torch.exp(-(x - mu) / sigma))

    bits = laplace_bits(z, mu, log2_sigma)
    exact = -torch.log2(cdf(z + 0.5) - cdf(z - 0.5))
    torch.testing.assert_close(bits[:5], exact[:5])
    assert torch.isfinite(bits[5]) and bits[5] > 900  # 40 is 640 σ out: the CDF difference is 0


@pytest.fixture(scope="module")
def experts(real, tmp_path_factory):
    directory = tmp_path_factory.mktemp("experts")
    train_experts(real, directory, num_experts=1, epochs=2, batch_size=256, progress=False)
    return directory


@pytest.mark.parametrize("loss", ["dm", "gm", "tm"])
def test_each_utility_loss_gives_finite_gradients_to_latents_and_networks(real, experts, loss):
    config = RuoConfig(**{**TINY, "loss": loss, "tm_experts": str(experts)})
    model = build_model(config, real)
    utility = build_utility(config, real)
    images, bits = model()
    value = utility(images, model.labels())
    assert torch.isfinite(value)
    (bits.mean() + value).backward()
    groups = {"latents": model.latents, "ARMs": model.arms.parameters(), "decoders": model.decoders.parameters()}
    for name, params in groups.items():
        grads = [p.grad for p in params]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    for p in utility.extra_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


SEARCHABLE = dict(init_iterations=30, init_lr=0.1, beta=100.0, iterations=0, mse_threshold=1.0)
"""Phase 1 long enough for β to move the rate past a 64-byte alignment step; no Phase 2, and
the coarsest decoder step (bits that do not depend on β): under a second per trial."""


def test_budget_search_brackets_the_target_then_bisects_and_lands_under_it(real, tmp_path):
    config = RuoConfig(**{**TINY, **SEARCHABLE})
    probe = distill_to_budget(real, config, 1e9, search_steps=2, search="beta", progress=False)
    assert probe.history["search_scale"] == [1.0, 4.0]  # under the target: ×4 until bracketed
    low, high = probe.history["search_bpc"]
    assert low < high, "β × 4 must cost more than β × 1 for this test to bisect"
    assert probe.config.beta == 4 * config.beta  # the costliest trial under the target
    target = (low + high) / 2
    result = distill_to_budget(real, config, target, search_steps=3, search="beta", progress=False)
    trials = list(zip(result.history["search_scale"], result.history["search_bpc"]))
    assert [s for s, _ in trials] == [1.0, 4.0, 2.0]
    assert trials[0][1] < target < trials[1][1]  # the header records the target: bpc moves a few bits
    chosen, chosen_bpc = max((t for t in trials if t[1] <= target), key=lambda t: t[1])
    assert result.config.beta == chosen * config.beta and result.target_bpc == target
    with ddformat.open(save_result(tmp_path / "budget.dd", result, real)) as f:
        assert f.bpc == chosen_bpc <= target
        assert f.provenance["parameters"]["target_bpc"] == target
        assert f.provenance["parameters"]["beta"] == result.config.beta


def test_lambda_search_shares_phase_one_and_scales_only_lambda(real, run, tmp_path):
    config, plain, _ = run
    with ddformat.open(save_result(tmp_path / "plain.dd", dataclasses.replace(plain, target_bpc=1e9), real)) as f:
        run_bpc = f.bpc
    result = distill_to_budget(real, config, 1e9, search_steps=2, progress=False)
    assert result.history["search_scale"] == [1.0, 4.0]
    assert result.history["search_bpc"][0] == run_bpc  # λ × 1 after the shared Phase 1 is the plain run
    assert result.config == config and result.lambda_scale in (1.0, 4.0)


def test_command_line_writes_a_file(tmp_path, capsys):
    out = tmp_path / "cli.dd"
    assert producer_main(["--data", "digits", "--classes", "2", "--spc", "1", "--init-iterations", "3",
                          "--iterations", "2", "--batch-real", "8", "--lambda", "5,1", "--out", str(out),
                          "--quiet"]) == 0
    assert "bits per class" in capsys.readouterr().out
    with ddformat.open(out) as f:
        f.verify()
        assert f.num_classes == 2 and f.num_samples == 2
        assert f.provenance["parameters"]["lambdas"] == [5.0, 1.0]


def test_a_slice_larger_than_spc_spans_classes_and_shares_its_networks(real, tmp_path):
    config = RuoConfig(**{**TINY, "slice_size": 6})
    result = distill(real, config, progress=False)
    assert len(result.samples.slices) == 1 and result.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with ddformat.open(save_result(tmp_path / "shared.dd", result, real)) as f:
        assert torch.equal(samples_tensor(f, result.images.device), result.images)
        assert np.array_equal(f.labels(), result.labels)
        per_class = f.bits["per_class"]
        assert max(per_class) - min(per_class) <= 1  # shared networks split evenly (spec § 5)
