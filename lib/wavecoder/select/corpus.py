"""Raw (docstring, code) pairs in CodeSearchNet's schema: from .jsonl files, the HF hub, or
functions harvested from source trees on this machine."""

from __future__ import annotations

import ast
import codecs
import gzip
import hashlib
import io
import json
import os
import random
import re
import sys
import sysconfig
import textwrap
import tokenize as _pytokenize
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

SCHEMA: dict[str, Any] = {
    "repo": pl.String,
    "path": pl.String,
    "func_name": pl.String,
    "original_string": pl.String,
    "language": pl.String,
    "code": pl.String,
    "code_tokens": pl.List(pl.String),
    "docstring": pl.String,
    "docstring_tokens": pl.List(pl.String),
    "sha": pl.String,
    "url": pl.String,
    "partition": pl.String,
}
_STRING_FIELDS = [k for k, v in SCHEMA.items() if v == pl.String]
_LIST_FIELDS = [k for k, v in SCHEMA.items() if v != pl.String]

_TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")


def tokenize(text: str) -> list[str]:
    """Identifier / number / punctuation tokens, close to CodeSearchNet's code_tokens."""
    return _TOKEN_RE.findall(text)


class CorpusFormatError(ValueError):
    """A malformed line in a corpus file (strict mode)."""


@dataclass
class LoadReport:
    files: list[str] = field(default_factory=list)
    records: int = 0
    malformed: int = 0
    malformed_positions: list[str] = field(default_factory=list)  # first few 'file:line: why'
    # where hub data came from (repo, resolved commit, files with sha256); see corpus_hub
    provenance: dict[str, Any] | None = None

    def as_metrics(self) -> dict[str, Any]:
        metrics = {
            "files": len(self.files),
            "records": self.records,
            "malformed_lines": self.malformed,
            "malformed_first": self.malformed_positions,
        }
        if self.provenance is not None:
            metrics["provenance"] = self.provenance
        return metrics


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz"))
            )
            if not found:
                raise FileNotFoundError(f"no .jsonl or .jsonl.gz files under {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"corpus path not found: {path}")
    return files


def _open_text(path: Path):
    # utf-8-sig: a BOM at the start of a file is not part of its first record
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="strict")
    return open(path, encoding="utf-8-sig", errors="strict")


def _check_record(obj: Any) -> str | None:
    """Why a parsed line is not a CodeSearchNet record, or None if it is one."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if not isinstance(obj.get("code"), str) and not isinstance(obj.get("original_string"), str):
        return "no 'code' or 'original_string' string"
    for key in _STRING_FIELDS:
        if key in obj and obj[key] is not None and not isinstance(obj[key], str):
            return f"'{key}' must be a string, got {type(obj[key]).__name__}"
    for key in _LIST_FIELDS:
        value = obj.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(t, str) for t in value)
        ):
            return f"'{key}' must be a list of strings"
    return None


def _iter_file(path: Path, strict: bool, report: LoadReport) -> Iterator[dict[str, Any]]:
    with _open_text(path) as handle:
        yield from _iter_handle(handle, str(path), strict, report)


def _iter_handle(
    handle: Any, where: str, strict: bool, report: LoadReport
) -> Iterator[dict[str, Any]]:
    """Records from an open text handle of JSON lines; `where` names it in messages."""

    def bad(lineno: int, why: str) -> None:
        if strict:
            raise CorpusFormatError(f"{where}:{lineno}: {why}")
        report.malformed += 1
        if len(report.malformed_positions) < 5:
            report.malformed_positions.append(f"{where}:{lineno}: {why}")

    lineno = 0
    while True:
        lineno += 1
        try:
            line = handle.readline()
        except (UnicodeDecodeError, EOFError, OSError) as exc:
            bad(lineno, f"unreadable: {exc}")
            return
        if not line:
            return
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad(lineno, f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        why = _check_record(obj)
        if why:
            bad(lineno, why)
            continue
        yield obj


def _normalise(obj: dict[str, Any]) -> dict[str, Any]:
    record = dict(obj)
    if record.get("code") is None:
        record["code"] = record.get("original_string")
    if record.get("original_string") is None:
        record["original_string"] = record.get("code")
    if record.get("code_tokens") is None:
        record["code_tokens"] = tokenize(record["code"])
    if record.get("docstring") is None:
        record["docstring"] = ""
    if record.get("docstring_tokens") is None:
        record["docstring_tokens"] = tokenize(record["docstring"])
    for key in SCHEMA:
        record.setdefault(key, None)
    return record


def records_to_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Records in CodeSearchNet's schema -> DataFrame with the schema's columns first.

    Extra fields are kept; one whose values do not share a type is stored as JSON text.
    """
    if not records:
        return pl.DataFrame(schema=SCHEMA)
    extra_keys: list[str] = []
    for rec in records:
        for key in rec:
            if key not in SCHEMA and key not in extra_keys:
                extra_keys.append(key)
    columns = {key: [rec.get(key) for rec in records] for key in SCHEMA}
    frame = pl.DataFrame(columns, schema=SCHEMA)
    extras = []
    for key in extra_keys:
        values = [rec.get(key) for rec in records]
        try:
            extras.append(pl.Series(key, values, strict=True))
        except (TypeError, pl.exceptions.PolarsError):
            extras.append(
                pl.Series(key, [None if v is None else json.dumps(v) for v in values], pl.String)
            )
    return frame.with_columns(extras) if extras else frame


def load_codesearchnet(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    strict: bool = False,
    report: LoadReport | None = None,
) -> pl.DataFrame:
    """Read CodeSearchNet .jsonl / .jsonl.gz files (a file, a list, or folders searched
    recursively) into a DataFrame in the original schema; extra fields are kept.

    A malformed line raises `CorpusFormatError` naming file and line when `strict`; otherwise
    it is skipped and counted in `report` (pass a `LoadReport` to read the count).
    """
    report = report if report is not None else LoadReport()
    files = expand_paths(paths)
    records = []
    for path in tqdm(files, desc="read corpus", unit="file", disable=len(files) < 2):
        report.files.append(str(path))
        for obj in _iter_file(path, strict, report):
            records.append(_normalise(obj))
    report.records = len(records)
    return records_to_frame(records)


def load_codesearchnet_hf(
    languages: list[str],
    split: str = "train",
    report: LoadReport | None = None,
    *,
    revision: str | None = None,
    repo_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    strict: bool = False,
) -> pl.DataFrame:
    """CodeSearchNet from the hub repository `code-search-net/code_search_net` (alias
    `code_search_net`), in the original schema, read from its data files (not its loading
    script, which `datasets` >= 4 no longer runs); see `corpus_hub`.

    `revision`: a branch, tag or commit (default `main`); `repo_root`, or the environment
    variable `WAVECODER_CSN_HUB_DIR`: a local folder laid out like the repository, read instead
    of the hub. The repository, the commit it resolved to and the sha256 of every file read go
    to `report.provenance` (and so to the stage's metrics). Raises `corpus_hub.HubDataUnavailable`
    naming language, split, files and revision when something cannot be read.
    """
    from wavecoder.select import corpus_hub

    report = report if report is not None else LoadReport()
    records, provenance = corpus_hub.load_codesearchnet_hub(
        languages,
        split,
        revision=revision,
        repo_root=repo_root,
        cache_dir=cache_dir,
        strict=strict,
        report=report,
    )
    report.files.extend(
        f"hf:{part['repo_id']}@{part['revision']}/{entry['path']}"
        for part in provenance["parts"]
        for entry in part["files"]
    )
    report.provenance = provenance
    frame = records_to_frame(records)
    report.records = frame.height
    return frame


_HF_COLUMNS = {
    "repository_name": "repo",
    "func_path_in_repository": "path",
    "func_name": "func_name",
    "whole_func_string": "original_string",
    "language": "language",
    "func_code_string": "code",
    "func_code_tokens": "code_tokens",
    "func_documentation_string": "docstring",
    "func_documentation_tokens": "docstring_tokens",
    "split_name": "partition",
    "func_code_url": "url",
}


def hf_record(row: dict[str, Any]) -> dict[str, Any]:
    """One row in the HF `code_search_net` schema -> a record in the original schema (not yet
    normalised); `sha` is taken from the commit in `func_code_url`, which the HF schema drops."""
    record = {_HF_COLUMNS.get(k, k): v for k, v in row.items()}
    url = record.get("url") or ""
    match = re.search(r"/blob/([0-9a-f]{7,40})/", url)
    record.setdefault("sha", match.group(1) if match else None)
    return record


def hf_to_frame(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """Rows of the HF `code_search_net` dataset -> the original CodeSearchNet schema."""
    return records_to_frame([_normalise(hf_record(row)) for row in rows])


# ---------------------------------------------------------------- harvesting


def _distribution_index() -> dict[str, str]:
    from importlib.metadata import packages_distributions

    return {top: dists[0] for top, dists in packages_distributions().items() if dists}


# What a harvest never reads, so that two machines set up from the same lock (whatever their
# folders) see the same functions:
# - under 'stdlib', the base interpreter's own site-packages/dist-packages: whatever happens to
#   be installed there on this machine, not the standard library;
# - under 'site-packages', the GPU-only distributions a CUDA torch brings (a CPU machine has none
#   of them; tests/test_project.py checks this pattern covers what locks/cuda.txt adds to
#   locks/cpu.txt), this project itself and the editable-install hooks naming its checkout;
# - anywhere, this project's checkout and any virtual environment (a folder with pyvenv.cfg).
GPU_ONLY_DISTRIBUTIONS = re.compile(r"nvidia-[a-z0-9._-]+|cuda-[a-z0-9._-]+|(pytorch-)?triton")
_GPU_ONLY_TOP_LEVEL = {"nvidia", "triton", "cuda", "cuda_bindings", "cuda_pathfinder"}
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages"}
_OWN_DISTRIBUTION = "wavecoder"


def _project_checkout() -> Path | None:
    """The checkout this package was imported from (editable install), if it is one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "lib").is_dir() else None


def _normalise_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _machine_specific_dirs() -> set[Path]:
    """Folders a harvest never walks into: the checkout and the running environment."""
    dirs = {Path(sys.prefix).resolve()} if sys.prefix != sys.base_prefix else set()
    checkout = _project_checkout()
    if checkout is not None:
        dirs.add(checkout)
    return dirs


def resolve_python_roots(roots: list[str]) -> list[tuple[str, Path]]:
    """'stdlib' / 'site-packages' / folder -> (label, path) pairs, existing folders only.

    The label is what stored paths and urls start with: 'stdlib', 'site-packages' or the
    folder's own name, never the machine's absolute path.
    """
    out: list[tuple[str, Path]] = []
    paths = sysconfig.get_paths()
    for root in roots:
        if root == "stdlib":
            out.append(("stdlib", Path(paths["stdlib"])))
        elif root == "site-packages":
            seen = set()
            for key in ("purelib", "platlib"):
                path = Path(paths[key])
                if path.is_dir() and path.resolve() not in seen:
                    seen.add(path.resolve())
                    out.append(("site-packages", path))
        else:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(f"harvest root is not a folder: {path}")
            out.append((path.name, path))
    return out


def _skipped_top_level(label: str, dist_index: dict[str, str]) -> set[str]:
    """Top-level names under a root that a harvest leaves out (see GPU_ONLY_DISTRIBUTIONS)."""
    if label == "stdlib":
        return set(_STDLIB_SKIP_DIRS)
    if label != "site-packages":
        return set()
    skipped = set(_GPU_ONLY_TOP_LEVEL) | {_OWN_DISTRIBUTION}
    for top, dist in dist_index.items():
        name = _normalise_dist(dist)
        if name == _OWN_DISTRIBUTION or GPU_ONLY_DISTRIBUTIONS.fullmatch(name):
            skipped.add(top)
    return skipped


def list_source_files(
    root: Path,
    suffixes: tuple[str, ...],
    exclude_dirs: Iterable[str] = (),
    skip_top_level: Iterable[str] = (),
) -> list[Path]:
    """Source files under `root`, sorted; never inside this project's checkout, a virtual
    environment or an editable-install hook (all name this machine's folders)."""
    excluded = set(exclude_dirs)
    top_skipped = set(skip_top_level)
    machine_dirs = _machine_specific_dirs()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        at_top = here == root
        kept = []
        for d in sorted(dirnames):
            if (
                d in excluded
                or d.startswith(".")
                or d.endswith((".dist-info", ".egg-info"))
                or (at_top and d in top_skipped)
            ):
                continue
            sub = here / d
            if (sub / "pyvenv.cfg").is_file() or sub.resolve() in machine_dirs:
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if not name.endswith(suffixes) or name.startswith("__editable__"):
                continue
            if at_top and name.rsplit(".", 1)[0] in top_skipped:
                continue
            found.append(here / name)
    return found


def _repo_for(label: str, root: Path, path: Path, dist_index: dict[str, str]) -> str:
    if label != "site-packages":
        return "python-stdlib" if label == "stdlib" else label
    top = path.relative_to(root).parts[0]
    top = top[:-3] if top.endswith(".py") else top
    return dist_index.get(top, top)


def _strip_docstring(lines: list[str], func: ast.AST) -> list[str]:
    """Source lines of `func` with its docstring statement removed."""
    body0 = func.body[0]
    start, end = func.lineno, func.end_lineno
    if getattr(func, "decorator_list", None):
        start = min(d.lineno for d in func.decorator_list)
    doc_first, doc_last = body0.lineno, body0.end_lineno
    out = []
    for number in range(start, end + 1):
        if doc_first <= number <= doc_last:
            if number == doc_first and body0.col_offset > 0:
                prefix = lines[number - 1][: body0.col_offset]
                if prefix.strip():  # `def f(): """doc"""` on one line: keep the def
                    out.append(prefix.rstrip())
            continue
        out.append(lines[number - 1])
    return out


def _normalise_newlines(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def read_python_source(path: Path) -> str:
    """A Python file's text as the interpreter reads it: the encoding from a UTF-8 BOM or a
    coding cookie (PEP 263, UTF-8 by default), the BOM dropped, CRLF/CR line ends made LF."""
    data = path.read_bytes()
    encoding, _ = _pytokenize.detect_encoding(io.BytesIO(data).readline)
    return _normalise_newlines(data).decode(encoding)


def read_source_bytes(path: Path) -> bytes:
    """A source file's bytes for tree-sitter: a UTF-8 BOM dropped, CRLF/CR line ends made LF."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    return _normalise_newlines(data)


def _url(label: str | None, root: Path, rel: str, line: int) -> str:
    """Where a harvested function is, relative to its root: '<label>/<path>#L<line>'."""
    return f"{label or root.name}/{rel}#L{line}"


def harvest_python_file(
    path: Path, root: Path, repo: str, label: str | None = None
) -> list[dict[str, Any]]:
    """Functions and methods with a docstring in one Python file, in CodeSearchNet's schema.

    `path` and `url` are relative to `root` (`url` starts with `label`, by default the root
    folder's name), never absolute, so copies of a tree in two places give equal records.
    """
    try:
        source = read_python_source(path)
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, UnicodeDecodeError, LookupError, ValueError, OSError, RecursionError):
        return []
    lines = source.splitlines()
    rel = path.relative_to(root).as_posix()
    file_sha = hashlib.sha1(source.encode()).hexdigest()
    records = []

    def visit(node: ast.AST, qual: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{qual}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{qual}{child.name}"
                docstring = ast.get_docstring(child, clean=True)
                if docstring and child.end_lineno:
                    start = child.lineno
                    if child.decorator_list:
                        start = min(d.lineno for d in child.decorator_list)
                    original = textwrap.dedent("\n".join(lines[start - 1 : child.end_lineno]))
                    code = textwrap.dedent("\n".join(_strip_docstring(lines, child)))
                    records.append(
                        {
                            "repo": repo,
                            "path": rel,
                            "func_name": name,
                            "original_string": original,
                            "language": "python",
                            "code": code,
                            "code_tokens": tokenize(code),
                            "docstring": docstring,
                            "docstring_tokens": tokenize(docstring),
                            "sha": file_sha,
                            "url": _url(label, root, rel, start),
                            "partition": "train",
                        }
                    )
                visit(child, f"{name}.")

    try:
        visit(tree, "")
    except RecursionError:
        return []
    return records


def _harvest_python_batch(batch: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for path, root, repo, label in batch:
        out.extend(harvest_python_file(Path(path), Path(root), repo, label))
    return out


def _sample_files(files: list[Path], max_files: int | None, seed: int) -> list[Path]:
    if max_files is None or len(files) <= max_files:
        return files
    rng = random.Random(seed)
    return sorted(rng.sample(files, max_files))


def _run_batches(jobs: list[Any], worker, workers: int, desc: str) -> list[dict[str, Any]]:
    batches = [jobs[i : i + 64] for i in range(0, len(jobs), 64)]
    records: list[dict[str, Any]] = []
    progress = tqdm(total=len(jobs), desc=desc, unit="file")
    if workers <= 1 or len(batches) <= 1:
        for batch in batches:
            records.extend(worker(batch))
            progress.update(len(batch))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for batch, result in zip(batches, pool.map(worker, batches)):
                records.extend(result)
                progress.update(len(batch))
    progress.close()
    return records


def harvest_python(
    roots: list[str],
    exclude_dirs: Iterable[str] = (),
    max_files: int | None = None,
    seed: int = 0,
    workers: int = 1,
) -> pl.DataFrame:
    """Functions with docstrings from Python source trees ('stdlib', 'site-packages' or folders)."""
    dist_index = _distribution_index()
    jobs = []
    for label, root in resolve_python_roots(roots):
        skipped = _skipped_top_level(label, dist_index)
        files = list_source_files(root, (".py",), exclude_dirs, skipped)
        files = _sample_files(files, max_files, seed)
        jobs.extend(
            (str(p), str(root), _repo_for(label, root, p, dist_index), label) for p in files
        )
    return records_to_frame(_run_batches(jobs, _harvest_python_batch, workers, "harvest python"))


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """sha256 of the files' paths relative to `root` and their sizes: the same on every machine
    that holds the same files, wherever they lie (mtimes differ between installs)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}|{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def harvest_inputs(
    python_roots: list[str],
    other_roots: dict[str, list[str]],
    exclude_dirs: Iterable[str] = (),
) -> dict[str, str]:
    """What a harvest reads, as manifest inputs: one fingerprint per root, keyed by its label
    (never a machine's absolute path), over exactly the files the harvest would list."""
    dist_index = _distribution_index()
    inputs: dict[str, str] = {}
    for label, root in resolve_python_roots(python_roots):
        files = list_source_files(
            root, (".py",), exclude_dirs, _skipped_top_level(label, dist_index)
        )
        key = f"tree:python:{label}"
        inputs[key] = files_fingerprint(root, files) + (
            "," + inputs[key] if key in inputs else ""  # purelib and platlib both
        )
    for language, folders in other_roots.items():
        suffixes = TREE_SITTER_LANGUAGES.get(language, ((".",), ()))[0]
        for folder in folders:
            root = Path(folder).expanduser()
            files = list_source_files(root, suffixes, exclude_dirs) if root.is_dir() else []
            inputs[f"tree:{language}:{root.name}"] = files_fingerprint(root, files)
    return inputs


# Function-like node types and the file suffixes per tree-sitter language.
TREE_SITTER_LANGUAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "go": ((".go",), ("function_declaration", "method_declaration")),
    "java": ((".java",), ("method_declaration", "constructor_declaration")),
    "javascript": (
        (".js", ".mjs", ".cjs"),
        ("function_declaration", "method_definition", "generator_function_declaration"),
    ),
    "php": ((".php",), ("function_definition", "method_declaration")),
    "ruby": ((".rb",), ("method", "singleton_method")),
}
_NAME_TYPES = ("identifier", "field_identifier", "property_identifier", "name", "constant")


def _clean_comment(text: str) -> str:
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        line = re.sub(r"^(/\*\*?|\*/|\*|//+|#+)", "", line).strip()
        line = re.sub(r"\*/$", "", line).strip()
        lines.append(line)
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _is_comment(node) -> bool:
    return node.type.endswith("comment")


def _leading_comment(node) -> tuple[str, int] | None:
    """The block of comments right above `node` (no blank line between), and its first row."""
    anchor = node
    # A method opening a class body (Ruby's body_statement) has its comment one level up.
    while anchor.prev_sibling is None and anchor.parent is not None:
        if anchor.parent.start_point != anchor.start_point:
            break
        anchor = anchor.parent
    comments = []
    expected_row = node.start_point[0]
    sibling = anchor.prev_sibling
    while sibling is not None and _is_comment(sibling):
        if sibling.end_point[0] < expected_row - 1:
            break
        comments.append(sibling)
        expected_row = sibling.start_point[0]
        sibling = sibling.prev_sibling
    if not comments:
        return None
    comments.reverse()
    text = "\n".join(c.text.decode("utf-8", "replace") for c in comments)
    return _clean_comment(text), comments[0].start_point[0]


def _node_name(node) -> str:
    named = node.child_by_field_name("name")
    if named is not None:
        return named.text.decode("utf-8", "replace")
    for child in node.children:
        if child.type in _NAME_TYPES:
            return child.text.decode("utf-8", "replace")
    return "<anonymous>"


def harvest_tree_sitter_file(
    path: Path, root: Path, repo: str, language: str
) -> list[dict[str, Any]]:
    """Functions with a doc comment right above them, parsed with tree-sitter."""
    from tree_sitter_language_pack import get_parser

    _, node_types = TREE_SITTER_LANGUAGES[language]
    try:
        source = read_source_bytes(path)
    except OSError:
        return []
    tree = get_parser(language).parse(source)
    rel = path.relative_to(root).as_posix()
    file_sha = hashlib.sha1(source).hexdigest()
    records = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))
        if node.type not in node_types:
            continue
        comment = _leading_comment(node)
        if not comment or not comment[0]:
            continue
        docstring, comment_row = comment
        code = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
        # Methods sit indented in their class: dedent all but the first line's column.
        code = textwrap.dedent(" " * node.start_point[1] + code)
        original = source[_line_start(source, comment_row) : node.end_byte].decode(
            "utf-8", "replace"
        )
        records.append(
            {
                "repo": repo,
                "path": rel,
                "func_name": _node_name(node),
                "original_string": textwrap.dedent(original),
                "language": language,
                "code": code,
                "code_tokens": tokenize(code),
                "docstring": docstring,
                "docstring_tokens": tokenize(docstring),
                "sha": file_sha,
                "url": _url(None, root, rel, node.start_point[0] + 1),
                "partition": "train",
            }
        )
    return records


def _line_start(source: bytes, row: int) -> int:
    offset = 0
    for _ in range(row):
        offset = source.index(b"\n", offset) + 1
    return offset


def _harvest_ts_batch(batch: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for path, root, repo, language in batch:
        out.extend(harvest_tree_sitter_file(Path(path), Path(root), repo, language))
    return out


def harvest_tree_sitter(
    roots: dict[str, list[str]],
    exclude_dirs: Iterable[str] = (),
    max_files: int | None = None,
    seed: int = 0,
    workers: int = 1,
) -> pl.DataFrame:
    """Functions with doc comments from source trees in Go, Java, JavaScript, PHP, Ruby."""
    jobs = []
    for language, folders in roots.items():
        if language not in TREE_SITTER_LANGUAGES:
            known = ", ".join(sorted(TREE_SITTER_LANGUAGES))
            raise ValueError(f"harvest language {language!r} is not supported (known: {known})")
        suffixes, _ = TREE_SITTER_LANGUAGES[language]
        for folder in folders:
            root = Path(folder).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(f"harvest root for {language} is not a folder: {root}")
            files = _sample_files(list_source_files(root, suffixes, exclude_dirs), max_files, seed)
            jobs.extend((str(p), str(root), root.name, language) for p in files)
    return records_to_frame(_run_batches(jobs, _harvest_ts_batch, workers, "harvest tree-sitter"))
