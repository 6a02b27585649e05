#!/usr/bin/env bash
# Every benchmark in turn, then the results table (bench/README.md shows it).
#
#   bench/run_all.sh            # full runs: about 14 min on an idle 2-core machine, 23 min on a busy one
#   bench/run_all.sh --quick    # smoke runs: about 4 min
#
# Run by hand on an otherwise idle machine; each benchmark prints its figures and writes
# bench/results/<name>.json. The pipeline benchmark clones HEAD beside the repository and runs dvc repro there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
QUICK=()
[[ "${1:-}" == "--quick" ]] && QUICK=(--quick)

lscpu | grep -E "^(Model name|CPU\(s\)):" || true
for bench in latency throughput memory index_scaling; do
  echo; echo "=== $bench ==="
  started=$(date +%s)
  python -m "bench.$bench" "${QUICK[@]}"
  echo "($bench took $(( $(date +%s) - started )) s)"
done
echo; echo "=== pipeline_time ==="
started=$(date +%s)
bench/pipeline_time.sh "${QUICK[@]}"
echo "(pipeline_time took $(( $(date +%s) - started )) s)"
echo
python -m bench.report "${QUICK[@]}"
