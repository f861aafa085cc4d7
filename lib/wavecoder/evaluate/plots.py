"""Stage 04 figures: pass@1 per benchmark and model, HumanEvalPack by language, verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wavecoder.figures import plt, save, sns


def pass_at_1_bars(rows: list[dict[str, Any]], path: str | Path, title: str = "pass@1"):
    """Grouped bars: pass@1 (%) per benchmark, one bar per model."""
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len({r["benchmark"] for r in rows}) + 3), 4))
    if rows:
        sns.barplot(
            x=[r["benchmark"] for r in rows],
            y=[100 * (r["pass@1"] or 0) for r in rows],
            hue=[r["model"] for r in rows],
            ax=ax,
        )
    ax.set_ylabel("pass@1 (%)")
    ax.set_xlabel("")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    save(fig, path)
    return fig


def humanevalpack_language_bars(rows: list[dict[str, Any]], path: str | Path):
    """HumanEvalPack pass@1 per language, one panel per task (synthesize, fix, explain)."""
    pack = [r for r in rows if r["benchmark"].startswith("humanevalpack")]
    tasks = sorted({r["task"] for r in pack}) or ["none"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = [r for r in pack if r["task"] == task]
        if sub:
            sns.barplot(
                x=[r["language"] for r in sub],
                y=[100 * (r["pass@1"] or 0) for r in sub],
                hue=[r["model"] for r in sub],
                ax=ax,
            )
        ax.set_title(f"HumanEvalPack {task}")
        ax.set_ylabel("pass@1 (%)")
    save(fig, path)
    return fig


def verdict_bars(rows: list[dict[str, Any]], path: str | Path):
    """How the programs ended: stacked verdict counts per model and benchmark."""
    kinds = ["passed", "failed", "timeout", "compile_error", "sandbox_error"]
    labels = [f"{r['model']}: {r['benchmark']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    left = np.zeros(len(rows))
    for kind in kinds:
        counts = np.array([r["verdicts"].get(kind, 0) for r in rows], dtype=float)
        if counts.any():
            ax.barh(labels, counts, left=left, label=kind)
            left += counts
    ax.set_xlabel("programs")
    ax.set_title("Failure kinds")
    ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    save(fig, path)
    return fig
