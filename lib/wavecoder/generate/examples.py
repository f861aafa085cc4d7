"""The example database: judged good and bad cases per task that feed later prompts.

Seeded with the hand-written examples of the task specs; cases the judge accepted join the good
pool, cases it rejected (with its analysis) the bad pool. Sampling is seeded per item, and the
pipeline adds cases only between batches, in item order, so a rerun builds the same prompts."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from wavecoder.generate.tasks import TaskSpec


class ExampleDB:
    def __init__(self, pool_size: int = 50) -> None:
        self.pool_size = pool_size
        self.pools: dict[tuple[str, str], list[dict[str, Any]]] = {}

    @classmethod
    def seeded(cls, specs: dict[str, TaskSpec], pool_size: int = 50) -> ExampleDB:
        db = cls(pool_size)
        for spec in specs.values():
            for i, ex in enumerate(spec.examples):
                db.add(
                    {
                        "id": f"seed:{spec.name}:{i}",
                        "task": spec.name,
                        "verdict": ex["verdict"],
                        "source": "seed",
                        "language": ex.get("language", ""),
                        "target_language": ex.get("target_language"),
                        "raw_code": ex["raw_code"],
                        "case": dict(ex["case"]),
                        "analysis": str(ex.get("analysis", "")),
                        "rules": dict(ex.get("rules") or {}),
                    }
                )
        return db

    def add(self, example: dict[str, Any]) -> None:
        pool = self.pools.setdefault((example["task"], example["verdict"]), [])
        pool.append(example)
        seeds = [e for e in pool if e.get("source") == "seed"]
        judged = [e for e in pool if e.get("source") != "seed"]
        if len(judged) > self.pool_size:  # keep the seeds and the most recent judged cases
            pool[:] = seeds + judged[-self.pool_size :]

    def add_judged(
        self, item: Any, case: dict[str, str], accepted: bool, analysis: str, rules: dict
    ) -> None:
        self.add(
            {
                "id": item.id,
                "task": item.task,
                "verdict": "good" if accepted else "bad",
                "source": "judged",
                "language": item.language,
                "target_language": item.target_language,
                "raw_code": item.code,
                "case": dict(case),
                "analysis": analysis,
                "rules": {k: v.get("answer") for k, v in rules.items()},
            }
        )

    def sample(
        self, task: str, n_good: int, n_bad: int, rng: random.Random
    ) -> tuple[list[dict], list[dict]]:
        good = self.pools.get((task, "good"), [])
        bad = self.pools.get((task, "bad"), [])
        return (
            rng.sample(good, min(n_good, len(good))),
            rng.sample(bad, min(n_bad, len(bad))),
        )

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (task, verdict), pool in sorted(self.pools.items()):
            judged = sum(1 for e in pool if e.get("source") != "seed")
            out.setdefault(task, {})[verdict] = len(pool)
            out[task][f"{verdict}_judged"] = judged
        return out

    def save(self, path: str | Path) -> Path:
        """One JSON line per example, written atomically."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for key in sorted(self.pools):
                for example in self.pools[key]:
                    handle.write(json.dumps(example, ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, pool_size: int = 50) -> ExampleDB:
        db = cls(pool_size)
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                db.add(json.loads(line))
        return db
