"""Text for notebook displays that never becomes markup.

What an LLM wrote, what a model generated, what a dataset or a program holds is untrusted: shown
through IPython's `Markdown` or `HTML` it is markup, and nbconvert keeps raw HTML in both, so a
generated instruction holding `<script>...</script>` runs in the rendered notebook that
researchers share. The notebooks show such text with `print`, as polars DataFrames (whose HTML
escapes every cell) or with these helpers, whose HTML is escaped text and nothing else.
"""

from __future__ import annotations

import html
from typing import Any


class Text:
    """A piece of text a notebook shows as itself: its HTML form escapes everything (quotes
    included) and its plain form is the text unchanged. There is no Markdown form."""

    def __init__(self, text: Any, tag: str = "p", bold: bool = False, style: str = "") -> None:
        self.text = "" if text is None else str(text)
        self.tag = tag
        self.bold = bold
        self.style = style

    def _repr_html_(self) -> str:
        inner = html.escape(self.text, quote=True)
        if self.bold:
            inner = f"<strong>{inner}</strong>"
        style = f' style="{html.escape(self.style, quote=True)}"' if self.style else ""
        return f"<{self.tag}{style}>{inner}</{self.tag}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text)

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def bold(text: Any) -> Text:
    """A bold paragraph of escaped text (a headline, a sample's instruction)."""
    return Text(text, "p", bold=True)


def heading(text: Any, level: int = 3) -> Text:
    """A heading (h1-h6) of escaped text."""
    if not 1 <= int(level) <= 6:
        raise ValueError(f"heading level must be 1-6, got {level}")
    return Text(text, f"h{int(level)}")


def preformatted(text: Any) -> Text:
    """Multi-line text (code, program output) in a <pre> block, escaped, lines kept."""
    return Text(text, "pre", style="white-space: pre-wrap")
