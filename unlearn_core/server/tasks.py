"""Long requests as tasks: submitted (202 with an id), run in the background, polled for progress.

Why: a synchronous request holds its HTTP connection for as long as it runs, longer than a
client waits and longer than a shutdown should (a 10k-token perplexity takes minutes on the
embedded model). A task runs the same computation as the synchronous endpoint, in one worker
thread, taking the model lock in the same steps as an interactive request (not behind jobs),
and reports ``done``/``total`` steps and an ETA from its rate. Totals are announced by the
stepped work itself (``ServerState.expect``) as it learns them, so ``total`` can grow while it
runs (a cached clean baseline adds no steps at all).

On disk, under ``<cache_dir>/tasks/<id>/``: ``request.json`` (kind and body, atomic) when
submitted, ``result.json`` once it ends. A task the server was stopped in (SIGTERM) has no
result file: it is queued again on the next start, like a sweep job.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unlearn_core.core import cache as C
from unlearn_core.model.engine import Engine
from unlearn_core.server.state import ServerState, ShuttingDown, cancel_item, lookup

log = logging.getLogger("unlearn_core.server.tasks")
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENDED = ("done", "cancelled", "failed")
KEEP = 256  # ended tasks kept in memory (their files stay on disk)


class TaskCancelled(Exception):
    pass


class TaskInterrupted(Exception):
    """The server is stopping: the task stays unfinished on disk and runs again after a restart."""


@dataclass
class Task:
    id: str
    kind: str
    body: dict
    created: float
    status: str = "queued"  # queued | running | done | cancelled | failed
    done: int = 0
    total: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    note: str | None = None
    result: dict | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at this run's rate so far (None before the first step)."""
        if self.status != "running" or not self.started or self.done <= 0 or self.total <= 0:
            return None
        rate = self.done / max(1e-9, (time.time() if now is None else now) - self.started)
        return round(max(0, self.total - self.done) / rate, 1)

    def summary(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "done": self.done,
            "total": max(self.total, self.done),
            "eta_s": self.eta_s(),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "note": self.note,
            "result": self.result,
        }


class Progress:
    """What ``ServerState.tracked`` hands the stepped work: counts steps, stops a cancelled task."""

    def __init__(self, task: Task, stop: threading.Event):
        self.task, self.stop = task, stop

    def expect(self, n: int) -> None:
        self.task.total += int(n)

    def step(self) -> None:
        self.task.done += 1

    def check(self) -> None:
        if self.stop.is_set():
            raise TaskInterrupted()
        if self.task.cancel.is_set():
            raise TaskCancelled()


class TaskRunner:
    """The task worker. ``kinds`` maps a kind to ``run(state, body) -> dict`` (the response)."""

    def __init__(self, state: ServerState, kinds: dict[str, Callable[[ServerState, dict], dict]]):
        self.state, self.kinds = state, kinds
        self.tasks: dict[str, Task] = {}
        self.queue: queue.Queue[str] = queue.Queue()
        self.stop_event = threading.Event()
        self.root: Path | None = None
        self._lock = threading.Lock()

    def start(self, engine: Engine) -> None:
        """Called once the engine is loaded: re-queue the tasks a stopped server left unfinished."""
        self.root = Path(engine.settings.cache_dir) / "tasks"
        for d in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            req = C.read_json(d / "request.json") if TASK_ID_RE.match(d.name) else None
            if not isinstance(req, dict) or req.get("kind") not in self.kinds:
                continue
            task = Task(d.name, req["kind"], req.get("body") or {}, float(req.get("created", 0)))
            ended = C.read_json(d / "result.json")
            if isinstance(ended, dict) and ended.get("status") in ENDED:
                task.status, task.result, task.error = ended["status"], ended.get("result"), ended.get("error")
                task.finished = ended.get("finished")
            else:
                task.note = "resumed after a server restart"
                self.queue.put(task.id)
            self.tasks[task.id] = task
        threading.Thread(target=self._loop, name="task-worker", daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()

    def submit(self, kind: str, body: dict) -> Task:
        engine = self.state.engine()  # waits for the model (503 while it loads)
        self.root = self.root or Path(engine.settings.cache_dir) / "tasks"  # before start() ran, too
        task = Task(time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8], kind, body, time.time())
        C.atomic_write_json(self.root / task.id / "request.json", {"kind": kind, "body": body, "created": task.created})
        with self._lock:
            self.tasks[task.id] = task
            ended = [t for t in self.tasks.values() if t.status in ENDED]
            for old in sorted(ended, key=lambda t: t.created)[: max(0, len(ended) - KEEP)]:
                del self.tasks[old.id]
        self.queue.put(task.id)
        return task

    def get(self, task_id: str) -> Task:
        return lookup(self.tasks, task_id, "task")

    def cancel(self, task_id: str) -> Task:
        return cancel_item(self.get(task_id), ("queued",), lambda t: self._end(t, "cancelled"))

    def _end(self, task: Task, status: str, result: dict | None = None, error: str | None = None) -> None:
        task.status, task.result, task.error, task.finished = status, result, error, time.time()
        if status == "done":
            task.done = task.total = max(task.total, task.done)
        C.atomic_write_json(
            self.root / task.id / "result.json",
            {"status": status, "result": result, "error": error, "finished": task.finished},
        )

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                task = self.tasks.get(self.queue.get(timeout=0.2))
            except queue.Empty:
                continue
            if task is not None and task.status == "queued":
                self.run(task)

    def run(self, task: Task) -> None:
        task.status, task.started, task.done, task.total = "running", time.time(), 0, 0
        try:
            with self.state.tracked(Progress(task, self.stop_event)):
                result = self.kinds[task.kind](self.state, task.body)
            self._end(task, "done", result)
        except TaskCancelled:
            self._end(task, "cancelled")
        except (TaskInterrupted, ShuttingDown):
            task.status, task.note = "queued", "interrupted by a server stop; runs again after a restart"
        except (KeyError, ValueError) as e:  # bad values (the synchronous endpoint's 4xx)
            self._end(task, "failed", error=str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
        except Exception as e:  # noqa: BLE001 - a failed task must not kill the worker
            log.exception("task %s failed", task.id)
            self._end(task, "failed", error=f"{type(e).__name__}: {e}")


def task_kind(model: Any, compute: Callable[[ServerState, Any], Any]) -> Callable[[ServerState, dict], dict]:
    """A kind's runner: the body validated by the request ``model``, the response as a dict."""

    def run(state: ServerState, body: dict) -> dict:
        return compute(state, model(**body)).model_dump()

    return run
