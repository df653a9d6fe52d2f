"""The real training data a producer distils from, in the space the synthetic samples live in.

Producers distil in normalised space, as DM and MTT do: real uint8 images become
``(x/255 - mean) / std`` with the per-channel mean and std of the training split, and the file
records that normalisation as already applied (RUO's samples are decoded floats; a producer
storing pixels maps back with these statistics). The matching losses and RUO's Phase 1 fit draw
real images of one class at a time, so this keeps per-class indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddformat.evaluation import realdata


@dataclass
class RealData:
    """Normalised real training images ``(N, C, H, W)`` with int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: list[float]
    std: list[float]
    class_names: list[str]
    source: str

    @classmethod
    def load(cls, name: str, classes: int | None = None, device: str | torch.device = "cpu") -> "RealData":
        """The train split of :mod:`ddformat.evaluation.realdata` source ``name``, restricted to its first
        ``classes`` classes when given (small runs), normalised with its own statistics."""
        x, y = realdata.load(name, "train")
        names = realdata.class_names(name)
        if classes is not None:
            if not 1 <= classes <= len(names):
                raise ValueError(f"{name} has {len(names)} classes; cannot keep the first {classes}")
            keep = y < classes
            x, y, names = x[keep], y[keep], names[:classes]
        x = x.to(torch.float32) / 255.0
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        return cls(x.to(device), y.to(device), mean.tolist(), std.tolist(), names, name)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def normalization(self) -> dict[str, object]:
        """The file's ``dataset.normalization``: samples are stored already normalised."""
        return {"mean": self.mean, "std": self.std, "applied": True}

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Images in this data's normalised space back to uint8 pixels (normalisation undone,
        rounded, clipped to 0…255), on the images' device."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)

    def indices(self, c: int) -> torch.Tensor:
        members = torch.nonzero(self.labels == c).flatten()
        if len(members) == 0:
            raise ValueError(f"{self.source} has no training image of class {c}")
        return members

    def batch(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` images of class ``c`` drawn without replacement (all of them if there are fewer)."""
        members = self.indices(c)
        pick = torch.randperm(len(members), generator=generator)[:n].to(members.device)
        return self.images[members[pick]]

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Exactly ``n`` images of class ``c``: distinct when the class has that many."""
        members = self.indices(c)
        if len(members) >= n:
            return self.batch(c, n, generator)
        return self.images[members[torch.randint(len(members), (n,), generator=generator).to(members.device)]]
