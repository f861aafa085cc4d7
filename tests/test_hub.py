"""Loading HumanEvalPack and MBPP from folders laid out like their hub repositories.

The folders are built from ../shared/data in both layouts the loader reads: the raw files
(`data/<lang>/data/humanevalpack.jsonl`; MBPP's `full/<split>-00000-of-00001.parquet`) and the
hub's parquet conversion (`<config>/<split>/0000.parquet`). Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from wavecoder import hub
from wavecoder.hub import (
    HUMANEVALPACK_FEATURES,
    HUMANEVALPACK_LANGUAGES,
    HubDataUnavailable,
    load_humanevalpack_rows,
    load_mbpp_rows,
)

from .conftest import shared_file

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

MBPP_SPLIT_IDS = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_parquet(rows: list[dict], path: Path, schema=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test (the loaders must read repo_root only)."""

    def refuse(*args, **kwargs):
        raise AssertionError("test tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- HumanEvalPack


def _hep_source(language: str) -> tuple[Path, list[dict]]:
    path = shared_file("humanevalpack", f"humanevalpack_{language}.jsonl")
    return path, _rows(path)


@pytest.mark.parametrize("language", HUMANEVALPACK_LANGUAGES)
def test_humanevalpack_raw_jsonl_layout(tmp_path, language):
    source, expected = _hep_source(language)
    target = tmp_path / "data" / language / "data" / "humanevalpack.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(source.read_bytes())

    rows, prov = load_humanevalpack_rows(language, repo_root=tmp_path)

    assert len(rows) == 164
    # the raw rows, with the loading script's defaults for import/test_setup (Go has them)
    assert rows == [{"import": "", "test_setup": "", **row} for row in expected]
    assert all(set(HUMANEVALPACK_FEATURES) <= set(row) for row in rows)
    assert prov["repo_id"] == "bigcode/humanevalpack"
    assert prov["revision"] == f"local:{tmp_path.resolve()}"
    assert prov["format"] == "jsonl" and prov["config"] == language and prov["rows"] == 164
    assert prov["files"] == [
        {
            "path": f"data/{language}/data/humanevalpack.jsonl",
            "sha256": _sha256(source),
            "bytes": source.stat().st_size,
            "rows": 164,
        }
    ]
    json.dumps(prov)  # goes into the manifest as is


@pytest.mark.parametrize("language", ["python", "go"])
def test_humanevalpack_parquet_conversion_layout(tmp_path, language):
    _, source_rows = _hep_source(language)
    # what the conversion holds: the loading script's 15 string fields, nothing else
    expected = [{k: row.get(k, "") for k in HUMANEVALPACK_FEATURES} for row in source_rows]
    schema = pa.schema([(k, pa.string()) for k in HUMANEVALPACK_FEATURES])
    target = tmp_path / language / "test" / "0000.parquet"
    _write_parquet(expected, target, schema)

    rows, prov = load_humanevalpack_rows(language, repo_root=tmp_path)

    assert rows == expected
    assert prov["format"] == "parquet"
    assert prov["files"][0]["path"] == f"{language}/test/0000.parquet"
    assert prov["files"][0]["sha256"] == _sha256(target)


def test_humanevalpack_native_parquet_and_shards(tmp_path):
    _, source_rows = _hep_source("js")
    expected = [{k: row.get(k, "") for k in HUMANEVALPACK_FEATURES} for row in source_rows]
    _write_parquet(expected[:100], tmp_path / "js" / "test-00000-of-00002.parquet")
    _write_parquet(expected[100:], tmp_path / "js" / "test-00001-of-00002.parquet")

    rows, prov = load_humanevalpack_rows("js", repo_root=tmp_path)

    assert rows == expected
    assert [f["path"] for f in prov["files"]] == [
        "js/test-00000-of-00002.parquet",
        "js/test-00001-of-00002.parquet",
    ]
    assert [f["rows"] for f in prov["files"]] == [100, 64]


def test_humanevalpack_prefers_raw_files(tmp_path):
    source, expected = _hep_source("rust")
    raw = tmp_path / "data" / "rust" / "data" / "humanevalpack.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(source.read_bytes())
    _write_parquet([{"task_id": "decoy"}], tmp_path / "rust" / "test" / "0000.parquet")

    rows, prov = load_humanevalpack_rows("rust", repo_root=tmp_path)

    assert prov["format"] == "jsonl"
    assert [r["task_id"] for r in rows] == [r["task_id"] for r in expected]


def test_humanevalpack_missing_file_names_repo_files_and_revision(tmp_path):
    (tmp_path / "data" / "python" / "data").mkdir(parents=True)  # the java file is not there
    with pytest.raises(HubDataUnavailable) as err:
        load_humanevalpack_rows("java", repo_root=tmp_path)
    message = str(err.value)
    assert "bigcode/humanevalpack" in message
    assert "data/java/data/humanevalpack.jsonl" in message
    assert "java/test/*.parquet" in message
    assert f"local:{tmp_path.resolve()}" in message


def test_humanevalpack_rejects_unknown_language(tmp_path):
    with pytest.raises(ValueError, match="unknown language 'ts'"):
        load_humanevalpack_rows("ts", repo_root=tmp_path)


def test_humanevalpack_rows_lacking_fields(tmp_path):
    bad = tmp_path / "data" / "cpp" / "data" / "humanevalpack.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"task_id": "CPP/0", "prompt": "x"}\n', encoding="utf-8")
    with pytest.raises(HubDataUnavailable, match="lack the fields .*canonical_solution"):
        load_humanevalpack_rows("cpp", repo_root=tmp_path)


# ---------------------------------------------------------------- MBPP


def _mbpp_source() -> tuple[Path, list[dict]]:
    path = shared_file("mbpp", "mbpp.jsonl")
    return path, _rows(path)


def _mbpp_schema():
    return pa.schema(
        [
            ("task_id", pa.int32()),
            ("text", pa.string()),
            ("code", pa.string()),
            ("test_list", pa.list_(pa.string())),
            ("test_setup_code", pa.string()),
            ("challenge_test_list", pa.list_(pa.string())),
        ]
    )


def _by_split(rows: list[dict]) -> dict[str, list[dict]]:
    out = {}
    for split, (lo, hi) in MBPP_SPLIT_IDS.items():
        out[split] = [r for r in rows if lo <= r["task_id"] <= hi]
    return out


@pytest.mark.parametrize(
    "layout",
    ["full/{split}-00000-of-00001.parquet", "full/{split}/0000.parquet"],
    ids=["native-parquet", "parquet-conversion"],
)
def test_mbpp_layouts(tmp_path, layout):
    _, expected = _mbpp_source()
    written = {}
    for split, rows in _by_split(expected).items():
        target = tmp_path / layout.format(split=split)
        _write_parquet(rows, target, _mbpp_schema())
        written[layout.format(split=split)] = target

    rows, prov = load_mbpp_rows(repo_root=tmp_path)

    assert len(rows) == 974
    assert rows == sorted(expected, key=lambda r: r["task_id"])
    assert [r["task_id"] for r in rows if 11 <= r["task_id"] <= 510] == list(range(11, 511))
    assert prov["repo_id"] == "google-research-datasets/mbpp"
    assert prov["config"] == "full" and prov["format"] == "parquet" and prov["rows"] == 974
    assert prov["revision"] == f"local:{tmp_path.resolve()}"
    assert {f["path"]: f["sha256"] for f in prov["files"]} == {
        name: _sha256(path) for name, path in written.items()
    }
    json.dumps(prov)


def test_mbpp_one_split(tmp_path):
    _, expected = _mbpp_source()
    for split, rows in _by_split(expected).items():
        _write_parquet(rows, tmp_path / f"full/{split}-00000-of-00001.parquet", _mbpp_schema())
    rows, prov = load_mbpp_rows(repo_root=tmp_path, splits=["test"])
    assert [r["task_id"] for r in rows] == list(range(11, 511))
    assert [f["path"] for f in prov["files"]] == ["full/test-00000-of-00001.parquet"]


def test_mbpp_missing_split_file(tmp_path):
    _, expected = _mbpp_source()
    for split, rows in _by_split(expected).items():
        if split != "validation":
            _write_parquet(rows, tmp_path / f"full/{split}-00000-of-00001.parquet", _mbpp_schema())
    with pytest.raises(HubDataUnavailable) as err:
        load_mbpp_rows(repo_root=tmp_path)
    message = str(err.value)
    assert "google-research-datasets/mbpp" in message
    assert "full/validation-*.parquet" in message
    assert f"local:{tmp_path.resolve()}" in message


def test_missing_repo_root(tmp_path):
    with pytest.raises(HubDataUnavailable, match="local repository folder not found"):
        load_mbpp_rows(repo_root=tmp_path / "nowhere")


# ---------------------------------------------------------------- the hub path, offline


def test_unreachable_hub_says_so_and_names_data_dir(tmp_path, monkeypatch):
    """With the hub unreachable and an empty cache the error says what to do instead."""
    pytest.importorskip("huggingface_hub")

    class FakeApi:
        def dataset_info(self, repo_id, revision=None, **kwargs):
            raise ConnectionError("no route to host")

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    with pytest.raises(HubDataUnavailable) as err:
        load_humanevalpack_rows("go", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "bigcode/humanevalpack" in message
    assert "unreachable" in message
    assert "'main'" in message and "refs/convert/parquet" in message
    assert "data/go/data/humanevalpack.jsonl" in message
    assert "evaluate.data_dir" in message


MAIN_SHA = "0123456789abcdef0123456789abcdef01234567"
CONVERT_SHA = "fedcba9876543210fedcba9876543210fedcba98"


class RevisionNotFoundError(Exception):
    """Named like huggingface_hub's (whose constructor wants an HTTP response)."""


class FakeHub:
    """Stands in for HfApi and hf_hub_download: {ref: (commit sha, {repo path: local file})}."""

    def __init__(self, refs: dict[str, tuple[str, dict[str, Path]]]):
        self.refs = refs
        self.calls: list[tuple] = []

    def install(self, monkeypatch) -> None:
        hub_module = pytest.importorskip("huggingface_hub")
        fake = self

        class Sibling:
            def __init__(self, name):
                self.rfilename = name

        class Info:
            def __init__(self, sha, files):
                self.sha = sha
                self.siblings = [Sibling(n) for n in files]

        class FakeApi:
            def dataset_info(self, repo_id, revision=None, **kwargs):
                fake.calls.append(("info", repo_id, revision))
                if revision not in fake.refs:
                    raise RevisionNotFoundError(f"no revision {revision}")
                return Info(*fake.refs[revision])

        def download(repo_id, filename, repo_type=None, revision=None, cache_dir=None):
            fake.calls.append(("download", repo_id, filename, repo_type, revision))
            for sha, files in fake.refs.values():
                if sha == revision:
                    return str(files[filename])
            raise AssertionError(f"download at an unknown commit {revision}")

        monkeypatch.setattr(hub_module, "HfApi", FakeApi)
        monkeypatch.setattr(hub_module, "hf_hub_download", download)


def test_hub_path_reads_raw_file_at_resolved_commit(monkeypatch):
    source, expected = _hep_source("python")
    fake = FakeHub({"main": (MAIN_SHA, {"data/python/data/humanevalpack.jsonl": source})})
    fake.install(monkeypatch)

    rows, prov = load_humanevalpack_rows("python")

    assert rows == [{"import": "", "test_setup": "", **row} for row in expected]
    assert fake.calls == [
        ("info", "bigcode/humanevalpack", "main"),
        (
            "download",
            "bigcode/humanevalpack",
            "data/python/data/humanevalpack.jsonl",
            "dataset",
            MAIN_SHA,
        ),
    ]
    assert prov["revision"] == MAIN_SHA and prov["ref"] == "main" and prov["source"] == "hub"
    assert prov["files"][0]["sha256"] == _sha256(source)


def test_hub_path_falls_back_to_parquet_conversion(tmp_path, monkeypatch):
    _, source_rows = _hep_source("cpp")
    expected = [{k: row.get(k, "") for k in HUMANEVALPACK_FEATURES} for row in source_rows]
    converted = tmp_path / "0000.parquet"
    _write_parquet(expected, converted)
    readme = tmp_path / "README.md"
    readme.write_text("card\n")
    fake = FakeHub(
        {
            "main": (MAIN_SHA, {"README.md": readme}),
            "refs/convert/parquet": (CONVERT_SHA, {"cpp/test/0000.parquet": converted}),
        }
    )
    fake.install(monkeypatch)

    rows, prov = load_humanevalpack_rows("cpp")

    assert rows == expected
    assert [c[:3] for c in fake.calls if c[0] == "info"] == [
        ("info", "bigcode/humanevalpack", "main"),
        ("info", "bigcode/humanevalpack", "refs/convert/parquet"),
    ]
    assert prov["revision"] == CONVERT_SHA and prov["ref"] == "refs/convert/parquet"
    assert prov["files"][0] == {
        "path": "cpp/test/0000.parquet",
        "sha256": _sha256(converted),
        "bytes": converted.stat().st_size,
        "rows": 164,
    }


def test_hub_path_no_files_anywhere(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("card\n")
    FakeHub({"main": (MAIN_SHA, {"README.md": readme})}).install(monkeypatch)
    with pytest.raises(HubDataUnavailable) as err:
        load_mbpp_rows()
    message = str(err.value)
    assert "google-research-datasets/mbpp" in message
    assert f"main (commit {MAIN_SHA})" in message
    assert "refs/convert/parquet (no such revision)" in message
    assert "full/test-*.parquet" in message


def test_unreachable_hub_uses_the_local_hub_cache(tmp_path, monkeypatch):
    """Offline, files an earlier run left in the hub cache (refs/ + snapshots/) are used."""
    hub_module = pytest.importorskip("huggingface_hub")
    source, expected = _hep_source("go")
    repo = tmp_path / "cache" / "datasets--bigcode--humanevalpack"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(MAIN_SHA)
    cached = repo / "snapshots" / MAIN_SHA / "data" / "go" / "data" / "humanevalpack.jsonl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(source.read_bytes())

    class FakeApi:
        def dataset_info(self, repo_id, revision=None, **kwargs):
            raise ConnectionError("no route to host")

    monkeypatch.setattr(hub_module, "HfApi", FakeApi)
    rows, prov = load_humanevalpack_rows("go", cache_dir=tmp_path / "cache")

    assert rows == expected  # Go rows carry import/test_setup themselves
    assert prov["source"] == "hub-cache" and prov["revision"] == MAIN_SHA
    assert prov["files"][0]["sha256"] == _sha256(source)


def test_import_does_not_load_hub_client():
    # the module imports huggingface_hub / pyarrow only when a loader runs
    assert "huggingface_hub" not in vars(hub)
    assert "pyarrow" not in vars(hub)


def test_hub_file_patterns_stay_inside_one_folder():
    assert hub._match("python/test/0000.parquet", "python/test/*.parquet")
    assert hub._match("python/test-00000-of-00001.parquet", "python/test-*.parquet")
    assert not hub._match("python/test/0000.parquet", "python/test-*.parquet")
    assert not hub._match("python/partial-test/0000.parquet", "python/*-test*.parquet")
