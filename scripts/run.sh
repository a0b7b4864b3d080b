#!/usr/bin/env bash
# One-command quick start: set up .venv, run a short CLI demo, start the workbench server in the
# background, wait until its model is loaded, then run the Streamlit app and watch both: when the
# server this script started exits (a crash), it says so, shows the end of the server log, stops
# the app and exits non-zero; when the app exits, it stops the server. Ctrl-C stops both.
#
#   bash scripts/run.sh                  # real model (first start loads it: a minute or two on CPU)
#   bash scripts/run.sh --tiny           # tiny random test backend: starts in seconds, numbers mean nothing
#   bash scripts/run.sh --remote URL     # no local server: point the app at a running server
#   bash scripts/run.sh --no-demo        # skip the CLI demo step
#
# Ports: UNLEARN_PORT (server, default 8765), UNLEARN_APP_PORT (app, default 8501). A server that
# already answers on UNLEARN_PORT is reused (and left running). UNLEARN_TOKEN is passed through to
# both. Server log: cache/server.log (UNLEARN_SERVER_LOG to put it elsewhere).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TINY=0
DEMO=1
REMOTE=""
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        --tiny) TINY=1 ;;
        --no-demo) DEMO=0 ;;
        --remote)
            [ "$#" -ge 2 ] || { echo "[run] --remote needs a URL" >&2; exit 2; }
            REMOTE="$2"; shift ;;
        --remote=*) REMOTE="${1#--remote=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "[run] unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PORT="${UNLEARN_PORT:-8765}"
APP_PORT="${UNLEARN_APP_PORT:-8501}"
SERVER_LOG="${UNLEARN_SERVER_LOG:-cache/server.log}"
PY="$ROOT/.venv/bin/python"
log() { printf '[run] %s\n' "$*"; }

# 1. environment (the embedded model is prepared only when this run uses it)
if [ "$TINY" = 1 ] || [ -n "$REMOTE" ]; then
    export UNLEARN_SKIP_PREPARE=1
fi
bash scripts/setup.sh

# 2. a short CLI demo, when the CLI has one
if [ "$DEMO" = 1 ] && [ -z "$REMOTE" ]; then
    demo_help="$("$PY" -m unlearn_core demo --help 2>/dev/null)" || demo_help=""
    if [ -z "$demo_help" ]; then
        log "no 'demo' command in this version of the CLI; skipping the demo step"
    elif [ "$TINY" = 1 ] && [[ "$demo_help" != *--tiny* ]]; then
        log "skipping the CLI demo: it runs the real model and --tiny asks for a quick look (run it with"
        log "  .venv/bin/python -m unlearn_core demo)"
    else
        demo_args=()
        [ "$TINY" = 1 ] && demo_args+=(--tiny)
        log "CLI demo: python -m unlearn_core demo ${demo_args[*]:-}"
        "$PY" -m unlearn_core demo "${demo_args[@]}" || log "warning: the CLI demo failed; continuing"
    fi
fi

# 3. the server
SERVER_PID=""
APP_PID=""
stop_process() {  # pid, what: SIGTERM, up to 10 s to finish, then SIGKILL
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        log "stopping $2 (pid $1)"
        kill "$1" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_process "$APP_PID" "the app"
    stop_process "$SERVER_PID" "the server"
}
server_log_tail() {
    log "last lines of $SERVER_LOG:"
    tail -n 30 "$SERVER_LOG" >&2 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

health() {  # prints the server's status (ok | loading | error) or "down"
    "$PY" - "$1" <<'EOF' 2>/dev/null || echo down
import sys
from unlearn_core.server.client import UnlearnClient
try:
    print(UnlearnClient(sys.argv[1]).health(timeout=3)["status"])
except Exception:
    print("down")
EOF
}

if [ -n "$REMOTE" ]; then
    URL="${REMOTE%/}"
    status="$(health "$URL")"
    if [ "$status" = "down" ]; then
        log "warning: no server answers at $URL yet; the app will say so until one does"
    else
        log "remote server at $URL: $status"
    fi
else
    URL="http://127.0.0.1:$PORT"
    status="$(health "$URL")"
    if [ "$status" != "down" ]; then
        log "a server already answers at $URL ($status): using it (this script will not stop it)"
    else
        mkdir -p "$(dirname "$SERVER_LOG")"
        args=(-m unlearn_core serve --host 127.0.0.1 --port "$PORT")
        [ "$TINY" = 1 ] && args+=(--tiny)
        log "starting the server: python ${args[*]} (log: $SERVER_LOG)"
        printf '\n==== %s  python %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "${args[*]}" >> "$SERVER_LOG"
        "$PY" "${args[@]}" >> "$SERVER_LOG" 2>&1 < /dev/null &
        SERVER_PID=$!
    fi
    # wait for /api/health to say "ok" (the model is loaded)
    t0=$SECONDS
    timeout_s="${UNLEARN_START_TIMEOUT:-900}"
    while :; do
        status="$(health "$URL")"
        [ "$status" = "ok" ] && break
        if [ "$status" = "error" ]; then
            log "ERROR: the server failed to load its model"
            server_log_tail
            exit 1
        fi
        if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "ERROR: the server exited"
            server_log_tail
            exit 1
        fi
        if [ $((SECONDS - t0)) -ge "$timeout_s" ]; then
            log "ERROR: the server is not ready after ${timeout_s} s (see $SERVER_LOG)"
            exit 1
        fi
        [ $(((SECONDS - t0) % 15)) -eq 0 ] && log "waiting for the server ($status, $((SECONDS - t0)) s)..."
        sleep 1
    done
    log "server ready at $URL after $((SECONDS - t0)) s"
fi

# 4. the app, watched together with the server; the EXIT trap stops whichever is still running
export UNLEARN_SERVER_URL="$URL"
if [ -n "$SERVER_PID" ]; then
    log "app: http://127.0.0.1:$APP_PORT   (server: $URL; Ctrl-C stops both)"
else
    log "app: http://127.0.0.1:$APP_PORT   (server: $URL, not started here; Ctrl-C stops the app)"
fi
# no file watcher: the server writes its caches under the repository, and watching them only costs CPU
"$PY" -m streamlit run app.py --server.headless true --server.address 127.0.0.1 --server.port "$APP_PORT" \
    --browser.gatherUsageStats false --server.fileWatcherType none < /dev/null &
APP_PID=$!
# poll (not `wait -n`: macOS ships bash 3.2); bash reaps an exited child, so `kill -0` fails at once
while :; do
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        rc=0
        wait "$APP_PID" || rc=$?
        APP_PID=""
        if [ -n "$SERVER_PID" ]; then
            log "the app exited (code $rc); stopping the server"
        else
            log "the app exited (code $rc)"
        fi
        exit "$rc"
    fi
    if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
        rc=0
        wait "$SERVER_PID" || rc=$?
        log "ERROR: the server (pid $SERVER_PID) exited with code $rc while the app was running; stopping the app"
        log "(the app cannot work without it; fix the cause below and run this script again)"
        SERVER_PID=""
        server_log_tail
        exit 1
    fi
    sleep 0.5
done
