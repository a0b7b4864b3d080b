"""The HTTP API (FastAPI) over one loaded engine: ``create_app(engine_factory)``.

How many users it holds: the server keeps ONE model in memory and serializes every use of it
with one lock, so model work never runs in parallel; endpoints are plain ``def`` functions run
in FastAPI's threadpool (40 threads), so waiting requests queue on the lock instead of failing.
A request's latency is therefore its own cost plus the cost of whatever is ahead of it. That
is comfortable for a handful of interactive users (a lab group, ~5-10 people) and not meant
for more. Measured costs on the embedded model are in the README ("Speed"; `bench/server.py`,
`bench/slider.py`). Long work (loss, perplexity, feature statistics, known filters, curves,
generation) takes the lock in steps of about a second (``state.run_steps``), so a request waits
at most about that long behind another one (``lock_stats`` in ``/api/info`` shows the holds).
Evaluation jobs run in one background thread, and their steps give way to every waiting
request.

Errors: bad input is a 4xx with ``{"detail": message}`` (422 for schema violations, 400 for
bad values such as out-of-range features or unknown corpora, 404 for unknown SAEs, question
sets, questions and jobs, 401 for a missing token, 503 while the model loads); anything else
is a logged 500 with a generic message and no traceback.

Security: when ``UNLEARN_TOKEN`` is set, every ``/api`` endpoint except ``/api/health`` needs
``Authorization: Bearer <token>``. Corpora are names only (never file paths), nothing is
unpickled, and neither the token nor the Neuronpedia key is logged.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import math
import os
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from unlearn_core.data import loaders as D
from unlearn_core.model.engine import Engine
from unlearn_core.method.interventions import MAX_ABS_CLAMP, MODES, Intervention, validate
from unlearn_core.server import prefetch as PF
from unlearn_core.server import schemas as S
from unlearn_core.server.jobs import JobRunner
from unlearn_core.server.rmu_jobs import RMURunner
from unlearn_core.server import target_api as TA
from unlearn_core.server.access import check_corpus, corpus_names, drop_unfinished_saves, question_set_names, server_targets, trusted_files
from unlearn_core.server.activations import check_length, search, token_activations
from unlearn_core.server.state import EngineNotReady, ServerState
from unlearn_core.server.steps import clean_nll_chunked, feature_stats_chunked, finite, fits_context, nll_chunked, run_steps, select_questions

log = logging.getLogger("unlearn_core.server")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CURVE_STEP = 8  # clamp values per lock-hold step of /api/mcq (fastpath.score_curve's batch)


# ---------------------------------------------------------------- helpers


def resolve_sae(engine: Engine, key: str | None) -> str:
    key = key or engine.default_sae
    if key not in engine.saes:
        raise KeyError(f"unknown SAE {key!r}; loaded: {sorted(engine.saes)}")
    return key


def to_interventions(engine: Engine, ivs: list[S.InterventionIn]) -> list[Intervention]:
    """The request's interventions; a gate given as a percentile is calibrated here (once per
    features and corpus, then read from the disk cache): call with the model lock held."""
    from dataclasses import replace

    from unlearn_core.method.gate import DEFAULT_CORPUS, calibrate

    out = [Intervention(resolve_sae(engine, iv.sae), tuple(iv.features), float(iv.value), iv.mode,
                        iv.gate if iv.gate_percentile is None else 0.0) for iv in ivs]
    validate(out, engine.saes)  # feature ids in range for their SAE
    for i, iv in enumerate(ivs):
        if iv.gate_percentile is not None:
            corpus = check_corpus(iv.gate_corpus or DEFAULT_CORPUS, engine.settings.data_dir)
            tau = calibrate(engine, out[i].sae_key, out[i].features, corpus, iv.gate_percentile).tau
            out[i] = replace(out[i], gate=tau)
    return out


def iv_out(ivs: list[Intervention], given: list[S.InterventionIn] = ()) -> list[S.InterventionOut]:
    from unlearn_core.method.gate import DEFAULT_CORPUS

    out = []
    for i, iv in enumerate(ivs):
        req = given[i] if i < len(given) else None
        pct = req.gate_percentile if req is not None else None
        out.append(S.InterventionOut(sae=iv.sae_key, features=list(iv.features), value=iv.value, mode=iv.mode,
                                     label=iv.label(), gate=iv.gate, gate_percentile=pct,
                                     gate_corpus=(req.gate_corpus or DEFAULT_CORPUS) if pct is not None else None))
    return out


def gate_report(engine: Engine, q: D.Question, ivs: list[Intervention], value: float | None, base,
                own=None) -> list[S.GateOut]:
    """rho, tau and the decision of each gated intervention on ``q``'s prompt, with the right
    answer's probability clean and with the gates held open (at ``value``, else the
    interventions' own c): enough to draw P(correct) against tau. ``own``: the request's score
    there, which is the open one when every gate is open (then nothing more is scored; when one
    is shut the gated score was the clean one, free, and the open one costs one static step)."""
    from dataclasses import replace

    from unlearn_core.method.gate import opened, prompt_rho
    from unlearn_core.evaluation.mcq import score_curve, score_question

    gated = [i for i, iv in enumerate(ivs) if iv.gate is not None]
    if not gated:
        return []
    at = [replace(iv, value=float(value)) if value is not None else iv for iv in ivs]
    rhos = {i: prompt_rho(engine, q, at[i]) for i in gated}
    if own is not None and all(rhos[i] > at[i].gate for i in gated):
        open_score = own
    elif value is not None:
        open_score = score_curve(engine, q, [opened(iv) for iv in ivs], [value])[0]
    else:
        open_score = score_question(engine, q, [opened(iv) for iv in at])
    return [S.GateOut(intervention=i, rho=rhos[i], tau=at[i].gate, open=rhos[i] > at[i].gate,
                      p_correct_clean=base.probs[q.answer], p_correct_open=open_score.probs[q.answer]) for i in gated]


def question_out(q: D.Question) -> S.QuestionOut:
    d = q.to_dict()
    d["extra"] = d.get("extra") or None
    return S.QuestionOut(**d)


def target_question_sets(engine: Engine) -> list[tuple[str, str]]:
    """The question sets the server's targets name (so a user target's sets are offered too)."""
    from unlearn_core.features.targets import TargetError

    try:
        targets = server_targets(engine)
    except TargetError:  # a broken targets file: /api/targets says why; the info stays up
        return []
    out = []
    for t in targets.values():
        out.append((t.forget_questions, f"forget questions of the target {t.name}"))
        out += [(s, f"retain questions of the target {t.name}") for s in t.retain_questions]
    return out


def score_out(s) -> S.MCQScoreOut:
    return S.MCQScoreOut(**s.to_dict())


def _message(e: BaseException) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def _validation_detail(errors: list[dict]) -> tuple[str, list[dict]]:
    """Error locations and messages, without echoing the input (it may be huge, or NaN)."""
    clean = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
             for e in errors[:20]]
    text = "; ".join(f"{'.'.join(c['loc'][1:] or c['loc'])}: {c['msg']}" for c in clean)
    return f"invalid request: {text}", clean


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        detail, errors = _validation_detail(list(exc.errors()))
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(EngineNotReady)
    async def _loading(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(D.DataUnavailableError)
    async def _data(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(KeyError)
    async def _not_found(request, exc):
        return JSONResponse({"detail": _message(exc)}, status_code=404)

    @app.exception_handler(ValueError)
    async def _bad_value(request, exc):
        return JSONResponse({"detail": _message(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error (logged on the server)"}, status_code=500)


def make_auth(token: str | None):
    bearer = HTTPBearer(auto_error=False, description="the server's UNLEARN_TOKEN")

    def check(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not token:
            return
        given = creds.credentials if creds is not None and creds.scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <UNLEARN_TOKEN>'",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


# ---------------------------------------------------------------- the app


def create_app(engine_factory: Callable[[], Engine], *, token: str | None = None, allow_test_options: bool = False,
               lru_capacity: int = 64, load_wait_s: float = 600.0) -> FastAPI:
    """The API over the engine ``engine_factory()`` builds (once, in a background thread).

    ``token`` defaults to ``$UNLEARN_TOKEN``; ``allow_test_options`` enables the job option
    ``delay_per_config`` (for ``--tiny`` servers and tests).
    """
    token = os.environ.get("UNLEARN_TOKEN") if token is None else token
    state = ServerState(engine_factory, lru_capacity=lru_capacity, load_wait_s=load_wait_s)
    runner = JobRunner(state, allow_delay=allow_test_options)
    rmu_runner = RMURunner(state, allow_delay=allow_test_options)
    state.scores = PF.ScoreLRU()  # slider scores by (question, interventions without c) and c

    def prefetch_scores(q, ivs, values) -> list:
        """Scores of slider neighbours, in the background: lowest priority for the model lock."""
        from unlearn_core.evaluation.mcq import score_curve

        out: list = []
        with state.background():
            run_steps(state, [lambda engine: out.extend(score_curve(engine, q, ivs, values))], "slider prefetch")
        return out

    prefetcher = PF.Prefetcher(state.scores, prefetch_scores)
    state.prefetcher = prefetcher
    state.on_ready.append(drop_unfinished_saves)
    state.on_ready.append(runner.start)
    state.on_ready.append(rmu_runner.start)

    def on_variant(handler):
        """Run ``handler(req)`` with ``req.variant`` applied in every hold of the model lock it takes
        (the model variant in place of the model as loaded); the response names the variant."""
        @functools.wraps(handler)
        def wrapper(req):
            with state.variant(req.variant):
                out = handler(req)
            out.variant = req.variant
            return out

        return wrapper

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start_loading()
        yield
        runner.stop()
        rmu_runner.stop()

    app = FastAPI(title="SAE Unlearning Workbench server", version="0.1.0", lifespan=lifespan,
                  description=(__doc__ or "").split("\n\n")[1],
                  responses={400: {"model": S.ErrorResponse}, 404: {"model": S.ErrorResponse},
                             422: {"model": S.ErrorResponse}})
    app.state.server = state
    app.state.runner = runner
    app.state.rmu_runner = rmu_runner
    install_error_handlers(app)

    @app.get("/api/health", response_model=S.HealthResponse, tags=["server"])
    def health() -> S.HealthResponse:
        """Liveness without auth: answers while the model is still loading."""
        state.start_loading()
        return S.HealthResponse(status=state.status, detail=state.error, auth_required=bool(token),
                                uptime_s=round(time.time() - state.started, 3))

    api = APIRouter(prefix="/api", dependencies=[Depends(make_auth(token))])

    @api.get("/info", response_model=S.InfoResponse, tags=["server"])
    def info() -> S.InfoResponse:
        """The loaded model and SAEs (or status 'loading'), limits, question sets, cache counters."""
        state.start_loading()
        engine = state.engine_if_ready
        out: dict = {"status": state.status, "detail": state.error, "limits": S.Limits(), "modes": list(MODES),
                     "corpora": corpus_names(), "activation_cache": S.CacheStats(**state.acts.stats()),
                     "jobs": runner.counts(), "lock_stats": S.LockStats(**state.lock.stats.summary())}
        if engine is not None:  # no model forward here, so no lock: /info stays responsive
            out.update(engine.info())
            out["n_ctx"] = engine.model.cfg.n_ctx
            out["question_sets"] = [S.QuestionSetInfo(name=n, description=d) for n, d in
                                    question_set_names(engine.settings.data_dir, target_question_sets(engine))]
        return S.InfoResponse(**out)

    @api.post("/tokenize", response_model=S.TokenizeResponse, tags=["text"])
    def tokenize(req: S.TokenizeRequest) -> S.TokenizeResponse:
        from unlearn_core.features.stats import token_strs

        with state.model("tokenize") as engine:
            ids = engine.model.to_tokens(req.text, prepend_bos=True, truncate=False)[0].tolist()
            return S.TokenizeResponse(tokens=token_strs(engine, ids), ids=ids, n_tokens=len(ids),
                                      n_ctx=engine.model.cfg.n_ctx)

    @api.post("/activations", response_model=S.ActivationsResponse, tags=["features"])
    @on_variant
    def activations(req: S.ActivationsRequest) -> S.ActivationsResponse:
        """Per-token values of chosen features and each token's top features (activation LRU)."""
        with state.model("activations") as engine:  # one forward to the hook: cannot be split
            sae = resolve_sae(engine, req.sae)
            acts, hit = state.prompt_acts(engine, req.text)
            out = token_activations(engine, acts, sae, req.features, req.top_k)
        return S.ActivationsResponse(sae=sae, cached=hit, **out)

    @api.post("/features/dashboard", response_model=S.DashboardResponse, tags=["features"])
    @on_variant
    def dashboard(req: S.DashboardRequest) -> S.DashboardResponse:
        from unlearn_core.features import stats as F

        engine = state.engine()
        sae = resolve_sae(engine, req.sae)
        F.check_feature(engine.saes[sae], req.feature)
        trusted = trusted_files(engine)[1]
        for c in req.corpora:
            check_corpus(c, engine.settings.data_dir, trusted)
        stats = {c: feature_stats_chunked(state, sae, c, req.n_tokens) for c in req.corpora}  # cached on disk
        d = F.dashboard(engine, sae, req.feature, list(req.corpora), n_tokens=req.n_tokens, k=req.k,
                        with_neuronpedia=False, stats=stats, guard=lambda: state.model("dashboard"))
        if req.neuronpedia:  # network, outside the model lock
            d["neuronpedia"] = neuronpedia_info(engine, sae, req.feature)
        return S.DashboardResponse(**d)

    @api.post("/features/search", response_model=S.SearchResponse, tags=["features"])
    @on_variant
    def features_search(req: S.SearchRequest) -> S.SearchResponse:
        """Features that fire most on a text (optionally down-weighting ones common in a corpus)."""
        engine = state.engine()
        sae = resolve_sae(engine, req.sae)
        bg = None
        if req.background:
            check_corpus(req.background, engine.settings.data_dir)
            bg = feature_stats_chunked(state, sae, req.background, req.background_tokens)
        elif req.rank == "specificity":
            raise ValueError("rank 'specificity' needs a background corpus (or use rank 'max')")
        with state.model("search") as engine:  # one forward to the hook: cannot be split
            acts, hit = state.prompt_acts(engine, req.text)
            rows = search(engine, acts, sae, req.k, bg, req.rank, req.dense_last)
        return S.SearchResponse(sae=sae, features=rows, cached=hit)

    @api.post("/features/select", response_model=S.SelectResponse, tags=["features"])
    @on_variant
    def features_select(req: S.SelectRequest) -> S.SelectResponse:
        """The paper's selection: retain frequency < threshold, ranked by forget frequency, top n."""
        from unlearn_core.features import stats as F

        engine = state.engine()
        sae = resolve_sae(engine, req.sae)
        trusted = trusted_files(engine)[1]
        for c in (req.forget, req.retain):
            check_corpus(c, engine.settings.data_dir, trusted)
        fs = feature_stats_chunked(state, sae, req.forget, req.n_tokens)
        rs = feature_stats_chunked(state, sae, req.retain, req.n_tokens)
        rows = F.select_features(fs.freq, rs.freq, req.threshold, req.n)
        if req.describe:  # one feature per step (its top windows and logits)
            def describe(engine, r):
                r["description"] = F.auto_description(engine, sae, r["feature"], fs)

            run_steps(state, ((lambda engine, r=r: describe(engine, r)) for r in rows), "describe")
        return S.SelectResponse(sae=sae, forget=req.forget, retain=req.retain, threshold=req.threshold,
                                n_tokens=req.n_tokens, features=rows)

    @api.get("/questions", response_model=S.QuestionsResponse, tags=["questions"])
    def questions(set_: str = Query("wmdp-bio", alias="set", max_length=300,
                                    description="quiz:bio | quiz:retain!overlaps_bio | wmdp-bio | "
                                                "mmlu:<subject,...> | mmlu:side-effects, optionally @train/@heldout"),
                  known: bool = Query(False, description="keep only questions the clean model knows (cached)"),
                  strict: bool = Query(False, description="with known: the strict filter (also wrong with the "
                                                          "question text blanked)"),
                  limit: int = Query(50, ge=1, le=S.MAX_PAGE), offset: int = Query(0, ge=0)) -> S.QuestionsResponse:
        """A page of a question set; with known=true, the known filter is applied to that page."""
        qs = state.question_set(set_)
        page = qs.questions[offset : offset + limit]
        skipped = 0
        if known:
            page, skipped = select_questions(state, page, known=True, strict=strict)
        return S.QuestionsResponse(set=set_, label=qs.label, is_fallback=qs.is_fallback, origin=qs.origin,
                                   total=len(qs.questions), offset=offset, limit=limit, known=known,
                                   strict=known and strict, n_skipped_too_long=skipped,
                                   questions=[question_out(q) for q in page])

    @api.get("/targets", response_model=S.TargetList, tags=["targets"])
    def targets() -> S.TargetList:
        """The unlearning targets (built-in, the server's targets file, those defined in the app), each
        with the forget corpus this server would select on (the target's own, or its labelled fallback)."""
        return S.TargetList(**TA.list_targets(state.engine()))

    @api.post("/targets", response_model=S.TargetOut, status_code=201, tags=["targets"])
    def targets_create(req: S.TargetCreateRequest) -> S.TargetOut:
        """Define a target from the app: its forget corpus (documents) and forget questions (rows in
        the WMDP schema), named retain corpora and question sets, selection and default intervention.
        Saved under ``<cache_dir>/targets/<name>/``; 400 with the row and the fix for a bad question,
        409 when the name is taken. Question ids get a content digest (``<id>-<digest>``)."""
        try:
            return S.TargetOut(**TA.create_target(state, req))
        except TA.TargetExistsError as e:
            raise HTTPException(409, str(e)) from None

    @api.delete("/targets/{name}", response_model=S.TargetDeleted, tags=["targets"])
    def targets_delete(name: str) -> S.TargetDeleted:
        """Delete a target defined in the app (403 for built-in and targets-file ones)."""
        try:
            return S.TargetDeleted(**TA.delete_target(state, name))
        except TA.TargetProtectedError as e:
            raise HTTPException(403, str(e)) from None

    @api.post("/targets/select", response_model=S.TargetSelectResponse, tags=["targets"])
    @on_variant
    def targets_select(req: S.TargetSelectRequest) -> S.TargetSelectResponse:
        """The target's selection: by default its own method (format-matched frequency, or search);
        with a threshold, retain frequency (the max over the retain corpora) < threshold ranked by
        forget frequency; says which corpora were used."""
        engine = state.engine()
        sae = resolve_sae(engine, req.sae)
        out = TA.select(state, req.target, sae, n=req.n, threshold=req.threshold, describe=req.describe)
        return S.TargetSelectResponse(**out)

    @api.post("/demo", response_model=S.DemoResponse, tags=["targets"])
    def demo(req: S.DemoRequest) -> S.DemoResponse:
        """The guided demo: the target's default intervention, a known forget question it flips
        and a known retain question that stays right (the lock is taken per question)."""
        return S.DemoResponse(**TA.run_demo(state, req.target, req.max_scan))

    @api.post("/mcq", response_model=S.MCQResponse, tags=["questions"])
    def mcq(req: S.MCQRequest) -> S.MCQResponse:
        """Base scores and one score per clamp value (the slider / probability-vs-c curve)."""
        from unlearn_core.method import fastpath
        from unlearn_core.evaluation.mcq import score_base, score_curve, score_question, scored_texts

        if req.question_id is not None:
            qset, q = state.find_question(req.set, req.question_id)
            set_name, label = req.set, qset.label
        else:
            iq = req.question
            digest = hashlib.sha1(json.dumps([iq.question, list(iq.choices), iq.answer, iq.subject]).encode()
                                  ).hexdigest()[:10]  # everything scoring reads: the slider LRU's key names it
            q = D.Question(f"inline:{iq.subject}:{digest}", iq.question, tuple(iq.choices), iq.answer, iq.subject,
                           "inline")
            set_name, label = "inline", "inline question"
        engine = state.engine()
        got: dict = {}
        curve: list[S.CurvePoint] = []
        values = list(req.values or [])
        scores: list = []

        def first(engine):
            ivs = got["ivs"] = to_interventions(engine, req.interventions)
            if not fits_context(engine, q, margin=0):
                raise ValueError(f"the question's prompt is longer than the model's context "
                                 f"({engine.model.cfg.n_ctx} tokens)")
            got["base"] = score_base(engine, q, ivs)
            got["prompts"] = scored_texts(q, engine.scoring, engine.prompt_format, engine.model.tokenizer)
            if ivs and not values:
                scores.append(score_question(engine, q, ivs))

        known: dict[float, object] = {}  # value -> score, from the slider LRU or computed now

        def steps():  # the base (and a first batch of values) in one hold when they fit in it
            yield first
            ivs = got["ivs"]
            if ivs and values:  # steps of 8 values (the fast path's batches; exact), or of one value
                key = got["key"] = PF.curve_key(set_name, q, engine.scoring, engine.prompt_format, ivs,
                                                engine.variant)
                for v in values:
                    hit = state.scores.get(key, v)
                    if hit is not None:
                        known[float(v)] = hit
                todo = [v for v in values if float(v) not in known]
                per = CURVE_STEP if fastpath.supports(engine, ivs, engine.scoring) else 1

                def run(engine, vs):
                    for v, sc in zip(vs, score_curve(engine, q, ivs, vs)):
                        known[float(v)] = sc
                        state.scores.put(key, v, sc)

                for s in range(0, len(todo), per):
                    yield lambda engine, vs=todo[s : s + per]: run(engine, vs)
            if any(iv.gate is not None for iv in ivs):  # the gates' decisions (and P(correct) open/shut)
                v0 = values[0] if values else None
                yield lambda engine: got.__setitem__("gates", gate_report(
                    engine, q, ivs, v0, got["base"], known.get(float(v0)) if values else scores[0]))

        with state.variant(req.variant):
            run_steps(state, steps(), "mcq")
        ivs, base, prompts = got["ivs"], got["base"], got["prompts"]
        if ivs and values:
            curve = [S.CurvePoint(value=v, score=score_out(known[float(v)])) for v in values]
            if len(values) == 1 and req.variant == "base":  # a slider step: score the next ones ahead
                prefetcher.submit(got["key"], q, ivs, PF.neighbours(float(values[0]), 0.0, MAX_ABS_CLAMP))
        elif ivs:
            curve = [S.CurvePoint(value=None, score=score_out(scores[0]))]
        return S.MCQResponse(question=question_out(q), set=set_name, set_label=label, scoring=engine.scoring,
                             prompt_format=engine.prompt_format, prompts=prompts, base=score_out(base),
                             variant=req.variant,
                             interventions=iv_out(ivs, req.interventions),
                             curve=curve, gates=got.get("gates", []))

    @api.post("/generate", response_model=S.GenerateResponse, tags=["text"])
    def generate(req: S.GenerateRequest) -> S.GenerateResponse:
        """Base and intervened continuations (the clamp also applies to generated tokens)."""
        from unlearn_core.evaluation.metrics import Generation

        kw = dict(max_new_tokens=req.max_new_tokens, temperature=req.temperature, seed=req.seed)
        with state.variant(req.variant):
            with state.model("generate") as engine:
                ivs = to_interventions(engine, req.interventions)
                n = engine.model.to_tokens(req.prompt, prepend_bos=True, truncate=False).shape[1]
                check_length(engine, n, req.max_new_tokens)
            texts = []
            for g in [Generation(engine, req.prompt, None, **kw)] + ([Generation(engine, req.prompt, ivs, **kw)]
                                                                       if ivs else []):
                def steps(g=g):  # one token per step, the same text as metrics.generate
                    while not g.done:
                        yield g.step
                    yield lambda engine: texts.append(g.text())  # the tokenizer, under the lock too

                run_steps(state, steps(), "generate")
        base, inter = texts[0], (texts[1] if ivs else None)
        return S.GenerateResponse(prompt=req.prompt, base=base, intervened=inter,
                                  interventions=iv_out(ivs, req.interventions))

    @api.post("/loss_added", response_model=S.LossAddedResponse, tags=["metrics"])
    @on_variant
    def loss_added(req: S.LossAddedRequest) -> S.LossAddedResponse:
        """Mean next-token loss with the interventions minus without (same windows as metrics.loss_added)."""
        from unlearn_core.features.stats import corpus_docs
        from unlearn_core.evaluation.metrics import corpus_windows, nll_batch_size

        engine = state.engine()
        check_corpus(req.corpus, engine.settings.data_dir)
        docs = corpus_docs(engine, req.corpus)  # reading files: no lock
        with state.model("loss_added"):
            ivs = to_interventions(engine, req.interventions)
            windows = corpus_windows(engine.model, docs, req.n_tokens, req.ctx)
        bs = nll_batch_size(req.ctx)  # a step is one batch of windows (~1k tokens)
        clean = clean_nll_chunked(state, req.corpus, windows, bs, what="loss_added")
        inter, n = nll_chunked(state, windows, ivs, batch_size=bs, what="loss_added")
        return S.LossAddedResponse(corpus=req.corpus, clean_loss=finite(clean), intervened_loss=finite(inter),
                                   loss_added=finite(inter - clean), n_tokens=n, interventions=iv_out(ivs))

    @api.post("/perplexity", response_model=S.PerplexityResponse, tags=["metrics"])
    @on_variant
    def perplexity(req: S.PerplexityRequest) -> S.PerplexityResponse:
        """Perplexity of a corpus part, clean and (with interventions) intervened."""
        from unlearn_core.features.stats import corpus_docs, parse_corpus_spec
        from unlearn_core.evaluation.metrics import corpus_windows, nll_batch_size

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

        return S.PerplexityResponse(corpus=name, part=part, base=ppl(None), intervened=ppl(ivs) if ivs else None,
                                    interventions=iv_out(ivs))

    @api.post("/jobs", response_model=S.JobCreated, status_code=201, tags=["jobs"])
    def submit_job(spec: S.JobSpec) -> S.JobCreated:
        """Queue a sweep; it runs in the background worker and is persisted per configuration."""
        job = runner.submit(spec)
        return S.JobCreated(id=job.id, status=job.status, total=job.total)

    @api.get("/jobs", response_model=S.JobList, tags=["jobs"])
    def list_jobs() -> S.JobList:
        state.engine()
        return S.JobList(jobs=[S.JobSummary(**j.summary()) for j in sorted(runner.jobs.values(),
                                                                           key=lambda j: j.created)])

    @api.get("/jobs/{job_id}", response_model=S.JobDetail, tags=["jobs"])
    def get_job(job_id: str) -> S.JobDetail:
        state.engine()
        return S.JobDetail(**runner.get(job_id).detail())

    @api.post("/jobs/{job_id}/cancel", response_model=S.JobSummary, tags=["jobs"])
    def cancel_job(job_id: str) -> S.JobSummary:
        state.engine()
        return S.JobSummary(**runner.cancel(job_id).summary())

    @api.post("/rmu", response_model=S.RMURunOut, status_code=202, tags=["rmu"])
    def train_rmu(req: S.RMUTrainRequest) -> S.RMURunOut:
        """Queue an RMU training run (resumes a cancelled or unfinished run of the same settings)."""
        over = req.model_dump(exclude={"name", "target", "delay_per_step"}, exclude_none=True)
        return S.RMURunOut(**rmu_runner.submit(req.name, req.target, over, req.delay_per_step).summary())

    @api.get("/rmu", response_model=S.RMURunList, tags=["rmu"])
    def list_rmu() -> S.RMURunList:
        """Every RMU run this server knows (finished ones are model variants: rmu:<name>)."""
        state.engine()
        return S.RMURunList(runs=[S.RMURunOut(**r.summary()) for r in rmu_runner.runs.values()])

    @api.get("/rmu/{name}", response_model=S.RMURunOut, tags=["rmu"])
    def get_rmu(name: str) -> S.RMURunOut:
        state.engine()
        return S.RMURunOut(**rmu_runner.get(name).summary())

    @api.post("/rmu/{name}/cancel", response_model=S.RMURunOut, tags=["rmu"])
    def cancel_rmu(name: str) -> S.RMURunOut:
        state.engine()
        return S.RMURunOut(**rmu_runner.cancel(name).summary())

    app.include_router(api)
    return app


def neuronpedia_info(engine: Engine, sae: str, feature: int) -> dict:
    from unlearn_core.features import neuronpedia as NP

    loaded = engine.saes[sae]
    if not loaded.neuronpedia_id:
        return {"available": False, "message": "no Neuronpedia id for this SAE (local SAE)"}
    model_id, sae_id = loaded.neuronpedia_id.split("/", 1)
    cfg = NP.NeuronpediaConfig(cache_dir=Path(engine.settings.cache_dir) / "neuronpedia")
    return dict(NP.get_feature(model_id, sae_id, feature, cfg).__dict__)


# ---------------------------------------------------------------- running it


def engine_factory_for(settings, tiny: bool = False) -> Callable[[], Engine]:
    """The real engine from settings, or the tiny test backend (with the settings' cache/data dirs)."""
    if tiny:
        def factory() -> Engine:
            from unlearn_core.model.tiny import tiny_engine

            engine = tiny_engine(cache_dir=settings.cache_dir)
            if settings.data_dir:
                engine.settings.data_dir = settings.data_dir
            engine.settings.targets_file = settings.targets_file
            for k in ("job_backend", "ray_workers", "ray_address"):
                setattr(engine.settings, k, getattr(settings, k))
            return engine

        return factory

    def load() -> Engine:
        from unlearn_core.model.engine import load_engine

        return load_engine(settings, progress=False)

    return load


def serve(settings, host: str = "127.0.0.1", port: int = 8765, tiny: bool = False, log_level: str = "warning") -> None:
    import uvicorn

    app = create_app(engine_factory_for(settings, tiny), allow_test_options=tiny)
    if host not in LOCAL_HOSTS and not os.environ.get("UNLEARN_TOKEN"):
        log.warning("listening on %s without UNLEARN_TOKEN: anyone who can reach this port can use the model", host)
    backend = "tiny test backend" if tiny else settings.model
    print(f"unlearn server ({backend}) on http://{host}:{port}  - API docs at /docs", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
