import math

import pytest
import torch
import torch.nn.functional as F

from ddformat.torch.losses import recipe_loss, soft_kl, weighted_cross_entropy, weighted_sampler
from ddformat import weighting

def loss_weights(values, classes, num_classes, scheme, normalization):
    """The numpy weighting schemes, on and back to tensors."""
    v = None if values is None else values.numpy()
    return torch.from_numpy(weighting.loss_weights(v, classes.numpy(), num_classes, scheme, normalization))


CLASSES = torch.tensor([0, 0, 1, 1, 1])
VALUES = torch.tensor([1, 3, 2, 2, 4])


def _weights(scheme, normalization="none", values=VALUES, classes=CLASSES, num_classes=2):
    return loss_weights(values, classes, num_classes, scheme, normalization)


def test_uniform_scheme_gives_ones_and_ignores_values():
    assert torch.equal(_weights("uniform"), torch.ones(5))
    assert torch.equal(loss_weights(None, CLASSES, 2, "uniform", "global"), torch.ones(5))


def test_proportional_scheme_is_share_of_class_total():
    expected = torch.tensor([1 / 4, 3 / 4, 2 / 8, 2 / 8, 4 / 8])
    assert torch.allclose(_weights("proportional"), expected)


def test_sqrt_scheme_is_sqrt_of_class_size_times_share():
    expected = torch.tensor([math.sqrt(2 / 4), math.sqrt(2 * 3 / 4), math.sqrt(3 * 2 / 8),
                             math.sqrt(3 * 2 / 8), math.sqrt(3 * 4 / 8)])
    assert torch.allclose(_weights("sqrt"), expected)


def test_sqrt_scheme_with_equal_values_in_each_class_is_uniform():
    values = torch.tensor([5.0, 5.0, 0.5, 0.5, 0.5])
    assert torch.allclose(_weights("sqrt", values=values), torch.ones(5))


def test_explicit_scheme_uses_values_as_weights():
    assert torch.equal(_weights("explicit"), VALUES.float())


@pytest.mark.parametrize("scheme", ["uniform", "proportional", "sqrt", "explicit"])
def test_global_normalization_rescales_to_mean_one(scheme):
    w = _weights(scheme, "global")
    assert w.dtype == torch.float32
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(w / w[0], _weights(scheme) / _weights(scheme)[0])


@pytest.mark.parametrize("normalization", ["none", "batch"])
def test_none_and_batch_normalization_leave_scheme_weights_unchanged(normalization):
    assert torch.equal(_weights("proportional", normalization), _weights("proportional"))


@pytest.mark.parametrize("scheme", ["proportional", "sqrt", "explicit"])
def test_non_uniform_scheme_without_values_is_refused(scheme):
    with pytest.raises(ValueError, match="needs per-sample weight values"):
        loss_weights(None, CLASSES, 2, scheme, "global")


@pytest.mark.parametrize("scheme", ["proportional", "sqrt"])
def test_class_whose_values_sum_to_zero_is_refused_instead_of_nan(scheme):
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] sum to 0"):
        _weights(scheme, values=torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))


def test_class_without_samples_is_not_an_error():
    assert torch.allclose(loss_weights(VALUES, CLASSES, 3, "proportional", "none"), _weights("proportional"))


@pytest.mark.parametrize("bad", [torch.tensor([1.0, -1, 1, 1, 1]), torch.tensor([1.0, float("nan"), 1, 1, 1]),
                                 torch.tensor([1.0, 1.0])])
def test_negative_non_finite_or_misshapen_values_are_refused(bad):
    with pytest.raises(ValueError):
        _weights("explicit", values=bad)


def test_unknown_scheme_or_normalization_is_refused():
    with pytest.raises(ValueError, match="scheme"):
        _weights("inverse")
    with pytest.raises(ValueError, match="normalization"):
        _weights("explicit", "per_class")


def test_global_normalization_of_all_zero_weights_is_refused():
    with pytest.raises(ValueError, match="every weight is 0"):
        _weights("explicit", "global", values=torch.zeros(5))


def _model_loss(x, y, w, normalization="global"):
    model = torch.nn.Linear(x.shape[1], 3)
    torch.manual_seed(0)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, x.shape[1]))
        model.bias.zero_()
    loss = weighted_cross_entropy(model(x), y, w, normalization)
    loss.backward()
    return loss.detach(), model.weight.grad


@pytest.mark.parametrize("scheme", ["proportional", "sqrt", "explicit"])
def test_duplicating_samples_and_halving_values_keeps_loss_and_gradients_under_global_normalization(scheme):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    v = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0, 1.0])
    w = loss_weights(v, y, 3, scheme, "global")
    w2 = loss_weights(torch.cat([v, v]) / 2, torch.cat([y, y]), 3, scheme, "global")
    assert torch.allclose(w2, torch.cat([w, w]), atol=1e-6)
    loss, grad = _model_loss(x, y, w)
    loss2, grad2 = _model_loss(torch.cat([x, x]), torch.cat([y, y]), w2)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(grad2, grad, atol=1e-6)


def test_batch_normalization_matches_wmdd_per_batch_mean_formula():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    w = torch.rand(8, generator=g) * 3
    per_sample = F.cross_entropy(logits, y, reduction="none")
    wmdd = (w / w.mean() * per_sample).mean()
    assert weighted_cross_entropy(logits, y, w, "batch").item() == pytest.approx(wmdd.item(), rel=1e-6)


@pytest.mark.parametrize("normalization", ["none", "global"])
def test_none_and_global_reduce_to_mean_of_weighted_losses(normalization):
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    w = torch.tensor([0.5, 1.0, 2.0, 0.5])
    expected = (w * F.cross_entropy(logits, y, reduction="none")).mean()
    assert weighted_cross_entropy(logits, y, w, normalization).item() == pytest.approx(expected.item(), rel=1e-6)


def test_unweighted_cross_entropy_is_plain_cross_entropy():
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    assert weighted_cross_entropy(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_cross_entropy_with_one_hot_probabilities_equals_class_indices():
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    w = torch.tensor([0.5, 1.0, 2.0, 0.5])
    assert torch.allclose(weighted_cross_entropy(logits, F.one_hot(y, 3).float(), w),
                          weighted_cross_entropy(logits, y, w))


def test_soft_kl_with_one_hot_targets_at_unit_temperature_equals_cross_entropy():
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    w = torch.rand(6) + 0.1
    for normalization in ("none", "global", "batch"):
        assert torch.allclose(soft_kl(logits, F.one_hot(y, 4).float(), w, 1.0, normalization),
                              weighted_cross_entropy(logits, y, w, normalization), atol=1e-6)
    assert torch.allclose(soft_kl(logits, y), weighted_cross_entropy(logits, y), atol=1e-6)


def test_soft_kl_is_temperature_squared_times_kl_of_tempered_student():
    logits = torch.randn(5, 4) * 3
    p = torch.softmax(torch.randn(5, 4), dim=1)
    t = 4.0
    reference = F.kl_div(F.log_softmax(logits / t, dim=1), p, reduction="batchmean") * t**2
    assert soft_kl(logits, p, temperature=t).item() == pytest.approx(reference.item(), rel=1e-5)
    assert soft_kl(logits, p, temperature=t).item() == pytest.approx(
        t**2 * soft_kl(logits / t, p).item(), rel=1e-5)


def test_soft_kl_is_zero_when_student_matches_target_including_zero_probabilities():
    p = torch.tensor([[0.0, 0.25, 0.75]])
    logits = torch.log(torch.tensor([[1e-30, 0.25, 0.75]]))
    assert soft_kl(logits, p).item() == pytest.approx(0.0, abs=1e-6)


def test_recipe_loss_follows_loss_temperature_and_normalization():
    logits = torch.randn(4, 3)
    p = torch.softmax(torch.randn(4, 3), dim=1)
    w = torch.tensor([0.5, 1.0, 2.0, 0.5])
    kl = recipe_loss({"loss": "kl", "temperature": 4.0, "weighting": {"normalization": "batch"}})
    assert torch.equal(kl(logits, p, w), soft_kl(logits, p, w, 4.0, "batch"))
    ce = recipe_loss({"loss": "ce", "weighting": {"scheme": "uniform", "normalization": "none"}})
    assert torch.equal(ce(logits, p, w), weighted_cross_entropy(logits, p, w, "none"))
    assert torch.equal(recipe_loss({})(logits, p), weighted_cross_entropy(logits, p))


def test_recipe_loss_refuses_unknown_loss():
    with pytest.raises(ValueError, match="'mse'"):
        recipe_loss({"loss": "mse"})


def test_reduction_refuses_unknown_normalization_and_misshapen_weights():
    with pytest.raises(ValueError, match="normalization"):
        weighted_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), torch.ones(2), "mean")
    with pytest.raises(ValueError, match="shape"):
        weighted_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), torch.ones(3))


def test_weighted_sampler_draws_in_proportion_to_weights_and_never_zero_weights():
    w = torch.tensor([0.0, 1.0, 3.0])
    sampler = weighted_sampler(w, num_samples=8000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor(list(sampler)), minlength=3)
    assert counts[0] == 0
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.1)
    assert len(weighted_sampler(w)) == 3


def test_weighted_sampler_refuses_unusable_weights():
    with pytest.raises(ValueError, match="not all 0"):
        weighted_sampler(torch.zeros(3))
