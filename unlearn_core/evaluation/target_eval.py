"""`target eval`: a target's default intervention on its held-out questions, and the loss it adds.

Accuracies are over the questions the clean model knows (so the base accuracy is 1.0 by
construction); every set's known filter runs first, then each set is scored clean and clamped.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from unlearn_core.data import loaders as D
from unlearn_core.evaluation.targets import Target, default_intervention, question_specs

if TYPE_CHECKING:
    from unlearn_core.method.interventions import Intervention


def known_filter_total(engine, target, forget_file: str | None = None, retain_files: list[str] | None = None) -> int:
    """The questions the known filter of `target eval` (and `gate`) will score (its progress counts one each): those
    of the sets whose known list is not cached yet, so the bar has a total and an ETA."""
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation.mcq import known_path
    from unlearn_core.evaluation.targets import question_specs

    forget, retain = question_specs(target, forget_file, retain_files)
    total = 0
    for spec in dict.fromkeys([forget, *retain]):
        questions = D.load_question_set(spec, engine.settings.data_dir).questions
        if not C.is_cached(known_path(engine, questions, target.strict_known, target.scoring or engine.scoring)):
            total += len(questions)
    return total


def evaluate_target(
    engine,
    target: Target,
    forget_file: str | None = None,
    retain_files: list[str] | None = None,
    loss_tokens: int = 20_000,
    intervention: Intervention | None = None,
    progress=None,
    stage=None,
) -> dict:
    """Apply the target's default intervention; accuracies over the known questions (so the
    base accuracy is 1.0 by construction), loss added on the target's loss corpus.

    ``progress(n)`` counts the known filter's questions; ``stage(what, total)``, when given, is
    called as each later stage starts (scoring a set's known questions, the loss added) and
    returns that stage's ``tick(n)``: the CLI shows one bar per stage, each with its total."""
    from unlearn_core.evaluation.mcq import ORDERINGS, known_questions
    from unlearn_core.evaluation.metrics import loss_added
    from unlearn_core.evaluation.sweep import evaluate_configs

    scoring = target.scoring or engine.scoring
    iv = intervention or default_intervention(engine, target)
    forget_spec, retain_specs = question_specs(target, forget_file, retain_files)

    # every set's known filter first (one progress count), then the scoring of each set
    sets = [D.load_question_set(spec, engine.settings.data_dir) for spec in [forget_spec, *retain_specs]]
    knowns = [
        known_questions(engine, qs.questions, scoring=scoring, strict=target.strict_known, progress=progress)
        for qs in sets
    ]

    def one(spec: str, qs, known: list) -> dict:
        rows = len(ORDERINGS) if target.orderings and scoring == "letter" else 1  # what evaluate_configs counts
        what = f"{qs.label}: {len(known)} known questions, clean and clamped" + (" (orderings)" if rows > 1 else "")
        tick = stage(what, len(known) * rows) if stage else None
        base, inter = evaluate_configs(
            engine, known, [[], [iv]], scoring=scoring, orderings=target.orderings, progress=tick
        )
        return {
            "questions": spec,
            "label": qs.label,
            "n_questions": len(qs.questions),
            "n_known": len(known),
            "base_accuracy": base.accuracy if known else None,
            "intervened_accuracy": inter.accuracy if known else None,
        }

    forget, *retain_sets = [one(*x) for x in zip([forget_spec, *retain_specs], sets, knowns)]
    la = None
    if loss_tokens:
        docs = D.load_corpus(target.loss_corpus, engine.settings.data_dir)
        tick = (
            stage(f"loss added on {target.loss_corpus} (tokens, clean then clamped)", 2 * loss_tokens)
            if stage
            else None
        )
        la = loss_added(engine, docs, [iv], n_tokens=loss_tokens, corpus=target.loss_corpus, progress=tick).loss_added
    return {
        "target": target.name,
        "scoring": scoring,
        "strict_known": target.strict_known,
        "intervention": {
            "sae": iv.sae_key,
            "mode": iv.mode,
            "c": iv.c,
            "gate": iv.gate,  # gated modes: tau (calibrated on the target's retain corpora)
            "scales": list(iv.scales) if iv.scales is not None else None,  # c_i = c * scale_i
            "features": list(iv.features),
            "selection": asdict(target.selection),
        },
        "forget": forget,
        "retain": retain_sets[0] if retain_sets else None,
        "retain_sets": retain_sets,
        "loss_added": la,
        "loss_corpus": target.loss_corpus,
        "loss_tokens": loss_tokens,
    }
