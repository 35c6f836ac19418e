#!/usr/bin/env bash
# The GPU paths on this machine's GPU, each against its CPU reference:
# 1. CUDA face crops against the CPU kernel (max abs diff <= 1e-4), crops/s at batch 1, 64, 1024;
# 2. the converted models (.models, from `make models`) on every GPU backend that can run
#    here (TensorRT, ONNX Runtime CUDA, torch CUDA) against ONNX Runtime on the CPU (max abs
#    diff <= 1e-3), faces/s at batch 1, 64 and 256; a backend that cannot run is listed with
#    the reason. Exits 1 when any check fails.
#
#   bash bench/gpu_check.sh [--quick] [--json out.json] [--models DIR]
#
# Needs python3 with numpy, numba (numba-cuda where installed), cython, a C compiler and
# onnxruntime; torch and onnx for the torch backend, tensorrt for TensorRT. PYTHON picks
# another interpreter. With no CUDA device it prints "no CUDA device" and exits 0. With
# NUMBA_ENABLE_CUDASIM=1 and --quick it runs, tiny, on Numba's CUDA simulator (no GPU; the
# timings mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

# The CPU reference of the comparison is the Cython kernel: build it in place (numpy and
# cython only), quietly unless the build fails.
if ! build_log="$("$PY" setup.py -q build_ext --inplace 2>&1)"; then
  echo "$build_log" >&2
  echo "gpu_check: building rtserver/kernels/frame.pyx failed" >&2
  exit 1
fi

exec "$PY" -m bench.gpu_check "$@"
