"""Each synchronous endpoint at its cap, on the embedded model with an empty cache: how long a
request the server still answers synchronously takes (the caps are meant to fit ~10 s; past
them the server names a task route). Also the refusals themselves (their checks must be quick).

    python bench/sync_limits.py [--models-from CACHE_DIR] [--only perplexity,demo]

The server is built in-process (FastAPI's TestClient) on a fresh temporary cache directory, so
nothing is cached: no known statuses, clean losses or feature statistics (shipped statistics
still count: they ship with the package). Only the converted model is linked in from
``--models-from`` (default: the settings' cache directory) so the one-time conversion is not
timed. Rows run in order; each uses corpora, texts and questions no earlier row touched. The
last rows are refusals (how long the check before a 400/409 takes) and one endpoint with no task
kind yet (``/api/targets/select`` with descriptions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import print_table

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

IV = {"features": list(range(20)), "value": 50.0}


def _row(method: str, route: str, note: str = "", **body) -> tuple[str, str, str, dict]:
    """One row: ``/api/<route>`` with ``body`` (params for a GET), named by the route (and ``note``)."""
    return (route + note, method, f"/api/{route}", body)


def _post(route: str, note: str = "", **body) -> tuple[str, str, str, dict]:
    return _row("POST", route, note, **body)


def cases(S) -> list[tuple[str, str, str, object]]:
    """(name, method, path, body or params): each at its synchronous cap, then the refusals."""

    def text(seed: int) -> str:  # the longest text a request takes, a different one per row (activation LRU)
        return (f"{seed}: The cell membrane controls what enters the cell. " * 400)[: S.MAX_TEXT_CHARS]

    half_eval, half_stats, n_stats = S.SYNC_EVAL_TOKENS // 2, S.SYNC_STATS_TOKENS // 2, S.SYNC_STATS_TOKENS
    refused = " (refused)"
    return [
        _post("perplexity", corpus="wikitext", n_tokens=S.SYNC_EVAL_TOKENS),
        _post("perplexity", corpus="webtext", n_tokens=half_eval, interventions=[IV]),
        _post("loss_added", corpus="pile", n_tokens=half_eval, interventions=[IV]),
        _post("generate", prompt="The virus", max_new_tokens=S.SYNC_NEW_TOKENS),
        _post("generate", prompt="The cell", max_new_tokens=S.SYNC_NEW_TOKENS // 2, interventions=[IV]),
        _row("GET", "questions", set="wmdp-bio", known="true", strict="true", limit=S.SYNC_KNOWN_QUESTIONS),
        _post("demo", target="bio-basics", max_scan=S.SYNC_DEMO_SCAN),
        _post("features/dashboard", feature=100, corpora=["sherlock@train"], n_tokens=n_stats, neuronpedia=False),
        _post("features/dashboard", feature=101, corpora=["webtext", "wikitext@train"], k=50, neuronpedia=False),
        _post(
            "features/select",
            forget="quiz:bio@heldout",
            retain="pile",
            n_tokens=half_stats,
            n=S.SYNC_DESCRIPTIONS,
            describe=True,
        ),
        _post("features/search", text=text(1), background="wikitext@heldout", background_tokens=n_stats),
        _post("activations", text=text(2)),
        _post("mcq", question_id=None, interventions=[IV], values=list(range(S.MAX_VALUES))),
        _post("targets/select", target="bio-basics"),
        # not capped (no task kind): descriptions of a target's selection
        _post("targets/select", target="bio-basics", n=20, describe=True),
        # refused: how long the check takes before the 400/409
        _row("GET", "questions", refused, set="wmdp-bio", known="true", limit=S.MAX_PAGE),
        _post("demo", refused, target="bio-basics"),
        _post("features/select", refused, forget="wmdp-bio-text", retain="webtext", n_tokens=S.MAX_STATS_TOKENS),
    ]


def link_models(src: Path, cache: Path) -> None:
    """The converted embedded model only (not a cache of anything an endpoint computes)."""
    from unlearn_core.model.models import embedded_model_dir

    have = embedded_model_dir(src)
    if have.is_dir():
        embedded_model_dir(cache).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(have.resolve(), embedded_model_dir(cache))


def describe(body: object) -> str:
    if not isinstance(body, dict):
        return ""
    short = {
        k: (f"{len(v):,} chars" if k == "text" else ("[...]" if isinstance(v, list) and len(v) > 4 else v))
        for k, v in body.items()
        if k not in ("interventions",)
    }
    iv = " + 20-feature clamp" if body.get("interventions") else ""
    return ", ".join(f"{k}={v}" for k, v in short.items()) + iv


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from fastapi.testclient import TestClient

    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import load_engine
    from unlearn_core.server import create_app
    from unlearn_core.server import schemas as S

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-from", default=None, help="a cache dir holding the converted embedded model")
    p.add_argument("--only", default="", help="comma-separated row names (default: every row)")
    args = p.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="sync-limits-"))
    try:
        link_models(Path(args.models_from or load_settings().cache_dir), cache)
        t0 = time.perf_counter()
        engine = load_engine(load_settings({"cache_dir": str(cache)}), progress=False)
        load_s = time.perf_counter() - t0
        rows = []
        with TestClient(create_app(lambda: engine, token="")) as client:
            while client.get("/api/health").json()["status"] != "ok":
                time.sleep(0.1)
            qid = client.get("/api/questions", params={"set": "wmdp-bio", "limit": 1, "offset": 500}).json()
            only = {x for x in args.only.split(",") if x}
            for name, method, path, body in cases(S):
                if only and name.split(" ")[0] not in only:
                    continue
                if name == "mcq":
                    body = {**body, "question_id": qid["questions"][0]["id"]}
                load = os.getloadavg()[0]
                t = time.perf_counter()
                if method == "GET":
                    r = client.get(path, params=body)
                else:
                    r = client.post(path, json=body)
                dt = time.perf_counter() - t
                note = "" if r.status_code == 200 else r.json()["detail"][:70] + "…"
                rows.append((name, describe(body), str(r.status_code), f"{dt:.1f} s", f"{load:.1f}", note))
                print(f"{name}: {r.status_code} in {dt:.1f} s {note}", flush=True)
        print()
        print(
            f"{engine.settings.model} on {engine.settings.resolved_device()}, {os.cpu_count()} cores (shared: 'load "
            f"before' is the 1-minute load average as a row started); engine loaded in {load_s:.0f} s (not timed); "
            f"caps: known {S.SYNC_KNOWN_QUESTIONS}, demo scan {S.SYNC_DEMO_SCAN}, stats tokens "
            f"{S.SYNC_STATS_TOKENS}, eval tokens {S.SYNC_EVAL_TOKENS}, new tokens {S.SYNC_NEW_TOKENS}"
        )
        print_table(("endpoint", "request (at its cap)", "status", "time", "load before", "note"), rows)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
