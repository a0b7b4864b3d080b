"""Evaluation jobs on a Ray cluster: the configurations phase of a sweep split over workers.

Why this shape: the expensive part of a sweep is scoring every configuration on every
question; the setup (known filter, feature statistics, selection, baseline, loss) stays in the
driver, which owns the job store. Each worker is a Ray actor that builds its *own* engine from
the driver's settings (``EngineRecipe``: a settings dict, never weights or activations), once,
and reuses it for every task. A task is one configuration group (the clamp values of one
(threshold, N) selection) on one shard of one question set; it returns correct/total counts per
configuration, summed in the driver exactly as the local job sums its steps (both go through
``sweep.add_step``), so results are identical. A group's rows are written (fsynced) once all its
shards are in: partial groups are not persisted, so a killed driver recomputes at most the
groups in flight and never duplicates a row.

Fault tolerance: actors restart after a crash (``max_restarts``); a task whose actor died is
re-submitted to another worker (``RayActorError``), and results are keyed by (group, set, shard)
so a task answered twice counts once. Ray is imported lazily: the app and local jobs never need it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .data import Question
from .engine import Engine
from .interventions import Intervention

log = logging.getLogger("unlearn_core.ray_backend")

MAX_ATTEMPTS = 4  # a task whose worker died this many times fails the job
IN_FLIGHT_PER_WORKER = 2  # one running, one queued behind it: hides the round trip


@dataclass(frozen=True)
class EngineRecipe:
    """How a worker builds its engine: the settings (paths must exist on every node) and
    whether it is the tiny test backend. What crosses the network instead of a model."""

    settings: dict
    tiny: bool = False

    @classmethod
    def of(cls, engine: Engine) -> "EngineRecipe":
        s = dataclasses.asdict(engine.settings)
        return cls(settings=s, tiny=engine.settings.model == "tiny" and "tiny" in engine.saes)

    def build(self) -> Engine:
        from .settings import Settings

        settings = Settings(**self.settings)
        if self.tiny:
            from .tiny import tiny_engine

            engine = tiny_engine(cache_dir=settings.cache_dir)
            engine.settings.data_dir = settings.data_dir
            return engine
        from .engine import load_engine

        return load_engine(settings, progress=False)


@dataclass(frozen=True)
class Task:
    """One configuration group on one shard of one question set (keyed: idempotent)."""

    group: int
    set_name: str
    shard: int
    questions: list[Question]
    configs: list[list[Intervention]]

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.group, self.set_name, self.shard)


@dataclass
class TaskResult:
    key: tuple[int, str, int]
    counts: list[tuple[int, int]]  # (correct, total) per configuration of the group
    pid: int
    seconds: float


class EngineWorker:
    """The actor's body: one engine, loaded once, scoring tasks (``sweep.count_in_steps``)."""

    def __init__(self, recipe: EngineRecipe, task_delay_s: float = 0.0):
        t0 = time.time()
        self.engine = recipe.build()
        self.task_delay_s = task_delay_s  # tests: keep a task running long enough to kill its worker
        self.load_s = time.time() - t0

    def run(self, task: Task) -> TaskResult:
        from .sweep import count_in_steps

        t0 = time.time()
        counts = [(r.correct, r.total) for r in count_in_steps(self.engine, task.questions, task.configs)]
        if self.task_delay_s:
            time.sleep(self.task_delay_s)
        return TaskResult(task.key, counts, os.getpid(), time.time() - t0)

    def info(self) -> dict:
        return {"pid": os.getpid(), "load_s": self.load_s}


def start_ray(workers: int, address: str | None = None) -> bool:
    """Connect to ``address`` / ``$RAY_ADDRESS``, else start a local Ray instance with ``workers``
    CPUs on 127.0.0.1 (no dashboard, no usage stats). True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    # local workers import this package: put it on their path (a cluster's nodes must install it)
    root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    return True


@dataclass
class RayPool:
    """``workers`` engine actors and the dispatch loop (bounded in-flight tasks, re-submission
    of a dead worker's tasks elsewhere, results keyed so each task counts once)."""

    recipe: EngineRecipe
    workers: int = 2
    address: str | None = None
    task_delay_s: float = 0.0
    actors: list = field(default_factory=list)
    started_ray: bool = False
    retried: int = 0  # tasks re-submitted after their worker died (for tests and logs)

    def start(self) -> "RayPool":
        import ray

        self.started_ray = start_ray(self.workers, self.address)
        cls = ray.remote(num_cpus=1, max_restarts=MAX_ATTEMPTS, max_task_retries=0)(EngineWorker)
        self.actors = [cls.remote(self.recipe, self.task_delay_s) for _ in range(self.workers)]
        ray.get([a.info.remote() for a in self.actors])  # engines loaded (errors surface here)
        return self

    def infos(self) -> list[dict]:
        import ray

        return ray.get([a.info.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self.started_ray and ray.is_initialized():
            ray.shutdown()

    def run(self, tasks: list[Task], on_result: Callable[[Task, TaskResult], None],
            check: Callable[[], None] = lambda: None) -> None:
        """Every task once, results in completion order; ``check`` (cancel/stop) between results."""
        import ray
        from ray.exceptions import RayActorError

        todo = list(reversed(tasks))  # popped from the end: submission order = ``tasks`` order
        attempts: dict[tuple, int] = {}
        avoid: dict[tuple, int] = {}  # a task's last failed worker: retried on another one
        flight: dict[Any, tuple[Task, int]] = {}
        load = [0] * len(self.actors)
        done: set[tuple] = set()
        try:
            while todo or flight:
                check()
                while todo and min(load) < IN_FLIGHT_PER_WORKER:
                    task = todo.pop()
                    order = sorted(range(len(self.actors)), key=lambda i: (i == avoid.get(task.key), load[i]))
                    w = order[0]
                    flight[self.actors[w].run.remote(task)] = (task, w)
                    load[w] += 1
                ready, _ = ray.wait(list(flight), num_returns=1, timeout=0.2)
                for ref in ready:
                    task, w = flight.pop(ref)
                    load[w] -= 1
                    try:
                        res = ray.get(ref)
                    except RayActorError as e:
                        attempts[task.key] = attempts.get(task.key, 0) + 1
                        if attempts[task.key] >= MAX_ATTEMPTS:
                            raise RuntimeError(f"task {task.key} failed on {MAX_ATTEMPTS} workers: {e}") from e
                        log.warning("worker %d died during task %s; re-submitting it elsewhere", w, task.key)
                        avoid[task.key] = w
                        self.retried += 1
                        todo.append(task)
                        continue
                    if task.key in done:  # answered twice: counted once
                        continue
                    done.add(task.key)
                    on_result(task, res)
        finally:
            for ref in flight:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort: the task may be running
                    pass


def shard(questions: list, parts: int) -> list[list]:
    """``questions`` in ``parts`` contiguous shards (fewer when there are fewer questions)."""
    if not questions:
        return []
    size = math.ceil(len(questions) / max(1, parts))
    return [questions[i : i + size] for i in range(0, len(questions), size)]


def evaluate_groups(pool: RayPool, sets: dict[str, list[Question]], groups: list[list[list[Intervention]]],
                    on_group: Callable[[int, list[dict]], None], check: Callable[[], None] = lambda: None,
                    shards_per_set: int | None = None) -> None:
    """Accuracies of every group's configurations on every set (``{set: accuracy}`` per
    configuration, None for an empty set, as ``jobs.Sweep.shared_accuracies``), handed to
    ``on_group(index, accs)`` as soon as all of a group's shards are in."""
    from .sweep import ConfigResult

    parts = shards_per_set or len(pool.actors)
    tasks = [Task(g, name, k, part, configs) for g, configs in enumerate(groups)
             for name, qs in sets.items() for k, part in enumerate(shard(qs, parts))]
    left = {g: 0 for g in range(len(groups))}
    for t in tasks:
        left[t.group] += 1
    totals = {g: {name: [ConfigResult(0, 0) for _ in configs] for name in sets} for g, configs in enumerate(groups)}

    def emit(g: int) -> None:
        accs = [{name: totals[g][name][i].table_accuracy() for name in sets}
                for i in range(len(groups[g]))]
        on_group(g, accs)

    for g in range(len(groups)):  # a group with no questions at all is complete now
        if not left[g]:
            emit(g)

    def on_result(task: Task, res: TaskResult) -> None:
        for tot, (c, n) in zip(totals[task.group][task.set_name], res.counts):
            tot.correct += c
            tot.total += n
        left[task.group] -= 1
        if not left[task.group]:
            emit(task.group)

    pool.run(tasks, on_result, check)
