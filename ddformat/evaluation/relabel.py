"""``ddformat relabel``: any ``.dd`` file → the same samples with per-view teacher labels (FKD).

For each of V rounds the samples are shuffled into batches as a training epoch would see them;
each batch draws its views exactly as training augments (:class:`RandomResizedCropFlip`, then
:func:`draw_cutmix` within the batch), the views are rebuilt from those records by the replay
code the loader uses (:func:`ddformat.torch.views.replay_views`), and the teacher's tempered
softmax on them is kept as top-k probabilities quantised to ``bits`` (spec § 3.8). Storing fewer
rounds than training epochs is label pruning: the loader cycles through them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..codecs.views import Views, quantise_views
from ..reader import DDFile
from ..torch.dataset import DistilledDataset
from ..torch.views import replay_views
from ..writer import add_views
from .augment import RandomResizedCropFlip, draw_cutmix


def draw_views(num_samples: int, height: int, width: int, rounds: int, batch_size: int, *, mix: bool = True,
               alpha: float = 1.0, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
    """The augmentation records of ``rounds`` epochs (spec § 3.8): per round a random order cut
    into batches; per batch crop boxes and flips (:meth:`RandomResizedCropFlip.draw`), then, with
    ``mix``, one CutMix permutation and box (:func:`draw_cutmix`), drawn from ``generator`` in
    exactly the order :class:`RandomResizedCropFlip` followed by :func:`cutmix` draws them."""
    rrc = RandomResizedCropFlip(flip=0.5)
    crops = np.zeros((rounds, num_samples, 4), np.int64)
    flips = np.zeros((rounds, num_samples), bool)
    partners = np.full((rounds, num_samples), -1, np.int64)
    boxes = np.zeros((rounds, num_samples, 4), np.int64)
    for r in range(rounds):
        order = torch.randperm(num_samples, generator=generator)
        for batch in order.split(batch_size):
            b = batch.numpy()
            box, mirror = rrc.draw(len(b), height, width, generator)
            crops[r, b], flips[r, b] = box.numpy(), mirror.numpy()
            if mix:
                perm, mix_box, _ = draw_cutmix(len(b), height, width, alpha, generator)
                partners[r, b] = b[perm.numpy()]
                boxes[r, b] = mix_box.numpy()
    return {"crops": crops, "flips": flips, "partners": partners, "mix_boxes": boxes}


@torch.no_grad()
def relabel(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    teacher: nn.Module,
    *,
    rounds: int,
    k: int,
    bits: int,
    batch_size: int = 256,
    temperature: float = 20.0,
    mix: bool = True,
    alpha: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out``: ``source`` with ``rounds`` views per sample labelled by ``teacher`` (its
    softmax at ``temperature``, top ``k`` kept at ``bits``), and a recipe to train on them (KL at
    that temperature, regime ``sl``, rounds cycled over the epochs). Returns a report: label bits
    (total, per class, and against fp16 per-view labels as FKD stores them) and the mean
    KL(teacher ‖ stored) in nats."""
    if rounds < 1 or k < 1 or batch_size < 1 or temperature <= 0:
        raise ValueError("rounds, k, batch size and temperature must be positive")
    data = DistilledDataset(source, device=device)
    n, num_classes = len(data), data.num_classes
    height, width = data.samples.shape[-2:]
    records = draw_views(n, height, width, rounds, batch_size, mix=mix, alpha=alpha,
                         generator=torch.Generator().manual_seed(seed))
    teacher = teacher.to(data.device).eval()
    k = min(k, num_classes)
    indices = np.zeros((rounds, n, k), np.int64)
    levels = np.zeros((rounds, n, k), np.int64)
    kl_sum = 0.0
    on_device = {name: torch.from_numpy(a).to(data.device) for name, a in records.items()}
    with tqdm(total=rounds * n, desc="relabelling views", unit="view", disable=not progress) as bar:
        for r in range(rounds):
            for batch in torch.arange(n, device=data.device).split(batch_size):
                x = replay_views(data.samples, on_device["crops"][r], on_device["flips"][r],
                                 on_device["partners"][r], on_device["mix_boxes"][r], batch)
                probs = torch.softmax(teacher(x).double() / temperature, dim=1).cpu().numpy()
                idx, q, kl = quantise_views(probs, k, bits)
                b = batch.cpu().numpy()
                indices[r, b], levels[r, b] = idx, q
                kl_sum += kl * len(b)
                bar.update(len(b))
    views = Views(records["crops"], records["flips"], records["partners"], records["mix_boxes"], indices, levels,
                  bits, temperature, kl_sum / (rounds * n))
    recipe = {"loss": "kl", "temperature": float(temperature), "regime": "sl", "view_schedule": "cycle"}
    parameters = {"relabel": {"rounds": rounds, "k": k, "bits": bits, "batch_size": batch_size,
                              "temperature": float(temperature), "cutmix": mix, "seed": seed}}
    path = add_views(source, out, views, recipe=recipe, parameters=parameters)
    return views_report(path)


def views_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Label bits of a file's views: total, per class (mean), per view, fp16 per-view labels for
    comparison (K·16 bits a view, FKD's storage) and the stored mean KL to the teacher."""
    with DDFile(path) as f:
        entry = f.container.entries["views"]
        params, n, num_classes = entry.params, f.num_samples, f.num_classes
        label_bits = 8 * entry.length
        count = params["rounds"] * n
        fp16_bits = 16 * num_classes * count
        return {"file": str(path), "views": count, "rounds": params["rounds"], "k": params["k"],
                "bits": params["bits"], "label_bits": label_bits, "label_bits_per_class": label_bits / num_classes,
                "bits_per_view": label_bits / count, "fp16_bits": fp16_bits, "ratio_to_fp16": fp16_bits / label_bits,
                "kl_to_teacher": params.get("kl_to_source"), "bpc": f.bpc}
