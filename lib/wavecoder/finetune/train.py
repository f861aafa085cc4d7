"""Stage 03 from the command line, also under `accelerate launch` (DDP for LoRA, FSDP for full
fine-tuning; configs in params/accelerate/); the notebook calls `wavecoder.finetune.stage`.

    python -m wavecoder.finetune.train --params params/default.yaml \\
        --out outputs/default/03_finetune
    accelerate launch --config_file params/accelerate/fsdp_full.yaml -m wavecoder.finetune.train \\
        --params params/paper.yaml --out outputs/paper/03_finetune
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from wavecoder.config import load_params
from wavecoder.finetune.data import DataError, FinetuneError
from wavecoder.finetune.stage import finetune


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wavecoder.finetune.train",
        description="Stage 03 training (also under `accelerate launch`).",
    )
    parser.add_argument("--params", required=True, help="params YAML (e.g. params/paper.yaml)")
    parser.add_argument("--out", required=True, help="stage folder, e.g. outputs/paper/03_finetune")
    parser.add_argument(
        "--data", help="instruction file; default: finetune.data_file or stage 02's"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    params = load_params(args.params, args.set)
    try:
        result = finetune(params, args.out, args.data, progress=not args.no_progress)
    except (FinetuneError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.headline())
        if math.isnan(result.last_loss or 0.0):
            print("warning: the loss is NaN", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
