from __future__ import annotations

import polars as pl
import pytest
from wavecoder.select.corpus import records_to_frame, tokenize
from wavecoder.select.filters import (
    NgramIndex,
    blacklist_mask,
    contamination,
    docstring_mask,
    exact_duplicate_mask,
    humaneval_texts,
    length_mask,
    mbpp_texts,
    near_duplicate_mask,
    normalise_code,
)

from .conftest import shared_file


def frame_of(codes, docs=None, language="python"):
    docs = docs or ["Some useful docstring here."] * len(codes)
    return records_to_frame(
        [
            {
                "code": c,
                "docstring": d,
                "language": language,
                "code_tokens": tokenize(c),
                "docstring_tokens": tokenize(d),
            }
            for c, d in zip(codes, docs)
        ]
    )


def test_length_window():
    codes = ["x = 1", "a\nb\nc", "\n".join(["y"] * 10), "z" * 50 + "\nq\nr"]
    keep = length_mask(frame_of(codes), min_lines=3, max_lines=5, max_chars=40)
    assert keep.to_list() == [False, True, False, False]


def test_blacklist_whole_words_any_case_chosen_fields():
    docs = ["Read the FILE and parse it.", "Profile the run.", "Go to the end.", "Sum values."]
    frame = frame_of(["a\nb\nc"] * 4, docs)
    keep = blacklist_mask(frame, ["file", "go to"], ["docstring"])
    assert keep.to_list() == [False, True, False, True]  # 'Profile' is not the word 'file'
    assert blacklist_mask(frame, [], ["docstring"]).all()
    code_hit = frame_of(["open(file)", "x"], ["ok words here", "ok words here"])
    assert blacklist_mask(code_hit, ["file"], ["code"]).to_list() == [False, True]


def test_docstring_minimum():
    frame = frame_of(["c"] * 3, ["", "Two words", "Three words here"])
    assert docstring_mask(frame, 3).to_list() == [False, False, True]


def test_exact_duplicates_ignore_whitespace_and_comments():
    codes = [
        "def f(x):\n    return x + 1",
        "def f(x):\n\n        return   x + 1  # add one",
        "def f(x):\n    return x + 2",
        "def f(x):\n    return x + 1",
    ]
    assert exact_duplicate_mask(frame_of(codes)).to_list() == [True, False, True, False]
    assert normalise_code("a // c\n b", "go") == "a b"


def test_near_duplicates_drop_small_edits_keep_different_code():
    base = "\n".join(f"    total = total + values[{i}] * weights[{i}]" for i in range(30))
    tweaked = base.replace("values[7]", "vals[7]")
    other = "\n".join(f"    name_{i} = lookup(table, key_{i}) or default_{i}" for i in range(30))
    frame = frame_of([base, tweaked, other, base + "\n    return total"])
    keep = near_duplicate_mask(frame, threshold=0.8)
    assert keep.to_list() == [True, False, True, False]
    with pytest.raises(ValueError, match="raise num_perm"):
        near_duplicate_mask(frame, threshold=0.999)
    assert near_duplicate_mask(frame, threshold=0.98).to_list()[2] is True


def test_humaneval_texts_from_package():
    texts = humaneval_texts()
    assert len({t.item_id for t in texts}) == 164
    assert any("def has_close_elements" in t.text for t in texts)


def test_decontamination_flags_copies_of_benchmark_code():
    he = humaneval_texts()
    solution = next(t.text for t in he if t.item_id == "HumanEval/0" and "return False" in t.text)
    body = solution[solution.index("def has_close_elements") :]
    clean = "def unrelated(a):\n    return sorted(a, key=len)[::-1]\n"
    frame = frame_of([body, clean], ["Copied from somewhere.", "Sort by length."])
    hits = contamination(frame, NgramIndex(he, n=10))
    assert hits.to_list() == ["humaneval/HumanEval/0", None]


def test_decontamination_against_mbpp_file():
    rows = mbpp_texts(shared_file("mbpp", "mbpp.jsonl"))
    assert len({t.item_id for t in rows}) == 974
    code = next(t.text for t in rows if t.item_id == "11" and "def " in t.text)
    text = next(t.text for t in rows if t.item_id == "11" and "def " not in t.text)
    frame = frame_of(
        [code, "x = 1\ny = 2\nz = 3", "pass\npass\npass"],
        ["Remove chars.", "Assign numbers.", f"Helper. {text}"],
    )
    hits = contamination(frame, NgramIndex(rows, n=8))
    assert hits.to_list() == ["mbpp/11", None, "mbpp/11"]


def test_common_idioms_are_not_contamination():
    he = humaneval_texts()
    nested = (
        "def pairs(n):\n    out = []\n    for i in range(n):\n        for j in range(i + 1, n):"
    )
    nested += "\n            out.append((i, j))\n    return out\n"
    frame = frame_of([nested, "grid = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]\nprint(grid)\n"])
    assert contamination(frame, NgramIndex(he, n=8)).null_count() == 2


def test_docstring_overlap_counts_too():
    he = humaneval_texts()
    prompt = next(t.text for t in he if t.item_id == "HumanEval/2")
    doc = prompt.split('"""')[1]
    frame = frame_of(["pass\npass\npass"], [doc])
    assert contamination(frame, NgramIndex(he, n=8))[0] == "humaneval/HumanEval/2"
    assert isinstance(frame, pl.DataFrame)
