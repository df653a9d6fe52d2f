"""Replaying stored views in training: the teacher's inputs rebuilt exactly, each view once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ddformat
from ddformat.codecs.soft_labels import expand_top_k as expand_numpy
from ddformat.codecs.views import Views, quantise_views
from ddformat.evaluation.augment import RandomResizedCropFlip, cutmix
from ddformat.evaluation.relabel import draw_views
from ddformat.torch import DistilledDataset
from ddformat.torch.views import ViewReplay, box_masks, expand_top_k, replay_views, resized_crops

N, K, SIZE, ROUNDS = 12, 4, 10, 3


def _views_file(tmp_path, schedule: str = "cycle", weights=None, batch_size: int = 5, rounds: int = ROUNDS):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8)
    labels = np.arange(N) % K
    order = np.argsort(labels, kind="stable")  # class-grouped already, so stored order is this order
    x, labels = x[order], labels[order]
    records = draw_views(N, SIZE, SIZE, rounds, batch_size, generator=torch.Generator().manual_seed(7))
    idx, q, kl = quantise_views(rng.dirichlet(np.ones(K), (rounds, N)), 3, 8)
    views = Views(**records, indices=idx, levels=q, bits=8, temperature=4.0, kl_to_source=kl)
    recipe = {"loss": "kl", "temperature": 4.0, "regime": "sl", "view_schedule": schedule}
    if weights is not None:
        recipe["weighting"] = {"scheme": "explicit", "normalization": "none"}
    path = ddformat.save(tmp_path / "views.dd", x, labels, num_classes=K, views=views, weights=weights,
                         recipe=recipe)
    return path, x, labels, records


def test_replayed_views_are_the_augmented_batches_the_records_were_drawn_from_bit_for_bit(tmp_path):
    """Round 0's first batch augmented by RandomResizedCropFlip and cutmix with the generator
    the records were drawn from, against the loader's replay of those views from the file."""
    path, x, labels, _ = _views_file(tmp_path)
    g = torch.Generator().manual_seed(7)
    order = torch.randperm(N, generator=g)  # draw_views' round order, then per batch: crops, flips, CutMix
    batch = order[:5]
    ds = DistilledDataset(path)
    expected = RandomResizedCropFlip(flip=0.5)(ds.samples[batch], g)
    expected, _, _ = cutmix(expected, torch.from_numpy(labels)[batch], num_classes=K, generator=g)
    shuffled = batch[torch.tensor([3, 0, 4, 1, 2])]  # another batch composition and order
    replayed = ds.views.inputs(0, torch.cat([shuffled, order[5:]]))[:5]
    assert torch.equal(replayed, expected[torch.tensor([3, 0, 4, 1, 2])])


def _recorded_epochs(ds, epochs: int, **loader_args):
    """(round, sample) of every view a loader yields over ``epochs`` epochs, and its weights."""
    seen, weights = [], []
    loader = ds.loader(batch_size=5, **loader_args)
    real_inputs = ds.views.inputs

    def inputs(round_, index):
        seen.extend((round_, int(i)) for i in index)
        return real_inputs(round_, index)

    ds.views.inputs = inputs
    for _ in range(epochs):
        for _, y, w in loader:
            weights.append(w)
            assert torch.allclose(y.sum(1), torch.ones(len(y)))
    return seen, torch.cat(weights)


@pytest.mark.parametrize("schedule", ["cycle", "shuffle"])
def test_each_epoch_replays_every_view_of_its_scheduled_round_exactly_once(tmp_path, schedule):
    path, *_ = _views_file(tmp_path, schedule)
    ds = DistilledDataset(path)
    seen, _ = _recorded_epochs(ds, 2 * ROUNDS, seed=3)
    epochs = [seen[e * N:(e + 1) * N] for e in range(2 * ROUNDS)]
    rounds = [{r for r, _ in views} for views in epochs]
    assert all(len(r) == 1 for r in rounds)
    for views in epochs:
        assert sorted(i for _, i in views) == list(range(N))
    rounds = [r.pop() for r in rounds]
    if schedule == "cycle":
        assert rounds == [0, 1, 2, 0, 1, 2]
    assert sorted(rounds[:ROUNDS]) == sorted(rounds[ROUNDS:]) == list(range(ROUNDS))


def test_ranks_replay_disjoint_views_that_together_are_the_round(tmp_path):
    path, *_ = _views_file(tmp_path)
    per_rank = []
    for rank in range(3):
        seen, _ = _recorded_epochs(DistilledDataset(path), 1, rank=rank, world_size=3, seed=1)
        per_rank.append(set(seen))
    assert sum(len(s) for s in per_rank) == N and set().union(*per_rank) == {(0, i) for i in range(N)}


def test_replayed_views_carry_their_samples_weights_and_stored_labels(tmp_path):
    weights = np.linspace(0.5, 3.0, N).astype(np.float32)
    path, _, labels, _ = _views_file(tmp_path, weights=weights)
    ds = DistilledDataset(path)
    with ddformat.open(path) as f:
        stored = f.views()
    loader = ds.loader(batch_size=N, shuffle=False)
    _, y, w = next(iter(loader))
    assert torch.equal(w, ds.weights) and not torch.equal(w, torch.ones(N))
    assert torch.equal(y, torch.from_numpy(stored.probabilities(K, np.zeros(N, np.int64), np.arange(N))))


def test_device_expansion_of_top_k_labels_equals_the_numpy_decoder():
    rng = np.random.default_rng(0)
    for k, bits, classes in ((1, 1, 3), (3, 4, 5), (5, 8, 5), (4, 16, 100)):
        probs = rng.dirichlet(np.full(classes, 0.2), 64)
        idx, q, _ = quantise_views(probs, k, bits)
        q[::7] = 0  # rows without any kept mass
        expected = expand_numpy(idx, q, classes, bits)
        got = expand_top_k(torch.from_numpy(idx), torch.from_numpy(q), classes, bits)
        assert torch.equal(got, torch.from_numpy(expected))
    one = expand_top_k(torch.tensor([[0]]), torch.tensor([[1]]), 1, 4)  # all classes kept: divided by their sum
    assert torch.equal(one, torch.ones(1, 1))


def _spec_resized_crop(x: np.ndarray, box, mirror: bool, out_h: int, out_w: int) -> np.ndarray:
    """Spec § 3.8 replay, written from its text: output pixel (y, x) samples the crop at
    ((y + ½)·height/H − ½, (x + ½)·width/W − ½), clamped to its pixels, bilinearly; then the mirror."""
    top, left, h, w = box
    cy = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
    cx = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
    y0, x0 = np.floor(cy).astype(int), np.floor(cx).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (cy - y0)[:, None], (cx - x0)[None, :]
    crop = x[:, top:top + h, left:left + w]
    out = ((1 - wy) * (1 - wx) * crop[:, y0][:, :, x0] + (1 - wy) * wx * crop[:, y0][:, :, x1]
           + wy * (1 - wx) * crop[:, y1][:, :, x0] + wy * wx * crop[:, y1][:, :, x1])
    return out[:, :, ::-1] if mirror else out


@pytest.mark.parametrize("size", [None, (5, 12)], ids=["sample-size", "other-size"])
def test_resized_crops_are_the_spec_formula_and_torchvision_resized_crop(size):
    """The replay geometry against two independent references: the spec's sampling formula in
    numpy, and torchvision's ``resized_crop`` without antialiasing, mirrored with ``hflip``."""
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(0)
    n, height, width = 40, 7, 9
    x = torch.from_numpy(rng.random((n, 2, height, width)))
    hs, ws = rng.integers(1, height + 1, n), rng.integers(1, width + 1, n)
    hs[:3], ws[:3] = (height, 1, 1), (width, 1, width)  # the whole sample, one pixel, one row
    boxes = np.stack([rng.integers(0, height - hs + 1), rng.integers(0, width - ws + 1), hs, ws], 1)
    mirror = rng.random(n) < 0.5
    out = resized_crops(x, torch.from_numpy(boxes), torch.from_numpy(mirror), size)
    out_h, out_w = size or (height, width)
    for i in range(n):
        spec = _spec_resized_crop(x[i].numpy(), boxes[i], bool(mirror[i]), out_h, out_w)
        np.testing.assert_allclose(out[i].numpy(), spec, rtol=0, atol=1e-12, err_msg=f"view {i}")
        tv = TF.resized_crop(x[i], *map(int, boxes[i]), [out_h, out_w], antialias=False)
        np.testing.assert_allclose(out[i], TF.horizontal_flip(tv) if mirror[i] else tv, rtol=0, atol=1e-12)


def test_mix_boxes_cover_exactly_their_pixels_and_replay_pastes_the_partners_view_there():
    rng = np.random.default_rng(1)
    height, width = 6, 5
    boxes = np.array([[0, 0, 6, 5], [2, 1, 3, 2], [5, 4, 1, 1], [3, 3, 0, 2], [0, 0, 0, 0]])
    masks = box_masks(torch.from_numpy(boxes), height, width)
    for mask, (top, left, h, w) in zip(masks, boxes):
        expected = np.zeros((1, height, width), bool)
        expected[:, top:top + h, left:left + w] = True
        assert np.array_equal(mask.numpy(), expected)
    samples = torch.from_numpy(rng.random((5, 1, height, width)))
    crops = torch.tensor([[0, 0, 6, 5], [1, 1, 4, 3], [0, 2, 6, 3], [2, 0, 2, 5], [0, 0, 3, 3]])
    flips = torch.tensor([False, True, False, True, False])
    partners = torch.tensor([1, -1, 4, 0, -1])
    index = torch.tensor([0, 2, 3, 1])
    got = replay_views(samples, crops, flips, partners, torch.from_numpy(boxes), index)
    own = resized_crops(samples, crops, flips)
    for row, i in enumerate(index.tolist()):
        expected = own[i].clone()
        if partners[i] >= 0:
            expected = torch.where(masks[i], own[partners[i]], expected)
        assert torch.equal(got[row], expected), f"view of sample {i}"


def test_replay_refuses_samples_without_channels_and_cycles_rounds_by_default():
    rng = np.random.default_rng(2)
    idx, q, _ = quantise_views(rng.dirichlet(np.ones(3), (4, 2)), 2, 4)
    views = Views(np.tile([0, 0, 2, 2], (4, 2, 1)), np.zeros((4, 2), bool), np.full((4, 2), -1),
                  np.zeros((4, 2, 4), np.int64), idx, q, 4)
    with pytest.raises(ValueError, match=r"^views replay on \(N, C, H, W\) samples, got shape \(2, 2, 2\)$"):
        ViewReplay(views, torch.zeros(2, 2, 2), 3)
    replay = ViewReplay(views, torch.zeros(2, 1, 2, 2), 3)
    assert [replay.round_of(e) for e in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
