"""Stage 05, report: every stage's headline and figures, and our scores beside the paper's.

- `stage`: collects the run's stages, builds the comparison and settings tables and the
  shareable report.html (what notebooks/05_report.ipynb calls).
- `paper`: the paper's published numbers (WaveCoder v5 tables), each with its source.
- `plots`: our pass@1 beside the paper's, per benchmark.
"""
