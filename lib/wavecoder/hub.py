"""Benchmark rows read straight from the data files of Hugging Face dataset repositories.

`datasets` >= 4 no longer runs loading scripts, and `bigcode/humanevalpack` was published with
one (`humanevalpack.py`), so `datasets.load_dataset("bigcode/humanevalpack", lang)` is not
something a loader can rely on. This module reads the repository's data files itself, with
`huggingface_hub` (a file listing, then `hf_hub_download`), and says exactly what it read: the
commit the revision resolved to, and the sha256 of every file, for the run manifest.

Layouts tried, in order, at the requested revision (default `main`), then on the hub's parquet
conversion branch `refs/convert/parquet` (the dataset viewer's copy of every config/split):

`bigcode/humanevalpack`, one config per language (python, js, java, go, cpp, rust), split `test`:
  1. `data/<lang>/data/humanevalpack.jsonl`  the raw files the loading script reads
                                             (`get_url`: `data/{name}/data/humanevalpack.jsonl`)
  2. `<lang>/test-*.parquet`                 native parquet (`main` since "Convert dataset to
                                             Parquet (#12)", which replaced `data/` and the script)
  3. `<lang>/test/*.parquet`                 parquet conversion (`refs/convert/parquet`),
     `<lang>/*-test*.parquet`                and its older naming `<config>/<dataset>-<split>...`
  Rows get the loading script's defaults: `import` and `test_setup` are "" where absent (the
  raw files carry them for Go only); other keys of a raw row (e.g. `text`) are kept.

`google-research-datasets/mbpp` (was `mbpp`), config `full`, splits train/test/validation/prompt:
  1. `full/<split>-*.parquet`                native parquet (`full/test-00000-of-00001.parquet`)
  2. `full/<split>/*.parquet`                parquet conversion, and older `full/*-<split>*.parquet`
  All splits together, sorted by task_id (974 rows: prompt 1-10, test 11-510,
  validation 511-600, train 601-974).

`repo_root` reads the same layouts from a local folder (an offline mirror, or a test fixture)
and reports the revision as `local:<absolute path>`. Nothing here touches the network at import;
`huggingface_hub` and the parquet reader are imported when a function needs them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from wavecoder.io import parse_jsonl

HUMANEVALPACK_REPO = "bigcode/humanevalpack"
HUMANEVALPACK_LANGUAGES = ("python", "js", "java", "go", "cpp", "rust")
# What the loading script yields per row; `import`/`test_setup` default to "" (Go only).
HUMANEVALPACK_FEATURES = (
    "task_id",
    "prompt",
    "declaration",
    "canonical_solution",
    "buggy_solution",
    "bug_type",
    "failure_symptoms",
    "entry_point",
    "import",
    "test_setup",
    "test",
    "example_test",
    "signature",
    "docstring",
    "instruction",
)
HUMANEVALPACK_DEFAULTS = {"import": "", "test_setup": ""}
# A commit of bigcode/humanevalpack that still has `data/<lang>/data/humanevalpack.jsonl` and
# the loading script ("Update humanevalpack.py"), for pinning the raw files.
HUMANEVALPACK_SCRIPT_REVISION = "48dbcf3b8935a9f4077f4f0622c9a931f5a453a5"

MBPP_REPO = "google-research-datasets/mbpp"
MBPP_SPLITS = ("train", "test", "validation", "prompt")
MBPP_FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")

PARQUET_CONVERSION = "refs/convert/parquet"
DEFAULT_REVISION = "main"

_HEP_REQUIRED = ("task_id", "prompt", "declaration", "canonical_solution", "test", "entry_point")


class HubDataUnavailable(RuntimeError):
    """The data files of a hub dataset could not be found or read (names repo, files, revision)."""


@dataclass(frozen=True)
class _Layout:
    name: str  # "jsonl" or "parquet"
    patterns: tuple[str, ...]  # one glob per part (all must match), e.g. one per split


def _hep_layouts(language: str) -> list[_Layout]:
    return [
        _Layout("jsonl", (f"data/{language}/data/humanevalpack.jsonl",)),
        _Layout("parquet", (f"{language}/test-*.parquet",)),
        _Layout("parquet", (f"{language}/test/*.parquet",)),
        _Layout("parquet", (f"{language}/*-test*.parquet",)),
    ]


def _mbpp_layouts(config: str, splits: Sequence[str]) -> list[_Layout]:
    return [
        _Layout("parquet", tuple(f"{config}/{s}-*.parquet" for s in splits)),
        _Layout("parquet", tuple(f"{config}/{s}/*.parquet" for s in splits)),
        _Layout("parquet", tuple(f"{config}/*-{s}*.parquet" for s in splits)),
    ]


# ---------------------------------------------------------------- public functions


def load_humanevalpack_rows(
    language: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    repo_root: str | Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The 164 `test` rows of `bigcode/humanevalpack` for one language, and their provenance.

    Reads the raw JSON-lines file when the revision has it, else the parquet files (native, or
    the hub's `refs/convert/parquet` conversion). `repo_root`: a local folder laid out like the
    repository, read instead of the hub. Raises `HubDataUnavailable` naming repo, files and
    revision when nothing can be read.
    """
    if language not in HUMANEVALPACK_LANGUAGES:
        raise ValueError(
            f"{HUMANEVALPACK_REPO}: unknown language {language!r}; "
            f"one of {', '.join(HUMANEVALPACK_LANGUAGES)}"
        )
    found = _load(
        HUMANEVALPACK_REPO,
        _hep_layouts(language),
        revision=revision,
        cache_dir=cache_dir,
        repo_root=repo_root,
        what=f"config {language}, split test",
        local_hint=f"humanevalpack/humanevalpack_{language}.jsonl",
    )
    rows = [{**HUMANEVALPACK_DEFAULTS, **row} for row in found.rows]
    _check_rows(found, rows, _HEP_REQUIRED)
    return rows, found.provenance(config=language, split="test", n_rows=len(rows))


def load_mbpp_rows(
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    repo_root: str | Path | None = None,
    splits: Sequence[str] = MBPP_SPLITS,
    config: str = "full",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All rows of `google-research-datasets/mbpp` (config `full`: train, test, validation and
    prompt; 974 rows) sorted by task_id, with task_id, text, code, test_list, test_setup_code and
    challenge_test_list; and their provenance. MBPP(500) is task ids 11-510 (the test split).
    """
    splits = tuple(splits)
    unknown = [s for s in splits if s not in MBPP_SPLITS]
    if unknown or not splits:
        raise ValueError(f"{MBPP_REPO}: splits must be among {', '.join(MBPP_SPLITS)}: {unknown}")
    found = _load(
        MBPP_REPO,
        _mbpp_layouts(config, splits),
        revision=revision,
        cache_dir=cache_dir,
        repo_root=repo_root,
        what=f"config {config}, splits {'/'.join(splits)}",
        local_hint="mbpp/mbpp.jsonl",
    )
    required = MBPP_FIELDS if config == "full" else ("task_id", "code", "test_list")
    _check_rows(found, found.rows, required)
    rows = sorted(found.rows, key=lambda r: int(r["task_id"]))
    return rows, found.provenance(config=config, split="+".join(splits), n_rows=len(rows))


# ---------------------------------------------------------------- loading


@dataclass
class _Found:
    repo_id: str
    revision: str  # commit sha, or local:<path>
    ref: str  # what was asked for: a branch, tag, sha, refs/convert/parquet or local
    layout: _Layout
    files: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    source: str  # "hub", "hub-cache" or "local"

    def provenance(self, **extra: Any) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "repo_type": "dataset",
            **{k: v for k, v in extra.items() if k != "n_rows"},
            "revision": self.revision,
            "ref": self.ref,
            "source": self.source,
            "format": self.layout.name,
            "files": self.files,
            "rows": extra.get("n_rows", len(self.rows)),
        }


def _load(
    repo_id: str,
    layouts: list[_Layout],
    *,
    revision: str | None,
    cache_dir: str | Path | None,
    repo_root: str | Path | None,
    what: str,
    local_hint: str,
) -> _Found:
    if repo_root is not None:
        return _load_local(repo_id, layouts, Path(repo_root), what)
    return _load_hub(repo_id, layouts, revision or DEFAULT_REVISION, cache_dir, what, local_hint)


def _load_local(repo_id: str, layouts: list[_Layout], root: Path, what: str) -> _Found:
    root = root.expanduser().resolve()
    revision = f"local:{root}"
    if not root.is_dir():
        raise HubDataUnavailable(
            f"{repo_id} ({what}): local repository folder not found: {root} (revision {revision})"
        )
    for layout in layouts:
        parts = [
            sorted(p for p in root.glob(pattern) if p.is_file()) for pattern in layout.patterns
        ]
        if parts and all(parts):
            paths = [p for part in parts for p in part]
            return _read_files(
                repo_id,
                revision,
                "local",
                layout,
                [(p.relative_to(root).as_posix(), p) for p in paths],
                "local",
            )
    raise HubDataUnavailable(
        f"{repo_id} ({what}): no data files under {root} (revision {revision}); tried "
        + _tried(layouts)
    )


def _load_hub(
    repo_id: str,
    layouts: list[_Layout],
    revision: str,
    cache_dir: str | Path | None,
    what: str,
    local_hint: str,
) -> _Found:
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise HubDataUnavailable(
            f"{repo_id} ({what}): huggingface_hub is not installed; install it, or point "
            f"evaluate.data_dir at a folder holding {local_hint}"
        ) from None
    refs = [revision] if revision == PARQUET_CONVERSION else [revision, PARQUET_CONVERSION]
    api = HfApi()
    missing: list[str] = []
    for ref in refs:
        try:
            info = api.dataset_info(repo_id, revision=ref)
        except Exception as exc:
            kind = _kind(exc)
            if kind == "revision" and ref == PARQUET_CONVERSION:
                missing.append(f"{ref} (no such revision)")
                continue
            if kind in ("revision", "repository"):
                raise HubDataUnavailable(
                    f"{repo_id} ({what}): could not read the repository at revision {ref!r} "
                    f"({type(exc).__name__}: {_short(exc)})"
                ) from None
            # unreachable, offline mode, or the hub answering 5xx: what the cache holds
            return _load_hub_cache(repo_id, layouts, refs, cache_dir, what, local_hint, exc)
        sha = str(info.sha)
        names = [s.rfilename for s in (info.siblings or [])]
        if not names:
            names = list(api.list_repo_files(repo_id, repo_type="dataset", revision=sha))
        for layout in layouts:
            parts = [sorted(n for n in names if _match(n, pat)) for pat in layout.patterns]
            if parts and all(parts):
                wanted = [n for part in parts for n in part]
                files = _download(repo_id, wanted, sha, ref, cache_dir, what, local_hint)
                return _read_files(repo_id, sha, ref, layout, files, "hub")
        missing.append(f"{ref} (commit {sha})")
    raise HubDataUnavailable(
        f"{repo_id} ({what}): no data files at revision {' nor at '.join(missing)}; tried "
        + _tried(layouts)
    )


def _download(
    repo_id: str,
    names: list[str],
    sha: str,
    ref: str,
    cache_dir: str | Path | None,
    what: str,
    local_hint: str,
) -> list[tuple[str, Path]]:
    from huggingface_hub import hf_hub_download

    out = []
    for name in names:
        try:
            path = hf_hub_download(
                repo_id, name, repo_type="dataset", revision=sha, cache_dir=cache_dir
            )
        except Exception as exc:
            hint = _offline_hint(local_hint) if _unreachable(exc) else ""
            raise HubDataUnavailable(
                f"{repo_id} ({what}): could not download {name} at revision {ref!r} "
                f"(commit {sha}): {type(exc).__name__}: {_short(exc)}{hint}"
            ) from None
        out.append((name, Path(path)))
    return out


def _load_hub_cache(
    repo_id: str,
    layouts: list[_Layout],
    refs: list[str],
    cache_dir: str | Path | None,
    what: str,
    local_hint: str,
    error: BaseException,
) -> _Found:
    """The hub cannot be asked: use files an earlier online run left in the local hub cache."""
    from huggingface_hub import snapshot_download

    patterns = [p for layout in layouts for p in layout.patterns]
    for ref in refs:
        try:
            folder = Path(
                snapshot_download(
                    repo_id,
                    repo_type="dataset",
                    revision=ref,
                    cache_dir=cache_dir,
                    allow_patterns=patterns,
                    local_files_only=True,
                )
            )
        except Exception:
            continue
        for layout in layouts:
            parts = [sorted(p for p in folder.glob(pat) if p.is_file()) for pat in layout.patterns]
            if parts and all(parts):
                files = [(p.relative_to(folder).as_posix(), p) for part in parts for p in part]
                return _read_files(repo_id, folder.name, ref, layout, files, "hub-cache")
    state = "is unreachable" if _unreachable(error) else "could not be read"
    raise HubDataUnavailable(
        f"{repo_id} ({what}): the Hugging Face hub {state} "
        f"({type(error).__name__}: {_short(error)}) and the local hub cache holds no copy of "
        f"revision {' or '.join(repr(r) for r in refs)} with "
        + _tried(layouts)
        + _offline_hint(local_hint)
    )


def _offline_hint(local_hint: str) -> str:
    return (
        f"; to run offline, point evaluate.data_dir at a folder holding {local_hint} "
        "(or pass repo_root= a local copy of the hub repository)"
    )


def _read_files(
    repo_id: str,
    revision: str,
    ref: str,
    layout: _Layout,
    files: list[tuple[str, Path]],
    source: str,
) -> _Found:
    rows: list[dict[str, Any]] = []
    records = []
    for name, path in files:
        data = path.read_bytes()
        try:
            part = _parse_jsonl(data) if layout.name == "jsonl" else _parse_parquet(data)
        except Exception as exc:
            raise HubDataUnavailable(
                f"{repo_id}: could not read {name} at revision {revision}: "
                f"{type(exc).__name__}: {_short(exc)}"
            ) from None
        rows += part
        records.append(
            {
                "path": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "rows": len(part),
            }
        )
    return _Found(repo_id, revision, ref, layout, records, rows, source)


def _parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    # split on "\n" only: str.splitlines would also split on U+2028 etc. inside JSON strings
    return parse_jsonl(data.decode("utf-8").split("\n"), "line")


def _parse_parquet(data: bytes) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        return pq.read_table(io.BytesIO(data)).to_pylist()
    import polars as pl

    return pl.read_parquet(io.BytesIO(data)).to_dicts()


def _check_rows(found: _Found, rows: list[dict[str, Any]], required: Sequence[str]) -> None:
    names = ", ".join(f["path"] for f in found.files)
    where = f"{found.repo_id} at revision {found.revision} ({names})"
    if not rows:
        raise HubDataUnavailable(f"{where}: no rows")
    lacking = sorted({k for row in rows for k in required if k not in row})
    if lacking:
        raise HubDataUnavailable(f"{where}: rows lack the fields {', '.join(lacking)}")


def _match(name: str, pattern: str) -> bool:
    """Glob match where `*` stays inside one path segment, as `Path.glob` does (so that
    `python/*-test*.parquet` does not reach into `python/partial-test/0000.parquet`)."""
    parts, pats = name.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatchcase(a, b) for a, b in zip(parts, pats))


# ---------------------------------------------------------------- errors


def _tried(layouts: list[_Layout]) -> str:
    return ", ".join(" + ".join(layout.patterns) for layout in layouts)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "RevisionNotFoundError" in names:
        return "revision"
    if "RepositoryNotFoundError" in names:
        return "repository"
    return "other"


_NETWORK_ERRORS = {
    "OfflineModeIsEnabled",
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "TimeoutError",
    "TimeoutException",
    "ProxyError",
    "NetworkError",
    "TransportError",
    "NewConnectionError",
    "MaxRetryError",
}


def _unreachable(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says the hub could not be reached at all."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if _NETWORK_ERRORS & {cls.__name__ for cls in type(current).__mro__}:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
