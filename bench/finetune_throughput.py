"""Stage 03 training throughput: our Trainer step against a plain PyTorch + peft loop.

Both run on the same model, the same batches (batch x sequence length) and the same LoRA
adapter, in this process, in alternating rounds (so that load from other processes hits both
alike); the figure is non-padding tokens/s over the steps after a warm-up. Target: ours >= 0.9x
the plain loop. Also: the non-padding fraction with packing on default-like instruction data
(stage 02's codeocean.jsonl when given or present, else MBPP from ../shared/data as a stand-in).
Target >= 0.95.

    .venv/bin/python bench/finetune_throughput.py              # CPU: SmolLM2-135M, LoRA, 4 x 64
    .venv/bin/python bench/finetune_throughput.py --gpu        # the paper-sizing shapes, bf16
    .venv/bin/python bench/finetune_throughput.py --gpu --device cpu --shapes tiny  # check it

--gpu runs random-init Llama-shaped models (no download): 1.1B (hidden 2048, 22 layers, GQA
32/4) at 2048 x 8, and DeepSeek-Coder-6.7B-shaped (hidden 4096, 32 layers, intermediate 11008)
at 2048 x 4 with gradient checkpointing; LoRA r=16 on all linear layers, bf16, sdpa. It prints
tokens/s, the ratio, peak memory, and the estimated time of the paper-scale run (20K examples x
3 epochs; --avg-example-tokens sets the mean example length).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "lib"))

from transformers import TrainerCallback  # noqa: E402
from wavecoder import load_params, models  # noqa: E402
from wavecoder.finetune import collate as C  # noqa: E402
from wavecoder.finetune import data as D  # noqa: E402
from wavecoder.finetune import model as M  # noqa: E402
from wavecoder.finetune import trainer as TR  # noqa: E402

GPU_SHAPES = {
    "llama-1.1b": dict(
        config=dict(
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            vocab_size=32000,
        ),
        seq=2048,
        batch=8,
        grad_ckpt=False,
        reference=36_600,  # DESIGN.md: plain loop on one H200
    ),
    "deepseek-coder-6.7b": dict(
        config=dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32256,
        ),
        seq=2048,
        batch=4,
        grad_ckpt=True,
        reference=6_700,
    ),
    # not a sizing shape: checks this script's GPU path on any device (`--device cpu`)
    "tiny": dict(
        config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1000,
        ),
        seq=64,
        batch=2,
        grad_ckpt=True,
        reference=None,
    ),
}
SIZING_SHAPES = ["llama-1.1b", "deepseek-coder-6.7b"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def random_rows(n: int, seq: int, vocab: int, seed: int) -> list[C.Row]:
    """Full rows of random tokens, loss on every token after the first half (no padding)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(10, vocab - 10, (seq,), generator=gen).tolist()
        labels = [D.IGNORE_INDEX] * (seq // 2) + ids[seq // 2 :]
        rows.append(C.Row(ids, labels, list(range(seq))))
    return rows


class StepClock(TrainerCallback):
    """Wall time and real tokens at each step end (device synchronised), for the Trainer run."""

    def __init__(self, counter: TR.TokenCounter):
        self.counter = counter
        self.marks: list[tuple[float, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.marks.append((time.perf_counter(), self.counter.real))

    def step_rates(self, warmup: int) -> list[float]:
        """Tokens/s of each step after the warm-up (wall time from one step end to the next:
        data loading, forward, backward, clipping, optimizer, scheduler, logging)."""
        marks = self.marks[warmup - 1 :]
        return [(n1 - n0) / (t1 - t0) for (t0, n0), (t1, n1) in zip(marks, marks[1:])]


def run_ours(
    model, ft, rows, collator, steps: int, warmup: int, seed: int, tmp: Path
) -> list[float]:
    """Tokens/s of the stage's own Trainer set-up (CountingTrainer, its arguments, our callback
    and collator), over `steps` steps after `warmup`."""
    ft = ft.model_copy(update={"max_steps": warmup + steps, "save_steps": 10**9})
    args = TR.training_arguments(ft, tmp, seed, has_eval=False, progress=False)
    counter = TR.TokenCounter()
    clock = StepClock(counter)
    logger = TR.TrainLogCallback(tmp / "train_log.jsonl", counter)
    trainer = TR.CountingTrainer(
        model=model,
        args=args,
        train_dataset=C.RowDataset(rows),
        data_collator=collator,
        callbacks=[logger, clock],
        counter=counter,
    )
    trainer.train()
    return clock.step_rates(warmup)


def run_plain(model, ft, rows, collator, steps: int, warmup: int, bf16: bool) -> list[float]:
    """A plain loop: AdamW on the trainable (LoRA) parameters, forward, backward, gradient
    clipping, step, zero_grad; same batches, same autocast as the Trainer."""
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=ft.learning_rate, weight_decay=ft.weight_decay)
    model.train()
    batches = [
        collator([C.RowDataset(rows)[j] for j in range(i, i + ft.batch_size)])
        for i in range(0, ft.batch_size * (warmup + steps), ft.batch_size)
    ]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    rates = []
    sync()
    mark = time.perf_counter()
    for index, batch in enumerate(batches):
        real = int(batch.pop("num_real_tokens"))
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, ft.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        now = time.perf_counter()
        if index >= warmup:
            rates.append(real / (now - mark))
        mark = now
    return rates


def compare(model, ft, rows, collator, steps, warmup, rounds, seed, bf16) -> dict[str, float]:
    """Alternating rounds; the figure is the median per-step rate over all timed steps (a
    median shrugs off the steps that other processes on the machine slowed down)."""
    ours, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            plain += run_plain(model, ft, rows, collator, steps, warmup, bf16)
            plain_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            ours += run_ours(model, ft, rows, collator, steps, warmup, seed + r, Path(tmp))
            ours_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
            print(
                f"  round {r + 1}: median step rate so far: plain "
                f"{statistics.median(plain):,.0f} tok/s, ours {statistics.median(ours):,.0f} tok/s"
            )
    return {
        "plain_tokens_per_s": statistics.median(plain),
        "ours_tokens_per_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(plain),
        "plain_peak_gib": plain_peak / 2**30,
        "ours_peak_gib": ours_peak / 2**30,
    }


# ---------------------------------------------------------------- packing on default-like data


def instruction_sets(data: str | None) -> list[tuple[str, list[D.Record]]]:
    """--data when given; else the default run's own stage 02 output (when there) and MBPP as a
    larger stand-in (when ../shared/data has it)."""
    if data:
        return [(data, D.load_records(data))]
    sets = []
    default = PROJECT / "outputs" / "default" / "02_generate" / "codeocean.jsonl"
    if default.exists():
        sets.append((f"{default.relative_to(PROJECT)} (the default run)", D.load_records(default)))
    mbpp = PROJECT.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
    if mbpp.exists():
        records = []
        for line in mbpp.read_text().splitlines():
            row = json.loads(line)
            code = row["code"].replace("\r\n", "\n")
            records.append(D.Record(row["text"], "", code, id=str(row["task_id"]), task="mbpp"))
        sets.append(("MBPP (a larger stand-in for CodeOcean)", records))
    if not sets:
        raise SystemExit("no data: give --data FILE (stage 02's codeocean.jsonl)")
    return sets


def packing_report(params, tokenizer, source: str, records: list[D.Record]) -> dict[str, float]:
    ft = params.finetune
    examples, stats = D.tokenize_records(
        records, tokenizer, ft.max_seq_length, ft.prompt, ft.overlong, progress=False
    )
    packed = C.pack_examples(examples, ft.max_seq_length, params.seed)
    single = C.single_rows(examples)
    # measured through the real collator over one epoch in the sampler's seeded random order
    collator = C.Collator(tokenizer.pad_token_id, packed=True)
    order = torch.randperm(len(packed), generator=torch.Generator().manual_seed(params.seed))
    real = total = 0
    dataset = C.RowDataset(packed)
    for start in range(0, len(order), ft.batch_size):
        batch = collator([dataset[int(i)] for i in order[start : start + ft.batch_size]])
        real += int(batch["num_real_tokens"])
        total += batch["input_ids"].numel()
    return {
        "source": source,
        "examples": stats.kept,
        "truncated": stats.truncated,
        "dropped": stats.dropped,
        "max_seq_length": ft.max_seq_length,
        "batch_size": ft.batch_size,
        "rows_packed": len(packed),
        "rows_fewest_possible": math.ceil(sum(len(e) for e in examples) / ft.max_seq_length),
        "non_padding_packed": real / total,
        "non_padding_unpacked": C.non_padding_fraction(
            [len(r) for r in single], ft.batch_size, params.seed
        ),
        "mean_example_tokens": sum(len(e) for e in examples) / max(1, len(examples)),
    }


# ---------------------------------------------------------------- modes


def cpu_mode(args) -> None:
    params = load_params(
        PROJECT / "params" / "default.yaml",
        {"finetune.batch_size": args.batch, "finetune.logging_steps": 1},
    )
    ft = params.finetune
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = models.resolve_base_model(ft.base_model, params.resolve_path(ft.model_cache))
    tokenizer = M.load_tokenizer(model_path)
    for source, records in instruction_sets(args.data):
        print(f"packing, {source} (max_seq_length {ft.max_seq_length}, batch {ft.batch_size}):")
        report = packing_report(params, tokenizer, source, records)
        for key, value in list(report.items())[1:]:
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
        fraction = report["non_padding_packed"]
        target = "ok" if fraction >= 0.95 else "BELOW TARGET"
        print(f"  non-padding fraction with packing {fraction:.3f} ({target} >= 0.95)\n")

    torch.manual_seed(params.seed)
    model = M.load_model(model_path, ft)
    counts = M.parameter_counts(model)
    rows = random_rows(args.batch * (args.warmup + args.steps), args.seq, len(tokenizer), 0)
    collator = C.Collator(tokenizer.pad_token_id, packed=ft.packing)
    print(
        f"\nSmolLM2-135M LoRA r={ft.lora_r} ({counts['trainable']:,} trainable), fp32, CPU "
        f"{torch.get_num_threads()} threads, batch {args.batch} x {args.seq} tokens, "
        f"{args.steps} timed steps after {args.warmup}, {args.rounds} rounds:"
    )
    result = compare(model, ft, rows, collator, args.steps, args.warmup, args.rounds, 0, False)
    print_result(result)


def print_result(result: dict[str, float], reference: float | None = None) -> None:
    target = "ok" if result["ratio"] >= 0.9 else "BELOW TARGET"
    print(
        f"  plain loop {result['plain_tokens_per_s']:,.0f} tok/s | ours "
        f"{result['ours_tokens_per_s']:,.0f} tok/s | ratio {result['ratio']:.3f} ({target} >= 0.9)"
    )
    if torch.cuda.is_available():
        print(
            f"  peak memory: plain {result['plain_peak_gib']:.1f} GiB, ours "
            f"{result['ours_peak_gib']:.1f} GiB"
        )
    if reference:
        print(f"  DESIGN.md reference (plain loop, one H200): {reference:,} tok/s")


def gpu_mode(args) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (or --device cpu --shapes tiny to check it)")
    if device.type == "cpu" and torch.cuda.is_available() or device.index not in (None, 0):
        # the Trainer picks its own device (cuda:0 where there is one): both loops must share it
        raise SystemExit(
            f"--device {args.device}: use cuda (or cuda:0), or cpu on a machine without"
        )
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else device}")
    base = load_params(PROJECT / "params" / "default.yaml").finetune
    for name in args.shapes:
        shape = GPU_SHAPES[name]
        config = LlamaConfig(
            **shape["config"], max_position_embeddings=4096, tie_word_embeddings=False
        )
        ft = base.model_copy(
            update=dict(
                method="lora",
                lora_r=16,
                lora_alpha=32,
                lora_dropout=0.0,
                lora_target_modules="all-linear",
                bf16=True,
                batch_size=shape["batch"],
                max_seq_length=shape["seq"],
                gradient_checkpointing=shape["grad_ckpt"],
                logging_steps=1,
            )
        )
        torch.manual_seed(0)
        with device:
            model = LlamaForCausalLM._from_config(
                config, dtype=torch.bfloat16, attn_implementation="sdpa"
            )
        model.config.use_cache = False
        if shape["grad_ckpt"]:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model = get_peft_model(
            model,
            LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"),
        )
        counts = M.parameter_counts(model)
        rows = random_rows(
            shape["batch"] * (args.warmup + args.steps), shape["seq"], config.vocab_size, 0
        )
        collator = C.Collator(0, packed=False)
        print(
            f"\n{name}: {counts['total'] / 1e9:.2f}B params, LoRA r=16 all-linear "
            f"({counts['trainable'] / 1e6:.1f}M trainable), bf16, sdpa, "
            f"{shape['seq']} x {shape['batch']}, grad ckpt {shape['grad_ckpt']}:"
        )
        result = compare(model, ft, rows, collator, args.steps, args.warmup, args.rounds, 0, True)
        print_result(result, shape["reference"])
        tokens = 20_000 * 3 * args.avg_example_tokens
        hours = tokens / result["ours_tokens_per_s"] / 3600
        # full fine-tuning adds the weight gradients: 8 vs 6 FLOPs per parameter and token with
        # checkpointing (forward recomputed), 6 vs 4 without; an estimate, not a measurement
        full = 8 / 6 if shape["grad_ckpt"] else 6 / 4
        print(
            f"  paper-scale run (20K examples x 3 epochs x {args.avg_example_tokens} tokens = "
            f"{tokens / 1e6:.0f}M tokens): LoRA {hours:.2f} h on this GPU (~{hours / 8:.2f} h on "
            f"8); full fine-tuning, estimated x{full:.2f} compute: {hours * full:.2f} h "
            f"(~{hours * full / 8:.2f} h on 8)"
        )
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="the paper-sizing shapes on a GPU")
    parser.add_argument("--shapes", nargs="+", default=SIZING_SHAPES, choices=list(GPU_SHAPES))
    parser.add_argument("--device", default="cuda", help="--gpu mode: the torch device")
    parser.add_argument("--batch", type=int, default=4, help="CPU mode: rows per step")
    parser.add_argument("--seq", type=int, default=64, help="CPU mode: tokens per row")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating plain/ours rounds")
    parser.add_argument("--threads", type=int, default=None, help="CPU mode: torch threads")
    parser.add_argument("--data", help="instruction file for the packing figure")
    parser.add_argument(
        "--avg-example-tokens",
        type=int,
        default=500,
        help="mean prompt+response tokens of a CodeOcean example, for the time estimate",
    )
    args = parser.parse_args()
    if args.gpu:
        gpu_mode(args)
    else:
        cpu_mode(args)


if __name__ == "__main__":
    main()
