"""Slider neighbours scored ahead of time, so the next key press is answered from memory.

A slider step in the clamp explorer asks for one clamp value c. On this CPU one exact update of
the embedded model costs about 160 ms (mostly reading weights: the 262k-token unembedding and
the blocks after the hook), and a few more values in the same batch cost about 30 ms each. So
after answering c, the server scores c+1 and c-1 in one batch in a background thread,
at the lowest priority (any HTTP request takes the model lock first, see ``state.ModelLock``),
and keeps the scores in a small LRU. When the next press arrives they are there.

The values are the exact ones ``mcq.score_curve`` computes for that question and those
interventions (batched values give the same scores as one value at a time, to fp32 rounding:
tested). Nothing is approximated; only the order of work changes.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from unlearn_core.data.questions import questions_digest

log = logging.getLogger("unlearn_core.server")

NEIGHBOURS = (1.0, -1.0)  # the next key press either way: one small batch, so a press never waits long behind it


def curve_key(set_name: str, question, scoring: str, style: str, interventions, variant: str = "") -> tuple:
    """What a score depends on besides c: the question (its id and a digest of its content: a set
    reloaded with the same ids and other text never gets the old scores), the scoring, the interventions (their
    SAE, features, mode, gate and per-feature scales; score_curve sets every intervention's value to c) and
    the model variant applied (``Engine.variant``: an RMU delta's name and digest; "" for the base model)."""
    ivs = tuple((iv.sae_key, tuple(iv.features), iv.mode, iv.gate, iv.scales) for iv in interventions)
    return (set_name, question.id, questions_digest([question]), scoring, style, ivs) + ((variant,) if variant else ())


def neighbours(value: float, lo: float = 0.0, hi: float = 1e6) -> list[float]:
    return [value + d for d in NEIGHBOURS if lo <= value + d <= hi]


class ScoreLRU:
    """(curve key, c) -> score, bounded; thread-safe."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._d: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, value: float):
        with self._lock:
            k = (key, float(value))
            if k in self._d:
                self._d.move_to_end(k)
                self.hits += 1
                return self._d[k]
            self.misses += 1
            return None

    def has(self, key: Hashable, value: float) -> bool:
        with self._lock:
            return (key, float(value)) in self._d

    def put(self, key: Hashable, value: float, score) -> None:
        with self._lock:
            self._d[(key, float(value))] = score
            self._d.move_to_end((key, float(value)))
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


class Prefetcher:
    """One daemon thread scoring the latest submitted neighbours (older submissions are dropped:
    only where the slider is now matters)."""

    def __init__(self, lru: ScoreLRU, compute: Callable[[Any, list, list[float]], list]):
        # compute(question, interventions, values) -> scores; it takes the model lock itself
        self.lru, self.compute = lru, compute
        self._cv = threading.Condition()
        self._pending: tuple | None = None
        self._thread: threading.Thread | None = None
        self.done = 0  # values scored ahead (for /api/info and tests)
        self.idle = threading.Event()
        self.idle.set()

    def submit(self, key: tuple, question, interventions: list, values: list[float]) -> None:
        values = [v for v in values if not self.lru.has(key, v)]
        if not values:
            return
        with self._cv:
            self._pending = (key, question, interventions, values)
            self.idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="slider-prefetch", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None:
                    self.idle.set()
                    self._cv.wait()
                key, q, ivs, values = self._pending
                self._pending = None
            values = [v for v in values if not self.lru.has(key, v)]
            if not values:
                continue
            try:
                for v, s in zip(values, self.compute(q, ivs, values)):
                    self.lru.put(key, v, s)
                self.done += len(values)
            except Exception:  # a failed guess costs nothing but the log line
                log.exception("slider prefetch failed")
