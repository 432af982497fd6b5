#!/usr/bin/env bash
# Issue 5's GPU figures on a lent device machine, in one call: end to end single stream (both
# models, torch and ONNX Runtime), pipelined batch throughput, the CPU baseline of the same host, and
# a short DDP training run (torchrun, one process per GPU, NCCL; also on one GPU, a world of one),
# and, where the machine has Ray, that run's predictions on Ray with GPU actors.
#
# The machine has PyTorch, timm, onnx and onnxruntime (CPU provider only) but not PyAV: carry its
# wheel. Once, here, in the repo's root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl av==18.1.0
# Then: device run, command "bash bench/gpu.sh", carry [".whl"], timeout_s 540.
# Results land in $OUT (predict-cuda.json, pipeline-cuda.json, predict-cpu.json, logs, ddp-cuda.log): 8 files,
# as many as a device run brings back.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/shortvid-gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, av, onnxruntime; print('torch', torch.__version__, 'av', av.__version__, 'ort', onnxruntime.__version__, onnxruntime.get_available_providers())" | tee -a "$OUT/gpu.txt"
cd bench
timeout 240 python3 predict.py --videos 16 --repeats 3 --device cuda --backends torch,onnx \
  --json "$OUT/predict-cuda.json" 2>&1 | tee "$OUT/predict-cuda.log"
timeout 120 python3 pipeline.py --videos 48 --repeats 2 --device cuda --json "$OUT/pipeline-cuda.json" 2>&1 \
  | tee "$OUT/pipeline-cuda.log"
timeout 120 python3 predict.py --videos 16 --repeats 1 --device cpu --json "$OUT/predict-cpu.json" 2>&1 \
  | tee "$OUT/predict-cpu.log"
# DDP: torchrun with one process per GPU on a generated tiny corpus, 2 epochs; the log ends with the
# run's metrics.jsonl (train_seconds: an epoch's training steps alone).
cd ..
GPUS=$(nvidia-smi -L | wc -l)
DDP=/tmp/shortvid-ddp
rm -rf "$DDP"
{
  timeout 120 python3 -m shortvid synth "$DDP/corpus" --preset tiny --videos 480 --quiet
  timeout 120 python3 -m shortvid extract "$DDP/corpus" --out "$DDP/cache" --size 128 --quiet
  echo "torchrun --nproc-per-node $GPUS"
  timeout 300 python3 -m torch.distributed.run --standalone --nproc-per-node "$GPUS" -m shortvid train --config tiny \
    "data.dataset=$DDP/corpus" "data.cache=$DDP/cache" "out=$DDP/run" progress=false device=cuda optim.epochs=2 \
    data.batch_size=32 data.workers=4
  cat "$DDP/run/metrics.jsonl"
  # Ray: the trained run over the corpus, one actor per half GPU (the device machine may have no Ray:
  # its wheel is larger than a device run carries).
  if python3 -c "import ray" 2>/dev/null; then
    find "$DDP/corpus/videos" -name '*.mp4' > "$DDP/videos.txt"
    timeout 300 python3 -m shortvid predict "$DDP/run" --manifest "$DDP/videos.txt" --engine ray \
      --gpus-per-actor 0.5 --cpus-per-actor 1 --batch-size 16 --device cuda --out "$DDP/rows" --format jsonl
  else
    echo "ray is not installed here: the Ray GPU run is skipped"
  fi
} 2>&1 | tee "$OUT/ddp-cuda.log"
