"""A picture of a distilled set: one row per class, its first samples side by side.

Samples become 8-bit RGB the way a person expects to see them: uint8 codes as stored, float
samples de-normalised (when the file stores normalised values) and mapped to [0, 1] by the
declared value range, or by their own minimum and maximum when there is none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..reader import DDFile
from ..torch.values import to_pixels

try:
    from torchvision.utils import make_grid
except ImportError:
    make_grid = None

PADDING = 2
NAME_CHARS = 24


def _displayable(x: torch.Tensor, dataset: dict[str, Any]) -> torch.Tensor:
    """(N, C, H, W) stored samples → (N, 3, H, W) uint8; min-max over these samples when the
    file gives no value range."""
    x = to_pixels(x, dataset, unknown_range="minmax")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def tile(images: torch.Tensor, columns: int) -> np.ndarray:
    """(N, 3, H, W) uint8 → (height, width, 3) grid, ``columns`` per row, ``PADDING`` black
    pixels around every image: the geometry of ``torchvision.utils.make_grid``, which does it
    when installed."""
    if make_grid is not None:
        return make_grid(images, nrow=columns, padding=PADDING).permute(1, 2, 0).numpy()
    n, _, h, w = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + PADDING) + PADDING, columns * (w + PADDING) + PADDING, 3), np.uint8)
    for k, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        r, c = divmod(k, columns)
        top, left = PADDING + r * (h + PADDING), PADDING + c * (w + PADDING)
        grid[top:top + h, left:left + w] = img
    return grid


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.load_default()
    except OSError:
        return None


def _with_names(grid: Image.Image, names: list[str], centers: list[int]) -> Image.Image:
    """Class names in a white left margin, each centred on its row, when PIL has a default font."""
    font = _font()
    if font is None:
        return grid
    names = [n if len(n) <= NAME_CHARS else n[:NAME_CHARS - 1] + "…" for n in names]
    draw = ImageDraw.Draw(grid)
    margin = 8 + max(int(np.ceil(draw.textlength(n, font=font))) for n in names)
    out = Image.new("RGB", (margin + grid.width, grid.height), "white")
    out.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(out)
    for name, center in zip(names, centers):
        _, top, _, bottom = font.getbbox(name)
        draw.text((4, center - (top + bottom) // 2), name, fill="black", font=font)
    return out


def preview(dd: DDFile, *, per_class: int = 8, classes: int | None = None, scale: int = 1,
            names: bool = True) -> Image.Image:
    """Rows = the first ``classes`` classes, columns = up to ``per_class`` samples of each, in
    stored order; a class with fewer samples leaves black cells."""
    shape = dd.dataset["sample_shape"]
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"preview shows C×H×W samples with 1 or 3 channels; this file's samples are "
                         f"{'×'.join(map(str, shape))}")
    if per_class < 1 or scale < 1 or (classes is not None and classes < 1):
        raise ValueError("per_class, classes and scale must be at least 1")
    shown = dd.num_classes if classes is None else min(classes, dd.num_classes)
    of_class = torch.from_numpy(dd.classes())
    picks = [torch.nonzero(of_class == c).flatten()[:per_class] for c in range(shown)]
    columns = max(1, max(len(p) for p in picks))
    samples = _displayable(torch.from_numpy(dd.samples())[torch.cat(picks)], dd.dataset)
    cells = torch.zeros((shown * columns, 3, shape[1], shape[2]), dtype=torch.uint8)
    start = 0
    for c, p in enumerate(picks):
        cells[c * columns:c * columns + len(p)] = samples[start:start + len(p)]
        start += len(p)
    grid = Image.fromarray(np.ascontiguousarray(tile(cells, columns)))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    if not names:
        return grid
    centers = [scale * (PADDING + r * (shape[1] + PADDING)) + scale * shape[1] // 2 for r in range(shown)]
    return _with_names(grid, dd.class_names[:shown], centers)
