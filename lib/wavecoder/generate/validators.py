"""Deterministic code checks on a generated case, before the judge (beyond the paper).

The paper's discriminator is an LLM; it accepts cases whose "solution" is an English
sentence or does not parse. These checks are cheap and exact: the solution parses in its
language (Python with `ast`, the others with tree-sitter-language-pack, the parsers the corpus
harvest uses), a translation parses in the target language, a repair differs from the buggy
input, a summary holds no code block. Each failure is named (`validator:<name>` in the case's
reason and in `rejected.jsonl`). Fenced code (```lang ... ```) is unwrapped once first.
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
from typing import Any

_FENCE = re.compile(r"^\s*```[\w+#.-]*[ \t]*\n(.*?)\n?```\s*$", re.S)
_ANY_FENCE = re.compile(r"```")

# names the tasks and corpus use -> tree-sitter-language-pack's names
_TS_NAMES = {
    "javascript": "javascript",
    "js": "javascript",
    "typescript": "typescript",
    "java": "java",
    "go": "go",
    "golang": "go",
    "php": "php",
    "ruby": "ruby",
    "cpp": "cpp",
    "c++": "cpp",
    "c": "c",
    "rust": "rust",
    "csharp": "csharp",
    "c#": "csharp",
    "kotlin": "kotlin",
    "scala": "scala",
    "swift": "swift",
}


def unwrap_fence(text: str) -> str:
    """The code inside one fenced block that makes up the whole text; else the text."""
    match = _FENCE.match(text or "")
    return match.group(1) if match else (text or "")


@functools.cache
def _parser(name: str) -> Any:
    from tree_sitter_language_pack import get_parser

    return get_parser(name)  # type: ignore[arg-type]


def _wrappings(code: str, language: str) -> list[str]:
    """The snippet as written, and as the fragment it often is (a method without its class,
    Go without `package`, PHP without `<?php`)."""
    out = [code]
    if language in ("java", "csharp", "kotlin", "scala"):
        out.append("class WcSnippet {\n" + code + "\n}\n")
    if language == "go" and not re.search(r"(?m)^\s*package\s+\w+", code):
        out.append("package main\n" + code)
    if language == "php" and "<?php" not in code:
        out.append("<?php\n" + code)
    if language == "cpp":  # a member function written on its own
        out.append("struct WcSnippet {\n" + code + "\n};\n")
    return out


def parses(code: str, language: str) -> tuple[bool | None, str]:
    """(True, '') when `code` parses as `language`; (False, where) when it does not; (None,
    why) when there is no parser for that language here (not a rejection)."""
    code = textwrap.dedent(code or "").strip("\n")
    if not code.strip():
        return False, "empty"
    language = (language or "").lower()
    if language in ("python", "py", "python3"):
        try:
            ast.parse(code)
            return True, ""
        except SyntaxError as exc:
            return False, f"line {exc.lineno}: {exc.msg}"
        except ValueError as exc:  # e.g. null bytes
            return False, str(exc)
    name = _TS_NAMES.get(language)
    if name is None:
        return None, f"no parser for {language!r}"
    try:
        parser = _parser(name)
    except Exception as exc:  # a grammar missing from the wheel
        return None, f"no parser for {language!r}: {exc}"
    first_error = ""
    for variant in _wrappings(code, name):
        root = parser.parse(variant.encode("utf-8", "replace")).root_node
        if not root.has_error:
            return True, ""
        if not first_error:
            first_error = _first_error(root)
    return False, first_error


def _first_error(node: Any) -> str:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "ERROR" or n.is_missing:
            return f"line {n.start_point[0] + 1}: syntax error near {n.type}"
        stack.extend(reversed(n.children))
    return "syntax error"


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text or "")


def validate(
    case: dict[str, str], task: str, language: str, target_language: str | None = None
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The case with fenced code unwrapped once, and the failed checks
    (`[{"validator": name, "detail": ...}]`, empty when every check passed)."""
    case = dict(case)
    failed: list[dict[str, str]] = []
    code_fields = {
        "code_generation": ("solution",),
        "code_repair": ("information", "solution"),
        "code_translation": ("information", "solution"),
        "code_summarization": ("information",),
    }.get(task, ())
    for name in code_fields:
        case[name] = unwrap_fence(case.get(name, ""))

    def check(name: str, ok: bool | None, detail: str) -> None:
        if ok is False:
            failed.append({"validator": name, "detail": detail})

    solution, information = case.get("solution", ""), case.get("information", "")
    if task in ("code_generation", "code_repair"):
        check("solution_parses", *parses(solution, language))
    elif task == "code_translation":
        target = target_language or ""
        ok, detail = parses(solution, target)
        if ok is False and target.lower() != (language or "").lower():
            in_source, _ = parses(solution, language)
            if in_source:
                detail = f"parses as {language}, not as {target}"
        check("translation_parses_in_target", ok, detail)
        if _squash(solution) and _squash(solution) == _squash(information):
            check("translation_differs_from_source", False, "the solution is the input")
        check("information_parses", *parses(information, language))
    elif task == "code_summarization":
        if _ANY_FENCE.search(solution):
            check("summary_without_code", False, "the summary holds a fenced code block")
        check("information_parses", *parses(information, language))
    if task == "code_repair" and _squash(solution) and _squash(solution) == _squash(information):
        check("repair_differs_from_input", False, "the solution is the buggy input unchanged")
    return case, failed
