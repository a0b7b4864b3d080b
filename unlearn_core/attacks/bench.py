"""Every attack against every defence, through one scoring path.

For each attack the bench builds (original, attacked) question pairs over the facts the clean
model knows in the original wording (strict: right, and wrong with the question blanked), on the
target's ``eval_part`` (held out: neither the selection nor the default's choice saw it). It then
scores, per defence, the original and the attacked form, and reports ``recovery.summarize`` plus
the retain accuracy under the same attack (``retain_acc``, on the known questions of the target's
first retain set, the one its default is held to; for the probe attacks, which have no retain
probes, in their own wording; for few-shot and filler, with the same shots or filler). One set,
not every retain set: an 8-shot prompt is ~10x a question's tokens, and the bench must fit 15
minutes on two cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from unlearn_core.attacks import transforms as TR
from unlearn_core.attacks.defences import Defence
from unlearn_core.attacks.recovery import FactOutcome, summarize
from unlearn_core.data import loaders as D
from unlearn_core.data.probes import LinkedProbe, by_kind, link
from unlearn_core.data.questions import Question
from unlearn_core.data.specs import with_part
from unlearn_core.evaluation.mcq import known_questions, score_questions
from unlearn_core.evaluation.targets import Target

# attack -> (threat model, probe kind it reads or None)
ATTACKS: dict[str, tuple[str, str | None]] = {
    "rephrase": ("api", "paraphrase"),
    "fill_blank": ("api", "fill_blank"),
    "context": ("api", "context"),
    "few_shot": ("api", None),
    "filler": ("api", None),
    "generation": ("api", "generation"),
}
PROBE_ATTACKS = ("rephrase", "fill_blank", "context", "generation")
NONE = Defence("none")


def parse_attacks(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in ATTACKS]
    if bad or not names:
        raise ValueError(f"unknown attack(s) {bad or spec!r}; choose from {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


@dataclass
class Inputs:
    """What every attack reads: the known originals, their probes, retain questions and shots."""

    forget: list[Question]  # known originals (strict), eval part
    probes: list[LinkedProbe]  # linked to the whole forget set; filtered to ``forget`` per attack
    retain: list[Question]  # known questions (strict) of the target's first retain set, eval part
    shots: list[Question]  # known questions of that set's train half: few-shot examples
    scoring: str
    probe_source: str | None
    retain_source: str = ""
    cache: dict = field(default_factory=dict)  # (defence, question id) -> right


def load_inputs(engine, target: Target, probes: str | None, part: str | None = None) -> Inputs:
    """``probes``: a question-set spec or file of probes (None: the target's registered set)."""
    part = part or target.eval_part
    scoring = target.scoring or engine.scoring
    strict = target.strict_known
    data_dir = engine.settings.data_dir
    whole = D.load_question_set(target.forget_questions, data_dir).questions
    originals = D.load_question_set(with_part(target.forget_questions, part), data_dir).questions
    forget = known_questions(engine, originals, scoring=scoring, strict=strict)
    spec = probes or target.probes
    linked = link(D.load_question_set(spec, data_dir).questions, whole, target.forget_questions) if spec else []
    retain_set = D.load_question_set(with_part(target.retain_questions[0], part), data_dir).questions
    retain = known_questions(engine, retain_set, scoring=scoring, strict=strict)
    pool = D.load_question_set(with_part(target.retain_questions[0], "train"), data_dir).questions
    shots = known_questions(engine, pool, scoring=scoring, strict=strict)
    return Inputs(forget, linked, retain, shots, scoring, spec, target.retain_questions[0])


def right(engine, inputs: Inputs, defence: Defence, qs: list[Question]) -> list[bool]:
    """Whether each question is answered right under ``defence`` (cached per defence and id)."""
    todo = [q for q in qs if (defence.name, q.id) not in inputs.cache]
    if todo:
        with defence.applied(engine):
            scores = score_questions(engine, todo, list(defence.interventions), scoring=inputs.scoring)
        inputs.cache.update(((defence.name, q.id), s.correct) for q, s in zip(todo, scores))
    return [inputs.cache[(defence.name, q.id)] for q in qs]


def says_answer(engine, inputs: Inputs, defence: Defence, lp: LinkedProbe) -> bool:
    """Free text: whether the greedy continuation of the probe's prompt names a keyword."""
    from unlearn_core.evaluation.generation_check import NEW_TOKENS
    from unlearn_core.evaluation.metrics import generate

    key = (defence.name, lp.probe.id, "text")
    if key not in inputs.cache:
        with defence.applied(engine):
            text = generate(engine, lp.probe.question, list(defence.interventions) or None, max_new_tokens=NEW_TOKENS)
        inputs.cache[key] = text
    from unlearn_core.evaluation.generation_check import says

    return any(says(inputs.cache[key], k) for k in lp.keywords)


def pairs_for(engine, attack: str, inputs: Inputs, k: int | None = None) -> list[tuple[Question, Question]]:
    """(original, attacked) for each known original the attack has a form of."""
    known = {q.id: q for q in inputs.forget}
    kind = ATTACKS[attack][1]
    if kind is not None:
        return [(lp.source, lp.probe) for lp in by_kind(inputs.probes, kind) if lp.source.id in known]
    if attack == "few_shot":
        shots = TR.shots_for(inputs.shots, k or TR.FEW_SHOT_KS[0])
        return [(q, TR.few_shot(q, shots)) for q in inputs.forget]
    filler = filler_text(engine)
    return [(q, TR.with_filler(q, filler)) for q in inputs.forget]


def filler_text(engine) -> str:
    """The filler (read from its corpus once per process: the attack and its retain side share it)."""
    key = (id(engine), TR.FILLER_TOKENS)
    if key not in _FILLER:
        from unlearn_core.evaluation.experiments.gate import filler_text as text

        _FILLER[key] = text(engine, TR.FILLER_TOKENS)
    return _FILLER[key]


_FILLER: dict[tuple, str] = {}


def retain_pairs(engine, attack: str, inputs: Inputs, k: int | None) -> list[Question]:
    """The retain questions as the attack presents them (their own wording for probe attacks)."""
    if attack == "few_shot":
        shots = TR.shots_for(inputs.shots, k or TR.FEW_SHOT_KS[0])
        return [TR.few_shot(q, shots) for q in inputs.retain]
    if attack == "filler":
        filler = filler_text(engine)
        return [TR.with_filler(q, filler) for q in inputs.retain]
    return list(inputs.retain)


def run_one(engine, inputs: Inputs, defence: Defence, attack: str, k: int | None = None) -> dict:
    """One defence x one attack: per-fact outcomes, their summary and the retain accuracy."""
    t0 = time.perf_counter()
    if attack == "generation":
        known = {q.id for q in inputs.forget}
        linked = [lp for lp in by_kind(inputs.probes, "generation") if lp.source.id in known]
        clean_says = [says_answer(engine, inputs, NONE, lp) for lp in linked]
        orig = right(engine, inputs, defence, [lp.source for lp in linked])
        facts = [
            FactOutcome(lp.source.id, True, c, o, says_answer(engine, inputs, defence, lp) if c else False)
            for lp, c, o in zip(linked, clean_says, orig)
        ]
    else:
        pairs = pairs_for(engine, attack, inputs, k)
        clean = right(engine, inputs, NONE, [a for _, a in pairs])
        orig = right(engine, inputs, defence, [o for o, _ in pairs])
        att = right(engine, inputs, defence, [a for _, a in pairs])
        facts = [FactOutcome(o.id, True, c, d, x) for (o, _), c, d, x in zip(pairs, clean, orig, att)]
    retain = retain_pairs(engine, attack, inputs, k)
    known_r = [q for q, ok in zip(retain, right(engine, inputs, NONE, retain)) if ok]
    kept = right(engine, inputs, defence, known_r)
    return {
        "defence": defence.name,
        "attack": attack if k is None else f"{attack}:{k}",
        "threat": ATTACKS[attack][0],
        **summarize(facts),
        "retain_acc": sum(kept) / len(kept) if kept else None,
        "n_retain": len(kept),
        "retain_form": "attacked" if attack in ("few_shot", "filler") else "original wording",
        "wall_s": round(time.perf_counter() - t0, 2),
        "facts": [f.to_dict() for f in facts],
    }


def expand(attacks: list[str]) -> list[tuple[str, int | None]]:
    """few_shot runs once per k in ``transforms.FEW_SHOT_KS``."""
    return [(a, k) for a in attacks for k in (TR.FEW_SHOT_KS if a == "few_shot" else (None,))]


def run_bench(
    engine,
    target: Target,
    defences: list[Defence],
    attacks: list[str],
    probes: str | None = None,
    part: str | None = None,
    stage: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict:
    """The whole table: one row per defence x attack (few-shot: per k)."""
    t0 = time.perf_counter()
    tick = stage("known questions (forget, retain, shots)", 1) if stage else None
    inputs = load_inputs(engine, target, probes, part)
    if tick:
        tick(1)
    if any(a in PROBE_ATTACKS for a in attacks) and not inputs.probes:
        raise ValueError(f"target {target.name!r} has no probe set; pass one (--probes FILE)")
    jobs = [(d, a, k) for d in defences for a, k in expand(attacks)]
    tick = stage("defences x attacks", len(jobs)) if stage else None
    rows = []
    for d, a, k in jobs:
        rows.append(run_one(engine, inputs, d, a, k))
        if tick:
            tick(1)
    return {
        "target": target.name,
        "part": part or target.eval_part,
        "probes": inputs.probe_source,
        "n_known_forget": len(inputs.forget),
        "n_known_retain": len(inputs.retain),
        "retain_set": inputs.retain_source,
        "defences": [d.describe() for d in defences],
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
