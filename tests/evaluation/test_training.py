"""Student training: protocols from recipes, weights honoured exactly, label regimes, ZCA, eval."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import ddformat
from ddformat import cli
from ddformat.evaluation import realdata
from ddformat.evaluation.augment import ZCA
from ddformat.evaluation.evaluate import real_to_sample_space
from ddformat.evaluation.models import ConvNet, build_model
from ddformat.evaluation.training import load_teacher, protocol_for, train_student


def _digits(per_class: int):
    x, y = realdata.load("digits", "train")
    idx = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in range(10)])
    return x[idx], y[idx]


def _train_once(path, normalization_lr: float, seed: int = 0) -> list[torch.Tensor]:
    dataset = ddformat.DistilledDataset(path)
    torch.manual_seed(123)
    model = ConvNet(1, 10, (8, 8), depth=2, width=16)
    protocol = protocol_for(dataset.recipe, dataset.label_kind, epochs=1, batch_size=len(dataset),
                            augmentation=(), momentum=0.0, weight_decay=0.0, schedule="constant",
                            lr=normalization_lr)
    train_student(dataset, model, protocol, seed=seed, progress=False)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("normalization", ["global", "batch", "none"])
def test_duplicated_set_with_halved_weights_trains_as_documented(tmp_path, normalization):
    """Global and per-batch normalisation: identical full-batch steps. ``none``: the loss is
    the plain mean of w·l, so halved weights halve the step (same as half the learning rate)."""
    x, y = _digits(3)
    recipe = {"weighting": {"scheme": "explicit", "normalization": normalization}}
    original = ddformat.save(tmp_path / "a.dd", x, y, weights=np.ones(len(x), np.float32), recipe=recipe)
    doubled = ddformat.save(tmp_path / "b.dd", torch.cat([x, x]), torch.cat([y, y]),
                            weights=np.full(2 * len(x), 0.5, np.float32), recipe=recipe)
    expected = _train_once(original, 0.05 if normalization == "none" else 0.1)
    got = _train_once(doubled, 0.1)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_protocol_follows_the_recipe_and_fills_in_paper_002_defaults():
    hl = protocol_for({"loss": "ce", "temperature": 1.0, "epochs": 40,
                       "optimizer": {"name": "SGD", "lr": 0.03}}, "hard")
    assert (hl.regime, hl.optimizer, hl.lr, hl.epochs, hl.augmentation) == ("hl", "sgd", 0.03, 40, ("dsa",))
    sl = protocol_for({"loss": "kl", "temperature": 20.0, "augmentation": ["rrc+flip"]}, "soft")
    assert (sl.regime, sl.optimizer, sl.lr, sl.temperature, sl.augmentation) == (
        "sl", "adamw", 1e-3, 20.0, ("rrc+flip",))
    overridden = protocol_for({"loss": "kl", "temperature": 4.0}, "soft", regime="sl+kd", lr=0.5,
                              augmentation="dsa,cutmix")
    assert (overridden.regime, overridden.lr, overridden.temperature, overridden.augmentation) == (
        "sl+kd", 0.5, 4.0, ("dsa", "cutmix"))
    with pytest.raises(ValueError, match="regime"):
        protocol_for({}, "hard", regime="magic")


def test_soft_label_regime_needs_stored_soft_labels_and_kd_needs_a_teacher(tmp_path):
    x, y = _digits(2)
    dataset = ddformat.DistilledDataset(ddformat.save(tmp_path / "h.dd", x, y))
    model = ConvNet(1, 10, (8, 8), depth=2, width=8)
    with pytest.raises(ValueError, match="soft labels"):
        train_student(dataset, model, protocol_for(dataset.recipe, "hard", regime="sl", epochs=1), progress=False)
    with pytest.raises(ValueError, match="teacher"):
        train_student(dataset, model, protocol_for(dataset.recipe, "hard", regime="sl+kd", epochs=1), progress=False)


def test_kd_teacher_from_safetensors_relabels_cutmixed_batches(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    x, y = _digits(2)
    dataset = ddformat.DistilledDataset(ddformat.save(tmp_path / "h.dd", x, y))
    teacher = build_model("convnet-d3", 1, 10, (8, 8))
    safetensors.save_file(teacher.state_dict(), str(tmp_path / "teacher.safetensors"))
    loaded = load_teacher(tmp_path / "teacher.safetensors", "convnet-d3", 1, 10, (8, 8))
    student = build_model("convnet-d3", 1, 10, (8, 8))
    protocol = protocol_for(dataset.recipe, "hard", regime="sl+kd", epochs=2, batch_size=10,
                            augmentation=("dsa", "cutmix"))
    before = [p.detach().clone() for p in student.parameters()]
    train_student(dataset, student, protocol, teacher=loaded, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert all(torch.isfinite(p).all() for p in student.parameters())


class _Payload:
    def __reduce__(self):
        return (print, ("executed",))


def test_teacher_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "teacher.pt"
    path.write_bytes(pickle.dumps({"weight": _Payload()}))
    with pytest.raises(Exception) as info:
        load_teacher(path, "convnet-d3", 1, 10, (8, 8))
    assert "executed" not in str(info.value)


def test_real_images_enter_the_files_normalised_and_whitened_space():
    x = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8)
    norm = {"mean": [0.5], "std": [0.25], "applied": True}
    zca = ZCA.fit(((x.float() / 255 - 0.5) / 0.25).flatten(1), eps=0.1)
    got = real_to_sample_space(x, {"value_range": None, "normalization": norm}, zca)
    expected = zca(((x.float() / 255 - 0.5) / 0.25).flatten(1)).reshape(x.shape)
    torch.testing.assert_close(got, expected)


def test_eval_on_a_small_real_file_beats_chance_next_to_a_random_baseline(tmp_path, capsys):
    x, y = realdata.load("digits", "train")
    g = torch.Generator().manual_seed(1)
    idx = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:10]]
                     for c in range(10)])
    path = ddformat.save(tmp_path / "digits10.dd", x[idx], y[idx], name="digits-random-ipc10")
    status = cli.main(["eval", str(path), "--test", "digits", "--seeds", "1", "--baseline", "random",
                       "--epochs", "40", "--batch-size", "100", "--json", "--eval-every", "20",
                       "--curve", str(tmp_path / "curve.png")])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    distilled, baseline = report["results"]
    assert (distilled["train"], baseline["train"], baseline["samples"]) == ("distilled", "random", 100)
    assert distilled["mean"] >= 0.40  # chance is 0.10; measured 0.586 (random baseline 0.583)
    assert [epoch for epoch, _ in distilled["curve"]] == [20, 40]
    assert (tmp_path / "curve.png").stat().st_size > 0
