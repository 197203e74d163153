#!/bin/sh
# The GPU acceptance check: about 8 minutes on one H100. From the repository root, after
# `pip install -r requirements.txt`:
#
#   sh benchmarks/gpu_check.sh
#
# GPU_CHECK_CIFAR=DIR  use DIR/cifar-10-batches-py instead of downloading CIFAR-10 (download: true)
# GPU_CHECK_DIR=DIR    where the experiments (and the download) go; default experiments/gpu_check
# Anything after the script's name goes to benchmarks/gpu_check.py (e.g. --skip ddp).
#
# 1. the CUDA-marked tests: the memory-efficient layers' fp16 gradients on CUDA, an fp16 train + exact
#    resume through main.py (pytest -m cuda);
# 2. benchmarks/gpu_check.py: CondenseNet-86, CondenseNetV2-110 and ReXNet-1.0 on CIFAR-10 under fp16 +
#    channels_last (ReXNet also compiled) with host syncs in the training step as errors, resume,
#    validate, convert; a 2-process DDP run where 2+ GPUs exist; export with onnx_int8 on the GPU; ONE
#    table of training images/s and peak GPU memory beside timm's rexnet_100.
# The exit status is non-zero when anything failed.
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python}
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
case $? in
    0) ;;
    3) echo "gpu_check: no CUDA device is visible to torch; run it on a machine with a GPU" >&2; exit 2 ;;
    *) echo "gpu_check: $PY cannot import torch; run pip install -r requirements.txt (or set PYTHON)" >&2; exit 2 ;;
esac
WORK=${GPU_CHECK_DIR:-experiments/gpu_check}
failed=""
"$PY" -m pytest -q -m cuda tests/graphs/test_amp_layers.py tests/engine/test_switch_matrix.py || failed="$failed pytest"
if [ -n "${GPU_CHECK_CIFAR:-}" ]; then
    "$PY" benchmarks/gpu_check.py --work "$WORK" --cifar "$GPU_CHECK_CIFAR" "$@" || failed="$failed gpu_check.py"
else
    "$PY" benchmarks/gpu_check.py --work "$WORK" "$@" || failed="$failed gpu_check.py"
fi
if [ -n "$failed" ]; then
    echo "gpu_check: FAILED ($failed )" >&2
    exit 1
fi
echo "gpu_check: all passed"
