"""Generator and discriminator prompts (the paper's Figure 3 layout: task definition,
requirements, good and bad examples with the judge's analysis, then the raw code)."""

from __future__ import annotations

import json
from typing import Any

from .tasks import FIELDS, TaskSpec

GENERATOR_SYSTEM = (
    "You are an expert programmer who writes high-quality instruction data for training code "
    "models. You always answer with exactly the four requested fields."
)
JUDGE_SYSTEM = (
    "You are a strict reviewer of instruction data for code models. You check a case against a "
    "checklist and answer each question with yes or no and a short reason."
)

LANGUAGE_NAMES = {
    "python": "Python",
    "java": "Java",
    "javascript": "JavaScript",
    "go": "Go",
    "cpp": "C++",
    "rust": "Rust",
    "php": "PHP",
    "ruby": "Ruby",
}


def language_name(code: str | None) -> str:
    return LANGUAGE_NAMES.get((code or "").lower(), code or "unknown")


def clip(code: str, max_chars: int) -> str:
    """Code cut at a line boundary to at most max_chars (prompt budget on small contexts)."""
    if len(code) <= max_chars:
        return code
    cut = code[:max_chars]
    return cut[: cut.rfind("\n")] if "\n" in cut else cut


def case_schema(spec: TaskSpec) -> dict[str, Any]:
    """JSON schema of a generated case. No maxLength: llama.cpp expands it into a grammar rule
    per character, which overflowed its parser and crashed the server in our runs; max_tokens
    bounds the length instead."""
    return {
        "type": "object",
        "properties": {f: {"type": "string"} for f in FIELDS},
        "required": list(FIELDS),
    }


def verdict_schema(spec: TaskSpec) -> dict[str, Any]:
    answer = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "reason": {"type": "string"},
        },
        "required": ["answer", "reason"],
    }
    return {
        "type": "object",
        "properties": {
            "rules": {
                "type": "object",
                "properties": {rule: answer for rule in spec.rule_ids},
                "required": spec.rule_ids,
            },
            "overall": {"type": "string", "enum": ["yes", "no"]},
            "analysis": {"type": "string"},
        },
        "required": ["rules", "overall", "analysis"],
    }


def format_case(case: dict[str, str]) -> str:
    return json.dumps({f: case.get(f, "") for f in FIELDS}, ensure_ascii=False, indent=1)


def _task_header(spec: TaskSpec, language: str, target: str | None) -> list[str]:
    lines = [
        f"Task type: {spec.display_name}",
        f"Definition: {spec.definition}",
        "Requirements:",
        *[f"{i}. {r}" for i, r in enumerate(spec.requirements, 1)],
    ]
    if target:
        lines.append(
            f"Source language: {language_name(language)}. Target language: {language_name(target)}."
        )
    return lines


def _example_block(example: dict[str, Any], index: int, max_chars: int) -> list[str]:
    lang = example.get("language") or ""
    lines = [
        f"### Example {index}",
        f"Raw code:\n```{lang}\n{clip(example['raw_code'].rstrip(), max_chars)}\n```",
    ]
    if example.get("target_language"):
        lines.append(f"Target language: {language_name(example['target_language'])}")
    lines.append(f"Case:\n{format_case(example['case'])}")
    lines.append(f"Judge's analysis: {example.get('analysis', '').strip()}")
    return lines


def generator_messages(
    spec: TaskSpec,
    code: str,
    language: str,
    target: str | None,
    good: list[dict[str, Any]],
    bad: list[dict[str, Any]],
    max_code_chars: int,
) -> list[dict[str, str]]:
    example_chars = max(200, max_code_chars // 3)
    lines = _task_header(spec, language, target)
    lines.append(
        "Answer with a JSON object with exactly the keys task_name, instruction, information "
        "and solution:"
    )
    lines += [f"- {name}: {what}" for name, what in spec.fields.items()]
    if good:
        lines.append("\nGood examples (follow them):")
        for i, ex in enumerate(good, 1):
            lines += _example_block(ex, i, example_chars)
    if bad:
        lines.append("\nBad examples (do not write cases like these):")
        for i, ex in enumerate(bad, 1):
            lines += _example_block(ex, i, example_chars)
    lines.append(f"\nNow the raw code:\n```{language}\n{clip(code.rstrip(), max_code_chars)}\n```")
    ask = f"Write one {spec.display_name} case based on this code"
    if target:
        ask += f", translating it into {language_name(target)}"
    lines.append(ask + ".")
    return [
        {"role": "system", "content": GENERATOR_SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
    ]


def judge_messages(
    spec: TaskSpec, case: dict[str, str], language: str, target: str | None
) -> list[dict[str, str]]:
    lines = _task_header(spec, language, target)
    lines.append(f"\nCase to review:\n{format_case(case)}")
    lines.append("\nAnswer each question with yes or no and a short reason:")
    lines += [f"{i}. [{r.id}] {r.question}" for i, r in enumerate(spec.checklist, 1)]
    lines.append(
        "Then give the overall answer: yes only if every answer is yes. Reply with a JSON object: "
        '{"rules": {"<rule id>": {"answer": "yes" or "no", "reason": "<why, in a few words>"}, '
        '...}, "overall": "yes" or "no", "analysis": "<one or two sentences>"}.'
    )
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
    ]
