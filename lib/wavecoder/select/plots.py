"""Stage 01 figures: the filter funnel, the selection map, lengths and languages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wavecoder.figures import plt, save, sns


def funnel(steps: list[dict[str, Any]], path: str | Path, title: str = "Filter funnel"):
    """Horizontal bars: records remaining after each step, with the count removed."""
    names = [s["step"] for s in steps]
    remaining = [s["remaining"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(steps) + 1.2))
    bars = sns.barplot(x=remaining, y=names, ax=ax, color="steelblue", orient="h")
    for bar, step in zip(bars.patches, steps):
        label = f"{step['remaining']:,}" + (f"  (-{step['removed']:,})" if step["removed"] else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label, va="center")
    ax.set_xlabel("records remaining")
    ax.set_ylabel("")
    ax.set_title(title)
    ax.set_xlim(0, max(remaining or [1]) * 1.3)
    save(fig, path)
    return fig


def selection_map(
    coords: np.ndarray, selections: dict[str, list[int]], path: str | Path, title: str = ""
):
    """The pool in 2-D, one panel per selection, selected points highlighted."""
    fig, axes = plt.subplots(1, len(selections), figsize=(6 * len(selections), 5.5), squeeze=False)
    for ax, (name, selected) in zip(axes[0], selections.items()):
        ax.scatter(coords[:, 0], coords[:, 1], s=3, c="lightgray", label="pool", rasterized=True)
        ax.scatter(
            coords[selected, 0],
            coords[selected, 1],
            s=9,
            c="crimson",
            label=f"{name} (k={len(selected)})",
        )
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    save(fig, path)
    return fig


def length_histograms(lengths: dict[str, np.ndarray], path: str | Path, xlabel: str = "code lines"):
    fig, ax = plt.subplots(figsize=(7, 4))
    upper = max(float(np.quantile(v, 0.99)) for v in lengths.values() if len(v)) if lengths else 1
    bins = np.linspace(0, max(upper, 1), 40)
    for name, values in lengths.items():
        ax.hist(
            np.clip(values, 0, bins[-1]), bins=bins, density=True, histtype="step", lw=2, label=name
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    ax.set_title("Length distribution")
    save(fig, path)
    return fig


def language_bars(counts: dict[str, dict[str, int]], path: str | Path):
    """Share of each language per group (pool, k-center, random)."""
    rows = []
    for group, by_lang in counts.items():
        total = sum(by_lang.values()) or 1
        rows += [(group, lang, n / total) for lang, n in by_lang.items()]
    fig, ax = plt.subplots(figsize=(7, 4))
    if rows:
        groups, langs, shares = zip(*rows)
        sns.barplot(x=list(langs), y=list(shares), hue=list(groups), ax=ax)
    ax.set_ylabel("share")
    ax.set_xlabel("language")
    ax.set_title("Languages")
    save(fig, path)
    return fig
