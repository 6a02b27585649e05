#!/usr/bin/env bash
# The default pipeline at two commits, back to back on this machine: seconds per stage and in all, and the
# ratio. Speed differs between machines (and with load): only a ratio measured in one run means anything.
#
#   bash bench/repro_pair.sh BEFORE [AFTER]     # AFTER defaults to HEAD; e.g. bash bench/repro_pair.sh 8801719
#
# Each commit is cloned beside this repository (../bench_pair_<commit>, so params.yaml's ../shared/... resolves as
# here), its stages run one by one with `dvc repro --single-item` (a stage the commit does not have is skipped),
# and the clone is removed. Results: bench/results/repro_pair.json.
set -euo pipefail

MAIN="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BEFORE=$(git -C "$MAIN" rev-parse --short "${1:?usage: repro_pair.sh BEFORE [AFTER]}")
AFTER=$(git -C "$MAIN" rev-parse --short "${2:-HEAD}")
export PATH="$MAIN/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
STAGES="sample_subset features train embed text index evaluate"
OUT="$MAIN/bench/results/repro_pair.json"
mkdir -p "$(dirname "$OUT")"
echo "{" > "$OUT.tmp"

run_commit() {  # $1 commit -> one JSON member: {"stage": seconds, ..., "total": seconds}
  local commit=$1 clone
  clone="$(dirname "$MAIN")/bench_pair_$commit"
  rm -rf "$clone"
  git clone -q "$MAIN" "$clone" && git -C "$clone" checkout -q "$commit"
  local json="\"$commit\": {" total=0
  for stage in $STAGES; do
    if ! grep -q "^  $stage:" "$clone/dvc.yaml"; then continue; fi
    local start end seconds
    start=$(date +%s.%N)
    (cd "$clone" && dvc repro --single-item "$stage" > "$clone/.log_$stage" 2>&1) || { tail -20 "$clone/.log_$stage"; exit 1; }
    end=$(date +%s.%N)
    seconds=$(echo "$end - $start" | bc)
    total=$(echo "$total + $seconds" | bc)
    echo "$commit $stage: $seconds s" >&2
    json="$json\"$stage\": $seconds, "
  done
  rm -rf "$clone"
  echo "$json\"total\": $total}"
}

before=$(run_commit "$BEFORE")
after=$(run_commit "$AFTER")
{
  echo "  $before,"
  echo "  $after,"
  echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"cores\": $(nproc),"
  echo "  \"load_at_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\""
  echo "}"
} >> "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
python - "$OUT" "$BEFORE" "$AFTER" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
before, after = result[sys.argv[2]], result[sys.argv[3]]
print(f"before {sys.argv[2]}: {before['total']:.1f} s; after {sys.argv[3]}: {after['total']:.1f} s; "
      f"ratio {after['total'] / before['total']:.2f}x")
same = [s for s in before if s in after and s != "total"]
shared = sum(after[s] for s in same)
print(f"over the stages both have ({', '.join(same)}): {shared:.1f} s vs {before['total']:.1f} s, "
      f"ratio {shared / before['total']:.2f}x")
PY
