"""Stage 02 steps, called one by one from notebooks/02_generate.ipynb."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from wavecoder import llm
from wavecoder.config import TASKS, StudyParams
from wavecoder.generate import (
    ExampleDB,
    GenerationRun,
    Item,
    load_tasks,
    plan_items,
    run_generation,
)
from wavecoder.generate import plots as co_plots
from wavecoder.generate.pipeline import TargetPlan
from wavecoder.stages import GENERATE, SELECT

CACHE_FILE = GENERATE.outputs["llm_cache"]
EXAMPLE_DB_FILE = GENERATE.outputs["example_db"]


def selected_path(run_dir: str | Path) -> Path:
    return SELECT.path(run_dir, "selected")


def reserve_path(run_dir: str | Path) -> Path:
    return SELECT.path(run_dir, "reserve")


def load_selected(params: StudyParams, run_dir: str | Path) -> pl.DataFrame:
    """Stage 01's selection by selection_rank, cut to `generate.max_items`; with
    `generate.targets`, its reserve (reserve.parquet, if stage 01 made one) follows it."""
    path = selected_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"stage 02 needs stage 01's output {path}; run stage 01 first")
    frame = pl.read_parquet(path)
    needed = {"row_id", "language", "code", "selection_rank"}
    missing = needed - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    reserve = reserve_path(run_dir)
    if params.generate.targets and reserve.exists():
        extra = pl.read_parquet(reserve)
        if extra.height:
            frame = pl.concat([frame, extra.select(frame.columns)], how="vertical_relaxed")
    frame = frame.sort("selection_rank")
    if params.generate.max_items is not None:
        frame = frame.head(params.generate.max_items)
    return frame


def plan(params: StudyParams, frame: pl.DataFrame) -> list[Item] | TargetPlan:
    """A task per record by task_mix, or, with `generate.targets`, a plan that gives tasks
    round by round until the targets are met."""
    if params.generate.targets:
        return TargetPlan(frame.to_dicts(), params.generate.targets, params.generate, params.seed)
    return plan_items(frame.to_dicts(), params.generate, params.seed)


def describe_plan(planned: list[Item] | TargetPlan) -> pl.DataFrame:
    """Tasks per record planned up front, or targets and the records available to meet them."""
    if isinstance(planned, TargetPlan):
        return pl.DataFrame(
            {
                "task": list(planned.targets),
                "target": list(planned.targets.values()),
                "records available": [planned.total] * len(planned.targets),
            }
        )
    rows = [{"task": i.task, "language": i.language, "target": i.target_language} for i in planned]
    return (
        pl.DataFrame(rows, schema={"task": pl.String, "language": pl.String, "target": pl.String})
        .group_by("task")
        .len()
        .sort("task")
    )


def cache_path(params: StudyParams, out: str | Path) -> Path:
    folder = params.resolve_path(params.llm.cache_dir) if params.llm.cache_dir else Path(out)
    return folder / CACHE_FILE


def describe_endpoints(params: StudyParams) -> list[dict[str, Any]]:
    """What each role talks to (names only: never a key)."""
    rows = []
    for role in llm.ROLES:
        cfg = getattr(params.llm, role)
        rows.append(
            {
                "role": role,
                "backend": cfg.backend,
                "model": cfg.model,
                "base_url": cfg.base_url
                or ("embedded llama.cpp" if cfg.backend == "embedded" else "api.openai.com"),
                "key from env": cfg.api_key_env or "-",
                "json_mode": llm.json_mode_of(cfg),
            }
        )
    return rows


async def generate(
    params: StudyParams, out: str | Path, items: list[Item] | TargetPlan, progress: bool = True
) -> GenerationRun:
    """Run the generator-discriminator over `items`; the embedded server (if any) is started
    on the first cache miss and always stopped."""
    out = Path(out)
    llm.check_endpoints(params.llm, params.resolve_path)  # clear error before any work
    specs = load_tasks()
    db = ExampleDB.seeded(specs, params.generate.example_pool_size)
    batch = params.llm.batch  # llm.mode batch: job files and state, resumed after a kill
    batch_dir = params.resolve_path(batch.dir) if batch.dir else out / "batches"
    async with llm.LLMSession.for_generation(
        params.llm,
        cache_path(params, out),
        resolve=params.resolve_path,
        log_dir=out,
        seed=params.seed,
        batch_dir=batch_dir,
        progress=progress,
    ) as session:
        run = await run_generation(
            items, specs, session, db, params.generate, params.seed, out / EXAMPLE_DB_FILE, progress
        )
        run.stats["servers_started"] = session.servers_started
    return run


def generate_sync(
    params: StudyParams, out: str | Path, items: list[Item] | TargetPlan, progress: bool = True
) -> GenerationRun:
    return llm.run_sync(lambda: generate(params, out, items, progress))


# ---------------------------------------------------------------- outputs


def _rules_list(verdict: dict[str, Any] | None) -> list[dict[str, str]]:
    """Per-rule answers as a list (one schema for every task, so `datasets` reads the file)."""
    rules = (verdict or {}).get("rules") or {}
    return [
        {"rule": rid, "answer": str(v.get("answer")), "reason": str(v.get("reason") or "")}
        for rid, v in rules.items()
    ]


def candidate_row(record: dict[str, Any]) -> dict[str, Any]:
    row = dict(record)
    verdict = record.get("verdict")
    if verdict is not None:
        row["verdict"] = {**verdict, "rules": _rules_list(verdict)}
    return row


def codeocean_row(record: dict[str, Any]) -> dict[str, Any]:
    case = record["case"]
    verdict = record.get("verdict") or {}
    return {
        "id": record["id"],
        "task": record["task"],
        "language": record["language"],
        "target_language": record.get("target_language"),
        "task_name": case["task_name"],
        "instruction": case["instruction"],
        "input": case["information"],
        "output": case["solution"],
        "raw_code_id": record["row_id"],
        "generator_model": record["generator_model"],
        "judge_model": record["judge_model"],
        "verdicts": {
            "overall": verdict.get("overall"),
            "rules": _rules_list(verdict),
            "analysis": verdict.get("analysis") or "",
        },
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def write_outputs(run: GenerationRun, out: str | Path) -> dict[str, Path]:
    """candidates / codeocean / rejected / failed / alpaca JSONL, rewritten whole (atomic)."""
    out = Path(out)
    accepted = [codeocean_row(r) for r in run.by_status("accepted")]
    paths = {
        "candidates": _write_jsonl(
            out / GENERATE.outputs["candidates"], [candidate_row(r) for r in run.records]
        ),
        "codeocean": _write_jsonl(out / GENERATE.outputs["codeocean"], accepted),
        "rejected": _write_jsonl(
            out / GENERATE.outputs["rejected"],
            [candidate_row(r) for r in run.by_status("rejected")],
        ),
        "failed": _write_jsonl(
            out / GENERATE.outputs["failed"], [candidate_row(r) for r in run.by_status("failed")]
        ),
        "alpaca": _write_jsonl(
            out / GENERATE.outputs["alpaca"],
            [
                {"instruction": r["instruction"], "input": r["input"], "output": r["output"]}
                for r in accepted
            ],
        ),
    }
    return paths


def outcome_table(run: GenerationRun) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "id": r["id"],
                "task": r["task"],
                "status": r["status"],
                "reason": r["reason"],
                "instruction": ((r.get("case") or {}).get("instruction") or "")[:100],
            }
            for r in run.records
        ],
        schema={
            "id": pl.String,
            "task": pl.String,
            "status": pl.String,
            "reason": pl.String,
            "instruction": pl.String,
        },
    )


# ---------------------------------------------------------------- metrics


def _rate(hits: int, n: int) -> dict[str, float]:
    return {"rate": hits / n if n else 0.0, "n": n, "hits": hits}


def accept_by_round(run: GenerationRun) -> list[dict[str, Any]]:
    """Per round and task: items tried, accepted, and the accept rate."""
    rows: dict[tuple[int, str], list[int]] = {}
    for r in run.records:
        tally = rows.setdefault((int(r.get("round", 0)), r["task"]), [0, 0])
        tally[0] += 1
        tally[1] += r["status"] == "accepted"
    return [
        {"round": rnd, "task": task, "tried": n, "accepted": hits, "rate": hits / n}
        for (rnd, task), (n, hits) in sorted(rows.items())
    ]


def targets_table(run: GenerationRun) -> list[dict[str, Any]]:
    """Per task: the target (if any), accepted, tried and the accept rate."""
    targets = (run.stats.get("targets") or {}).get("targets") or {}
    tried = Counter(r["task"] for r in run.records)
    accepted = Counter(r["task"] for r in run.by_status("accepted"))
    tasks = [t for t in TASKS if t in targets or t in tried]
    return [
        {
            "task": t,
            "target": targets.get(t),
            "accepted": accepted[t],
            "tried": tried[t],
            "accept_rate": accepted[t] / tried[t] if tried[t] else None,
            "met": None if t not in targets else accepted[t] >= targets[t],
        }
        for t in tasks
    ]


def accept_by_task(run: GenerationRun) -> dict[str, dict[str, float]]:
    out = {}
    for task in sorted({r["task"] for r in run.records}):
        rows = [r for r in run.records if r["task"] == task]
        out[task] = _rate(sum(r["status"] == "accepted" for r in rows), len(rows))
    return out


def yes_by_rule(run: GenerationRun) -> dict[str, dict[str, float]]:
    """Share of 'yes' per checklist rule among parsed verdicts (task:rule)."""
    yes: Counter = Counter()
    seen: Counter = Counter()
    for r in run.records:
        verdict = r.get("verdict") or {}
        for rid, answer in (verdict.get("rules") or {}).items():
            name = f"{r['task'].removeprefix('code_')}:{rid}"
            seen[name] += 1
            yes[name] += answer.get("answer") == "yes"
    return {name: _rate(yes[name], seen[name]) for name in sorted(seen)}


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", (text or "").lower())


def distinct_ngrams(texts: list[str], n: int) -> float:
    """distinct-n: unique n-grams over all n-grams (Li et al. 2016)."""
    grams = [tuple(w[i : i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def embedding_spread(vectors: np.ndarray) -> float | None:
    """Mean pairwise cosine distance of normalised vectors."""
    if vectors.shape[0] < 2:
        return None
    sims = vectors @ vectors.T
    n = vectors.shape[0]
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def _embed(texts: list[str], params: StudyParams) -> np.ndarray:
    from wavecoder.select.embed import embed_texts

    sel = params.select
    return embed_texts(
        texts,
        sel.embedding_model,
        params.resolve_path(sel.embedding_cache),
        batch_size=sel.embed_batch_size,
        device=sel.device,
        max_seq_length=sel.max_seq_length,
    )


def diversity(run: GenerationRun, params: StudyParams) -> dict[str, Any]:
    """Instruction diversity of the accepted and of all generated cases."""
    out = {}
    groups = {
        "accepted": [r["case"]["instruction"] for r in run.by_status("accepted")],
        "generated": [r["case"]["instruction"] for r in run.records if r.get("case")],
    }
    for name, texts in groups.items():
        texts = [t for t in texts if t.strip()]
        spread = embedding_spread(_embed(texts, params)) if len(texts) >= 2 else None
        out[name] = {
            "n": len(texts),
            "distinct_1": round(distinct_ngrams(texts, 1), 4),
            "distinct_2": round(distinct_ngrams(texts, 2), 4),
            "distinct_3": round(distinct_ngrams(texts, 3), 4),
            "embedding_spread": None if spread is None else round(spread, 4),
        }
    return out


def benchmark_problems(params: StudyParams, notes: list[str]) -> list[tuple[str, str, str]]:
    """(benchmark, item id, problem text): HumanEval prompts and MBPP problem statements."""
    from wavecoder.select import filters as F

    rows: list[tuple[str, str, str]] = []
    if "humaneval" in params.generate.leakage_benchmarks:
        rows += [(t.name, t.item_id, t.text) for t in F.humaneval_texts()[::2]]  # prompts
    if "mbpp" in params.generate.leakage_benchmarks:
        path = params.select.filters.mbpp_path
        path = params.resolve_path(path) if path else None
        if path is not None and not path.exists():
            notes.append(f"MBPP leakage check skipped: {path} not found")
        else:
            try:
                rows += [(t.name, t.item_id, t.text) for t in F.mbpp_texts(path)[::2]]  # texts
            except Exception as exc:  # offline without a local copy
                notes.append(f"MBPP leakage check skipped: {type(exc).__name__}: {exc}")
    return rows


def leakage(run: GenerationRun, params: StudyParams) -> tuple[dict[str, Any], pl.DataFrame]:
    """Nearest benchmark problem of every accepted case by embedding cosine similarity
    (the paper's section 4.2 check), with the cases above `generate.leakage_threshold`."""
    notes: list[str] = []
    accepted = run.by_status("accepted")
    problems = benchmark_problems(params, notes)
    empty = pl.DataFrame(
        schema={
            "id": pl.String,
            "similarity": pl.Float64,
            "benchmark": pl.String,
            "item": pl.String,
            "instruction": pl.String,
        }
    )
    if not accepted or not problems:
        return {"n": len(accepted), "notes": notes or ["nothing to compare"]}, empty
    queries = [f"{r['case']['instruction']}\n{r['case']['solution']}" for r in accepted]
    q = _embed(queries, params)
    b = _embed([p[2] for p in problems], params)
    sims = q @ b.T
    best = sims.argmax(axis=1)
    table = pl.DataFrame(
        {
            "id": [r["id"] for r in accepted],
            "similarity": [float(sims[i, j]) for i, j in enumerate(best)],
            "benchmark": [problems[j][0] for j in best],
            "item": [problems[j][1] for j in best],
            "instruction": [r["case"]["instruction"][:120] for r in accepted],
        }
    ).sort("similarity", descending=True)
    threshold = params.generate.leakage_threshold
    by_bench = {}
    for bench in sorted({p[0] for p in problems}):
        cols = [j for j, p in enumerate(problems) if p[0] == bench]
        nn = sims[:, cols].max(axis=1)
        by_bench[bench] = {
            "problems": len(cols),
            "max_similarity": round(float(nn.max()), 4),
            "mean_nn_similarity": round(float(nn.mean()), 4),
            "above_threshold": int((nn >= threshold).sum()),
        }
    summary = {"n": len(accepted), "threshold": threshold, "benchmarks": by_bench, "notes": notes}
    return summary, table


FUNNEL_STEPS = (
    "items",
    "generator_failed",
    "unparseable",
    "prefilter",
    "validators",
    "judge_failed",
    "judge_rejected",
    "accepted",
)


def funnel_by_task(run: GenerationRun) -> dict[str, dict[str, int]]:
    """Per task: where each item ended (the steps in order), the validator checks that
    failed, and how many validator rejections the judge had accepted (when it was asked)."""
    out: dict[str, dict[str, int]] = {}
    for r in run.records:
        row = out.setdefault(r["task"], {step: 0 for step in FUNNEL_STEPS})
        row["items"] += 1
        reason = str(r.get("reason", ""))
        step = {
            "generator_failed": "generator_failed",
            "unparseable_case": "unparseable",
            "prefilter": "prefilter",
            "validator": "validators",
            "judge_failed": "judge_failed",
        }.get(reason.split(":")[0])
        if r["status"] == "accepted":
            step = "accepted"
        elif step is None:
            step = "judge_failed" if r["status"] == "failed" else "judge_rejected"
        row[step] += 1
        if step == "validators":
            name = "validator:" + reason.split(":", 1)[1]
            row[name] = row.get(name, 0) + 1
            if r.get("judge_accepted"):
                row["validators_judge_accepted"] = row.get("validators_judge_accepted", 0) + 1
    return out


def summarize(run: GenerationRun, params: StudyParams) -> dict[str, Any]:
    counts = run.counts()
    n = len(run.records)
    acc = counts["accepted"]
    share = f"{acc / n:.0%}" if n else "n/a"
    reasons = Counter(r["reason"] for r in run.records if r["status"] != "accepted")
    lengths = lengths_by_status(run)
    return {
        "headline": (
            f"accepted {acc} of {n} ({share}); rejected {counts['rejected']}, "
            f"failed {counts['failed']}"
        ),
        "items": n,
        "counts": counts,
        "accept_by_task": accept_by_task(run),
        "funnel_by_task": funnel_by_task(run),
        "targets": targets_table(run),
        "accept_by_round": accept_by_round(run),
        "tasks": dict(Counter(r["task"] for r in run.records)),
        "yes_by_rule": yes_by_rule(run),
        "reasons": dict(reasons.most_common()),
        "llm": run.stats,
        "generator_model": run.generator_model,
        "judge_model": run.judge_model,
        "task_versions": run.task_versions,
        "example_db": run.db.counts(),
        "seconds": round(run.seconds, 2),
        "lengths_median_words": {
            key: float(np.median(vals)) if vals else None for key, vals in lengths.items()
        },
    }


def latencies(run: GenerationRun) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"generator": [], "judge": []}
    for r in run.records:
        for role, key in (("generator", "generator"), ("judge", "judge")):
            call = r.get(key) or {}
            if call.get("ok") and call.get("latency_s") is not None:
                out[role].append(float(call["latency_s"]))
    return out


def lengths_by_status(run: GenerationRun) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for field in ("instruction", "solution"):
        for status in ("accepted", "rejected"):
            out[f"{field} ({status})"] = [
                float(len(r["case"][field].split())) for r in run.by_status(status) if r.get("case")
            ]
    return out


def make_plots(run: GenerationRun, out: str | Path) -> list[Path]:
    """Accept rate per task, targets and rounds, per rule, latency, instruction and solution
    lengths."""
    out = Path(out)
    co_plots.accept_rates(
        accept_by_task(run), out / "accept_by_task.png", "Accept rate per task", "accepted"
    )
    co_plots.accept_rates(
        yes_by_rule(run), out / "yes_by_rule.png", "Judge 'yes' rate per rule", "yes"
    )
    co_plots.histogram(latencies(run), out / "latency.png", "seconds per call", "LLM call latency")
    lengths = lengths_by_status(run)
    for field in ("instruction", "solution"):
        co_plots.histogram(
            {k: v for k, v in lengths.items() if k.startswith(field)},
            out / f"{field}_lengths.png",
            "words",
            f"{field.capitalize()} length",
        )
    co_plots.targets_and_rounds(targets_table(run), accept_by_round(run), out / "targets.png")
    names = [
        "accept_by_task",
        "targets",
        "yes_by_rule",
        "latency",
        "instruction_lengths",
        "solution_lengths",
    ]
    return [out / f"{name}.png" for name in names]


def plot_leakage(leak_table: pl.DataFrame, out: str | Path) -> Path:
    path = Path(out) / "leakage.png"
    co_plots.histogram(
        {"accepted": leak_table["similarity"].to_list()},
        path,
        "cosine similarity to the nearest HumanEval/MBPP problem",
        "Leakage check",
    )
    return path
