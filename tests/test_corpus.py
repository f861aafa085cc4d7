from __future__ import annotations

import gzip
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace as NS

import polars as pl
import pytest
from wavecoder.select.corpus import (
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
    assert all(url.startswith("stdlib/") for url in first["url"])


def _fake_package_root(root: Path) -> Path:
    """A small source tree: two packages, a Go file, and things a harvest must skip."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text(PY_SOURCE)
    (root / "pkg" / "sub" / "deep.py").write_text(PY_SOURCE.replace("top", "deep_top"))
    (root / "other.py").write_text('def helper():\n    """Help a little."""\n    return 1\n')
    (root / "main.go").write_text(TS_SOURCES["go"][1])
    venv = root / "env"  # a virtual environment inside the tree names this machine's folders
    (venv / "lib").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {root}\n")
    (venv / "lib" / "inside.py").write_text(PY_SOURCE)
    (root / "__editable___pkg_finder.py").write_text(
        f'MAPPING = {{"pkg": "{root}"}}\n\ndef find(n):\n    """Find {root}."""\n    return n\n'
    )
    return root


def test_harvest_gives_identical_records_wherever_the_tree_lies(tmp_path):
    first = _fake_package_root(tmp_path / "one" / "site")
    second = _fake_package_root(tmp_path / "two" / "deeper" / "still" / "site")
    a = harvest_python([str(first)])
    b = harvest_python([str(second)])
    assert a.height == 7  # 3 + 3 in pkg/, 1 in other.py; nothing from env/ or __editable__*
    assert a.to_dicts() == b.to_dicts()
    assert sorted(set(a["path"])) == ["other.py", "pkg/__init__.py", "pkg/sub/deep.py"]
    assert all(url.startswith("site/") for url in a["url"])
    go_a = harvest_tree_sitter({"go": [str(first)]})
    go_b = harvest_tree_sitter({"go": [str(second)]})
    assert go_a.height == 2 and go_a.to_dicts() == go_b.to_dicts()
    assert set(go_a["url"]) == {"site/main.go#L4", "site/main.go#L11"}
    for frame in (a, b, go_a, go_b):
        for column in ("path", "url", "original_string", "code", "docstring"):
            assert not any(str(tmp_path) in value for value in frame[column])
    # the manifest's inputs for stage 01: the same keys and values for both places
    from wavecoder.select.corpus import harvest_inputs

    one = harvest_inputs([str(first)], {"go": [str(first)]})
    two = harvest_inputs([str(second)], {"go": [str(second)]})
    assert one == two and set(one) == {"tree:python:site", "tree:go:site"}
    (second / "pkg" / "extra.py").write_text("x = 1\n")
    assert harvest_inputs([str(second)], {})["tree:python:site"] != one["tree:python:site"]


def test_stdlib_and_site_packages_leave_out_machine_specific_trees(tmp_path, monkeypatch):
    import wavecoder.select.corpus as corpus

    stdlib = tmp_path / "prefix" / "lib" / "python3.x"
    (stdlib / "site-packages" / "boto").mkdir(parents=True)  # the base interpreter's packages
    (stdlib / "json").mkdir()
    (stdlib / "json" / "mod.py").write_text(PY_SOURCE)
    (stdlib / "site-packages" / "boto" / "x.py").write_text(PY_SOURCE)
    site = tmp_path / "venv" / "lib" / "python3.x" / "site-packages"
    for top in ("numpy", "nvidia", "triton", "wavecoder"):
        (site / top).mkdir(parents=True)
        (site / top / "m.py").write_text(PY_SOURCE)
    (site / "__editable___wavecoder_0_1_0_finder.py").write_text(PY_SOURCE)
    paths = {"stdlib": str(stdlib), "purelib": str(site), "platlib": str(site)}
    monkeypatch.setattr(corpus.sysconfig, "get_paths", lambda: paths)
    monkeypatch.setattr(
        corpus,
        "_distribution_index",
        lambda: {"numpy": "numpy", "nvidia": "nvidia-cublas", "wavecoder": "wavecoder"},
    )
    found = harvest_python(["stdlib", "site-packages"])
    assert sorted(set(found["url"].str.replace(r"#L\d+$", ""))) == [
        "site-packages/numpy/m.py",
        "stdlib/json/mod.py",
    ]
    assert set(found["repo"]) == {"numpy", "python-stdlib"}


IRREGULAR_FORMS = {
    "bom": lambda text: "\ufeff" + text,
    "crlf": lambda text: text.replace("\n", "\r\n"),
    "bom+crlf": lambda text: "\ufeff" + text.replace("\n", "\r\n"),
    "trailing blank lines": lambda text: text + "\n\n  \n",
    "bom+crlf+trailing": lambda text: "\ufeff" + (text + "\n\n").replace("\n", "\r\n"),
}


@pytest.mark.parametrize("form", sorted(IRREGULAR_FORMS))
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_irregular_jsonl_files_load_every_record(tmp_path, form, gz):
    text = "".join(json.dumps(record(i)) + "\n" for i in range(3))
    data = IRREGULAR_FORMS[form](text).encode("utf-8")
    path = tmp_path / ("c.jsonl.gz" if gz else "c.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    report = LoadReport()
    frame = load_codesearchnet(path, report=report, strict=True)
    assert frame["func_name"].to_list() == ["f0", "f1", "f2"]
    assert report.malformed == 0 and report.records == 3


@pytest.mark.parametrize("form", sorted(IRREGULAR_FORMS))
def test_irregular_source_files_harvest_like_regular_ones(tmp_path, form):
    regular, irregular = tmp_path / "regular" / "src", tmp_path / "irregular" / "src"
    for root, change in ((regular, lambda t: t), (irregular, IRREGULAR_FORMS[form])):
        root.mkdir(parents=True)
        (root / "mod.py").write_bytes(change(PY_SOURCE).encode("utf-8"))
        (root / "main.go").write_bytes(change(TS_SOURCES["go"][1]).encode("utf-8"))
    # a file's sha is of its text with LF line ends: only the extra blank lines change it
    drop = {"repo"} | ({"sha"} if "trailing" in form else set())
    python = [harvest_python([str(root)]).drop(drop).to_dicts() for root in (regular, irregular)]
    assert len(python[0]) == 3 and python[0] == python[1]
    go = [
        harvest_tree_sitter({"go": [str(root)]}).drop(drop).to_dicts()
        for root in (regular, irregular)
    ]
    assert len(go[0]) == 2 and go[0] == go[1]


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


# ---------------------------------------------------------------- CodeSearchNet hub files


def _csn_rows(language: str, split: str, n: int, start: int = 0) -> list[dict]:
    return [
        record(i, language=language, partition=split, func_name=f"{language}_{split}_{i}")
        for i in range(start, start + n)
    ]


def _write_csn_zip(root: Path, language: str, parts: dict[str, list[list]]) -> Path:
    """data/<language>.zip laid out like the original release: one .jsonl.gz per part."""
    import io
    import zipfile

    path = root / "data" / f"{language}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for folder, chunks in parts.items():
            for n, rows in chunks:
                buffer = io.StringIO()
                for row in rows:
                    buffer.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
                archive.writestr(
                    f"{language}/final/jsonl/{folder}/{language}_{folder}_{n}.jsonl.gz",
                    gzip.compress(buffer.getvalue().encode()),
                )
        archive.writestr(f"{language}_licenses.pkl", b"not read")
    return path


COMMIT = "c0ffee" * 6 + "abcd"


def _hf_row(rec: dict) -> dict:
    """A row as the HF `code_search_net` features name it (what the parquet files hold)."""
    return {
        "repository_name": rec["repo"],
        "func_path_in_repository": rec["path"],
        "func_name": rec["func_name"],
        "whole_func_string": rec["original_string"],
        "language": rec["language"],
        "func_code_string": rec["code"],
        "func_code_tokens": rec["code_tokens"],
        "func_documentation_string": rec["docstring"],
        "func_documentation_tokens": rec["docstring_tokens"],
        "split_name": rec["partition"],
        "func_code_url": f"https://github.com/{rec['repo']}/blob/{COMMIT}/{rec['path']}#L1",
    }


def _write_csn_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame([_hf_row(r) for r in rows]).write_parquet(path)
    return path


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a socket fails the test: local folders must be read, not the hub."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("test tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("WAVECODER_CSN_HUB_DIR", raising=False)


def test_hub_zip_layout_reads_the_split_in_part_order(tmp_path, offline):
    from wavecoder.select.corpus import load_codesearchnet_hf

    zipped = _write_csn_zip(
        tmp_path,
        "python",
        {
            "train": [
                (10, _csn_rows("python", "train", 1, start=20)),
                (0, _csn_rows("python", "train", 2)),
                (2, _csn_rows("python", "train", 1, start=10)),
            ],
            "valid": [(0, _csn_rows("python", "valid", 3, start=100))],
            "test": [(0, _csn_rows("python", "test", 1, start=200))],
        },
    )
    report = LoadReport()
    frame = load_codesearchnet_hf(["python"], "train", report=report, repo_root=tmp_path)
    assert list(frame.columns[: len(SCHEMA)]) == list(SCHEMA)
    assert frame.schema["code_tokens"] == pl.List(pl.String)
    # parts in numeric order (0, 2, 10), not in the archive's or lexical order
    assert frame["func_name"].to_list() == [
        "python_train_0",
        "python_train_1",
        "python_train_10",
        "python_train_20",
    ]
    assert set(frame["partition"]) == {"train"} and frame["sha"][0] == "abc"
    assert report.records == 4 and report.malformed == 0

    prov = report.provenance
    assert prov["repo_id"] == "code-search-net/code_search_net"
    assert prov["revision"] == f"local:{tmp_path.resolve()}" and prov["source"] == "local"
    (part,) = prov["parts"]
    assert part["language"] == "python" and part["format"] == "zip" and part["rows"] == 4
    (entry,) = part["files"]
    assert entry["path"] == "data/python.zip" and entry["sha256"] == _sha(zipped)
    assert entry["bytes"] == zipped.stat().st_size
    assert entry["members"] == [
        f"python/final/jsonl/train/python_train_{n}.jsonl.gz" for n in (0, 2, 10)
    ]
    assert report.files == [
        f"hf:code-search-net/code_search_net@local:{tmp_path.resolve()}/data/python.zip"
    ]
    assert report.as_metrics()["provenance"] == prov
    json.dumps(report.as_metrics())  # goes to metrics.json as is

    # HF split names map to the release's folders: validation -> valid
    valid = load_codesearchnet_hf(["python"], "validation", repo_root=tmp_path)
    assert valid["func_name"].to_list() == [f"python_valid_{i}" for i in (100, 101, 102)]


def test_hub_parquet_layouts_map_to_the_original_schema(tmp_path, offline):
    from wavecoder.select.corpus_hub import load_codesearchnet_hub

    conv = _write_csn_parquet(
        tmp_path / "go" / "train" / "0000.parquet", _csn_rows("go", "train", 2)
    )
    _write_csn_parquet(tmp_path / "go" / "validation" / "0000.parquet", _csn_rows("go", "valid", 1))
    native = _write_csn_parquet(
        tmp_path / "ruby" / "train-00000-of-00001.parquet", _csn_rows("ruby", "train", 1)
    )
    _write_csn_zip(tmp_path, "php", {"train": [(0, _csn_rows("php", "train", 1))]})
    records, prov = load_codesearchnet_hub(["go", "ruby", "php"], "train", repo_root=tmp_path)
    assert [r["func_name"] for r in records] == [
        "go_train_0",
        "go_train_1",
        "ruby_train_0",
        "php_train_0",
    ]
    go = records[0]
    assert set(SCHEMA) <= set(go)
    assert go["repo"] == "org/repo0" and go["code"].startswith("def f0")
    assert go["partition"] == "train" and go["sha"] == COMMIT
    formats = {p["language"]: (p["format"], [f["path"] for f in p["files"]]) for p in prov["parts"]}
    assert formats == {
        "go": ("parquet", ["go/train/0000.parquet"]),
        "ruby": ("parquet", ["ruby/train-00000-of-00001.parquet"]),
        "php": ("zip", ["data/php.zip"]),
    }
    assert prov["parts"][0]["files"][0]["sha256"] == _sha(conv)
    assert prov["parts"][1]["files"][0]["sha256"] == _sha(native)
    assert prov["rows"] == 4 and prov["split"] == "train"


def test_hub_local_folder_from_the_environment(tmp_path, offline, monkeypatch):
    from wavecoder.select.corpus import load_codesearchnet_hf

    _write_csn_zip(tmp_path, "java", {"test": [(0, _csn_rows("java", "test", 2))]})
    monkeypatch.setenv("WAVECODER_CSN_HUB_DIR", str(tmp_path))
    report = LoadReport()
    frame = load_codesearchnet_hf(["java"], "test", report=report)
    assert frame.height == 2 and report.provenance["source"] == "local"


def test_hub_missing_language_split_or_folder_is_named(tmp_path, offline):
    from wavecoder.select.corpus import CorpusFormatError
    from wavecoder.select.corpus_hub import HubDataUnavailable, load_codesearchnet_hub

    _write_csn_zip(
        tmp_path,
        "python",
        {"train": [(0, _csn_rows("python", "train", 1) + ["{broken"])]},
    )
    with pytest.raises(HubDataUnavailable, match=r"language java, split train.*data/java\.zip"):
        load_codesearchnet_hub(["python", "java"], "train", repo_root=tmp_path)
    with pytest.raises(
        HubDataUnavailable, match=r"data/python\.zip: no python/final/jsonl/test/python_test_<n>"
    ):
        load_codesearchnet_hub(["python"], "test", repo_root=tmp_path)
    with pytest.raises(HubDataUnavailable, match="local repository folder not found"):
        load_codesearchnet_hub(["python"], repo_root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown language 'cobol'"):
        load_codesearchnet_hub(["cobol"], repo_root=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_codesearchnet_hub(["python"], "dev", repo_root=tmp_path)
    # a malformed line: counted, or an error naming archive, member and line when strict
    report = LoadReport()
    records, _ = load_codesearchnet_hub(["python"], repo_root=tmp_path, report=report)
    assert len(records) == 1 and report.malformed == 1
    assert (
        "data/python.zip!python/final/jsonl/train/python_train_0.jsonl.gz:2"
        in (report.malformed_positions[0])
    )
    with pytest.raises(CorpusFormatError, match=r"python_train_0\.jsonl\.gz:2: invalid JSON"):
        load_codesearchnet_hub(["python"], repo_root=tmp_path, strict=True)


class _FakeHub:
    """Stands in for huggingface_hub: `refs` maps a revision to (commit, {path: local file})."""

    def __init__(
        self, refs: dict[str, tuple[str, dict[str, Path]]], lfs: dict[str, str] | None = None
    ):
        self.refs = refs
        self.lfs = lfs or {}
        self.downloads: list[tuple[str, str]] = []

    def install(self, monkeypatch):
        import huggingface_hub

        class RevisionNotFoundError(Exception):  # recognised by name, as the hub's is
            pass

        hub = self

        class Api:
            def dataset_info(self, repo_id, revision=None, files_metadata=False):
                assert repo_id == "code-search-net/code_search_net" and files_metadata
                if revision not in hub.refs:
                    raise RevisionNotFoundError(f"no revision {revision}")
                sha, files = hub.refs[revision]
                siblings = [
                    NS(
                        rfilename=name,
                        lfs=NS(sha256=hub.lfs.get(name, _sha(path)))
                        if name.endswith(".zip")
                        else None,
                    )
                    for name, path in files.items()
                ]
                return NS(sha=sha, siblings=siblings)

        def download(repo_id, filename, repo_type=None, revision=None, cache_dir=None):
            hub.downloads.append((filename, revision))
            for sha, files in hub.refs.values():
                if sha == revision:
                    return str(files[filename])
            raise AssertionError(f"download at an unresolved revision {revision}")

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


def test_hub_prefers_the_zips_and_records_the_commit(tmp_path, offline, monkeypatch):
    from wavecoder.select.corpus_hub import load_codesearchnet_hub

    zipped = _write_csn_zip(
        tmp_path / "main", "python", {"train": [(0, _csn_rows("python", "train", 2))]}
    )
    conv = _write_csn_parquet(
        tmp_path / "conv" / "python" / "train" / "0000.parquet", _csn_rows("python", "train", 5)
    )
    main_files = {"code_search_net.py": tmp_path / "main" / "script", "data/python.zip": zipped}
    hub = _FakeHub(
        {
            "main": ("a" * 40, main_files),
            "refs/convert/parquet": ("b" * 40, {"python/train/0000.parquet": conv}),
        }
    )
    hub.install(monkeypatch)
    records, prov = load_codesearchnet_hub(["python"], "train")
    assert len(records) == 2 and hub.downloads == [("data/python.zip", "a" * 40)]
    assert prov["requested_revision"] == "main" and prov["revision"] == "a" * 40
    part = prov["parts"][0]
    assert part["ref"] == "main" and part["source"] == "hub" and part["format"] == "zip"
    assert part["files"][0]["sha256"] == _sha(zipped)

    # a revision without the data files (only the loading script): the parquet conversion
    hub.refs["old"] = ("c" * 40, {"code_search_net.py": tmp_path / "main" / "script"})
    records, prov = load_codesearchnet_hub(["python"], "train", revision="old")
    assert len(records) == 5
    assert prov["parts"][0]["ref"] == "refs/convert/parquet" and prov["revision"] == "b" * 40

    # neither: the error names both revisions and the layouts tried
    del hub.refs["refs/convert/parquet"]
    from wavecoder.select.corpus_hub import HubDataUnavailable

    with pytest.raises(
        HubDataUnavailable,
        match=r"old \(commit c{40}\) nor at refs/convert/parquet \(no such revision\)"
        r".*data/python\.zip",
    ):
        load_codesearchnet_hub(["python"], "train", revision="old")


def test_hub_sha256_mismatch_with_the_hub_is_an_error(tmp_path, offline, monkeypatch):
    from wavecoder.select.corpus_hub import HubDataUnavailable, load_codesearchnet_hub

    zipped = _write_csn_zip(tmp_path, "ruby", {"train": [(0, _csn_rows("ruby", "train", 1))]})
    hub = _FakeHub({"main": ("d" * 40, {"data/ruby.zip": zipped})}, lfs={"data/ruby.zip": "0" * 64})
    hub.install(monkeypatch)
    with pytest.raises(HubDataUnavailable, match="differs from the hub's 0000"):
        load_codesearchnet_hub(["ruby"])


def test_hub_offline_without_a_cached_copy_says_so(tmp_path, offline):
    from wavecoder.select.corpus_hub import HubDataUnavailable, load_codesearchnet_hub

    with pytest.raises(
        HubDataUnavailable, match=r"hub (is unreachable|could not be read).*WAVECODER_CSN_HUB_DIR"
    ):
        load_codesearchnet_hub(["python"], cache_dir=tmp_path / "cache")
