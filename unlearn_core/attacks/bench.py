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
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from unlearn_core.attacks import transforms as TR
from unlearn_core.attacks.defences import Defence
from unlearn_core.attacks.holds import score_chunks
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
    "relearn": ("weights", None),  # fine-tunes with the defence on: attacks.relearn, one row per variant
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
    cache: dict = field(default_factory=dict)  # (defence, question id) -> right; (defence, id, "p") -> P(correct)
    # how the bench touches the model: ``run(fn)`` returns ``fn(engine)``. The server passes one
    # that takes its model lock (as background work) and checks for a cancel, so no hold lasts
    # longer than one batch; None calls ``fn(engine)`` directly (the CLI, the tests)
    run: Callable[[Callable], Any] | None = None


def held(engine, inputs: Inputs, fn: Callable):
    """``fn(engine)`` through ``inputs.run`` (one hold of the server's model lock), or directly."""
    return inputs.run(fn) if inputs.run is not None else fn(engine)


def load_inputs(
    engine, target: Target, probes: str | None, part: str | None = None, run: Callable | None = None
) -> Inputs:
    """``probes``: a question-set spec or file of probes (None: the target's registered set);
    ``run``: see ``Inputs.run``."""
    part = part or target.eval_part
    scoring = target.scoring or engine.scoring
    strict = target.strict_known
    data_dir = engine.settings.data_dir
    whole = D.load_question_set(target.forget_questions, data_dir).questions
    originals = D.load_question_set(with_part(target.forget_questions, part), data_dir).questions
    forget = known(engine, run, originals, scoring, strict)
    spec = probes or target.probes
    linked = link(D.load_question_set(spec, data_dir).questions, whole, target.forget_questions) if spec else []
    retain_set = D.load_question_set(with_part(target.retain_questions[0], part), data_dir).questions
    retain = known(engine, run, retain_set, scoring, strict)
    pool = D.load_question_set(with_part(target.retain_questions[0], "train"), data_dir).questions
    shots = known(engine, run, pool, scoring, strict)
    return Inputs(forget, linked, retain, shots, scoring, spec, target.retain_questions[0], run=run)


def known(engine, run: Callable | None, questions: list[Question], scoring: str, strict: bool) -> list[Question]:
    """``mcq.known_questions`` (the same disk entry, the same steps); through ``run``, one step
    (8 questions or orderings) per hold."""
    if run is None:
        return known_questions(engine, questions, scoring=scoring, strict=strict)
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation.mcq import known_filter_steps, known_path

    def compute() -> list[str]:
        ids: list[str] = []
        for step in known_filter_steps(questions, scoring, engine.prompt_format, strict, ids):
            run(step)
        return ids

    ids = set(C.cached_json(known_path(engine, questions, strict, scoring), compute))
    return [q for q in questions if q.id in ids]


def right(engine, inputs: Inputs, defence: Defence, qs: list[Question]) -> list[bool]:
    """Whether each question is answered right under ``defence`` (cached per defence and id, with
    its P(correct) beside it: ``p_correct``)."""
    todo = [q for q in qs if (defence.name, q.id) not in inputs.cache]
    for chunk in score_chunks(todo):

        def score(e, chunk=chunk):
            with defence.applied(e):
                return score_questions(e, chunk, list(defence.interventions), scoring=inputs.scoring)

        for q, sc in zip(chunk, held(engine, inputs, score)):
            inputs.cache[(defence.name, q.id)] = sc.correct
            inputs.cache[(defence.name, q.id, "p")] = sc.probs[q.answer]
    return [inputs.cache[(defence.name, q.id)] for q in qs]


def p_correct(inputs: Inputs, defence: Defence, qs: list[Question]) -> list[float | None]:
    """P(correct answer) of questions ``right`` scored under ``defence`` (None: not scored)."""
    return [inputs.cache.get((defence.name, q.id, "p")) for q in qs]


def says_answer(engine, inputs: Inputs, defence: Defence, lp: LinkedProbe) -> bool:
    """Free text: whether the greedy continuation of the probe's prompt names a keyword."""
    from unlearn_core.evaluation.generation_check import NEW_TOKENS
    from unlearn_core.evaluation.metrics import generate

    key = (defence.name, lp.probe.id, "text")
    if key not in inputs.cache:

        def gen(e):
            with defence.applied(e):
                return generate(e, lp.probe.question, list(defence.interventions) or None, max_new_tokens=NEW_TOKENS)

        inputs.cache[key] = held(engine, inputs, gen)
    from unlearn_core.evaluation.generation_check import says

    return any(says(inputs.cache[key], k) for k in lp.keywords)


GEN_STEP = 16  # probes generated together per hold: one unembedding read per token for all of them


def says_answers(engine, inputs: Inputs, defence: Defence, lps: list[LinkedProbe]) -> list[bool]:
    """``says_answer`` for many probes: the texts not cached yet are generated as batches
    (``generate_batch``: the same texts as one at a time, each step's W_U read shared)."""
    from unlearn_core.evaluation.generate_batch import generate_greedy
    from unlearn_core.evaluation.generation_check import NEW_TOKENS

    todo = list({lp.probe.id: lp for lp in lps if (defence.name, lp.probe.id, "text") not in inputs.cache}.values())
    for s in range(0, len(todo), GEN_STEP):
        chunk = todo[s : s + GEN_STEP]

        def gen(e, chunk=chunk):
            with defence.applied(e):
                prompts = [lp.probe.question for lp in chunk]
                return generate_greedy(e, prompts, list(defence.interventions), max_new_tokens=NEW_TOKENS)

        for lp, text in zip(chunk, held(engine, inputs, gen)):
            inputs.cache[(defence.name, lp.probe.id, "text")] = text
    return [says_answer(engine, inputs, defence, lp) for lp in lps]


def pairs_for(engine, attack: str, inputs: Inputs, k: int | None = None) -> list[tuple[Question, Question]]:
    """(original, attacked) for each known original the attack has a form of."""
    known = {q.id: q for q in inputs.forget}
    kind = ATTACKS[attack][1]
    if kind is not None:
        return [(lp.source, lp.probe) for lp in by_kind(inputs.probes, kind) if lp.source.id in known]
    if attack == "few_shot":
        shots = TR.shots_for(inputs.shots, k or TR.FEW_SHOT_KS[0])
        return [(q, TR.few_shot(q, shots)) for q in inputs.forget]
    filler = held(engine, inputs, filler_text)  # the tokenizer: under the lock, too
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
        filler = held(engine, inputs, filler_text)
        return [TR.with_filler(q, filler) for q in inputs.retain]
    return list(inputs.retain)


def run_one(engine, inputs: Inputs, defence: Defence, attack: str, k: int | str | None = None) -> dict:
    """One defence x one attack: per-fact outcomes, their summary and the retain accuracy."""
    if attack == "relearn":  # k: the variant; the untrained scores through this module's cache
        from unlearn_core.attacks import relearn as RL

        def scored(d: Defence, qs: list[Question]) -> tuple[list[bool], list[float | None]]:
            return right(engine, inputs, d, qs), p_correct(inputs, d, qs)

        return RL.run(engine, inputs, defence, str(k), scored)
    t0 = time.perf_counter()
    if attack == "generation":
        known = {q.id for q in inputs.forget}
        linked = [lp for lp in by_kind(inputs.probes, "generation") if lp.source.id in known]
        clean_says = says_answers(engine, inputs, NONE, linked)
        says_answers(engine, inputs, defence, [lp for lp, c in zip(linked, clean_says) if c])  # batched, cached
        orig = right(engine, inputs, defence, [lp.source for lp in linked])
        facts = [
            FactOutcome(lp.source.id, True, c, o, says_answer(engine, inputs, defence, lp) if c else False)
            for lp, c, o in zip(linked, clean_says, orig)
        ]
        facts = with_probs(engine, inputs, defence, [(lp.source, lp.probe) for lp in linked], facts, mcq=False)
    else:
        pairs = pairs_for(engine, attack, inputs, k)
        clean = right(engine, inputs, NONE, [a for _, a in pairs])
        orig = right(engine, inputs, defence, [o for o, _ in pairs])
        att = right(engine, inputs, defence, [a for _, a in pairs])
        facts = [FactOutcome(o.id, True, c, d, x) for (o, _), c, d, x in zip(pairs, clean, orig, att)]
        facts = with_probs(engine, inputs, defence, pairs, facts)
    retain = retain_pairs(engine, attack, inputs, k)
    known_r = [q for q, ok in zip(retain, right(engine, inputs, NONE, retain)) if ok]
    kept = right(engine, inputs, defence, known_r)
    return {
        "defence": defence.name,
        "attack": row_label(attack, k),
        "threat": ATTACKS[attack][0],
        **summarize(facts),
        "retain_acc": sum(kept) / len(kept) if kept else None,
        "n_retain": len(kept),
        "retain_form": "attacked" if attack in ("few_shot", "filler") else "original wording",
        "wall_s": round(time.perf_counter() - t0, 2),
        "facts": [f.to_dict() for f in facts],
    }


def with_probs(
    engine, inputs: Inputs, defence: Defence, pairs: list[tuple[Question, Question]], facts: list, mcq: bool = True
) -> list[FactOutcome]:
    """The drill-down's view of each fact: both texts and P(correct answer) clean and defended in
    the original wording and, for multiple choice (``mcq``), defended in the attacked form (free
    text has no probability). The clean originals are scored once per run (cached)."""
    originals = [o for o, _ in pairs]
    right(engine, inputs, NONE, originals)
    p_clean = p_correct(inputs, NONE, originals)
    p_def = p_correct(inputs, defence, originals)
    p_att = p_correct(inputs, defence, [a for _, a in pairs]) if mcq else [None] * len(pairs)
    return [
        replace(f, p_clean=pc, p_defended=pd, p_attacked=pa, original=o.question, attacked=a.question)
        for f, (o, a), pc, pd, pa in zip(facts, pairs, p_clean, p_def, p_att)
    ]


def expand(attacks: list[str]) -> list[tuple[str, int | str | None]]:
    """few_shot runs once per k in ``transforms.FEW_SHOT_KS``; relearn once per variant (facts, wikitext)."""
    per = {"few_shot": TR.FEW_SHOT_KS, "relearn": ("facts", "wikitext")}
    return [(a, k) for a in attacks for k in per.get(a, (None,))]


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
    check_probes(target, attacks, inputs)
    jobs = plan(defences, attacks)
    tick = stage("defences x attacks", len(jobs)) if stage else None
    rows = []
    for d, a, k in jobs:
        rows.append(run_one(engine, inputs, d, a, k))
        if tick:
            tick(1)
    return {**header(target, part, inputs, defences), "rows": rows, "wall_s": round(time.perf_counter() - t0, 1)}


def plan(defences: list[Defence], attacks: list[str]) -> list[tuple[Defence, str, int | None]]:
    """The rows in order: every defence x every attack (few-shot: per k)."""
    return [(d, a, k) for d in defences for a, k in expand(attacks)]


def row_label(attack: str, k: int | None) -> str:
    """A row's ``attack`` as reported ("few_shot:8"); with its defence, the row's key."""
    return attack if k is None else f"{attack}:{k}"


def check_probes(target: Target, attacks: list[str], inputs: Inputs) -> None:
    if any(a in PROBE_ATTACKS for a in attacks) and not inputs.probes:
        raise ValueError(f"target {target.name!r} has no probe set; pass one (--probes FILE)")


def header(target: Target, part: str | None, inputs: Inputs, defences: list[Defence]) -> dict:
    """What the result says above its rows: the target, the part, the known questions, the defences."""
    return {
        "target": target.name,
        "part": part or target.eval_part,
        "probes": inputs.probe_source,
        "n_known_forget": len(inputs.forget),
        "n_known_retain": len(inputs.retain),
        "retain_set": inputs.retain_source,
        "defences": [d.describe() for d in defences],
    }
