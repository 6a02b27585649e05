#!/usr/bin/env bash
# The retrieval-quality study: one DVC experiment per configuration, each reproducible from the
# committed params.yaml with the `dvc exp run -S ...` line it prints. Run from the repository root
# after `dvc repro` (the baseline); takes about 45 minutes on 2 cores. It resets params.yaml
# to the committed version before each experiment, so commit any edits first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

run() {  # run NAME PARAM=VALUE...
  local name=$1; shift
  local args=()
  for setting in "$@"; do args+=(-S "$setting"); done
  git checkout -q -- params.yaml  # every experiment starts from the committed defaults
  echo "=== $name: dvc exp run ${args[*]}"
  /usr/bin/time -f "$name wall %e s" dvc exp run --name "$name" "${args[@]}" >"study/logs/$name.log" 2>&1 \
    || echo "$name FAILED (see study/logs/$name.log)"
  tail -1 "study/logs/$name.log"
}

mkdir -p study/logs
run reference-random-triplets train.loss=triplet train.mining=random train.margin=0.2 features.augmented_views=0
run triplet-semihard train.loss=triplet train.mining=semihard train.margin=0.2
run triplet-batch-hard train.loss=triplet train.mining=batch_hard train.margin=0.2
run triplet-batch-hard-soft train.loss=triplet_soft train.mining=batch_hard
run multi-similarity train.loss=multi_similarity
run proxy-default
run proxy-no-regression-selection train.selection=no_regression train.learning_rate=0.0003 train.eval_every=50
run proxy-margin-0.2 train.margin=0.2
run proxy-margin-0.0 train.margin=0.0
run proxy-pk-32x2 train.classes_per_batch=32 train.images_per_class=2
run proxy-pk-8x8 train.classes_per_batch=8 train.images_per_class=8
run proxy-concat model.embedding=concat
run proxy-no-augmentation features.augmented_views=0
run proxy-augmentation-2 features.augmented_views=2
run proxy-stretch backbone.resize_mode=stretch
run proxy-160px backbone.image_size=160
run proxy-288px backbone.image_size=288
run proxy-lite2-260px backbone.name=efficientnet_lite2 backbone.image_size=260
run proxy-finetune-5-blocks train.finetune_blocks=5 features.augmented_views=3 train.eval_every=250
run proxy-finetune-8-blocks train.finetune_blocks=8 features.augmented_views=3 train.eval_every=250
git checkout -q -- params.yaml
python study/table.py > study/results.md
echo "wrote study/results.md"
