"""Accuracy of many intervention configurations over a question set, sharing work.

For configurations on the same SAE, the upstream pass (to the hook), the clean keys/values
and the SAE codes are computed once per question and only the downstream part runs per
configuration, batched. With letter scoring over the 24 answer orderings, the orderings are
the rows of one cache and share the question stem downstream too. Configurations the fast
path cannot serve are scored the straightforward way.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearn_core.data.loaders import Question
from unlearn_core.evaluation.mcq import all_orderings, score_questions
from unlearn_core.method import fastpath
from unlearn_core.method.interventions import Intervention
from unlearn_core.model.engine import Engine

CONFIG_STEP = 8  # configurations per step of a sweep (with one question): the fast path's batch
# With this few configurations and one row per question (cloze, or letters without orderings),
# batches of questions per configuration beat the fast path's per-question sharing: its
# unembedding runs once per question and configuration, and reading W_U is most of a CPU's cost
# (target eval's clean + default clamp: 0.8 s a question on the fast path, 0.36 s in batches of 8).
FEW_CONFIGS = 2
QUESTION_BATCH = 8


@dataclass
class ConfigResult:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def table_accuracy(self) -> float | None:
        """The accuracy as the results table stores it: None when nothing was scored (JSON has no NaN)."""
        return self.correct / self.total if self.total else None


def evaluate_configs(
    engine: Engine,
    questions: list[Question],
    configs: list[list[Intervention]],
    scoring: str | None = None,
    style: str | None = None,
    orderings: bool = False,
    progress=None,
) -> list[ConfigResult]:
    """One result per configuration (each a list of interventions; [] is the clean model)."""
    scoring = scoring or engine.scoring
    style = style or engine.prompt_format
    expand = orderings and scoring == "letter"
    results = [ConfigResult(0, 0) for _ in configs]
    if not expand and len(configs) <= FEW_CONFIGS:
        for s in range(0, len(questions), QUESTION_BATCH):
            qs = questions[s : s + QUESTION_BATCH]
            for r, c in zip(results, configs):
                scores = score_questions(engine, qs, c or None, scoring, style, batch_size=QUESTION_BATCH)
                r.correct += sum(int(x.correct) for x in scores)
                r.total += len(scores)
            if progress:
                progress(len(qs))
        return results
    fast_idx = [i for i, c in enumerate(configs) if len(c) == 1 and fastpath.supports(engine, c, scoring)]
    groups: dict[str, list[int]] = {}
    for i in fast_idx:
        groups.setdefault(configs[i][0].sae_key, []).append(i)
    # the clean model ([]) is read from the fast path's per-question cache when there is one
    clean_idx = [i for i, c in enumerate(configs) if not c] if groups else []
    slow_idx = [i for i in range(len(configs)) if i not in fast_idx and i not in clean_idx]

    def add(i: int, scores) -> None:
        results[i].correct += sum(int(s.correct) for s in scores)
        results[i].total += len(scores)

    for q in questions:
        variants = all_orderings(q) if expand else [q]
        if expand and groups:  # the 24 orderings as the rows of one cache, sharing the question stem
            for n, idx in enumerate(groups.values()):
                base, per = fastpath.score_orderings(engine, q, [configs[i][0] for i in idx], style)
                for i, scores in zip(idx, per):
                    add(i, scores)
                if n == 0:
                    for i in clean_idx:
                        add(i, base)
        else:
            for v in variants:
                for i in clean_idx:
                    add(i, [fastpath.base_score(engine, v, scoring, style, next(iter(groups)))])
                for idx in groups.values():
                    for i, s in zip(
                        idx, fastpath.score_configs(engine, v, [configs[i][0] for i in idx], scoring, style)
                    ):
                        add(i, [s])
        for i in slow_idx:
            add(i, score_questions(engine, variants, configs[i] or None, scoring, style))
        if progress:
            progress(len(variants))
    return results


def config_steps(n: int) -> list[list[int]]:
    """Indices of ``n`` configurations in steps of ``CONFIG_STEP`` (the fast path's batches)."""
    return [list(range(s, min(s + CONFIG_STEP, n))) for s in range(0, n, CONFIG_STEP)]


def add_step(
    engine: Engine, q: Question, configs: list[list[Intervention]], idx: list[int], totals: list[ConfigResult]
) -> None:
    """One sweep step: one question, the configurations ``idx``, counted into ``totals``. Local
    jobs (under the model lock) and Ray workers both go through it, so the numbers are identical."""
    for i, r in zip(idx, evaluate_configs(engine, [q], [configs[i] for i in idx])):
        totals[i].correct += r.correct
        totals[i].total += r.total


def count_in_steps(engine: Engine, questions: list[Question], configs: list[list[Intervention]]) -> list[ConfigResult]:
    """Correct/total of every configuration over ``questions``, step by step as a job does."""
    totals = [ConfigResult(0, 0) for _ in configs]
    for q in questions:
        for idx in config_steps(len(configs)):
            add_step(engine, q, configs, idx, totals)
    return totals
