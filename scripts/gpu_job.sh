#!/usr/bin/env bash
# One whole GPU job in one call of the lent machine: unpack the bundle, go offline, run, leave logs and a results JSON
# in $OUT. Everything it needs travels with the call:
#   carry: [".bundle", "python/tc3/_rust_clean.abi3.so"]
#   .bundle/tc3-gpu-site.tar.xz     scripts/build_gpu_bundle.sh
#   .bundle/tokenizer/              python benches/gpu/make_tokenizer.py .bundle/tokenizer
#
#   scripts/gpu_job.sh bench    # ~8-9 min: corpus + tc3-prep, bf16 rate, 8B-shaped model, the setups (QUEUE0/QUEUE1:
#                               # one queue a GPU, run side by side), profile
#   scripts/gpu_job.sh multigpu # ~6 min on 2 GPUs: 1 vs 2 GPUs, same global batch; a 2-GPU --resume (logs: /tmp/mglogs)
#   scripts/gpu_job.sh finish   # ~8 min: gpu tests; tc3-train + --resume, tc3-generate, 4-bit generation,
#                               # tc3-export and plain-transformers generation from the merged model
#   scripts/gpu_job.sh stage      # parks the carried GGUF pieces in /tmp (the GGUF is larger than one call carries)
#   scripts/gpu_job.sh questions  # ~8 min: SmolLM2-135M-Instruct from the GGUF, tc3-train with varied questions
#                                 # and context turns, tc3-eval --questions unseen, grounded vs ungrounded ROUGE-L
#   scripts/gpu_job.sh grounded-base   # ~4 min: the same grounded/ungrounded comparison for the untouched base
#     carry for both: .device/gguf-a (call 1, with .bundle), .device/gguf-b, .device/questions and .device/wheels
#     (call 2); they are made by scripts/questions_inputs.sh
# Each step reuses what an earlier call on the same (still warm) machine left in /tmp.
set -uo pipefail
JOB=${1:-bench}
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/tc3-gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log_$JOB.txt") 2>&1

# LOCAL=1: a dry run of a job on this machine's own packages (no bundle), with small sizes, before spending GPU time.
SITE=/tmp/gpusite
if [ -n "${LOCAL:-}" ]; then
  SITE=
elif [ ! -f $SITE/.unpacked ]; then
  tar -C /tmp -xJf .bundle/tc3-gpu-site.tar.xz && touch $SITE/.unpacked || { echo "bundle unpack failed"; exit 1; }
fi
export PYTHONPATH=$SITE:$ROOT/python PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 \
  HF_HUB_DISABLE_PROGRESS_BARS=1 HF_DATASETS_CACHE=/tmp/hf-datasets
PY=python3
MODEL=/tmp/llama3-8b-random
DATA=/tmp/prep
BENCH="$PY benches/gpu/train_bench.py"
stamp() { echo "== $(date -u +%T) [${SECONDS}s] $*"; }

corpus() {  # $1 records: the prep benchmark's synthetic trn.json (its first N records), cleaned by tc3-prep
  [ -f $DATA/stats.json ] && { stamp "corpus: reusing $DATA"; return 0; }
  local t0=$SECONDS
  $PY benches/gpu/make_corpus.py /tmp/trn.json --records "$1" || return 1
  local t1=$SECONDS
  $PY -m tc3.cli.prep /tmp/trn.json -o $DATA --threads "$(nproc)" --force -q || return 1
  rm -f /tmp/trn.json
  $PY - "$DATA/stats.json" $((t1 - t0)) $((SECONDS - t1)) >/tmp/corpus.json <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({"generator": "benches/gen_trn.py seed 3407 (parallel: benches/gpu/make_corpus.py)",
                  "records": s["records"], "bytes": s["bytes"], "train_examples": s["kept"]["train"],
                  "validation_examples": s["kept"]["validation"], "dropped": s["dropped"],
                  "generate_s": int(sys.argv[2]), "prep_s": int(sys.argv[3]), "prep_engine_s": s["seconds"]}))
EOF
  stamp "corpus: $(cat /tmp/corpus.json)"
}

model() {
  if [ ! -f $MODEL/config.json ]; then
    $BENCH build-model $MODEL --tokenizer .bundle/tokenizer >/tmp/model.json || return 1
  fi
  stamp "model: $(cat /tmp/model.json)"
}

stamp "job $JOB on $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
$PY -c "import torch, transformers, peft, trl, bitsandbytes; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'bnb', bitsandbytes.__version__)"

case $JOB in
bench)
  corpus "${RECORDS:-2248619}" &
  CORPUS=$!
  NGPU=$(nvidia-smi -L | wc -l)
  for g in $(seq 0 $((NGPU - 1))); do  # the rate of each GPU; MFU uses GPU 0's
    CUDA_VISIBLE_DEVICES=$g $BENCH matmul >"$OUT/matmul_gpu$g.json"; stamp "matmul GPU $g: $(cat "$OUT/matmul_gpu$g.json")"
  done
  cp "$OUT/matmul_gpu0.json" "$OUT/matmul.json"
  model || exit 1
  cp /tmp/model.json "$OUT/model.json"
  wait $CORPUS || { echo "corpus failed"; exit 1; }
  cp /tmp/corpus.json "$OUT/corpus.json"
  COMMON="--model $MODEL --data $DATA --out $OUT/setups.jsonl"
  # A run is LABEL=SETUP/BATCH[/key=value,key=value]; the label "tc3" is the shipped config, profiled.
  # QUEUE0, QUEUE1, ...: the runs of each GPU, one after another (GPUs in parallel, each setup alone on its GPU).
  run_spec() {
    local label=${1%%=*} spec=${1#*=} setup batch sets extra=()
    IFS=/ read -r setup batch sets <<<"$spec"
    for kv in ${sets//,/ }; do extra+=(--set "$kv"); done
    if [ "$label" = tc3 ]; then
      $BENCH setup "$setup" $COMMON --label "$label" --batch "$batch" --profile "$OUT/profile_tc3.txt" "${extra[@]}"
    elif [ "$setup" = course ]; then
      $BENCH setup course $COMMON --label "$label" --warmup 2 --steps 10 "${extra[@]}"
    else
      $BENCH setup "$setup" $COMMON --label "$label" --batch "$batch" --warmup 2 --steps 6 "${extra[@]}"
    fi
  }
  queue() {  # $1 GPU, then the runs
    local g=$1; shift
    for r in "$@"; do
      if [ $SECONDS -gt "${DEADLINE:-500}" ]; then stamp "GPU $g skipped $r: too little time left"; continue; fi
      stamp "GPU $g: run $r"
      CUDA_VISIBLE_DEVICES=$g run_spec "$r" >>"$OUT/log_gpu$g.txt" 2>&1 || stamp "GPU $g: $r failed (log_gpu$g.txt)"
    done
  }
  Q0=${QUEUE0:-"tc3=tc3/64 tc3-b128=tc3/128 tc3-b256=tc3/256 course=course/2 hf=hf/32"}
  Q1=${QUEUE1:-"tc3-sdpa=tc3/64/varlen_attention=false tc3-b32-nockpt=tc3/32/gradient_checkpointing=false tc3-b64-nockpt=tc3/64/gradient_checkpointing=false hf-tc3=hf-tc3/64"}
  gpu_tests() {  # TESTS: gpu tests of these files (e.g. tests/test_attention.py), on the last GPU after its queue
    [ -n "${TESTS:-}" ] || return 0
    stamp "gpu tests: $TESTS"
    CUDA_VISIBLE_DEVICES=$((NGPU - 1)) TC3_REALDATA=$ROOT/.bundle/amazon_titles_head500.json \
      $PY -m pytest $TESTS -m gpu -q -p no:cacheprovider >"$OUT/log_tests.txt" 2>&1
    echo "pytest exit code $?" >>"$OUT/log_tests.txt"; stamp "gpu tests: $(tail -2 "$OUT/log_tests.txt" | tr '\n' ' ')"
  }
  if [ "$NGPU" -gt 1 ]; then
    queue 0 $Q0 &
    (queue 1 $Q1; gpu_tests) &
    wait
  else
    queue 0 $Q0 $Q1
    gpu_tests
  fi
  stamp "summary"
  $PY benches/gpu/summarize.py "$OUT"
  ;;
multigpu)  # the same QLoRA run on 1 and on 2 GPUs (same global batch, data, steps), then a 2-GPU run stopped
           # after its first checkpoint and resumed; benches/gpu/multigpu_summary.py writes multigpu.json.
           # SIDE: a command run on GPU 1 while the 1-GPU run has GPU 0 (done before the 2-GPU runs start).
  corpus "${RECORDS:-200000}" &
  CORPUS=$!
  model || exit 1
  wait $CORPUS || { echo "corpus failed"; exit 1; }
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # NVLink multicast off
  STEPS=${STEPS:-16}
  RUNS_DIR=/tmp/runs-mg LOGS=/tmp/mglogs
  rm -rf $RUNS_DIR $LOGS; mkdir -p $LOGS
  ARGS=(--config llama3-8b-qlora model=$MODEL data=$DATA train_samples=8192 eval_samples=256
        max_steps=$STEPS logging_steps=4 eval_steps=$STEPS save_steps=$((STEPS / 2)) backend=unsloth)
  BATCH=$($PY -c "from tc3.config import load_config; print(load_config('llama3-8b-qlora').per_device_batch_size)")
  TORCHRUN=($PY -m torch.distributed.run --standalone --nproc_per_node 2 -m tc3.cli.train)
  CMDS=$LOGS/multigpu_commands.txt
  : >"$CMDS"
  if [ -n "${SIDE:-}" ]; then
    stamp "side job on GPU 1: $SIDE"
    (CUDA_VISIBLE_DEVICES=1 MODEL=$MODEL DATA=$DATA timeout "${SIDE_TIMEOUT:-200}" bash -c "$SIDE" >"$OUT/side.txt" 2>&1
     stamp "side job exit $?") &
    SIDE_PID=$!
  fi
  stamp "1 GPU, batch $BATCH"
  echo "CUDA_VISIBLE_DEVICES=0 tc3-train ${ARGS[*]} output_dir=RUN1" >>"$CMDS"
  CUDA_VISIBLE_DEVICES=0 $PY -m tc3.cli.train "${ARGS[@]}" output_dir=$RUNS_DIR/one \
    >$LOGS/1gpu.txt 2>&1 || { tail -30 $LOGS/1gpu.txt; exit 1; }
  cp $RUNS_DIR/one/train_log.jsonl "$OUT/train_log_one.jsonl"
  [ -n "${SIDE_PID:-}" ] && { stamp "waiting for the side job"; wait $SIDE_PID; }
  stamp "2 GPUs, $((BATCH / 2)) each"
  echo "torchrun --standalone --nproc_per_node 2 -m tc3.cli.train ${ARGS[*]} output_dir=RUN2 per_device_batch_size=$((BATCH / 2))" >>"$CMDS"
  "${TORCHRUN[@]}" "${ARGS[@]}" output_dir=$RUNS_DIR/two per_device_batch_size=$((BATCH / 2)) \
    >$LOGS/2gpu.txt 2>&1 || { tail -30 $LOGS/2gpu.txt; exit 1; }
  cp $RUNS_DIR/two/train_log.jsonl "$OUT/train_log_two.jsonl"
  stamp "2 GPUs, stopped after the checkpoint at step $((STEPS / 2)), then --resume"
  "${TORCHRUN[@]}" "${ARGS[@]}" output_dir=$RUNS_DIR/resumed per_device_batch_size=$((BATCH / 2)) >$LOGS/2gpu_cut.txt 2>&1 &
  CUT=$!
  until [ -f $RUNS_DIR/resumed/checkpoint-$((STEPS / 2))/tc3_checkpoint_complete ] || ! kill -0 $CUT 2>/dev/null; do
    sleep 1
  done
  pkill -INT -f "output_dir=$RUNS_DIR/resumed"; sleep 5; pkill -KILL -f "output_dir=$RUNS_DIR/resumed"
  wait $CUT; echo "interrupted run exit code $?"
  ls $RUNS_DIR/resumed
  echo "torchrun ... output_dir=RUN3 per_device_batch_size=$((BATCH / 2)) (stopped after checkpoint-$((STEPS / 2))), then the same with --resume" >>"$CMDS"
  "${TORCHRUN[@]}" "${ARGS[@]}" output_dir=$RUNS_DIR/resumed per_device_batch_size=$((BATCH / 2)) --resume \
    >$LOGS/2gpu_resume.txt 2>&1 || { tail -30 $LOGS/2gpu_resume.txt; exit 1; }
  cp $RUNS_DIR/resumed/train_log.jsonl "$OUT/train_log_resumed.jsonl"
  $PY benches/gpu/multigpu_summary.py "$OUT" $RUNS_DIR/one $RUNS_DIR/two $RUNS_DIR/resumed "$CMDS"
  ;;
finish)
  corpus "${RECORDS:-200000}" &
  CORPUS=$!
  model || exit 1
  wait $CORPUS || { echo "corpus failed"; exit 1; }
  stamp "gpu tests (in the background)"
  ($PY -m pytest tests -m gpu -q -p no:cacheprovider \
     >"$OUT/log_tests.txt" 2>&1; echo "pytest exit code $?" >>"$OUT/log_tests.txt") &
  TESTS=$!
  RUN=/tmp/runs/llama3-8b-resume
  rm -rf $RUN /tmp/merged
  TRAIN=(-m tc3.cli.train --config llama3-8b-qlora model=$MODEL data=$DATA output_dir=$RUN
         train_samples=1024 eval_samples=16 per_device_batch_size=16 logging_steps=1 eval_steps=2 save_steps=2)
  stamp "tc3-train, 4 steps, checkpoints every 2"
  $PY "${TRAIN[@]}" max_steps=4
  ls $RUN
  stamp "tc3-train --resume to step 6"
  $PY "${TRAIN[@]}" max_steps=6 --resume
  ls $RUN; cat $RUN/train_log.jsonl; cat $RUN/metrics.json
  stamp "tc3-generate (adapter over its base)"
  $PY -m tc3.cli.generate --model $RUN --title "The Prophet (Hardcover) by Kahlil Gibran" --max-new-tokens 32
  echo "tc3-generate exit code $?"
  stamp "adapter over the base in 4-bit"
  $PY benches/gpu/gen_check.py adapter-4bit $RUN
  stamp "tc3-export"
  $PY -m tc3.cli.export $RUN /tmp/merged && ls -la /tmp/merged
  stamp "plain transformers from the merged dir"
  $PY benches/gpu/gen_check.py merged /tmp/merged
  wait $TESTS
  stamp "gpu tests"; tail -5 "$OUT/log_tests.txt"
  ;;
stage)
  mkdir -p /tmp/gguf-parts && cp .device/gguf-*/* /tmp/gguf-parts/ && ls -la /tmp/gguf-parts
  ;;
questions)
  mkdir -p /tmp/gguf-parts && cp .device/gguf-*/* /tmp/gguf-parts/ 2>/dev/null
  for wheel in .device/wheels/*.whl; do  # rouge-score and nltk: the metrics, not in the machine's image
    [ -n "$SITE" ] && [ -f "$wheel" ] && $PY -m zipfile -e "$wheel" $SITE
  done
  Q=$ROOT/.device/questions
  BASE=/tmp/smollm2 RUN=/tmp/runs/smollm2-q
  if [ ! -f $BASE/config.json ]; then
    cat /tmp/gguf-parts/part-* >/tmp/smollm2.gguf
    (cd /tmp && sha256sum -c "$Q/gguf.sha256") || { echo "GGUF pieces incomplete"; exit 1; }
    $PY scripts/smollm2_local.py $BASE --gguf /tmp/smollm2.gguf || exit 1
  fi
  stamp "tc3-train: varied questions, half the examples with their record as context"
  rm -rf $RUN
  $PY -m tc3.cli.train --config tiny-cpu model=$BASE data=$Q/prep-real output_dir=$RUN \
      questions=varied context_fraction=0.5 train_samples=null eval_samples=null max_steps=null \
      epochs="${EPOCHS:-4}" per_device_batch_size=16 precision="${PRECISION:-bf16}" max_length_cap=1024 \
      logging_steps=5 eval_steps=20 save_steps=1000 ${TRAIN_ARGS:-} || exit 1
  cp $RUN/metrics.json "$OUT/train_metrics.json"
  stamp "tc3-eval --questions unseen"
  $PY -m tc3.cli.eval --model $RUN --baseline $BASE --data $Q/prep-real --questions unseen --n "${N:-200}" \
      --max-new-tokens 160 --batch-size 100 --out /tmp/eval-questions || exit 1
  cp /tmp/eval-questions/report.{json,md,png} "$OUT/"
  stamp "grounded vs ungrounded ROUGE-L on the retrieval benchmark's noisy queries"
  $PY benches/grounded_rouge.py --model $RUN --grounding $Q/grounding-1000.jsonl --grounding $Q/grounding-real.jsonl \
      --out "$OUT/grounded-rouge.json" --batch-size 125 --max-new-tokens 256 ${LIMIT:+--limit $LIMIT} || exit 1
  ;;
grounded-base)  # after questions, on the same warm machine: the untouched base model with the same records
  Q=$ROOT/.device/questions
  $PY benches/grounded_rouge.py --model /tmp/smollm2 --grounding $Q/grounding-1000.jsonl \
      --grounding $Q/grounding-real.jsonl --out "$OUT/grounded-rouge-base.json" --batch-size 250 --max-new-tokens 256 \
      ${LIMIT:+--limit $LIMIT}
  ;;
*)
  echo "usage: scripts/gpu_job.sh bench|multigpu|finish|stage|questions|grounded-base"; exit 2 ;;
esac
stamp "done"
