#!/usr/bin/env bash
# The two goals measured on SmolLM2-135M-Instruct (issue 25), about 6 minutes on an H100: the 400 train / 50
# validation real records of `tc3-prep --example --val-fraction 0.14`; smollm2-recall and smollm2-describe trained
# on them (and smollm2-describe with kinds=null, review_quotes included, for the invented-attribution figure); each
# scored against the untouched model asked in English with tc3-eval --modes at 512 new tokens; then
# benches/smollm2_eval.py writes benches/results/smollm2-eval/summary.json (targets checked) and fills
# invented_attribution_share in benches/results/content-kinds.json.
#   scripts/smollm2_goals.sh BASE_DIR [WORK_DIR]     # BASE_DIR: scripts/smollm2_local.py's output
# N (50), MAX_NEW (512), BATCH (50: all titles in one batch), RESULTS (benches/results) override; TRAIN_EXTRA adds
# key=value overrides to every training run (the CPU test: max_steps=2). A rerun keeps trained runs and cached answers.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1 WORK=${2:-runs/smollm2-goals} N=${N:-50} MAX_NEW=${MAX_NEW:-512} BATCH=${BATCH:-50} RESULTS=${RESULTS:-benches/results}
PREP=$WORK/prep
[ -f "$PREP/stats.json" ] || python -m tc3.cli.prep --example -o "$PREP" --val-fraction 0.14 --force -q
train() {  # name config [key=value ...]
    local name=$1 config=$2
    shift 2
    # shellcheck disable=SC2086 # TRAIN_EXTRA holds overrides
    [ -f "$WORK/$name/adapter_model.safetensors" ] || python -m tc3.cli.train --config "$config" model="$BASE" \
        data="$PREP" output_dir="$WORK/$name" "$@" ${TRAIN_EXTRA:-}
}
train recall smollm2-recall
train describe smollm2-describe
train describe-all-kinds smollm2-describe kinds=null grounded_kinds=null
evaluate() {  # name modes
    python -m tc3.cli.eval --model "$WORK/$1" --baseline "$BASE" --data "$PREP" --modes "$2" --n "$N" --seed 3407 \
        --max-new-tokens "$MAX_NEW" --batch-size "$BATCH" --baseline-instruction en --out "$WORK/eval-$1"
}
evaluate recall seen
evaluate describe unseen,grounded
evaluate describe-all-kinds unseen
python benches/smollm2_eval.py --recall "$WORK/eval-recall" --describe "$WORK/eval-describe" \
    --unfiltered "$WORK/eval-describe-all-kinds" --out "$RESULTS/smollm2-eval" \
    --content-kinds "$RESULTS/content-kinds.json"
