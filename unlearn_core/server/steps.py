"""Long work in steps under the model lock (``run_steps``) and the computations built on it.

Why steps: no request holds the model lock for long. Long work (loss, perplexity, feature statistics, known filters,
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
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable

from unlearn_core.data import loaders as D
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import tokenize
from unlearn_core.server.state import ServerState

LOCK_CHUNK = 8  # questions per known-filter cache entry (the disk cache's unit, not a lock hold)


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


def run_steps(
    state: ServerState,
    steps: Iterable[Callable[[Engine], Any]],
    what: str,
    should_stop: Callable[[], None] | None = None,
) -> int:
    """Run every step (a callable given the engine) under the model lock, in order, returning
    how many holds it took. A hold runs steps until the next one, guessed to take as long as the
    last, would end past ``state.hold_limit()``: about a second, a third of one while a request
    waits (so a short request still finishes in one hold, and a waiting one does not wait for a
    whole second of someone else's steps), nothing more for background work while a request
    waits. Then the lock goes to whoever waits and this thread queues for it again. ``steps``
    may be a generator: it is advanced under the lock, so later steps can depend on earlier
    results. ``should_stop`` is called before each hold (a job's cancel check), and so is
    ``state.before_hold`` (shutdown, a task's cancel); ``state.after_step`` counts a task's progress."""
    it = iter(steps)
    step = next(it, _END)
    holds = 0
    while step is not _END:
        if should_stop:
            should_stop()
        state.before_hold()
        with state.model(what) as engine:
            holds += 1
            t0 = time.perf_counter()
            while True:
                t = time.perf_counter()
                step(engine)
                state.after_step()
                last = time.perf_counter() - t
                step = next(it, _END)
                if step is _END:
                    break
                if time.perf_counter() - t0 + last > state.hold_limit():
                    break
    return holds


def fit_questions(
    state: ServerState,
    questions: list[D.Question],
    should_stop: Callable[[], None] | None = None,
    what: str = "context check",
) -> list[D.Question]:
    """The questions whose prompt fits the model's context (tokenizing each under the lock)."""
    flags: list[bool] = []
    run_steps(
        state, ((lambda engine, q=q: flags.append(fits_context(engine, q))) for q in questions), what, should_stop
    )
    return [q for q, ok in zip(questions, flags) if ok]


def known_ids_chunked(
    state: ServerState,
    questions: list[D.Question],
    strict: bool = False,
    should_stop: Callable[[], None] | None = None,
    what: str = "known filter",
    tick: Callable[[int], None] | None = None,
) -> list[str]:
    """``mcq.known_questions``' computation (the ids, in order), in its steps
    (``mcq.known_filter_steps``: 8 orderings or 8 cloze questions per step) under the lock.
    ``tick(n)`` is called as n more questions are decided."""
    from unlearn_core.evaluation.mcq import known_filter_steps

    engine = state.engine()
    known: list[str] = []
    steps = known_filter_steps(questions, engine.scoring, engine.prompt_format, strict, known, tick)
    run_steps(state, steps, what, should_stop)
    return known


def select_questions(
    state: ServerState,
    questions: list[D.Question],
    known: bool,
    should_stop: Callable[[], None] | None = None,
    strict: bool = False,
    max_uncached: int | None = None,
    tick: Callable[[int], None] | None = None,
    task: str = "questions_known",
) -> tuple[list[D.Question], int]:
    """(questions that fit the context [and are known], number dropped as too long).

    The known filter is cached on disk per block of ``LOCK_CHUNK`` questions (the key
    ``mcq.known_questions`` uses for that block) and computed in short lock holds
    (``known_ids_chunked``). ``strict`` also drops questions answered right with the question
    text blanked. With ``max_uncached`` (a synchronous request), more questions in blocks not
    cached yet than that is a ``TaskRequired`` (naming the task ``task``) before any is computed. ``tick(n)`` counts the
    questions settled (a task's progress: too long, read from the cache, or checked now).
    """
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation.mcq import known_path
    from unlearn_core.server.sync_limits import check_known

    fit = fit_questions(state, questions, should_stop)
    skipped = len(questions) - len(fit)
    if not known:
        return fit, skipped
    tick = tick or (lambda n: None)
    tick(skipped)
    engine = state.engine()
    blocks = [fit[s : s + LOCK_CHUNK] for s in range(0, len(fit), LOCK_CHUNK)]
    paths = [known_path(engine, block, strict) for block in blocks]
    if max_uncached is not None:
        check_known(sum(len(b) for b, p in zip(blocks, paths) if not C.is_cached(p)), max_uncached, task)
    out: list[D.Question] = []
    for block, path in zip(blocks, paths):
        checked = [0]

        def counted(n: int, checked=checked) -> None:
            checked[0] += n
            tick(n)

        with state.once(path):
            ids = set(
                C.cached_json(path, lambda b=block, t=counted: known_ids_chunked(state, b, strict, should_stop, tick=t))
            )
        tick(len(block) - checked[0])  # the rest of the block came from the cache
        out += [q for q in block if q.id in ids]
    return out, skipped


def score_per_step(state: ServerState) -> int:
    """Questions ``score_chunked`` scores in one step."""
    return 8 if state.engine().scoring == "letter" else 1


def nll_step_count(state: ServerState, windows: list[list[int]], batch_size: int | None = None) -> int:
    """How many steps ``nll_chunked`` takes over ``windows`` (building the steps runs nothing)."""
    from unlearn_core.evaluation import metrics as MT

    args = (windows, None, MT.NLLSum(), batch_size or MT.NLL_BATCH, state.engine().model.cfg.n_layers)
    return sum(1 for _ in MT.nll_steps(*args))


def score_chunked(
    state: ServerState,
    questions: list[D.Question],
    interventions=None,
    should_stop: Callable[[], None] | None = None,
    what: str = "scoring",
) -> list:
    """``mcq.score_questions(engine, questions, interventions)`` in steps of one batch of 8
    prompts (letters, the batches it uses) or one question (cloze, scored one by one anyway)."""
    from unlearn_core.evaluation.mcq import score_questions

    out: list = []
    per = score_per_step(state)
    state.expect(-(-len(questions) // per))  # a task's (or a sweep stage's) total
    run_steps(
        state,
        (
            (lambda engine, qs=questions[s : s + per]: out.extend(score_questions(engine, qs, interventions)))
            for s in range(0, len(questions), per)
        ),
        what,
        should_stop,
    )
    return out


def nll_chunked(
    state: ServerState,
    windows: list[list[int]],
    interventions=None,
    should_stop: Callable[[], None] | None = None,
    batch_size: int | None = None,
    what: str = "loss",
) -> tuple[float, int]:
    """``metrics.mean_nll(engine, windows, interventions, batch_size)``, bit for bit, in the steps
    of ``metrics.nll_steps``: a few blocks of a batch's forward pass, one window's unembedding."""
    from unlearn_core.evaluation import metrics as MT

    acc = MT.NLLSum()
    args = (windows, interventions, acc, batch_size or MT.NLL_BATCH, state.engine().model.cfg.n_layers)
    state.expect(nll_step_count(state, windows, batch_size))  # a task's (or a sweep stage's) total
    steps = MT.nll_steps(*args)
    run_steps(state, steps, what, should_stop)
    return acc.mean, acc.n


def clean_nll_chunked(
    state: ServerState,
    corpus: str,
    windows: list[list[int]],
    batch_size: int | None = None,
    should_stop: Callable[[], None] | None = None,
    what: str = "loss",
) -> float:
    """``metrics.clean_nll_cached`` (same disk cache entry), computed by ``nll_chunked``."""
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation import metrics as MT

    batch_size = batch_size or MT.NLL_BATCH
    with state.model("loss cache key") as engine:  # the namespace names this thread's model variant
        path = MT.clean_nll_path(engine, corpus, windows, batch_size)
    with state.once(path):
        return C.cached_json(path, lambda: nll_chunked(state, windows, None, should_stop, batch_size, what)[0])


def feature_stats_chunked(
    state: ServerState,
    sae: str,
    corpus: str,
    n_tokens: int,
    ctx: int = 128,
    should_stop: Callable[[], None] | None = None,
    what: str = "feature statistics",
):
    """``features.feature_stats`` (same disk cache entry, same numbers), computed one batch of
    16 windows per step; the corpus is read without the lock and tokenized in one hold."""
    from unlearn_core.features import stats as F

    engine = state.engine()
    docs = F.corpus_docs(engine, corpus)
    with state.model(what):  # the namespace in the path names this thread's model variant
        windows = F.windows_for(engine, docs, n_tokens, ctx)
        path = F.stats_path(engine, sae, corpus, docs, n_tokens, ctx)

    def compute() -> dict:
        acc = F.StatsAccumulator(engine, sae, windows)
        state.expect(acc.n_batches)
        run_steps(state, ((lambda eng, i=i: acc.add(i)) for i in range(acc.n_batches)), what, should_stop)
        return acc.result()

    with state.once(path):
        t = F.cached_stats(path, compute)  # a shipped entry under the same key before computing
    return F.stats_from(sae, corpus, t, windows)


def finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
