"""KCenterGreedy speed and memory: ours against a naive per-step NumPy reference, same run.

    python bench/coreset.py                      # N=200,000 x 384 float32, k=2,000 (CPU)
    python bench/coreset.py --n 20000 --k 200    # quick look
    python bench/coreset.py --gpu                # N=2,000,000 x 1,024 float16, k=20,000 (CUDA)
    python bench/coreset.py --gpu --device cpu --n 3000 --d 64 --k 50   # check the GPU path

Each contender runs in its own process on the same seeded matrix; peak extra memory is the
process's peak resident memory (or CUDA peak) above what the matrix itself takes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))


def make_matrix(n: int, d: int, seed: int, dtype=np.float32) -> np.ndarray:
    """Seeded unit vectors (like normalised sentence embeddings), built without temporaries."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 8192):
        block = rng.standard_normal((min(8192, n - start), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start : start + len(block)] = block
    return x.astype(dtype, copy=False)


def reset_peak_rss() -> None:
    """Linux: make the peak-RSS counter (VmHWM) restart from the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def naive_numpy(x: np.ndarray, k: int, first: int) -> list[int]:
    """The textbook loop: distance from the newest centre to every point, running minimum."""
    selected = [first]
    nearest = np.linalg.norm(x - x[first], axis=1)
    for _ in range(k - 1):
        nearest[selected[-1]] = -1.0
        pick = int(np.argmax(nearest))
        selected.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[pick], axis=1))
    return selected


def _worker(which: str, n: int, d: int, k: int, seed: int, queue) -> None:

    from wavecoder.select.coreset import kcenter_greedy

    # Warm up imports and torch's thread pool so only the algorithm's own memory is counted.
    kcenter_greedy(make_matrix(64, d, seed), 4, first=0, device="cpu", progress=False)
    x = make_matrix(n, d, seed)
    reset_peak_rss()
    before = peak_rss_bytes()
    tick = time.perf_counter()
    if which == "ours":
        picks = kcenter_greedy(x, k, first=0, device="cpu", progress=False)
    else:
        picks = naive_numpy(x, k, first=0)
    seconds = time.perf_counter() - tick
    queue.put(
        {
            "which": which,
            "seconds": seconds,
            "extra_bytes": peak_rss_bytes() - before,
            "picks": picks,
        }
    )


def run_cpu(n: int, d: int, k: int, seed: int) -> dict:
    ctx = mp.get_context("spawn")
    results = {}
    for which in ("ours", "naive"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(which, n, d, k, seed, queue))
        proc.start()
        results[which] = queue.get()
        proc.join()
    ours, naive = results["ours"], results["naive"]
    same = ours["picks"] == naive["picks"]
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(ours["picks"], naive["picks"])) if a != b), None
    )
    matrix_bytes = n * d * 4
    divergence = None
    if first_diff is not None:
        # Who was right? Both picks' distance to the shared earlier centres, in float64.
        x = make_matrix(n, d, seed).astype(np.float64)
        centres = x[ours["picks"][:first_diff]]

        def nearest(i: int) -> float:
            return float(np.sqrt(((centres - x[i]) ** 2).sum(1)).min())

        a, b = ours["picks"][first_diff], naive["picks"][first_diff]
        divergence = {
            "step": first_diff,
            "ours_pick": a,
            "naive_pick": b,
            "ours_pick_distance_f64": nearest(a),
            "naive_pick_distance_f64": nearest(b),
            "ours_is_the_exact_argmax": nearest(a) > nearest(b)
            or (nearest(a) == nearest(b) and a < b),
        }
    return {
        "device": "cpu",
        "n": n,
        "d": d,
        "k": k,
        "ours_s": round(ours["seconds"], 2),
        "naive_s": round(naive["seconds"], 2),
        "speedup": round(naive["seconds"] / ours["seconds"], 2),
        "identical_selections": same,
        "first_difference": divergence,
        "matrix_mib": round(matrix_bytes / 2**20, 1),
        "ours_extra_mib": round(ours["extra_bytes"] / 2**20, 1),
        "naive_extra_mib": round(naive["extra_bytes"] / 2**20, 1),
        "ours_extra_over_matrix": round(ours["extra_bytes"] / matrix_bytes, 3),
    }


def run_gpu(n: int, d: int, k: int, seed: int, device: str = "cuda") -> dict:
    """Ours on `device` over n x d float16 unit vectors (made there, in blocks). The DESIGN.md
    figure this is held against: a plain torch loop picks 2,000 centres in 2.2 s on one H200."""
    import torch
    from wavecoder.select.coreset import kcenter_greedy

    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (or --device cpu with a small --n)")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.empty((n, d), dtype=torch.float16, device=device)
    for start in range(0, n, 262144):
        block = torch.randn((min(262144, n - start), d), generator=gen, device=device)
        x[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1).half()
    sync()
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    tick = time.perf_counter()
    picks = kcenter_greedy(x, k, first=0, device=device, progress=False)
    sync()
    seconds = time.perf_counter() - tick
    return {
        "device": torch.cuda.get_device_name() if cuda else device,
        "n": n,
        "d": d,
        "k": k,
        "dtype": "float16",
        "picked": len(set(picks)),
        "ours_s": round(seconds, 2),
        "matrix_mib": round(n * d * 2 / 2**20, 1),
        "ours_extra_mib": (
            round((torch.cuda.max_memory_allocated() - base) / 2**20, 1) if cuda else None
        ),
        "target_s": 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int)
    parser.add_argument("--d", type=int)
    parser.add_argument("--k", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--device", default="cuda", help="--gpu mode: the torch device")
    args = parser.parse_args()
    if args.gpu:
        n, d, k = args.n or 2_000_000, args.d or 1024, args.k or 20_000
        result = run_gpu(n, d, k, args.seed, args.device)
    else:
        result = run_cpu(args.n or 200_000, args.d or 384, args.k or 2_000, args.seed)
        verdict = (
            "PASS" if result["speedup"] >= 3 and result["ours_extra_over_matrix"] <= 1 else "MISS"
        )
        result["target"] = f"speedup >= 3x and extra memory <= matrix: {verdict}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
