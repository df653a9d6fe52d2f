"""Train a student on a distilled set as its recipe says, and measure it on real data.

A plain loop over :meth:`DistilledDataset.loader` batches: the loss (CE or T²-scaled KL), the
weighting scheme and its normalisation all come from the file's recipe via
:func:`ddformat.losses.recipe_loss`, so a set is trained the way its producer meant.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .dataset import DistilledDataset
from .losses import recipe_loss


def train_student(dataset: DistilledDataset, model: nn.Module, *, epochs: int, lr: float = 0.01,
                  batch_size: int = 256, seed: int = 0, progress: bool = True) -> nn.Module:
    """SGD with momentum and a cosine schedule, for ``epochs`` passes over the set."""
    torch.manual_seed(seed)
    device = dataset.samples.device
    model.to(device).train()
    loss_fn = recipe_loss(dataset.recipe)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loader = dataset.loader(batch_size, shuffle=True, seed=seed)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    for _ in tqdm(range(epochs), desc="training student", disable=not progress, leave=False):
        for x, y, w in loader:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y, w).backward()
            optimizer.step()
            schedule.step()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on inputs already in its input space."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[i:i + batch_size]).sum().item()
    return correct / max(len(x), 1)
