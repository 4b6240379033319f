#!/usr/bin/env bash
# The GPU recording of the streaming benchmarks, as one script: the 0.6B architecture (random weights, blank logit
# calibrated on the streamed speech), the GPU tests of the engine (CUDA-graph decoding with a shrinking batch), the
# engine's chunk step against NeMo's step and the weight-read floor in fp32, the concurrency search in bf16 and fp32
# up to 2048 streams (goal on one H200: >= 1,120 streams at 320 ms, p99 step latency below the chunk and flat from
# 100 streams up), then the engine against NeMo's loop and serving pipeline in bf16.
# Needs data/ (demo stages 1-2: STOP_STAGE=2 bash scripts/run_demo.sh). Writes logs and JSON under $OUT.
set -euo pipefail
OUT=${OUT:-exp/bench/gpu}
mkdir -p "$OUT"
MODEL=random:nemotron_streaming_0.6b
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -m pytest -q -m gpu tests/test_streaming_step.py 2>&1 | tee "$OUT/tests_gpu.log"
for lookahead in 70,0 70,13; do
  python -m scripts.profile_streaming_step --model $MODEL --device cuda --streams 64 --lookahead $lookahead \
      --seconds 4 2>&1 | tee "$OUT/profile_${lookahead/,/_}.log"
done
for dtype in bf16 fp32; do
  python -m scripts.bench_concurrency --model $MODEL --device cuda --dtype $dtype --max-streams 2048 \
      --lookaheads 68,3 70,0 70,13 --seconds 8 --long-seconds 60 --out "$OUT/concurrency_$dtype.json" \
      2>&1 | tee "$OUT/concurrency_$dtype.log"
done
python -m scripts.bench_streaming --model $MODEL --device cuda --dtype bf16 --utterances 64 --batch-size 64 \
    --lookaheads 70,0 70,13 --methods a b d e --flops-seconds 4 2>&1 | tee "$OUT/streaming_bf16.log"
