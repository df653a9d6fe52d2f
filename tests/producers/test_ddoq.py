"""The DDOQ / D4M producer (paper 001): CLVQ's companion weights are the Voronoi masses, D4M's
online k-means is Algorithm 4 to the letter, and a tiny prior + tiny run writes a file that
verifies, with the counts summing to the class sizes — the same file from one process or two
torchrun ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddformat
from ddformat import cli
from producers.common import RealData
from producers.common.diffusion import TINY_PRIOR, PriorConfig, directory_hash, train_prior
from producers.ddoq import clvq, online_kmeans, voronoi_counts, w2
from producers.ddoq.__main__ import main as ddoq_main

REPO = Path(__file__).resolve().parents[2]
RUN = ["--data", "digits", "--classes", "3", "--ipc", "4", "--steps", "4", "--cluster-epochs", "2", "--quiet"]


def _mixture(n: int, rng: np.random.Generator) -> np.ndarray:
    """2-D Gaussians with masses 0.6 / 0.3 / 0.1."""
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    which = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    return centres[which] + rng.normal(size=(n, 2))


def test_clvq_companion_weights_converge_to_the_voronoi_cell_masses():
    rng = np.random.default_rng(0)
    q = clvq(_mixture(20_000, rng), 5, epochs=3, rng=rng)
    fresh = _mixture(200_000, np.random.default_rng(1))
    masses = voronoi_counts(fresh, q.centroids) / len(fresh)
    assert masses.max() - masses.min() > 0.1  # unequal cells: uniform weights would not pass
    np.testing.assert_allclose(q.companion, masses, atol=0.015)
    assert q.counts.sum() == 20_000


def test_d4m_online_kmeans_starts_its_update_counts_at_one():
    points = np.random.default_rng(2).normal(size=(50, 3))
    q = online_kmeans(points, 1, rng=np.random.default_rng(3))
    start = points[np.random.default_rng(3).choice(50, size=1, replace=False)[0]]
    np.testing.assert_allclose(q.centroids[0], (start + points.sum(0)) / 51, rtol=1e-12)
    assert q.counts.tolist() == [50]


def test_w2_is_exact_transport_and_counts_can_close_the_gap():
    points = np.array([[0.0], [0.0], [0.0], [3.0]])
    support = np.array([[0.0], [3.0]])
    assert w2(points, support, np.ones(2)) == pytest.approx(1.5)  # a quarter of the mass moves 3
    assert w2(points, support, voronoi_counts(points, support)) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory) -> Path:
    real = RealData.load("digits", classes=3)
    keep = torch.cat([real.indices(c)[:20] for c in range(3)])
    prior = train_prior(real.to_pixels(real.images)[keep], real.labels[keep], real.class_names,
                        PriorConfig(**TINY_PRIOR, image_size=8), source="digits", progress=False)
    return prior.save(tmp_path_factory.mktemp("prior") / "digits")


@pytest.fixture(scope="module")
def one_process(prior_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddoq") / "one.dd"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers, so that both runs do the same arithmetic
    try:
        with torch.no_grad():
            assert ddoq_main([*RUN, "--prior", str(prior_dir), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_a_tiny_run_writes_a_file_that_verifies_with_counts_summing_to_the_class_sizes(one_process, prior_dir):
    assert cli.main(["verify", str(one_process)]) == 0
    real = RealData.load("digits", classes=3)
    with ddformat.open(one_process) as f:
        assert f.labels().tolist() == [0] * 4 + [1] * 4 + [2] * 4
        assert f.samples().dtype == np.uint8 and f.samples().shape == (12, 1, 8, 8)
        counts = f.stored_weights()
        assert counts.dtype.kind in "iu"
        assert np.bincount(f.labels(), weights=counts).tolist() == [len(real.indices(c)) for c in range(3)]
        assert f.recipe["weighting"]["scheme"] == "sqrt"
        assert f.provenance["parameters"]["prior"]["sha256"] == directory_hash(prior_dir)
        assert set(f.provenance["parameters"]["seconds"]) == {"encode", "cluster", "decode"}
        assert len(f.provenance["parameters"]["latent_w2"]["counts"]) == 3


def test_two_torchrun_ranks_write_the_same_file_as_one_process(one_process, prior_dir, tmp_path):
    out = tmp_path / "two.dd"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29517", "-m", "producers.ddoq", *RUN, "--prior", str(prior_dir),
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 of 2" in done.stdout
    with ddformat.open(one_process) as one, ddformat.open(out) as two:
        assert np.array_equal(one.samples(), two.samples())
        assert np.array_equal(one.labels(), two.labels())
        assert np.array_equal(one.stored_weights(), two.stored_weights())
