"""``DistilledDataset``: a ``.dd`` file decoded once into tensors that stay on the training device.

A distilled set is small (a few samples per class), so decoding it once and keeping samples,
labels and loss weights resident on the GPU beats any per-step pipeline: a batch is one indexing
operation, with no worker processes, no host-to-device copies and no per-sample Python. The
dataset also works with a plain :class:`torch.utils.data.DataLoader` (and
:class:`~torch.utils.data.DistributedSampler`) for code that expects one.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterator, Protocol

import torch
from torch.utils.data import Dataset

from ..container.sources import ByteSource
from ..limits import DEFAULT_LIMITS, Limits
from ..reader import DDFile
from .values import to_model_units
from .views import ViewReplay

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


def samples_tensor(file: DDFile, device: str | torch.device = "cpu") -> torch.Tensor:
    """A file's samples as a tensor on ``device``, decoded there when the codec can (``ruo``
    entropy-decodes and synthesises on the GPU)."""
    device = torch.device(device)

    def decode(codec: Any, section: Any, layout: Any, aux: Any) -> torch.Tensor:
        if hasattr(codec, "decode_tensor"):
            return codec.decode_tensor(section, layout, aux, device)
        return torch.from_numpy(codec.decode(section, layout, aux)).to(device)

    return file.decode_samples(decode)


class ResidentSet(Protocol):
    """What :class:`DeviceLoader` batches from: aligned tensors on one device. A
    :class:`DistilledDataset` is one; so is evaluation's set built from plain tensors."""

    samples: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    device: torch.device

    def __len__(self) -> int: ...


class DistilledDataset(Dataset):
    """Samples, labels and loss weights of a ``.dd`` file, decoded once and kept on ``device``.

    Items are ``(x, y, w)``: a float32 sample (after ``transform``, a callable on one sample),
    its label (int64 class index, or float32 probabilities for soft-label files) and its
    float32 loss weight (the recipe's scheme, globally normalised if the recipe says so).
    Pass ``normalize=False`` to keep samples in ``value_range`` units when the file carries
    normalisation statistics that were not applied yet.

    A file with stored views (spec § 3.8) also has :attr:`views`, a :class:`ViewReplay`; its
    :meth:`loader` then yields each epoch's views with their soft labels (see :class:`DeviceLoader`).
    """

    def __init__(
        self,
        path_or_url: str | os.PathLike[str] | ByteSource,
        device: str | torch.device = "cpu",
        transform: Transform | None = None,
        normalize: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.device = torch.device(device)
        self.transform = transform
        with DDFile(path_or_url, limits) as file:
            self.header = file.header
            self.size: int = file.size
            self.bpc: float = file.bpc
            self.label_kind: str = file.label_kind
            self.samples, self.normalized = to_model_units(samples_tensor(file, self.device), file.dataset, normalize)
            self.labels: torch.Tensor = torch.from_numpy(file.labels()).to(self.device)
            self.weights: torch.Tensor = torch.from_numpy(file.loss_weights()).to(self.device)
            views = file.views()
            self.views: ViewReplay | None = None if views is None else ViewReplay(
                views, self.samples, self.num_classes, file.view_schedule)
            file.verify_content_hash()

    @property
    def classes(self) -> list[str]:
        """Class names, indexed by class."""
        return self.header.dataset["class_names"]

    @property
    def num_classes(self) -> int:
        return self.header.dataset["num_classes"]

    @property
    def recipe(self) -> dict[str, Any]:
        return self.header.recipe

    @property
    def bits(self) -> dict[str, Any]:
        """The file's bit account: ``total``, ``components`` and ``per_class``."""
        return self.header.bits

    def __len__(self) -> int:
        return self.samples.shape[0]

    def __getitem__(self, index: int) -> Batch:
        x = self.samples[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index], self.weights[index]

    def loader(
        self,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        batch_transform: Transform | None = None,
        replay: bool = True,
    ) -> "DeviceLoader":
        """Worker-free batches ``(x, y, w)`` indexed from the resident tensors, or the stored views
        replayed (``replay``, when the file has views); see :class:`DeviceLoader`."""
        return DeviceLoader(self, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                            world_size=world_size, epoch=epoch, batch_transform=batch_transform, replay=replay)


class DeviceLoader:
    """Iterates a :class:`DistilledDataset` (any :class:`ResidentSet`) in batches without leaving its device.

    Each pass over the loader is one epoch: its order is a permutation drawn on the CPU from
    ``seed + epoch`` (the same on every rank, and the same as
    :class:`~torch.utils.data.DistributedSampler`'s), after which the epoch counter advances;
    :meth:`set_epoch` sets it explicitly, as DDP training loops do. For ``world_size > 1`` each
    rank takes every ``world_size``-th index, so all ranks see the same number of samples and
    batches: the order is padded by wrapping around when N does not divide evenly, or its tail
    dropped with ``drop_last`` (which also drops a final short batch).

    The dataset's per-sample ``transform`` is not used here; ``batch_transform`` is applied to
    each whole batch instead, so augmentation runs as a few batched tensor operations on the
    device rather than B small ones.

    When the dataset has stored views (a ``views`` :class:`ViewReplay`, as a
    :class:`DistilledDataset` of a file with a ``views`` section has) and ``replay`` is true, an
    epoch replays the round of views its schedule picks (``recipe.view_schedule``, drawn from
    ``seed`` under ``shuffle``): a batch is the views of its samples, rebuilt from their records
    on the device (``batch_transform`` after that, if given), with their stored probabilities as
    labels and their samples' weights. Ranks take disjoint samples, hence disjoint views, and one
    epoch replays each view of its round once when ``world_size`` divides N.
    """

    def __init__(
        self,
        dataset: ResidentSet,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        batch_transform: Transform | None = None,
        replay: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = epoch
        self.batch_transform = batch_transform
        self.replay: ViewReplay | None = getattr(dataset, "views", None) if replay else None
        n = len(dataset)
        self.num_samples = n // world_size if drop_last else math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use the order of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices (CPU int64) for ``epoch``, in visiting order."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(n)
        total = self.num_samples * self.world_size
        if total > n:
            order = order.repeat(math.ceil(total / n))
        return order[:total][self.rank::self.world_size]

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch += 1
        return self._batches(self.indices(epoch).to(self.dataset.device), epoch)

    def _batches(self, order: torch.Tensor, epoch: int) -> Iterator[Batch]:
        ds, replay = self.dataset, self.replay
        round_ = None if replay is None else replay.round_of(epoch, self.seed)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            i = order[start:start + self.batch_size]
            if replay is None:
                x, y = ds.samples.index_select(0, i), ds.labels.index_select(0, i)  # faster than x[i] on CPU
            else:
                x, y = replay.inputs(round_, i), replay.labels(round_, i)
            if self.batch_transform is not None:
                x = self.batch_transform(x)
            yield x, y, ds.weights.index_select(0, i)
