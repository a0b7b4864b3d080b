"""Question-set specs: the names by which the CLI, the server, targets and the app ask for a
question set (``wmdp-bio``, ``mmlu:a,b``, ``mmlu:side-effects``, ``quiz:bio``, a question file),
each optionally with ``@train``/``@heldout`` and ``!flag``.

Pure string handling, apart from the loaders that read the sets (:mod:`.loaders`), so the app can
build and check specs without the data folder.
"""

from __future__ import annotations

from pathlib import Path

from unlearn_core.data.question_files import QUIZ_FILES

SIDE_EFFECT_SUBJECTS = (
    "high_school_us_history",
    "college_computer_science",
    "high_school_geography",
    "human_aging",
)
BIO_FALLBACK_SUBJECTS = ("college_biology", "high_school_biology", "virology", "medical_genetics", "anatomy")


def split_spec(spec: str) -> tuple[str, str, str | None]:
    """'quiz:retain@heldout!overlaps_bio' -> ('quiz:retain', 'heldout', 'overlaps_bio').

    ``@train`` / ``@heldout`` pick a deterministic part (quizzes and question files: a 50/50
    split by id hash; WMDP-bio and MMLU: first 80% / last 20%); ``!flag`` drops the records
    whose extra field ``flag`` is true.
    """
    base, flag = spec, None
    if "!" in base:
        base, _, flag = base.rpartition("!")
        if not flag.replace("_", "").isalnum():
            raise ValueError(f"invalid filter flag {flag!r} in {spec!r}")
    part = "all"
    head, sep, tail = base.rpartition("@")
    if sep and tail in ("all", "train", "heldout"):
        base, part = head, tail
    return base, part, flag


def with_part(spec: str, part: str) -> str:
    """'quiz:retain!overlaps_bio' + 'heldout' -> 'quiz:retain@heldout!overlaps_bio' (a spec that
    already names a part, or part 'all', is left alone)."""
    base, have, flag = split_spec(spec)
    if part == "all" or have != "all" or f"@{have}" in spec:
        return spec
    return f"{base}@{part}" + (f"!{flag}" if flag else "")


def is_question_file(base: str) -> bool:
    return base.startswith("file:") or Path(base).suffix.lower() in (".json", ".csv")


def question_set_subjects(spec: str) -> list[str] | None:
    """MMLU subjects of a question-set spec ('mmlu:a,b' or 'mmlu:side-effects'); None for other sets."""
    base, _, _ = split_spec(spec)
    if base == "wmdp-bio" or base.startswith("quiz:") or is_question_file(base):
        return None
    if base.startswith("mmlu:"):
        subs = base[5:]
        return list(SIDE_EFFECT_SUBJECTS) if subs == "side-effects" else [x for x in subs.split(",") if x]
    raise KeyError(
        f"unknown question set {spec!r}: use 'wmdp-bio', 'mmlu:<subject,...>', 'mmlu:side-effects', "
        f"'quiz:<{'|'.join(QUIZ_FILES)}>' or a .json/.csv file, optionally with @train/@heldout "
        "and !flag"
    )
