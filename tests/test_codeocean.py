"""Task specs, task assignment, prompts, tolerant parsing, pre-filters, judge, example DB."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from wavecoder.config import TASKS
from wavecoder.generate import ExampleDB, parse_case, parse_verdict, prefilter, prompts
from wavecoder.generate.parsing import decide, sentences
from wavecoder.generate.tasks import TaskSpecError, assign_tasks, load_task, load_tasks


@pytest.fixture(scope="module")
def specs():
    return load_tasks()


def test_four_specs_with_checklists_and_versions(specs):
    assert list(specs) == list(TASKS)
    assert len({s.version for s in specs.values()}) == 4
    for spec in specs.values():
        assert len(spec.rule_ids) >= 3 and spec.requirements
        verdicts = Counter(e["verdict"] for e in spec.examples)
        assert verdicts["good"] >= 1 and verdicts["bad"] >= 1


def test_spec_version_follows_the_file(tmp_path, specs):
    src = specs["code_repair"].source
    copy = tmp_path / "code_repair.yaml"
    copy.write_text(open(src).read())
    assert load_task(copy).version == specs["code_repair"].version
    copy.write_text(open(src).read().replace("fix it", "repair it"))
    assert load_task(copy).version != specs["code_repair"].version


def test_malformed_spec_names_file_and_key(tmp_path):
    bad = tmp_path / "code_generation.yaml"
    bad.write_text("name: code_generation\ndisplay_name: X\n")
    with pytest.raises(TaskSpecError, match=r"code_generation.yaml: missing key 'fields'"):
        load_task(bad)


def test_task_assignment_exact_quotas_seeded():
    tasks = assign_tasks(100, "paper", seed=3)
    assert Counter(tasks) == {
        "code_generation": 57,
        "code_summarization": 16,
        "code_repair": 16,
        "code_translation": 11,
    }
    assert tasks == assign_tasks(100, "paper", seed=3)
    assert tasks != assign_tasks(100, "paper", seed=4)
    assert set(Counter(assign_tasks(8, "balanced", 0)).values()) == {2}
    assert Counter(assign_tasks(5, {"code_repair": 1.0}, 0)) == {"code_repair": 5}
    with pytest.raises(ValueError, match="unknown task"):
        assign_tasks(5, {"code_golf": 1.0}, 0)


def test_generator_prompt_carries_definition_examples_and_code(specs):
    spec = specs["code_translation"]
    db = ExampleDB.seeded(specs)
    good, bad = db.sample(spec.name, 2, 1, random.Random(0))
    msgs = prompts.generator_messages(
        spec, "def f(x):\n    return x\n", "python", "go", good, bad, 500
    )
    text = msgs[-1]["content"]
    assert spec.definition in text and "Target language: Go" in text
    assert "Good examples" in text and "Bad examples" in text and "Judge's analysis" in text
    assert text.rstrip().endswith("translating it into Go.") and "def f(x):" in text
    judge = prompts.judge_messages(spec, {"instruction": "x"}, "python", "go")[-1]["content"]
    assert all(f"[{rid}]" in judge for rid in spec.rule_ids)


@pytest.mark.parametrize(
    "reply",
    [
        '{"task_name": "Code Generation", "instruction": "Write f.", "information": "f()", '
        '"solution": "def f(): return 1"}',
        'Sure!\n```json\n{"Task name": "Code Generation", "Instruction": "Write f.", '
        '"Information": "f()", "Solution": "def f(): return 1"}\n```',
        "Task name: Code Generation\nInstruction: Write f.\nInformation: f()\n"
        "Solution: def f(): return 1",
        "**Task name:** Code Generation\n**Instruction:** Write f.\n### Information: f()\n"
        "**Solution**: def f(): return 1",
        '{"task_name": "Code Generation", "instruction": "Write f.", "information": "f()", '
        '"solution": "def f(): return 1", "extra": "cut off by max_tok',
    ],
)
def test_parse_case_variants(reply):
    case, error = parse_case(reply)
    assert error is None
    assert case["instruction"] == "Write f." and case["information"] == "f()"
    assert case["solution"] == "def f(): return 1"


def test_parse_case_failures():
    assert parse_case("")[0] is None
    assert parse_case("I cannot help with that.") == (None, "no fields found")


def test_prefilter_reasons(specs):
    gen = specs["code_generation"]
    good = {
        "task_name": "x",
        "instruction": "Write f.",
        "information": "f()",
        "solution": "def f(): return 1",
    }
    assert prefilter(good, gen) == []
    assert "missing_solution" in prefilter({**good, "solution": ""}, gen)
    long = "Do this. Then that. And also more. Finally stop."
    assert sentences(long) == 4 and "instruction_too_long" in prefilter(
        {**good, "instruction": long}, gen
    )
    assert "solution_not_code" in prefilter({**good, "solution": "Use a loop."}, gen)
    summ = specs["code_summarization"]
    assert "summary_is_code" in prefilter(
        {**good, "information": "def f(): return 1", "solution": "```\ndef f(): pass\n```"}, summ
    )
    assert "information_lacks_code" in prefilter(
        {**good, "information": "some code", "solution": "It adds."}, summ
    )
    rep = specs["code_repair"]
    same = {**good, "information": "def f(): return 1", "solution": "def f(): return 1\nok"}
    assert "repair_unchanged" in prefilter(same, rep)


def test_parse_verdict_json_text_and_missing(specs):
    ids = specs["code_generation"].rule_ids
    rules = {rid: {"answer": "yes", "reason": "ok"} for rid in ids}
    v = parse_verdict(json.dumps({"rules": rules, "overall": "yes", "analysis": "fine"}), ids)
    assert v.parsed and v.overall == "yes" and set(v.rules) == set(ids)
    assert decide(v, ids, True) == (True, "accepted")
    text = "\n".join(
        f"{i}. [{rid}] {'no' if i == 2 else 'yes'} - because" for i, rid in enumerate(ids, 1)
    )
    v = parse_verdict(text + "\nOverall answer: No\nAnalysis: weak task.", ids)
    assert v.parsed and v.overall == "no" and v.rules[ids[1]]["answer"] == "no"
    assert decide(v, ids, True) == (False, f"judge_no:{ids[1]}")
    v = parse_verdict(
        json.dumps({"rules": [{"id": ids[0], "answer": True}], "verdict": "Yes."}), ids
    )
    assert v.overall == "yes" and v.rules[ids[0]]["answer"] == "yes"
    assert decide(v, ids, True)[1].startswith("judge_missing_rule")
    assert decide(v, ids, False) == (True, "accepted")
    for reply in ["", "What a nice case.", '{"rules": {}, "analysis": "no verdict"}']:
        v = parse_verdict(reply, ids)
        assert not v.parsed and decide(v, ids, True) == (False, "judge_unparseable")


def test_example_db_pools_sampling_and_roundtrip(specs, tmp_path):
    db = ExampleDB.seeded(specs, pool_size=2)
    counts = db.counts()
    assert counts["code_repair"]["good"] == 2 and counts["code_repair"]["bad"] == 1

    class It:
        id, task, language, target_language, code = (
            "7:code_repair",
            "code_repair",
            "python",
            None,
            "x",
        )

    for i in range(3):
        db.add_judged(It(), {"instruction": f"i{i}"}, accepted=i != 1, analysis="a", rules={})
    assert db.counts()["code_repair"]["good_judged"] == 2  # capped at pool_size
    a = db.sample("code_repair", 2, 1, random.Random("s"))
    b = db.sample("code_repair", 2, 1, random.Random("s"))
    assert a == b
    path = db.save(tmp_path / "db.jsonl")
    again = ExampleDB.load(path, pool_size=2)
    assert again.counts() == db.counts()


# ---------------------------------------------------------------- code validators


@pytest.mark.parametrize(
    ("code", "language", "ok"),
    [
        ("def f(x):\n    return x + 1\n", "python", True),
        ("It returns the sum of a and b.", "python", False),
        ("def f(x):\n    return x\nThe return was broken.", "python", False),
        ("public int add(int a, int b) { return a + b; }", "java", True),  # a bare method
        ("public int add(int a, int b) { return a + ; }", "java", False),
        ("func Add(a, b int) int {\n\treturn a + b\n}", "go", True),  # no package clause
        ("function add(a, b) { return a + b; }", "javascript", True),
        ("function add(a, b) { return a + b;", "javascript", False),
        ("def add(a, b)\n  a + b\nend", "ruby", True),
        ("function add($a, $b) { return $a + $b; }", "php", True),
        ("int add(int a, int b) { return a + b; }", "cpp", True),
        ("fn add(a: i32, b: i32) -> i32 { a + b }", "rust", True),
    ],
)
def test_parses_in_each_language(code, language, ok):
    from wavecoder.generate.validators import parses

    assert parses(code, language)[0] is ok


def test_parses_says_when_it_has_no_parser():
    from wavecoder.generate.validators import parses

    ok, why = parses("x := 1", "klingon")
    assert ok is None and "klingon" in why


def test_validators_name_what_failed_and_unwrap_fences_once():
    from wavecoder.generate.validators import validate

    fenced = "```python\ndef f(x):\n    return x\n```"
    case, failed = validate(
        {"instruction": "Write f.", "information": "", "solution": fenced},
        "code_generation",
        "python",
    )
    assert failed == [] and case["solution"] == "def f(x):\n    return x"
    _, failed = validate(
        {"instruction": "Write f.", "information": "", "solution": "It returns x."},
        "code_generation",
        "python",
    )
    assert [f["validator"] for f in failed] == ["solution_parses"]
    buggy = "def f(x):\n    return x - 1\n"
    _, failed = validate(
        {"instruction": "Fix it.", "information": buggy, "solution": buggy}, "code_repair", "python"
    )
    assert "repair_differs_from_input" in [f["validator"] for f in failed]
    _, failed = validate(
        {"instruction": "To Go.", "information": buggy, "solution": "def g(x):\n    return x\n"},
        "code_translation",
        "python",
        "go",
    )
    assert failed[0]["validator"] == "translation_parses_in_target"
    assert "parses as python" in failed[0]["detail"]
    _, failed = validate(
        {"instruction": "Sum.", "information": buggy, "solution": "It subtracts.\n```\nx\n```"},
        "code_summarization",
        "python",
    )
    assert [f["validator"] for f in failed] == ["summary_without_code"]
    _, failed = validate(
        {"instruction": "Sum.", "information": buggy, "solution": "It subtracts one from x."},
        "code_summarization",
        "python",
    )
    assert failed == []


# ---------------------------------------------------------------- the paper's discriminator

PAPER_RULES = {
    "code_generation": {"instruction_names_language", "solution_is_code", "imports_present"},
    "code_repair": {"instruction_names_language", "information_is_code"},
    "code_summarization": {"instruction_names_language", "information_has_code"},
    "code_translation": {
        "instruction_names_languages",
        "information_has_source",
        "solution_only_code",
        "imports_present",
    },
}


def test_each_task_carries_the_papers_rules(specs):
    for name, spec in specs.items():
        assert {r.id for r in spec.checklist if r.paper} == PAPER_RULES[name]
        assert len(set(spec.rule_ids)) == len(spec.rule_ids)
        for ex in spec.examples:  # seeded verdicts answer every rule of the task
            if ex.get("rules"):
                assert set(ex["rules"]) == set(spec.rule_ids), (name, ex["case"]["instruction"])
    assert any("import" in r for r in specs["code_generation"].requirements)


def test_judge_sees_raw_code_requirements_and_bad_examples(specs):
    spec = specs["code_generation"]
    db = ExampleDB.seeded(specs)
    _, bad = db.sample(spec.name, 0, 2, random.Random(0))
    raw = "def area(r):\n    return 3.14159 * r * r\n" + "# filler\n" * 400
    case = {"task_name": "Code Generation", "instruction": "Write a Python function."}
    msgs = prompts.judge_messages(
        spec, case, "python", None, raw_code=raw, bad_examples=bad, max_code_chars=300
    )
    text = msgs[-1]["content"]
    assert "reviewer" in msgs[0]["content"]
    assert "def area(r):" in text and len(text) < len(raw)  # the raw code, clipped
    assert all(req in text for req in spec.requirements) and "Language: Python." in text
    assert "Bad examples" in text
    for ex in bad:
        assert ex["analysis"].strip() in text and ex["case"]["instruction"] in text
    assert all(f"[{rid}]" in text for rid in spec.rule_ids)
    assert text.index("Bad examples") < text.index("Raw code the case") < text.index("Case to")
    assert "<" not in prompts.JUDGE_REPLY_FORMAT  # nothing to copy as the analysis
    bare = prompts.judge_messages(spec, case, "python", None)[-1]["content"]
    assert "Bad examples" not in bare and "Raw code" not in bare


def test_pipeline_judge_gets_raw_code_and_the_generators_bad_sample(specs):
    import asyncio

    from wavecoder.config import GenerateParams
    from wavecoder.generate.pipeline import Item, _process

    spec = specs["code_generation"]
    _, bad = ExampleDB.seeded(specs).sample(spec.name, 0, 1, random.Random(1))
    code = "def twice(x):\n    return 2 * x\n"
    sent: dict[str, list] = {}

    class Result:
        def __init__(self, text):
            self.text, self.ok, self.error, self.key, self.cached = text, True, None, "k", False
            self.attempts, self.latency_s, self.prompt_tokens = 1, 0.0, 0
            self.completion_tokens, self.cost_usd, self.finish_reason = 0, 0.0, "stop"

    class Session:
        def model_of(self, role):
            return role

        async def chat(self, role, messages, version, schema=None):
            sent[role] = messages
            if role == "generator":
                case = {
                    "task_name": "Code Generation",
                    "instruction": "Write a Python function that triples x.",
                    "information": "Signature: triple(x: int) -> int.",
                    "solution": "def triple(x):\n    return 3 * x",
                }
                return Result(json.dumps(case))
            rules = {rid: {"answer": "yes", "reason": "ok"} for rid in spec.rule_ids}
            return Result(json.dumps({"rules": rules, "overall": "yes", "analysis": "Sound."}))

    item = Item("1:code_generation", 1, 0, "code_generation", "python", code)
    params = GenerateParams(validators=False)
    record = asyncio.run(_process(item, spec, Session(), [], bad, params))
    judge = sent["discriminator"][-1]["content"]
    assert record["status"] == "accepted"
    assert "def twice(x):" in judge and bad[0]["analysis"].strip() in judge


def test_spec_version_changes_with_rules_and_template(tmp_path, specs, monkeypatch):
    from wavecoder.generate import tasks

    src = open(specs["code_generation"].source).read()
    copy = tmp_path / "code_generation.yaml"
    copy.write_text(src.replace("paper: true", "paper: false", 1))
    assert load_task(copy).version != specs["code_generation"].version
    copy.write_text(src)
    monkeypatch.setattr(tasks, "PROMPT_TEMPLATE_VERSION", "test")
    assert load_task(copy).version != specs["code_generation"].version


@pytest.mark.parametrize(
    "analysis",
    [
        "<one or two sentences>",
        " <your analysis here> ",
        "one or two sentences",
        "...",
        "[analysis]",
        "your own one or two sentences about this particular case",
    ],
)
def test_placeholder_analysis_is_not_a_verdict(specs, analysis):
    ids = specs["code_repair"].rule_ids
    rules = {rid: {"answer": "yes", "reason": "<why, in a few words>"} for rid in ids}
    v = parse_verdict(json.dumps({"rules": rules, "overall": "yes", "analysis": analysis}), ids)
    assert not v.parsed and v.error == "placeholder analysis"
    assert decide(v, ids, True) == (False, "judge_unparseable")
    assert decide(v, ids, False) == (False, "judge_unparseable")
    text = "\n".join(f"{i}. [{rid}] yes" for i, rid in enumerate(ids, 1))
    v = parse_verdict(f"{text}\nOverall: yes\nAnalysis: {analysis}", ids)
    assert not v.parsed


def test_real_analysis_and_reasons_are_kept(specs):
    ids = specs["code_repair"].rule_ids
    rules = {rid: {"answer": "yes", "reason": "<why, in a few words>"} for rid in ids}
    reply = {"rules": rules, "overall": "yes", "analysis": "The bug < and > are real; fixed."}
    v = parse_verdict(json.dumps(reply), ids)
    assert v.parsed and v.analysis.startswith("The bug")
    assert all(r["reason"] == "" for r in v.rules.values())  # placeholder reasons dropped
    assert decide(v, ids, False) == (True, "accepted")
