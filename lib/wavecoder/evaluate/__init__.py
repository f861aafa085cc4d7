"""Evaluation: benchmark registry, sandboxed execution, pass@k."""

from wavecoder.evaluate.benchmarks import (
    Benchmark,
    BenchmarkUnavailable,
    Problem,
    get_benchmark,
    list_benchmarks,
)
from wavecoder.evaluate.execution import execute_samples, pass_at_k, score
from wavecoder.evaluate.sandbox import Sandbox, detect_toolchains

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
