"""CodeOcean-style instruction data: task specs, prompts, parsing, the judge, the example DB,
and the generator-discriminator loop (WaveCoder, arXiv 2312.14187, section 3)."""

from wavecoder.generate.examples import ExampleDB
from wavecoder.generate.parsing import parse_case, parse_verdict, prefilter
from wavecoder.generate.pipeline import (
    GenerationRun,
    Item,
    TargetPlan,
    item_for,
    plan_items,
    run_generation,
)
from wavecoder.generate.tasks import TaskSpec, assign_tasks, load_tasks

__all__ = [
    "ExampleDB",
    "GenerationRun",
    "Item",
    "TargetPlan",
    "TaskSpec",
    "assign_tasks",
    "item_for",
    "load_tasks",
    "parse_case",
    "parse_verdict",
    "plan_items",
    "prefilter",
    "run_generation",
]
