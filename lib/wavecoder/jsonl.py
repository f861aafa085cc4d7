"""Reading JSON-lines files with errors that name the file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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
