#!/usr/bin/env bash
# The GPU recording of the streaming benchmarks, as one script: the 0.6B architecture (random weights), fp32 then
# bf16, the concurrency search up to 2048 streams (goal on one H200: >= 1,120 streams at 320 ms, p99 step latency
# below the chunk and flat from 100 streams up), then the engine against NeMo's loop and serving pipeline.
# Needs data/ (demo stages 1-2: STOP_STAGE=2 bash scripts/run_demo.sh). Writes logs and JSON under $OUT.
set -euo pipefail
OUT=${OUT:-exp/bench/gpu}
mkdir -p "$OUT"
MODEL=random:nemotron_streaming_0.6b
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for dtype in bf16 fp32; do
  python -m scripts.bench_concurrency --model $MODEL --device cuda --dtype $dtype --max-streams 2048 \
      --lookaheads 68,3 70,0 70,13 --seconds 8 --long-seconds 60 --out "$OUT/concurrency_$dtype.json" \
      2>&1 | tee "$OUT/concurrency_$dtype.log"
done
python -m scripts.bench_streaming --model $MODEL --device cuda --dtype bf16 --utterances 64 --batch-size 64 \
    --lookaheads 70,0 70,13 --methods a b d e --flops-seconds 4 2>&1 | tee "$OUT/streaming_bf16.log"
