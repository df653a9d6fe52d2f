import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import ddformat
from ddformat import DistilledDataset
from ddformat.torch.losses import weighted_sampler
from ddformat.weighting import loss_weights

SHAPE = (3, 4, 4)
MEAN = [0.5, 0.25, 0.125]
STD = [0.5, 0.25, 2.0]


def _indexed(tmp_path, n=10, num_classes=2, **kwargs):
    """A float32 file whose sample i is filled with the value i, so batches reveal their indices."""
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, *SHAPE)).copy()
    y = np.arange(n) * num_classes // n
    return DistilledDataset(ddformat.save(tmp_path / "indexed.dd", x, y, num_classes=num_classes, **kwargs))


def _index_of(x):
    return x[:, 0, 0, 0].long()


def _codes(n=6):
    return (np.arange(n * 48).reshape(n, *SHAPE) * 7 % 256).astype(np.uint8)


def test_uint8_codes_map_linearly_onto_value_range(tmp_path):
    codes = _codes()
    ds = DistilledDataset(ddformat.save(tmp_path / "u8.dd", codes, np.zeros(6, dtype=np.int64), num_classes=1,
                                        value_range=(-1.0, 3.0)))
    expected = -1.0 + torch.from_numpy(codes).float() * 4.0 / 255.0
    assert ds.samples.dtype == torch.float32
    assert torch.allclose(ds.samples, expected, atol=1e-6)
    assert not ds.normalized


def test_pending_normalization_is_applied_per_channel(tmp_path):
    codes = _codes()
    path = ddformat.save(tmp_path / "norm.dd", codes, np.zeros(6, dtype=np.int64), num_classes=1,
                         normalization={"mean": MEAN, "std": STD, "applied": False})
    scaled = torch.from_numpy(codes).float() / 255.0
    expected = (scaled - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    ds = DistilledDataset(path)
    assert ds.normalized
    assert torch.allclose(ds.samples, expected, atol=1e-5)
    raw = DistilledDataset(path, normalize=False)
    assert not raw.normalized
    assert torch.allclose(raw.samples, scaled, atol=1e-6)


def test_already_applied_normalization_leaves_stored_values_as_is(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)
    ds = DistilledDataset(ddformat.save(tmp_path / "applied.dd", x, np.zeros(4, dtype=np.int64), num_classes=1,
                                        normalization={"mean": MEAN, "std": STD, "applied": True}))
    assert ds.normalized
    assert torch.equal(ds.samples, torch.from_numpy(x))


def test_hard_label_file_yields_class_indices_and_metadata(tmp_path):
    ds = _indexed(tmp_path, class_names=["cat", "dog"], recipe={"loss": "ce", "epochs": 5})
    x, y, w = ds[7]
    assert ds.label_kind == "hard"
    assert ds.labels.dtype == torch.int64 and y.item() == 1
    assert x.shape == SHAPE and w.item() == 1.0
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and len(ds) == 10
    assert ds.recipe["epochs"] == 5
    assert ds.bits["total"] == 8 * ds.size
    assert ds.bpc == pytest.approx(8 * ds.size / 2)


def test_soft_label_file_yields_probability_vectors(tmp_path):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    ds = DistilledDataset(ddformat.save(tmp_path / "soft.dd", _codes(3), probs))
    _, y, _ = ds[1]
    assert ds.label_kind == "soft"
    assert ds.labels.shape == (3, 3) and ds.labels.dtype == torch.float32
    assert y.shape == (3,)
    assert torch.allclose(ds.labels.sum(dim=1), torch.ones(3), atol=1e-3)
    assert ds.labels.argmax(dim=1).tolist() == [0, 1, 2]


def test_loss_weights_follow_the_files_weighting_scheme(tmp_path):
    counts = np.array([1, 3, 2, 2, 4, 8])
    labels = np.array([0, 0, 1, 1, 1, 2])
    recipe = {"weighting": {"scheme": "sqrt", "normalization": "global"}}
    ds = DistilledDataset(ddformat.save(tmp_path / "w.dd", _codes(), labels, weights=counts, recipe=recipe))
    expected = torch.from_numpy(loss_weights(counts, labels, 3, "sqrt", "global"))
    assert ds.weights.dtype == torch.float32
    assert torch.allclose(ds.weights, expected)
    assert ds.weights.mean().item() == pytest.approx(1.0, abs=1e-6)


def test_per_sample_transform_applies_in_getitem(tmp_path):
    ds = _indexed(tmp_path)
    ds.transform = lambda x: x.flip(-1) + 100
    x, _, _ = ds[3]
    assert torch.equal(x, torch.full(SHAPE, 103.0))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [10, 11])
def test_every_rank_gets_the_same_number_of_batches_and_ranks_cover_every_index(tmp_path, world_size, n):
    ds = _indexed(tmp_path, n=n)
    loaders = [ds.loader(3, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    batches = [list(loader) for loader in loaders]
    assert len({len(b) for b in batches}) == 1
    assert all(len(b) == len(loader) for b, loader in zip(batches, loaders))
    seen = [torch.cat([_index_of(x) for x, _, _ in b]) for b in batches]
    assert len({len(s) for s in seen}) == 1
    assert set(torch.cat(seen).tolist()) == set(range(n))
    assert sum(len(s) for s in seen) == world_size * -(-n // world_size)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_rank_shards_match_distributed_sampler(tmp_path, drop_last, shuffle):
    ds = _indexed(tmp_path, n=11)
    for rank in range(3):
        sampler = DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=shuffle, seed=7, drop_last=drop_last)
        sampler.set_epoch(2)
        loader = ds.loader(4, shuffle=shuffle, drop_last=drop_last, seed=7, rank=rank, world_size=3, epoch=2)
        assert loader.indices(2).tolist() == list(sampler)


def test_drop_last_drops_the_uneven_tail_and_the_short_batch(tmp_path):
    ds = _indexed(tmp_path, n=11)
    loaders = [ds.loader(2, drop_last=True, rank=r, world_size=3) for r in range(3)]
    for loader in loaders:
        batches = list(loader)
        assert loader.num_samples == 3 and len(loader) == len(batches) == 1
        assert all(len(x) == 2 for x, _, _ in batches)
    assert len(set(torch.cat([loader.indices(0) for loader in loaders]).tolist())) == 9


def test_each_pass_reshuffles_deterministically_by_seed(tmp_path):
    ds = _indexed(tmp_path, n=20)

    def orders(loader, passes=3):
        return [torch.cat([_index_of(x) for x, _, _ in loader]).tolist() for _ in range(passes)]

    first = orders(ds.loader(4, seed=1))
    assert first[0] != first[1] != first[2]
    assert sorted(first[0]) == list(range(20))
    assert orders(ds.loader(4, seed=1)) == first
    assert orders(ds.loader(4, seed=2)) != first
    loader = ds.loader(4, seed=1)
    loader.set_epoch(2)
    assert orders(loader, 1)[0] == first[2]
    assert loader.epoch == 3


def test_unshuffled_single_rank_loader_visits_in_stored_order(tmp_path):
    ds = _indexed(tmp_path, n=10)
    assert torch.cat([_index_of(x) for x, _, _ in ds.loader(4, shuffle=False)]).tolist() == list(range(10))


def test_batches_are_resident_tensors_matching_labels_and_weights(tmp_path):
    counts = np.arange(1, 11)
    ds = _indexed(tmp_path, n=10, weights=counts, recipe={"weighting": {"scheme": "explicit"}})
    for x, y, w in ds.loader(4, seed=3):
        i = _index_of(x)
        assert x.device == y.device == w.device == ds.device
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and w.dtype == torch.float32
        assert torch.equal(y, ds.labels[i]) and torch.equal(w, ds.weights[i])


def test_batch_transform_runs_once_per_whole_batch(tmp_path):
    ds = _indexed(tmp_path, n=10)
    shapes = []

    def augment(x):
        shapes.append(tuple(x.shape))
        return -x

    batches = list(ds.loader(4, shuffle=False, batch_transform=augment))
    assert shapes == [(4, *SHAPE), (4, *SHAPE), (2, *SHAPE)]
    assert torch.equal(batches[0][0], -ds.samples[:4])


def test_loader_refuses_bad_rank_or_batch_size(tmp_path):
    ds = _indexed(tmp_path, n=4)
    with pytest.raises(ValueError, match="rank"):
        ds.loader(2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        ds.loader(0)


def test_plain_dataloader_with_distributed_sampler_collates_items(tmp_path):
    ds = _indexed(tmp_path, n=10)
    seen = []
    for rank in range(2):
        loader = DataLoader(ds, batch_size=3, sampler=DistributedSampler(ds, num_replicas=2, rank=rank))
        for x, y, w in loader:
            assert x.shape[1:] == SHAPE and y.shape == w.shape == (x.shape[0],)
            assert torch.equal(y, ds.labels[_index_of(x)])
            seen += _index_of(x).tolist()
    assert sorted(seen) == list(range(10))


def test_weighted_sampler_takes_the_datasets_loss_weights(tmp_path):
    ds = _indexed(tmp_path, n=4, weights=np.array([0, 0, 1, 1]), recipe={"weighting": {"scheme": "explicit"}})
    drawn = set(weighted_sampler(ds, num_samples=50, generator=torch.Generator().manual_seed(0)))
    assert drawn == {2, 3}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dataset_keeps_everything_on_the_gpu(tmp_path):
    path = ddformat.save(tmp_path / "gpu.dd", _codes(), np.zeros(6, dtype=np.int64), num_classes=1)
    ds = DistilledDataset(path, device="cuda")
    x, y, w = next(iter(ds.loader(4)))
    assert x.is_cuda and y.is_cuda and w.is_cuda
    assert torch.allclose(ds.samples.cpu(), DistilledDataset(path).samples)
