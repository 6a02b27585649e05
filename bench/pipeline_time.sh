#!/usr/bin/env bash
# Pipeline time: a full `dvc repro` of the default run in a fresh clone, then a no-op `dvc repro`.
#
#   bench/pipeline_time.sh            # the committed params.yaml on the shared 5k sample (about 5 min)
#   bench/pipeline_time.sh --quick    # a 300-image subset, 50 training steps, no augmented views: a smoke run
#
# The clone is made beside this repository (../bench_clone_<pid>) so that params.yaml's
# ../shared/data/fashion-5k resolves as it does here; it is removed afterwards. Only committed files are
# cloned: the run measures HEAD. Results: bench/results/pipeline_time[_quick].json.
set -euo pipefail

MAIN="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
CLONE="$(dirname "$MAIN")/bench_clone_$$"
export PATH="$MAIN/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
trap 'rm -rf "$CLONE"' EXIT

git clone -q "$MAIN" "$CLONE"
cd "$CLONE"
if [[ $QUICK == 1 ]]; then
  python - <<'PY'
import yaml
params = yaml.safe_load(open("params.yaml"))
params["subset"]["size"] = 300
params["train"]["steps"] = 50
params["features"]["augmented_views"] = 0
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
fi

seconds() { date +%s.%N; }
log="$CLONE/.bench_repro.log"
start=$(seconds)
dvc repro >"$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
full=$(echo "$(seconds) - $start" | bc)
grep -E "^(features|trained|embedded|flat|ivf|hnsw| *trained|pretrained|Running stage)" "$log" || true
start=$(seconds)
dvc repro >"$log.noop" 2>&1 || { tail -n 40 "$log.noop"; exit 1; }
noop=$(echo "$(seconds) - $start" | bc)
tail -n 3 "$log.noop"
stages=$(grep -c "^Running stage" "$log" || true)

cd "$MAIN"
python - "$full" "$noop" "$stages" "$QUICK" "$(git -C "$MAIN" rev-parse --short HEAD)" <<'PY'
import sys

from bench.common import print_table, versions, write_results

full, noop, stages, quick, commit = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
rows = [{"run": "full dvc repro (fresh clone)", "seconds": round(full, 1), "target_s": 360, "met": full <= 360},
        {"run": "no-op dvc repro", "seconds": round(noop, 2), "target_s": 10, "met": noop <= 10}]
print()
print_table(rows)
sys.argv = ["bench/pipeline_time.sh"] + (["--quick"] if quick else [])
write_results("pipeline_time_quick" if quick else "pipeline_time", {
    "commit": commit, "stages_run": stages, "rows": rows, "versions": versions("dvc")})
PY
