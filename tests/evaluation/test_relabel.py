"""``ddformat relabel`` and training on stored views: a teacher the test trains on real digits
labels views of a real IPC-10 subset, and students learn from the replayed views (SL)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

import ddformat
from ddformat import cli
from ddformat.codecs.soft_labels import mean_kl
from ddformat.evaluation import realdata
from ddformat.evaluation.models import build_model
from ddformat.evaluation.teachers import load_teacher, save_teacher
from ddformat.evaluation.training import Protocol, accuracy, train_student
from ddformat.torch import DistilledDataset


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny 8×8 networks run several times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("relabel")
    x, y = realdata.load("digits", "train")
    g = torch.Generator().manual_seed(1)
    idx = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:10]]
                     for c in range(10)])
    path = ddformat.save(root / "digits10.dd", x[idx], y[idx], name="digits-random-ipc10")
    torch.manual_seed(0)
    teacher = build_model("ConvNet-D3", 1, 10, (8, 8))
    train_student((x.float() / 255, y), teacher, Protocol(epochs=8, batch_size=128, augmentation=("none",)),
                  progress=False)
    x_test, y_test = realdata.load("digits", "test")
    assert accuracy(teacher, x_test.float() / 255, y_test) > 0.8  # measured 0.868
    ckpt = save_teacher(teacher, root / "teacher.safetensors")
    out = root / "views.dd"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["relabel", str(path), str(out), "--teacher", str(ckpt), "--arch", "convnet-d3",
                         "--views", "4", "--topk", "3", "--bits", "6", "--batch-size", "32", "--temperature", "4",
                         "--json"]) == 0
    return out, ckpt, json.loads(printed.getvalue())


def test_relabel_reports_label_bits_and_the_kl_of_stored_to_teacher_labels(digits_teacher):
    out, ckpt, report = digits_teacher
    with ddformat.open(out) as f:
        f.verify()
        assert report["label_bits"] == 8 * f.container.entries["views"].length
        assert f.recipe["regime"] == "sl" and f.recipe["temperature"] == 4.0
    assert report["views"] == 400 and report["ratio_to_fp16"] > 1
    # The reported KL is that of the teacher's tempered outputs on the replayed views to the stored labels.
    teacher = load_teacher(ckpt, "convnet-d3", 1, 10, (8, 8))
    ds = DistilledDataset(out)
    all_samples = torch.arange(100)
    with torch.no_grad():
        teacher_probs = [torch.softmax(teacher(ds.views.inputs(r, all_samples)).double() / 4, 1) for r in range(4)]
    stored = [ds.views.labels(r, all_samples) for r in range(4)]
    kl = mean_kl(torch.cat(teacher_probs).numpy(), torch.cat(stored).numpy())
    assert report["kl_to_teacher"] == pytest.approx(kl, rel=1e-4)
    assert 0 < kl < 0.05


def test_eval_trains_students_on_the_replayed_views(digits_teacher, capsys, monkeypatch):
    out, _, _ = digits_teacher
    replayed = []
    real_inputs = ddformat.torch.ViewReplay.inputs
    monkeypatch.setattr(ddformat.torch.ViewReplay, "inputs",
                        lambda self, r, i: replayed.append(r) or real_inputs(self, r, i))
    assert cli.main(["eval", str(out), "--test", "digits", "--seeds", "1", "--epochs", "30",
                     "--batch-size", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"]["regime"] == "sl" and report["protocol"]["optimizer"] == "adamw"
    assert replayed == [epoch % 4 for epoch in range(30) for _ in range(2)]  # 2 batches an epoch, rounds cycled
    # chance is 0.10; measured 0.361: random-resized crops down to 8 % of an 8×8 digit are hard views
    assert report["results"][0]["mean"] >= 0.25
