"""KCenterGreedy coreset selection, a random baseline, and diversity metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm


def _as_tensor(embeddings: np.ndarray | torch.Tensor, device: str) -> torch.Tensor:
    if isinstance(embeddings, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(embeddings))  # no copy when contiguous
    else:
        tensor = embeddings
    if tensor.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, d), got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {tensor.dtype}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else str(tensor.device)
    return tensor.to(device)


def _error_bound(x: torch.Tensor, work: torch.dtype, max_sq_norm: float) -> float:
    """Bound on |fast squared distance - exact squared distance| for any point/centre pair.

    The fast form |x|^2 - 2 x.c + |c|^2 accumulates in `work` precision (d+4 roundings of
    terms bounded by (|x|+|c|)^2 <= 4 max|v|^2), and the mat-vec output may be rounded to
    x's own dtype once more (float16/bfloat16 on a GPU).
    """
    acc_u = torch.finfo(work).eps / 2
    out_u = torch.finfo(x.dtype).eps / 2
    return 2.0 * ((x.shape[1] + 4) * acc_u + 2 * out_u) * 4.0 * max_sq_norm + 1e-30


def kcenter_greedy(
    embeddings: np.ndarray | torch.Tensor,
    k: int,
    seed: int = 0,
    first: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[int]:
    """Exact greedy farthest-point (k-center) selection under Euclidean distance.

    Returns k row indices in selection order. The first centre is `first` or drawn from
    `seed`; each next one is the point farthest from its nearest chosen centre, ties to the
    lowest index. Memory: O(N) floats plus a k x d buffer of centres (no N x N matrix, no
    second copy of the N x d embeddings).

    Speed comes from one mat-vec per pick (|x|^2 - 2 x.c + |c|^2); exactness from re-checking,
    in float64 with the direct formula, every point whose fast value lies within the rounding
    bound of the maximum.
    """
    x = _as_tensor(embeddings, device)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}")
    if first is None:
        first = int(np.random.default_rng(seed).integers(n))
    if not 0 <= first < n:
        raise ValueError(f"first={first} is out of range for {n} points")

    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    sq_norms = torch.empty(n, dtype=work, device=x.device)
    chunk = max(1, (8 << 20) // max(1, d * 8))  # rows per ~8 MiB temporary
    for start in range(0, n, chunk):
        block = x[start : start + chunk].to(work)
        sq_norms[start : start + chunk] = (block * block).sum(1)
    bound = _error_bound(x, work, float(sq_norms.max()))

    centres = torch.empty((k, d), dtype=torch.float64, device=x.device)
    min_fast = torch.full((n,), math.inf, dtype=work, device=x.device)
    selected = [first]
    exact: dict[int, tuple[float, int]] = {}  # candidate -> (exact nearest distance, centres seen)
    bar = tqdm(total=k, desc="k-center", unit="pick", disable=not progress)
    bar.update(1)
    for step in range(1, k):
        last = selected[-1]
        centres[step - 1] = x[last].double()
        dist = torch.mv(x, x[last]).to(work).mul_(-2.0).add_(sq_norms).add_(sq_norms[last])
        torch.minimum(min_fast, dist, out=min_fast)
        min_fast[last] = -math.inf  # a centre stays at -inf: never picked twice
        best = float(min_fast.max())
        candidates = torch.nonzero(min_fast >= best - 2.0 * bound).flatten()
        if candidates.numel() == 1:
            pick = int(candidates[0])
        else:
            pick = _exact_argmax(x, candidates.tolist(), centres, step, exact)
        exact.pop(pick, None)
        selected.append(pick)
        bar.update(1)
    bar.close()
    return selected


def _exact_argmax(
    x: torch.Tensor,
    candidates: list[int],
    centres: torch.Tensor,
    step: int,
    exact: dict[int, tuple[float, int]],
) -> int:
    """Among candidate rows (ascending), the one farthest (float64, direct form) from its
    nearest centre; ties to the lowest index. Exact distances are kept per candidate and
    brought up to date against only the centres added since, so a point that stays near the
    top for many steps costs one distance per new centre, not one per centre."""
    by_seen: dict[int, list[int]] = {}
    for index in candidates:
        by_seen.setdefault(exact.get(index, (math.inf, 0))[1], []).append(index)
    for seen, indices in by_seen.items():
        rows = x[torch.as_tensor(indices, device=x.device)].double()
        nearest = (
            torch.cdist(rows, centres[seen:step], compute_mode="donot_use_mm_for_euclid_dist")
            .min(dim=1)
            .values.tolist()
        )
        for index, value in zip(indices, nearest):
            previous = exact.get(index, (math.inf, 0))[0]
            exact[index] = (min(previous, value), step)
    best_value, best_index = -1.0, -1
    for index in candidates:  # ascending, so a strict > keeps the lowest index on ties
        value = exact[index][0]
        if value > best_value:
            best_value, best_index = value, index
    return best_index


def random_selection(n: int, k: int, seed: int = 0) -> list[int]:
    """k distinct row indices drawn uniformly with `seed` (the baseline for k-center)."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}")
    return [int(i) for i in np.random.default_rng(seed).choice(n, size=k, replace=False)]


def nearest_selected_distance(
    embeddings: np.ndarray | torch.Tensor, selected: list[int], device: str = "auto"
) -> np.ndarray:
    """For every point, the Euclidean distance to its nearest selected point."""
    x = _as_tensor(embeddings, device)
    centres = x[torch.as_tensor(selected, device=x.device)].float()
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    rows = max(1, (64 << 20) // max(1, 4 * len(selected)))
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows].float()
        out[start : start + rows] = torch.cdist(block, centres).min(dim=1).values
    return out.cpu().numpy()


def mean_pairwise_distance(
    embeddings: np.ndarray | torch.Tensor, selected: list[int], device: str = "auto"
) -> float:
    x = _as_tensor(embeddings, device)
    sel = x[torch.as_tensor(selected, device=x.device)].float()
    k = sel.shape[0]
    if k < 2:
        return 0.0
    total = 0.0
    rows = max(1, (64 << 20) // max(1, 4 * k))
    for start in range(0, k, rows):
        total += float(torch.cdist(sel[start : start + rows], sel).double().sum())
    return total / (k * (k - 1))


def cluster_coverage(labels: np.ndarray, selected: list[int], n_clusters: int) -> dict[str, float]:
    """How many k-means clusters of the pool a selection touches, and how evenly."""
    counts = np.bincount(labels[selected], minlength=n_clusters)
    share = counts[counts > 0] / counts.sum()
    entropy = float(-(share * np.log(share)).sum())
    return {
        "clusters_covered": int((counts > 0).sum()),
        "cluster_coverage": float((counts > 0).mean()),
        "cluster_entropy": entropy,
        "cluster_entropy_normalised": entropy / math.log(n_clusters),
    }


def diversity_metrics(
    embeddings: np.ndarray,
    selected: list[int],
    labels: np.ndarray,
    n_clusters: int,
    device: str = "auto",
) -> dict[str, Any]:
    nearest = nearest_selected_distance(embeddings, selected, device)
    return {
        "k": len(selected),
        "covering_radius": float(nearest.max()),
        "mean_nearest_selected_distance": float(nearest.mean()),
        "mean_pairwise_distance": mean_pairwise_distance(embeddings, selected, device),
        **cluster_coverage(labels, selected, n_clusters),
    }
