#!/usr/bin/env bash
# CUDA face crops on this machine's GPU: checks them against the CPU kernel (max abs diff
# <= 1e-4, exit 1 otherwise) and measures crops per second at batches of 1, 64 and 1024.
#
#   bash bench/gpu_check.sh [--quick] [--json out.json]
#
# Needs python3 with numpy, numba (numba-cuda where installed), cython and a C compiler; none
# of the server's other dependencies. PYTHON picks another interpreter. With no CUDA device it
# prints "no CUDA device" and exits 0. With NUMBA_ENABLE_CUDASIM=1 and --quick it runs, tiny,
# on Numba's CUDA simulator (no GPU; the timings mean nothing).
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
