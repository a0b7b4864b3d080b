"""What the server holds between requests: the engine, the model lock and in-memory caches.

The lock is :mod:`.model_lock`; long work takes it in steps (:mod:`.steps`); the activation
LRU is :mod:`.activations`; what a request may name is checked in :mod:`.access`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

from unlearn_core.data import loaders as D
from unlearn_core.model.engine import Engine
from unlearn_core.server.access import TARGETS_LOCK, load_question_set, origin_stamp, trusted_files
from unlearn_core.server.activations import ActivationLRU, PromptActs, compute_prompt_acts
from unlearn_core.server.model_lock import ModelLock

log = logging.getLogger("unlearn_core.server")

LOCK_BUDGET_S = 1.0  # long work keeps the model lock for about this long (plus one step), then lets others in
LOCK_YIELD_S = 0.3  # ... or this long while a request waits (a short request still finishes in one hold)


class EngineNotReady(RuntimeError):
    """The model is still loading (or failed to load); mapped to 503."""


def lookup(items: dict, key: str, what: str):
    """``items[key]``, or the KeyError naming ``what`` that the routes answer with 404 (one wording
    for jobs, tasks and RMU runs)."""
    item = items.get(key)
    if item is None:
        raise KeyError(f"no {what} {key!r}")
    return item


def cancel_item(item, idle: tuple[str, ...], end: Callable[[Any], None]):
    """Sets ``item.cancel``; an item in an ``idle`` status (no worker will look at the flag) is
    ended now by ``end``. Shared by the task, job and RMU runners."""
    item.cancel.set()
    if item.status in idle:
        end(item)
    return item


class ShuttingDown(RuntimeError):
    """The server got SIGTERM: long request work stops at its next lock step; mapped to 503."""


class _ChecksOnly:
    """A task's progress that passes on its checks (cancel, shutdown) but counts no steps."""

    def __init__(self, outer: Any):
        self.outer = outer

    def expect(self, n: int) -> None:
        pass

    def step(self) -> None:
        pass

    def check(self) -> None:
        self.outer.check()


class ServerState:
    """The engine (built once by ``engine_factory``, in a background thread) and shared caches."""

    def __init__(self, engine_factory: Callable[[], Engine], lru_capacity: int = 64, load_wait_s: float = 600.0):
        self.engine_factory = engine_factory
        self.lock = ModelLock()
        self.lock_budget_s = LOCK_BUDGET_S
        self.lock_yield_s = LOCK_YIELD_S
        self._local = threading.local()
        self.acts = ActivationLRU(lru_capacity)
        self.load_wait_s = load_wait_s
        self.started = time.time()
        self.status = "loading"
        self.error = ""
        self._engine: Engine | None = None
        self._ready = threading.Event()
        self._load_started = False
        self._load_lock = threading.Lock()
        self._sets: OrderedDict[str, tuple[D.QuestionSet, tuple]] = OrderedDict()  # spec -> (set, origin_stamp)
        self._sets_lock = threading.Lock()
        self.targets_lock = TARGETS_LOCK
        self._once: dict[Any, threading.Lock] = {}
        self._once_lock = threading.Lock()
        self.on_ready: list[Callable[[Engine], None]] = []
        self.stopping = threading.Event()  # set on SIGTERM: stepped request work ends at its next hold

    # -- loading

    def start_loading(self) -> None:
        with self._load_lock:
            if self._load_started:
                return
            self._load_started = True
        threading.Thread(target=self._load, name="engine-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            engine = self.engine_factory()
        except Exception as e:  # noqa: BLE001 - reported through /api/health
            log.exception("model failed to load")
            self.status, self.error = "error", f"model failed to load: {type(e).__name__}: {e}"
            self._ready.set()
            return
        self._engine = engine
        self.status = "ok"
        self._ready.set()
        for cb in self.on_ready:
            try:
                cb(engine)
            except Exception:  # noqa: BLE001
                log.exception("startup hook failed")

    @property
    def engine_if_ready(self) -> Engine | None:
        return self._engine

    def engine(self) -> Engine:
        """The engine, waiting for it to load (lazily started) for up to ``load_wait_s``."""
        self.start_loading()
        if not self._ready.wait(self.load_wait_s):
            raise EngineNotReady("the model is still loading; retry shortly")
        if self._engine is None:
            raise EngineNotReady(self.error or "the model is not available")
        return self._engine

    @contextlib.contextmanager
    def model(self, what: str = "model") -> Iterator[Engine]:
        """The engine with the model lock held: the only way request code touches the model.
        ``what`` labels the hold in ``lock_stats``; a thread inside ``background()`` waits behind
        every interactive request (and its holds are labelled ``background: <what>``)."""
        from unlearn_core.training.variants import applied

        engine = self.engine()
        bg = self.in_background()
        self.lock.acquire(background=bg, label=f"background: {what}" if bg else what)
        try:
            with applied(engine, getattr(self._local, "variant", None)):
                yield engine
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def _thread_set(self, name: str, value: Any) -> Iterator[None]:
        """This thread's ``name`` is ``value`` in the block, and what it was after (nested blocks)."""
        before = getattr(self._local, name, None)
        setattr(self._local, name, value)
        try:
            yield
        finally:
            setattr(self._local, name, before)

    @contextlib.contextmanager
    def variant(self, name: str | None) -> Iterator[None]:
        """Every hold of the model lock this thread takes in the block sees the model variant
        ``name`` ('rmu:<name>' or 'persist:<name>': its delta applied for the hold, the exact weights restored after;
        None or 'base': the model as loaded)."""
        with self._thread_set("variant", None if name in (None, "", "base") else name):
            yield

    def current_variant(self) -> str | None:
        return getattr(self._local, "variant", None)

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """Marks the current thread's model work as background (the job worker): its lock holds
        go after those of every waiting HTTP request."""
        with self._thread_set("background", True):
            yield

    def in_background(self) -> bool:
        return bool(getattr(self._local, "background", False))

    @contextlib.contextmanager
    def tracked(self, progress: Any) -> Iterator[None]:
        """Stepped work this thread runs in the block reports to ``progress`` (``step()`` after each
        step, ``check()`` before each hold: a task's progress, cancel and shutdown)."""
        with self._thread_set("progress", progress):
            yield

    def before_hold(self) -> None:
        """Called by ``run_steps`` before each hold: request work (not background jobs, which stop
        through their own checks and resume after a restart) ends once the server is stopping."""
        if self.stopping.is_set() and not self.in_background():
            raise ShuttingDown("the server is shutting down; retry once it is back")
        progress = getattr(self._local, "progress", None)
        if progress is not None:
            progress.check()

    def expect(self, n: int) -> None:
        """Announce ``n`` more steps to this thread's task (its progress total), if it runs one."""
        progress = getattr(self._local, "progress", None)
        if progress is not None:
            progress.expect(n)

    @contextlib.contextmanager
    def per_item(self, total: int) -> Iterator[Callable[[int], None]]:
        """Inside, this thread's task counts items (questions) instead of steps: ``total`` is
        announced now and the yielded ``tick(n)`` counts n items done; steps count nothing
        (cancel and shutdown still stop it). Without a task, ``tick`` does nothing."""
        outer = getattr(self._local, "progress", None)
        if outer is None:
            yield lambda n: None
            return
        outer.expect(total)

        def tick(n: int) -> None:
            for _ in range(n):
                outer.step()

        with self.tracked(_ChecksOnly(outer)):
            yield tick

    def after_step(self) -> None:
        progress = getattr(self._local, "progress", None)
        if progress is not None:
            progress.step()

    def hold_limit(self) -> float:
        """How long the current hold of stepped work may last: ``lock_budget_s``; ``lock_yield_s``
        while an HTTP request waits; 0 for background work while one waits (it goes at once)."""
        if self.lock.interactive_waiting():
            return 0.0 if self.in_background() else min(self.lock_budget_s, self.lock_yield_s)
        return self.lock_budget_s

    @contextlib.contextmanager
    def once(self, key: Any) -> Iterator[None]:
        """One computation of a disk-cached result at a time per key (not the model lock, and never
        taken while holding it): a second request for the same statistics waits, then reads the
        cache, instead of computing them again chunk by chunk alongside the first."""
        with self._once_lock:
            lk = self._once.setdefault(key, threading.Lock())
        with lk:
            yield

    # -- question sets

    def question_set(self, spec: str) -> D.QuestionSet:
        """A named set ('wmdp-bio', 'mmlu:<subject,...>', 'quiz:bio@heldout!flag', ...), loaded
        once and kept while the files it was read from are unchanged (size and modification time:
        a file edited under the same name is read again). A question *file* is read only when one of the
        server's own targets names
        it (checked before the cache, so a request can never reach a file by its path)."""
        engine = self.engine()
        base = D.split_spec(spec)[0]
        allow = D.is_question_file(base)
        if allow and base not in trusted_files(engine)[0]:
            raise KeyError(
                f"question set {spec!r}: file paths are not accepted by the server; use a named set "
                "(see /api/info question_sets)"
            )
        with self._sets_lock:
            hit = self._sets.get(spec)
        if hit is not None and hit[1] == origin_stamp(hit[0].origin):  # its files unchanged since loaded
            with self._sets_lock:
                if spec in self._sets:
                    self._sets.move_to_end(spec)
            return hit[0]
        qs = load_question_set(spec, engine.settings.data_dir, allow_paths=allow)
        with self._sets_lock:
            self._sets[spec] = (qs, origin_stamp(qs.origin))
            while len(self._sets) > 16:
                self._sets.popitem(last=False)
        return qs

    def drop_question_sets(self, folder: str | Path) -> int:
        """Forget the cached question sets read from files under ``folder`` (a saved target that
        was replaced or deleted); returns how many were dropped."""
        prefix = str(Path(folder).resolve()) + os.sep
        with self._sets_lock:
            gone = [k for k in self._sets if D.split_spec(k)[0].removeprefix("file:").startswith(prefix)]
            for k in gone:
                del self._sets[k]
        return len(gone)

    def find_question(self, spec: str, qid: str) -> tuple[D.QuestionSet, D.Question]:
        qs = self.question_set(spec)
        for q in qs.questions:
            if q.id == qid:
                return qs, q
        raise KeyError(f"no question with id {qid!r} in question set {spec!r}")

    # -- activations

    def prompt_acts(self, engine: Engine, text: str) -> tuple[PromptActs, bool]:
        """Residuals at every SAE hook for ``text`` (BOS prepended); call with the lock held."""
        key = (engine.cache_namespace(), text)
        hit = self.acts.get(key)
        if hit is not None:
            return hit, True
        acts = compute_prompt_acts(engine, text)
        self.acts.put(key, acts)
        return acts, False
