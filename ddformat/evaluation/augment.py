"""Augmentation as a few batched tensor operations on the training device, and ZCA whitening.

A distilled set lives on the GPU (:class:`~ddformat.DistilledDataset`), so its augmentation must
too: every transform here handles a whole (N, C, H, W) batch at once, draws its random
parameters (a few numbers per sample) on the CPU from a CPU :class:`torch.Generator`, so results
are reproducible and identical on every device, and is differentiable with respect to the
pixels, so the same code serves students trained on a set and distillation methods that
backpropagate through the augmentation into synthetic images.

- :class:`DSA`: Differentiable Siamese Augmentation, the augmentation of DC/DSA, DM, MTT and RUO.
- :class:`RandomResizedCropFlip`: torchvision's ``RandomResizedCrop`` + horizontal flip, batched,
  the large-scale recipe of paper 002 (SRe2L-style evaluation).
- :func:`cutmix`: CutMix on a batch, mixing labels and loss weights by the pasted area.
- :func:`build_augmentation`: a file recipe's ``augmentation`` list as one ``(x, seed)`` callable.
- :class:`ZCA`: ZCA whitening as MTT and KIP apply it (``kornia.enhance.ZCAWhitening``, eps 0.1).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..torch.views import box_masks, resized_crops

Step = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator | None, n: int, batchwise: bool = False) -> torch.Tensor:
    """(n,) float32 U[0, 1) on the CPU; one value repeated when ``batchwise``."""
    u = torch.rand(1 if batchwise else n, generator=generator)
    return u.expand(n)


def _integers(generator: torch.Generator | None, low: int, high: int, n: int, batchwise: bool = False) -> torch.Tensor:
    """(n,) int64 uniform on [low, high) on the CPU; one value repeated when ``batchwise``."""
    k = torch.randint(low, high, (1 if batchwise else n,), generator=generator)
    return k.expand(n)


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) parameters as (N, 1, 1, 1) on ``x``'s device and in its dtype, to broadcast over pixels."""
    return values.to(x.device, x.dtype).view(-1, 1, 1, 1)


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"augmentation expects a float (N, C, H, W) batch, got {x.dtype} of shape {tuple(x.shape)}")


def _flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples whose entry of the (N,) bool ``flip`` is true."""
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p`` (torchvision's ``RandomHorizontalFlip``)."""
    _check_images(x)
    return _flip_where(x, _uniform(generator, x.shape[0]) < p)


class DSA:
    """Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021), as in the DC/DSA code base.

    ``strategy`` lists transforms joined by ``_``: ``color`` (brightness, then saturation, then
    contrast), ``crop`` (integer translation by up to ``crop``·size with zero fill), ``cutout``
    (one zeroed square of side ``cutout``·size), ``flip``, ``scale`` (independent x/y factors in
    [1/scale, scale]) and ``rotate`` (±``rotate`` degrees). Like the original's default mode
    (``ParamDiffAug.aug_mode = 'S'``, used by DC/DSA, DM, MTT and the methods built on them),
    **each call applies one transform chosen at random** from the list, not all of them in turn;
    the choice is drawn from the same generator, so a seed fixes it too.

    Parameters are drawn per sample from a CPU generator seeded with ``seed``, so two batches of
    the same size augmented with the same seed get the same transform at every index: the siamese
    property that lets a matching loss compare real and synthetic batches. The original code,
    when given a seed, instead shares one parameter set across the whole batch, so that a real
    batch and a synthetic batch of *different* sizes match; ``batchwise=True`` does that.
    Unseeded student training in the original draws per sample, which is the default here.

    Scale and rotation resample bilinearly (``grid_sample``, ``align_corners=True``, zero
    padding) exactly as the original; everything is differentiable with respect to ``x``.
    """

    TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")

    def __init__(self, strategy: str = "color_crop_cutout_flip_scale_rotate", *, brightness: float = 1.0,
                 saturation: float = 2.0, contrast: float = 0.5, crop: float = 0.125, cutout: float = 0.5,
                 scale: float = 1.2, rotate: float = 15.0, flip: float = 0.5) -> None:
        names = tuple(strategy.lower().split("_"))
        unknown = [n for n in names if n not in self.TRANSFORMS]
        if not strategy or unknown:
            raise ValueError(f"DSA strategy {strategy!r}: unknown transform(s) {unknown}; "
                             f"choose from {', '.join(self.TRANSFORMS)} joined by '_'")
        if scale < 1:
            raise ValueError(f"DSA scale must be at least 1, got {scale}")
        self.strategy = names
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        self.crop, self.cutout, self.scale, self.rotate, self.flip = crop, cutout, scale, rotate, flip

    def __repr__(self) -> str:
        return f"DSA({'_'.join(self.strategy)!r})"

    def __call__(self, x: torch.Tensor, seed: int, *, batchwise: bool = False) -> torch.Tensor:
        """``x`` augmented by one transform; the same ``seed`` gives the same transforms."""
        return self.apply(x, torch.Generator().manual_seed(seed), batchwise=batchwise)

    def apply(self, x: torch.Tensor, generator: torch.Generator, *, batchwise: bool = False) -> torch.Tensor:
        """:meth:`__call__` with the random parameters drawn from ``generator``."""
        _check_images(x)
        choice = self.strategy[int(_integers(generator, 0, len(self.strategy), 1)[0])]
        return getattr(self, f"_{choice}")(x, generator, batchwise)

    def _color(self, x: torch.Tensor, g: torch.Generator, batchwise: bool) -> torch.Tensor:
        n = x.shape[0]
        x = x + (_per_sample(_uniform(g, n, batchwise), x) - 0.5) * self.brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_per_sample(_uniform(g, n, batchwise), x) * self.saturation) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (_per_sample(_uniform(g, n, batchwise), x) + self.contrast) + mean

    def _crop(self, x: torch.Tensor, g: torch.Generator, batchwise: bool) -> torch.Tensor:
        n, c, h, w = x.shape
        shift_h, shift_w = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
        dy = _integers(g, -shift_h, shift_h + 1, n, batchwise).to(x.device)
        dx = _integers(g, -shift_w, shift_w + 1, n, batchwise).to(x.device)
        # Output (i, j) reads input (i + dy, j + dx); indices off the image land on a 1-pixel zero border.
        padded = F.pad(x, (1, 1, 1, 1))
        rows = (torch.arange(h, device=x.device) + dy[:, None] + 1).clamp(0, h + 1)
        cols = (torch.arange(w, device=x.device) + dx[:, None] + 1).clamp(0, w + 1)
        x = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))
        return x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))

    def _cutout(self, x: torch.Tensor, g: torch.Generator, batchwise: bool) -> torch.Tensor:
        n, _, h, w = x.shape
        size_h, size_w = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        top = _integers(g, 0, h + 1 - size_h % 2, n, batchwise).to(x.device) - size_h // 2
        left = _integers(g, 0, w + 1 - size_w % 2, n, batchwise).to(x.device) - size_w // 2
        r = torch.arange(h, device=x.device).view(1, h, 1)
        s = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((r >= top.view(n, 1, 1)) & (r < top.view(n, 1, 1) + size_h)
                  & (s >= left.view(n, 1, 1)) & (s < left.view(n, 1, 1) + size_w))
        return x * (~inside).unsqueeze(1).to(x.dtype)

    def _flip(self, x: torch.Tensor, g: torch.Generator, batchwise: bool) -> torch.Tensor:
        return _flip_where(x, _uniform(g, x.shape[0], batchwise) < self.flip)

    def _scale(self, x: torch.Tensor, g: torch.Generator, batchwise: bool) -> torch.Tensor:
        n = x.shape[0]
        lo, span = 1.0 / self.scale, self.scale - 1.0 / self.scale
        sx = _uniform(g, n, batchwise) * span + lo
        sy = _uniform(g, n, batchwise) * span + lo
        zero = torch.zeros_like(sx)
        return self._resample(x, torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1))

    def _rotate(self, x: torch.Tensor, g: torch.Generator, batchwise: bool) -> torch.Tensor:
        angle = (_uniform(g, x.shape[0], batchwise) - 0.5) * (2 * self.rotate / 180 * math.pi)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        return self._resample(x, torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1))

    @staticmethod
    def _resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)


class RandomResizedCropFlip:
    """torchvision's ``RandomResizedCrop`` followed by a random horizontal flip, for a whole batch.

    Each sample gets its own crop, drawn with torchvision's rule: up to 10 tries of an area
    fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``, rounded to whole pixels,
    keeping the first that fits; else the central crop of the nearest allowed aspect ratio.
    All crops are resized to ``size`` (default: the input size) in one ``grid_sample`` call,
    bilinear with ``align_corners=False`` and sampling points clamped to the crop's pixel
    centres, which is what torchvision's resize of the cropped image computes. There is no
    antialiasing, which only matters when a crop is *shrunk* (crops of a set stored at training
    resolution are only ever enlarged).
    """

    def __init__(self, size: tuple[int, int] | None = None, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: float = 0.5) -> None:
        if not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop needs 0 < low <= high for scale {scale} and ratio {ratio}")
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.flip = flip

    def __repr__(self) -> str:
        return f"RandomResizedCropFlip(size={self.size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip})"

    def crop_boxes(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 4) int64 boxes ``(top, left, height, width)`` drawn as torchvision draws them."""
        tries = 10
        area = torch.empty(n, tries).uniform_(*self.scale, generator=generator) * (height * width)
        log_ratio = torch.empty(n, tries).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]),
                                                   generator=generator)
        aspect = log_ratio.double().exp()
        w = (area.double() * aspect).sqrt().round().long()
        h = (area.double() / aspect).sqrt().round().long()
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.int().argmax(1, keepdim=True)
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        fallback_h, fallback_w = self._central_size(height, width)
        found = fits.any(1)
        h = torch.where(found, h, fallback_h)
        w = torch.where(found, w, fallback_w)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        top = torch.where(found, (u[:, 0] * (height - h + 1)).floor().long(), (height - h) // 2)
        left = torch.where(found, (u[:, 1] * (width - w + 1)).floor().long(), (width - w) // 2)
        return torch.stack([top, left, h, w], 1)

    def _central_size(self, height: int, width: int) -> tuple[int, int]:
        """torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio."""
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            return round(width / self.ratio[0]), width
        if in_ratio > self.ratio[1]:
            return height, round(height * self.ratio[1])
        return height, width

    def draw(self, n: int, height: int, width: int,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 4) crop boxes (:meth:`crop_boxes`) and (n,) bool mirror flags, drawn in that order:
        the record of a view (spec § 3.8) that :meth:`__call__` applies."""
        boxes = self.crop_boxes(n, height, width, generator)
        return boxes, torch.rand(n, generator=generator, dtype=torch.float64) < self.flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Crops of ``x`` resized to ``size``, each mirrored with probability ``flip``."""
        _check_images(x)
        n, _, height, width = x.shape
        return resized_crops(x, *self.draw(n, height, width, generator), self.size)


def draw_cutmix(n: int, height: int, width: int, alpha: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """What :func:`cutmix` draws for a batch of ``n``: the partner permutation, the pasted box
    ``(top, left, height, width)`` (int64 (4,)) and the kept fraction ``lam`` (after clipping)."""
    perm = torch.randperm(n, generator=generator)
    # torch has no generator-driven Beta sampler: a numpy generator seeded from ``generator`` draws the box.
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    lam = float(rng.beta(alpha, alpha))
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (height * width)
    return perm, torch.tensor([int(y0), int(x0), int(y1 - y0), int(x1 - x0)]), lam


def cutmix(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """CutMix (Yun et al. 2019) on a batch: paste one box of a shuffled copy into every sample.

    As in the CutMix paper's code and timm: one ``lam ~ Beta(alpha, alpha)`` per batch, a box
    of side ``sqrt(1 - lam)`` times the image's, centred uniformly and clipped to the image, and
    one permutation of the batch. Labels become probability rows mixed by the area actually kept
    (``lam`` recomputed after clipping); class indices are one-hot encoded first, which needs
    ``num_classes``. Loss weights ``w`` are mixed the same way, so a pasted sample contributes its
    weight in proportion to its area. Returns ``(x, y_probs, w)``; differentiable in ``x``.
    """
    _check_images(x)
    if alpha <= 0:
        raise ValueError(f"cutmix alpha must be positive, got {alpha}")
    n, _, height, width = x.shape
    if y.is_floating_point():
        if y.ndim != 2 or (num_classes is not None and y.shape[1] != num_classes):
            raise ValueError(f"cutmix soft labels of shape {tuple(y.shape)} for {num_classes} classes")
        probs = y
    elif num_classes is None:
        raise ValueError("cutmix needs num_classes to one-hot encode class-index labels")
    else:
        probs = F.one_hot(y.long(), num_classes).to(torch.float32)
    perm, box, lam = draw_cutmix(n, height, width, alpha, generator)
    perm = perm.to(x.device)
    inside = box_masks(box.view(1, 4).to(x.device), height, width)[0]
    mixed = torch.where(inside, x.index_select(0, perm), x)
    probs = lam * probs + (1.0 - lam) * probs.index_select(0, perm)
    if w is not None:
        w = lam * w + (1.0 - lam) * w.index_select(0, perm)
    return mixed, probs, w


class Augmentation:
    """Several batched transforms applied in order, all drawing from one generator seeded per call."""

    def __init__(self, names: Sequence[str], steps: Sequence[Step]) -> None:
        self.names = tuple(names)
        self.steps = tuple(steps)

    def __repr__(self) -> str:
        return f"Augmentation({list(self.names)})"

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        for step in self.steps:
            x = step(x, generator)
        return x


def _dsa_step() -> Step:
    dsa = DSA()
    return lambda x, g: dsa.apply(x, g)


AUGMENTATIONS: dict[str, Callable[[], Step]] = {
    "dsa": _dsa_step,
    "rrc": lambda: RandomResizedCropFlip(flip=0.0),
    "rrc+flip": lambda: RandomResizedCropFlip(flip=0.5),
    "flip": lambda: random_hflip,
}


def build_augmentation(names: Sequence[str]) -> Augmentation | None:
    """A recipe's ``augmentation`` list as one callable ``(x, seed) -> x``, or None if it has none.

    Names (case-insensitive), applied in the order given: ``dsa`` (:class:`DSA` with its
    standard strategy), ``rrc`` (:class:`RandomResizedCropFlip` without flip), ``rrc+flip``,
    ``flip``; ``none`` adds nothing. ``cutmix`` is skipped here because it also changes labels
    and weights: callers apply :func:`cutmix` themselves, after this, when the list names it.
    """
    if isinstance(names, str):
        raise TypeError(f"augmentation must be a list of names, got the string {names!r}")
    chosen: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key in ("none", "cutmix"):
            continue
        if key not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; known: {', '.join([*AUGMENTATIONS, 'cutmix', 'none'])}")
        chosen.append(key)
    if not chosen:
        return None
    return Augmentation(chosen, [AUGMENTATIONS[key]() for key in chosen])


class ZCA:
    """ZCA whitening as MTT and KIP apply it to CIFAR: ``(x - mean) @ matrix`` on flattened samples.

    :meth:`fit` reproduces ``kornia.enhance.ZCAWhitening(eps=0.1)``: per-feature mean, unbiased
    covariance, ``matrix = U diag(1 / sqrt(S + eps)) Uᵀ`` from its eigendecomposition. ``eps``
    regularises small eigenvalues, so the result is whitened only approximately (exactly as
    eps → 0), which is the point: it sharpens edges without amplifying pixel noise. The ``mean``
    (D,) and ``matrix`` (D, D) float32 tensors are all there is to it, so they can be stored in a
    file and the transform rebuilt with ``ZCA(mean, matrix)``.
    """

    def __init__(self, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        d = mean.numel()
        if mean.ndim != 1 or matrix.shape != (d, d):
            raise ValueError(f"ZCA needs a (D,) mean and a (D, D) matrix, got {tuple(mean.shape)} "
                             f"and {tuple(matrix.shape)}")
        self.mean = mean.to(torch.float32)
        self.matrix = matrix.to(device=self.mean.device, dtype=torch.float32)

    @classmethod
    def fit(cls, x: torch.Tensor, eps: float = 0.1) -> "ZCA":
        """Fit on (N, ...) samples (flattened to (N, D)), on their device; N must exceed 1."""
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(f"ZCA.fit needs at least 2 samples of shape (N, ...), got {tuple(x.shape)}")
        if eps < 0:
            raise ValueError(f"ZCA eps must be non-negative, got {eps}")
        flat = x.flatten(1).to(torch.float32)
        mean = flat.mean(0)
        centred = flat - mean
        cov = (centred.T @ centred).double() / (flat.shape[0] - 1)
        values, vectors = torch.linalg.eigh(cov)
        matrix = (vectors * values.clamp(min=0).add(eps).rsqrt()) @ vectors.T
        return cls(mean, matrix.to(torch.float32))

    def to(self, device: str | torch.device) -> "ZCA":
        """This transform with its tensors on ``device``, so calls there need no copies."""
        return ZCA(self.mean.to(device), self.matrix.to(device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Whitened ``x`` (N, ...) of the fitted feature size, on ``x``'s device and dtype."""
        if x.ndim < 2 or x[0].numel() != self.mean.numel():
            raise ValueError(f"ZCA fitted on {self.mean.numel()} features cannot whiten shape {tuple(x.shape)}")
        mean = self.mean.to(x.device, x.dtype)
        matrix = self.matrix.to(x.device, x.dtype)
        return ((x.flatten(1) - mean) @ matrix).view(x.shape)
