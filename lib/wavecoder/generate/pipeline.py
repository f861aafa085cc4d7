"""The generator-discriminator loop over the selected code, in fixed batches.

Within a batch every item runs generate -> parse -> pre-filter -> judge concurrently (bounded by
the LLM session); between batches the judged cases join the example DB in item order. With the
response cache, a rerun rebuilds the same prompts and so asks only for what is missing."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavecoder.config import GenerateParams
from wavecoder.generate import prompts
from wavecoder.generate.examples import ExampleDB
from wavecoder.generate.parsing import decide, parse_case, parse_verdict, prefilter
from wavecoder.generate.tasks import TASKS, TaskSpec, assign_tasks
from wavecoder.generate.validators import validate
from wavecoder.llm import ChatResult, LLMSession

STATUSES = ("accepted", "rejected", "failed")


@dataclass
class Item:
    id: str
    row_id: int
    rank: int
    task: str
    language: str
    code: str
    target_language: str | None = None
    func_name: str = ""
    repo: str = ""
    path: str = ""
    url: str = ""


def item_for(row: dict[str, Any], task: str, params: GenerateParams, seed: int) -> Item:
    """The item for one selected record and its task; for translation, a seeded target
    language other than the source."""
    language = str(row.get("language") or "python")
    target = None
    if task == "code_translation":
        choices = [t for t in params.translation_targets if t != language] or ["python"]
        target = random.Random(f"target:{seed}:{row['row_id']}").choice(choices)
    return Item(
        id=f"{row['row_id']}:{task}",
        row_id=int(row["row_id"]),
        rank=int(row.get("selection_rank", 0)),
        task=task,
        language=language,
        code=str(row["code"]),
        target_language=target,
        func_name=str(row.get("func_name") or ""),
        repo=str(row.get("repo") or ""),
        path=str(row.get("path") or ""),
        url=str(row.get("url") or ""),
    )


def plan_items(rows: list[dict[str, Any]], params: GenerateParams, seed: int) -> list[Item]:
    """One item per selected record (rows in selection order), with a seeded task."""
    tasks = assign_tasks(len(rows), params.task_mix, seed)
    return [
        item_for({"selection_rank": i, **row}, task, params, seed)
        for i, (row, task) in enumerate(zip(rows, tasks))
    ]


class FixedPlan:
    """Items planned up front (one task per record by task_mix), in rounds of batch_size."""

    def __init__(self, items: list[Item], batch_size: int) -> None:
        self.items = items
        self.batch_size = batch_size
        self.total = len(items)
        self.notes: list[str] = []

    def next_round(self, records: list[dict[str, Any]], round_index: int) -> list[Item]:
        start = len(records)
        return self.items[start : start + self.batch_size]

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any] | None:
        return None


def allocate(
    deficit: dict[str, int], tried: Counter, accepted: Counter, room: int
) -> dict[str, int]:
    """Rows for each task with an unmet target this round: enough to meet the deficit at the
    task's accept rate so far (Laplace-smoothed, so a task that has not run yet counts 1/2),
    scaled down to `room` by largest remainder; every task with a deficit gets a row while
    room allows. A pure function of the outcomes so far, so a rerun makes the same rounds."""
    want: dict[str, int] = {}
    for task in TASKS:
        if deficit.get(task, 0) > 0:
            rate = (accepted[task] + 1) / (tried[task] + 2)
            want[task] = math.ceil(deficit[task] / rate)
    if sum(want.values()) <= room:
        return want
    floor = {t: 1 for t in want} if room >= len(want) else {}
    left = room - sum(floor.values())
    extra = {t: want[t] - floor.get(t, 0) for t in want}
    total = sum(extra.values())
    shares = {t: left * extra[t] / total if total else 0.0 for t in want}
    counts = {t: floor.get(t, 0) + int(shares[t]) for t in want}
    order = sorted(want, key=lambda t: (-(shares[t] - int(shares[t])), TASKS.index(t)))
    for task in order[: room - sum(counts.values())]:
        counts[task] += 1
    return {t: n for t, n in counts.items() if n > 0}


class TargetPlan:
    """Per-task targets: each round gives the next records (k-center order, reserve last) the
    tasks whose targets are unmet, until every target is met or the records run out."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        targets: dict[str, int],
        params: GenerateParams,
        seed: int,
    ) -> None:
        self.rows = rows
        self.targets = {t: int(targets.get(t, 0)) for t in TASKS}
        self.params = params
        self.seed = seed
        self.total = len(rows)
        self.notes: list[str] = []

    def _tally(self, records: list[dict[str, Any]]) -> tuple[Counter, Counter]:
        tried = Counter(r["task"] for r in records)
        accepted = Counter(r["task"] for r in records if r["status"] == "accepted")
        return tried, accepted

    def next_round(self, records: list[dict[str, Any]], round_index: int) -> list[Item]:
        tried, accepted = self._tally(records)
        deficit = {t: self.targets[t] - accepted[t] for t in TASKS}
        used = len(records)
        room = min(self.params.batch_size, self.total - used)
        if room <= 0 or all(d <= 0 for d in deficit.values()):
            return []
        counts = allocate(deficit, tried, accepted, room)
        tasks = [t for t in TASKS for _ in range(counts.get(t, 0))]
        random.Random(f"tasks:{self.seed}:round{round_index}").shuffle(tasks)
        rows = self.rows[used : used + len(tasks)]
        return [item_for(row, task, self.params, self.seed) for row, task in zip(rows, tasks)]

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        tried, accepted = self._tally(records)
        unmet = {t: self.targets[t] - accepted[t] for t in TASKS if accepted[t] < self.targets[t]}
        if unmet and len(records) >= self.total:
            self.notes.append(
                f"records ran out ({self.total:,} drawn) with targets unmet by {unmet}; "
                "raise select.reserve or generate.max_items"
            )
        return {
            "targets": self.targets,
            "accepted": {t: accepted[t] for t in TASKS},
            "tried": {t: tried[t] for t in TASKS},
            "met": not unmet,
            "drawn": len(records),
            "available": self.total,
        }


@dataclass
class GenerationRun:
    records: list[dict[str, Any]]  # one per item, in item order
    stats: dict[str, Any]
    db: ExampleDB
    seconds: float
    generator_model: str
    judge_model: str
    task_versions: dict[str, str] = field(default_factory=dict)

    def by_status(self, status: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == status]

    def counts(self) -> dict[str, int]:
        counts = Counter(r["status"] for r in self.records)
        return {s: counts.get(s, 0) for s in STATUSES}


def _call_info(result: ChatResult) -> dict[str, Any]:
    return {
        "key": result.key,
        "ok": result.ok,
        "text": result.text,
        "error": result.error,
        "cached": result.cached,
        "attempts": result.attempts,
        "latency_s": result.latency_s,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cost_usd": result.cost_usd,
        "finish_reason": result.finish_reason,
    }


async def _process(
    item: Item,
    spec: TaskSpec,
    session: LLMSession,
    good: list[dict],
    bad: list[dict],
    params: GenerateParams,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": item.id,
        "row_id": item.row_id,
        "selection_rank": item.rank,
        "task": item.task,
        "language": item.language,
        "target_language": item.target_language,
        "func_name": item.func_name,
        "raw_code": item.code,
        "task_version": spec.version,
        "examples_shown": [e["id"] for e in good + bad],
        "generator_model": session.model_of("generator"),
        "judge_model": session.model_of("discriminator"),
        "case": None,
        "prefilter": [],
        "generator": None,
        "judge": None,
        "verdict": None,
    }
    messages = prompts.generator_messages(
        spec, item.code, item.language, item.target_language, good, bad, params.max_code_chars
    )
    gen = await session.chat("generator", messages, spec.version, prompts.case_schema(spec))
    record["generator"] = _call_info(gen)
    if not gen.ok:
        return {**record, "status": "failed", "reason": f"generator_failed:{gen.error}"}
    case, error = parse_case(gen.text)
    if case is None:
        return {**record, "status": "rejected", "reason": f"unparseable_case:{error}"}
    reasons = prefilter(case, spec, params.instruction_max_sentences)
    record["prefilter"] = reasons
    if params.validators:
        case, failed = validate(case, spec.name, item.language, item.target_language)
        record["validators"] = failed
    else:
        failed = []
    record["case"] = case
    if reasons:
        return {**record, "status": "rejected", "reason": f"prefilter:{reasons[0]}"}
    if failed and not params.judge_validator_rejects:
        return {**record, "status": "rejected", "reason": f"validator:{failed[0]['validator']}"}
    judge_msgs = prompts.judge_messages(
        spec,
        case,
        item.language,
        item.target_language,
        raw_code=item.code,
        bad_examples=bad,  # the same sample the generator saw
        max_code_chars=params.max_code_chars,
    )
    judge = await session.chat(
        "discriminator", judge_msgs, spec.version, prompts.verdict_schema(spec)
    )
    record["judge"] = _call_info(judge)
    if not judge.ok:
        return {**record, "status": "failed", "reason": f"judge_failed:{judge.error}"}
    verdict = parse_verdict(judge.text, spec.rule_ids)
    record["verdict"] = verdict.as_dict()
    accepted, reason = decide(verdict, spec.rule_ids, params.require_all_rules)
    record["judge_accepted"] = accepted
    if failed:  # judged only to measure what the judge lets through
        return {**record, "status": "rejected", "reason": f"validator:{failed[0]['validator']}"}
    return {**record, "status": "accepted" if accepted else "rejected", "reason": reason}


async def run_generation(
    items: list[Item] | FixedPlan | TargetPlan,
    specs: dict[str, TaskSpec],
    session: LLMSession,
    db: ExampleDB,
    params: GenerateParams,
    seed: int,
    db_path: str | Path | None = None,
    progress: bool = True,
) -> GenerationRun:
    """Generate and judge the plan's items round by round; each ends accepted, rejected or
    failed with a reason, and carries its round."""
    from tqdm.auto import tqdm

    plan = FixedPlan(items, params.batch_size) if isinstance(items, list) else items
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    counts: Counter = Counter()
    bar = tqdm(total=plan.total, desc="generate+judge", unit="item", disable=not progress)

    async def one(item: Item, good: list[dict], bad: list[dict], round_index: int) -> dict:
        try:
            record = await _process(item, specs[item.task], session, good, bad, params)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug on one item must not lose the others
            record = {
                "id": item.id,
                "row_id": item.row_id,
                "task": item.task,
                "status": "failed",
                "reason": f"error:{type(exc).__name__}: {exc}"[:300],
            }
        finally:
            session.participant_done()
        record["round"] = round_index
        counts[record["status"]] += 1
        bar.update(1)
        bar.set_postfix(
            accepted=counts["accepted"], rejected=counts["rejected"], failed=counts["failed"]
        )
        return record

    try:
        round_index = 0
        while batch := plan.next_round(records, round_index):
            shown = []
            for item in batch:  # prompts see the DB as it stood when the round began
                rng = random.Random(f"examples:{seed}:{item.id}")
                shown.append(db.sample(item.task, params.good_examples, params.bad_examples, rng))
            session.begin_round(len(batch))
            done = await asyncio.gather(
                *(one(i, g, b, round_index) for i, (g, b) in zip(batch, shown))
            )
            for item, record in zip(batch, done):
                verdict = record.get("verdict") or {}
                audited = str(record.get("reason", "")).startswith("validator:")
                if record.get("case") and verdict.get("parsed") and not audited:
                    db.add_judged(
                        item,
                        record["case"],
                        record["status"] == "accepted",
                        verdict.get("analysis") or record["reason"],
                        verdict.get("rules") or {},
                    )
            records.extend(done)
            if db_path is not None:
                db.save(db_path)
            round_index += 1
    finally:
        bar.close()
    stats = session.stats.as_dict()
    targets = plan.summary(records)
    if targets is not None:
        stats["targets"] = targets
    stats.setdefault("notes", [])
    stats["notes"] = list(stats["notes"]) + plan.notes
    return GenerationRun(
        records=records,
        stats=stats,
        db=db,
        seconds=time.perf_counter() - started,
        generator_model=session.model_of("generator"),
        judge_model=session.model_of("discriminator"),
        task_versions={name: spec.version for name, spec in specs.items()},
    )
