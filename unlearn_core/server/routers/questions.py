"""Questions: pages of a question set and multiple-choice scoring (the slider's curve)."""

from __future__ import annotations

import hashlib
import json

from fastapi import APIRouter, Query

from unlearn_core.data import loaders as D
from unlearn_core.method.modes import MAX_ABS_CLAMP
from unlearn_core.server import prefetch as PF
from unlearn_core.server import schemas as S
from unlearn_core.server.convert import gate_report, iv_out, question_out, score_out, to_interventions
from unlearn_core.server.deps import State
from unlearn_core.server.state import ServerState
from unlearn_core.server.steps import fits_context, run_steps, select_questions

CURVE_STEP = 8  # clamp values per lock-hold step of /api/mcq (fastpath.score_curve's batch)

router = APIRouter(tags=["questions"])


def questions_page(
    state: ServerState, set_: str, known: bool, strict: bool, limit: int, offset: int, sync: bool
) -> S.QuestionsResponse:
    """A page of a question set, known-filtered when asked; ``sync`` (the GET) checks at most
    ``SYNC_KNOWN_QUESTIONS`` uncached questions, the task any number (its progress per question)."""
    qs = state.question_set(set_)
    page = qs.questions[offset : offset + limit]
    skipped = 0
    if known:
        with state.per_item(len(page)) as tick:
            page, skipped = select_questions(
                state, page, known=True, strict=strict, max_uncached=S.SYNC_KNOWN_QUESTIONS if sync else None, tick=tick
            )
    return S.QuestionsResponse(
        set=set_,
        label=qs.label,
        is_fallback=qs.is_fallback,
        origin=qs.origin,
        total=len(qs.questions),
        offset=offset,
        limit=limit,
        known=known,
        strict=known and strict,
        n_skipped_too_long=skipped,
        questions=[question_out(q) for q in page],
    )


@router.get("/questions", response_model=S.QuestionsResponse)
def questions(
    state: State,
    set_: str = Query("wmdp-bio", alias="set", max_length=300, description=S.QUESTION_SET_HELP),
    known: bool = Query(False, description="keep only questions the clean model knows (cached)"),
    strict: bool = Query(
        False, description="with known: the strict filter (also wrong with the question text blanked)"
    ),
    limit: int = Query(50, ge=1, le=S.MAX_PAGE),
    offset: int = Query(0, ge=0),
) -> S.QuestionsResponse:
    """A page of a question set; with known=true, the known filter is applied to that page.

    The filter checks at most ``SYNC_KNOWN_QUESTIONS`` (6: ~10 s on the embedded model) questions
    whose known status is not cached yet; more is a 409 that names ``POST /api/tasks/questions_known``
    (a body of set, strict, limit, offset: the same page, any number checked, progress per question)."""
    return questions_page(state, set_, known, strict, limit, offset, sync=True)


def compute_questions_known(state: ServerState, req: S.QuestionsKnownRequest) -> S.QuestionsResponse:
    """The task ``questions_known``: ``GET /api/questions?known=true`` without its limit."""
    return questions_page(state, req.set, True, req.strict, req.limit, req.offset, sync=False)


def mcq_question(state: ServerState, req: S.MCQRequest) -> tuple[D.Question, str, str]:
    """(the question, its set's name, its label): from a set by id, or the inline one."""
    if req.question_id is not None:
        qset, q = state.find_question(req.set, req.question_id)
        return q, req.set, qset.label
    iq = req.question
    read = [iq.question, list(iq.choices), iq.answer, iq.subject] + ([iq.probe] if iq.probe else [])
    digest = hashlib.sha1(json.dumps(read).encode()).hexdigest()[:10]  # what scoring reads: the slider LRU's key
    extra = {"probe": iq.probe} if iq.probe else {}
    q = D.Question(
        f"inline:{iq.subject}:{digest}", iq.question, tuple(iq.choices), iq.answer, iq.subject, "inline", extra
    )
    return q, "inline", "inline question"


def mcq_steps(state: ServerState, req: S.MCQRequest, q: D.Question, set_name: str, got: dict, known: dict):
    """The steps of one MCQ request: the base (and, without values, the interventions' own
    score) in the first hold, then the values not in the slider LRU in batches of ``CURVE_STEP``
    (the fast path's; exact) or one by one, then the gates' decisions. Fills ``got`` and ``known``
    (value -> score)."""
    from unlearn_core.evaluation.mcq import score_base, score_curve, score_question, scored_texts
    from unlearn_core.method import fastpath

    values = list(req.values or [])

    def first(engine):
        ivs = got["ivs"] = to_interventions(engine, req.interventions)
        if not fits_context(engine, q, margin=0):
            raise ValueError(
                f"the question's prompt is longer than the model's context ({engine.model.cfg.n_ctx} tokens)"
            )
        got["base"] = score_base(engine, q, ivs)
        got["prompts"] = scored_texts(q, engine.scoring, engine.prompt_format, engine.model.tokenizer)
        if ivs and not values:
            got["scores"] = [score_question(engine, q, ivs)]

    yield first
    engine, ivs = state.engine(), got["ivs"]
    if ivs and values:
        key = got["key"] = PF.curve_key(set_name, q, engine.scoring, engine.prompt_format, ivs, engine.variant)
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
        yield lambda engine: got.__setitem__(
            "gates", gate_report(engine, q, ivs, v0, got["base"], known.get(float(v0)) if values else got["scores"][0])
        )


@router.post("/mcq", response_model=S.MCQResponse)
def mcq(req: S.MCQRequest, state: State) -> S.MCQResponse:
    """Base scores and one score per clamp value (the slider / probability-vs-c curve)."""
    q, set_name, label = mcq_question(state, req)
    engine = state.engine()
    got: dict = {}
    known: dict[float, object] = {}  # value -> score, from the slider LRU or computed now
    values = list(req.values or [])
    with state.variant(req.variant):
        run_steps(state, mcq_steps(state, req, q, set_name, got, known), "mcq")
    ivs, base, prompts = got["ivs"], got["base"], got["prompts"]
    curve: list[S.CurvePoint] = []
    if ivs and values:
        curve = [S.CurvePoint(value=v, score=score_out(known[float(v)])) for v in values]
        if len(values) == 1 and req.variant == "base":  # a slider step: score the next ones ahead
            state.prefetcher.submit(got["key"], q, ivs, PF.neighbours(float(values[0]), 0.0, MAX_ABS_CLAMP))
    elif ivs:
        curve = [S.CurvePoint(value=None, score=score_out(got["scores"][0]))]
    return S.MCQResponse(
        question=question_out(q),
        set=set_name,
        set_label=label,
        scoring=engine.scoring,
        prompt_format=engine.prompt_format,
        prompts=prompts,
        base=score_out(base),
        variant=req.variant,
        interventions=iv_out(ivs, req.interventions),
        curve=curve,
        gates=got.get("gates", []),
    )
