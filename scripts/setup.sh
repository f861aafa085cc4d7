#!/usr/bin/env bash
# Create .venv with the project and everything it needs; fast when already done.
# CPU torch goes in first where no CUDA GPU is present (else pip pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
STAMP="$VENV/.setup-$(cat pyproject.toml scripts/setup.sh scripts/toolchains.sh | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ]; then
  exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup: Python >= 3.10 is needed ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: CUDA GPU found: installing torch==$TORCH_VERSION (CUDA build)"
    "${PIP[@]}" install "torch==$TORCH_VERSION"
  elif probe=$(mktemp -d) && "${PIP[@]}" download --no-index --no-deps -q -d "$probe" \
      "torch==$TORCH_VERSION" >/dev/null 2>&1 && rm -rf "$probe"; then
    # A local wheel (pip's find-links) is there: pip prefers it; deps come from the index.
    echo "setup: installing torch==$TORCH_VERSION from a local wheel"
    "${PIP[@]}" install "torch==$TORCH_VERSION"
  else
    echo "setup: no GPU: installing the CPU build of torch==$TORCH_VERSION"
    "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
      || "${PIP[@]}" install "torch==$TORCH_VERSION"
  fi
fi

"${PIP[@]}" install -e ".[dev]"
bash scripts/toolchains.sh
"$VENV/bin/python" -m ipykernel install --sys-prefix --name wavecoder --display-name "Python (wavecoder)" >/dev/null
rm -f "$VENV"/.setup-*
touch "$STAMP"
echo "setup: ready ($VENV, kernel 'wavecoder')"
