"""Training runs started over HTTP (RMU, and the persistent SAE-guided method: one runner each,
the same code): progress, cancel, and resume after the server is killed.

One worker thread trains one run at a time. Each training step takes the model lock as background
work (every waiting HTTP request goes first) and runs the model with the run's delta swapped in for
that call only (``rmu.train_step``), so other requests never see a half-trained model. The run's
files are ``rmu.train``'s (``<cache_dir>/rmu/<name>/``): a checkpoint every ``rmu.CHECKPOINT_EVERY``
steps, so a killed server loses at most those steps; on start, every run with a spec and neither
a card nor a "cancelled" status is queued again and resumes from its checkpoint.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from unlearn_core.core import cache as C
from unlearn_core.server.state import ServerState, cancel_item, lookup
from unlearn_core.training import persist, rmu

log = logging.getLogger("unlearn_core.server.rmu_jobs")


@dataclass
class RMURun:
    name: str
    target: str
    config: dict
    status: str = "queued"  # queued | running | done | cancelled | failed | paused
    step: int = 0
    steps: int = 0
    eta_s: float | None = None
    started: float | None = None
    error: str | None = None
    note: str | None = None
    last: dict = field(default_factory=dict)  # the last step's losses
    delay_per_step: float = 0.0  # test hook (--tiny servers only)
    cancel: threading.Event = field(default_factory=threading.Event)
    prefix: str = rmu.PREFIX
    history: list = field(default_factory=list)  # every step's losses (the app's training curve)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "variant": self.prefix + self.name,
            "target": self.target,
            "config": self.config,
            "status": self.status,
            "step": self.step,
            "steps": self.steps,
            "eta_s": self.eta_s,
            "error": self.error,
            "note": self.note,
            "last": self.last,
            "history": self.history,
        }


@dataclass(frozen=True)
class Method:
    """What a runner trains: the training module's entry points, by name."""

    label: str
    module: object
    cancelled: type

    def config(self, engine, overrides: dict):
        """The run's settings, checked now (a bad one is a 400, not a failed run)."""
        return self.module.checked_config(engine, overrides)


RMU_METHOD = Method("RMU", rmu, rmu.RMUCancelled)
PERSIST_METHOD = Method("persistent", persist, persist.PersistCancelled)


class RMURunner:
    def __init__(self, state: ServerState, allow_delay: bool = False, method: Method = RMU_METHOD):
        self.method = method
        self.state = state
        self.allow_delay = allow_delay
        self.runs: dict[str, RMURun] = {}
        self.queue: queue.Queue[str] = queue.Queue()
        self.stop_event = threading.Event()
        self._lock = threading.Lock()

    def start(self, engine) -> None:
        """Called once the engine is loaded: list the runs on disk, queue the unfinished ones."""
        m = self.method.module
        for r in m.list_runs(engine.settings.cache_dir):
            run = RMURun(
                r["name"],
                r.get("target", ""),
                r.get("config", {}),
                steps=r.get("config", {}).get("steps", 0),
                prefix=m.PREFIX,
            )
            if r["status"] == "done":
                run.status, run.step = "done", r.get("steps_done", run.steps)
                card = C.read_json(m.run_dir(engine.settings.cache_dir, r["name"]) / "card.json") or {}
                run.history = card.get("history", [])
            elif r["status"] == "cancelled":
                run.status = "cancelled"
            elif r.get("model") != engine.model_name:
                run.status, run.note = "paused", f"trained on {r.get('model')!r}; not resumed here"
            else:
                run.note = "resumed from its last checkpoint"
                self.queue.put(run.name)
            self.runs[run.name] = run
        threading.Thread(target=self._loop, name=f"{m.PREFIX[:-1]}-worker", daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()

    def submit(self, name: str, target_name: str, overrides: dict, delay_per_step: float = 0.0) -> RMURun:
        """Queue run ``name`` (hyperparameters checked now: a bad one is a 400, not a failed run)."""
        from unlearn_core.evaluation.targets import engine_target

        if delay_per_step and not self.allow_delay:
            raise ValueError("delay_per_step is a test option, only honoured by a --tiny server")
        engine = self.state.engine()
        m, label = self.method.module, self.method.label
        m.check_name(name)
        target = engine_target(engine, target_name)  # KeyError -> 404
        cfg = self.method.config(engine, overrides)
        with self._lock:
            old = self.runs.get(name)
            if old is not None and old.status in ("queued", "running"):
                raise ValueError(f"{label} run {name!r} is already {old.status}")
            spec = C.read_json(m.run_dir(engine.settings.cache_dir, name) / "spec.json")
            if spec is not None and old is not None and old.status == "done" and spec.get("config") != cfg.to_dict():
                raise ValueError(
                    f"a {label} run named {name!r} already exists with other settings; choose another name"
                )
            run = RMURun(
                name, target.name, cfg.to_dict(), steps=cfg.steps, delay_per_step=delay_per_step, prefix=m.PREFIX
            )
            self.runs[name] = run
        self.queue.put(name)
        return run

    def get(self, name: str) -> RMURun:
        return lookup(self.runs, name, f"{self.method.label} run")

    def cancel(self, name: str) -> RMURun:
        return cancel_item(self.get(name), ("queued",), lambda r: setattr(r, "status", "cancelled"))

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                name = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            run = self.runs.get(name)
            if run is None or run.status != "queued":
                continue
            if not self.train(run):
                return

    def train(self, run: RMURun) -> bool:
        """Train ``run`` to its end; False when the server is stopping (the run resumes next start)."""
        from unlearn_core.evaluation.targets import engine_target

        engine = self.state.engine()
        run.status, run.started, run.error = "running", time.time(), None

        def progress(rec: dict) -> None:
            run.step, run.steps, run.eta_s = rec["step"], rec["steps"], rec["eta_s"]
            run.last = {k: rec[k] for k in ("forget_loss", "retain_loss", "lm_loss", "loss") if k in rec}
            run.history.append({k: v for k, v in rec.items() if k.endswith("loss") or k == "step"})
            if run.delay_per_step and self.allow_delay:
                time.sleep(run.delay_per_step)

        def should_stop() -> str | None:
            return "stop" if self.stop_event.is_set() else "cancel" if run.cancel.is_set() else None

        def run_step(fn):
            with self.state.model(f"{self.method.module.PREFIX[:-1]} step") as e:
                return fn(e)

        try:
            m = self.method.module
            cfg = m.config_from(run.config)
            target = engine_target(engine, run.target)
            run.history = []
            with self.state.background():
                card = m.train(
                    engine, run.name, target, cfg, progress=progress, should_stop=should_stop, run_step=run_step
                )
            run.status, run.step, run.eta_s = "done", card["steps_done"], 0.0
            run.history = card["history"]
        except self.method.cancelled:
            if self.stop_event.is_set():
                run.status = "queued"
                return False
            run.status = "cancelled"
        except Exception as e:  # noqa: BLE001 - a failed run must not kill the worker
            log.exception("%s run %s failed", self.method.label, run.name)
            run.status, run.error = "failed", f"{type(e).__name__}: {e}"
        return True
