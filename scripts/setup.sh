#!/usr/bin/env bash
# Create .venv from the lock, with every file's sha256 checked; fast when already done.
#
#   locks/cpu.txt   no CUDA GPU: torch's CPU build (no multi-GB CUDA libraries)
#   locks/cuda.txt  a CUDA GPU (nvidia-smi lists one): torch from PyPI with its CUDA libraries
#
# uv installs the lock (`uv pip sync --require-hashes`: the venv then holds exactly what the
# lock names, nothing more, nothing else); uv itself comes from the lock's own pinned and
# hashed entry, through pip. INSTALLER=pip uses pip instead (`pip install --require-hashes`),
# as does a machine where uv cannot be had. Then the project itself, without dependencies.
# The locks are written by scripts/lock.sh (`make lock`) for Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3.11 || command -v python3)
fi
CPU_INDEX=https://download.pytorch.org/whl/cpu
INSTALLER=${INSTALLER:-uv}

if [ -n "${LOCK:-}" ]; then
  :
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  LOCK=locks/cuda.txt
else
  LOCK=locks/cpu.txt
fi
STAMP="$VENV/.setup-$(cat pyproject.toml "$LOCK" scripts/setup.sh scripts/toolchains.sh \
  | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ]; then
  exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "setup: the locks are for Python 3.11 ($PYTHON is $("$PYTHON" --version 2>&1));" \
    "set PYTHON=/path/to/python3.11" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
echo "setup: installing $LOCK into $VENV"

# torch's CPU build is not on PyPI: take the locked wheel from pip's own sources (a local
# wheel, e.g. pip's find-links) or else from PyTorch's CPU index; the lock's hash checks it
sources=()
torch_pin=$(sed -n 's/^\(torch==[^ ]*+cpu\) .*/\1/p' "$LOCK")
if [ -n "$torch_pin" ]; then
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  "${PIP[@]}" download -q --no-deps -d "$wheels" --no-index "$torch_pin" 2>/dev/null \
    || "${PIP[@]}" download -q --no-deps -d "$wheels" --index-url "$CPU_INDEX" "$torch_pin"
  sources=(--find-links "$wheels")
fi

lock_entry() { # the lock's entry for $1 (its pin and --hash lines) as a requirements file
  awk -v name="$1" '$0 ~ "^"name"==" {on=1} on && /^ *#/ {exit} on {print}' "$LOCK"
}

if [ "$INSTALLER" = uv ]; then
  uv_pin=$(lock_entry uv | head -1 | tr -d ' \\')
  if [ -z "$uv_pin" ]; then
    echo "setup: $LOCK has no uv; installing with pip" >&2
    INSTALLER=pip
  elif [ "$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "${uv_pin#uv==}" ] \
    && ! "${PIP[@]}" install -q --require-hashes --no-deps -r <(lock_entry uv); then
    echo "setup: could not install $uv_pin; installing with pip" >&2
    INSTALLER=pip
  fi
fi

if [ "$INSTALLER" = uv ]; then
  UV=("$VENV/bin/uv" pip --quiet)
  "${UV[@]}" sync --python "$VENV/bin/python" --require-hashes "${sources[@]}" "$LOCK"
  # setuptools is in the lock: build the editable project with it, offline
  "${UV[@]}" install --python "$VENV/bin/python" --no-deps --no-build-isolation -e . \
    || "${UV[@]}" install --python "$VENV/bin/python" --no-deps -e .
else
  "${PIP[@]}" install -q --require-hashes --no-deps "${sources[@]}" -r "$LOCK"
  "${PIP[@]}" install -q --no-deps -e .
fi

bash scripts/toolchains.sh
"$VENV/bin/python" -m ipykernel install --sys-prefix --name wavecoder --display-name "Python (wavecoder)" >/dev/null
rm -f "$VENV"/.setup-*
echo "$LOCK" >"$VENV/.lock"
touch "$STAMP"
echo "setup: ready ($VENV from $LOCK, kernel 'wavecoder')"
