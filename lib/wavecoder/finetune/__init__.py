"""Stage 03: instruction-tune a causal code LM on CodeOcean (LoRA with peft, or full).

- `data`: read and check the instruction file, Alpaca / chat-template prompts, tokenize with the
  loss on the response only, truncate or drop over-long examples, mix in another set, split.
- `collate`: dynamic padding, or packing several examples per row without attention across
  example boundaries.
- `train`: the training entry point (notebook and `python -m wavecoder.finetune.train`, also
  under `accelerate launch`), checkpoints and resume, `train_log.jsonl`, adapter, model card.
- `plots`: loss curves and throughput.
"""

from wavecoder.finetune import collate, data

__all__ = ["collate", "data"]
