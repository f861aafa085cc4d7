"""Stage 01, select: load a code corpus, filter it, embed it and pick a diverse subset.

- `stage`: the steps notebooks/01_select.ipynb calls, in order.
- `corpus` (files, the embedded stdlib/site-packages harvest, `datasets`), `corpus_hub` (the
  hub's CodeSearchNet data files): records in one schema, with a load report.
- `filters`: length, docstring, syntax, near-duplicate and benchmark-decontamination filters.
- `embed`: sentence-transformers embeddings with an on-disk cache.
- `coreset`: exact greedy k-center (KCenterGreedy), random baseline, diversity metrics.
- `plots`: the funnel, the selection map, lengths and languages.
"""
