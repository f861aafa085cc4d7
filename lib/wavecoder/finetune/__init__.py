"""Stage 03: instruction-tune a causal code LM on CodeOcean (LoRA with peft, or full).

- `data`: read and check the instruction file, Alpaca / chat-template prompts, tokenize with the
  loss on the response only, truncate or drop over-long examples, mix in another set, split.
- `collate`: dynamic padding, or packing several examples per row without attention across
  example boundaries.
- `model`: tokenizer and base model (with a fresh LoRA adapter), training and saving dtypes.
- `batch`: the optimizer step's rows and examples for `finetune.global_batch_size`.
- `trainer`: the Trainer counting non-padding tokens, the held-out loss, `train_log.jsonl`,
  training arguments, checkpoints and the resume guard.
- `stage`: what notebooks/03_finetune.ipynb calls: the data, `finetune()`, the saved outputs,
  the model card.
- `tuned`: `TunedModel`, the record of what stage 03 produced (`tuned_model.json`, read by
  stages 04 and 05), `load_tuned` and `generate_samples`.
- `train`: the command line, `python -m wavecoder.finetune.train` (also under
  `accelerate launch`).
- `plots`: loss curves and throughput.

Submodules are imported on use: the report reads `tuned` without loading torch.
"""
