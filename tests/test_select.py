from __future__ import annotations

import numpy as np
import pytest
import torch
from wavecoder.select.coreset import (
    cluster_coverage,
    diversity_metrics,
    kcenter_greedy,
    mean_pairwise_distance,
    nearest_selected_distance,
    random_selection,
)


def brute_force_kcenter(x: np.ndarray, k: int, first: int) -> list[int]:
    """Reference: full float64 distance matrix, greedy farthest point, ties to lowest index."""
    x = x.astype(np.float64)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    selected = [first]
    nearest = dist[first].copy()
    for _ in range(k - 1):
        nearest[selected] = -1
        pick = int(np.argmax(nearest))
        selected.append(pick)
        nearest = np.minimum(nearest, dist[pick])
    return selected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    got = kcenter_greedy(x, 40, first=5, progress=False)
    assert got == brute_force_kcenter(x, 40, 5)


def test_matches_brute_force_on_clustered_unit_vectors():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 32))
    x = np.concatenate([c + 0.05 * rng.normal(size=(80, 32)) for c in centres])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    assert kcenter_greedy(x, 60, first=0, progress=False) == brute_force_kcenter(x, 60, 0)


def test_ties_go_to_lowest_index_with_duplicates():
    # integer grid with every point duplicated: many exact ties, some zero distances
    grid = np.array([[i, j] for i in range(4) for j in range(4)], dtype=np.float32)
    x = np.concatenate([grid, grid])
    got = kcenter_greedy(x, 32, first=0, progress=False)
    assert got == brute_force_kcenter(x, 32, 0)
    assert sorted(got) == list(range(32))  # k = N: every point exactly once
    assert got[16:] == sorted(got[16:])  # after all distinct points: zeros, lowest index first


def test_seed_determinism_and_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    a = kcenter_greedy(x, 20, seed=7, progress=False)
    b = kcenter_greedy(x, 20, seed=7, progress=False)
    assert a == b
    assert a[0] == int(np.random.default_rng(7).integers(500))
    firsts = {kcenter_greedy(x, 2, seed=s, progress=False)[0] for s in range(6)}
    assert len(firsts) > 1  # the seed matters (the paper's code always starts at 0)
    assert kcenter_greedy(x, 5, seed=7, first=123, progress=False)[0] == 123


def test_accepts_torch_and_float64_and_float16():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    ref = brute_force_kcenter(x, 15, 3)
    assert kcenter_greedy(torch.from_numpy(x), 15, first=3, progress=False) == ref
    half = x.astype(np.float16)
    assert kcenter_greedy(half, 15, first=3, progress=False) == brute_force_kcenter(half, 15, 3)


def test_bad_arguments():
    x = np.zeros((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="k must be"):
        kcenter_greedy(x, 6)
    with pytest.raises(ValueError, match="out of range"):
        kcenter_greedy(x, 2, first=5)
    with pytest.raises(ValueError, match="2-D"):
        kcenter_greedy(np.zeros(5, dtype=np.float32), 1)


def test_random_selection_distinct_and_seeded():
    a = random_selection(100, 30, seed=4)
    assert len(set(a)) == 30 and a == random_selection(100, 30, seed=4)
    assert a != random_selection(100, 30, seed=5)


def test_diversity_metrics_kcenter_covers_better_than_random():
    rng = np.random.default_rng(0)
    # one big cluster and a few far-away small ones: random misses the small ones
    big = rng.normal(size=(950, 8))
    small = [c + 0.1 * rng.normal(size=(10, 8)) for c in rng.normal(scale=20, size=(5, 8))]
    x = np.concatenate([big, *small]).astype(np.float32)
    labels = np.array([0] * 950 + [i + 1 for i in range(5) for _ in range(10)])
    kc = diversity_metrics(x, kcenter_greedy(x, 20, seed=0, progress=False), labels, 6)
    rnd = diversity_metrics(x, random_selection(len(x), 20, seed=0), labels, 6)
    assert kc["covering_radius"] < rnd["covering_radius"]
    assert kc["clusters_covered"] == 6 and kc["clusters_covered"] > rnd["clusters_covered"]
    assert kc["mean_pairwise_distance"] > rnd["mean_pairwise_distance"]


def test_metric_helpers_against_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    sel = [3, 9, 27]
    # float64 references; the library computes in float32, whose distances over d terms (cdist
    # may use the |a|^2 - 2ab + |b|^2 form) carry about (d + 4) eps32 of the squared norms
    x64 = x.astype(np.float64)
    full = np.sqrt(((x64[:, None] - x64[None, sel]) ** 2).sum(-1))
    scale = float((x64**2).sum(1).max())
    sq_tol = 2 * (x.shape[1] + 4) * np.finfo(np.float32).eps * 4 * scale
    got = nearest_selected_distance(x, sel).astype(np.float64)
    assert np.all(np.abs(got**2 - full.min(1) ** 2) <= sq_tol)
    pair = np.sqrt(((x64[sel][:, None] - x64[sel][None]) ** 2).sum(-1))
    expected = pair.sum() / 6
    assert abs(mean_pairwise_distance(x, sel) - expected) <= sq_tol / pair[pair > 0].min()
    cov = cluster_coverage(np.array([0, 0, 1, 1, 2]), [0, 1, 2], 3)
    assert cov["clusters_covered"] == 2 and cov["cluster_coverage"] == pytest.approx(2 / 3)
