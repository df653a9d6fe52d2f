"""The IGDS producer (paper 003): the estimator's Q^y is the class mean of its codes, guidance
is finite and vanishes into plain DDPM sampling at β = η = 0, and a tiny pixel-space prior +
tiny estimator run writes a file that verifies — the same file from one process or two
torchrun ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ddformat
from ddformat import cli
from producers.common import RealData
from producers.common.diffusion import TINY_PRIOR, LatentPrior, PriorConfig, train_prior
from producers.igds import EstimatorConfig, information_objective, merge_four, sample_class, train_estimator
from producers.igds.__main__ import main as igds_main
from producers.igds.sample import to_estimator_space

REPO = Path(__file__).resolve().parents[2]
RUN = ["--data", "digits", "--classes", "3", "--ipc", "2", "--steps", "6", "--estimator-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def real() -> RealData:
    return RealData.load("digits", classes=3)


@pytest.fixture(scope="module")
def prior_dir(real, tmp_path_factory) -> Path:
    keep = torch.cat([real.indices(c)[:20] for c in range(3)])
    prior = train_prior(real.to_pixels(real.images)[keep], real.labels[keep], real.class_names,
                        PriorConfig(**{**TINY_PRIOR, "vae_channels": ()}, image_size=8), source="digits",
                        progress=False)
    return prior.save(tmp_path_factory.mktemp("prior") / "digits-pixel")


@pytest.fixture(scope="module")
def estimator(real):
    return train_estimator(real, EstimatorConfig(epochs=2, classifier_epochs=2, width=16, dim=32, queue=64),
                           progress=False)


def test_a_pixel_space_prior_round_trips_without_a_vae(prior_dir, real):
    prior = LatentPrior.load(prior_dir)
    assert prior.vae is None and not (prior_dir / "vae").exists()
    assert prior.scheduler.config.beta_schedule == "linear" and prior.unet.config.in_channels == 1
    images = real.to_pixels(real.images)[:4]
    assert torch.equal(prior.decode(prior.encode(images)), images)


def test_the_estimator_s_class_marginal_is_the_mean_code_of_the_class(estimator, real):
    for c in range(3):
        with torch.no_grad():
            codes = torch.softmax(F.normalize(estimator.encoder(real.images[real.indices(c)]), dim=1)
                                  / estimator.config.tau, dim=1)
        torch.testing.assert_close(estimator.marginals[c], codes.mean(0), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(estimator.marginals[c].sum(), torch.tensor(1.0))


def test_guidance_is_finite_and_moves_the_samples(prior_dir, estimator):
    prior = LatentPrior.load(prior_dir)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    objective = information_objective(estimator, to_estimator_space(prior, estimator, x), 1, beta=0.5)
    (grad,) = torch.autograd.grad(objective, x)
    assert torch.isfinite(objective) and torch.isfinite(grad).all() and grad.abs().sum() > 0
    plain = sample_class(prior, 1, 3, steps=5, generator=torch.Generator().manual_seed(1))
    guided = sample_class(prior, 1, 3, steps=5, generator=torch.Generator().manual_seed(1), estimator=estimator,
                          beta=0.5, eta=0.5)
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided)


def test_at_beta_and_eta_zero_guided_sampling_is_plain_ddpm_sampling(prior_dir, estimator):
    prior = LatentPrior.load(prior_dir)
    plain = sample_class(prior, 2, 4, steps=8, generator=torch.Generator().manual_seed(3))
    guided = sample_class(prior, 2, 4, steps=8, generator=torch.Generator().manual_seed(3), estimator=estimator,
                          beta=0.0, eta=0.0)
    torch.testing.assert_close(guided, plain, rtol=0, atol=1e-6)


def test_merging_tiles_four_halved_images_into_one():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 6, 8).contiguous()
    merged = merge_four(x)
    assert merged.shape == (1, 3, 6, 8)
    assert merged[0, :, :3, :4].eq(0).all() and merged[0, :, :3, 4:].eq(1).all()
    assert merged[0, :, 3:, :4].eq(2).all() and merged[0, :, 3:, 4:].eq(3).all()
    with pytest.raises(ValueError, match="multiple of four"):
        merge_four(x[:3])


@pytest.fixture(scope="module")
def one_process(prior_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("igds") / "one.dd"
    cache = tmp_path_factory.mktemp("cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers, so that both runs do the same arithmetic
    os.environ["DDFORMAT_PRIOR_CACHE"] = str(cache)
    try:
        assert igds_main([*RUN, "--prior", str(prior_dir), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
        del os.environ["DDFORMAT_PRIOR_CACHE"]
    return out


def test_a_tiny_run_writes_a_file_that_verifies_with_the_papers_protocol_as_recipe(one_process):
    assert cli.main(["verify", str(one_process)]) == 0
    with ddformat.open(one_process) as f:
        assert f.labels().tolist() == [0, 0, 1, 1, 2, 2]
        assert f.samples().dtype == np.uint8 and f.samples().shape == (6, 1, 8, 8)
        assert f.recipe["optimizer"]["name"] == "adam" and f.recipe["optimizer"]["lr"] == 0.01
        assert f.recipe["augmentation"] == ["rrc+flip", "cutmix"]
        p = f.provenance["parameters"]
        assert p["beta"] == 0.0 and p["eta"] == 1.0 and len(p["prior"]["sha256"]) == 64 and len(p["estimator"]["sha256"]) == 64


def test_two_torchrun_ranks_write_the_same_file_as_one_process(one_process, prior_dir, tmp_path):
    out = tmp_path / "two.dd"
    with ddformat.open(one_process) as f:
        estimator_dir = f.provenance["parameters"]["estimator"]["path"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29521", "-m", "producers.igds", *RUN, "--prior", str(prior_dir),
                           "--estimator", estimator_dir, "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 of 2" in done.stdout
    with ddformat.open(one_process) as one, ddformat.open(out) as two:
        assert np.array_equal(one.samples(), two.samples())
        assert np.array_equal(one.labels(), two.labels())
