"""Attack bench runs on disk: one folder per run, one fsynced line per finished row.

Why line by line: the full bench takes a quarter of an hour on the embedded model (a row up to
four minutes), and the server may be cancelled, stopped or killed at any time. Layout under
``<cache_dir>/attacks/<run_id>/``:

* ``spec.json``   the validated spec, resolved (the target's probe set and part filled in, the
  rows planned: ``[[defence, attack], ...]``), the model namespace and creation time (atomic);
* ``header.json`` what the result says above its rows (known questions, defences), once read;
* ``rows.jsonl``  one JSON line per finished row (``bench.run_one``'s dict), fsynced at once; a
  torn last line (killed mid-write) is dropped and the file rewritten;
* ``status.json`` written once the run ends (done / cancelled / failed); a resumed run loses it.
  No status file means unfinished: on start such runs (for the loaded model) are queued again,
  and every row already in ``rows.jsonl`` is kept, never computed again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_core.core import cache as C

log = logging.getLogger("unlearn_core.server.attacks")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENDED = ("done", "cancelled", "failed")


def row_key(row: dict) -> tuple[str, str]:
    return row["defence"], row["attack"]


@dataclass
class AttackRun:
    id: str
    spec: dict
    namespace: str
    created: float
    status: str = "queued"  # queued | running | done | cancelled | failed | paused
    rows: list[dict] = field(default_factory=list)
    header: dict | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    note: str | None = None
    done_at_start: int = 0
    phase: str | None = None
    current: str | None = None
    rows_started: float | None = None  # when this run's rows phase began ...
    row_seconds: list[float] = field(default_factory=list)  # ... and how long each row it computed took
    last_row_end: float | None = None
    setup_s: float = 0.0  # the setup (defences, known questions) of the run that read the header
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def total(self) -> int:
        return len(self.spec["rows"])

    @property
    def done(self) -> int:
        return len(self.rows)

    def eta_s(self, now: float | None = None) -> float | None:
        """Rows left times this run's mean row time, less the time already spent on the next one
        (None before this run's first row: rows differ tenfold, so no guess before one is in)."""
        if self.status != "running" or not self.row_seconds:
            return None
        mean = sum(self.row_seconds) / len(self.row_seconds)
        since = (time.time() if now is None else now) - (self.last_row_end or time.time())
        left = self.total - self.done
        return round(max(0.0, left * mean - since), 1) if left else 0.0

    def summary(self) -> dict:
        s = self.spec
        running = self.status == "running"
        return {
            "id": self.id,
            "status": self.status,
            "target": s["target"],
            "defences": list(s["defences"]),
            "attacks": list(s["attacks"]),
            "part": s.get("part"),
            "probes": s.get("probes"),
            "done": self.done,
            "total": self.total,
            "done_at_start": self.done_at_start,
            "phase": self.phase if running else None,
            "current": self.current if running else None,
            "eta_s": self.eta_s(),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "note": self.note,
        }

    def result(self) -> dict:
        """The bench's result with the rows finished so far, in the planned order."""
        order = {tuple(k): i for i, k in enumerate(self.spec["rows"])}
        rows = sorted(self.rows, key=lambda r: order.get(row_key(r), len(order)))
        h = self.header or {}
        return {
            "id": self.id,
            "status": self.status,
            "complete": self.status == "done",
            **h,
            "target": h.get("target", self.spec["target"]),
            "part": h.get("part", self.spec.get("part")),
            "probes": h.get("probes", self.spec.get("probes")),
            "rows": rows,
            "wall_s": round(self.setup_s + sum(float(r.get("wall_s") or 0) for r in rows), 1),
        }


class AttackStore:
    """Files of every run; each write is atomic or an fsynced append."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, run_id: str) -> Path:
        if not RUN_ID_RE.match(run_id):
            raise KeyError(f"no attack run {run_id!r}")
        return self.root / run_id

    def create(self, spec: dict, namespace: str) -> AttackRun:
        run = AttackRun(time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8], spec, namespace, time.time())
        meta = {"id": run.id, "spec": spec, "namespace": namespace, "created": run.created}
        C.atomic_write_json(self.dir(run.id) / "spec.json", meta)
        return run

    def write_header(self, run: AttackRun, header: dict, setup_s: float) -> None:
        run.header, run.setup_s = header, setup_s
        C.atomic_write_json(self.dir(run.id) / "header.json", {"header": header, "setup_s": setup_s})

    def append(self, run: AttackRun, row: dict) -> None:
        with open(self.dir(run.id) / "rows.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_rows(self, run_id: str) -> list[dict]:
        """Valid rows, the first of each (defence, attack); a torn or junk line is dropped and the file fixed."""
        return C.read_rows(self.dir(run_id) / "rows.jsonl", row_key, f"attack run {run_id}")

    def finish(self, run: AttackRun, status: str) -> None:
        run.status, run.finished = status, time.time()
        C.atomic_write_json(
            self.dir(run.id) / "status.json", {"status": status, "error": run.error, "finished": run.finished}
        )

    def reopen(self, run: AttackRun) -> None:
        """An ended run made unfinished again (resumed): its rows stay, its status file goes."""
        (self.dir(run.id) / "status.json").unlink(missing_ok=True)
        run.finished = None

    def load_all(self) -> list[AttackRun]:
        runs = []
        if not self.root.is_dir():
            return runs
        for d in sorted(self.root.iterdir()):
            meta = C.read_json(d / "spec.json") if d.is_dir() and RUN_ID_RE.match(d.name) else None
            if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
                continue
            run = AttackRun(d.name, meta["spec"], meta.get("namespace", ""), float(meta.get("created", 0)))
            run.rows = self.read_rows(run.id)
            head = C.read_json(d / "header.json")
            if isinstance(head, dict):
                run.header, run.setup_s = head.get("header"), float(head.get("setup_s") or 0)
            st = C.read_json(d / "status.json")
            if isinstance(st, dict) and st.get("status") in ENDED:
                run.status, run.error, run.finished = st["status"], st.get("error"), st.get("finished")
            runs.append(run)
        return sorted(runs, key=lambda r: r.created)
