#!/usr/bin/env bash
# The GPU check (issue 15): one run on one H100/H200, under 8 minutes, no network, no model weights.
#
#   bash bench/gpu.sh                 # CUDA: throughput on a random gemma-2-2b-it-shaped model + 16k SAE,
#                                     # server /api/mcq p50, CUDA-vs-CPU parity tests, unit tests on CUDA
#   bash bench/gpu.sh --cpu-dry-run   # here, on the CPU: every step with small shapes (under a minute)
#
# One table, printed and written to $OUT/gpu_check.md when OUT is set, else bench/results/gpu_check.md
# (bench/results/ is not for committing). Extra arguments go to bench/gpu_check.py (see --help there).
# Exit status: 0 when every step passed; 1 when a step failed (its row says FAILED); 3 when the Python
# packages are missing; 4 when CUDA is not available.
#
# Python: the first of $PYTHON, python3 and .venv/bin/python that imports the packages; nothing is
# installed (there is no package index on the GPU machine). Unit tests that read ../shared/data need
# it there; if the working tree carries a shared/data folder and ../shared does not exist, ../shared
# is made a link to it.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNLEARN_NO_HUB=1 TOKENIZERS_PARALLELISM=false

ARGS=()
if [ "${1:-}" = "--cpu-dry-run" ]; then
    ARGS=(--dry-run)
    shift
fi

MODULES="torch transformer_lens sae_lens transformers tokenizers fastapi uvicorn requests pytest"
PY=""
for cand in ${PYTHON:-} python3 "$ROOT/.venv/bin/python"; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import ${MODULES// /, }" >/dev/null 2>&1; then
        PY="$cand"
        break
    fi
done
if [ -z "$PY" ]; then
    echo "bench/gpu.sh: no Python here imports the packages the check needs ($MODULES)." >&2
    if command -v python3 >/dev/null 2>&1; then
        missing=$(python3 -c "
import importlib.util
print(' '.join(m for m in '$MODULES'.split() if importlib.util.find_spec(m) is None))" 2>/dev/null)
        echo "  python3 ($(python3 --version 2>&1)) lacks: ${missing:-?}" >&2
    fi
    echo "  Install the pinned packages of requirements.txt (CUDA build of torch==2.13.0 first, then" >&2
    echo "  'pip install -r requirements.txt'), or point PYTHON at an interpreter that has them." >&2
    echo "  Nothing is installed by this script: the GPU machine has no package index." >&2
    exit 3
fi
echo "bench/gpu.sh: python $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))"

if [ "${#ARGS[@]}" -eq 0 ]; then
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "bench/gpu.sh: torch sees no CUDA device (torch.version.cuda = $("$PY" -c 'import torch; print(torch.version.cuda)'))." >&2
        echo "  Run it on a GPU machine with a CUDA build of torch, or use --cpu-dry-run." >&2
        exit 4
    fi
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

if [ ! -d "$ROOT/../shared/data" ]; then
    if [ -d "$ROOT/shared/data" ] && [ ! -e "$ROOT/../shared" ] && ln -s "$ROOT/shared" "$ROOT/../shared" 2>/dev/null; then
        echo "bench/gpu.sh: linked ../shared -> $ROOT/shared (the unit tests read ../shared/data)"
    else
        echo "bench/gpu.sh: WARNING: ../shared/data is missing: the unit tests that read it will fail" >&2
        echo "  (copy the project's shared/data folder into the working tree as shared/data, or to ../shared/data)" >&2
    fi
fi

exec "$PY" bench/gpu_check.py ${ARGS[@]+"${ARGS[@]}"} "$@"
