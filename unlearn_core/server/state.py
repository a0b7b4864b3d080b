"""What the server holds between requests: the engine, the model lock and in-memory caches.

Why one lock: interventions are TransformerLens hooks attached to the one shared model for the
duration of a forward pass, so two overlapping requests could see each other's hooks. Every
use of the model (tokenizer included: fast tokenizers are not re-entrant) goes through
``ServerState.model()``, which holds a single re-entrant lock. Long work (known filters, loss,
perplexity, job sweeps) takes the lock per chunk, so interactive requests interleave.

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
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from .. import data as D
from ..engine import Engine
from ..question_files import QUIZ_FILES
from ..features import layer_of_hook
from ..forward import tokenize

log = logging.getLogger("unlearn_core.server")

LOCK_CHUNK = 8  # questions (or loss windows / 2) per lock hold in long work


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


# ---------------------------------------------------------------- server state


class ServerState:
    """The engine (built once by ``engine_factory``, in a background thread) and shared caches."""

    def __init__(self, engine_factory: Callable[[], Engine], lru_capacity: int = 64, load_wait_s: float = 600.0):
        self.engine_factory = engine_factory
        self.lock = threading.RLock()
        self.acts = ActivationLRU(lru_capacity)
        self.load_wait_s = load_wait_s
        self.started = time.time()
        self.status = "loading"
        self.error = ""
        self._engine: Engine | None = None
        self._ready = threading.Event()
        self._load_started = False
        self._load_lock = threading.Lock()
        self._sets: OrderedDict[str, D.QuestionSet] = OrderedDict()
        self._sets_lock = threading.Lock()
        self.targets_lock = TARGETS_LOCK
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
    def model(self) -> Iterator[Engine]:
        """The engine with the model lock held: the only way request code touches the model."""
        engine = self.engine()
        with self.lock:
            yield engine

    # -- question sets

    def question_set(self, spec: str) -> D.QuestionSet:
        """A named set ('wmdp-bio', 'mmlu:<subject,...>', 'quiz:bio@heldout!flag', ...), loaded
        once and kept. A question *file* is read only when one of the server's own targets names
        it (checked before the cache, so a request can never reach a file by its path)."""
        engine = self.engine()
        base = D.split_spec(spec)[0]
        allow = D.is_question_file(base)
        if allow and base not in trusted_files(engine)[0]:
            raise KeyError(f"question set {spec!r}: file paths are not accepted by the server; use a named set "
                           "(see /api/info question_sets)")
        with self._sets_lock:
            if spec in self._sets:
                self._sets.move_to_end(spec)
                return self._sets[spec]
        qs = load_question_set(spec, engine.settings.data_dir, allow_paths=allow)
        with self._sets_lock:
            self._sets[spec] = qs
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
    from ..targets import engine_targets

    with TARGETS_LOCK:
        return engine_targets(engine)


def drop_unfinished_saves(engine: Engine) -> list[str]:
    """Remove ``<saved targets>/.<name>.tmp`` folders a server stopped mid-save left behind (the
    loader would read them as targets). Under ``TARGETS_LOCK``, so never a save in progress."""
    import shutil

    from ..targets import saved_targets_dir

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
    from ..targets import TargetError, load_targets

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
    from ..features import token_activations_from_codes

    return token_activations_from_codes(engine, sae_key, acts.ids, codes_for(engine, acts, sae_key)[0], features,
                                        top_k)


def search(engine: Engine, acts: PromptActs, sae_key: str, k: int, background: torch.Tensor | None) -> list[dict]:
    from ..features import search_from_codes

    return search_from_codes(engine, acts.ids, codes_for(engine, acts, sae_key)[0], k, background)


# ---------------------------------------------------------------- chunked long work


def fits_context(engine: Engine, q: D.Question, margin: int = 8) -> bool:
    """Whether the question's prompt fits the model's context (a longer one would crash the forward)."""
    from ..mcq import cloze_prefix, format_prompt

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


def select_questions(state: ServerState, questions: list[D.Question], known: bool,
                     should_stop: Callable[[], None] | None = None,
                     strict: bool = False) -> tuple[list[D.Question], int]:
    """(questions that fit the context [and are known], number dropped as too long).

    The known filter runs in chunks of ``LOCK_CHUNK`` questions, one lock hold and one disk
    cache entry per chunk, so a long filter never blocks interactive requests for long.
    ``strict`` also drops questions answered right with the question text blanked.
    """
    from ..mcq import known_questions

    with state.model() as engine:
        fit = [q for q in questions if fits_context(engine, q)]
    skipped = len(questions) - len(fit)
    if not known:
        return fit, skipped
    out: list[D.Question] = []
    for s in range(0, len(fit), LOCK_CHUNK):
        if should_stop:
            should_stop()
        with state.model() as engine:
            out += known_questions(engine, fit[s : s + LOCK_CHUNK], strict=strict)
    return out, skipped


def score_chunked(state: ServerState, questions: list[D.Question], interventions=None,
                  should_stop: Callable[[], None] | None = None) -> list:
    from ..mcq import score_questions

    out = []
    for s in range(0, len(questions), LOCK_CHUNK):
        if should_stop:
            should_stop()
        with state.model() as engine:
            out += score_questions(engine, questions[s : s + LOCK_CHUNK], interventions)
    return out


def nll_chunked(state: ServerState, windows: list[list[int]], interventions=None,
                should_stop: Callable[[], None] | None = None) -> tuple[float, int]:
    """``metrics.mean_nll`` over windows, taking the lock per batch of 4 windows."""
    from ..metrics import mean_nll

    total, n = 0.0, 0
    for s in range(0, len(windows), 4):
        if should_stop:
            should_stop()
        with state.model() as engine:
            m, k = mean_nll(engine, windows[s : s + 4], interventions, batch_size=4)
        if k:
            total += m * k
            n += k
    return (total / n if n else float("nan")), n


def finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
