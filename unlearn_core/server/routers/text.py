"""Text: tokenizing and generating (base and intervened continuations)."""

from __future__ import annotations

from fastapi import APIRouter

from unlearn_core.server import schemas as S
from unlearn_core.server.activations import check_length
from unlearn_core.server.convert import iv_out, to_interventions
from unlearn_core.server.deps import State
from unlearn_core.server.state import ServerState
from unlearn_core.server.steps import run_steps

router = APIRouter(tags=["text"])


@router.post("/tokenize", response_model=S.TokenizeResponse)
def tokenize(req: S.TokenizeRequest, state: State) -> S.TokenizeResponse:
    from unlearn_core.features.stats import token_strs

    with state.model("tokenize") as engine:
        ids = engine.model.to_tokens(req.text, prepend_bos=True, truncate=False)[0].tolist()
        return S.TokenizeResponse(
            tokens=token_strs(engine, ids), ids=ids, n_tokens=len(ids), n_ctx=engine.model.cfg.n_ctx
        )


def compute_generate(state: ServerState, req: S.GenerateRequest) -> S.GenerateResponse:
    """Base and intervened continuations, one token per lock step (the task's steps too)."""
    from unlearn_core.evaluation.metrics import Generation

    kw = dict(max_new_tokens=req.max_new_tokens, temperature=req.temperature, seed=req.seed)
    with state.variant(req.variant):
        with state.model("generate") as engine:
            ivs = to_interventions(engine, req.interventions)
            n = engine.model.to_tokens(req.prompt, prepend_bos=True, truncate=False).shape[1]
            check_length(engine, n, req.max_new_tokens)
        texts = []
        for g in [Generation(engine, req.prompt, None, **kw)] + (
            [Generation(engine, req.prompt, ivs, **kw)] if ivs else []
        ):

            def steps(g=g):  # one token per step, the same text as metrics.generate
                while not g.done:
                    yield g.step
                yield lambda engine: texts.append(g.text())  # the tokenizer, under the lock too

            state.expect(req.max_new_tokens + 1)
            run_steps(state, steps(), "generate")
    base, inter = texts[0], (texts[1] if ivs else None)
    return S.GenerateResponse(
        prompt=req.prompt, base=base, intervened=inter, interventions=iv_out(ivs, req.interventions)
    )


@router.post("/generate", response_model=S.GenerateResponse)
def generate(req: S.GenerateRequest, state: State) -> S.GenerateResponse:
    """Base and intervened continuations (the clamp also applies to generated tokens).

    Synchronous up to ``max_new_tokens`` times continuations (2 with interventions, else 1) of
    ``SYNC_NEW_TOKENS`` (96: ~10 s on the embedded model); more is a 400 that names the task
    route, ``POST /api/tasks/generate`` (the same body, up to ``MAX_NEW_TOKENS`` = 512)."""
    passes = 2 if req.interventions else 1
    if req.max_new_tokens * passes > S.SYNC_NEW_TOKENS:
        raise ValueError(
            f"max_new_tokens {req.max_new_tokens} x {passes} continuation(s) is more than a "
            f"synchronous request generates (at most {S.SYNC_NEW_TOKENS}, about 10 s); submit it as a "
            "task: POST /api/tasks/generate with the same body, then poll GET /api/tasks/{id}"
        )
    return compute_generate(state, req)
