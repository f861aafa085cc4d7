#!/usr/bin/env bash
# Refresh the locks (`make lock`): resolve pyproject.toml's dependencies and its dev extra to
# exact versions with the sha256 of every file, for Python $LOCK_PYTHON on Linux x86_64:
#
#   locks/cpu.txt    torch==$TORCH_VERSION+cpu (PyTorch's CPU build: no CUDA libraries)
#   locks/cuda.txt   torch==$TORCH_VERSION from PyPI (the CUDA build, with nvidia-* and triton)
#   environment.yml  the conda environment: this Python and locks/cpu.txt
#
# scripts/setup.sh installs one of them with hashes required. Every package both locks share
# has the same version in both (the CPU lock's versions constrain the CUDA lock), so CPU and
# CUDA machines differ only in torch's build and its GPU libraries.
# Resolved by uv (`uv pip compile`: seconds, and it ignores this machine's pip.conf, so no local
# mirror or find-links path leaks into a lock); uv comes from $UV, PATH, the project's .venv
# (the dev extra holds it) or, failing those, a throwaway venv.
#
# The CPU wheel: pip's own sources first (a local wheel, e.g. find-links), else PyPI's
# neighbour https://download.pytorch.org/whl/cpu. The local wheel's sha256 on these machines
# (6746dbcb...667b, torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl) is the one that
# index lists for that file, so the lock installs from either.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=${TORCH_VERSION:-2.13.0}
LOCK_PYTHON=${LOCK_PYTHON:-3.11}
LOCK_PLATFORM=${LOCK_PLATFORM:-x86_64-manylinux_2_28}
CPU_INDEX=https://download.pytorch.org/whl/cpu
PYTHON=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# uv's cache of its own: resolving re-fetches llama-cpp-python's sdist as a new cache revision,
# and the wheel that setup built (minutes) from the old one would then be built again
export UV_CACHE_DIR=${LOCK_UV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wavecoder-lock-uv}

UV=${UV:-$(command -v uv || true)}
if [ -z "$UV" ] && [ -x .venv/bin/uv ]; then
  UV=.venv/bin/uv
fi
if [ -z "$UV" ]; then
  echo "lock: installing uv into a throwaway venv"
  "$PYTHON" -m venv "$work/uv" && "$work/uv/bin/pip" install -q uv
  UV=$work/uv/bin/uv
fi

# the CPU wheel of torch into $work/wheels
mkdir -p "$work/wheels"
pip_download=("$PYTHON" -m pip download --no-deps -q -d "$work/wheels" --python-version "$LOCK_PYTHON"
  --platform "${LOCK_PLATFORM#x86_64-}_x86_64" --only-binary=:all:)
if ! "${pip_download[@]}" --no-index "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
  "${pip_download[@]}" --index-url "$CPU_INDEX" "torch==$TORCH_VERSION+cpu"
fi

compile() { # compile OUT [uv options...]
  local out=$1
  shift
  "$UV" pip compile pyproject.toml --extra dev --generate-hashes --quiet \
    --python-version "$LOCK_PYTHON" --python-platform "$LOCK_PLATFORM" \
    --custom-compile-command "make lock" "$@" -o "$out"
  # name the temporary constraint files in the "via" comments by what they are
  sed -i -e "s|$work/torch-cpu.txt|torch pin (scripts/lock.sh)|" \
    -e "s|$work/torch-cuda.txt|torch pin (scripts/lock.sh)|" \
    -e "/-c ${work//\//\\/}\/cpu-pins.txt/d" "$out"
}

mkdir -p locks
echo "torch==$TORCH_VERSION+cpu" >"$work/torch-cpu.txt"
echo "torch==$TORCH_VERSION" >"$work/torch-cuda.txt"
# a refresh takes the newest releases that satisfy pyproject.toml; LOCK_UPGRADE=0 keeps what
# locks/cpu.txt has and only resolves what changed (uv reads the output file's pins)
upgrade=(--upgrade)
[ "${LOCK_UPGRADE:-1}" = 0 ] && upgrade=()
compile locks/cpu.txt --constraint "$work/torch-cpu.txt" --find-links "$work/wheels" "${upgrade[@]}"
# the CUDA lock: every package the CPU lock has at the CPU lock's version, plus what the CUDA
# build of torch adds (nvidia-*, cuda-*, triton)
sed -n -e 's/^\([A-Za-z0-9][A-Za-z0-9._-]*==[^ ;]*\).*/\1/p' locks/cpu.txt \
  | grep -v '^torch==' >"$work/cpu-pins.txt"
compile locks/cuda.txt --constraint "$work/torch-cuda.txt" --constraint "$work/cpu-pins.txt" \
  --upgrade

cat >environment.yml <<EOF
# Written by scripts/lock.sh (make lock) from pyproject.toml through locks/cpu.txt; do not edit.
#   conda env create -f environment.yml && conda activate wavecoder && pip install -e . --no-deps
# The CPU lock's torch ($TORCH_VERSION+cpu) comes from PyTorch's CPU index; a CUDA machine
# uses scripts/setup.sh (locks/cuda.txt) instead.
name: wavecoder
channels:
  - conda-forge
dependencies:
  - python=$LOCK_PYTHON
  - pip
  - pip:
      - --extra-index-url $CPU_INDEX
      - --require-hashes
      - -r locks/cpu.txt
EOF
echo "lock: wrote locks/cpu.txt ($(grep -c '^[a-z0-9]' locks/cpu.txt) packages)," \
  "locks/cuda.txt ($(grep -c '^[a-z0-9]' locks/cuda.txt) packages), environment.yml"
