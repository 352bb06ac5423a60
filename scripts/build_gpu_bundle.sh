#!/usr/bin/env bash
# Build .bundle/tc3-gpu-site.tar.xz: the wheels the lent GPU machine lacks (it has no network), unzipped into one
# folder `gpusite/` that goes on PYTHONPATH there, trimmed, packed with xz. Fails if the archive passes 60 MiB.
#   scripts/build_gpu_bundle.sh            # about 1-3 minutes here (downloads ~250 MB of wheels once, into .whl/)
# Versions: unsloth/unsloth_zoo, trl and datasets as pyproject.toml pins them ([gpu], [train]); bitsandbytes the
# one seen working with the device's torch 2.11 + CUDA 13. The device already has torch, transformers, peft,
# accelerate, pyarrow, tokenizers, safetensors, huggingface_hub, numpy, pandas, etc.: none of those is bundled.
# Uses only pip's ordinary client (pip download); both .whl/ and .bundle/ are ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=${WHL:-.whl/gpu}
OUT_DIR=.bundle
ARCHIVE=${ARCHIVE:-$OUT_DIR/tc3-gpu-site.tar.xz}
LIMIT=$((60 * 1024 * 1024))
PINS=(
  unsloth==2026.10.9 unsloth_zoo==2026.10.9      # pyproject [gpu]
  bitsandbytes==0.50.2                            # [gpu] >=0.45; ships libbitsandbytes_cuda130.so
  trl==1.15.0 datasets==4.8.5                     # [train]: unsloth needs trl<=1.15, datasets<5
  dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 # datasets' own needs
  tyro==1.0.17 docstring-parser==0.18.0 shtab==1.13.0 typeguard==4.6.1   # unsloth_zoo / tyro
  cut-cross-entropy==25.1.1 torchao==0.18.0 msgspec==0.22.0 diffusers==0.42.1 json5==0.17.3
  nest-asyncio==1.6.0 structlog==26.1.0 gguf==0.19.0
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1    # to run the gpu tests there
)
mkdir -p "$WHL" "$OUT_DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 -d "$WHL" "${PINS[@]}"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
SITE=$STAGE/gpusite
mkdir -p "$SITE"
for pin in "${PINS[@]}"; do  # exactly the pinned files, even if .whl/ holds other versions
  name=${pin%%==*}; version=${pin#*==}
  wheel=$(ls "$WHL"/$(echo "$name" | tr '-' '_')-"$version"-*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || { echo "build_gpu_bundle: no wheel for $pin in $WHL" >&2; exit 1; }
  python3 -m zipfile -e "$wheel" "$SITE"
done
# Two cuts keep the archive under the limit: unsloth's studio web app (82 MB) and every bitsandbytes library but
# CUDA 13's and the CPU one (the device has CUDA 13: torch 2.11+cu130).
rm -rf "$SITE/studio" "$SITE/unsloth/studio"
find "$SITE/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cuda130.so' \
  ! -name 'libbitsandbytes_cpu.so' -delete
find "$SITE" -name '__pycache__' -type d -prune -exec rm -rf {} +
echo "build_gpu_bundle: $(du -sh "$SITE" | cut -f1) unpacked"
tar -C "$STAGE" -cf - gpusite | xz -T0 -9 > "$ARCHIVE.tmp"
size=$(stat -c %s "$ARCHIVE.tmp")
if [ "$size" -gt "$LIMIT" ]; then
  rm -f "$ARCHIVE.tmp"
  echo "build_gpu_bundle: archive is $((size / 1048576)) MiB, over the 60 MiB limit" >&2
  exit 1
fi
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "build_gpu_bundle: wrote $ARCHIVE ($((size / 1048576)) MiB; on the device: tar -C /tmp -xJf $ARCHIVE)"
