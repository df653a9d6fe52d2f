"""The latent diffusion prior (``producers.common.diffusion``): trained by the project's own code,
it reads back through diffusers' ``from_pretrained`` as the same model, and it sees exactly the
source's pixels."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ddformat.evaluation import realdata
from producers.common import RealData
from producers.common.diffusion import TINY_PRIOR, LatentPrior, PriorConfig, directory_hash, train_prior


@pytest.fixture(scope="module")
def real() -> RealData:
    return RealData.load("digits", classes=3)


@pytest.fixture(scope="module")
def prior(real) -> LatentPrior:
    keep = torch.cat([real.indices(c)[:20] for c in range(real.num_classes)])
    return train_prior(real.to_pixels(real.images)[keep], real.labels[keep], real.class_names,
                       PriorConfig(**TINY_PRIOR, image_size=8), source="digits", progress=False)


def test_pixels_undo_the_normalisation_exactly(real):
    x, y = realdata.load("digits", "train")
    keep = y < 3
    assert torch.equal(real.to_pixels(real.images), x[keep])


def test_a_prior_reads_back_from_its_directory_as_the_same_model(prior, real, tmp_path):
    path = prior.save(tmp_path / "prior")
    assert {p.name for p in path.iterdir()} >= {"vae", "unet", "scheduler", "prior.json"}
    loaded = LatentPrior.load(path)
    assert loaded.class_names == prior.class_names and loaded.image_shape == (1, 8, 8)
    assert loaded.vae.config.scaling_factor == prior.vae.config.scaling_factor != 0.18215
    images = real.to_pixels(real.images)[:12]
    latents = prior.encode(images)
    assert torch.equal(loaded.encode(images), latents)
    assert torch.equal(loaded.decode(latents), prior.decode(latents))
    classes = torch.arange(12) % 3
    runs = [p.denoise(latents, classes, strength=0.6, steps=5, guidance=2.0,
                      generator=torch.Generator().manual_seed(1)) for p in (prior, loaded)]
    assert torch.equal(runs[0], runs[1])


def test_the_prior_hash_changes_with_any_byte_of_the_directory(prior, tmp_path):
    path = prior.save(tmp_path / "prior")
    before = directory_hash(path)
    weights = path / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert directory_hash(path) != before


def test_denoising_conditions_on_the_class(prior, real):
    latents = prior.encode(real.to_pixels(real.images)[:6])
    runs = [prior.denoise(latents, torch.full((6,), c), strength=0.8, steps=4,
                          generator=torch.Generator().manual_seed(0)) for c in (0, 1)]
    assert not torch.equal(runs[0], runs[1])


def test_a_prior_whose_latent_grid_cannot_halve_in_the_unet_is_refused(real):
    config = dataclasses.replace(PriorConfig(**TINY_PRIOR), image_size=8, unet_channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="does not halve"):
        train_prior(real.to_pixels(real.images)[:4], real.labels[:4], real.class_names, config, progress=False)
