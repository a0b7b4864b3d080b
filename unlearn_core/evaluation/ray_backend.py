"""Evaluation jobs on a Ray cluster: the configurations phase of a sweep split over workers.

Why this shape: the expensive part of a sweep is scoring every configuration on every
question; the setup (known filter, feature statistics, selection, baseline, loss) stays in the
driver, which owns the job store. Each worker is a Ray actor that builds its *own* engine from
the driver's settings (``EngineRecipe``: a settings dict, never weights or activations), once,
and reuses it for every task. Questions travel as references (set spec, position, id): each
worker loads the set from its own data directory and checks the ids, so a node whose copy of
the data differs fails loudly instead of scoring other questions. A task is one configuration group
(the clamp values of one
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
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from unlearn_core.core.paths import REPO_ROOT
from unlearn_core.data.loaders import Question
from unlearn_core.data.questions import questions_digest
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.engine import Engine

log = logging.getLogger("unlearn_core.evaluation.ray_backend")

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
        from unlearn_core.core.settings import Settings

        settings = Settings(**self.settings)
        if self.tiny:
            from unlearn_core.model.tiny import tiny_engine

            engine = tiny_engine(cache_dir=settings.cache_dir)
            engine.settings.data_dir = settings.data_dir
            return engine
        from unlearn_core.model.engine import load_engine

        return load_engine(settings, progress=False)


@dataclass(frozen=True)
class Task:
    """One configuration group on one shard of one question set (keyed: idempotent). The
    questions are ``refs`` into the set ``source`` (a question-set spec): (position, id), and
    ``digest`` the content the driver saw there (``questions_digest``), so a worker whose copy has
    the same ids with other text refuses the task instead of scoring other questions."""

    group: int
    set_name: str
    shard: int
    source: str
    refs: tuple[tuple[int, str], ...]
    configs: list[list[Intervention]]
    digest: str = ""

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.group, self.set_name, self.shard)


@dataclass(frozen=True)
class LossWindows:
    """Which text a loss-added task scores: the windows ``features.windows_for`` cuts from
    ``corpus`` (the worker rebuilds them from its own data and checks ``digest``)."""

    corpus: str
    n_tokens: int
    ctx: int
    digest: str  # of every window's token ids

    @staticmethod
    def digest_of(windows: list[list[int]]) -> str:
        return hashlib.sha256(json.dumps(windows).encode()).hexdigest()


@dataclass(frozen=True)
class LossTask:
    """One configuration group's NLL on windows [start, stop) (batch-aligned, so each window is
    scored in the same batch as ``metrics.mean_nll`` scores it: the sums are bit-for-bit its)."""

    group: int
    shard: int
    text: LossWindows
    start: int
    stop: int
    configs: list[list[Intervention]]

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.group, "loss", self.shard)


@dataclass
class TaskResult:
    key: tuple[int, str, int]
    counts: list  # scoring: (correct, total) per configuration; loss: its windows' (nll sum, tokens)
    pid: int
    seconds: float  # the worker's compute time
    questions: int = 0  # how many questions (scoring) or windows (loss) the task scored
    started: float = 0.0  # wall clock on the worker: compute began / ended
    ended: float = 0.0
    submitted: float = 0.0  # wall clock on the driver: sent / answer received
    received: float = 0.0

    def record(self) -> dict:
        """What a job keeps of a task (``task_overheads`` reads it back)."""
        return {
            "key": list(self.key),
            "pid": self.pid,
            "seconds": round(self.seconds, 4),
            "questions": self.questions,
            **{k: getattr(self, k) for k in ("started", "ended", "submitted", "received")},
        }


def task_overheads(records: list[dict]) -> list[float]:
    """Ray's own time per task, in seconds: from the moment the task could have started (sent,
    or its worker's previous task ended) to the moment it did, plus from its end to the driver
    holding the answer. Queueing behind another task is not overhead; scheduling, pickling and
    the round trip are. Wall clocks of one machine (on a cluster, node clocks may disagree)."""
    prev_end: dict[int, float] = {}
    out = [0.0] * len(records)
    for i in sorted(range(len(records)), key=lambda i: records[i]["started"]):
        r = records[i]
        ready = max(r["submitted"], prev_end.get(r["pid"], 0.0))
        out[i] = max(0.0, r["started"] - ready) + max(0.0, r["received"] - r["ended"])
        prev_end[r["pid"]] = r["ended"]
    return out  # in the order of ``records``


class EngineWorker:
    """The actor's body: one engine, loaded once, scoring tasks (``sweep.count_in_steps``)."""

    def __init__(self, recipe: EngineRecipe, task_delay_s: float = 0.0):
        t0 = time.time()
        self.engine = recipe.build()
        self.task_delay_s = task_delay_s  # tests: keep a task running long enough to kill its worker
        self.sets: dict[str, list[Question]] = {}
        self.windows: dict[LossWindows, list[list[int]]] = {}
        self.load_s = time.time() - t0

    def loss_windows(self, text: LossWindows) -> list[list[int]]:
        """The windows of ``text``, cut once from this node's copy of the corpus."""
        if text not in self.windows:
            from unlearn_core.features.stats import corpus_docs, windows_for

            w = windows_for(self.engine, corpus_docs(self.engine, text.corpus), text.n_tokens, text.ctx)
            if LossWindows.digest_of(w) != text.digest:
                raise ValueError(
                    f"the loss windows of {text.corpus!r} differ on this worker: its data "
                    "directory or tokenizer differs from the driver's"
                )
            self.windows[text] = w
        return self.windows[text]

    def questions(self, source: str, refs: tuple[tuple[int, str], ...], digest: str = "") -> list[Question]:
        """The referenced questions of ``source``, loaded once from this node's data directory
        (and, given the driver's ``digest``, checked to have the content the driver scored)."""
        if source not in self.sets:
            from unlearn_core.data.loaders import load_question_set

            # the driver validated the spec (the server refuses paths from requests)
            self.sets[source] = load_question_set(source, self.engine.settings.data_dir).questions
        qs = self.sets[source]
        out = []
        for i, qid in refs:
            if i >= len(qs) or qs[i].id != qid:
                raise ValueError(
                    f"question {qid!r} is not at position {i} of {source!r} on this worker: "
                    "its data directory differs from the driver's"
                )
            out.append(qs[i])
        if digest and questions_digest(out) != digest:
            raise ValueError(
                f"the questions of {source!r} on this worker have the driver's ids but other content: "
                "its data directory differs from the driver's"
            )
        return out

    def run(self, task: "Task | LossTask") -> TaskResult:
        t0 = time.time()
        if isinstance(task, LossTask):
            from unlearn_core.evaluation.metrics import NLL_BATCH, window_nlls

            windows = self.loss_windows(task.text)
            out = []
            for ivs in task.configs:
                hooks = self.engine.hooks(ivs)
                out.append(
                    [
                        r
                        for s in range(task.start, task.stop, NLL_BATCH)
                        for r in window_nlls(self.engine, windows[s : min(s + NLL_BATCH, task.stop)], hooks)
                    ]
                )
            n = task.stop - task.start
        else:
            from unlearn_core.evaluation.sweep import count_in_steps

            qs = self.questions(task.source, task.refs, task.digest)
            out = [(r.correct, r.total) for r in count_in_steps(self.engine, qs, task.configs)]
            n = len(qs)
        if self.task_delay_s:
            time.sleep(self.task_delay_s)
        t1 = time.time()
        return TaskResult(task.key, out, os.getpid(), t1 - t0, n, started=t0, ended=t1)

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
    root = str(REPO_ROOT)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
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

    def run(
        self, tasks: list[Task], on_result: Callable[[Task, TaskResult], None], check: Callable[[], None] = lambda: None
    ) -> None:
        """Every task once, results in completion order; ``check`` (cancel/stop) between results."""
        import ray
        from ray.exceptions import RayActorError

        todo = list(reversed(tasks))  # popped from the end: submission order = ``tasks`` order
        attempts: dict[tuple, int] = {}
        avoid: dict[tuple, int] = {}  # a task's last failed worker: retried on another one
        flight: dict[Any, tuple[Task, int]] = {}
        sent: dict[tuple, float] = {}
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
                    sent[task.key] = time.time()
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
                    res.submitted, res.received = sent[task.key], time.time()
                    on_result(task, res)
        finally:
            for ref in flight:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort: the task may be running
                    pass


def shard(questions: list, parts: int) -> list[tuple]:
    """``questions`` in ``parts`` contiguous shards (fewer when there are fewer questions)."""
    if not questions:
        return []
    size = math.ceil(len(questions) / max(1, parts))
    return [tuple(questions[i : i + size]) for i in range(0, len(questions), size)]


def question_refs(full: list[Question], chosen: list[Question]) -> tuple[tuple[int, str], ...]:
    """(position in ``full``, id) of each of ``chosen`` (a filtered subset of ``full``)."""
    where = {q: i for i, q in enumerate(full)}
    missing = [q.id for q in chosen if q not in where]
    if missing:
        raise ValueError(f"questions not in their set: {missing[:5]}")
    return tuple((where[q], q.id) for q in chosen)


def make_tasks(
    sets: dict[str, tuple[str, list[Question], list[Question]]],
    groups: list[list[list[Intervention]]],
    parts: int,
    loss: tuple[LossWindows, int] | None = None,
) -> list["Task | LossTask"]:
    """Every group on every shard of every set, and (with ``loss``: the text and its number of
    windows) on batch-aligned shards of the loss windows, the group's loss tasks first (they are
    the longest); ``sets`` maps a name to (spec, the whole set as loaded, the questions to score)."""
    from unlearn_core.evaluation.metrics import NLL_BATCH

    refs = {name: question_refs(full, chosen) for name, (_, full, chosen) in sets.items()}
    cuts = []
    if loss is not None and loss[1]:
        batches = math.ceil(loss[1] / NLL_BATCH)
        per = math.ceil(batches / max(1, parts)) * NLL_BATCH
        cuts = [(a, min(a + per, loss[1])) for a in range(0, loss[1], per)]
    tasks: list = []
    for g, configs in enumerate(groups):
        tasks += [LossTask(g, k, loss[0], a, b, configs) for k, (a, b) in enumerate(cuts)]
        tasks += [
            Task(g, name, k, sets[name][0], part, configs, questions_digest([sets[name][1][i] for i, _ in part]))
            for name in sets
            for k, part in enumerate(shard(list(refs[name]), parts))
        ]
    return tasks


def evaluate_groups(
    pool: RayPool,
    sets: dict[str, tuple[str, list[Question], list[Question]]],
    groups: list[list[list[Intervention]]],
    on_group: Callable[[int, list[dict], list], None],
    check: Callable[[], None] = lambda: None,
    shards_per_set: int | None = None,
    loss: tuple[LossWindows, int] | None = None,
) -> list[dict]:
    """Every group's configurations on the workers, handed to ``on_group(index, accs, nlls)`` as
    soon as all of the group's tasks are in: ``accs`` per configuration ``{set: accuracy}`` (None
    for an empty set), as ``jobs.Sweep.shared_accuracies``; ``nlls`` per configuration the mean
    NLL on the loss windows, summed in window order as ``metrics.mean_nll`` (None without
    ``loss``). ``sets`` and ``loss`` as for ``make_tasks``; by default each is cut into one shard
    per worker. Returns each task's ``TaskResult.record()``."""
    from unlearn_core.evaluation.metrics import NLLSum
    from unlearn_core.evaluation.sweep import ConfigResult

    tasks = make_tasks(sets, groups, shards_per_set or len(pool.actors), loss)
    left = {g: 0 for g in range(len(groups))}
    for t in tasks:
        left[t.group] += 1
    totals = {g: {name: [ConfigResult(0, 0) for _ in configs] for name in sets} for g, configs in enumerate(groups)}
    loss_parts: dict[int, dict[int, list]] = {g: {} for g in range(len(groups))}  # group -> shard -> rows per config

    def emit(g: int) -> None:
        accs = [{name: totals[g][name][i].table_accuracy() for name in sets} for i in range(len(groups[g]))]
        nlls: list = [None] * len(groups[g])
        if loss_parts[g]:
            for i in range(len(groups[g])):
                acc = NLLSum()
                for k in sorted(loss_parts[g]):
                    acc.add(loss_parts[g][k][i])
                nlls[i] = acc.mean
        on_group(g, accs, nlls)

    for g in range(len(groups)):  # a group with no questions at all is complete now
        if not left[g]:
            emit(g)

    records = []

    def on_result(task: "Task | LossTask", res: TaskResult) -> None:
        records.append(res.record())
        if isinstance(task, LossTask):
            loss_parts[task.group][task.shard] = res.counts
        else:
            for tot, (c, n) in zip(totals[task.group][task.set_name], res.counts):
                tot.correct += c
                tot.total += n
        left[task.group] -= 1
        if not left[task.group]:
            emit(task.group)

    pool.run(tasks, on_result, check)
    return records
