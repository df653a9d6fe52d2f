import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from ddformat.evaluation.augment import (DSA, ZCA, Augmentation, RandomResizedCropFlip, build_augmentation, cutmix,
                              random_hflip)

TRANSFORMS = DSA.TRANSFORMS


def _images(n=8, c=3, h=32, w=32, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) + 0.5


def _index_images(n=8, h=32, w=32):
    """Every pixel holds 1 + its flat position, so a nearest-pixel transform reveals where it read."""
    return (torch.arange(h * w, dtype=torch.float32) + 1).view(1, 1, h, w).repeat(n, 1, 1, 1)


# --- DSA -------------------------------------------------------------------------------------

@pytest.mark.parametrize("transform", [*TRANSFORMS, "color_crop_cutout_flip_scale_rotate"])
def test_dsa_same_seed_same_output(transform):
    x = _images()
    assert torch.equal(DSA(transform)(x, 11), DSA(transform)(x.clone(), 11))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_dsa_different_seeds_differ(transform):
    x = _images(16)
    assert not torch.equal(DSA(transform)(x, 1), DSA(transform)(x, 2))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_dsa_applies_the_same_transform_to_real_and_synthetic_batches(transform):
    # Every DSA transform is affine in x for fixed parameters: T(a + b) + T(0) = T(a) + T(b) holds
    # only if all four calls with one seed apply the same transform at each index.
    dsa = DSA(transform)
    real, synthetic = _images(seed=1), _images(seed=2) * 3 - 1
    for seed in range(4):
        lhs = dsa(real + synthetic, seed) + dsa(torch.zeros_like(real), seed)
        assert torch.allclose(lhs, dsa(real, seed) + dsa(synthetic, seed), atol=1e-4)


@pytest.mark.parametrize("transform", ["crop", "flip"])
def test_dsa_moves_pixels_of_different_content_identically(transform):
    index = _index_images()
    content = _images(seed=3)
    where = DSA(transform)(index, 5).long() - 1  # -1: read from the zero border
    moved = DSA(transform)(content, 5)
    source = where.clamp(min=0).flatten(2).expand(-1, 3, -1)
    expected = content.flatten(2).gather(2, source).view_as(content) * (where >= 0)
    assert torch.equal(moved, expected)


def test_dsa_crop_is_a_translation_with_zero_fill():
    index = _index_images(16)
    out = DSA("crop")(index, 0).long()[:, 0]
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    for sample in out:
        read = sample > 0
        dy = ((sample[read] - 1) // 32 - rows[read]).unique()
        dx = ((sample[read] - 1) % 32 - cols[read]).unique()
        assert len(dy) == len(dx) == 1 and abs(dy.item()) <= 4 and abs(dx.item()) <= 4


def test_dsa_cutout_zeroes_one_clipped_square_of_half_the_side():
    out = DSA("cutout")(_images(32), 0)
    for sample in out:
        zero = (sample == 0).all(0)
        rows, cols = zero.any(1).nonzero().squeeze(1), zero.any(0).nonzero().squeeze(1)
        assert zero.sum() == len(rows) * len(cols) and 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        assert (len(rows) == 16 or rows[0] == 0 or rows[-1] == 31) and (len(cols) == 16 or cols[0] == 0 or cols[-1] == 31)


def test_dsa_draws_parameters_per_sample_unless_batchwise():
    x = _images(1).repeat(8, 1, 1, 1)
    per_sample = DSA("rotate")(x, 3)
    assert not torch.allclose(per_sample[0], per_sample[1])
    batchwise = DSA("rotate")(x, 3, batchwise=True)
    assert torch.equal(batchwise[0], batchwise[7])


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_dsa_batchwise_matches_batches_of_different_sizes(transform):
    real, synthetic = _images(16, seed=4), _images(3, seed=5)
    both = DSA(transform)(torch.cat([synthetic, real]), 9, batchwise=True)
    assert torch.allclose(DSA(transform)(synthetic, 9, batchwise=True), both[:3], atol=1e-6)
    assert torch.allclose(DSA(transform)(real, 9, batchwise=True), both[3:], atol=1e-6)


def test_dsa_applies_one_transform_per_call():
    x = _images(16)  # no pixel is 0, so cutout shows as zeros; a flip only permutes pixels
    seen = set()
    for seed in range(20):
        out = DSA("flip_cutout")(x, seed)
        cut = bool((out == 0).any())
        assert cut or torch.equal(out.sort(-1).values, x.sort(-1).values)
        seen.add(cut)
    assert seen == {True, False}


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_dsa_is_differentiable_for_every_transform(transform):
    x = _images(4).requires_grad_()
    (DSA(transform)(x, 1) ** 2).sum().backward()
    assert x.grad is not None and (x.grad != 0).any(dim=(1, 2, 3)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_dsa_preserves_shape_device_and_dtype(transform, dtype):
    x = _images(5, h=28, w=20).to(dtype)
    out = DSA(transform)(x, 0)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


def test_dsa_neutral_scale_and_rotation_are_identity():
    x = _images()
    assert torch.allclose(DSA("scale", scale=1.0)(x, 0), x, atol=1e-5)
    assert torch.allclose(DSA("rotate", rotate=0.0)(x, 0), x, atol=1e-5)


def test_dsa_rejects_unknown_transforms_and_non_image_batches():
    with pytest.raises(ValueError, match="blur"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="N, C, H, W"):
        DSA()(torch.rand(3, 32, 32), 0)


# --- RandomResizedCropFlip -------------------------------------------------------------------

def test_rrc_output_shape_defaults_to_input_size():
    x = _images(6, h=24, w=40)
    assert RandomResizedCropFlip()(x).shape == x.shape
    assert RandomResizedCropFlip(size=(16, 12))(x).shape == (6, 3, 16, 12)


def test_rrc_whole_image_crop_is_identity_and_flip_mirrors():
    x = _images()
    whole = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(RandomResizedCropFlip(**whole, flip=0.0)(x), x, atol=1e-6)
    assert torch.allclose(RandomResizedCropFlip(**whole, flip=1.0)(x), x.flip(3), atol=1e-6)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_rrc_matches_torchvision_resized_crop_of_the_drawn_boxes(flip):
    x = _images(16)
    rrc = RandomResizedCropFlip(flip=flip)
    boxes = rrc.crop_boxes(16, 32, 32, torch.Generator().manual_seed(7))
    out = rrc(x, torch.Generator().manual_seed(7))
    for sample, box, got in zip(x, boxes.tolist(), out):
        expected = TF.resized_crop(sample, *box, [32, 32], antialias=True)
        assert torch.allclose(got, expected.flip(2) if flip else expected, atol=1e-5)


def test_rrc_boxes_follow_torchvision_sampling():
    boxes = RandomResizedCropFlip().crop_boxes(4000, 32, 32, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).double() / 1024
    assert area.min() >= 0.05 and abs(area.mean().item() - 0.47) < 0.03  # rounding widens [0.08, 1]
    assert (w.double() / h).log().abs().max() <= math.log(4 / 3) + 0.2


def test_rrc_falls_back_to_the_central_crop_like_torchvision():
    boxes = RandomResizedCropFlip(scale=(0.9, 1.0)).crop_boxes(5, 8, 200, torch.Generator().manual_seed(0))
    assert boxes.tolist() == [[0, 94, 8, 11]] * 5


def test_rrc_is_reproducible_per_generator_and_differentiable():
    x = _images(4).requires_grad_()
    rrc = RandomResizedCropFlip()
    out = rrc(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, rrc(x, torch.Generator().manual_seed(3)))
    out.sum().backward()
    assert (x.grad != 0).any()


def test_random_hflip_mirrors_a_subset():
    x = _images(64)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | mirrored).all() and 10 < mirrored.sum() < 54


# --- CutMix ----------------------------------------------------------------------------------

def _constant_per_sample(n):
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 16, 16).clone()


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_mixes_labels_and_weights_by_the_pasted_area(seed):
    n = 10
    x, y, w = _constant_per_sample(n), torch.arange(n), torch.arange(1.0, n + 1)
    mixed, probs, mixed_w = cutmix(x, y, w, num_classes=n, generator=torch.Generator().manual_seed(seed))
    source = mixed[:, 0].long()  # the sample each pixel came from
    own = torch.arange(n).view(n, 1, 1)
    partner = torch.where(source != own, source, -1).flatten(1).max(1).values
    partner = torch.where(partner >= 0, partner, torch.arange(n))
    lam = 1 - (source != own).any(0).float().mean()
    assert torch.allclose(probs.sum(1), torch.ones(n))
    expected = lam * torch.eye(n) + (1 - lam) * torch.eye(n)[partner]
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(mixed_w, lam * w + (1 - lam) * w[partner], atol=1e-5)


def test_cutmix_pastes_one_box_shared_by_the_batch():
    x = _constant_per_sample(8)
    mixed, _, _ = cutmix(x, torch.zeros(8, 4), generator=torch.Generator().manual_seed(1))
    changed = (mixed != x).any(1)
    box = changed.any(0)
    rows, cols = box.any(1).nonzero().squeeze(1), box.any(0).nonzero().squeeze(1)
    assert box.sum() == len(rows) * len(cols) > 0
    assert ((changed == box) | ~changed.flatten(1).any(1).view(8, 1, 1)).all()


def test_cutmix_keeps_soft_labels_as_probabilities_and_weights_optional():
    probs = torch.softmax(torch.randn(6, 5), 1)
    _, mixed, w = cutmix(_images(6), probs, generator=torch.Generator().manual_seed(0))
    assert w is None and mixed.shape == (6, 5) and torch.allclose(mixed.sum(1), torch.ones(6))


def test_cutmix_is_reproducible_and_differentiable():
    x = _images(6).requires_grad_()
    a = cutmix(x, torch.arange(6), num_classes=6, generator=torch.Generator().manual_seed(4))
    b = cutmix(x, torch.arange(6), num_classes=6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    a[0].sum().backward()
    assert (x.grad != 0).any()


def test_cutmix_needs_num_classes_for_class_indices():
    with pytest.raises(ValueError, match="num_classes"):
        cutmix(_images(4), torch.arange(4))
    with pytest.raises(ValueError, match="alpha"):
        cutmix(_images(4), torch.arange(4), num_classes=4, alpha=0)


# --- build_augmentation ----------------------------------------------------------------------

def test_build_augmentation_parses_names_case_insensitively():
    aug = build_augmentation(["DSA", " RRC+Flip ", "cutmix", "none", "flip", "rrc"])
    assert isinstance(aug, Augmentation) and aug.names == ("dsa", "rrc+flip", "flip", "rrc")
    x = _images(4)
    assert torch.equal(aug(x, 3), aug(x, 3)) and aug(x, 3).shape == x.shape


@pytest.mark.parametrize("names", [[], ["none"], ["cutmix"], ["None", "CutMix"]])
def test_build_augmentation_without_pixel_transforms_is_none(names):
    assert build_augmentation(names) is None


def test_build_augmentation_rejects_unknown_names():
    with pytest.raises(ValueError, match="'autoaugment'"):
        build_augmentation(["dsa", "autoaugment"])
    with pytest.raises(TypeError):
        build_augmentation("dsa")


# --- ZCA -------------------------------------------------------------------------------------

def _correlated(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(48, 48, generator=g)
    return (torch.randn(n, 48, generator=g) @ mixing + 3.0).view(n, 3, 4, 4)


def test_zca_whitens_training_data_to_identity_covariance():
    x = _correlated()
    white = ZCA.fit(x, eps=1e-8)(x).flatten(1).double()
    assert white.mean(0).abs().max() < 1e-3
    assert torch.allclose(torch.cov(white.T), torch.eye(48, dtype=torch.float64), atol=1e-3)


def test_zca_matches_kornias_formula():
    x = _correlated(500).flatten(1).double()
    centred = x - x.mean(0)
    u, s, _ = torch.linalg.svd(centred.T @ centred / (len(x) - 1))
    expected = u @ torch.diag((s + 0.1).rsqrt()) @ u.T
    assert torch.allclose(ZCA.fit(x.float()).matrix.double(), expected, atol=1e-4)


def test_zca_rebuilt_from_mean_and_matrix_gives_the_same_result():
    x = _correlated(300)
    zca = ZCA.fit(x)
    assert zca.mean.shape == (48,) and zca.matrix.shape == (48, 48) and zca.matrix.dtype == torch.float32
    rebuilt = ZCA(zca.mean.clone(), zca.matrix.clone())
    out = rebuilt(x[:7])
    assert out.shape == (7, 3, 4, 4) and torch.equal(out, zca(x[:7]))
    assert torch.equal(zca.to("cpu")(x[:7]), out)


def test_zca_rejects_mismatched_shapes():
    zca = ZCA.fit(_correlated(100))
    with pytest.raises(ValueError, match="48 features"):
        zca(torch.rand(2, 3, 5, 5))
    with pytest.raises(ValueError, match="matrix"):
        ZCA(torch.zeros(4), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="2 samples"):
        ZCA.fit(torch.rand(1, 48))
