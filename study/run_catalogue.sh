#!/usr/bin/env bash
# Another catalogue's run: the committed pipeline (HEAD) with a params file's overrides, in a scratch copy, so
# this workspace's pinned build is untouched. Runs every stage under `nice`, times each, and copies the
# metrics into metrics/NAME/ (same keys as metrics/metrics.json, pretrained baseline included).
#   bash study/run_catalogue.sh params-19k.yaml fashion-19k [SCRATCH]   # default SCRATCH /tmp/lookalike-NAME,
#                                       # kept afterwards (study/learning_curve.py and study/fusion.py reuse its
#                                       # cached features)
#   bash study/run_catalogue.sh params-grocery.yaml grocery-store       # then python -m study.iconic
# Overrides update params.yaml section by section; a `similarity` section replaces the default's modes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OVERRIDES=${1:?usage: run_catalogue.sh PARAMS_OVERRIDES NAME [SCRATCH]}
NAME=${2:?usage: run_catalogue.sh PARAMS_OVERRIDES NAME [SCRATCH]}
SCRATCH=${3:-/tmp/lookalike-$NAME}
export PATH="$ROOT/.venv/bin:$PATH"
CATALOGUE=$(realpath "$(python -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['data']['catalogue_dir'])" "$OVERRIDES")")
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
git archive HEAD | tar -x -C "$SCRATCH"
cd "$SCRATCH"
python - "$CATALOGUE" "$OVERRIDES" <<'PY'
import sys
import yaml
from lookalike.params import with_overrides
params = with_overrides(yaml.safe_load(open("params.yaml")), yaml.safe_load(open(sys.argv[2])))
params["data"]["catalogue_dir"] = sys.argv[1]
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
git init -q && git add -A && git -c user.name=run_catalogue -c user.email=run_catalogue@localhost commit -qm "HEAD + $OVERRIDES"
rm -f dvc.lock
echo "stage,seconds" > stage_seconds.csv
for stage in sample_subset features train embed text index evaluate; do
  start=$(date +%s.%N)
  nice -n 15 dvc repro --single-item "$stage" > "log_$stage.txt" 2>&1 || { tail -20 "log_$stage.txt"; exit 1; }
  seconds=$(python -c "import time; print(round(time.time() - $start, 1))")
  echo "$stage,$seconds" >> stage_seconds.csv
  echo "$stage: $seconds s"; grep -E "^(catalogue|images|subset|features|trained|kept|early|  *trained|  *pretrained)" "log_$stage.txt" || true
done
mkdir -p "$ROOT/metrics/$NAME"
cp metrics/metrics.json metrics/per_label.csv metrics/features.json metrics/train.json metrics/text.json stage_seconds.csv \
   "$ROOT/metrics/$NAME/"
python - "$ROOT/metrics/$NAME/subset_summary.json" <<'PY'
import json
import sys
report = json.load(open("data/subset_report.json"))
catalogue = {k: v for k, v in report["catalogue"].items() if k.startswith("n_") or k in ("csv_rows", "items",
                                                                                         "empty_images",
                                                                                         "unreadable_images")}
json.dump({"catalogue": catalogue, "subset": {k: report["subset"][k] for k in ("rows", "labels", "splits")}},
          open(sys.argv[1], "w"), indent=2)
PY
echo "wrote $ROOT/metrics/$NAME/ (scratch kept in $SCRATCH)"
