"""Features: per-token activations, dashboards, search over a text, the paper's selection."""

from __future__ import annotations

from fastapi import APIRouter

from unlearn_core.server import schemas as S
from unlearn_core.server.access import check_corpus, trusted_files
from unlearn_core.server.activations import codes_for, token_activations
from unlearn_core.server.convert import neuronpedia_info, on_variant, resolve_sae
from unlearn_core.server.deps import State
from unlearn_core.server.state import ServerState
from unlearn_core.server.steps import feature_stats_chunked, run_steps
from unlearn_core.server.sync_limits import check_descriptions, check_stats

router = APIRouter(tags=["features"])


@router.post("/activations", response_model=S.ActivationsResponse)
def activations(req: S.ActivationsRequest, state: State) -> S.ActivationsResponse:
    """Per-token values of chosen features and each token's top features (activation LRU)."""

    def compute() -> S.ActivationsResponse:
        with state.model("activations") as engine:  # one forward to the hook: cannot be split
            sae = resolve_sae(engine, req.sae)
            acts, hit = state.prompt_acts(engine, req.text)
            out = token_activations(engine, acts, sae, req.features, req.top_k)
        return S.ActivationsResponse(sae=sae, cached=hit, **out)

    return on_variant(state, req.variant, compute)


def compute_dashboard(state: ServerState, req: S.DashboardRequest, sync: bool = False) -> S.DashboardResponse:
    """A feature's dashboard; ``sync`` (the synchronous route) refuses statistics to compute past
    ``SYNC_STATS_TOKENS`` (the task ``features_dashboard`` computes any)."""
    from unlearn_core.features import stats as F

    engine = state.engine()
    sae = resolve_sae(engine, req.sae)
    F.check_feature(engine.saes[sae], req.feature)
    trusted = trusted_files(engine)[1]
    for c in req.corpora:
        check_corpus(c, engine.settings.data_dir, trusted)
    if sync:
        check_stats(state, "features_dashboard", sae, [(c, req.n_tokens) for c in req.corpora])
    stats = {c: feature_stats_chunked(state, sae, c, req.n_tokens) for c in req.corpora}  # cached on disk
    d = F.dashboard(
        engine,
        sae,
        req.feature,
        list(req.corpora),
        n_tokens=req.n_tokens,
        k=req.k,
        with_neuronpedia=False,
        stats=stats,
        guard=lambda: state.model("dashboard"),
    )
    if req.neuronpedia:  # network, outside the model lock
        d["neuronpedia"] = neuronpedia_info(engine, sae, req.feature)
    return S.DashboardResponse(**d)


@router.post("/features/dashboard", response_model=S.DashboardResponse)
def dashboard(req: S.DashboardRequest, state: State) -> S.DashboardResponse:
    """A feature's statistics, top examples and logit effects on each corpus.

    Statistics neither cached nor shipped are computed synchronously up to ``SYNC_STATS_TOKENS``
    (2,048 tokens in all: ~10 s on the embedded model); more is a 409 that names
    ``POST /api/tasks/features_dashboard`` (the same body)."""
    return on_variant(state, req.variant, lambda: compute_dashboard(state, req, sync=True))


def compute_search(state: ServerState, req: S.SearchRequest, sync: bool = False) -> S.SearchResponse:
    engine = state.engine()
    sae = resolve_sae(engine, req.sae)
    bg = None
    if req.background:
        check_corpus(req.background, engine.settings.data_dir)
        if sync:
            check_stats(state, "features_search", sae, [(req.background, req.background_tokens)])
        bg = feature_stats_chunked(state, sae, req.background, req.background_tokens)
    elif req.rank == "specificity":
        raise ValueError("rank 'specificity' needs a background corpus (or use rank 'max')")
    from unlearn_core.features.text_search import query_in_context, search_from_codes

    with state.model("search") as engine:  # forwards to the hook (one, or one per carrier): not split
        read = query_in_context(engine, sae, req.text) if req.context else None
        in_context, hit = read is not None, False
        if read is None:
            acts, hit = state.prompt_acts(engine, req.text)
            read = acts.ids, codes_for(engine, acts, sae)[0]
        bg_freq, bg_max = (bg.freq, bg.max_act) if bg is not None else (None, None)
        rows = search_from_codes(engine, *read, req.k, bg_freq, bg_max, req.rank, req.dense_last)
    return S.SearchResponse(sae=sae, features=rows, cached=hit, in_context=in_context)


@router.post("/features/search", response_model=S.SearchResponse)
def features_search(req: S.SearchRequest, state: State) -> S.SearchResponse:
    """Features that fire most on a text (optionally down-weighting ones common in a corpus).

    The background's statistics, when neither cached nor shipped, are computed synchronously up
    to ``SYNC_STATS_TOKENS``; more is a 409 that names ``POST /api/tasks/features_search``."""
    return on_variant(state, req.variant, lambda: compute_search(state, req, sync=True))


def compute_select(state: ServerState, req: S.SelectRequest, sync: bool = False) -> S.SelectResponse:
    from unlearn_core.features import stats as F

    engine = state.engine()
    sae = resolve_sae(engine, req.sae)
    if req.target:
        return select_for_a_target(state, req, sae, sync)
    trusted = trusted_files(engine)[1]
    for c in (req.forget, req.retain):
        check_corpus(c, engine.settings.data_dir, trusted)
    if sync:
        check_stats(state, "features_select", sae, [(req.forget, req.n_tokens), (req.retain, req.n_tokens)])
    fs = feature_stats_chunked(state, sae, req.forget, req.n_tokens)
    rs = feature_stats_chunked(state, sae, req.retain, req.n_tokens)
    rows = F.select_features(fs.freq, rs.freq, req.threshold, req.n)
    if req.describe and sync:
        check_descriptions(state, "features_select", sae, fs, [r["feature"] for r in rows])
    if req.describe:  # one feature per step (its top windows and logits)
        state.expect(len(rows))

        def describe(engine, r):
            r["description"] = F.auto_description(engine, sae, r["feature"], fs)

        run_steps(state, ((lambda engine, r=r: describe(engine, r)) for r in rows), "describe")
    return S.SelectResponse(
        sae=sae, forget=req.forget, retain=req.retain, threshold=req.threshold, n_tokens=req.n_tokens, features=rows
    )


def select_for_a_target(state: ServerState, req: S.SelectRequest, sae: str, sync: bool = False) -> S.SelectResponse:
    """/targets/select's computation for ``req.target`` by ``req.method``, in this endpoint's shape."""
    from unlearn_core.server import target_api as TA

    threshold = req.threshold if req.method == "frequency" else None
    out = TA.select(
        state,
        req.target,
        sae,
        n=req.n,
        threshold=threshold,
        describe=req.describe,
        method=req.method,
        sync=sync,
        task="features_select",
    )
    keep = ("method", "threshold", "n_tokens", "features", "forget_questions", "retain_questions")
    return S.SelectResponse(
        sae=sae,
        target=out["target"],
        forget=out["forget_corpus"],
        retain=", ".join(out["retain_corpora"]),
        n_forget_questions=out.get("n_forget_questions"),
        n_retain_questions=out.get("n_retain_questions"),
        **{k: out[k] for k in keep if k in out},
    )


@router.post("/features/select", response_model=S.SelectResponse)
def features_select(req: S.SelectRequest, state: State) -> S.SelectResponse:
    """The paper's selection: retain frequency < threshold, ranked by forget frequency, top n. With a
    target: its selection by ``method`` (frequency on its corpora, search, attribution or fisher on
    the train half of its known questions), each row with its score and its frequencies.

    The statistics of both corpora, when neither cached nor shipped, are computed synchronously up
    to ``SYNC_STATS_TOKENS`` in all, and with ``describe`` up to ``SYNC_DESCRIPTIONS`` (4) descriptions
    not cached yet; more (or a target's question scores not cached yet) is a 409 that names
    ``POST /api/tasks/features_select`` (the same body)."""
    return on_variant(state, req.variant, lambda: compute_select(state, req, sync=True))
