"""Metrics over a corpus: loss added by the interventions, perplexity."""

from __future__ import annotations

import math

from fastapi import APIRouter

from unlearn_core.server import schemas as S
from unlearn_core.server.access import check_corpus
from unlearn_core.server.convert import iv_out, on_variant, to_interventions
from unlearn_core.server.deps import State
from unlearn_core.server.state import ServerState
from unlearn_core.server.steps import clean_nll_chunked, finite, nll_chunked

router = APIRouter(tags=["metrics"])


def compute_loss_added(state: ServerState, req: S.LossAddedRequest) -> S.LossAddedResponse:
    from unlearn_core.evaluation.metrics import corpus_windows, nll_batch_size
    from unlearn_core.features.stats import corpus_docs

    engine = state.engine()
    check_corpus(req.corpus, engine.settings.data_dir)
    docs = corpus_docs(engine, req.corpus)  # reading files: no lock
    with state.model("loss_added"):
        ivs = to_interventions(engine, req.interventions)
        windows = corpus_windows(engine.model, docs, req.n_tokens, req.ctx)
    bs = nll_batch_size(req.ctx)  # a step is one batch of windows (~1k tokens)
    clean = clean_nll_chunked(state, req.corpus, windows, bs, what="loss_added")
    inter, n = nll_chunked(state, windows, ivs, batch_size=bs, what="loss_added")
    return S.LossAddedResponse(
        corpus=req.corpus,
        clean_loss=finite(clean),
        intervened_loss=finite(inter),
        loss_added=finite(inter - clean),
        n_tokens=n,
        interventions=iv_out(ivs),
    )


def check_sync(kind: str, n_tokens: int, passes: int) -> None:
    """A 400 naming the task route when the request would run longer than a client waits."""
    if n_tokens * passes > S.SYNC_EVAL_TOKENS:
        raise ValueError(
            f"n_tokens {n_tokens} x {passes} pass(es) is more than a synchronous request evaluates "
            f"(at most {S.SYNC_EVAL_TOKENS} tokens, about 10 s); submit it as a task: "
            f"POST /api/tasks/{kind} with the same body, then poll GET /api/tasks/{{id}}"
        )


@router.post("/loss_added", response_model=S.LossAddedResponse)
def loss_added(req: S.LossAddedRequest, state: State) -> S.LossAddedResponse:
    """Mean next-token loss with the interventions minus without (same windows as metrics.loss_added).

    Synchronous up to ``n_tokens`` x 2 passes (clean, intervened) of ``SYNC_EVAL_TOKENS`` (512:
    ~10 s on the embedded model); more is a 400 that names ``POST /api/tasks/loss_added`` (the
    same body, up to ``MAX_EVAL_TOKENS`` = 100k tokens)."""
    check_sync("loss_added", req.n_tokens, 2)
    return on_variant(state, req.variant, lambda: compute_loss_added(state, req))


def compute_perplexity(state: ServerState, req: S.PerplexityRequest) -> S.PerplexityResponse:
    from unlearn_core.evaluation.metrics import corpus_windows, nll_batch_size
    from unlearn_core.features.stats import corpus_docs, parse_corpus_spec

    engine = state.engine()
    check_corpus(req.corpus, engine.settings.data_dir)
    name, part = parse_corpus_spec(req.corpus)
    if req.part != "all" and part != "all" and part != req.part:
        raise ValueError(f"corpus {req.corpus!r} names part {part!r} but part={req.part!r}")
    part = req.part if req.part != "all" else part
    docs = corpus_docs(engine, f"{name}@{part}")  # reading files: no lock
    with state.model("perplexity"):
        ivs = to_interventions(engine, req.interventions)
        windows = corpus_windows(engine.model, docs, req.n_tokens, req.ctx)

    def ppl(interventions) -> S.Perplexity:
        nll, n = nll_chunked(state, windows, interventions, batch_size=nll_batch_size(req.ctx), what="perplexity")
        p = math.exp(nll) if math.isfinite(nll) and nll < 700 else None
        return S.Perplexity(perplexity=p, mean_nll=finite(nll), n_tokens=n, ctx=req.ctx)

    return S.PerplexityResponse(
        corpus=name, part=part, base=ppl(None), intervened=ppl(ivs) if ivs else None, interventions=iv_out(ivs)
    )


@router.post("/perplexity", response_model=S.PerplexityResponse)
def perplexity(req: S.PerplexityRequest, state: State) -> S.PerplexityResponse:
    """Perplexity of a corpus part, clean and (with interventions) intervened.

    Synchronous up to ``n_tokens`` x passes (2 with interventions, else 1) of ``SYNC_EVAL_TOKENS``
    (512: ~10 s on the embedded model; the default 10k tokens is a task); more is a 400 that names
    ``POST /api/tasks/perplexity`` (the same body, up to ``MAX_EVAL_TOKENS`` = 100k tokens)."""
    check_sync("perplexity", req.n_tokens, 2 if req.interventions else 1)
    return on_variant(state, req.variant, lambda: compute_perplexity(state, req))
