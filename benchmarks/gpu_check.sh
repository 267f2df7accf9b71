#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) as one prepared script, at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --fetch-wheels  # beforehand, where pip reaches PyPI
#
# It needs a python3 with PyTorch (CUDA). What afl_core needs beyond the usual scientific
# stack (segmentation-models-pytorch, nibabel) is installed, when missing, from wheels in
# build/gpu-wheels/ (a machine without internet: fetch them first with --fetch-wheels and
# carry that folder along), else into a virtual environment with `pip install -e .`.
# Results: stdout and $OUT/gpu_check.json (OUT defaults to ./gpu_check_out).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS=build/gpu-wheels

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # Both are pure-Python wheels: they install on any Python 3 of the GPU machine.
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" \
        "segmentation-models-pytorch==0.6.0" "nibabel==5.4.2"
    ls "$WHEELS"
    exit 0
fi

export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1   # no pretrained weights wanted: fail fast, not after retries
if ! "$PY" -c "import segmentation_models_pytorch, nibabel" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/afl-site "$WHEELS"/*.whl
        export PYTHONPATH="/tmp/afl-site${PYTHONPATH:+:$PYTHONPATH}"
    else
        # The machine's PyTorch is kept (system site packages); the rest comes from PyPI.
        "$PY" -m venv --system-site-packages /tmp/afl-venv
        /tmp/afl-venv/bin/python -m pip install --quiet -e .
        PY=/tmp/afl-venv/bin/python
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 450 "$PY" benchmarks/gpu_check.py --out "${OUT:-gpu_check_out}" "$@"
