"""Attack bench runs started over HTTP: progress per row, cancel, resume (:mod:`.attack_store`
keeps the files).

One worker thread runs one run at a time, through the same functions as the CLI's ``attack``
(``attacks.bench``): the defences, the known questions, then one row per defence x attack. The
model lock is taken as background work (every waiting HTTP request goes first) and never for
long: the defences' statistics and gate calibration in the steps the target endpoints use, and
every model use of the bench through ``Inputs.run`` (a hold scores one ``holds.score_chunks``
chunk: up to 8 short questions, a few-shot prompt alone; or one known-filter step, or one batch
of generations; for ``relearn``, one training step or one scoring chunk, the defence's weights
applied within the hold: ``relearn.holder``).

Cancel stops the run at its next hold; a finished row is on disk at once, so a cancelled, failed
or killed run resumes (``resume``, or the next start) without computing any finished row again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from unlearn_core.model.engine import Engine
from unlearn_core.server.attack_store import AttackRun, AttackStore
from unlearn_core.server.schemas import AttackSpec
from unlearn_core.server.state import ServerState, cancel_item, lookup
from unlearn_core.training.variants import is_variant

log = logging.getLogger("unlearn_core.server.attacks")
CLAMP_DEFENCES = ("default", "clamp", "gated", "dsg")


class Cancelled(Exception):
    pass


class Stopping(Exception):
    """The server is stopping: the run stays unfinished on disk and resumes on the next start."""


class _Checks:
    """What ``ServerState.tracked`` hands the stepped target work: no counting, the run's checks."""

    def __init__(self, check: Callable[[], None]):
        self.check = check

    def expect(self, n: int) -> None:
        pass

    def step(self) -> None:
        pass


class AttackRunner:
    """The attack bench's worker and the in-memory view of every run."""

    def __init__(self, state: ServerState, allow_delay: bool = False):
        self.state = state
        self.allow_delay = allow_delay
        self.store: AttackStore | None = None
        self.runs: dict[str, AttackRun] = {}
        self.queue: queue.Queue[str] = queue.Queue()
        self.stop_event = threading.Event()
        self._lock = threading.Lock()

    def start(self, engine: Engine) -> None:
        """Called once the engine is loaded: list the runs on disk, queue the unfinished ones."""
        self.store = AttackStore(Path(engine.settings.cache_dir) / "attacks")
        ns = engine.cache_namespace()
        for run in self.store.load_all():
            if run.status == "queued":  # no status file: unfinished
                if run.namespace == ns:
                    run.note = f"resumed after a server stop with {run.done} of {run.total} rows already done"
                    self.queue.put(run.id)
                else:
                    run.status, run.note = "paused", f"created for model {run.namespace!r}; not resumed here"
            self.runs[run.id] = run
        threading.Thread(target=self._loop, name="attack-worker", daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()

    def _store(self) -> AttackStore:
        self.state.engine()  # wait for loading: the store exists once the engine does
        for _ in range(100):
            if self.store is not None:
                return self.store
            time.sleep(0.05)
        raise RuntimeError("attack store not ready")

    # -- API

    def offered(self) -> dict[str, str]:
        from unlearn_core.attacks.bench import ATTACKS

        return {name: threat for name, (threat, _) in ATTACKS.items()}

    def submit(self, spec: AttackSpec) -> AttackRun:
        d = self.prepare(spec)
        run = self._store().create(d, self.state.engine().cache_namespace())
        with self._lock:
            self.runs[run.id] = run
        self.queue.put(run.id)
        return run

    def prepare(self, spec: AttackSpec) -> dict:
        """The spec as stored, every name checked now (a bad one fails the request, not the run):
        the target (404), the attacks and RMU runs (400), the probe set (404 unknown, 400 when
        its probes do not link to the target's questions or a probe attack has none)."""
        from unlearn_core.attacks.bench import ATTACKS, PROBE_ATTACKS, expand, row_label
        from unlearn_core.data.probes import link
        from unlearn_core.server.jobs import check_variants
        from unlearn_core.server.target_api import get_target

        engine = self.state.engine()
        if spec.delay_per_row and not self.allow_delay:
            raise ValueError("delay_per_row is a test option, only honoured by a --tiny server")
        t = get_target(engine, spec.target)
        bad = [a for a in spec.attacks if a not in ATTACKS]
        if bad:
            raise ValueError(f"unknown attack(s) {bad}; choose from {', '.join(ATTACKS)}")
        check_variants(engine, [d for d in spec.defences if is_variant(d)])
        probes = spec.probes or t.probes
        if probes:
            found = self.state.question_set(probes).questions  # unknown names and paths: 404
            link(found, self.state.question_set(t.forget_questions).questions, t.forget_questions)
        elif any(a in PROBE_ATTACKS for a in spec.attacks):
            raise ValueError(
                f"target {t.name!r} has no probe set: name one (probes), or choose attacks without "
                f"probes ({', '.join(a for a in ATTACKS if a not in PROBE_ATTACKS)})"
            )
        return {
            "target": t.name,
            "defences": list(spec.defences),
            "attacks": list(spec.attacks),
            "probes": probes,
            "part": spec.part or t.eval_part,
            "delay_per_row": spec.delay_per_row,
            "rows": [[d, row_label(a, k)] for d in spec.defences for a, k in expand(spec.attacks)],
        }

    def get(self, run_id: str) -> AttackRun:
        return lookup(self.runs, run_id, "attack run")

    def cancel(self, run_id: str) -> AttackRun:
        return cancel_item(self.get(run_id), ("queued", "paused"), lambda r: self._store().finish(r, "cancelled"))

    def resume(self, run_id: str) -> AttackRun:
        """A cancelled or failed run queued again: its finished rows are kept, the rest computed."""
        with self._lock:
            run = self.get(run_id)
            if run.status in ("queued", "running"):
                raise ValueError(f"attack run {run_id} is {run.status} already")
            if run.status == "done":
                raise ValueError(f"attack run {run_id} is finished: every row is in; start a new run to repeat it")
            if run.status == "paused":
                raise ValueError(f"attack run {run_id} was made for another model: {run.note}")
            self._store().reopen(run)
            run.cancel = threading.Event()
            run.status, run.error = "queued", None
            run.note = f"resumed with {run.done} of {run.total} rows already done"
        self.queue.put(run.id)
        return run

    # -- worker

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                run = self.runs.get(self.queue.get(timeout=0.2))
            except queue.Empty:
                continue
            if run is not None and run.status == "queued" and not self.execute(run):
                return

    def execute(self, run: AttackRun) -> bool:
        """Run ``run`` to its end (done, cancelled or failed); False when the server is stopping
        (it stays unfinished on disk and resumes on the next start)."""
        run.status, run.started, run.done_at_start = "running", time.time(), run.done
        run.row_seconds, run.rows_started, run.last_row_end, run.current = [], None, None, None
        try:
            with self.state.background():
                BenchWork(self, run).run()
            self.store.finish(run, "done")
        except Cancelled:
            self.store.finish(run, "cancelled")
        except Stopping:
            run.status = "queued"
            return False
        except Exception as e:  # noqa: BLE001 - a failed run must not kill the worker
            if not isinstance(e, (KeyError, ValueError)):
                log.exception("attack run %s failed", run.id)
            run.error = str(e.args[0]) if isinstance(e, KeyError) and e.args else f"{e}"
            self.store.finish(run, "failed")
        return True


class BenchWork:
    """One run's work: the defences, the known questions, then every row not on disk yet."""

    def __init__(self, runner: AttackRunner, run: AttackRun):
        self.runner, self.run_, self.state = runner, run, runner.state

    def check(self) -> None:
        if self.runner.stop_event.is_set():
            raise Stopping()
        if self.run_.cancel.is_set():
            raise Cancelled()

    def held(self, fn: Callable):
        """``fn(engine)`` in one hold of the model lock (``bench.Inputs.run``), after the checks."""
        self.check()
        with self.state.model("attack bench") as engine:
            return fn(engine)

    def run(self) -> None:
        from unlearn_core.attacks import bench as B
        from unlearn_core.server.target_api import get_target

        run, spec, engine = self.run_, self.run_.spec, self.state.engine()
        t = get_target(engine, spec["target"])
        with self.state.tracked(_Checks(self.check)):  # the target work's holds check for a cancel
            run.phase = "defences"
            defences = self.defences(engine, t, spec["defences"])
            run.phase = "known questions"
            inputs = B.load_inputs(engine, t, spec["probes"], spec["part"], run=self.held)
        B.check_probes(t, spec["attacks"], inputs)
        if run.header is None:  # a resumed run's known questions are the same (read from the cache)
            self.runner.store.write_header(run, B.header(t, spec["part"], inputs, defences), time.time() - run.started)
        run.phase, run.rows_started = "rows", time.time()
        run.last_row_end = run.rows_started
        done = {(r["defence"], r["attack"]) for r in run.rows}
        for d, a, k in B.plan(defences, spec["attacks"]):
            label = B.row_label(a, k)
            if (d.name, label) in done:
                continue
            self.check()
            run.current = f"{d.name} × {label}"
            t0 = time.time()
            row = B.run_one(engine, inputs, d, a, k)
            self.finish_row(row, time.time() - t0)

    def defences(self, engine: Engine, t, names: list[str]) -> list:
        """``defences.parse_defences`` in one short hold, once the default intervention's
        statistics and question scores (``target_api.default_intervention``, stepped) and the gate
        calibrations are on disk (each retain corpus in a hold of its own)."""
        from unlearn_core.attacks.defences import parse_defences

        if any(n in CLAMP_DEFENCES for n in names):
            from unlearn_core.server.target_api import default_intervention

            iv = default_intervention(self.state, engine, t)
            if iv.gate is None and any(n in ("gated", "dsg") for n in names):
                from unlearn_core.method.gate import calibrate

                pct = t.intervention.gate_percentile
                for corpus in t.retain_corpora:
                    self.held(lambda e, c=corpus: calibrate(e, iv.sae_key, iv.features, c, pct))
        return self.held(lambda e: parse_defences(e, t, ",".join(names)))

    def finish_row(self, row: dict, seconds: float) -> None:
        run = self.run_
        self.runner.store.append(run, row)
        run.rows.append(row)
        run.row_seconds.append(seconds)
        run.last_row_end = time.time()
        delay = float(run.spec.get("delay_per_row") or 0)
        if delay and self.runner.allow_delay:  # test hook, --tiny servers only
            end = time.time() + delay
            while time.time() < end:
                self.check()
                time.sleep(0.05)
