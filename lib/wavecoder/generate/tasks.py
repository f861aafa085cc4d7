"""The four task specifications, kept as YAML data files, and seeded task assignment."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wavecoder.config import PAPER_TASK_MIX, TASKS

TASKS_DIR = Path(__file__).resolve().parent / "task_specs"
FIELDS = ("task_name", "instruction", "information", "solution")
# Bump when prompt wording in prompts.py changes; it enters every cache key with the spec hash.
# 3: the judge sees the raw code, the task's requirements and bad examples with their analysis.
PROMPT_TEMPLATE_VERSION = "3"


class TaskSpecError(ValueError):
    """A task spec file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Rule:
    id: str
    question: str
    paper: bool = False  # one of the rules the paper's discriminator lists (`paper: true`)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    display_name: str
    definition: str
    requirements: tuple[str, ...]
    fields: dict[str, str]
    checklist: tuple[Rule, ...]
    examples: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    source: str = ""
    version: str = ""  # sha256 of the file's content and the prompt template version

    @property
    def rule_ids(self) -> list[str]:
        return [r.id for r in self.checklist]


def _require(data: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in data:
        raise TaskSpecError(f"{path}: missing key '{key}'")
    if not isinstance(data[key], kind):
        raise TaskSpecError(f"{path}: '{key}' must be a {kind.__name__}")
    return data[key]


def load_task(path: str | Path) -> TaskSpec:
    path = Path(path)
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaskSpecError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TaskSpecError(f"{path}: top level must be a mapping")
    name = _require(data, "name", str, path)
    fields = _require(data, "fields", dict, path)
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise TaskSpecError(f"{path}: fields lacks {missing}")
    rules = []
    for i, rule in enumerate(_require(data, "checklist", list, path)):
        if not isinstance(rule, dict) or "id" not in rule or "question" not in rule:
            raise TaskSpecError(f"{path}: checklist[{i}] needs 'id' and 'question'")
        rules.append(Rule(str(rule["id"]), str(rule["question"]), bool(rule.get("paper"))))
    examples = data.get("examples") or []
    for i, ex in enumerate(examples):
        if ex.get("verdict") not in ("good", "bad") or not isinstance(ex.get("case"), dict):
            raise TaskSpecError(f"{path}: examples[{i}] needs verdict good/bad and a case")
        lacking = [f for f in FIELDS if f not in ex["case"]]
        if lacking:
            raise TaskSpecError(f"{path}: examples[{i}].case lacks {lacking}")
    version = hashlib.sha256(f"{PROMPT_TEMPLATE_VERSION}\n{text}".encode()).hexdigest()[:16]
    return TaskSpec(
        name=name,
        display_name=_require(data, "display_name", str, path),
        definition=_require(data, "definition", str, path).strip(),
        requirements=tuple(str(r) for r in _require(data, "requirements", list, path)),
        fields={str(k): str(v) for k, v in fields.items()},
        checklist=tuple(rules),
        examples=tuple(examples),
        source=str(path),
        version=version,
    )


def load_tasks(folder: str | Path | None = None) -> dict[str, TaskSpec]:
    """The four specs, keyed by task name; an unknown or missing task is an error."""
    folder = Path(folder) if folder else TASKS_DIR
    specs = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = load_task(path)
        specs[spec.name] = spec
    missing = [t for t in TASKS if t not in specs]
    if missing:
        raise TaskSpecError(f"{folder}: no spec for task(s) {missing}")
    return {t: specs[t] for t in TASKS}


def task_weights(mix: str | dict[str, float]) -> dict[str, float]:
    if mix == "paper":
        return dict(PAPER_TASK_MIX)
    if mix == "balanced":
        return {t: 1.0 for t in TASKS}
    if not isinstance(mix, dict) or not mix:
        raise ValueError("generate.task_mix must be 'paper', 'balanced' or a task -> weight map")
    unknown = [t for t in mix if t not in TASKS]
    if unknown:
        raise ValueError(f"generate.task_mix: unknown task(s) {unknown}; known: {list(TASKS)}")
    if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("generate.task_mix: weights must be >= 0 with a positive sum")
    return {t: float(mix.get(t, 0.0)) for t in TASKS}


def assign_tasks(n: int, mix: str | dict[str, float], seed: int) -> list[str]:
    """Exact quotas by the largest-remainder method, in a seeded order: n=100 with the paper
    mix gives exactly 57/16/16/11, and the same seed gives the same assignment."""
    weights = task_weights(mix)
    total = sum(weights.values())
    shares = {t: n * w / total for t, w in weights.items()}
    counts = {t: int(s) for t, s in shares.items()}
    by_remainder = sorted(TASKS, key=lambda t: (-(shares[t] - counts[t]), TASKS.index(t)))
    for t in by_remainder[: n - sum(counts.values())]:
        counts[t] += 1
    tasks = [t for t in TASKS for _ in range(counts[t])]
    random.Random(f"tasks:{seed}").shuffle(tasks)
    return tasks


def spec_versions(specs: dict[str, TaskSpec]) -> dict[str, str]:
    return {name: spec.version for name, spec in specs.items()}


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1)
