"""CodeSearchNet read straight from the data files of its Hugging Face dataset repository.

`code-search-net/code_search_net` (alias `code_search_net`) was published with a loading script
(`code_search_net.py`), which `datasets` >= 4 no longer runs, so `load_dataset("code_search_net",
lang)` cannot be relied on. This module lists the repository's files at a revision with
`huggingface_hub`, downloads the ones it needs (`hf_hub_download`, pinned to the commit the
revision resolved to) and reads them itself; it returns the records in CodeSearchNet's original
schema and their provenance: repository, requested ref, resolved commit, and every file with its
sha256 (checked against the hub's LFS sha256 where the hub gives one).

Layouts tried for one language and split, in order, at the requested revision (default `main`),
then on the hub's parquet conversion branch `refs/convert/parquet`:

  1. `data/<lang>.zip`            the original CodeSearchNet release archives, hosted in the
                                  repository since "Host data files (#7)" (commit
                                  17cab03e728f4b006c30823e1016d6d678c24f5d) and read by the
                                  loading script; inside, the split is
                                  `<lang>/final/jsonl/<train|valid|test>/<lang>_<split>_<n>.jsonl.gz`
  2. `<lang>/<split>-*.parquet`   native parquet (what `datasets convert_to_parquet` would write)
  3. `<lang>/<split>/*.parquet`   the parquet conversion (`refs/convert/parquet`), and its older
     `<lang>/*-<split>*.parquet`  naming `<config>/<dataset>-<split>...`; split names are the
                                  HF ones: train, validation, test

The zips come first on purpose: they are the published dataset itself, versioned by the
repository's own commits, and they carry the original schema unchanged (including `sha`, which the
HF schema drops). The parquet conversion is a copy the dataset viewer's bot made, on a branch it
rewrites, in the renamed HF schema, and the viewer no longer converts datasets that have a loading
script, so it may be stale or absent; it is the fallback (it is smaller to fetch for one split:
a zip holds all three splits, 0.1-1.7 GB per language).

`repo_root` (or the environment variable `WAVECODER_CSN_HUB_DIR`) reads the same layouts from a
local folder laid out like the repository (an offline mirror, or a test fixture) and reports the
revision as `local:<absolute path>`. When the hub cannot be reached, files an earlier run left in
the local hub cache are used (source `hub-cache`). Helpers are shared with `wavecoder.hub`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavecoder.hub import (
    DEFAULT_REVISION,
    PARQUET_CONVERSION,
    HubDataUnavailable,
    _kind,
    _Layout,
    _match,
    _parse_parquet,
    _short,
    _tried,
    _unreachable,
)
from wavecoder.select.corpus import LoadReport, _check_record, _iter_handle, _normalise, hf_record

__all__ = [
    "CODESEARCHNET_DATA_COMMIT",
    "CODESEARCHNET_LANGUAGES",
    "CODESEARCHNET_REPO",
    "LOCAL_ENV",
    "HubDataUnavailable",
    "load_codesearchnet_hub",
]

CODESEARCHNET_REPO = "code-search-net/code_search_net"
CODESEARCHNET_LANGUAGES = ("python", "java", "javascript", "go", "ruby", "php")
# "Host data files (#7)": the commit that added data/<lang>.zip (later commits changed the card)
CODESEARCHNET_DATA_COMMIT = "17cab03e728f4b006c30823e1016d6d678c24f5d"
LOCAL_ENV = "WAVECODER_CSN_HUB_DIR"

# split as asked -> (folder inside the zips, HF split name used by the parquet files)
_SPLITS = {
    "train": ("train", "train"),
    "validation": ("valid", "validation"),
    "valid": ("valid", "validation"),
    "test": ("test", "test"),
}
_HINT = (
    "; to run offline, pass repo_root= (or set WAVECODER_CSN_HUB_DIR to) a local copy of the "
    "repository, or use corpus.source: codesearchnet with the extracted .jsonl.gz files"
)


def layouts(language: str, split: str) -> list[_Layout]:
    """The file layouts tried for one language and split, in order of preference."""
    hf_split = _SPLITS[split][1]
    return [
        _Layout("zip", (f"data/{language}.zip",)),
        _Layout("parquet", (f"{language}/{hf_split}-*.parquet",)),
        _Layout("parquet", (f"{language}/{hf_split}/*.parquet",)),
        _Layout("parquet", (f"{language}/*-{hf_split}*.parquet",)),
    ]


def load_codesearchnet_hub(
    languages: Sequence[str],
    split: str = "train",
    *,
    revision: str | None = None,
    repo_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = False,
    report: LoadReport | None = None,
    repo_id: str = CODESEARCHNET_REPO,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records of `languages` (or `["all"]`) for `split` (train, validation/valid, test) in
    CodeSearchNet's original schema, normalised as `corpus.load_codesearchnet` does, and their
    provenance. A malformed line raises `CorpusFormatError` when `strict`, else it is counted in
    `report`. Raises `HubDataUnavailable` naming repo, language, split, files and revision."""
    langs = _languages(languages, repo_id)
    if split not in _SPLITS:
        raise ValueError(f"{repo_id}: unknown split {split!r}; one of train, validation, test")
    report = report if report is not None else LoadReport()
    if repo_root is None and os.environ.get(LOCAL_ENV):
        repo_root = os.environ[LOCAL_ENV]
    source = (
        _LocalSource(repo_id, Path(repo_root))
        if repo_root is not None
        else _HubSource(repo_id, revision or DEFAULT_REVISION, cache_dir)
    )
    records: list[dict[str, Any]] = []
    parts = []
    for language in langs:
        what = f"language {language}, split {split}"
        listing, layout, names = source.find(layouts(language, split), what)
        files = source.fetch(listing, names, what)
        reader = _read_zip if layout.name == "zip" else _read_parquet
        entries = []
        for name, path in files:
            where = f"{repo_id}@{listing.revision}/{name}"
            digest, size = _sha256(path)
            expected = listing.lfs.get(name)
            if expected and expected != digest:
                raise HubDataUnavailable(
                    f"{where}: sha256 {digest} differs from the hub's {expected} "
                    "(a damaged download; delete it from the hub cache and retry)"
                )
            entry: dict[str, Any] = {"path": name, "sha256": digest, "bytes": size}
            found = reader(path, where, language, split, strict, report, entry)
            entry["rows"] = len(found)
            records += found
            entries.append(entry)
        rows = sum(e["rows"] for e in entries)
        if rows == 0:
            raise HubDataUnavailable(
                f"{repo_id} ({what}): no records in {', '.join(n for n, _ in files)} "
                f"at revision {listing.revision}"
            )
        parts.append(
            {
                "language": language,
                "repo_id": repo_id,
                "ref": listing.ref,
                "revision": listing.revision,
                "source": listing.source,
                "format": layout.name,
                "files": entries,
                "rows": rows,
            }
        )
    revisions = list(dict.fromkeys(p["revision"] for p in parts))
    provenance = {
        "repo_id": repo_id,
        "repo_type": "dataset",
        "languages": langs,
        "split": split,
        "requested_revision": "local" if repo_root is not None else revision or DEFAULT_REVISION,
        "revision": revisions[0] if len(revisions) == 1 else revisions,
        "source": "+".join(dict.fromkeys(p["source"] for p in parts)),
        "parts": parts,
        "rows": len(records),
    }
    return records, provenance


def _languages(languages: Sequence[str] | str, repo_id: str) -> list[str]:
    if isinstance(languages, str):
        languages = [languages]
    langs: list[str] = []
    for language in languages:
        expanded = CODESEARCHNET_LANGUAGES if language == "all" else (language,)
        for lang in expanded:
            if lang not in CODESEARCHNET_LANGUAGES:
                raise ValueError(
                    f"{repo_id}: unknown language {lang!r}; one of "
                    f"{', '.join(CODESEARCHNET_LANGUAGES)} (or all)"
                )
            if lang not in langs:
                langs.append(lang)
    if not langs:
        raise ValueError(f"{repo_id}: no languages asked for")
    return langs


# ---------------------------------------------------------------- reading


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _read_zip(
    path: Path,
    where: str,
    language: str,
    split: str,
    strict: bool,
    report: LoadReport,
    entry: dict[str, Any],
) -> list[dict[str, Any]]:
    folder = _SPLITS[split][0]
    pattern = re.compile(
        rf"(?:.*/)?{language}/final/jsonl/{folder}/{language}_{folder}_(\d+)\.jsonl\.gz"
    )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise HubDataUnavailable(f"{where}: not a readable zip: {_short(exc)}") from None
    records = []
    with archive:
        members = sorted(
            (m for m in archive.namelist() if pattern.fullmatch(m)),
            key=lambda m: int(pattern.fullmatch(m).group(1)),
        )
        if not members:
            raise HubDataUnavailable(
                f"{where}: no {language}/final/jsonl/{folder}/{language}_{folder}_<n>.jsonl.gz "
                f"in the archive (split {split})"
            )
        entry["members"] = members
        for member in members:
            with (
                archive.open(member) as raw,
                gzip.GzipFile(fileobj=raw) as unpacked,
                io.TextIOWrapper(unpacked, encoding="utf-8-sig", errors="strict") as text,
            ):
                for obj in _iter_handle(text, f"{where}!{member}", strict, report):
                    records.append(_normalise(obj))
    return records


def _read_parquet(
    path: Path,
    where: str,
    language: str,
    split: str,
    strict: bool,
    report: LoadReport,
    entry: dict[str, Any],
) -> list[dict[str, Any]]:
    try:
        rows = _parse_parquet(path.read_bytes())
    except Exception as exc:
        raise HubDataUnavailable(
            f"{where}: could not read parquet: {type(exc).__name__}: {_short(exc)}"
        ) from None
    records = []
    for number, row in enumerate(rows, 1):
        record = hf_record(row)
        why = _check_record(record)
        if why:
            if strict:
                from wavecoder.select.corpus import CorpusFormatError

                raise CorpusFormatError(f"{where}: row {number}: {why}")
            report.malformed += 1
            if len(report.malformed_positions) < 5:
                report.malformed_positions.append(f"{where}: row {number}: {why}")
            continue
        records.append(_normalise(record))
    return records


# ---------------------------------------------------------------- where the files are


@dataclass
class _Listing:
    ref: str  # what was asked for: a branch, tag, sha, refs/convert/parquet, or local
    revision: str  # the commit it resolved to, or local:<path>
    source: str  # hub, hub-cache or local
    names: list[str]
    root: Path | None = None  # where the files lie (local folder or cache snapshot)
    lfs: dict[str, str] = field(default_factory=dict)  # path -> sha256 the hub reports


def _pick(listing: _Listing, layouts_: list[_Layout]) -> tuple[_Layout, list[str]] | None:
    for layout in layouts_:
        parts = [sorted(n for n in listing.names if _match(n, p)) for p in layout.patterns]
        if parts and all(parts):
            return layout, [n for part in parts for n in part]
    return None


class _LocalSource:
    def __init__(self, repo_id: str, root: Path):
        self.repo_id = repo_id
        self.root = root.expanduser().resolve()
        self._listing: _Listing | None = None

    def find(self, layouts_: list[_Layout], what: str) -> tuple[_Listing, _Layout, list[str]]:
        revision = f"local:{self.root}"
        if not self.root.is_dir():
            raise HubDataUnavailable(
                f"{self.repo_id} ({what}): local repository folder not found: {self.root} "
                f"(revision {revision})"
            )
        if self._listing is None:
            names = sorted(
                p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
            )
            self._listing = _Listing("local", revision, "local", names, self.root)
        picked = _pick(self._listing, layouts_)
        if picked is None:
            raise HubDataUnavailable(
                f"{self.repo_id} ({what}): no data files under {self.root} "
                f"(revision {revision}); tried " + _tried(layouts_)
            )
        return (self._listing, *picked)

    def fetch(self, listing: _Listing, names: list[str], what: str) -> list[tuple[str, Path]]:
        return [(name, self.root / name) for name in names]


class _HubSource:
    def __init__(self, repo_id: str, revision: str, cache_dir: str | os.PathLike | None):
        self.repo_id = repo_id
        self.refs = [revision] if revision == PARQUET_CONVERSION else [revision, PARQUET_CONVERSION]
        self.cache_dir = cache_dir
        self._listings: dict[str, _Listing | None] = {}  # None: the ref does not exist
        self._offline: BaseException | None = None

    def find(self, layouts_: list[_Layout], what: str) -> tuple[_Listing, _Layout, list[str]]:
        tried = []
        for ref in self.refs:
            listing = self._listing(ref, layouts_, what)
            if listing is None:
                tried.append(f"{ref} (no such revision)" if self._offline is None else ref)
                continue
            picked = _pick(listing, layouts_)
            if picked is not None:
                return (listing, *picked)
            tried.append(f"{ref} (commit {listing.revision})")
        if self._offline is not None:
            error = self._offline
            state = "is unreachable" if _unreachable(error) else "could not be read"
            raise HubDataUnavailable(
                f"{self.repo_id} ({what}): the Hugging Face hub {state} "
                f"({type(error).__name__}: {_short(error)}) and the local hub cache holds no "
                f"copy of revision {' or '.join(repr(r) for r in self.refs)} with "
                + _tried(layouts_)
                + _HINT
            )
        raise HubDataUnavailable(
            f"{self.repo_id} ({what}): no data files at revision {' nor at '.join(tried)}; "
            "tried " + _tried(layouts_)
        )

    def _listing(self, ref: str, layouts_: list[_Layout], what: str) -> _Listing | None:
        if self._offline is not None:
            return self._cached(ref, layouts_)
        if ref in self._listings:
            return self._listings[ref]
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise HubDataUnavailable(
                f"{self.repo_id} ({what}): huggingface_hub is not installed" + _HINT
            ) from None
        try:
            info = HfApi().dataset_info(self.repo_id, revision=ref, files_metadata=True)
        except Exception as exc:
            kind = _kind(exc)
            if kind == "revision" and ref == PARQUET_CONVERSION:
                self._listings[ref] = None
                return None
            if kind in ("revision", "repository"):
                raise HubDataUnavailable(
                    f"{self.repo_id} ({what}): could not read the repository at revision "
                    f"{ref!r} ({type(exc).__name__}: {_short(exc)})"
                ) from None
            # unreachable, offline mode, or the hub answering 5xx: what the cache holds
            self._offline = exc
            return self._cached(ref, layouts_)
        siblings = info.siblings or []
        lfs = {}
        for sibling in siblings:
            digest = getattr(getattr(sibling, "lfs", None), "sha256", None)
            if digest:
                lfs[sibling.rfilename] = str(digest)
        listing = _Listing(
            ref, str(info.sha), "hub", sorted(s.rfilename for s in siblings), lfs=lfs
        )
        self._listings[ref] = listing
        return listing

    def _cached(self, ref: str, layouts_: list[_Layout]) -> _Listing | None:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(
                snapshot_download(
                    self.repo_id,
                    repo_type="dataset",
                    revision=ref,
                    cache_dir=self.cache_dir,
                    allow_patterns=[p for layout in layouts_ for p in layout.patterns],
                    local_files_only=True,
                )
            )
        except Exception:
            return None
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        return _Listing(ref, folder.name, "hub-cache", names, folder)

    def fetch(self, listing: _Listing, names: list[str], what: str) -> list[tuple[str, Path]]:
        if listing.root is not None:
            return [(name, listing.root / name) for name in names]
        from huggingface_hub import hf_hub_download

        out = []
        for name in names:
            try:
                path = hf_hub_download(
                    self.repo_id,
                    name,
                    repo_type="dataset",
                    revision=listing.revision,
                    cache_dir=self.cache_dir,
                )
            except Exception as exc:
                hint = _HINT if _unreachable(exc) else ""
                raise HubDataUnavailable(
                    f"{self.repo_id} ({what}): could not download {name} at revision "
                    f"{listing.ref!r} (commit {listing.revision}): {type(exc).__name__}: "
                    f"{_short(exc)}{hint}"
                ) from None
            out.append((name, Path(path)))
        return out
