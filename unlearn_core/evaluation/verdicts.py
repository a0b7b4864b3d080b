"""What an intervention did to one question, in words every view prints the same way.

Why a rule of its own: "kept" used to mean "still right", so a retain answer whose P(correct)
fell from 0.57 to 0.42 was shown as "the clamp left this knowledge alone". Here "kept" means
still right *and* P(correct) no more than ``KEEP_TOLERANCE`` lower than clean; a larger drop is
"still right, but less sure". The CLI demo, Home and the demo report all print ``Verdict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KEEP_TOLERANCE = 0.10  # how far P(correct) may fall (absolute) for a still-right answer to count as kept

KINDS = ("forgotten", "kept", "less_sure", "now_right", "still_wrong")


@dataclass(frozen=True)
class Verdict:
    kind: str  # one of KINDS
    p_clean: float  # P(correct answer), clean model
    p_clamped: float  # P(correct answer), with the intervention
    tolerance: float = KEEP_TOLERANCE

    @property
    def change(self) -> str:
        return f"{self.p_clean:.2f} → {self.p_clamped:.2f}"

    def label(self) -> str:
        """A few words for a table cell or a CLI line."""
        return {
            "forgotten": "wrong: forgotten",
            "kept": "kept",
            "less_sure": f"still right, but less sure ({self.change})",
            "now_right": "right only with the clamp",
            "still_wrong": "wrong, as clean",
        }[self.kind]

    def sentence(self) -> str:
        """One sentence that claims no more than the numbers show."""
        return {
            "forgotten": f"The answer flipped: the clamp made the model forget it (P(correct) {self.change}).",
            "kept": (f"Kept: still right and about as sure (P(correct) {self.change}, within {self.tolerance:.2f})."),
            "less_sure": (
                f"Still right, but less sure: P(correct) {self.change}, a drop of more than {self.tolerance:.2f}. "
                "The clamp weakened this answer without flipping it."
            ),
            "now_right": f"Wrong when clean, right with the clamp (P(correct) {self.change}).",
            "still_wrong": f"Wrong both clean and clamped (P(correct) {self.change}).",
        }[self.kind]

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label(), "sentence": self.sentence()}


def verdict(
    answer: int,
    clean_probs: list[float],
    clean_predicted: int,
    clamped_probs: list[float],
    clamped_predicted: int,
    tolerance: float = KEEP_TOLERANCE,
) -> Verdict:
    """The verdict on one question from its clean and clamped scores (probabilities over A-D)."""
    p0, p1 = float(clean_probs[answer]), float(clamped_probs[answer])
    right0, right1 = clean_predicted == answer, clamped_predicted == answer
    if right0 and not right1:
        kind = "forgotten"
    elif right0:
        kind = "kept" if p1 >= p0 - tolerance else "less_sure"
    else:
        kind = "now_right" if right1 else "still_wrong"
    return Verdict(kind, p0, p1, tolerance)


def verdict_of(example: dict, tolerance: float = KEEP_TOLERANCE) -> Verdict:
    """The verdict on a demo example (``question``, ``base`` and ``intervened`` score dicts)."""
    q, b, i = example["question"], example["base"], example["intervened"]
    return verdict(q["answer"], b["probs"], b["predicted"], i["probs"], i["predicted"], tolerance)


@dataclass(frozen=True)
class GenerationCheck:
    """A forget question asked openly (``generation_check``): the clean and clamped text, whether
    each names the answer's keyword, and whether the clamped text is text at all. Also the API's
    schema (pydantic reads the dataclass): torch-free, here."""

    question_id: str
    prompt: str
    keyword: str  # the correct answer's most distinctive word
    clean: str
    clamped: str
    clean_says_it: bool
    clamped_says_it: bool
    clamped_nll: float  # the clean model's mean NLL per token of the clamped continuation
    degenerate: str | None  # "repetitive", "off-topic", "empty", or None
    verdict: str  # generation_verdict(degenerate, clamped_says_it)

    def to_dict(self) -> dict:
        return asdict(self)


def generation_verdict(degenerate: str | None, clamped_says_it: bool) -> str:
    """Broken text is never called forgetting."""
    if degenerate:
        return f"broken output ({degenerate}), not evidence of forgetting"
    return "still says it" if clamped_says_it else "no longer says it"
