#!/usr/bin/env bash
# The same study everywhere: two clean clones of this repository in different folders, each set
# up from the lock, run stages 01-03 of PARAMS (default params/smoke.yaml) with empty caches;
# the sha256 of stage 01's selection, stage 02's generated and accepted cases and stage 03's
# adapter and tuned-model record must be equal. Prints both columns and exits non-zero on any difference.
#   bash scripts/same_bytes.sh [PARAMS]          (`make same-bytes`; ~15 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PARAMS=${1:-params/smoke.yaml}
SOURCE=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CLONES=("$WORK/a" "$WORK/somewhere/much/deeper/b")
# candidates.jsonl holds every generated case and verdict, accepted or not: the llama.cpp
# server's sampled text (seeded per request), even when the smoke judge accepts nothing. Its
# call timings (latency_s, and attempts and cached, which follow the machine's load) are
# dropped before hashing; every other byte counts.
TIMINGS='latency_s attempts cached'
digest() {
  case "$1" in
    *candidates.jsonl)
      python3 - "$1" "$TIMINGS" <<'PY'
import hashlib, json, sys
drop = set(sys.argv[2].split())
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in drop}
    return [strip(x) for x in v] if isinstance(v, list) else v
h = hashlib.sha256()
for line in open(sys.argv[1], encoding="utf-8"):
    h.update(json.dumps(strip(json.loads(line)), sort_keys=True).encode() + b"\n")
print(h.hexdigest()[:16])
PY
      ;;
    *) sha256sum "$1" | cut -c1-16 ;;
  esac
}
FILES=(
  01_select/selected.parquet
  01_select/reserve.parquet
  02_generate/candidates.jsonl
  02_generate/codeocean.jsonl
  03_finetune/adapter/adapter_model.safetensors
  03_finetune/tuned_model.json
)

for clone in "${CLONES[@]}"; do
  mkdir -p "$(dirname "$clone")"
  git clone -q "$SOURCE" "$clone"
  echo "same-bytes: $clone: setup"
  (cd "$clone" && make -s setup >/dev/null)
  echo "same-bytes: $clone: stages 01-03 of $PARAMS"
  (cd "$clone" && .venv/bin/wavecoder run "$PARAMS" --run same --stages 01,02,03 \
    --no-progress >"$clone.log" 2>&1) || { tail -n 40 "$clone.log"; exit 1; }
done

status=0
printf '%-48s %-16s %-16s\n' file "${CLONES[0]##*/}" "${CLONES[1]##*/}"
for file in "${FILES[@]}"; do
  sums=()
  for clone in "${CLONES[@]}"; do
    path="$clone/outputs/same/$file"
    if [ -f "$path" ]; then sums+=("$(digest "$path")"); else sums+=(missing); fi
  done
  mark=""
  if [ "${sums[0]}" != "${sums[1]}" ] || [ "${sums[0]}" = missing ]; then mark="  DIFFERS"; status=1; fi
  printf '%-48s %-16s %-16s%s\n' "$file" "${sums[0]}" "${sums[1]}" "$mark"
done
exit $status
