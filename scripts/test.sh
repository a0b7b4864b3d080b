#!/usr/bin/env bash
# The project's test command: set up (or refresh) .venv, then run pytest from the repo root.
#   bash scripts/test.sh                  # every tier, one after another (what CI runs)
#   bash scripts/test.sh tests/unit/data  # one tier or folder (unit, server, app, integration, browser), or any pytest args
# Tiers (tests/<tier>/, each also a marker): unit (tiny models built from a config), server (the HTTP
# server, client and scripts), app (Streamlit AppTest), integration (the embedded Gemma 3 270M),
# browser (the real app in headless Chromium). With no arguments each tier runs as its own pytest
# call, its time printed, and the script fails if any tier failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
PY="$ROOT/.venv/bin/python"

if [ "$#" -gt 0 ]; then
    exec "$PY" -m pytest "$@"
fi

# The unit, server and app tiers spend much of their time waiting (servers, Ray workers and
# subprocesses starting, polls), so they run in two pytest-xdist workers, a test file per worker
# (module fixtures stay computed once); the integration and browser tiers compute, and run in one.
# The integration tier computes in one process at a time on a quiet runner: there idle OpenMP
# threads may spin (OMP_WAIT_POLICY=ACTIVE, about 27% faster per question than the package's
# PASSIVE default; bench/omp_policy.py). The parallel tiers keep PASSIVE.
omp_policy() {
    case "$1" in
        integration) echo "ACTIVE" ;;
        *) echo "${OMP_WAIT_POLICY:-PASSIVE}" ;;
    esac
}

parallel_args() {
    case "$1" in
        unit|server|app) echo "-n 2 --dist loadfile" ;;
        *) echo "" ;;
    esac
}

failed=()
total=$SECONDS
for tier in unit server app integration browser; do
    t0=$SECONDS
    printf '\n==> [tests] tier %s (tests/%s)\n' "$tier" "$tier"
    # shellcheck disable=SC2046
    if OMP_WAIT_POLICY="$(omp_policy "$tier")" "$PY" -m pytest -q -ra --durations=10 $(parallel_args "$tier") "tests/$tier"; then
        printf '==> [tests] tier %s passed in %d s\n' "$tier" "$((SECONDS - t0))"
    else
        rc=$?
        printf '==> [tests] tier %s FAILED (exit %d) in %d s\n' "$tier" "$rc" "$((SECONDS - t0))"
        failed+=("$tier")
    fi
done
printf '\n==> [tests] all tiers in %d s\n' "$((SECONDS - total))"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "==> [tests] FAILED tiers: ${failed[*]}" >&2
    exit 1
fi
