"""The WMDD producer (paper 004): Algorithm 2's barycenter lowers the W2 to the class and keeps
its weights on the simplex, the teacher's per-class BN statistics are those of the class's
images, and a tiny run writes a file that verifies, with barycenter masses as weights and
per-view soft labels — the same file from one process or two torchrun ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot
import pytest
import torch

import ddformat
from ddformat import cli
from ddformat.weighting import loss_weights
from producers.common import RealData
from producers.common.teachers import ClassBNStatistics, TeacherConfig, cached_teacher
from producers.wmdd import RecoverConfig, recover, wasserstein_barycenter
from producers.wmdd.__main__ import main as wmdd_main

REPO = Path(__file__).resolve().parents[2]
RUN = ["--data", "digits", "--classes", "3", "--ipc", "3", "--iterations", "5", "--views", "2", "--topk", "3",
       "--barycenter-iterations", "5", "--teacher-epochs", "1", "--quiet"]


def _cloud(rng: np.random.Generator) -> np.ndarray:
    """Three 2-D clusters with masses 0.6 / 0.3 / 0.1."""
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 8.0]])
    return centres[rng.choice(3, size=400, p=[0.6, 0.3, 0.1])] + rng.normal(size=(400, 2))


def _w2(points, support, weights):
    return ot.emd2(np.full(len(points), 1 / len(points)), weights, ot.dist(points, support))


@pytest.mark.parametrize("step", [0.1, 1.0])  # 1.0: steps that would leave the simplex without the projection
def test_the_barycenter_lowers_the_w2_to_the_class_every_iteration_and_keeps_its_weights_on_the_simplex(step):
    z = _cloud(np.random.default_rng(0))
    b = wasserstein_barycenter(z, 6, iterations=15, step=step, rng=np.random.default_rng(1))
    start = z[b.start]
    assert _w2(z, b.points, b.weights) < 0.5 * _w2(z, start, np.full(6, 1 / 6))
    assert b.objective[-1] == pytest.approx(_w2(z, b.points, b.weights))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(b.objective, b.objective[1:]))
    assert (b.weights >= 0).all() and b.weights.sum() == pytest.approx(1.0)
    assert b.weights.max() - b.weights.min() > 0.05  # unequal clusters: the masses moved off uniform


def test_learned_weights_bring_the_barycenter_closer_than_uniform_masses():
    z = _cloud(np.random.default_rng(2))
    weighted = wasserstein_barycenter(z, 6, iterations=15, rng=np.random.default_rng(3))
    uniform = wasserstein_barycenter(z, 6, iterations=15, learn_weights=False, rng=np.random.default_rng(3))
    assert np.allclose(uniform.weights, 1 / 6)
    assert weighted.objective[-1] < uniform.objective[-1]


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="module")
def teacher(teacher_cache):
    real = RealData.load("digits", classes=3)
    return (real, *cached_teacher(real, TeacherConfig(epochs=1), directory=teacher_cache / "t", progress=False))


def test_per_class_bn_statistics_are_those_of_each_class_s_images(teacher):
    real, model, stats, _ = teacher
    blocks = list(model.features)
    for layer, (name, mean, var) in enumerate(zip(stats.layers, stats.mean, stats.var)):
        assert name == f"features.{4 * layer + 1}"
        for c in range(real.num_classes):
            with torch.no_grad():
                a = torch.nn.Sequential(*blocks[:4 * layer + 1])(real.images[real.indices(c)]).double()
            torch.testing.assert_close(mean[c].double(), a.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(var[c].double(), a.var((0, 2, 3), correction=0), rtol=1e-4, atol=1e-5)


def test_a_cached_teacher_and_its_statistics_are_read_back_not_retrained(teacher, teacher_cache):
    real, model, stats, path = teacher
    again, stats_again, path_again = cached_teacher(real, TeacherConfig(epochs=1), directory=teacher_cache / "t",
                                                    progress=False)
    assert path_again == path and path.suffix == ".safetensors"
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert all(torch.equal(a, b) for a, b in zip(stats.mean + stats.var, stats_again.mean + stats_again.var))
    assert stats.layers == ClassBNStatistics.load(path.parent / "class_bn.safetensors").layers


def test_recover_moves_the_images_features_toward_their_barycenter_points(teacher):
    real, model, stats, _ = teacher
    from producers.common.teachers import embed
    from producers.wmdd.distill import pixel_bounds

    with torch.no_grad():
        z = embed(model, real.images[real.indices(1)])
    targets = z[:3]
    kwargs = dict(targets=targets, class_stats=stats, bounds=pixel_bounds(real), image_shape=real.sample_shape)
    labels = torch.full((3,), 1)
    start, _ = recover(model, labels, "wmdd", RecoverConfig(iterations=1, lr=1e-9, jitter=0),
                       generator=torch.Generator().manual_seed(0), **kwargs)
    done, _ = recover(model, labels, "wmdd", RecoverConfig(iterations=60, jitter=0, min_crop=1.0),
                      generator=torch.Generator().manual_seed(0), **kwargs)
    with torch.no_grad():
        before, after = (torch.linalg.matrix_norm(embed(model, x) - targets) for x in (start, done))
    assert after < 0.5 * before


@pytest.fixture(scope="module")
def one_process(teacher, teacher_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wmdd") / "one.dd"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers, so that both runs do the same arithmetic
    try:
        os.environ["DDFORMAT_TEACHER_CACHE"] = str(teacher_cache)
        assert wmdd_main([*RUN, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
        del os.environ["DDFORMAT_TEACHER_CACHE"]
    return out


def test_a_tiny_run_writes_a_file_that_verifies_with_barycenter_weights_and_view_labels(one_process):
    assert cli.main(["verify", str(one_process)]) == 0
    with ddformat.open(one_process) as f:
        assert f.labels().tolist() == [0] * 3 + [1] * 3 + [2] * 3
        assert f.samples().dtype == np.uint8 and f.samples().shape == (9, 1, 8, 8)
        masses = f.stored_weights()
        np.testing.assert_allclose(np.bincount(f.labels(), weights=masses), 1.0, rtol=1e-6)
        assert f.recipe["weighting"] == {"scheme": "explicit", "normalization": "batch"}
        batch = masses[[0, 4, 8]]
        normalised = loss_weights(masses, f.labels(), 3, "explicit", "batch")[[0, 4, 8]]
        np.testing.assert_allclose(normalised / normalised.mean(), batch / batch.mean(), rtol=1e-6)
        views = f.views()
        assert views is not None and views.rounds == 2
        assert f.recipe["regime"] == "sl" and f.recipe["loss"] == "kl"
        p = f.provenance["parameters"]
        assert len(p["teacher"]["sha256"]) == 64 and p["recover"]["bn_weight"] == 10.0
        assert len(p["barycenter_w2"]["end"]) == 3 and p["seconds_per_iteration"] > 0


def test_two_torchrun_ranks_write_the_same_file_as_one_process(one_process, teacher_cache, tmp_path):
    out = tmp_path / "two.dd"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DDFORMAT_TEACHER_CACHE": str(teacher_cache)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29519", "-m", "producers.wmdd", *RUN, "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 of 2" in done.stdout
    with ddformat.open(one_process) as one, ddformat.open(out) as two:
        assert np.array_equal(one.samples(), two.samples())
        assert np.array_equal(one.stored_weights(), two.stored_weights())
        assert one.container.section("views").data == two.container.section("views").data


def test_the_sre2l_baseline_recovers_one_image_of_every_class_per_unit_and_stores_no_weights(teacher, teacher_cache,
                                                                                            tmp_path):
    out = tmp_path / "sre2l.dd"
    os.environ["DDFORMAT_TEACHER_CACHE"] = str(teacher_cache)
    try:
        assert wmdd_main([*RUN, "--method", "sre2l", "--views", "0", "--out", str(out)]) == 0
    finally:
        del os.environ["DDFORMAT_TEACHER_CACHE"]
    with ddformat.open(out) as f:
        assert f.labels().tolist() == [0] * 3 + [1] * 3 + [2] * 3
        assert f.stored_weights() is None and f.views() is None
        assert f.recipe["weighting"]["scheme"] == "uniform" and f.recipe["loss"] == "ce"
