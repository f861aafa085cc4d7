"""Figures saved as PNG beside the data (Agg backend, one seaborn theme) and returned for
inline display; each stage's plots.py draws with these."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

__all__ = ["plt", "save", "sns"]


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
