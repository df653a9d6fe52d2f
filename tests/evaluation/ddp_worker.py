"""One process of ``tests/evaluation/test_train_ddp.py``, launched by ``torch.distributed.run``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/evaluation/ddp_worker.py OUT_DIR DD_FILE...

For each file (sample ``i`` has every pixel equal to ``i``), it trains a student that records
the index of every sample its forward pass sees through ``train_distributed`` for two epochs;
rank 0 writes, per file, the indices each rank saw in each epoch and whether the ranks ended
with the same parameters. Then it runs the command-line entry point on the first file, in the
same process group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ddformat import DistilledDataset
from ddformat.evaluation import train_ddp
from ddformat.evaluation.training import protocol_for

EPOCHS = 2


class RecordingStudent(nn.Module):
    """A linear classifier that remembers which samples it was given (pixel value × 255)."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += torch.round(x[:, 0, 0, 0] * 255).long().tolist()
        return self.linear(x.flatten(1))


def record(path: str) -> dict:
    dataset = DistilledDataset(path)
    protocol = protocol_for({}, "hard", epochs=EPOCHS, batch_size=4, augmentation=(), lr=0.1)
    torch.manual_seed(dist.get_rank())  # different on purpose: DDP must start both from rank 0's
    model = RecordingStudent(dataset.samples[0].numel(), dataset.num_classes)
    train_ddp.train_distributed(dataset, model, protocol, seed=3)
    per_epoch = len(model.seen) // EPOCHS
    epochs = [model.seen[e * per_epoch:(e + 1) * per_epoch] for e in range(EPOCHS)]
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"epochs": epochs, "params": params.tolist()})
    return {"n": len(dataset), "seed": 3, "ranks": [g["epochs"] for g in gathered],
            "same_parameters": all(g["params"] == gathered[0]["params"] for g in gathered)}


def main() -> None:
    out, files = Path(sys.argv[1]), sys.argv[2:]
    with train_ddp.process_group():
        results = {path: record(path) for path in files}
        if dist.get_rank() == 0:
            (out / "record.json").write_text(json.dumps(results))
        train_ddp.main([files[0], "--epochs", "2", "--architecture", "convnet-d3", "--out",
                        str(out / "student.safetensors"), "--json"])


if __name__ == "__main__":
    main()
