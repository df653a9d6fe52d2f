"""Replaying stored views (spec § 3.8) on the training device, a batch at a time.

A view is rebuilt from its record: the sample's random-resized crop (resized back to the sample
size, mirrored if flipped) and, for a CutMix view, the partner sample's view of the same round
pasted into the mix box. :func:`resized_crops` is the one implementation of that crop: the
evaluation layer's ``RandomResizedCropFlip`` draws boxes and calls it, so a view replayed here
is, bit for bit, the input the teacher saw when the view was drawn.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..codecs.views import Views


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, mirror: torch.Tensor,
                  size: tuple[int, int] | None = None) -> torch.Tensor:
    """Crops ``boxes`` (N, 4) ``(top, left, height, width)`` of ``x`` (N, C, H, W) resized to
    ``size`` (default H × W), mirrored where the (N,) bool ``mirror`` is set.

    One ``grid_sample`` call, bilinear with ``align_corners=False`` and sampling points clamped
    to the crop's pixel centres: what torchvision's resize of the cropped image computes,
    without antialiasing (crops of a set stored at training resolution are only enlarged).
    Differentiable with respect to ``x``."""
    n, c, height, width = x.shape
    top, left, h, w = boxes.to("cpu", torch.float64).unbind(1)
    mirror = mirror.to("cpu", torch.bool)
    # Output edges [-1, 1] map onto the crop's pixel edges, in grid_sample's normalised units.
    sx = torch.where(mirror, -w / width, w / width)
    sy = h / height
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, (2 * left + w) / width - 1], 1),
                         torch.stack([zero, sy, (2 * top + h) / height - 1], 1)], 1)
    out_h, out_w = size or (height, width)
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, c, out_h, out_w], align_corners=False)
    # Normalised centres of the crop's first and last pixels, per sample and axis (x, y).
    first = torch.stack([(2 * left + 1) / width, (2 * top + 1) / height], 1) - 1
    last = torch.stack([(2 * (left + w) - 1) / width, (2 * (top + h) - 1) / height], 1) - 1
    grid = grid.clamp(first.to(grid).view(n, 1, 1, 2), last.to(grid).view(n, 1, 1, 2))
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, H, W) bool: inside each box ``(top, left, height, width)`` of (N, 4) ``boxes``."""
    top, left, h, w = (b.view(-1, 1, 1) for b in boxes.unbind(1))
    rows = torch.arange(height, device=boxes.device).view(1, height, 1)
    cols = torch.arange(width, device=boxes.device).view(1, 1, width)
    return ((rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)).unsqueeze(1)


def expand_top_k(indices: torch.Tensor, levels: torch.Tensor, num_classes: int, bits: int) -> torch.Tensor:
    """float32 (n, K) distributions of stored top-k ``indices`` and ``levels`` (n, k), by the
    rule of spec § 3.3 ``topk``, on their device; equal to the numpy decoder's
    (:func:`ddformat.codecs.soft_labels.expand_top_k`)."""
    scale = 2**bits
    n = indices.shape[0]
    positive = levels > 0
    zero_classes = num_classes - positive.sum(1)
    total = levels.sum(1)
    leftover = (scale - total).double() / (scale * zero_classes.clamp(min=1)).double()
    denom = torch.where(zero_classes == 0, total, torch.full_like(total, scale)).double()
    out = torch.where(zero_classes > 0, leftover, torch.zeros_like(leftover)).float()
    out = out.view(n, 1).repeat(1, num_classes)
    values = torch.where(positive, levels.double() / denom.clamp(min=1).view(n, 1), leftover.view(n, 1))
    return out.scatter_(1, indices.long(), values.float())


def replay_views(samples: torch.Tensor, crops: torch.Tensor, flips: torch.Tensor, partners: torch.Tensor,
                 mix_boxes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Views of samples ``index`` (B,) from one round's records (crops (N, 4), flips (N,),
    partners (N,) with −1 for unmixed, mix boxes (N, 4), on the samples' device): each sample's
    resized crop, and for a mixed view its partner's crop (of the same round) inside the box."""
    x = resized_crops(samples.index_select(0, index), crops.index_select(0, index), flips.index_select(0, index))
    partner = partners.index_select(0, index)
    mixed = torch.nonzero(partner >= 0).flatten()
    if mixed.numel():
        j = partner.index_select(0, mixed)
        pasted = resized_crops(samples.index_select(0, j), crops.index_select(0, j), flips.index_select(0, j))
        inside = box_masks(mix_boxes.index_select(0, index.index_select(0, mixed)), *x.shape[2:])
        x = x.index_copy(0, mixed, torch.where(inside, pasted, x.index_select(0, mixed)))
    return x


class ViewReplay:
    """A file's views resident on the device of its samples, replayed a batch at a time.

    ``schedule`` maps epochs to rounds (``recipe.view_schedule``): ``cycle`` replays round
    ``epoch mod V``; ``shuffle`` visits the V rounds in an order drawn per block of V epochs from
    ``seed``. :meth:`batch` gives the views of one round for a batch of sample indices."""

    def __init__(self, views: Views, samples: torch.Tensor, num_classes: int, schedule: str = "cycle") -> None:
        if samples.ndim != 4:
            raise ValueError(f"views replay on (N, C, H, W) samples, got shape {tuple(samples.shape)}")
        device = samples.device
        self.samples = samples
        self.num_classes = num_classes
        self.schedule = schedule
        self.bits = views.bits
        as_tensor: Any = lambda a: torch.from_numpy(a).to(device=device, dtype=torch.int64)  # noqa: E731
        self.crops = as_tensor(views.crops)
        self.flips = torch.from_numpy(views.flips).to(device)
        self.partners = as_tensor(views.partners)
        self.mix_boxes = as_tensor(views.mix_boxes)
        self.indices = as_tensor(views.indices)
        self.levels = as_tensor(views.levels)

    @property
    def rounds(self) -> int:
        return self.crops.shape[0]

    def round_of(self, epoch: int, seed: int = 0) -> int:
        """The stored round that ``epoch`` (0-based) replays."""
        if self.schedule == "cycle":
            return epoch % self.rounds
        block = torch.Generator().manual_seed(seed * 1_000_003 + epoch // self.rounds)
        return int(torch.randperm(self.rounds, generator=block)[epoch % self.rounds])

    def inputs(self, round_: int, index: torch.Tensor) -> torch.Tensor:
        """The views ``(round_, index[j])`` as the teacher saw them, (B, C, H, W)."""
        return replay_views(self.samples, self.crops[round_], self.flips[round_], self.partners[round_],
                            self.mix_boxes[round_], index)

    def labels(self, round_: int, index: torch.Tensor) -> torch.Tensor:
        """The stored probabilities of views ``(round_, index[j])``, float32 (B, K)."""
        return expand_top_k(self.indices[round_, index], self.levels[round_, index], self.num_classes, self.bits)
