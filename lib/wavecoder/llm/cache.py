"""The persistent response cache: answers keyed by a hash of (model, messages, generation
settings, template version), appended and fsynced as each arrives."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def cache_key(
    model: str, messages: list[dict[str, Any]], settings: dict[str, Any], template_version: str
) -> str:
    payload = {"model": model, "messages": messages, "settings": settings, "v": template_version}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Append-only JSONL of answers (one line per key), flushed and fsynced per answer.

    Written by hand rather than with sqlite so that a run's cache is a readable, greppable part
    of its outputs; a torn last line (killed mid-write) is skipped on load."""

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.entries: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        if self.path.exists():
            with open(self.path, "rb") as handle:
                data = handle.read()
            for line in data.splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self.entries[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn_lines += 1
            needs_newline = bool(data) and not data.endswith(b"\n")
        else:
            needs_newline = False
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if needs_newline:  # a torn last line must not swallow the next record
            self._handle.write("\n")
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
            self.entries[record["key"]] = record

    def put_many(self, records: list[dict[str, Any]]) -> None:
        """Several answers with one flush and fsync (a batch job's output)."""
        lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        with self._lock:
            self._handle.write(lines)
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
            for record in records:
                self.entries[record["key"]] = record

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()
