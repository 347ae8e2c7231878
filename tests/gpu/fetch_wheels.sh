#!/usr/bin/env bash
# Fills tests/gpu/wheels/ with the wheels tests/gpu/run.sh installs on the GPU machine, which has
# no internet and lacks these three of gradtest's dependencies (it has numpy, pytest, CuPy,
# PyTorch and nvcc). Run it where pip reaches PyPI; the folder is git-ignored and travels with
# the tree (the device tool: carry ["tests/gpu/wheels"]). PYVER: the GPU machine's Python
# (3.12 there); the versions are those pyproject.toml allows.
set -euo pipefail
cd "$(dirname "$0")"
PYVER=${PYVER:-3.12}
mkdir -p wheels
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d wheels \
    "optree>=0.13" "capstone>=5,<6" "scipy-openblas32>=0.3.27"
ls -la wheels
