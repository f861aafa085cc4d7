from __future__ import annotations

import gzip
import json
import textwrap
from pathlib import Path

import polars as pl
import pytest
from wavecoder.corpus import (
    SCHEMA,
    CorpusFormatError,
    LoadReport,
    harvest_python,
    harvest_python_file,
    harvest_tree_sitter,
    hf_to_frame,
    load_codesearchnet,
)

from .conftest import SHARED_DATA, shared_file


def record(i: int, **extra) -> dict:
    code = f"def f{i}(x):\n    '''Add {i}.'''\n    return x + {i}\n"
    return {
        "repo": f"org/repo{i % 2}",
        "path": f"pkg/mod{i}.py",
        "func_name": f"f{i}",
        "original_string": code,
        "language": "python",
        "code": code,
        "code_tokens": ["def", f"f{i}"],
        "docstring": f"Add {i}.",
        "docstring_tokens": ["Add", str(i)],
        "sha": "abc",
        "url": f"https://example.invalid/{i}",
        "partition": "train",
        **extra,
    }


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def test_plain_file_keeps_schema_and_extra_fields(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [record(0, idx=7), record(1, idx=8)])
    frame = load_codesearchnet(path)
    assert frame.height == 2
    assert list(frame.columns[: len(SCHEMA)]) == list(SCHEMA)
    assert frame["idx"].to_list() == [7, 8]
    assert frame["code_tokens"][0].to_list() == ["def", "f0"]
    assert frame["func_name"].to_list() == ["f0", "f1"]


def test_gz_list_and_folder_searched_recursively(tmp_path):
    write_jsonl(tmp_path / "a.jsonl.gz", [record(0)], gz=True)
    nested = tmp_path / "deep" / "er"
    nested.mkdir(parents=True)
    write_jsonl(nested / "b.jsonl", [record(1), record(2)])
    (nested / "notes.txt").write_text("not a corpus file")
    assert load_codesearchnet(tmp_path / "a.jsonl.gz").height == 1
    assert load_codesearchnet([tmp_path / "a.jsonl.gz", nested / "b.jsonl"]).height == 3
    report = LoadReport()
    frame = load_codesearchnet(tmp_path, report=report)
    assert frame.height == 3 and len(report.files) == 2


def test_malformed_lines_lenient_counts_and_positions(tmp_path):
    rows = [
        record(0),
        "{not json",
        "",
        "[1, 2]",
        record(1),
        {"code": 3},
        record(2, code_tokens="x"),
    ]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    report = LoadReport()
    frame = load_codesearchnet(path, report=report)
    assert frame.height == 2
    assert report.malformed == 4
    assert report.malformed_positions[0].startswith(f"{path}:2:")
    assert report.malformed_positions[1].startswith(f"{path}:4:")
    assert report.as_metrics()["malformed_lines"] == 4


def test_malformed_line_strict_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [record(0), record(1), "{oops"])
    with pytest.raises(CorpusFormatError, match=rf"{path}:3: invalid JSON"):
        load_codesearchnet(path, strict=True)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_codesearchnet(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="no .jsonl"):
        load_codesearchnet(tmp_path)


def test_fields_missing_are_derived(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"code": "def g():\n    return 1", "docstring": "d"}])
    frame = load_codesearchnet(path)
    assert frame["original_string"][0] == "def g():\n    return 1"
    assert frame["code_tokens"][0].to_list()[:3] == ["def", "g", "("]
    assert frame["repo"][0] is None


def test_hf_rows_map_to_original_schema():
    row = {
        "repository_name": "o/r",
        "func_path_in_repository": "a.py",
        "func_name": "f",
        "whole_func_string": "def f(): pass",
        "language": "python",
        "func_code_string": "def f(): pass",
        "func_code_tokens": ["def", "f"],
        "func_documentation_string": "Doc.",
        "func_documentation_tokens": ["Doc"],
        "split_name": "train",
        "func_code_url": "https://github.com/o/r/blob/0123abcd/a.py#L1",
    }
    frame = hf_to_frame([row])
    assert frame.row(0, named=True) | {} == frame.row(0, named=True)
    assert frame["repo"][0] == "o/r" and frame["sha"][0] == "0123abcd"
    assert frame["docstring"][0] == "Doc." and frame["partition"][0] == "train"


@pytest.mark.parametrize(
    "name",
    ["python_test_subset130.codexglue.jsonl", "ruby_valid.codexglue.jsonl"],
)
def test_shared_codesearchnet_files(name):
    path = shared_file("codesearchnet", name)
    report = LoadReport()
    frame = load_codesearchnet(path, strict=True, report=report)
    lines = sum(1 for line in path.read_text().splitlines() if line.strip())
    assert frame.height == lines and report.malformed == 0
    assert frame["docstring"].null_count() == 0
    assert set(frame["language"].unique()) == {"python" if name.startswith("python") else "ruby"}


def test_shared_folder_loads_all_files():
    folder = SHARED_DATA / "codesearchnet"
    if not folder.exists():
        pytest.skip(f"reference data not found: {folder}")
    frame = load_codesearchnet(folder)
    assert frame.height == 130 + 120 + 1261 + 1400 + 100
    assert "idx" in frame.columns  # the AdvTest sample's extra field


PY_SOURCE = textwrap.dedent(
    '''
    """Module doc."""
    import functools


    def top(a, b):
        """Add two numbers.

        Longer text.
        """
        return a + b


    def nodoc(x):
        return x


    class Box:
        """A box."""

        @functools.lru_cache
        def size(self):
            """Return the size of the box."""
            return 3

        def one_liner(self): """Docstring on the def line."""; return 1
    '''
)


def test_harvest_python_file(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    path = root / "pkg" / "mod.py"
    path.write_text(PY_SOURCE)
    records = {r["func_name"]: r for r in harvest_python_file(path, root, "proj")}
    assert set(records) == {"top", "Box.size", "Box.one_liner"}
    top = records["top"]
    assert top["docstring"] == "Add two numbers.\n\nLonger text."
    assert top["code"] == "def top(a, b):\n    return a + b"
    assert '"""Add two numbers.' in top["original_string"]
    assert top["path"] == "pkg/mod.py" and top["url"].endswith("mod.py#L6")
    size = records["Box.size"]
    assert size["code"].startswith("@functools.lru_cache\ndef size(self):")
    assert "Return the size" not in size["code"]
    assert records["Box.one_liner"]["code"].startswith("def one_liner(self):")


def test_harvest_python_tree_skips_excluded_and_broken(tmp_path):
    root = tmp_path / "tree"
    (root / "tests").mkdir(parents=True)
    (root / "a.py").write_text(PY_SOURCE)
    (root / "tests" / "t.py").write_text(PY_SOURCE)
    (root / "broken.py").write_text("def (:\n")
    frame = harvest_python([str(root)], exclude_dirs=["tests"])
    assert frame.height == 3
    assert set(frame["repo"]) == {"tree"}
    assert frame.schema["code_tokens"] == pl.List(pl.String)


def test_harvest_stdlib_sample_is_deterministic():
    first = harvest_python(["stdlib"], max_files=15, seed=5)
    second = harvest_python(["stdlib"], max_files=15, seed=5)
    assert first.height > 0
    assert first["url"].to_list() == second["url"].to_list()
    assert set(first["repo"]) == {"python-stdlib"}


TS_SOURCES = {
    "go": (
        "main.go",
        "package main\n\n// Add returns the sum of a and b.\nfunc Add(a, b int) int {\n"
        "\treturn a + b\n}\n\nfunc undocumented() {}\n\n// Area of the box.\n"
        "func (b Box) Area() int { return b.w * b.h }\n",
        {"Add": "Add returns the sum of a and b.", "Area": "Area of the box."},
    ),
    "java": (
        "Calc.java",
        "class Calc {\n  /**\n   * Adds two ints.\n   * @return the sum\n   */\n"
        "  int add(int a, int b) { return a + b; }\n  int bare() { return 0; }\n}\n",
        {"add": "Adds two ints.\n@return the sum"},
    ),
    "javascript": (
        "lib.js",
        "/** Double a number. */\nfunction double(x) { return 2 * x; }\n"
        "class K {\n  // Say hello to someone.\n  greet(n) { return 'hi ' + n; }\n}\n",
        {"double": "Double a number.", "greet": "Say hello to someone."},
    ),
    "php": (
        "lib.php",
        "<?php\n/**\n * Shout a string.\n */\nfunction shout($s) { return strtoupper($s); }\n",
        {"shout": "Shout a string."},
    ),
    "ruby": (
        "lib.rb",
        '# Greets the user by name.\ndef greet(name)\n  "hi #{name}"\nend\n\n'
        "class A\n  # Class-level helper.\n  def self.make\n    new\n  end\nend\n",
        {"greet": "Greets the user by name.", "make": "Class-level helper."},
    ),
}


@pytest.mark.parametrize("language", sorted(TS_SOURCES))
def test_harvest_tree_sitter(tmp_path, language):
    name, source, expected = TS_SOURCES[language]
    root = tmp_path / f"{language}-src"
    root.mkdir()
    (root / name).write_text(source)
    frame = harvest_tree_sitter({language: [str(root)]})
    found = dict(zip(frame["func_name"], frame["docstring"]))
    assert found == expected
    assert set(frame["language"]) == {language}
    for code, doc in zip(frame["code"], frame["docstring"]):
        assert doc.splitlines()[0] not in code  # the doc comment is not part of the code
    assert all(o.strip().startswith(("/", "#")) for o in frame["original_string"])


def test_tree_sitter_unknown_language(tmp_path):
    with pytest.raises(ValueError, match="not supported"):
        harvest_tree_sitter({"cobol": [str(tmp_path)]})


def test_bom_at_the_start_of_a_file_keeps_its_first_record(tmp_path):
    import gzip

    plain = write_jsonl(tmp_path / "b.jsonl", [record(0), record(1)])
    plain.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    packed = tmp_path / "c.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        report = LoadReport()
        assert load_codesearchnet(path, report=report, strict=True).height == 2
        assert report.malformed == 0
