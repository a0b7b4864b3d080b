"""Accuracy of many intervention configurations over a question set, sharing work.

For configurations on the same SAE, the upstream pass (to the hook), the clean keys/values
and the SAE codes are computed once per question (and ordering) and only the downstream part
runs per configuration, batched. Configurations the fast path cannot serve are scored the
straightforward way.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import fastpath
from .data import Question
from .engine import Engine
from .interventions import Intervention
from .mcq import all_orderings, score_questions


@dataclass
class ConfigResult:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def evaluate_configs(engine: Engine, questions: list[Question], configs: list[list[Intervention]],
                     scoring: str | None = None, style: str | None = None, orderings: bool = False,
                     progress=None) -> list[ConfigResult]:
    """One result per configuration (each a list of interventions; [] is the clean model)."""
    scoring = scoring or engine.scoring
    style = style or engine.prompt_format
    items = [v for q in questions for v in all_orderings(q)] if orderings and scoring == "letter" else questions
    results = [ConfigResult(0, 0) for _ in configs]
    fast_idx = [i for i, c in enumerate(configs) if len(c) == 1 and fastpath.supports(engine, c, scoring)]
    groups: dict[str, list[int]] = {}
    for i in fast_idx:
        groups.setdefault(configs[i][0].sae_key, []).append(i)
    # the clean model ([]) is read from the fast path's per-question cache when there is one
    clean_idx = [i for i, c in enumerate(configs) if not c] if groups else []
    slow_idx = [i for i in range(len(configs)) if i not in fast_idx and i not in clean_idx]
    for q in items:
        for i in clean_idx:
            s = fastpath.base_score(engine, q, scoring, style, next(iter(groups)))
            results[i].correct += int(s.correct)
            results[i].total += 1
        for key, idx in groups.items():
            scores = fastpath.score_configs(engine, q, [configs[i][0] for i in idx], scoring, style)
            for i, s in zip(idx, scores):
                results[i].correct += int(s.correct)
                results[i].total += 1
        for i in slow_idx:
            s = score_questions(engine, [q], configs[i] or None, scoring, style)[0]
            results[i].correct += int(s.correct)
            results[i].total += 1
        if progress:
            progress(1)
    return results
