"""Tolerant parsing of generator and judge replies, and the paper's pre-filters.

Written by hand: replies come as JSON, JSON inside prose or code fences, or labelled text
(`Instruction: ...`, `**Solution**`, `### Information`), and no library parses that mix."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from wavecoder.generate.prompts import is_placeholder
from wavecoder.generate.tasks import FIELDS, TaskSpec

_ALIASES = {
    "task_name": ("task_name", "task name", "task", "name"),
    "instruction": ("instruction", "instructions", "question", "prompt"),
    "information": ("information", "info", "input", "context"),
    "solution": ("solution", "answer", "output", "response"),
}
_LABEL = re.compile(
    r"^[ \t>#*\-\d.]*\**\s*(task[ _]name|instructions?|information|info|input|solution|"
    r"output|answer)\s*\**\s*[:：]\s*\**",
    re.IGNORECASE | re.MULTILINE,
)


def _json_objects(text: str) -> list[Any]:
    """Every JSON object found in text (whole, in fences, or embedded in prose)."""
    found = []
    decoder = json.JSONDecoder(strict=False)  # raw newlines inside strings are common
    stripped = text.strip()
    for start in [m.start() for m in re.finditer(r"\{", stripped)]:
        try:
            value, _ = decoder.raw_decode(stripped[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
            break  # the outermost first object is the answer
    return found


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z]+", " ", key.lower()).strip()


def _pick(obj: dict[str, Any], name: str) -> str | None:
    wanted = {_norm_key(a) for a in _ALIASES[name]}
    for key, value in obj.items():
        if _norm_key(str(key)) in wanted and value is not None:
            if isinstance(value, (dict, list)):
                return json.dumps(value, ensure_ascii=False)
            return str(value)
    return None


def _canonical(label: str) -> str:
    label = _norm_key(label)
    for name, aliases in _ALIASES.items():
        if label in {_norm_key(a) for a in aliases}:
            return name
    return label


def parse_case(text: str | None) -> tuple[dict[str, str] | None, str | None]:
    """The four fields of a generated case, or (None, why not)."""
    if not text or not text.strip():
        return None, "empty reply"
    for obj in _json_objects(text):
        case = {name: _pick(obj, name) for name in FIELDS}
        if any(v is not None for v in case.values()):
            return {k: (v or "").strip() for k, v in case.items()}, None
    partial = _partial_json_fields(text)
    if partial:  # JSON cut off by max_tokens: keep the fields that are complete
        return {name: partial.get(name, "") for name in FIELDS}, None
    matches = list(_LABEL.finditer(text))
    if matches:
        case: dict[str, str] = {}
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            name = _canonical(match.group(1))
            if name in FIELDS and name not in case:
                case[name] = text[match.end() : end].strip().strip("*").strip()
        if case:
            return {name: case.get(name, "") for name in FIELDS}, None
    return None, "no fields found"


_JSON_FIELD = re.compile(
    r'"(task_name|instruction|information|solution)"\s*:\s*"((?:[^"\\]|\\.)*)"'
)


def _partial_json_fields(text: str) -> dict[str, str]:
    """Complete `"field": "value"` pairs of a JSON object that is itself incomplete."""
    out = {}
    for match in _JSON_FIELD.finditer(text):
        try:
            value = json.loads(f'"{match.group(2)}"', strict=False)
        except json.JSONDecodeError:
            value = match.group(2)
        out.setdefault(match.group(1), value.strip())
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9`\"'(])")
_CODE_HINT = re.compile(
    r"(\bdef |\breturn\b|\bfunction\b|\bfunc |\bclass |[{};]\s*$|=>|\bpublic |\bfn |\bimport )",
    re.MULTILINE,
)


def sentences(text: str) -> int:
    """Sentences in prose, ignoring code spans and decimal points."""
    prose = re.sub(r"```.*?```|`[^`]*`", "X", text, flags=re.S).strip()
    if not prose:
        return 0
    return len([p for p in _SENTENCE_END.split(prose) if p.strip()])


def looks_like_code(text: str) -> bool:
    return bool(_CODE_HINT.search(text or ""))


def prefilter(case: dict[str, str], spec: TaskSpec, max_sentences: int = 2) -> list[str]:
    """The paper's rule filters before the judge; each failed rule gives a reason."""
    reasons = []
    for name in FIELDS:
        if not case.get(name, "").strip():
            reasons.append(f"missing_{name}")
    instruction = case.get("instruction", "")
    if instruction.strip() and sentences(instruction) > max_sentences:
        reasons.append("instruction_too_long")
    solution = case.get("solution", "")
    information = case.get("information", "")
    if solution.strip():
        if spec.name == "code_summarization":
            prose = re.sub(r"```.*?```", "", solution, flags=re.S).strip()
            if not prose:
                reasons.append("summary_is_code")
        elif not looks_like_code(solution):
            reasons.append("solution_not_code")
    if spec.name in ("code_summarization", "code_repair", "code_translation"):
        if information.strip() and not looks_like_code(information):
            reasons.append("information_lacks_code")
    if (
        solution.strip()
        and spec.name == "code_repair"
        and _squash(solution).startswith(_squash(information))
        and _squash(information)
    ):
        reasons.append("repair_unchanged")
    return reasons


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text or "")


@dataclass
class Verdict:
    parsed: bool
    overall: str | None  # "yes" | "no" | None
    rules: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {answer, reason}
    analysis: str = ""
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "parsed": self.parsed,
            "overall": self.overall,
            "rules": self.rules,
            "analysis": self.analysis,
            "error": self.error,
        }


def _yes_no(value: Any) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        for key in ("answer", "verdict", "value", "result"):
            if key in value:
                return _yes_no(value[key])
        return None
    if value is None:
        return None
    match = re.match(r"\W*(yes|no|true|false|pass|fail)\b", str(value).strip(), re.IGNORECASE)
    if not match:
        return None
    return "yes" if match.group(1).lower() in ("yes", "true", "pass") else "no"


def _reason(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("reason") or value.get("explanation") or "")
    text = str(value or "")
    return re.sub(r"^\W*(yes|no)\b\W*", "", text, flags=re.IGNORECASE)


def _verdict_from_json(obj: dict[str, Any], rule_ids: list[str]) -> Verdict | None:
    lowered = {_norm_key(str(k)): v for k, v in obj.items()}
    overall = None
    for key in ("overall", "overall answer", "verdict", "final answer", "accept"):
        if key in lowered:
            overall = _yes_no(lowered[key])
            break
    raw_rules = lowered.get("rules") or lowered.get("checklist") or {}
    if isinstance(raw_rules, list):  # [{"id"/"rule": ..., "answer": ...}, ...] or [answers]
        as_map = {}
        for i, entry in enumerate(raw_rules):
            if isinstance(entry, dict):
                rid = entry.get("id") or entry.get("rule")
                as_map[str(rid) if rid else (rule_ids[i] if i < len(rule_ids) else str(i))] = entry
            elif i < len(rule_ids):
                as_map[rule_ids[i]] = entry
        raw_rules = as_map
    if not isinstance(raw_rules, dict):
        raw_rules = {}
    rules = {}
    for rid in rule_ids:
        value = raw_rules.get(rid, obj.get(rid))
        answer = _yes_no(value)
        if answer is not None:
            rules[rid] = {"answer": answer, "reason": _reason(value)[:300]}
    analysis = str(lowered.get("analysis") or lowered.get("explanation") or "")
    if overall is None and not rules:
        return None
    return Verdict(overall is not None, overall, rules, analysis)


def parse_verdict(text: str | None, rule_ids: list[str]) -> Verdict:
    """The judge's per-rule answers and overall verdict; `parsed=False` when no overall
    verdict can be found or the analysis is template text such as `<one or two sentences>`
    (recorded, never raised)."""
    verdict = _parse_verdict(text, rule_ids)
    for rule in verdict.rules.values():
        if is_placeholder(rule.get("reason")):
            rule["reason"] = ""
    if verdict.parsed and is_placeholder(verdict.analysis):
        verdict.parsed, verdict.error = False, "placeholder analysis"
    return verdict


def _parse_verdict(text: str | None, rule_ids: list[str]) -> Verdict:
    if not text or not text.strip():
        return Verdict(False, None, error="empty reply")
    for obj in _json_objects(text):
        verdict = _verdict_from_json(obj, rule_ids)
        if verdict is not None:
            if verdict.overall is None:
                verdict.error = "no overall verdict"
            return verdict
    rules = {}
    lines = text.splitlines()
    for i, rid in enumerate(rule_ids, 1):
        pattern = re.compile(
            rf"(\[?{re.escape(rid)}\]?|^\s*{i}[.)])\W*?(.*)$", re.IGNORECASE | re.MULTILINE
        )
        for line in lines:
            match = pattern.search(line)
            if match:
                tail = match.group(2)
                yn = re.search(r"\b(yes|no)\b", tail, re.IGNORECASE)
                if yn:
                    reason = tail[yn.end() :].strip(" .:-,")
                    rules[rid] = {"answer": yn.group(1).lower(), "reason": reason[:300]}
                    break
    overall_match = re.search(
        r"overall(?:\s+answer)?\W{0,6}(yes|no)\b", text, re.IGNORECASE | re.MULTILINE
    )
    overall = overall_match.group(1).lower() if overall_match else None
    analysis_match = re.search(r"analysis\W{0,4}[:：]\s*(.+)", text, re.IGNORECASE)
    analysis = analysis_match.group(1).strip() if analysis_match else ""
    if overall is None:
        return Verdict(False, None, rules, analysis, error="no overall verdict")
    return Verdict(True, overall, rules, analysis)


def decide(verdict: Verdict, rule_ids: list[str], require_all_rules: bool) -> tuple[bool, str]:
    """(accepted, reason) from a judge verdict."""
    if not verdict.parsed or verdict.overall is None:
        return False, "judge_unparseable"
    if verdict.overall != "yes":
        failed = [r for r in rule_ids if verdict.rules.get(r, {}).get("answer") == "no"]
        return False, f"judge_no:{failed[0]}" if failed else "judge_no:overall"
    if require_all_rules:
        failed = [r for r in rule_ids if verdict.rules.get(r, {}).get("answer") == "no"]
        if failed:
            return False, f"judge_no:{failed[0]}"
        missing = [r for r in rule_ids if r not in verdict.rules]
        if missing:
            return False, f"judge_missing_rule:{missing[0]}"
    return True, "accepted"
