#!/usr/bin/env bash
# The GPU run of gradtest's device path: builds the package with its CUDA library, runs the GPU
# tests (tests/gpu), the emulation tests and the GPU benchmarks, then prints a short summary.
# Meant for a machine with a GPU, nvcc, numpy, pytest, CuPy and PyTorch but no internet; the
# three dependencies it lacks (optree, capstone, scipy-openblas32) come as wheels in
# tests/gpu/wheels/, filled beforehand where pip works by tests/gpu/fetch_wheels.sh (git-ignored;
# with the device tool: carry ["tests/gpu/wheels"], command "bash tests/gpu/run.sh").
#
# Every part runs under its own time limit (timeout), and within a total budget
# (GRADTEST_GPU_BUDGET seconds, default 450, under 8 minutes): a part that fails or times out is
# reported and the next part still runs. If the CUDA build fails, the C extensions are built
# without it so that the emulation tests still run. The summary at the end lists each part's
# status and time, the pytest totals and the benchmark ratios; the exit status is 0 only when
# every part passed. Logs go to $OUT (or /tmp/gradtest_gpu).
set -u -o pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/gradtest_gpu}
BUDGET=${GRADTEST_GPU_BUDGET:-450}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
SUMMARY=()
FAILED=()

remaining() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# part NAME LIMIT CMD...: runs CMD under min(LIMIT, what is left of the budget), output to
# $LOGS/NAME.log and its last lines to the screen; records the status in the summary
part() {
    local name=$1 limit=$2
    shift 2
    local left
    left=$(remaining)
    if [ "$left" -lt 15 ]; then
        SUMMARY+=("$(printf '%-22s %-8s %5s s  (no time left in the %s s budget)' "$name" SKIPPED 0 "$BUDGET")")
        FAILED+=("$name")
        echo "== $name: skipped, the budget is spent"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit $limit s)"
    local start rc status
    start=$(date +%s)
    # through bash -c so that a part can be one of the functions below (exported)
    timeout -k 10 "$limit" bash -c '"$@"' part "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    tail -n 25 "$LOGS/$name.log"
    case $rc in
        0) status=ok ;;
        124|137) status=TIMEOUT ;;
        *) status="FAIL($rc)" ;;
    esac
    SUMMARY+=("$(printf '%-22s %-8s %5s s' "$name" "$status" $(( $(date +%s) - start )))")
    [ "$rc" -eq 0 ] || FAILED+=("$name")
    return $rc
}

machine() {
    nvidia-smi -L 2>&1 | head -4
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
    nvcc --version 2>&1 | tail -1
    $PY -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"
    $PY -c "import cupy; print('cupy', cupy.__version__)" 2>&1 | tail -1
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1
}

wheels() {
    if ls tests/gpu/wheels/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gradtest_site tests/gpu/wheels/*.whl
    else
        echo "no wheels in tests/gpu/wheels (run tests/gpu/fetch_wheels.sh where pip works); using what is installed"
    fi
}

build_cuda() { GRADTEST_CUDA=1 GRADTEST_STRICT=1 $PY setup.py -q build_ext --inplace --force; }
build_host() { GRADTEST_CUDA=0 GRADTEST_STRICT=1 $PY setup.py -q build_ext --inplace --force; }

probe() {
    $PY -c "import gradtest, gradtest.cuda as c; print('gradtest from', gradtest.__file__); \
print('gradtest.cuda.available():', c.available(), '-', c.unavailable_reason() or 'the device build is loaded')"
}

export PY
export -f machine wheels build_cuda build_host probe
echo "gradtest GPU run: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, budget $BUDGET s, logs in $LOGS"
part machine 30 machine
part wheels 60 wheels
[ -d /tmp/gradtest_site ] && export PYTHONPATH=/tmp/gradtest_site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
if ! part build-cuda 200 build_cuda; then
    grep -iE "error|warning" "$LOGS/build-cuda.log" | head -20
    part build-host 120 build_host
fi
part probe 60 probe
part gpu-tests 150 $PY -m pytest -q -p no:cacheprovider -rs tests/gpu
part emulation-tests 90 $PY -m pytest -q -p no:cacheprovider tests/test_cuda_emulation.py \
    tests/test_cuda_reverse_emulation.py
if ! part bench 100 $PY benchmarks/bench_cuda.py --json "$LOGS/bench_cuda.json"; then
    part bench-quick 60 $PY benchmarks/bench_cuda.py --quick --json "$LOGS/bench_cuda_quick.json"
fi

echo
echo "== SUMMARY ($(( $(date +%s) - T0 )) s of the $BUDGET s budget)"
printf '%s\n' "${SUMMARY[@]}"
for log in gpu-tests emulation-tests; do
    [ -f "$LOGS/$log.log" ] && echo "$log: $(grep -E '^[0-9]+ (passed|failed|errors?|skipped)|[0-9]+ passed' "$LOGS/$log.log" | tail -1)"
done
if [ -f "$LOGS/gpu-tests.log" ] && grep -q "no GPU:" "$LOGS/gpu-tests.log"; then
    echo "WARNING: the GPU tests skipped (no GPU visible): only the emulation ran"
    FAILED+=("gpu-visible")
fi
ratios=0
for log in bench bench-quick; do
    if [ -f "$LOGS/$log.log" ]; then
        grep -vE "^bench_cuda:" "$LOGS/$log.log" | grep -E "target" | sed "s/^/$log: /"
        ratios=$(( ratios + $(grep -vE "^bench_cuda:" "$LOGS/$log.log" | grep -cE "target") ))
    fi
done
[ "$ratios" -gt 0 ] || echo "no benchmark ratios (see $LOGS/bench.log)"
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "RESULT: ok"
    exit 0
fi
echo "RESULT: FAILED (${FAILED[*]})"
exit 1
