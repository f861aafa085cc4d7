"""Stage 04 steps, called one by one from notebooks/04_evaluate.ipynb: which models and
benchmarks, generation (resumable), sandboxed execution, scores and plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavecoder.config import StudyParams
from wavecoder.evaluate import BenchmarkUnavailable, execute_samples, get_benchmark, score
from wavecoder.evaluate.benchmarks import Benchmark, Problem
from wavecoder.evaluate.completions import GenerationRequest
from wavecoder.evaluate.sandbox import Sandbox
from wavecoder.finetune.tuned import TunedModel
from wavecoder.io import read_json, read_jsonl, sha256_file
from wavecoder.prompts import check_style_matches_training
from wavecoder.stages import FINETUNE, GENERATE


@dataclass
class EvalModel:
    tag: str  # "base" or "tuned"
    model_path: str
    adapter_path: str | None = None
    prompt_style: str = "wizardcoder"


def models_to_evaluate(params: StudyParams, run_dir: str | Path) -> list[EvalModel]:
    """The base model and the stage-03 fine-tuned one, from 03_finetune/tuned_model.json (the
    weights `TunedModel.weights` names); with the openai backend, the endpoints named in
    evaluate.endpoints."""
    if params.evaluate.backend == "openai":
        if not params.evaluate.endpoints:
            raise ValueError("evaluate.backend is 'openai' but evaluate.endpoints is empty")
        return [
            EvalModel(tag, ep.model, prompt_style=prompt_style_of(params, tag))
            for tag, ep in params.evaluate.endpoints.items()
        ]
    tuned = TunedModel.load(FINETUNE.folder(run_dir))
    models = []
    if "base" in params.evaluate.models:
        base = str(tuned.path("base_model_path"))
        models.append(EvalModel("base", base, prompt_style=prompt_style_of(params, "base")))
    if "tuned" in params.evaluate.models:
        style = prompt_style_of(params, "tuned")
        # the tuned model is asked in the format it was trained with
        check_style_matches_training(style, tuned.prompt, "tuned")
        model_path, adapter = tuned.weights()
        adapter_path = str(adapter) if adapter else None
        models.append(EvalModel("tuned", str(model_path), adapter_path, prompt_style=style))
    return models


def benchmark_names(params: StudyParams) -> list[str]:
    """evaluate.benchmarks with 'humanevalpack' expanded to its tasks and languages."""
    cfg = params.evaluate
    names: list[str] = []
    for name in cfg.benchmarks:
        if name == "humanevalpack":
            names += [
                f"humanevalpack-{task}-{lang}"
                for task in cfg.humanevalpack_tasks
                for lang in cfg.humanevalpack_languages
            ]
        else:
            names.append(name)
    return names


def load_benchmarks(params: StudyParams) -> tuple[dict[str, Benchmark], dict[str, str]]:
    """The benchmarks that load, and for the others the reason (they do not stop the stage)."""
    cfg = params.evaluate
    data_dir = params.resolve_path(cfg.data_dir) if cfg.data_dir else None
    loaded: dict[str, Benchmark] = {}
    missing: dict[str, str] = {}
    for name in benchmark_names(params):
        options = {"postprocess": cfg.mbpp_postprocess} if name == "mbpp" else {}
        try:
            bench = get_benchmark(name, data_dir=data_dir, limit=cfg.limit, **options)
            # every model's prompt style must render here, before any generation starts
            for style in sorted(set(cfg.prompt_style.values())):
                if bench.problems:
                    bench.prompt(bench.problems[0], style, bench.passes[0].name)
            loaded[name] = bench
        except (BenchmarkUnavailable, ValueError) as exc:
            missing[name] = str(exc)
    return loaded, missing


def prompt_style_of(params: StudyParams, model_tag: str) -> str:
    """evaluate.prompt_style for one model; a model without one is an error naming it."""
    styles = params.evaluate.prompt_style
    if model_tag not in styles:
        raise ValueError(
            f"evaluate.prompt_style has no entry for the {model_tag!r} model "
            f"(it has {sorted(styles)}); add e.g. prompt_style.{model_tag}: wizardcoder"
        )
    return styles[model_tag]


def _request(
    bench: Benchmark, problem: Problem, pass_no: int, style: str, text: str, **meta: Any
) -> GenerationRequest:
    pass_name = bench.passes[pass_no - 1].name
    finished = None
    if bench.passes[pass_no - 1].code and style != "chat":  # a chat reply ends its own turn
        finished = getattr(bench, "finished", None)
    return GenerationRequest(
        key=f"{bench.name}|{problem.task_id}|{pass_no}",
        prompt=text,
        stop=tuple(bench.stop_words(style, pass_name)),
        meta={
            "task_id": problem.task_id,
            "language": problem.language,
            "pass": pass_no,
            "prompt_style": style,
            **meta,
        },
        finished=finished,
    )


def first_pass_requests(bench: Benchmark, style: str) -> list[GenerationRequest]:
    """One request per problem; for Explain, the describe pass."""
    first = bench.passes[0].name
    return [_request(bench, p, 1, style, bench.prompt(p, style, first)) for p in bench.problems]


def explain_second_pass_requests(
    bench: Benchmark, describe_completions: dict[str, str], style: str
) -> list[GenerationRequest]:
    """Explain: write the code from the model's own description alone, the description cut
    as the reference cuts it (length of the docstring, stop words, copied solution lines)."""
    requests = []
    for problem in bench.problems:
        description = bench.postprocess(problem, describe_completions[problem.task_id], "describe")
        text = bench.prompt(problem, style, "synthesize", description=description)
        requests.append(_request(bench, problem, 2, style, text, description=description))
    return requests


def open_sandbox(cfg: Any) -> Sandbox:
    """The sandbox stage 04 runs every program in (`evaluate.workers`; with
    `evaluate.require_isolation` it refuses to start when a protection is missing here)."""
    return Sandbox(workers=cfg.workers, require_isolation=cfg.require_isolation)


def execute_and_score(
    bench: Benchmark,
    samples: list[dict[str, Any]],
    results_path: Path,
    sandbox: Sandbox | int | None,
    timeout: float | None,
) -> dict[str, Any]:
    """Run the final-pass samples in the sandbox (or on a new one with that many workers),
    write results JSONL, return scores."""
    rows = [
        {
            "task_id": s["task_id"],
            "completion": s["completion"],
            "language": bench.language,
            "prompt_style": s.get("prompt_style"),
        }
        for s in samples
    ]
    box = sandbox if isinstance(sandbox, Sandbox) else None
    workers = sandbox if isinstance(sandbox, int) else None
    results = execute_samples(bench, rows, workers=workers, timeout=timeout, sandbox=box)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    with open(results_path, "w", encoding="utf-8") as handle:
        for row in results:
            handle.write(json.dumps(row) + "\n")
    return score(results, ks=(1,))


def score_rows(
    scores: dict[str, dict[str, dict[str, Any]]], benchmarks: dict[str, Benchmark]
) -> list[dict[str, Any]]:
    """Flat rows (model, benchmark, paper family, language, task, pass@1, verdict counts)."""
    rows = []
    for model, per_bench in scores.items():
        for name, result in per_bench.items():
            bench = benchmarks[name]
            rows.append(
                {
                    "model": model,
                    "benchmark": name,
                    "family": bench.family,
                    "language": bench.language,
                    "task": bench.task,
                    "problems": result.get("tasks", 0),
                    "pass@1": result.get("pass@1"),
                    "verdicts": result.get("verdicts", {}),
                }
            )
    return rows


def split_by_toolchain(
    benchmarks: dict[str, Benchmark],
) -> tuple[dict[str, Benchmark], dict[str, str]]:
    """Benchmarks whose language can run here, and the reason for each that cannot."""
    from wavecoder.evaluate import detect_toolchains

    toolchains = detect_toolchains()
    runnable, skipped = {}, {}
    for name, bench in benchmarks.items():
        tool = toolchains.get(bench.language)
        if tool is not None and tool.available:
            runnable[name] = bench
        else:
            skipped[name] = tool.reason if tool is not None else f"no runner for {bench.language}"
    return runnable, skipped


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
HASHED_BELOW_BYTES = 256 * 2**20


def weights_signature(path: str | None) -> Any:
    """What identifies the weights at `path`, for telling whether stored samples came from
    them: the sha256 of each weight file under 256 MiB (an adapter), name, size and mtime of
    larger ones (a retrained 13 GB model gets a new mtime; hashing it would cost minutes); a
    hub id as itself. A model retrained into the same folder then never reuses old samples."""
    if path is None:
        return None
    folder = Path(path)
    if not folder.exists():
        return str(path)
    files = [folder] if folder.is_file() else sorted(folder.iterdir())
    signature = []
    for file in files:
        if not file.is_file() or not file.name.endswith(WEIGHT_SUFFIXES):
            continue
        stat = file.stat()
        if stat.st_size < HASHED_BELOW_BYTES:
            signature.append([file.name, sha256_file(file)])
        else:
            signature.append([file.name, stat.st_size, stat.st_mtime_ns])
    return signature


def generate_for_model(
    model: EvalModel,
    benchmarks: dict[str, Benchmark],
    params: StudyParams,
    samples_dir: Path,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Greedy completions of every problem by one model (both passes for Explain); samples are
    appended to samples_dir/<model>/<benchmark>.jsonl as produced and reused on a rerun. With
    the openai backend one LLM session serves all of the model's benchmarks."""
    from wavecoder.evaluate.completions import HFGenerator, OpenAIGenerator, generate_samples

    cfg = params.evaluate
    if cfg.backend == "openai":
        generator = OpenAIGenerator(
            params.llm,
            cfg.endpoints[model.tag],
            samples_dir / "llm_cache.jsonl",
            cfg.max_new_tokens,
            where=f"evaluate.endpoints.{model.tag}",
        )
    else:
        chat = model.prompt_style == "chat"
        generator = HFGenerator(
            model.model_path, model.adapter_path, device=cfg.device, dtype=cfg.dtype, chat=chat
        )
    style = model.prompt_style
    final: dict[str, list[dict[str, Any]]] = {}
    with generator:  # the openai backend's session stays open until every benchmark is done
        for name, bench in benchmarks.items():
            path = samples_dir / model.tag / f"{name}.jsonl"
            common = dict(
                settings={
                    "model": model.model_path,
                    "adapter": model.adapter_path,
                    "weights": [
                        weights_signature(model.model_path),
                        weights_signature(model.adapter_path),
                    ],
                    "backend": cfg.backend,
                    "endpoint": cfg.endpoints[model.tag].model_dump(mode="json")
                    if cfg.backend == "openai"
                    else None,
                    "prompt_style": style,
                    "dtype": cfg.dtype,
                    "postprocess": "raw completion; reference post-processing at execution",
                },
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
                model_tag=f"{model.tag}:{name}",
                progress=progress,
            )
            samples = generate_samples(generator, first_pass_requests(bench, style), path, **common)
            if len(bench.passes) == 2:  # Explain: describe, then synthesize from the description
                described = {s["task_id"]: s["completion"] for s in samples}
                samples = generate_samples(
                    generator,
                    explain_second_pass_requests(bench, described, style),
                    path,
                    **common,
                )
            final[name] = samples
    return final


def _trained_batch(trained: dict[str, Any], ft: Any) -> dict[str, Any]:
    """With `finetune.global_batch_size`, the examples per optimizer step training achieved
    (`train_metrics.json`'s `batch`; the asked size before training ran)."""
    if not ft.global_batch_size:
        return {}
    batch = trained.get("batch") or {}
    achieved = batch.get("examples_per_step")
    return {
        "batch_size": round(float(achieved), 1) if achieved else ft.global_batch_size,
        "batch_unit": "examples",
    }


def settings_summary(
    params: StudyParams,
    models: list[EvalModel],
    benchmarks: dict[str, Benchmark] | None = None,
    run_dir: str | Path | None = None,
) -> dict[str, Any]:
    """This run's settings in the keys the report compares with the paper's (see
    `wavecoder.report.stage`): base model, languages, prompt style per model, post-processing,
    accepted examples and task mix, training batch and optimizer, decoding, problems."""
    cfg, ft = params.evaluate, params.finetune
    run = Path(run_dir) if run_dir is not None else None
    tuned_here = run is not None and FINETUNE.path(run, "tuned_model").exists()
    tuned = TunedModel.load(FINETUNE.folder(run)) if tuned_here else None
    trained = (read_json(FINETUNE.path(run, "train_metrics"), strict=False) or {}) if run else {}
    processes = int(trained.get("processes") or 1)
    settings: dict[str, Any] = {
        "base_model": tuned.base_model if tuned else ft.base_model,
        "prompt_style": {m.tag: m.prompt_style for m in models},
        "postprocess": {
            "mbpp": cfg.mbpp_postprocess,
            "humanevalpack": "reference",
            "humaneval": "reference",
        },
        "finetune_method": ft.method,
        "epochs": ft.epochs,
        "learning_rate": ft.learning_rate,
        "max_seq_length": ft.max_seq_length,
        "batch_size": ft.batch_size * ft.gradient_accumulation * processes,
        "batch_unit": "packed rows" if ft.packing else "examples",
        **_trained_batch(trained, ft),
        "optimizer": ft.optimizer,
        # bigcode's max_length_generation counts the prompt too; its default precision is fp32
        "decoding": {
            "strategy": "greedy",
            "n_samples": 1,
            "max_new_tokens": cfg.max_new_tokens,
            "dtype": cfg.dtype,
            "batch_size": cfg.batch_size,
        },
        "generator_model": params.llm.generator.model,
        "judge_model": params.llm.discriminator.model,
        "backend": cfg.backend
        + (" (each prompt sent as one chat message)" if cfg.backend == "openai" else ""),
    }
    if benchmarks:
        settings["problems"] = {name: len(b) for name, b in benchmarks.items()}
        settings["languages"] = sorted(
            {b.language for n, b in benchmarks.items() if n.startswith("humanevalpack")}
        )
        # where each benchmark's rows came from (a file, or the hub commit with sha256s)
        settings["data_sources"] = {n: b.options.get("source") for n, b in benchmarks.items()}
        settings["prompts"] = {
            m.tag: {n: b.style_note(m.prompt_style) for n, b in benchmarks.items()} for m in models
        }
    accepted = GENERATE.path(run, "codeocean") if run else None
    if accepted is not None and accepted.exists():
        mix: dict[str, int] = {}
        for row in read_jsonl(accepted):
            mix[row.get("task", "?")] = mix.get(row.get("task", "?"), 0) + 1
        settings["examples"] = sum(mix.values())
        settings["task_mix"] = mix
    return settings


def fingerprint_inputs(params: StudyParams) -> dict[str, str]:
    """The benchmark files stage 04 reads from evaluate.data_dir (the hub when null)."""
    cfg = params.evaluate
    if not cfg.data_dir:
        return {"hf": "mbpp, bigcode/humanevalpack"}
    root = params.resolve_path(cfg.data_dir)
    files = sorted(root.glob("mbpp/*.json*")) + sorted(root.glob("humanevalpack/*.jsonl"))
    return {str(p): sha256_file(p) for p in files}
