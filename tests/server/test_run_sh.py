"""scripts/run.sh watches what it started (issue 13, defect 8): when the server dies, it says so
(with the end of the server log), stops the app and exits non-zero; when the app dies, it stops
the server. Runs the real script with the tiny backend (`--tiny --no-demo`) on free ports.

Every process the script starts lives in the test's own process group, which is killed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from browser_helpers import ROOT, clean_env, free_port

START_TIMEOUT = 180  # setup check + tiny server + streamlit, on a busy 2-core machine
EXIT_WITHIN = 10  # seconds the script may take to notice and stop


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def run_sh(tmp_path, shared_data):
    """Start `bash scripts/run.sh --tiny --no-demo`; wait until the app answers. Yields a dict with
    the script's process, its output file, the server and app pids, and the server log."""
    env = clean_env()
    env.update(
        UNLEARN_PORT=str(free_port()),
        UNLEARN_APP_PORT=str(free_port()),
        UNLEARN_CACHE_DIR=str(tmp_path / "cache"),
        UNLEARN_SERVER_LOG=str(tmp_path / "server.log"),
        OMP_NUM_THREADS="1",
    )
    out = tmp_path / "run.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            ["bash", "scripts/run.sh", "--tiny", "--no-demo"],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    info = {"proc": proc, "out": out, "log": tmp_path / "server.log"}
    try:
        app_url = f"http://127.0.0.1:{env['UNLEARN_APP_PORT']}/_stcore/health"
        end = time.time() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"run.sh exited early ({proc.returncode}):\n{out.read_text()}"
            try:
                if requests.get(app_url, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.time() < end, f"the app did not come up:\n{out.read_text()}"
            time.sleep(0.5)
        kids = {pid: cmdline(pid) for pid in children(proc.pid)}
        info["server"] = next(p for p, c in kids.items() if "unlearn_core serve" in c)
        info["app"] = next(p for p, c in kids.items() if "streamlit run" in c)
        # --tiny never uses the embedded model, so setup did not convert it (about a minute)
        assert not (tmp_path / "cache" / "models").exists(), out.read_text()
        yield info
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the script and everything it started
        except ProcessLookupError:
            pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def wait_exit(proc: subprocess.Popen, out: Path, within: float) -> int:
    try:
        return proc.wait(within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"run.sh is still running {within:.0f} s later:\n{out.read_text()}") from None


def test_run_sh_stops_the_app_and_says_so_when_the_server_dies(run_sh):
    os.kill(run_sh["server"], signal.SIGKILL)  # a crash: no chance to clean up
    t0 = time.time()
    rc = wait_exit(run_sh["proc"], run_sh["out"], EXIT_WITHIN)
    text = run_sh["out"].read_text()
    assert rc != 0, text
    assert "the server" in text and "exited" in text and "stopping the app" in text, text
    assert "server.log" in text, text  # where to look
    last_log_line = [x for x in run_sh["log"].read_text().splitlines() if x.strip()][-1]
    assert last_log_line in text, (last_log_line, text)  # the end of the server log is shown
    assert not alive(run_sh["app"]), "the app is still running"
    assert time.time() - t0 < EXIT_WITHIN


def test_run_sh_stops_the_server_when_the_app_dies(run_sh):
    os.kill(run_sh["app"], signal.SIGKILL)
    rc = wait_exit(run_sh["proc"], run_sh["out"], EXIT_WITHIN)
    text = run_sh["out"].read_text()
    assert rc != 0, text
    assert "the app" in text and "stopping the server" in text, text
    end = time.time() + EXIT_WITHIN
    while alive(run_sh["server"]):
        assert time.time() < end, "the server is still running"
        time.sleep(0.2)
