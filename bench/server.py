"""The server on the embedded model: warm start, latency of cached `info` and of MCQ calls, peak RSS.

Warm start = process start to the first answered /api/info with the model loaded (the converted
model is already in the cache). Peak RSS = the server process's VmHWM after the calls.

    python bench/server.py [--port 8790] [--repeats 20]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from common import free_port, machine, parser, pct

from unlearn_core.server.client import ensure_server


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    port = args.port or free_port()
    t0 = time.perf_counter()
    client = ensure_server(
        f"http://127.0.0.1:{port}", auto_start=True, timeout=600, extra_args=["--model", args.model, "--sae", args.sae]
    )
    client.info()
    warm = time.perf_counter() - t0
    try:
        qs = client.questions("wmdp-bio", limit=1)["questions"]
        qid = qs[0]["id"]
        acts = client.activations(qs[0]["question"], features=[])
        top = sorted({f for tok in acts["top_features"][1:] for f, _ in tok})[:20]
        ivs = [{"sae": args.sae, "features": top, "value": 20.0, "mode": "clamp"}]
        info = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            client.info()
            info.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.mcq(question_id=qid, interventions=ivs, values=[20.0])
        first = time.perf_counter() - t
        one = []
        for i in range(args.repeats):
            t = time.perf_counter()
            client.mcq(question_id=qid, interventions=ivs, values=[1.0 + 7 * i])
            one.append(time.perf_counter() - t)
        curve = []
        for _ in range(3):
            t = time.perf_counter()
            client.mcq(question_id=qid, interventions=ivs, values=[float(v) for v in range(0, 201, 10)])
            curve.append(time.perf_counter() - t)
        peak = rss_peak_mb(client.process.pid)
    finally:
        client.stop_server()
    print(f"machine: {machine()}")
    print(f"server: {args.model} + SAE {args.sae}; MCQ on WMDP-bio question {qid} with {len(top)} features\n")
    print("| what | value |\n| --- | --- |")
    print(f"| warm start (process start to first answered info) | {warm:.1f} s |")
    print(f"| cached info request, p50 / p95 | {pct(info, 0.5) * 1000:.1f} / {pct(info, 0.95) * 1000:.1f} ms |")
    print(f"| MCQ call, first for this question (builds its cache) | {first * 1000:.0f} ms |")
    print(f"| MCQ call, one clamp value, p50 / p95 | {pct(one, 0.5) * 1000:.0f} / {pct(one, 0.95) * 1000:.0f} ms |")
    print(f"| MCQ call, 21-point curve, median | {statistics.median(curve):.2f} s |")
    print(f"| server peak RSS | {peak:.0f} MB |")


if __name__ == "__main__":
    main()
