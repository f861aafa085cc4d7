"""`wavecoder render`: what the model sees, and what the reference makes of what it wrote.

Without completions: one row per problem `{task_id, prompt, stop_words}`. With completions
(rows `{task_id, completion}`; Explain synthesize rows also carry `description`): one row per
completion `{task_id, postprocessed, candidate, program}`; the describe pass gives the cut
description as `postprocessed` and the synthesize prompt built from it as `next_prompt`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from wavecoder.evaluate.benchmarks import Benchmark, get_benchmark
from wavecoder.io import read_jsonl

# bigcode's explain-synthesize `process_results` raises for these languages (its dataset is a
# plain list there, which has no `.select`); we apply the fix-ups the other tasks use.
UPSTREAM_RAISES = {("explain", "go"), ("explain", "rust")}


def _pass_name(bench: Benchmark, pass_name: str | None) -> str:
    names = [p.name for p in bench.passes]
    if pass_name is None:
        return names[0]
    if pass_name not in names:
        raise ValueError(f"{bench.name} has the passes {names}, not {pass_name!r}")
    return pass_name


def render_prompts(bench: Benchmark, style: str, pass_name: str | None = None) -> list[dict]:
    name = _pass_name(bench, pass_name)
    if bench.task == "explain" and name == "synthesize":
        raise ValueError(
            f"{bench.name}: the synthesize prompt is built from a description; "
            "give --completions with the descriptions (or render --pass describe with them)"
        )
    stop = bench.stop_words(style, name)
    return [
        {"task_id": p.task_id, "prompt": bench.prompt(p, style, name), "stop_words": stop}
        for p in bench.problems
    ]


def render_completions(
    bench: Benchmark, style: str, completions: list[dict[str, Any]], pass_name: str | None = None
) -> list[dict[str, Any]]:
    name = _pass_name(bench, pass_name)
    code = next(p.code for p in bench.passes if p.name == name)
    out: list[dict[str, Any]] = []
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(completions):
        if "task_id" not in row or "completion" not in row:
            raise ValueError(f"completion row {i + 1}: needs 'task_id' and 'completion'")
        problem = bench.problem(row["task_id"])
        post = bench.postprocess(problem, row["completion"], name, style)
        item: dict[str, Any] = {"task_id": row["task_id"], "postprocessed": post}
        if code:
            by_task[row["task_id"]].append(i)
        else:
            item["candidate"] = None
            item["program"] = None
            item["next_prompt"] = bench.prompt(problem, style, "synthesize", description=post)
        out.append(item)
    # candidates per problem, in file order (Go's import clean-up carries over, as upstream)
    for task_id, indices in by_task.items():
        problem = bench.problem(task_id)
        candidates = bench.candidates(problem, [out[i]["postprocessed"] for i in indices])
        for i, candidate in zip(indices, candidates):
            out[i]["candidate"] = candidate
            out[i]["program"] = bench.program(problem, candidate)
            if (bench.task, bench.language) in UPSTREAM_RAISES:
                out[i]["note"] = "upstream process_results raises here; fix-ups as other tasks"
    return out


def render_command(
    benchmark: str,
    style: str,
    out: str | Path,
    pass_name: str | None = None,
    data_dir: str | None = None,
    completions: str | None = None,
    eos_token: str | None = None,
) -> int:
    """Write the rendered rows as JSONL; returns how many."""
    options: dict[str, Any] = {}
    if benchmark == "mbpp":
        options = {"prompt_style": style, "eos_token": eos_token}
    bench = get_benchmark(benchmark, data_dir=data_dir, **options)
    if completions:
        rows = render_completions(bench, style, read_jsonl(completions), pass_name)
    else:
        rows = render_prompts(bench, style, pass_name)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
