"""Benchmark registry: loading, prompts, post-processing of completions."""

from __future__ import annotations

import pytest
from wavecoder.evaluation.benchmarks import (
    BenchmarkUnavailable,
    cut_at_stop,
    extract_code,
    get_benchmark,
    list_benchmarks,
)

from .conftest import shared_file


def data_dir():
    return shared_file("mbpp", "mbpp.jsonl").parent.parent


def test_registry_names():
    names = list_benchmarks()
    assert "humaneval" in names and "mbpp" in names
    assert len([n for n in names if n.startswith("humanevalpack-")]) == 18
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("nope")


def test_humaneval_loads_164():
    b = get_benchmark("humaneval")
    assert len(b.problems) == 164 and b.language == "python"
    p = b.problems[0]
    assert p.task_id == "HumanEval/0" and p.prompt in p.instruction and p.stop
    assert len(get_benchmark("humaneval", limit=5).problems) == 5


def test_mbpp500_ids_and_prompt_styles():
    d = data_dir()
    b = get_benchmark("mbpp", data_dir=d)
    ids = [int(p.task_id.split("/")[1]) for p in b.problems]
    assert ids == list(range(11, 511))
    wave = b.problems[0]
    assert all(t in wave.instruction for t in wave.tests) and len(wave.tests) == 3
    big = get_benchmark("mbpp", data_dir=d, prompt_style="bigcode").problems[0]
    assert big.tests[0] in big.prompt and big.tests[1] not in big.prompt
    with pytest.raises(ValueError, match="prompt_style"):
        get_benchmark("mbpp", data_dir=d, prompt_style="other")


def test_missing_data_is_a_clear_error_for_that_benchmark(tmp_path, monkeypatch):
    import wavecoder.evaluation.benchmarks as bm

    monkeypatch.setattr(bm, "_online", lambda: False)
    with pytest.raises(BenchmarkUnavailable, match="mbpp"):
        get_benchmark("mbpp", data_dir=tmp_path)
    with pytest.raises(BenchmarkUnavailable, match="humanevalpack-fix-go"):
        get_benchmark("humanevalpack-fix-go", data_dir=tmp_path)
    assert len(get_benchmark("humaneval", data_dir=tmp_path).problems) == 164


@pytest.mark.parametrize("lang", ["python", "js", "java", "go", "cpp", "rust"])
def test_humanevalpack_tasks_load(lang):
    d = shared_file("humanevalpack", f"humanevalpack_{lang}.jsonl").parent.parent
    for task in ("synthesize", "fix", "explain"):
        b = get_benchmark(f"humanevalpack-{task}-{lang}", data_dir=d, limit=3)
        assert len(b.problems) == 3 and b.language == lang
        p = b.problems[0]
        assert p.reference and p.buggy and p.entry_point
        if task == "fix":
            assert "Fix bugs" in p.instruction and p.buggy in p.prompt
        if task == "explain":
            describe = b.explain_describe_instruction(p)
            assert p.reference in describe
            second = b.explain_synthesize_instruction(p, "Returns the sum.")
            assert "Returns the sum." in second and p.reference not in second


def test_post_processing_python():
    b = get_benchmark("humaneval", limit=1)
    p = b.problems[0]
    body = "    return True\n\ndef extra():\n    pass\n"
    assert b.solution_code(p, body) == p.prompt + "    return True\n"
    chat = (
        f"Sure!\n```python\nfrom typing import List\ndef {p.entry_point}(numbers, t):\n"
        "    return 1\n```\nDone"
    )
    code = b.solution_code(p, chat)
    assert code.startswith(p.prompt) and "return 1" in code and "Sure" not in code
    program = b.build_program(p, p.reference)
    assert program.rstrip().endswith(f"check({p.entry_point})")


def test_cut_and_extract():
    assert cut_at_stop("a\n}\n\nb", ["\n}\n\n"]) == "a\n}"
    assert cut_at_stop("x\ndef y", ["\ndef"]) == "x"
    assert extract_code("t\n```js\nlet a\n```\n```python\nb=1\n```", "python") == "b=1\n"
    assert extract_code("no fences", "python") == "no fences"
