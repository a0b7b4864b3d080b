"""The clamp explorer on the embedded model, as a user feels it: time from moving the c slider to
the end of the page's rerun (Streamlit's AppTest runs the page's own Python against a real
server; the browser's drawing is not included), and the first open of the page.

    python bench/app_slider.py [--repeats 12] [--features 20]
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from common import machine, parser, pct, row

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--features", type=int, default=20)
    args = p.parse_args()
    from common import free_port
    from streamlit.testing.v1 import AppTest

    from unlearn_core.server.client import ensure_server

    url = f"http://127.0.0.1:{free_port()}"
    client = ensure_server(url, auto_start=True, timeout=600, extra_args=["--model", args.model, "--sae", args.sae])
    try:
        q = client.questions("wmdp-bio", limit=1)["questions"][0]
        acts = client.activations(q["question"], features=[])
        feats = sorted({f for tok in acts["top_features"][1:] for f, _ in tok})[: args.features]
        os.environ["UNLEARN_SERVER_URL"] = url
        sys.path.insert(0, str(ROOT))
        at = AppTest.from_file(str(ROOT / "pages/3_Clamp_explorer.py"), default_timeout=600)
        at.query_params["features"] = ",".join(map(str, feats))
        at.query_params["q"] = q["id"]
        t = time.perf_counter()
        at.run()
        first = [time.perf_counter() - t]
        if at.exception or at.error:
            raise SystemExit(f"the page failed: {[e.value for e in at.exception] + [e.value for e in at.error]}")
        rng = random.Random(0)
        moves = []
        for _ in range(args.repeats):
            at.slider(key="c").set_value(rng.randint(1, 200))
            t = time.perf_counter()
            at.run()
            moves.append(time.perf_counter() - t)
        scoring = client.info()["scoring"]
    finally:
        client.stop_server()
    print(f"machine: {machine()}")
    print(
        f"clamp explorer, {args.model} + SAE {args.sae}; WMDP-bio question {q['id']} ({scoring} scoring), "
        f"{len(feats)} features\n"
    )
    print("| what | p50 | p95 | runs |\n| --- | --- | --- | --- |")
    print(row("first open of the page (base, bars at c=20, 21-value curve)", first))
    print(row("move the c slider (bars rescored; the curve is cached)", moves))
    print(f"\nslider move p50: {pct(moves, 0.5) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
