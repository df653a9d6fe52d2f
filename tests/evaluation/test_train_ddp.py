"""Multi-process training: two CPU processes (gloo) launched by torch's own torchrun train one
student from a ``.dd`` file, each epoch split between them as ``DistributedSampler`` splits it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

import ddformat
from ddformat.evaluation.teachers import load_teacher
from ddformat.evaluation.train_ddp import main as train_ddp_main

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).parents[2]


def _indexed_set(path: Path, n: int) -> str:
    """n samples of 1×8×8 whose pixels all equal their index, so a student can tell which it saw
    (labels in class order, so that the file keeps the samples' order)."""
    samples = np.repeat(np.arange(n, dtype=np.uint8), 64).reshape(n, 1, 8, 8)
    return str(ddformat.save(path, samples, np.sort(np.arange(n) % 10), num_classes=10))


@pytest.fixture(scope="module")
def torchrun_result(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    files = [_indexed_set(tmp / "even.dd", 10), _indexed_set(tmp / "odd.dd", 11)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            str(WORKER), str(tmp), *files], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = run.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # the launcher and both workers
        stdout, stderr = run.communicate()
        pytest.fail(f"torchrun did not finish in 240 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return tmp, {"files": files, "record": json.loads((tmp / "record.json").read_text()), "stdout": stdout}


def test_every_sample_is_trained_on_exactly_once_per_epoch_across_two_processes(torchrun_result):
    _, result = torchrun_result
    record = result["record"][result["files"][0]]
    assert record["n"] == 10
    for epoch in range(2):
        per_rank = [record["ranks"][rank][epoch] for rank in range(2)]
        assert [len(seen) for seen in per_rank] == [5, 5]
        assert sorted(per_rank[0] + per_rank[1]) == list(range(10))
    assert record["ranks"][0][0] != record["ranks"][0][1], "each epoch must draw a new order"


def test_uneven_split_pads_by_wrapping_around_exactly_as_distributed_sampler(torchrun_result):
    """docs/training.md: 11 samples on 2 processes → 6 each, one sample seen twice."""
    _, result = torchrun_result
    record = result["record"][result["files"][1]]
    for epoch in range(2):
        seen = Counter(record["ranks"][0][epoch] + record["ranks"][1][epoch])
        assert set(seen) == set(range(11)) and sorted(seen.values()) == [1] * 10 + [2]
        for rank in range(2):
            sampler = DistributedSampler(range(11), num_replicas=2, rank=rank, shuffle=True, seed=record["seed"])
            sampler.set_epoch(epoch)
            assert record["ranks"][rank][epoch] == list(sampler)


def test_processes_train_one_model_together(torchrun_result):
    _, result = torchrun_result
    assert all(r["same_parameters"] for r in result["record"].values())


def test_torchrun_entry_point_trains_and_writes_the_student(torchrun_result):
    tmp, result = torchrun_result
    report = json.loads(result["stdout"][result["stdout"].index("{"):])
    assert report["backend"] == "gloo"
    assert report["epoch"] == {"samples": 10, "processes": 2, "per_rank": 5, "padded": 0}
    student = load_teacher(tmp / "student.safetensors", "convnet-d3", 1, 10, (8, 8))
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_entry_point_outside_torchrun_says_how_to_launch(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        train_ddp_main([_indexed_set(tmp_path / "a.dd", 4)])
