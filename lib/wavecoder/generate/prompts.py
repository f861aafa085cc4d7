"""Generator and discriminator prompts (the paper's Figure 3 layout: task definition,
requirements, good and bad examples with the judge's analysis, then the raw code)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from wavecoder.generate.tasks import FIELDS, TaskSpec

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
    else:
        lines.append(f"Language: {language_name(language)}.")
    return lines


def _example_block(
    example: dict[str, Any], index: int, max_chars: int, label: str = "Judge's analysis"
) -> list[str]:
    lang = example.get("language") or ""
    lines = [
        f"### Example {index}",
        f"Raw code:\n```{lang}\n{clip(example['raw_code'].rstrip(), max_chars)}\n```",
    ]
    if example.get("target_language"):
        lines.append(f"Target language: {language_name(example['target_language'])}")
    lines.append(f"Case:\n{format_case(example['case'])}")
    lines.append(f"{label}: {example.get('analysis', '').strip()}")
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


# What the judge is asked to write, described in words rather than as a template: a small judge
# copied a `"analysis": "<one or two sentences>"` template verbatim, so no placeholder appears.
JUDGE_REPLY_FORMAT = (
    'Reply with one JSON object and nothing else. Its key "rules" maps every rule id above to '
    'an object with "answer" ("yes" or "no") and "reason" (a few words about this case); '
    '"overall" is "yes" only if every answer is yes, otherwise "no"; "analysis" is your own '
    "one or two sentences about this particular case, naming what is wrong with it or why it "
    "is good."
)
# Template text a judge may echo instead of an analysis (parse_verdict rejects these).
_PLACEHOLDER_PHRASES = {
    "one or two sentences",
    "why in a few words",
    "a few words",
    "a few words about this case",
    "your analysis",
    "analysis",
    "analysis here",
    "reason",
    "short reason",
    "explanation",
}


def is_placeholder(text: str | None) -> bool:
    """True for template text instead of an answer: `<...>`, `[...]`, `...`, or a phrase of a
    reply template such as "one or two sentences"."""
    stripped = (text or "").strip().strip("\"'`").strip()
    if not stripped:
        return False
    if re.fullmatch(r"<[^<>]*>|\[[^\[\]]*\]|\{[^{}]*\}|(\.\s*){2,}|…", stripped):
        return True
    words = re.sub(r"[^a-z]+", " ", stripped.lower()).strip()
    if words in _PLACEHOLDER_PHRASES:
        return True
    template = " " + re.sub(r"[^a-z]+", " ", JUDGE_REPLY_FORMAT.lower()).strip() + " "
    return len(words.split()) >= 3 and f" {words} " in template  # the format echoed back


def judge_messages(
    spec: TaskSpec,
    case: dict[str, str],
    language: str,
    target: str | None,
    raw_code: str = "",
    bad_examples: Sequence[dict[str, Any]] = (),
    max_code_chars: int = 2000,
) -> list[dict[str, str]]:
    """The paper's discriminator input: the task's definition and requirements, bad examples
    with the analysis of what is wrong in them (the same sample the generator saw), the raw
    code the case was generated from, the case, then the task's rules as a checklist."""
    example_chars = max(200, max_code_chars // 3)
    lines = _task_header(spec, language, target)
    if bad_examples:
        lines.append("\nBad examples (cases that were rejected, with the analysis of why):")
        for i, ex in enumerate(bad_examples, 1):
            lines += _example_block(ex, i, example_chars, label="Why it is bad")
    if raw_code.strip():
        lines.append(
            f"\nRaw code the case was generated from:\n```{language}\n"
            f"{clip(raw_code.rstrip(), max_code_chars)}\n```"
        )
    lines.append(f"\nCase to review:\n{format_case(case)}")
    lines.append("\nCheck the case against each rule; answer yes or no with a short reason:")
    lines += [f"{i}. [{r.id}] {r.question}" for i, r in enumerate(spec.checklist, 1)]
    lines.append(JUDGE_REPLY_FORMAT)
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
    ]
