"""Probe sets: the same facts as a question set, asked another way (the attack bench's inputs).

Why: a clamp measured on the quiz's own wording may hide a fact for that wording only. A probe
file is a question file in the WMDP schema plus ``source_id`` (the original question's id in its
file, e.g. "bio-001") and ``probe`` (its kind, ``PROBE_KINDS``); a ``generation`` probe is a
declarative prompt with answer ``keywords`` instead of a multiple-choice question (its choices
and answer repeat the original's, so the file keeps one schema). Probe files load wherever
question files do; :func:`link` ties each probe to its original and says clearly what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearn_core.data.questions import Question

PROBE_KINDS = ("paraphrase", "fill_blank", "context", "generation")
MCQ_KINDS = ("paraphrase", "fill_blank", "context")  # scored as multiple choice
STEM_KINDS = ("fill_blank",)  # the question text is a sentence stem the answer completes


class ProbeError(ValueError):
    """A probe file that cannot be used as it is: the message names the record and the fix."""


def raw_id(q: Question) -> str:
    """A question's id in its own file ("bio-001"), without the loader's source prefix."""
    return q.id.split(":", 1)[1] if ":" in q.id else q.id


def is_probe(q: Question) -> bool:
    return "probe" in q.extra or "source_id" in q.extra


def check_probe(q: Question) -> None:
    """One probe record's own fields; raises :class:`ProbeError` naming the record."""
    kind, src = q.extra.get("probe"), q.extra.get("source_id")
    if not isinstance(src, str) or not src.strip():
        raise ProbeError(f"probe {raw_id(q)!r}: missing 'source_id' (the original question's id)")
    if kind not in PROBE_KINDS:
        raise ProbeError(f"probe {raw_id(q)!r}: 'probe' must be one of {list(PROBE_KINDS)}, got {kind!r}")
    if kind == "generation":
        kws = q.extra.get("keywords")
        if not isinstance(kws, list) or not kws or not all(isinstance(k, str) and k.strip() for k in kws):
            raise ProbeError(
                f"probe {raw_id(q)!r}: a generation probe needs 'keywords', a non-empty list of the answer's "
                "words its continuation must contain"
            )
        low = q.question.lower()
        if any(k.lower() in low for k in kws):
            raise ProbeError(f"probe {raw_id(q)!r}: a keyword is in the prompt itself; the continuation must name it")


@dataclass(frozen=True)
class LinkedProbe:
    """A probe and the original question it asks again."""

    source: Question
    probe: Question

    @property
    def kind(self) -> str:
        return self.probe.extra["probe"]

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(k.lower() for k in self.probe.extra.get("keywords") or ())


def link(probes: list[Question], sources: list[Question], where: str = "the source questions") -> list[LinkedProbe]:
    """Each probe with its original, in file order. Every probe is checked, and every
    ``source_id`` must name a question of ``sources`` (the whole file the probes were written
    for: a probe whose original lies in another part is linked here and left out later)."""
    by_id: dict[str, Question] = {}
    for s in sources:
        by_id[raw_id(s)] = s
        by_id[s.id] = s
    out = []
    for p in probes:
        check_probe(p)
        src = by_id.get(p.extra["source_id"])
        if src is None:
            raise ProbeError(
                f"probe {raw_id(p)!r}: unknown source id {p.extra['source_id']!r} (not a question of {where})"
            )
        if p.extra["probe"] != "generation" and p.correct_text.strip().lower() != src.correct_text.strip().lower():
            raise ProbeError(
                f"probe {raw_id(p)!r}: its correct choice {p.correct_text!r} is not its original's "
                f"({src.correct_text!r}); a probe asks the same fact"
            )
        out.append(LinkedProbe(src, p))
    return out


def by_kind(linked: list[LinkedProbe], kind: str) -> list[LinkedProbe]:
    return [lp for lp in linked if lp.kind == kind]
