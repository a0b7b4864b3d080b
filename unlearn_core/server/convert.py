"""Request-scoped helpers the routers share: SAE keys, interventions in and out, scores, variants.

Why here: several resources (features, questions, metrics, targets) turn the same request
pieces into engine objects and back; one place keeps their validation identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from unlearn_core.data import loaders as D
from unlearn_core.method.interventions import Intervention, validate
from unlearn_core.model.engine import Engine
from unlearn_core.server import schemas as S
from unlearn_core.server.access import check_corpus, server_targets
from unlearn_core.server.state import ServerState

T = TypeVar("T")


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

    out = [
        Intervention(
            resolve_sae(engine, iv.sae),
            tuple(iv.features),
            float(iv.value),
            iv.mode,
            iv.gate if iv.gate_percentile is None else 0.0,
        )
        for iv in ivs
    ]
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
        out.append(
            S.InterventionOut(
                sae=iv.sae_key,
                features=list(iv.features),
                value=iv.value,
                mode=iv.mode,
                label=iv.label(),
                gate=iv.gate,
                gate_percentile=pct,
                gate_corpus=(req.gate_corpus or DEFAULT_CORPUS) if pct is not None else None,
            )
        )
    return out


def gate_report(
    engine: Engine, q: D.Question, ivs: list[Intervention], value: float | None, base, own=None
) -> list[S.GateOut]:
    """rho, tau and the decision of each gated intervention on ``q``'s prompt, with the right
    answer's probability clean and with the gates held open (at ``value``, else the
    interventions' own c): enough to draw P(correct) against tau. ``own``: the request's score
    there, which is the open one when every gate is open (then nothing more is scored; when one
    is shut the gated score was the clean one, free, and the open one costs one static step)."""
    from dataclasses import replace

    from unlearn_core.evaluation.mcq import score_curve, score_question
    from unlearn_core.method.gate import opened, prompt_rho

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
    return [
        S.GateOut(
            intervention=i,
            rho=rhos[i],
            tau=at[i].gate,
            open=rhos[i] > at[i].gate,
            p_correct_clean=base.probs[q.answer],
            p_correct_open=open_score.probs[q.answer],
        )
        for i in gated
    ]


def question_out(q: D.Question) -> S.QuestionOut:
    d = q.to_dict()
    d["extra"] = d.get("extra") or None
    return S.QuestionOut(**d)


def target_question_sets(engine: Engine) -> list[tuple[str, str]]:
    """The question sets the server's targets name (so a user target's sets are offered too)."""
    from unlearn_core.evaluation.targets import TargetError

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


def on_variant(state: ServerState, variant: str, compute: Callable[[], T]) -> T:
    """``compute()`` with the model variant applied in every hold of the model lock it takes (the
    variant in place of the model as loaded); the response names the variant."""
    with state.variant(variant):
        out = compute()
    out.variant = variant
    return out


def neuronpedia_info(engine: Engine, sae: str, feature: int) -> dict:
    from unlearn_core.features import neuronpedia as NP

    loaded = engine.saes[sae]
    if not loaded.neuronpedia_id:
        return {"available": False, "message": "no Neuronpedia id for this SAE (local SAE)"}
    model_id, sae_id = loaded.neuronpedia_id.split("/", 1)
    cfg = NP.NeuronpediaConfig(cache_dir=Path(engine.settings.cache_dir) / "neuronpedia")
    return dict(NP.get_feature(model_id, sae_id, feature, cfg).__dict__)
