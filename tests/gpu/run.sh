#!/usr/bin/env bash
# The GPU run of gradtest's device path: builds the package with its CUDA library, runs the GPU
# tests (tests/gpu), the emulation tests and the GPU benchmarks, then prints a short summary.
# Meant for a machine with a GPU, nvcc, numpy, pytest, CuPy and PyTorch but no internet; the
# three dependencies it lacks (optree, capstone, scipy-openblas32) come as wheels in
# tests/gpu/wheels/, filled beforehand where pip works by tests/gpu/fetch_wheels.sh (git-ignored;
# with the device tool: carry ["tests/gpu/wheels"], command "bash tests/gpu/run.sh").
# Within about 8 minutes: the build about 1-2, the tests 2-3, the benchmarks 2-3.
# Logs go to $OUT (or /tmp/gradtest_gpu) as well.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/gradtest_gpu}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
status=0

echo "== machine"
nvidia-smi -L 2>&1 | head -4
nvcc --version 2>&1 | tail -1
$PY -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"

echo "== dependencies from tests/gpu/wheels"
if ls tests/gpu/wheels/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gradtest_site \
        tests/gpu/wheels/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/gradtest_site
else
    echo "no wheels in tests/gpu/wheels (run tests/gpu/fetch_wheels.sh where pip works); using what is installed"
fi

echo "== build (GRADTEST_CUDA=1: fails without nvcc)"
start=$(date +%s)
if ! GRADTEST_CUDA=1 GRADTEST_STRICT=1 $PY setup.py -q build_ext --inplace --force >"$LOGS/build.log" 2>&1; then
    tail -40 "$LOGS/build.log"
    echo "SUMMARY: build failed"
    exit 1
fi
echo "built in $(( $(date +%s) - start )) s"
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import gradtest.cuda as c; print('gradtest.cuda.available():', c.available(), '-', c.unavailable_reason() or 'device build loaded')"

echo "== GPU tests and emulation tests"
timeout 300 $PY -m pytest -q -p no:cacheprovider -rs tests/gpu tests/test_cuda_emulation.py \
    tests/test_cuda_reverse_emulation.py 2>&1 | tee "$LOGS/pytest.log" | tail -25
tests_rc=${PIPESTATUS[0]}
[ "$tests_rc" -eq 0 ] || status=1

echo "== GPU benchmarks"
timeout 240 $PY benchmarks/bench_cuda.py --json "$LOGS/bench_cuda.json" 2>&1 | tee "$LOGS/bench.log"
bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" -eq 0 ] || status=1

echo "== SUMMARY"
grep -E "passed|failed|error" "$LOGS/pytest.log" | tail -1
if grep -q "no GPU:" "$LOGS/pytest.log"; then echo "WARNING: the GPU tests skipped (no GPU visible): only the emulation ran"; status=1; fi
grep -E "^(device|batched)" "$LOGS/bench.log" || echo "no benchmark ratios (see $LOGS/bench.log)"
echo "tests rc=$tests_rc, benchmarks rc=$bench_rc"
exit $status
