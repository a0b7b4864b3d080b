"""For the Robustness page's app and browser tests: a tiny-backend server that knows ``bio-tiny``
(bio-basics' questions and probes, known without the strict filter: the random tiny model knows
facts there), and attack runs made on it through the client."""

from __future__ import annotations

from pathlib import Path

from browser_helpers import start_server, stop

from unlearn_core.server.client import UnlearnClient

TARGETS = Path(__file__).resolve().parent / "fixtures" / "robustness_targets.toml"
TARGET = "bio-tiny"
# two clamp defences and the control, two attacks with probes and one without: a map with
# recoveries, "—" cells and a retain column, in seconds on the tiny model
RUN = {"target": TARGET, "defences": ["default", "gated", "none"], "attacks": ["rephrase", "fill_blank", "filler"]}


def robustness_server(request, tmp_path_factory) -> dict:
    """`serve --tiny --targets <bio-tiny>` on a free port, stopped when the session ends:
    {"url", "process", "cache", "client"}."""
    cache = tmp_path_factory.mktemp("robustness_server")
    p, url = start_server(cache / "server.log", ["--tiny", "--cache-dir", str(cache), "--targets", str(TARGETS)])
    request.config.add_cleanup(lambda: stop(p))
    return {"url": url, "process": p, "cache": cache, "client": UnlearnClient(url, token="")}


def finished_run(client: UnlearnClient, spec: dict, timeout: float = 600) -> dict:
    """A run of ``spec`` made and waited for; its result (the run's id under "id")."""
    run = client.start_attack(**spec)
    done = client.wait_attack(run["id"], timeout=timeout, poll=0.2)
    assert done["status"] == "done", done
    return client.attack_result(run["id"])
