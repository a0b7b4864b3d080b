"""The model lock: re-entrant, handed over in order (interactive before background), every hold timed.

Why one lock: interventions are TransformerLens hooks attached to the one shared model for the
duration of a forward pass, so two overlapping requests could see each other's hooks. Every
use of the model (tokenizer included: fast tokenizers are not re-entrant) goes through
``ServerState.model()``, which holds the single ``ModelLock``.

The lock hands itself over in order: interactive requests (any HTTP request) first, then
background job steps, so a sweep never makes a user wait more than one step. Every hold is
timed (``HoldStats``, in ``/api/info`` as ``lock_stats``; ``bench/lock.py`` measures them).
"""

from __future__ import annotations

import threading
import time
from collections import deque


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else 0.0


class HoldStats:
    """How long the model lock was held (outermost holds), overall and per label (what held it),
    and how long interactive acquirers waited for it. Keeps the last ``keep`` of each."""

    def __init__(self, keep: int = 512):
        self.keep = keep
        self._lock = threading.Lock()
        self.n = 0
        self.longest: tuple[str, float] = ("", 0.0)
        self.recent: deque[float] = deque(maxlen=keep)
        self.labels: dict[str, dict] = {}
        self.waits: deque[float] = deque(maxlen=keep)
        self.max_wait = 0.0

    def hold(self, label: str, seconds: float) -> None:
        with self._lock:
            self.n += 1
            self.recent.append(seconds)
            if seconds > self.longest[1]:
                self.longest = (label, seconds)
            d = self.labels.setdefault(label, {"n": 0, "max": 0.0, "last": deque(maxlen=self.keep)})
            d["n"] += 1
            d["max"] = max(d["max"], seconds)
            d["last"].append(seconds)

    def wait(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            self.max_wait = max(self.max_wait, seconds)

    def summary(self) -> dict:
        with self._lock:
            return {
                "n": self.n,
                "max_hold_s": round(self.longest[1], 4),
                "p95_hold_s": round(_pct(list(self.recent), 0.95), 4),
                "longest": [self.longest[0], round(self.longest[1], 4)] if self.n else None,
                "max_wait_s": round(self.max_wait, 4),
                "p95_wait_s": round(_pct(list(self.waits), 0.95), 4),
                "by_label": {
                    k: {
                        "n": d["n"],
                        "max_hold_s": round(d["max"], 4),
                        "p95_hold_s": round(_pct(list(d["last"]), 0.95), 4),
                        "last_hold_s": round(d["last"][-1], 4),
                    }
                    for k, d in sorted(self.labels.items())
                },
            }


class ModelLock:
    """A re-entrant lock that hands itself over in order, interactive acquirers first.

    Why not ``threading.RLock``: it is not fair. A thread that releases it and acquires it again
    at once (long work taken in steps) nearly always gets it back before a waiting thread wakes,
    so releasing "between chunks" let nobody in. Here a release with waiters hands the lock
    straight to the next one: the first waiting *interactive* acquirer (any HTTP request), else
    the first waiting *background* one (the job worker, see ``ServerState.background``); a
    background acquirer also waits while any interactive one does. The owning thread may acquire
    again (it counts; only the outermost release frees the lock). Outermost holds are timed and
    recorded under the label given to ``acquire`` (``HoldStats``).
    """

    def __init__(self, stats: HoldStats | None = None):
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._since = 0.0
        self._label = ""
        self._interactive: deque[int] = deque()
        self._background: deque[int] = deque()
        self.stats = stats or HoldStats()

    def acquire(
        self, blocking: bool = True, timeout: float = -1, *, background: bool = False, label: str = "model"
    ) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            t0 = time.perf_counter()
            if self._owner is None and not self._interactive and (not background or not self._background):
                self._take(me, label)
            else:
                if not blocking:
                    return False
                q = self._background if background else self._interactive
                q.append(me)
                end = None if timeout is None or timeout < 0 else t0 + timeout
                while self._owner != me:
                    left = None if end is None else end - time.perf_counter()
                    if left is not None and left <= 0:
                        q.remove(me)
                        self._cond.notify_all()  # a background waiter may go now
                        return False
                    self._cond.wait(left)
                self._depth, self._label = 1, label  # handed over by release()
            waited = time.perf_counter() - t0
        if not background:
            self.stats.wait(waited)
        return True

    def _take(self, me: int, label: str) -> None:
        self._owner, self._depth, self._since, self._label = me, 1, time.perf_counter(), label

    def release(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner != me:
                raise RuntimeError("cannot release a model lock this thread does not hold")
            self._depth -= 1
            if self._depth:
                return
            now = time.perf_counter()
            held, label = now - self._since, self._label
            nxt = (
                self._interactive.popleft()
                if self._interactive
                else (self._background.popleft() if self._background else None)
            )
            self._owner, self._depth, self._since = nxt, (1 if nxt is not None else 0), now
            if nxt is not None:
                self._cond.notify_all()
        self.stats.hold(label, held)

    def __enter__(self) -> "ModelLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def held_for(self) -> float:
        """Seconds the current hold has lasted (0 when free)."""
        with self._cond:
            return time.perf_counter() - self._since if self._owner is not None else 0.0

    def interactive_waiting(self) -> int:
        return len(self._interactive)

    def owned(self) -> bool:
        return self._owner == threading.get_ident()
