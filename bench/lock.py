"""Long requests against interactive ones on the embedded model: model-lock holds and MCQ latency.

Starts the server (embedded model) as a subprocess with a fresh cache folder (the converted
model linked in, so no baseline or statistics are cached), then sends, one after another,
10k-token /api/perplexity and /api/loss_added requests: perplexity with the default body,
perplexity with features (clamped), and loss_added with the same features (its clean baseline
is computed too). While each runs, another thread sends a one-value /api/mcq request every
200 ms. Printed per long request: its time, the longest model-lock hold with its label so far
(the server's ``lock_stats``), and the MCQ latencies during it; then the whole run's lock_stats.
A 21-value MCQ curve and a 40-token generation are timed the same way.

    python bench/lock.py [--port 8791] [--features 20] [--tokens 10000]
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from common import free_port, machine, parser, pct

from unlearn_core.server.client import ensure_server

ROOT = Path(__file__).resolve().parent.parent


TASK_KINDS = {"/api/perplexity": "perplexity", "/api/loss_added": "loss_added"}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--tokens", type=int, default=10_000, help="n_tokens of the long requests (10k is the default body)")
    p.add_argument("--period", type=float, default=0.2, help="seconds between MCQ requests")
    p.add_argument("--models", default=str(ROOT / "cache" / "models"), help="the converted models to link in")
    p.add_argument("--tiny", action="store_true", help="the tiny test backend (a smoke test of this script)")
    args = p.parse_args()
    port = args.port or free_port()
    cache = Path(tempfile.mkdtemp(prefix="bench-lock-"))
    if Path(args.models).is_dir():
        (cache / "models").symlink_to(Path(args.models).resolve(), target_is_directory=True)
    if args.tiny:
        args.model, args.sae = "tiny", "tiny"
    backend = ["--tiny"] if args.tiny else ["--model", args.model, "--sae", args.sae]
    client = ensure_server(
        f"http://127.0.0.1:{port}", auto_start=True, timeout=600, extra_args=[*backend, "--cache-dir", str(cache)]
    )
    rows = []
    try:
        q = client.questions("wmdp-bio", limit=1)["questions"][0]
        acts = client.activations(q["question"], features=[])
        top = sorted({f for tok in acts["top_features"][1:] for f, _ in tok})[: args.features]
        ivs = [{"sae": args.sae, "features": top, "value": 20.0, "mode": "clamp"}]
        client.mcq(question_id=q["id"], interventions=ivs, values=[20.0])  # the question's cache, built once
        alone = []
        for i in range(5):
            t = time.perf_counter()
            client.mcq(question_id=q["id"], interventions=ivs, values=[1.0 + 7 * i])
            alone.append(time.perf_counter() - t)
        rows.append(("mcq alone (5 calls)", None, None, alone))
        longs = [
            ("perplexity, default body", "/api/perplexity", {"n_tokens": args.tokens}, "perplexity"),
            (
                f"perplexity with {len(top)} features clamped",
                "/api/perplexity",
                {"n_tokens": args.tokens, "interventions": ivs},
                "perplexity",
            ),
            (
                f"loss_added with {len(top)} features (clean baseline computed too)",
                "/api/loss_added",
                {"n_tokens": args.tokens, "interventions": ivs},
                "loss_added",
            ),
            (
                "mcq, 21-value curve (8 values a step)",
                "/api/mcq",
                {"question_id": q["id"], "interventions": ivs, "values": [float(v) for v in range(0, 201, 10)]},
                "mcq",
            ),
            (
                f"generate 40 tokens, base and {len(top)} features clamped",
                "/api/generate",
                {"prompt": q["question"], "interventions": ivs, "max_new_tokens": 40},
                "generate",
            ),
        ]
        for name, path, body, label in longs:
            stop = threading.Event()
            lat: list[float] = []

            def poll() -> None:
                mq = ensure_server(f"http://127.0.0.1:{port}")  # its own connection
                i = 0
                while not stop.is_set():
                    t = time.perf_counter()
                    mq.mcq(question_id=q["id"], interventions=ivs, values=[2.0 + i % 50])
                    i += 1
                    d = time.perf_counter() - t
                    if not stop.is_set():
                        lat.append(d)
                    stop.wait(max(0.0, args.period - d))

            th = threading.Thread(target=poll, daemon=True)
            t0 = time.perf_counter()
            th.start()
            if path in TASK_KINDS:  # past the synchronous limit: a task, polled (its holds are the same)
                client.run_task(TASK_KINDS[path], body, poll=0.2)
            else:
                client.request("POST", path, json=body)
            took = time.perf_counter() - t0
            stop.set()
            th.join(60)
            rows.append((name, took, client.info()["lock_stats"]["by_label"][label]["max_hold_s"], lat))
        st = client.info()["lock_stats"]
    finally:
        client.stop_server()
        if (cache / "models").is_symlink():
            (cache / "models").unlink()  # the link, not the models
        shutil.rmtree(cache, ignore_errors=True)
    print(f"machine: {machine()}")
    print(
        f"server: {args.model} + SAE {args.sae}; long requests of {args.tokens} tokens; mcq every "
        f"{args.period * 1000:.0f} ms on WMDP-bio question {q['id']} ({len(top)} features, one clamp value)\n"
    )
    print("| long request | time | longest hold of its kind so far | mcq calls during it | mcq p50 / p95 / max |")
    print("| --- | --- | --- | --- | --- |")
    for name, took, hold, lat in rows:
        t = f"{took:.1f} s" if took is not None else "-"
        h = f"{hold:.2f} s" if hold is not None else "-"
        m = f"{pct(lat, 0.5) * 1000:.0f} / {pct(lat, 0.95) * 1000:.0f} / {max(lat) * 1000:.0f} ms" if lat else "-"
        print(f"| {name} | {t} | {h} | {len(lat)} | {m} |")
    print(
        f"\nlock_stats over the whole run: max hold {st['max_hold_s']:.2f} s ({st['longest'][0]}), "
        f"p95 hold {st['p95_hold_s']:.2f} s over {st['n']} holds; requests' wait for the lock: "
        f"max {st['max_wait_s']:.2f} s, p95 {st['p95_wait_s']:.2f} s"
    )
    print("longest hold per label: " + ", ".join(f"{k} {v['max_hold_s']:.2f} s" for k, v in st["by_label"].items()))


if __name__ == "__main__":
    main()
