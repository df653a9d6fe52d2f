"""RUO's target-bpc mode always lands: a budget below the configuration's fixed cost is refused
before any training, and any budget above it gives a file at or under it — through the λ
search, or else through the fallback that zeroes latents (or, last, the floor file)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import ddformat
from ddformat.codecs.ruo import estimated_bits
from ddformat.torch import samples_tensor
from producers.ruo import BudgetError, RealData, RuoConfig, distill, distill_to_budget, floor_result, save_result
from producers.ruo.quantize import requantize, zeroed_latents

distill_module = importlib.import_module("producers.ruo.distill")  # the package exports a function of that name

LATENT_HEAVY = dict(spc=4, scales=4, init_iterations=40, init_lr=0.1, beta=1e6, iterations=0, batch_real=16,
                    slice_size=1000, mse_threshold=1.0)
"""One slice for all classes, a strong Phase 1 and the coarsest decoder step: latents are most
of what the file spends beyond its fixed cost, so zeroing some of them can reach a budget. No
Phase 2, so every λ gives the same file and the λ search cannot move the rate."""


@pytest.fixture(scope="module")
def real() -> RealData:
    return RealData.load("digits", classes=3)


@pytest.fixture(scope="module")
def config() -> RuoConfig:
    return RuoConfig(**LATENT_HEAVY)


def _file_bpc(result, real, path) -> float:
    with ddformat.open(save_result(path, result, real)) as f:
        f.verify()
        assert torch.equal(samples_tensor(f, result.images.device), result.images)
        return f.bpc


@pytest.fixture(scope="module")
def costs(real, config, tmp_path_factory):
    """(fixed cost, bpc, result) of ``config``'s plain run, both as written files. The header is
    compressed, so what a file records (the target, the fallback) moves its size by a few bytes."""
    tmp = tmp_path_factory.mktemp("costs")
    fixed = _file_bpc(floor_result(real, config), real, tmp / "floor.dd")
    run = distill(real, config, progress=False)
    return fixed, _file_bpc(run, real, tmp / "run.dd"), run


def test_a_budget_below_the_fixed_cost_is_refused_with_that_cost_before_any_training(real, config, costs,
                                                                                      monkeypatch, tmp_path):
    target = costs[0] - 1
    fixed = _file_bpc(floor_result(real, config, target), real, tmp_path / "floor.dd")
    assert fixed > target

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(distill_module, "initialize", no_training)
    monkeypatch.setattr(distill_module, "build_model", no_training)
    with pytest.raises(BudgetError, match=f"below this configuration's fixed cost of {fixed:.0f} bits per class") \
            as refused:
        distill_to_budget(real, config, target, search_steps=1, search="beta", progress=False)
    assert refused.value.fixed_bpc == fixed
    assert f"a budget of {target:.0f} bits per class" in str(refused.value)


def test_a_budget_just_above_the_fixed_cost_lands_at_or_under_it(real, config, costs, tmp_path):
    fixed, run_bpc, _ = costs
    target = fixed + 40
    assert fixed <= _file_bpc(floor_result(real, config, target), real, tmp_path / "floor.dd") <= target < run_bpc
    result = distill_to_budget(real, config, target, search_steps=1, progress=False)
    assert result.fallback is not None
    assert _file_bpc(result, real, tmp_path / "edge.dd") <= target


def test_a_budget_the_lambda_search_cannot_reach_lands_through_zeroed_latents(real, config, costs, tmp_path):
    fixed, run_bpc, run = costs
    target = run_bpc - 40
    result = distill_to_budget(real, config, target, search_steps=2, progress=False)
    assert min(result.history["search_bpc"]) > target
    rungs = list(zip(result.history["fallback_zeroed"], result.history["fallback_bpc"]))
    fewest = min(count for count, bpc in rungs if bpc <= target)
    nonzero = int(sum(np.count_nonzero(s.latents) for s in run.samples.slices))
    assert fewest < nonzero, "the fallback should land before the floor"
    assert result.fallback == f"zeroed {fewest}/{nonzero}"
    assert int(sum(np.count_nonzero(s.latents) for s in result.samples.slices)) == nonzero - fewest
    bpc = _file_bpc(result, real, tmp_path / "fallback.dd")
    assert fixed < bpc <= target and (fewest, bpc) in rungs
    with ddformat.open(tmp_path / "fallback.dd") as f:
        assert f.provenance["parameters"]["fallback"] == result.fallback
        assert f.provenance["parameters"]["target_bpc"] == target


def test_zeroing_takes_the_smallest_latents_first_in_one_nested_order(costs):
    _, _, run = costs
    samples = run.samples
    before = np.concatenate([s.latents.reshape(-1) for s in samples.slices])
    nonzero = int(np.count_nonzero(before))
    previous = before != 0
    for count in (0, 1, nonzero // 3, nonzero // 2, nonzero - 1, nonzero):
        after = np.concatenate([z.reshape(-1) for z in zeroed_latents(samples, count)])
        kept = after != 0
        assert int(kept.sum()) == nonzero - count
        assert np.array_equal(after[kept], before[kept])
        assert not (kept & ~previous).any()  # nested: what a smaller count zeroed stays zero
        if 0 < count < nonzero:
            assert np.abs(before[(before != 0) & ~kept]).max() <= np.abs(before[kept]).min()
        previous = kept
    assert all(s.latents is not z for s, z in zip(samples.slices, zeroed_latents(samples, 1)))
    assert np.array_equal(np.concatenate([s.latents.reshape(-1) for s in samples.slices]), before)


def test_choosing_the_arms_again_changes_no_sample_and_never_costs_more(real, config):
    model, run = distill_module._run(real, config, progress=False)
    again = requantize(model, run.samples, [s.latents for s in run.samples.slices])
    for old, new in zip(run.samples.slices, again.slices):
        assert np.array_equal(old.latents, new.latents) and old.decoder_step == new.decoder_step
        assert all(np.array_equal(old.decoder[k], new.decoder[k]) for k in old.decoder)
    before, after = estimated_bits(run.samples), estimated_bits(again)
    assert after["samples"] + after["entropy_networks"] <= before["samples"] + before["entropy_networks"]
    assert after["decoders"] == before["decoders"]
