"""Reference-exact prompts and post-processing of the paper's evaluation code, written anew.

HumanEvalPack: bigcode-evaluation-harness `bigcode_eval/tasks/humanevalpack.py` (commit
8fc5bae6, unchanged in behaviour for these styles since 92c81a04) and the program its
`code_eval_octopack` metric executes (`candidate + "\\n" + reference`). MBPP(500): WaveCoder's
`src/eval/mbpp_500` scripts (`generate.py`, `evaluate.py`, `Prompter`) and HF `code_eval`.
`../shared/conformance/` holds outputs of the upstream functions; tests compare byte for byte.

Each function says which upstream function it matches. Deviations live elsewhere, as named
options (`mbpp_postprocess="lenient"`), never here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from wavecoder.prompts import ALPACA_PROMPT_NO_INPUT, alpaca_prompt, alpaca_response

LANGUAGES = ("python", "js", "java", "go", "cpp", "rust")
LANGUAGE_TO_NAME = {
    "python": "Python",
    "cpp": "C++",
    "js": "JavaScript",
    "java": "Java",
    "go": "Go",
    "rust": "Rust",
}
# bigcode's LANGUAGE_TO_STOP_WORDS (from CodeGeeX / MultiPL-E); every task adds <|endoftext|>.
_LANGUAGE_STOP_WORDS = {
    "python": ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\nassert"),
    "cpp": (),
    "js": (),
    "go": ("\n//", "\nfunc main(", "struct", "\nfunc"),
    "java": (),
    "rust": (),
}
END_OF_TEXT = "<|endoftext|>"

# bigcode's IMPORT_HELPER (from CodeGeeX), prepended by process_results.
PYTHON_IMPORTS = (
    "import math",
    "import re",
    "import sys",
    "import copy",
    "import datetime",
    "import itertools",
    "import collections",
    "import heapq",
    "import statistics",
    "import functools",
    "import hashlib",
    "import numpy",
    "import numpy as np",
    "import string",
    "from typing import *",
    "from collections import *",
)
GO_PACKAGES = (
    "math",
    "strings",
    "fmt",
    "strconv",
    "time",
    "bytes",
    "regexp",
    "sort",
    "math/rand",
    "crypto/md5",
)
CPP_INCLUDES = (
    "using namespace std;",
    "#include<stdlib.h>",
    "#include<algorithm>",
    "#include<cmath>",
    "#include<math.h>",
    "#include<numeric>",
    "#include<stdio.h>",
    "#include<vector>",
    "#include<set>",
    "#include<map>",
    "#include<queue>",
    "#include<stack>",
    "#include<list>",
    "#include<deque>",
    "#include<boost/any.hpp>",
    "#include<string>",
    "#include<climits>",
    "#include<cstring>",
    "#include<iostream>",
    "#include<sstream>",
    "#include<fstream>",
)

HEP_STYLES = ("wizardcoder", "instruct", "continue")


def stop_words(language: str) -> list[str]:
    """`task.stop_words` of a freshly built HumanEvalPack task (any task, these styles)."""
    return [*_LANGUAGE_STOP_WORDS[language], END_OF_TEXT]


def prompt_base(doc: Mapping[str, Any], language: str, with_docs: bool) -> str:
    """`HumanEvalPack.get_prompt_base`."""
    if with_docs:
        return doc["prompt"]
    if language == "rust":
        return "fn main(){}\n" + doc["declaration"]
    return doc["declaration"]


def wrap(style: str, base: str, instruction: str, context: str | None = None) -> str:
    """`HumanEvalPack.get_prompt` for the styles `wizardcoder`, `instruct`, `continue`."""
    if context is None:
        inp = instruction
    elif style in ("continue", "instruct"):
        inp = context + "\n" + instruction
    else:
        inp = instruction + "\n" + context
    if style == "continue":
        if context is not None:
            raise ValueError(
                "the 'continue' prompt style is for Synthesize only "
                "(bigcode: use 'instruct' for Fix and Explain)"
            )
        prompt = base
    elif style == "instruct":
        prompt = inp + "\n\n" + base
    elif style == "wizardcoder":
        prompt = ALPACA_PROMPT_NO_INPUT.format(instruction=inp) + base
    else:
        raise ValueError(f"unknown HumanEvalPack prompt style {style!r}; known: {HEP_STYLES}")
    return prompt.strip()


def describe_instruction(doc: Mapping[str, Any]) -> str:
    return (
        "Provide a concise natural language description of the code using at most "
        f"{len(doc['docstring'])} characters."
    )


def task_prompt(
    task: str, language: str, style: str, doc: Mapping[str, Any], description: str | None = None
) -> str:
    """`get_prompt(doc)` of the harness task: synthesize, fix (fix-with-tests), describe
    (explain, first pass) or explain (explain-synthesize from `description`)."""
    if task == "synthesize":
        return wrap(style, prompt_base(doc, language, True), doc["instruction"].strip())
    base = prompt_base(doc, language, False)
    if task == "fix":
        context = base + doc["buggy_solution"] + "\n" + doc["test"]
        return wrap(style, base, f"Fix bugs in {doc['entry_point']}.", context).strip()
    if task == "describe":
        return wrap(style, "", describe_instruction(doc), base + doc["canonical_solution"])
    if task == "explain":
        if description is None:
            raise ValueError("the explain-synthesize prompt needs the description")
        instruction = (
            f"Write functional code in {LANGUAGE_TO_NAME[language]} according to the description."
        )
        return wrap(style, base, instruction, description)
    raise ValueError(f"unknown HumanEvalPack task {task!r}")


def generation_finished(code: str, language: str) -> bool:
    """`HumanEvalPackGenerative.check_fn`: generation may stop (a stop word, an unindented
    Python line, or balanced braces in the generated text)."""
    if any(word in code for word in stop_words(language)):
        return True
    if language == "python":
        return any(line.strip() and line[0] not in (" ", "\t") for line in code.split("\n"))
    open_brackets = 2 if language == "java" else 1
    return code.count("{") + open_brackets == code.count("}")


def remove_last_block(code: str, language: str) -> str:
    """`HumanEvalPackGenerative.remove_last_block`: cut at stop words, then at the end of the
    first top-level block (Python: the first unindented line; braces: where they balance)."""
    for word in stop_words(language):
        if word in code:
            code = code[: code.find(word)]
    if language == "python":
        lines = code.split("\n")
        for i, line in enumerate(lines):
            if len(line.strip()) > 0 and line[0] != " " and line[0] != "\t":
                return "\n".join(lines[:i])
        return code
    open_brackets = 2 if language == "java" else 1
    for i, char in enumerate(code):
        if char == "{":
            open_brackets += 1
        elif char == "}":
            open_brackets -= 1
        if open_brackets == 0:
            return code[: i + 1]
    if language == "java":
        main_pos = code.find("public static void main")
        if main_pos != -1:
            code = code[:main_pos] + "}"
        if "}" in code:
            code = code[: code.rfind("}")] + "}"
        if code.count("{") - 1 == code.count("}"):
            code += "\n}"
    elif "}" in code:
        code = code[: code.rfind("}")] + "}"
    return code


def postprocess_code(
    task: str, language: str, doc: Mapping[str, Any], generation: str, prompt: str
) -> str:
    """`postprocess_generation` of the code tasks; `generation` is prompt + model text."""
    gen = remove_last_block(generation[len(prompt) :].rstrip(), language)
    if task == "fix":
        return prompt_base(doc, language, False).rstrip() + gen
    # Synthesize and explain-synthesize (the latter inherits it): the docstring prompt.
    return doc["prompt"].rstrip() + gen


def postprocess_description(
    language: str, doc: Mapping[str, Any], generation: str, prompt: str
) -> str:
    """`HumanEvalExplainDescribe.postprocess_generation`: strip, cut to len(docstring)
    characters, cut at stop words, drop copied solution lines longer than 20 characters."""
    text = generation[len(prompt) :].strip()[: len(doc["docstring"])]
    for word in stop_words(language):
        if word in text:
            text = text[: text.find(word)]
    text = text.rstrip()
    for line in doc["canonical_solution"].split("\n"):
        line = line.strip()
        if len(line) > 20 and line in text:
            text = text.replace(line, "")
    return text


def candidates(language: str, doc: Mapping[str, Any], programs: Sequence[str]) -> list[str]:
    """The language fix-ups of `process_results` for the post-processed generations of one
    problem (in order: Go's import clean-up carries over from one generation to the next, as
    upstream). Go's added import block lists packages in IMPORT_HELPER order (upstream: set
    order, i.e. hash-seed dependent)."""
    if language == "python":
        header = "\n".join(PYTHON_IMPORTS)
        return [(header + "\n" + g).strip() for g in programs]
    if language == "cpp":
        header = "\n".join(CPP_INCLUDES)
        return [(header + "\n" + g.split("int main")[0]).strip() for g in programs]
    if language == "java":
        return [g.replace("public class Main {\n    }", "").strip() for g in programs]
    if language == "go":
        return _go_candidates(doc, programs)
    if language == "rust":
        return [_rust_candidate(doc, g) for g in programs]
    return list(programs)  # js


def _go_candidates(doc: Mapping[str, Any], programs: Sequence[str]) -> list[str]:
    reference = test_reference(doc)
    setup = doc["test_setup"] + "\n"
    out = []
    for g in programs:
        for line in setup.split("\n"):
            line = line.replace("import", "").replace("(", "").replace(")", "").strip()
            if line.startswith('"') and line in g:
                setup = setup.replace(line, "")
        whole = setup + g + "\n" + reference
        lines = whole.split("\n")
        extra = []
        for pkg in GO_PACKAGES:
            if '"' + pkg + '"' in whole:
                continue
            name = pkg.split("/")[-1]
            if name + "." in whole and any(
                name + "." in line and not line.strip().startswith("//") for line in lines
            ):
                quoted = '"' + name + '"'  # upstream adds the last path element only
                if quoted not in extra:
                    extra.append(quoted)
        block = "import (\n" + "\n".join("    " + p for p in extra) + "\n)\n" if extra else ""
        if "package main" in g and "package main" in setup:
            g = g.replace("package main", "")
        out.append(setup + block + g)
    return out


def _rust_candidate(doc: Mapping[str, Any], g: str) -> str:
    out = "" if "fn main()" in g else "fn main(){}\n"
    for line in doc["declaration"].split("\n"):
        stripped = line.strip()
        if stripped not in g:
            if stripped.startswith("fn") and stripped.split("(")[0] in g:
                continue
            out += stripped + "\n"
    return out + "fn main()".join(g.split("fn main()")[0:2])


def test_reference(doc: Mapping[str, Any]) -> str:
    """`get_reference(doc)`: the test code (its `check(...)` call included)."""
    return "\n" + doc["test"]


def program(candidate: str, doc: Mapping[str, Any]) -> str:
    """What `code_eval_octopack` executes: `candidate + "\\n" + reference`."""
    return candidate + "\n" + test_reference(doc)


# ------------------------------------------------------------------ MBPP(500), WaveCoder

MBPP_TEST_HEADER = "the function should pass the following test code:\n"


def mbpp_prompt(row: Mapping[str, Any]) -> str:
    """`generate.prepare_prompt_mbpp`: the Alpaca no-input prompt around the text and the
    three asserts."""
    return alpaca_prompt(row["text"] + "\n" + MBPP_TEST_HEADER + "\n".join(row["test_list"]))


def mbpp_reference_test(row: Mapping[str, Any]) -> str:
    """`references_mbpp.json[i]`: the asserts joined by newlines (test_setup_code unused)."""
    return "\n".join(row["test_list"])


def mbpp_generation(prompt: str, completion: str, eos_token: str | None = None) -> str:
    """`generate.generate`: `Prompter.get_response(decoded)` with the eos token removed."""
    text = alpaca_response(prompt + completion)
    return text.replace(eos_token, "") if eos_token else text


def mbpp_program(generation: str, row: Mapping[str, Any]) -> str:
    """What `evaluate.pass_k_evaluation` executes through HF code_eval (decides pass@k)."""
    return generation + "\n" + mbpp_reference_test(row)


def fenced_code(text: str) -> str:
    """The first fenced code block of a chat reply, else the reply itself."""
    blocks = _FENCE.findall(text)
    return blocks[0][1] if blocks else text


_DEFINITION = {
    "python": r"(?m)^\s*def\s+{name}\s*\(",
    "js": r"(?:function\s+{name}\s*\(|(?:const|let|var)\s+{name}\s*=)",
    "java": r"\b{name}\s*\([^;]*\)\s*(?:throws[^{{]*)?\{{",
    "go": r"(?m)^func\s+{name}\s*\(",
    "cpp": r"\b{name}\s*\([^;]*\)\s*\{{",
    "rust": r"(?m)^\s*(?:pub\s+)?fn\s+{name}\s*[<(]",
}


def defines(code: str, name: str, language: str) -> bool:
    """Whether `code` defines the function `name` (not only calls it)."""
    return bool(re.search(_DEFINITION[language].format(name=re.escape(name)), code))


def signature_start(base: str, name: str, language: str) -> int | None:
    """Offset of the line where the prompt's code starts defining `name` (its decorators,
    docstring comments and the like stay in the header before it)."""
    matches = list(re.finditer(_DEFINITION[language].format(name=re.escape(name)), base))
    if not matches:
        return None
    return base.rfind("\n", 0, matches[-1].start()) + 1


_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)


def mbpp_lenient_code(generation: str) -> str:
    """Our lenient extraction (option `mbpp_postprocess: lenient`, not the reference): the first
    fenced Python block if any; otherwise the text up to the first line of prose after code."""
    blocks = _FENCE.findall(generation)
    for lang, body in blocks:
        if lang.lower() in ("python", "py", "python3", ""):
            return body
    if blocks:
        return blocks[0][1]
    import ast

    lines = generation.split("\n")
    for end in range(len(lines), 0, -1):
        try:
            ast.parse("\n".join(lines[:end]))
        except SyntaxError:
            continue
        return "\n".join(lines[:end])
    return generation
