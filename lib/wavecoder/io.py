"""Files of a run: stage folders, sha256 of files and JSON values, JSON-lines reading with
errors that name the file and line, and each stage's metrics.json."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def stage_dir(run_dir: str | Path, stage: Any) -> Path:
    """outputs/<run>/<NN_stage>/, created if needed; `stage` is a wavecoder.stages.StageSpec
    or its folder name."""
    path = Path(run_dir) / getattr(stage, "name", stage)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every non-blank line of a .jsonl (or .jsonl.gz) file; invalid JSON is a ValueError
    naming file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return parse_jsonl(handle, str(path))


def parse_jsonl(lines: Iterable[str], where: str) -> list[dict[str, Any]]:
    """Every non-blank line parsed; invalid JSON is a ValueError naming `where` and the line."""
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}:{lineno}: invalid JSON: {exc}") from None
    return rows


def write_json(path: str | Path, value: Any, sort_keys: bool = False) -> Path:
    """`value` as indented JSON (non-JSON values as their str), written whole or not at all
    (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=sort_keys, default=str))
    tmp.replace(path)
    return path


def read_json(path: str | Path, strict: bool = True) -> Any | None:
    """The JSON in `path`, or None when the file is missing; invalid JSON names the file, or
    with `strict=False` is None too (a file another process may be writing)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        if not strict:
            return None
        raise ValueError(f"{path}: invalid JSON: {exc}") from None


def write_metrics(out: str | Path, metrics: dict[str, Any]) -> Path:
    """A stage's metrics.json: what the runner's summary line and the report read. Needs a
    one-line "headline"."""
    headline = metrics.get("headline")
    if not isinstance(headline, str) or not headline.strip():
        raise ValueError("metrics need a non-empty 'headline' string")
    return write_json(Path(out) / "metrics.json", metrics)
