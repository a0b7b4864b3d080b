"""What a synchronous request may compute, and the error that sends the rest to a task.

Why: a synchronous request holds its connection (and a client's patience) for as long as it
runs. Each synchronous endpoint therefore computes at most about 10 s of work on the embedded
model (``bench/sync_limits.py`` measures each at its cap); past that it answers an error that
names ``POST /api/tasks/<kind>``, which computes the same answer without the limit, with
progress. Two kinds of limit: the request's own size (400: the same request is always too big)
and work no cache holds yet (409: the same request answers synchronously once that work is
cached, for instance after the task ran).
"""

from __future__ import annotations

from unlearn_core.server import schemas as S
from unlearn_core.server.state import ServerState


class TaskRequired(ValueError):
    """The request would run longer than a synchronous request may: 400 or 409 (``status``)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def as_task(kind: str) -> str:
    """The sentence every limit ends with: where to send the request instead."""
    return f"submit it as a task: POST /api/tasks/{kind} with the same body, then poll GET /api/tasks/{{id}}"


def stats_tokens_to_compute(state: ServerState, sae: str, wanted: list[tuple[str, int]], ctx: int = 128) -> int:
    """Tokens of feature statistics the (corpus, n_tokens) pairs would compute: 0 for a pair
    cached on disk or shipped with the SAE, else its windows' tokens (n_tokens, or fewer in a
    short corpus). Call inside the request's model variant (the cache key names it)."""
    from unlearn_core.features import shipped_stats as SH
    from unlearn_core.features import stats as F

    engine = state.engine()
    total = 0
    for corpus, n_tokens in dict.fromkeys(wanted):
        docs = F.corpus_docs(engine, corpus)  # reading files: no lock
        with state.model("statistics check"):  # the namespace in the path names this thread's variant
            path = F.stats_path(engine, sae, corpus, docs, n_tokens, ctx)
            if path.exists() or SH.shipped_path(path).is_file():
                continue
            total += sum(len(w) - 1 for w in F.windows_for(engine, docs, n_tokens, ctx))  # BOS not counted
    return total


def check_stats(state: ServerState, kind: str, sae: str, wanted: list[tuple[str, int]]) -> None:
    """A 409 naming the task route when the statistics to compute exceed ``SYNC_STATS_TOKENS``."""
    n = stats_tokens_to_compute(state, sae, wanted)
    if n > S.SYNC_STATS_TOKENS:
        corpora = ", ".join(sorted({c for c, _ in wanted}))
        raise TaskRequired(
            f"the feature statistics of {corpora} are neither cached nor shipped: computing them takes "
            f"{n:,} tokens, more than a synchronous request computes (at most {S.SYNC_STATS_TOKENS:,}, "
            f"about 10 s); {as_task(kind)} (once done, this request answers at once)",
            status=409,
        )


def check_descriptions(state: ServerState, kind: str, sae: str, stats, features: list[int]) -> None:
    """A 409 naming the task route when more than ``SYNC_DESCRIPTIONS`` of the features' automatic
    descriptions (of ``stats``' corpus) are not cached yet (each reads its top windows again)."""
    from unlearn_core.core import cache as C
    from unlearn_core.features import stats as F

    with state.model("descriptions check") as engine:  # the namespace in the path names this thread's variant
        known = C.read_json(F.description_path(engine, sae, stats)) or {}
    n = sum(str(f) not in known for f in features)
    if n > S.SYNC_DESCRIPTIONS:
        raise TaskRequired(
            f"{n} of the {len(features)} features have no cached description: describing them is more than a "
            f"synchronous request does (at most {S.SYNC_DESCRIPTIONS}, about 2 s each); {as_task(kind)} "
            "(or describe=false; once done, this request answers at once)",
            status=409,
        )


def check_known(n_uncached: int, limit: int, kind: str = "questions_known") -> None:
    """A 409 naming the task route (``kind``) when a page's uncached known statuses exceed ``limit``."""
    if n_uncached > limit:
        body = "(a body of set, strict, limit, offset; " if kind == "questions_known" else "(the same body; "
        raise TaskRequired(
            f"the known filter would check {n_uncached} questions whose status is not cached yet, more than "
            f"a synchronous request checks (at most {limit}, about 10 s); {as_task(kind)} "
            f"{body}once done, this request answers at once)",
            status=409,
        )


def check_scores(cached: bool, kind: str, method: str, n_questions: int) -> None:
    """A 409 naming the task route when a target's question-based feature scores (attribution,
    fisher) are not cached: each question costs a forward and a backward pass (about 1.5 s)."""
    if not cached:
        raise TaskRequired(
            f"the {method} scores of {n_questions} known train-half questions are not cached yet: computing "
            f"them is more than a synchronous request does; {as_task(kind)} (once done, this request answers at once)",
            status=409,
        )


def check_demo_scan(max_scan: int) -> None:
    """A 400 naming the task route when the demo would check more questions than the limit."""
    if max_scan > S.SYNC_DEMO_SCAN:
        raise TaskRequired(
            f"max_scan {max_scan} is more than a synchronous demo checks (at most {S.SYNC_DEMO_SCAN} questions "
            f"per set, about 10 s; the default {S.DemoRequest.model_fields['max_scan'].default} is a task); "
            f"{as_task('demo')}"
        )
