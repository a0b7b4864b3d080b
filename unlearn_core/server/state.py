"""What the server holds between requests: the engine, the model lock and in-memory caches.

Why one lock: interventions are TransformerLens hooks attached to the one shared model for the
duration of a forward pass, so two overlapping requests could see each other's hooks. Every
use of the model (tokenizer included: fast tokenizers are not re-entrant) goes through
``ServerState.model()``, which holds the single re-entrant ``ModelLock``.

No request holds it for long: long work (loss, perplexity, feature statistics, known filters,
MCQ curves, generation, job sweeps) is a sequence of steps run by ``run_steps``, which keeps
the lock for as many steps as fit in ``LOCK_BUDGET_S`` (``LOCK_YIELD_S`` while a request
waits) and then lets the waiting request in. Each step is computed exactly as in the one-pass
functions, in the same order and with the same batches, so the numbers are bit-for-bit the
same. Steps on the embedded model (2-core CPU; ``bench/lock.py`` measures the holds): six
blocks of a loss batch's forward pass or one window's unembedding (~0.4 s), one generated
token (~0.1 s), 8 clamp values of a curve (cloze ~1.5 s: one batch of the fast path, which
cannot be split without changing its numbers; a sweep's step, one question with up to 8
configurations, is the same batch); estimated, not measured there: one batch of 16
statistics windows (~0.7 s), one cloze question of a known filter (~0.5 s). Not split at all:
one forward pass over one text (``/api/activations``, ``/api/features/search``, a question's
first fast-path cache, a generation's prompt; ~2 s at the 20k-character limit, estimated),
and one corpus's examples in a dashboard (k + 8 windows; ~0.7 s at the default k = 8).

The lock hands itself over in order: interactive requests (any HTTP request) first, then
background job steps, so a sweep never makes a user wait more than one step. Every hold is
timed (``HoldStats``, in ``/api/info`` as ``lock_stats``; ``bench/lock.py`` measures them).

The activation LRU keeps, per prompt text, the residual stream at every SAE hook point (not
the SAE codes: a 16k-wide code is ~25x the residual), so /api/activations and
/api/features/search on a repeated prompt skip the forward pass.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from unlearn_core.data import loaders as D
from unlearn_core.model.engine import Engine
from unlearn_core.data.question_files import QUIZ_FILES
from unlearn_core.features.stats import layer_of_hook
from unlearn_core.model.forward import tokenize

log = logging.getLogger("unlearn_core.server")

LOCK_CHUNK = 8  # questions per known-filter cache entry (the disk cache's unit, not a lock hold)
LOCK_BUDGET_S = 1.0  # long work keeps the model lock for about this long (plus one step), then lets others in
LOCK_YIELD_S = 0.3  # ... or this long while a request waits (a short request still finishes in one hold)


class EngineNotReady(RuntimeError):
    """The model is still loading (or failed to load); mapped to 503."""


# ---------------------------------------------------------------- activation LRU


@dataclass
class PromptActs:
    ids: list[int]
    resid: dict[str, torch.Tensor]  # hook name -> [1, T, d_model]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.resid.values())


class ActivationLRU:
    """A small LRU bounded by entry count and bytes; counts hits and misses for /api/info."""

    def __init__(self, capacity: int = 64, max_bytes: int = 256 << 20):
        self.capacity, self.max_bytes = capacity, max_bytes
        self._d: OrderedDict[tuple, PromptActs] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.bytes = 0

    def get(self, key: tuple) -> PromptActs | None:
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: tuple, value: PromptActs) -> None:
        with self._lock:
            if key in self._d:
                self.bytes -= self._d.pop(key).nbytes
            self._d[key] = value
            self.bytes += value.nbytes
            while self._d and (len(self._d) > self.capacity or self.bytes > self.max_bytes):
                _, old = self._d.popitem(last=False)
                self.bytes -= old.nbytes

    def stats(self) -> dict:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "entries": len(self._d), "capacity": self.capacity,
                    "bytes": self.bytes, "max_bytes": self.max_bytes}


# ---------------------------------------------------------------- the model lock


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
            return {"n": self.n, "max_hold_s": round(self.longest[1], 4),
                    "p95_hold_s": round(_pct(list(self.recent), .95), 4),
                    "longest": [self.longest[0], round(self.longest[1], 4)] if self.n else None,
                    "max_wait_s": round(self.max_wait, 4), "p95_wait_s": round(_pct(list(self.waits), .95), 4),
                    "by_label": {k: {"n": d["n"], "max_hold_s": round(d["max"], 4),
                                     "p95_hold_s": round(_pct(list(d["last"]), .95), 4),
                                     "last_hold_s": round(d["last"][-1], 4)} for k, d in sorted(self.labels.items())}}


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

    def acquire(self, blocking: bool = True, timeout: float = -1, *, background: bool = False,
                label: str = "model") -> bool:
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
            nxt = self._interactive.popleft() if self._interactive else (
                self._background.popleft() if self._background else None)
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


# ---------------------------------------------------------------- server state


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
        from unlearn_core.training.rmu import applied

        engine = self.engine()
        bg = self.in_background()
        self.lock.acquire(background=bg, label=f"background: {what}" if bg else what)
        try:
            with applied(engine, getattr(self._local, "variant", None)):
                yield engine
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def variant(self, name: str | None) -> Iterator[None]:
        """Every hold of the model lock this thread takes in the block sees the model variant
        ``name`` ('rmu:<name>': its delta applied for the hold, the exact weights restored after;
        None or 'base': the model as loaded)."""
        before = getattr(self._local, "variant", None)
        self._local.variant = None if name in (None, "", "base") else name
        try:
            yield
        finally:
            self._local.variant = before

    def current_variant(self) -> str | None:
        return getattr(self._local, "variant", None)

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """Marks the current thread's model work as background (the job worker): its lock holds
        go after those of every waiting HTTP request."""
        before = self.in_background()
        self._local.background = True
        try:
            yield
        finally:
            self._local.background = before

    def in_background(self) -> bool:
        return getattr(self._local, "background", False)

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
        a file edited under the same name is read again). A question *file* is read only when one of the server's own targets names
        it (checked before the cache, so a request can never reach a file by its path)."""
        engine = self.engine()
        base = D.split_spec(spec)[0]
        allow = D.is_question_file(base)
        if allow and base not in trusted_files(engine)[0]:
            raise KeyError(f"question set {spec!r}: file paths are not accepted by the server; use a named set "
                           "(see /api/info question_sets)")
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


def origin_stamp(origin: str) -> tuple:
    """(path, size, mtime) of each local file a question set was read from (``origin`` lists
    them, ';'-separated); hub and package origins have no stamp and never change under a name."""
    out = []
    for part in origin.split(";"):
        try:
            st = os.stat(part)
        except (OSError, ValueError):
            continue
        out.append((part, st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_question_set(spec: str, data_dir: str | None, allow_paths: bool = False) -> D.QuestionSet:
    """``data.load_question_set`` without file paths (unless the caller vouches for the spec),
    with unknown MMLU subjects checked first (KeyError -> 404)."""
    subjects = D.question_set_subjects(spec)
    if subjects is not None:
        check_subjects(subjects, data_dir)
    return D.load_question_set(spec, data_dir, allow_paths=allow_paths)


# Held while a target defined in the app is written or deleted, and while targets are read: the
# name check and the save are one step, and a read never meets a folder being deleted.
TARGETS_LOCK = threading.RLock()


def server_targets(engine: Engine) -> dict:
    """The targets this server offers: the engine's (built-in, its targets file, saved ones)."""
    from unlearn_core.features.targets import engine_targets

    with TARGETS_LOCK:
        return engine_targets(engine)


def drop_unfinished_saves(engine: Engine) -> list[str]:
    """Remove ``<saved targets>/.<name>.tmp`` folders a server stopped mid-save left behind (the
    loader would read them as targets). Under ``TARGETS_LOCK``, so never a save in progress."""
    import shutil

    from unlearn_core.features.targets import saved_targets_dir

    folder = saved_targets_dir(engine.settings)
    gone = []
    with TARGETS_LOCK:
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                    gone.append(p.name)
    if gone:
        log.warning("removed unfinished target saves: %s", ", ".join(gone))
    return gone


def trusted_files(engine: Engine) -> tuple[set[str], set[str]]:
    """(question-file bases, corpus-file names) that the server's own targets name: the only
    paths it reads. A broken targets file trusts nothing beyond the built-in targets."""
    from unlearn_core.features.targets import TargetError, load_targets

    try:
        targets = server_targets(engine)
    except TargetError:
        targets = load_targets(None)
    sets, corpora = set(), set()
    for t in targets.values():
        for spec in (t.forget_questions, *t.retain_questions):
            base = D.split_spec(spec)[0]
            if D.is_question_file(base):
                sets.add(base)
        for c in (t.forget_corpus, t.forget_corpus_fallback, *t.retain_corpora, t.loss_corpus, t.ppl_corpus):
            name = (c or "").partition("@")[0]
            if name and not _named_corpus(name):
                corpora.add(name)
    return sets, corpora


def check_subjects(subjects: list[str], data_dir: str | None) -> None:
    known = set(D.mmlu_subjects(data_dir))
    if not subjects:
        raise KeyError("no MMLU subject given")
    bad = [s for s in subjects if known and s not in known]
    if bad:
        raise KeyError(f"unknown MMLU subject(s) {bad[:5]}; see /api/info question_sets")


QUIZ_SETS = [("quiz:bio", "bio quiz: textbook biology and infectious disease (the bio-basics target)"),
             ("quiz:sherlock", "Sherlock Holmes quiz: canon and story facts (the sherlock target)"),
             ("quiz:retain", "general-knowledge quiz (retain set)"),
             ("quiz:retain!overlaps_bio", "general-knowledge quiz without the records that touch biology")]


def question_set_names(data_dir: str | None, extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """The quizzes first (the targets' sets), then ``extra`` (other target sets), then WMDP/MMLU."""
    out = list(QUIZ_SETS) + list(extra or [])
    out += [("wmdp-bio", "WMDP-bio (falls back to labelled MMLU biology when missing)"),
            ("mmlu:side-effects", "MMLU " + ", ".join(D.SIDE_EFFECT_SUBJECTS))]
    out += [(f"mmlu:{s}", f"MMLU {s.replace('_', ' ')}") for s in D.mmlu_subjects(data_dir)]
    first: dict[str, str] = {}
    for n, d in out:
        first.setdefault(n, d)  # first occurrence of each name, in order
    return list(first.items())


CORPUS_PARTS = ("all", "train", "heldout")


def corpus_names() -> list[str]:
    return (sorted(D.CORPORA) + ["wmdp-bio-text"] + [f"quiz:{q}" for q in QUIZ_FILES]
            + ["mmlu:<subject,...>"])


def _named_corpus(name: str) -> bool:
    return name in D.CORPORA or name == "wmdp-bio-text" or name.startswith("mmlu:") or (
        name.startswith("quiz:") and name[5:] in QUIZ_FILES)


def check_corpus(spec: str, data_dir: str | None, trusted: set[str] | frozenset = frozenset()) -> str:
    """Only named corpora (and the files ``trusted`` lists: those the server's own targets name):
    the engine also reads file paths, which a server must not expose."""
    name, _, part = spec.partition("@")
    if part and part not in CORPUS_PARTS:
        raise ValueError(f"corpus part must be one of {CORPUS_PARTS}, got {part!r}")
    if name in D.CORPORA or name == "wmdp-bio-text" or name in trusted:
        return spec
    if name.startswith("quiz:"):
        if name[5:] not in QUIZ_FILES:
            raise ValueError(f"unknown corpus {spec!r}: no quiz {name[5:]!r}; known: "
                             f"{', '.join('quiz:' + q for q in QUIZ_FILES)}")
        return spec
    if name.startswith("mmlu:"):
        try:
            check_subjects([s for s in name[5:].split(",") if s], data_dir)
        except KeyError as e:
            raise ValueError(f"unknown corpus {spec!r}: {e.args[0]}") from None
        return spec
    raise ValueError(f"unknown corpus {spec!r}; known: {corpus_names()} (optionally '@train' or '@heldout')")


@torch.inference_mode()
def compute_prompt_acts(engine: Engine, text: str) -> PromptActs:
    model = engine.model
    toks = model.to_tokens(text, prepend_bos=True, truncate=False)
    check_length(engine, toks.shape[1])
    hooks = sorted({s.hook_name for s in engine.saes.values()})
    grabbed: dict[str, torch.Tensor] = {}

    def grab(x, hook):
        grabbed[hook.name] = x.detach().clone()

    with model.hooks(fwd_hooks=[(h, grab) for h in hooks]):
        model(toks.to(model.cfg.device), stop_at_layer=max(layer_of_hook(h) for h in hooks))
    return PromptActs(toks[0].tolist(), grabbed)


def check_length(engine: Engine, n_tokens: int, extra: int = 0) -> None:
    n_ctx = engine.model.cfg.n_ctx
    if n_tokens + extra > n_ctx:
        more = f" plus {extra} new tokens" if extra else ""
        raise ValueError(f"text is {n_tokens} tokens{more}, longer than the model's context ({n_ctx} tokens)")


def codes_for(engine: Engine, acts: PromptActs, sae_key: str) -> torch.Tensor:
    """SAE codes [1, T, d_sae], exactly as ``features.encode_tokens`` computes them."""
    loaded = engine.saes[sae_key]
    with torch.inference_mode():
        return loaded.sae.encode(acts.resid[loaded.hook_name].to(loaded.sae.W_enc.dtype))


def token_activations(engine: Engine, acts: PromptActs, sae_key: str, features: list[int], top_k: int) -> dict:
    from unlearn_core.features.stats import token_activations_from_codes

    return token_activations_from_codes(engine, sae_key, acts.ids, codes_for(engine, acts, sae_key)[0], features,
                                        top_k)


def search(engine: Engine, acts: PromptActs, sae_key: str, k: int, background=None, rank: str = "max",
           dense_last: bool = True) -> list[dict]:
    """``features.search_from_codes`` on the prompt's cached codes; ``background`` is a corpus's
    FeatureStats (or None)."""
    from unlearn_core.features.stats import search_from_codes

    return search_from_codes(engine, acts.ids, codes_for(engine, acts, sae_key)[0], k,
                             background.freq if background is not None else None,
                             background.max_act if background is not None else None, rank, dense_last)


# ---------------------------------------------------------------- chunked long work


def fits_context(engine: Engine, q: D.Question, margin: int = 8) -> bool:
    """Whether the question's prompt fits the model's context (a longer one would crash the forward)."""
    from unlearn_core.evaluation.mcq import cloze_prefix, format_prompt

    model = engine.model
    n_ctx = model.cfg.n_ctx
    if engine.scoring == "cloze":
        tok = model.tokenizer
        n = 1 + len(tok(cloze_prefix(q), add_special_tokens=False)["input_ids"])
        n += max(len(tok(" " + c.strip(), add_special_tokens=False)["input_ids"]) for c in q.choices)
    else:
        _, lens = tokenize(model, [format_prompt(q, engine.prompt_format, model.tokenizer)])
        n = int(lens[0])
    return n + margin <= n_ctx


_END = object()


def run_steps(state: ServerState, steps: Iterable[Callable[[Engine], Any]], what: str,
              should_stop: Callable[[], None] | None = None) -> int:
    """Run every step (a callable given the engine) under the model lock, in order, returning
    how many holds it took. A hold runs steps until the next one, guessed to take as long as the
    last, would end past ``state.hold_limit()``: about a second, a third of one while a request
    waits (so a short request still finishes in one hold, and a waiting one does not wait for a
    whole second of someone else's steps), nothing more for background work while a request
    waits. Then the lock goes to whoever waits and this thread queues for it again. ``steps``
    may be a generator: it is advanced under the lock, so later steps can depend on earlier
    results. ``should_stop`` is called before each hold (a job's cancel check)."""
    it = iter(steps)
    step = next(it, _END)
    holds = 0
    while step is not _END:
        if should_stop:
            should_stop()
        with state.model(what) as engine:
            holds += 1
            t0 = time.perf_counter()
            while True:
                t = time.perf_counter()
                step(engine)
                last = time.perf_counter() - t
                step = next(it, _END)
                if step is _END:
                    break
                if time.perf_counter() - t0 + last > state.hold_limit():
                    break
    return holds


def fit_questions(state: ServerState, questions: list[D.Question], should_stop: Callable[[], None] | None = None,
                  what: str = "context check") -> list[D.Question]:
    """The questions whose prompt fits the model's context (tokenizing each under the lock)."""
    flags: list[bool] = []
    run_steps(state, ((lambda engine, q=q: flags.append(fits_context(engine, q))) for q in questions), what,
              should_stop)
    return [q for q, ok in zip(questions, flags) if ok]


def known_ids_chunked(state: ServerState, questions: list[D.Question], strict: bool = False,
                      should_stop: Callable[[], None] | None = None, what: str = "known filter") -> list[str]:
    """``mcq.known_questions``' computation (the ids, in order), in steps: a batch of 8 orderings
    (letters; as ``score_questions`` batches them) or one question (cloze), then the blanked
    question (strict). A question's later steps are skipped once one ordering is wrong: the
    answer ("all correct") is the same."""
    from unlearn_core.evaluation.mcq import all_orderings, score_questions

    letter = state.engine().scoring == "letter"
    known: list[str] = []

    def steps():  # advanced after each step has run, so ``ok`` is up to date
        for q in questions:
            variants = all_orderings(q) if letter else [q]
            ok = [True]
            for s in range(0, len(variants), 8):
                def part(engine, vs=variants[s : s + 8], ok=ok):
                    ok[0] = all(x.correct for x in score_questions(engine, vs, batch_size=8))

                yield part
                if not ok[0]:
                    break
            if ok[0] and strict:
                def blank(engine, q=q, ok=ok):
                    ok[0] = not score_questions(engine, [q.blanked()])[0].correct

                yield blank
            if ok[0]:
                known.append(q.id)

    run_steps(state, steps(), what, should_stop)
    return known


def select_questions(state: ServerState, questions: list[D.Question], known: bool,
                     should_stop: Callable[[], None] | None = None,
                     strict: bool = False) -> tuple[list[D.Question], int]:
    """(questions that fit the context [and are known], number dropped as too long).

    The known filter is cached on disk per block of ``LOCK_CHUNK`` questions (the key
    ``mcq.known_questions`` uses for that block) and computed in short lock holds
    (``known_ids_chunked``). ``strict`` also drops questions answered right with the question
    text blanked.
    """
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation.mcq import known_path

    fit = fit_questions(state, questions, should_stop)
    skipped = len(questions) - len(fit)
    if not known:
        return fit, skipped
    engine = state.engine()
    out: list[D.Question] = []
    for s in range(0, len(fit), LOCK_CHUNK):
        block = fit[s : s + LOCK_CHUNK]
        path = known_path(engine, block, strict)
        with state.once(path):
            ids = set(C.cached_json(path, lambda: known_ids_chunked(state, block, strict, should_stop)))
        out += [q for q in block if q.id in ids]
    return out, skipped


def score_chunked(state: ServerState, questions: list[D.Question], interventions=None,
                  should_stop: Callable[[], None] | None = None, what: str = "scoring") -> list:
    """``mcq.score_questions(engine, questions, interventions)`` in steps of one batch of 8
    prompts (letters, the batches it uses) or one question (cloze, scored one by one anyway)."""
    from unlearn_core.evaluation.mcq import score_questions

    out: list = []
    per = 8 if state.engine().scoring == "letter" else 1
    run_steps(state, ((lambda engine, qs=questions[s : s + per]: out.extend(score_questions(engine, qs, interventions)))
                      for s in range(0, len(questions), per)), what, should_stop)
    return out


def nll_chunked(state: ServerState, windows: list[list[int]], interventions=None,
                should_stop: Callable[[], None] | None = None, batch_size: int | None = None,
                what: str = "loss") -> tuple[float, int]:
    """``metrics.mean_nll(engine, windows, interventions, batch_size)``, bit for bit, in the steps
    of ``metrics.nll_steps``: a few blocks of a batch's forward pass, one window's unembedding."""
    from unlearn_core.evaluation import metrics as MT

    acc = MT.NLLSum()
    steps = MT.nll_steps(windows, interventions, acc, batch_size or MT.NLL_BATCH, state.engine().model.cfg.n_layers)
    run_steps(state, steps, what, should_stop)
    return acc.mean, acc.n


def clean_nll_chunked(state: ServerState, corpus: str, windows: list[list[int]], batch_size: int | None = None,
                      should_stop: Callable[[], None] | None = None, what: str = "loss") -> float:
    """``metrics.clean_nll_cached`` (same disk cache entry), computed by ``nll_chunked``."""
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation import metrics as MT

    batch_size = batch_size or MT.NLL_BATCH
    with state.model("loss cache key") as engine:  # the namespace names this thread's model variant
        path = MT.clean_nll_path(engine, corpus, windows, batch_size)
    with state.once(path):
        return C.cached_json(path, lambda: nll_chunked(state, windows, None, should_stop, batch_size, what)[0])


def feature_stats_chunked(state: ServerState, sae: str, corpus: str, n_tokens: int, ctx: int = 128,
                          should_stop: Callable[[], None] | None = None, what: str = "feature statistics"):
    """``features.feature_stats`` (same disk cache entry, same numbers), computed one batch of
    16 windows per step; the corpus is read without the lock and tokenized in one hold."""
    from unlearn_core.core import cache as C
    from unlearn_core.features import stats as F

    engine = state.engine()
    docs = F.corpus_docs(engine, corpus)
    with state.model(what):  # the namespace in the path names this thread's model variant
        windows = F.windows_for(engine, docs, n_tokens, ctx)
        path = F.stats_path(engine, sae, corpus, docs, n_tokens, ctx)

    def compute() -> dict:
        acc = F.StatsAccumulator(engine, sae, windows)
        run_steps(state, ((lambda eng, i=i: acc.add(i)) for i in range(acc.n_batches)), what, should_stop)
        return acc.result()

    with state.once(path):
        t = C.cached_tensors(path, compute)
    return F.stats_from(sae, corpus, t, windows)


def finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
