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
from ddformat.torch.views import expand_top_k

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
