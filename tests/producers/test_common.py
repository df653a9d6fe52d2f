"""What producers share (``producers.common``): teachers trained, saved and read back safely,
expert trajectories, and the matching losses' defining properties, on real digits."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file
from torch.func import functional_call

from ddformat.evaluation.models import build_model
from ddformat.evaluation.training import accuracy
from producers.common import (DistributionMatching, RealData, flat_parameters, gradient_distance, load_experts,
                              load_teacher, save_teacher, train_teacher, unflatten_parameters)


@pytest.fixture(scope="module")
def real() -> RealData:
    return RealData.load("digits", classes=3)


def test_a_trained_teacher_learns_the_real_data_and_reads_back_identically(real, tmp_path):
    teacher = train_teacher(real, epochs=2, batch_size=64, lr=0.1, augmentation=(), progress=False)
    assert accuracy(teacher, real.images, real.labels) >= 0.8  # chance is 1/3; measured 0.91
    path = save_teacher(teacher, tmp_path / "teacher.safetensors", {"architecture": "ConvNet-D3"})
    loaded = load_teacher(path, "ConvNet-D3", 1, real.num_classes, (8, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(real.images), teacher(real.images), rtol=0, atol=0)


def test_teacher_training_is_fixed_by_its_seed(real):
    few = dataclasses.replace(real, images=real.images[:24], labels=real.labels[:24])

    def weights(seed: int) -> torch.Tensor:
        return flat_parameters(train_teacher(few, epochs=1, batch_size=8, seed=seed, progress=False))

    assert torch.equal(weights(0), weights(0))
    assert not torch.equal(weights(0), weights(1))


def test_flattened_parameters_unflatten_into_the_same_network(real):
    model = build_model("ConvNet-D3", 1, real.num_classes, (8, 8))
    flat = flat_parameters(model)
    assert flat.shape == (sum(p.numel() for p in model.parameters()),)
    with torch.no_grad():
        torch.testing.assert_close(functional_call(model, unflatten_parameters(model, flat), (real.images[:8],)),
                                   model(real.images[:8]), rtol=0, atol=0)


def test_load_experts_refuses_an_empty_directory_and_a_file_without_a_trajectory(tmp_path):
    with pytest.raises(ValueError, match="no expert_\\*.safetensors files"):
        load_experts(tmp_path)
    save_file({"weights": torch.zeros(3, 4)}, str(tmp_path / "expert_000.safetensors"))
    with pytest.raises(ValueError, match="expert_000.safetensors: expected one .* tensor named 'trajectory'"):
        load_experts(tmp_path)


def test_gradient_distance_is_one_minus_cosine_per_output_unit_over_weight_tensors():
    weight = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    bias = torch.randn(4)
    assert float(gradient_distance([weight, bias], [weight, -bias])) == pytest.approx(0, abs=1e-6)
    assert float(gradient_distance([weight, bias], [-weight, bias])) == pytest.approx(2 * 4)
    orthogonal = torch.zeros(2, 2)
    assert float(gradient_distance([torch.eye(2)], [orthogonal + torch.eye(2).flip(0)])) == pytest.approx(2)


def test_distribution_matching_vanishes_when_the_synthetic_set_is_the_real_class(real):
    """With every real image of a class drawn, DM compares mean embeddings of the same images
    under the same augmentation: zero up to rounding, and far from zero for noise."""
    loss = DistributionMatching(real, batch_real=len(real.images), seed=0)
    same = loss(real.images, real.labels)
    noise = loss(torch.randn_like(real.images), real.labels)
    assert float(same) < 1e-6 * float(noise)
