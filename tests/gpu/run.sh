#!/usr/bin/env bash
# The GPU run of gradtest's device path: builds the package with its CUDA library, runs the GPU
# tests (tests/gpu/test_gpu.py), the emulation tests and the GPU benchmarks, then prints a short
# summary. Meant for a machine with a GPU, nvcc, numpy, pytest, CuPy and PyTorch but no internet;
# the three dependencies it lacks (optree, capstone, scipy-openblas32) come as wheels in
# tests/gpu/wheels/, filled beforehand where pip works by tests/gpu/fetch_wheels.sh (git-ignored;
# with the device tool: carry ["tests/gpu/wheels"], command "bash tests/gpu/run.sh").
#
# Every part runs under its own time limit (timeout), and within a total budget
# (GRADTEST_GPU_BUDGET seconds, default 450, under 8 minutes): a part that fails or times out is
# reported and the next part still runs. If the strict CUDA build (-Werror) fails, it is retried
# without -Werror, and if that fails too the C extensions are built without CUDA, so that the
# emulation tests still run. Full logs go to $OUT (or /tmp/gradtest_gpu),
# one file per part; the screen gets each part's last lines, then the summary, which comes last
# and stays short (the device tool returns only the last 12,000 characters): each part's status
# and time, the pytest totals, the benchmark ratios and a RESULT line. The exit status is 0 only
# when every part passed.
#
# GRADTEST_GPU_DRY=1 runs everything but the GPU, for a machine without one (and CI): the same
# builds, the wheels installed into $OUT/site (not /tmp/gradtest_site), the emulation tests; the GPU tests are
# collected (they must import and skip cleanly) with CUDA_VISIBLE_DEVICES empty, and the GPU
# parts are marked "skipped: no GPU". The RESULT line then says "ok (dry run ...)".
# GRADTEST_GPU_BUILD=0 skips the builds and uses the extensions already built in place.
# PYTHON: the interpreter (default python3); GRADTEST_GPU_WHEELS: the wheels folder;
# GRADTEST_GPU_EMULATION: the emulation tests to run (default both files; the test of this
# script's dry mode picks one, to stay quick).
set -u -o pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/gradtest_gpu}
BUDGET=${GRADTEST_GPU_BUDGET:-450}
DRY=${GRADTEST_GPU_DRY:-0}
BUILD=${GRADTEST_GPU_BUILD:-1}
WHEELS=${GRADTEST_GPU_WHEELS:-tests/gpu/wheels}
mkdir -p "$LOGS"
if [ "$DRY" = 1 ]; then
    # a fresh folder next to the logs, kept: the in-place build links scipy-openblas32 from it
    SITE=$(cd "$LOGS" && pwd)/site
    rm -rf "$SITE"
    export CUDA_VISIBLE_DEVICES=""  # a dry run never touches a GPU, even where there is one
else
    SITE=${GRADTEST_GPU_SITE:-/tmp/gradtest_site}
fi
mkdir -p "$LOGS"
# tests/gpu/test_run_script.py runs this script in dry mode; it must not run itself from here
export PYTHONUNBUFFERED=1 GRADTEST_GPU_RUN=1
T0=$(date +%s)
NAMES=()
STATUSES=()
TIMES=()
FAILED=()

remaining() { echo $(( BUDGET - ($(date +%s) - T0) )); }

note() { NAMES+=("$1"); STATUSES+=("$2"); TIMES+=("${3:-0}"); }

# part NAME LIMIT CMD...: runs CMD under min(LIMIT, what is left of the budget), output to
# $LOGS/NAME.log and its last lines to the screen; records the status in the summary
part() {
    local name=$1 limit=$2
    shift 2
    local left
    left=$(remaining)
    if [ "$left" -lt 15 ]; then
        note "$name" "SKIPPED(budget)"
        FAILED+=("$name")
        echo "== $name: skipped, the $BUDGET s budget is spent"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit $limit s)"
    local start rc status
    start=$(date +%s)
    # through bash -c so that a part can be one of the functions below (exported)
    timeout -k 10 "$limit" bash -c '"$@"' part "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    tail -n 12 "$LOGS/$name.log" | cut -c1-300
    case $rc in
        0) status=ok ;;
        124|137) status=TIMEOUT ;;
        *) status="FAIL($rc)" ;;
    esac
    note "$name" "$status" $(( $(date +%s) - start ))
    [ "$rc" -eq 0 ] || FAILED+=("$name")
    return $rc
}

machine() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>&1 | head -4
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
    else
        echo "nvidia-smi: not found"
    fi
    nvcc --version 2>&1 | tail -1
    cc --version 2>&1 | head -1
    $PY -c "import sys, sysconfig, os, numpy; inc = sysconfig.get_paths()['include']; \
print('python', sys.version.split()[0], sys.executable, 'numpy', numpy.__version__); \
print('Python.h', 'found' if os.path.exists(os.path.join(inc, 'Python.h')) else 'MISSING', 'in', inc)"
    $PY -c "import cupy; print('cupy', cupy.__version__)" 2>&1 | tail -1
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1
    $PY -m pytest --version 2>&1 | tail -1
}

# the three missing dependencies, from wheels, into $SITE; then each must import from there
wheels() {
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl || return 1
    else
        echo "no wheels in $WHEELS (run tests/gpu/fetch_wheels.sh where pip works); using what is installed"
    fi
    PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} $PY -c "import optree, capstone, scipy_openblas32; \
print('optree', optree.__version__, 'capstone', capstone.__version__, 'scipy_openblas32', \
scipy_openblas32.__version__, 'from', scipy_openblas32.__file__)"
}

build_cuda() { GRADTEST_CUDA=1 GRADTEST_STRICT=1 $PY setup.py -q build_ext --inplace --force; }
# the same without -Werror: the GPU image's compiler is not CI's, and a warning that only a newer
# gcc gives must not keep the GPU tests from running (the strict build's failure still counts)
build_cuda_lax() { GRADTEST_CUDA=1 GRADTEST_STRICT=0 $PY setup.py -q build_ext --inplace --force; }
build_host() { GRADTEST_CUDA=0 GRADTEST_STRICT=0 $PY setup.py -q build_ext --inplace --force; }

probe() {
    $PY -c "import gradtest, gradtest.cuda as c; print('gradtest from', gradtest.__file__); \
print('gradtest.cuda.available():', c.available(), '-', c.unavailable_reason() or 'the device build is loaded')"
}

export PY SITE WHEELS
export -f machine wheels build_cuda build_cuda_lax build_host probe
echo "gradtest GPU run: $(date -u '+%Y-%m-%d %H:%M:%S') UTC, budget $BUDGET s, logs in $LOGS$([ "$DRY" = 1 ] && echo ', DRY RUN (no GPU)')"
part machine 30 machine
part wheels 60 wheels
export PYTHONPATH=$PWD/python:$SITE${PYTHONPATH:+:$PYTHONPATH}
if [ "$BUILD" = 0 ]; then
    note build "skipped: prebuilt"
elif [ "$DRY" = 1 ] && ! command -v nvcc >/dev/null 2>&1; then
    note build-cuda "skipped: no nvcc"
    part build-host 120 build_host
elif ! part build-cuda 200 build_cuda; then
    if ! part build-cuda-lax 200 build_cuda_lax; then
        part build-host 120 build_host
    fi
fi
part probe 60 probe
part gpu-tests 150 $PY -m pytest -q -p no:cacheprovider -rs tests/gpu/test_gpu.py
# shellcheck disable=SC2086  # GRADTEST_GPU_EMULATION: test ids separated by spaces
part emulation-tests 90 $PY -m pytest -q -p no:cacheprovider \
    ${GRADTEST_GPU_EMULATION:-tests/test_cuda_emulation.py tests/test_cuda_reverse_emulation.py}
if [ "$DRY" = 1 ]; then
    # the benchmark must still import and say why it has nothing to measure
    part bench 60 $PY benchmarks/bench_cuda.py --quick --json "$LOGS/bench_cuda.json"
elif ! part bench 100 $PY benchmarks/bench_cuda.py --json "$LOGS/bench_cuda.json"; then
    part bench-quick 60 $PY benchmarks/bench_cuda.py --quick --json "$LOGS/bench_cuda_quick.json"
fi

# -- the summary: last, compact --
gpu_skipped=0
if [ -f "$LOGS/gpu-tests.log" ] && grep -q "no GPU:" "$LOGS/gpu-tests.log" \
        && ! grep -qE "[0-9]+ passed" "$LOGS/gpu-tests.log"; then
    gpu_skipped=1
fi
bench_skipped=0
[ -f "$LOGS/bench.log" ] && grep -q "^bench_cuda: skipped:" "$LOGS/bench.log" && bench_skipped=1
echo
echo "== SUMMARY ($(( $(date +%s) - T0 )) s of the $BUDGET s budget)$([ "$DRY" = 1 ] && echo ', dry run')"
for i in "${!NAMES[@]}"; do
    status=${STATUSES[$i]}
    if [ "$DRY" = 1 ] && [ "$status" = ok ] && { { [ "${NAMES[$i]}" = gpu-tests ] && [ $gpu_skipped = 1 ]; } \
            || { [ "${NAMES[$i]}" = bench ] && [ $bench_skipped = 1 ]; }; }; then
        status="skipped: no GPU"
    fi
    printf '%-16s %-18s %4s s\n' "${NAMES[$i]}" "$status" "${TIMES[$i]}"
done
for log in gpu-tests emulation-tests; do
    [ -f "$LOGS/$log.log" ] && echo "$log: $(grep -E '(passed|failed|errors?|skipped|no tests ran)( |,|$)' "$LOGS/$log.log" \
        | grep -E ' in [0-9.]+s' | tail -1 | cut -c1-200)"
done
[ -f "$LOGS/probe.log" ] && echo "probe: $(grep -E '^gradtest.cuda.available' "$LOGS/probe.log" | tail -1 | cut -c1-300)"
if [ "$gpu_skipped" = 1 ] && [ "$DRY" != 1 ]; then
    echo "WARNING: the GPU tests skipped (no GPU visible): only the emulation ran"
    FAILED+=("gpu-visible")
fi
ratios=0
for log in bench bench-quick; do
    if [ -f "$LOGS/$log.log" ]; then
        grep -vE "^bench_cuda:" "$LOGS/$log.log" | grep -E "target" | sed "s/^/$log: /" | cut -c1-200
        ratios=$(( ratios + $(grep -vE "^bench_cuda:" "$LOGS/$log.log" | grep -cE "target") ))
    fi
done
if [ "$ratios" -eq 0 ]; then
    if [ "$DRY" = 1 ]; then
        echo "bench: $(grep -E '^bench_cuda: skipped' "$LOGS/bench.log" 2>/dev/null | head -1 | cut -c1-200)"
    else
        echo "no benchmark ratios (see $LOGS/bench.log)"
        FAILED+=("bench-ratios")
    fi
fi
if [ ${#FAILED[@]} -eq 0 ]; then
    if [ "$DRY" = 1 ]; then
        echo "RESULT: ok (dry run: no GPU part ran)"
    else
        echo "RESULT: ok"
    fi
    exit 0
fi
echo "RESULT: FAILED (${FAILED[*]})"
exit 1
