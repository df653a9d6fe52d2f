"""Student training: protocols from recipes, weights honoured exactly, label regimes, ZCA, eval."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import ddformat
from ddformat import cli
from ddformat.evaluation import evaluate, realdata
from ddformat.evaluation.augment import ZCA
from ddformat.evaluation.evaluate import evaluate_file, real_to_sample_space
from ddformat.evaluation.models import ConvNet, build_model
from ddformat.evaluation.teachers import load_teacher, save_teacher
from ddformat.evaluation.training import TrainingSet, protocol_for, train_student


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
    x, y = _digits(2)
    dataset = ddformat.DistilledDataset(ddformat.save(tmp_path / "h.dd", x, y))
    teacher = build_model("convnet-d3", 1, 10, (8, 8))
    save_teacher(teacher, tmp_path / "teacher.safetensors")
    loaded = load_teacher(tmp_path / "teacher.safetensors", "convnet-d3", 1, 10, (8, 8))
    for a, b in zip(teacher.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    student = build_model("convnet-d3", 1, 10, (8, 8))
    protocol = protocol_for(dataset.recipe, "hard", regime="sl+kd", epochs=2, batch_size=10,
                            augmentation=("dsa", "cutmix"))
    before = [p.detach().clone() for p in student.parameters()]
    train_student(dataset, student, protocol, teacher=loaded, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert all(torch.isfinite(p).all() for p in student.parameters())


class _TouchOnUnpickle:
    """Unpickling this calls ``Path.touch(marker)``: a file appears if the loader runs code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_teacher_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    path, marker = tmp_path / "teacher.pt", tmp_path / "code-ran"
    path.write_bytes(pickle.dumps({"weight": _TouchOnUnpickle(marker)}))
    with pytest.raises(ValueError, match=r"teacher\.pt: refused: .* could run code"):
        load_teacher(path, "convnet-d3", 1, 10, (8, 8))
    assert not marker.exists()


class _ConstantTeacher(nn.Module):
    """Predicts class ``label`` for every input, whatever the input."""

    def __init__(self, label: int, num_classes: int) -> None:
        super().__init__()
        self.label, self.num_classes = label, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((len(x), self.num_classes), -10.0, device=x.device)
        logits[:, self.label] = 10.0
        return logits


def test_kd_student_learns_the_teachers_outputs_not_the_stored_labels(tmp_path):
    """Under sl+kd the teacher relabels every batch: a teacher that always says 3 makes a student
    trained on digits that are never 3 answer 3."""
    x, y = _digits(2)
    keep = y != 3
    x, y = x[keep], y[keep]
    dataset = ddformat.DistilledDataset(ddformat.save(tmp_path / "no3.dd", x, y, num_classes=10))
    torch.manual_seed(0)
    student = ConvNet(1, 10, (8, 8), depth=2, width=8)
    protocol = protocol_for(dataset.recipe, "hard", regime="sl+kd", epochs=15, batch_size=len(dataset), lr=0.01,
                            temperature=1.0, augmentation=("dsa", "cutmix"))
    train_student(dataset, student, protocol, teacher=_ConstantTeacher(3, 10), progress=False)
    with torch.no_grad():
        predicted = student.eval()(dataset.samples).argmax(1)
    assert (predicted == 3).all(), predicted.tolist()


def _class_sorted_digits(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float samples in class order, as a file stores them, so file and tensors agree row by row."""
    x, y = _digits(per_class)
    return x.float() / 255, y


def _trained(data, **kwargs) -> list[torch.Tensor]:
    torch.manual_seed(7)
    model = ConvNet(1, 10, (8, 8), depth=2, width=8)
    protocol = protocol_for({}, "hard", epochs=2, batch_size=8, augmentation=("dsa", "cutmix"))
    train_student(data, model, protocol, seed=3, progress=False, **kwargs)
    return [p.detach().clone() for p in model.parameters()]


def test_tensors_a_tensor_dataset_and_the_file_holding_them_train_identically(tmp_path):
    x, y = _class_sorted_digits(2)
    weights = torch.linspace(0.5, 2.0, len(x))
    path = ddformat.save(tmp_path / "w.dd", x, y, weights=weights.numpy(), value_range=None,
                         recipe={"weighting": {"scheme": "explicit", "normalization": "none"}})
    from_file = _trained(ddformat.DistilledDataset(path))
    for data in ((x, y, weights), TensorDataset(x, y, weights)):
        for a, b in zip(from_file, _trained(data)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    unweighted = _trained((x, y))
    assert any(not torch.equal(a, b) for a, b in zip(from_file, unweighted))


def test_training_tensors_that_do_not_fit_together_are_refused_by_name():
    x, y = _class_sorted_digits(1)
    with pytest.raises(ValueError, match="10 samples with labels of shape \\(9,\\)"):
        TrainingSet.of((x, y[:9]))
    with pytest.raises(ValueError, match="class indices .* in \\[0, 5\\)"):
        TrainingSet.of((x, y), num_classes=5)
    with pytest.raises(ValueError, match="soft labels of shape \\(10, 10\\) for 12 classes"):
        TrainingSet.of((x, torch.full((10, 10), 0.1)), num_classes=12)
    with pytest.raises(ValueError, match="finite and non-negative"):
        TrainingSet.of((x, y, torch.full((10,), float("nan"))))
    with pytest.raises(ValueError, match="float \\(N, C, H, W\\)"):
        TrainingSet.of((x.flatten(1), y))
    assert TrainingSet.of((x[:3], y[:3]), num_classes=10).num_classes == 10
    assert TrainingSet.of((x[:3], y[:3])).num_classes == 3


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


@pytest.mark.parametrize("stored", [True, False], ids=["stored-zca", "zca-only-in-provenance"])
def test_eval_puts_real_images_in_the_files_zca_space_without_temporary_files(tmp_path, monkeypatch, stored):
    """A file with a ``zca`` section gets that transform; one that only records
    ``provenance.parameters.zca`` gets one fitted on the real training split (eps 0.1). Test
    images and the ``full`` baseline arrive whitened, as tensors: no file is written."""
    x_train, _ = realdata.load("digits", "train")
    x, y = _class_sorted_digits(3)
    fitted = ZCA.fit(x_train.flatten(1).float() / 255, eps=0.1)
    noise = 0.01 * torch.randn(len(x), 64, generator=torch.Generator().manual_seed(0))
    own = ZCA.fit(x.flatten(1) + noise, eps=0.5)
    expected = own if stored else fitted
    samples = expected(x.flatten(1)).reshape(x.shape)
    path = ddformat.save(tmp_path / "zca.dd", samples, y, value_range=None, parameters={"zca": True},
                         zca=(own.mean.numpy(), own.matrix.numpy()) if stored else None)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    tested, trained = [], []

    def spy_accuracy(model, inputs, labels):
        tested.append(inputs)
        return 0.5

    def spy_train_student(data, model, protocol, **kwargs):
        trained.append((data.samples, sorted(scratch.rglob("*"))))
        return [(protocol.epochs, kwargs["evaluate"](model))]

    monkeypatch.setattr(evaluate, "accuracy", spy_accuracy)
    monkeypatch.setattr(evaluate, "train_student", spy_train_student)
    report = evaluate_file(path, "digits", seeds=[0], baselines=["full"], epochs=1, progress=False)
    assert [(r["train"], r["samples"]) for r in report["results"]] == [("distilled", 30), ("full", len(x_train))]
    x_test, _ = realdata.load("digits", "test")
    assert len(tested) == 2
    for inputs in tested:
        torch.testing.assert_close(inputs, expected(x_test.flatten(1).float() / 255).reshape(x_test.shape))
    (distilled, _), (full, files_while_training) = trained
    torch.testing.assert_close(distilled, samples, rtol=0, atol=0)
    torch.testing.assert_close(full, expected(x_train.flatten(1).float() / 255).reshape(x_train.shape))
    assert files_while_training == []


@pytest.mark.parametrize("override,expected", [
    (None, [0.5, 1.5, 1.0, 1.0]),  # the recipe's scheme: explicit values, global mean 1
    ({"scheme": "uniform", "normalization": "global"}, [1.0, 1.0, 1.0, 1.0]),
    ({"scheme": "proportional", "normalization": "none"}, [0.25, 0.75, 0.5, 0.5]),
])
def test_a_weighting_override_re_derives_the_loss_weights_from_the_stored_values(tmp_path, monkeypatch, override,
                                                                                expected):
    x, y = _class_sorted_digits(2)
    path = ddformat.save(tmp_path / "w.dd", x[:4], y[:4], num_classes=10, weights=np.array([1.0, 3.0, 2.0, 2.0]),
                         recipe={"weighting": {"scheme": "explicit", "normalization": "global"}})
    used = []

    def spy_train_student(data, model, protocol, **kwargs):
        used.append(data.weights.tolist())
        return [(protocol.epochs, 0.5)]

    monkeypatch.setattr(evaluate, "train_student", spy_train_student)
    overrides = {} if override is None else {"weighting": override}
    evaluate_file(path, "digits", seeds=[0], epochs=1, progress=False, **overrides)
    assert used == [pytest.approx(expected)]
