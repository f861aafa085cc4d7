"""Evaluation: benchmark registry, sandboxed execution, pass@k."""

from .benchmarks import (
    Benchmark,
    BenchmarkUnavailable,
    Problem,
    get_benchmark,
    list_benchmarks,
)
from .execution import execute_samples, pass_at_k, score
from .sandbox import Sandbox, detect_toolchains

__all__ = [
    "Benchmark",
    "BenchmarkUnavailable",
    "Problem",
    "Sandbox",
    "detect_toolchains",
    "execute_samples",
    "get_benchmark",
    "list_benchmarks",
    "pass_at_k",
    "score",
]
