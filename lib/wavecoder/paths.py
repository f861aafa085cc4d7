"""Where a run's stages write."""

from __future__ import annotations

from pathlib import Path


def stage_dir(run_dir: str | Path, name: str) -> Path:
    """outputs/<run>/<NN_stage>/, created if needed."""
    path = Path(run_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
