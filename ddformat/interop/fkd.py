"""Import of FKD / SRe2L relabel output as stored views (spec § 3.8).

SRe2L's ``generate_soft_label.py`` (FKD with CutMix) writes, for every epoch ``e`` and batch
``b``, ``{dir}/epoch_{e}/batch_{b}.tar``: a ``torch.save``'d list ``[coords, flips, mix_index,
mix_lam, mix_bbox, output]``:

* ``coords`` (B, 4) float: the random-resized crop as fractions ``(top/H, left/W, height/H,
  width/W)`` of the image;
* ``flips`` (B,) bool;
* ``mix_index`` (B,) int64: the CutMix permutation of the batch (``None`` without mixing);
  ``mix_lam`` its λ; ``mix_bbox`` ``[r0, c0, r1, c1]``, the pasted rows ``r0:r1`` and columns
  ``c0:c1`` (numpy integers; SRe2L names them ``bbx1, bby1, bbx2, bby2``);
* ``output`` (B, K) fp16: the teacher's logits on the mixed views.

The files do not say which images a batch holds: training replays the relabelling run's order,
a :class:`~torch.utils.data.RandomSampler` seeded with ``--fkd-seed`` (one generator across
epochs) cut by a :class:`~torch.utils.data.BatchSampler`, over the images in ``ImageFolder``
order. The import rebuilds that order with the same two classes, so the ``.dd`` file must hold
the images in ``ImageFolder`` order (what ``ddformat convert`` of the relabelled tree writes).

Files are read with ``torch.load(weights_only=True)``; the only globals it may build beyond
tensors and containers are numpy scalars and dtypes (``mix_bbox`` holds numpy integers).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler
from tqdm.auto import tqdm

from ..codecs.views import Views, quantise_views
from ..reader import DDFile
from ..writer import add_views

_NUMPY_SCALARS = [getattr(np, "_core", getattr(np, "core", None)).multiarray.scalar, np.dtype,
                  type(np.dtype(np.int64)), type(np.dtype(np.int32)), type(np.dtype(np.float64))]


def _numbered(directory: Path, pattern: str) -> list[Path]:
    """Entries named ``pattern`` with one number, in numeric order, which must run 0, 1, 2, ..."""
    found = {}
    for p in directory.iterdir():
        m = re.fullmatch(pattern, p.name)
        if m:
            found[int(m.group(1))] = p
    if sorted(found) != list(range(len(found))):
        raise ValueError(f"{directory}: entries {pattern!r} are not numbered 0 .. {len(found) - 1}")
    return [found[i] for i in range(len(found))]


def load_batch(path: Path) -> list[Any]:
    """One relabel batch file, loaded without running anything it contains."""
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALARS):
            config = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # torch names the blocked global; anything else is not a pickle of ours
            raise ValueError(f"{path}: not a readable torch file") from exc
        raise ValueError(f"{path}: refused: it pickles objects other than tensors, numbers and containers") from exc
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable torch file ({str(exc) or type(exc).__name__})") from exc
    if not isinstance(config, (list, tuple)) or len(config) != 6:
        raise ValueError(f"{path}: expected [coords, flips, mix_index, mix_lam, mix_bbox, output]")
    return list(config)


def _batch_records(path: Path, config: list[Any], size: int, height: int, width: int,
                   num_classes: int) -> tuple[np.ndarray, ...]:
    coords, flips, mix_index, _, mix_bbox, output = config
    if not (isinstance(coords, torch.Tensor) and coords.shape == (size, 4) and isinstance(flips, torch.Tensor)
            and flips.shape == (size,) and isinstance(output, torch.Tensor) and output.shape == (size, num_classes)):
        raise ValueError(f"{path}: expected coords ({size}, 4), flips ({size},) and output ({size}, {num_classes})")
    frac = coords.double().numpy()
    crops = np.rint(frac * [height, width, height, width]).astype(np.int64)
    bad = np.flatnonzero((crops[:, 2] < 1) | (crops[:, 3] < 1) | (crops[:, 0] < 0) | (crops[:, 1] < 0)
                         | (crops[:, 0] + crops[:, 2] > height) | (crops[:, 1] + crops[:, 3] > width))
    if bad.size:
        raise ValueError(f"{path}: crop {bad[0]} ({frac[bad[0]].tolist()}) is not inside a {height}×{width} image")
    partners, box = np.full(size, -1, np.int64), np.zeros(4, np.int64)
    if mix_index is not None:
        if mix_bbox is None:
            raise ValueError(f"{path}: mixup views (mix_index without mix_bbox) blend whole images and cannot be "
                             "stored as CutMix boxes")
        partners = torch.as_tensor(mix_index).long().numpy()
        if partners.shape != (size,) or ((partners < 0) | (partners >= size)).any():
            raise ValueError(f"{path}: mix_index must be a permutation of the batch's {size} positions")
        r0, c0, r1, c1 = (int(v) for v in mix_bbox)
        if not (0 <= r0 <= r1 <= height and 0 <= c0 <= c1 <= width and r0 < height and c0 < width):
            raise ValueError(f"{path}: mix_bbox {[r0, c0, r1, c1]} is not inside a {height}×{width} image")
        box = np.array([r0, c0, r1 - r0, c1 - c0])
    return crops, flips.numpy().astype(bool), partners, box, output.double().numpy()


def import_fkd(
    source: str | os.PathLike[str],
    fkd_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    k: int,
    bits: int,
    temperature: float = 20.0,
    seed: int = 42,
    epochs: int | None = None,
    progress: bool = True,
) -> Path:
    """Write ``out``: ``source`` with the relabel run in ``fkd_dir`` as views, one round per epoch
    (the first ``epochs`` only, if given), its logits kept as the top ``k`` of
    ``softmax(logits / temperature)`` at ``bits``. ``seed`` is the run's ``--fkd-seed``."""
    root = Path(fkd_dir)
    epoch_dirs = _numbered(root, r"epoch_(\d+)")[:epochs]
    if not epoch_dirs:
        raise ValueError(f"{root}: no epoch_0 directory")
    with DDFile(source) as f:
        n, num_classes = f.num_samples, f.num_classes
        height, width = f.dataset["sample_shape"][-2:]
    first = _numbered(epoch_dirs[0], r"batch_(\d+)\.tar")
    if not first:
        raise ValueError(f"{epoch_dirs[0]}: no batch files")
    batch_size = len(load_batch(first[0])[1])
    sampler = BatchSampler(RandomSampler(range(n), generator=torch.Generator().manual_seed(seed)), batch_size,
                           drop_last=False)
    rounds = len(epoch_dirs)
    crops = np.zeros((rounds, n, 4), np.int64)
    flips = np.zeros((rounds, n), bool)
    partners = np.full((rounds, n), -1, np.int64)
    boxes = np.zeros((rounds, n, 4), np.int64)
    indices = np.zeros((rounds, n, min(k, num_classes)), np.int64)
    levels = np.zeros_like(indices)
    kl_sum = 0.0
    with tqdm(total=rounds * n, desc="importing FKD views", unit="view", disable=not progress) as bar:
        for r, epoch_dir in enumerate(epoch_dirs):
            files = _numbered(epoch_dir, r"batch_(\d+)\.tar")
            order = list(sampler)
            if len(files) != len(order):
                raise ValueError(f"{epoch_dir}: {len(files)} batch files; {n} images in batches of {batch_size} "
                                 f"make {len(order)}")
            for path, members in zip(files, order):
                b = np.asarray(members, np.int64)
                c, fl, p, box, logits = _batch_records(path, load_batch(path), len(b), height, width, num_classes)
                crops[r, b], flips[r, b] = c, fl
                mixed = p >= 0
                partners[r, b[mixed]] = b[p[mixed]]
                boxes[r, b[mixed]] = box
                logits = logits / temperature
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                idx, q, kl = quantise_views(probs, k, bits)  # normalises each row
                indices[r, b], levels[r, b] = idx, q
                kl_sum += kl * len(b)
                bar.update(len(b))
    views = Views(crops, flips, partners, boxes, indices, levels, bits, temperature, kl_sum / (rounds * n))
    recipe = {"loss": "kl", "temperature": float(temperature), "regime": "sl", "view_schedule": "cycle",
              "batch_size": batch_size}
    return add_views(source, out, views, recipe=recipe,
                     parameters={"fkd_import": {"epochs": rounds, "batch_size": batch_size, "fkd_seed": seed,
                                                "k": min(k, num_classes), "bits": bits,
                                                "temperature": float(temperature)}})
