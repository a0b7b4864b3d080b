"""Question files a user brings: JSON in the WMDP schema, or CSV; and the project's quizzes.

JSON: a list of objects ``{"question", "choices": [4 strings], "answer": 0-3 or "A"-"D"}``; any
other field (``id``, ``kind``, ``topic``, ``overlaps_bio``...) is kept in ``Question.extra``.
CSV: a header row with ``question``, the four choices as ``choice0..choice3`` (MMLU's layout) or
``A,B,C,D``, and ``answer`` (0-3 or a letter); other columns are kept too. Every problem is
reported with the file, the row and what to fix.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from unlearn_core.data.questions import LETTERS, Question

# name -> path under the data folder (the quizzes written for this project, see quiz/README.md)
QUIZ_FILES: dict[str, str] = {
    "bio": "quiz/bio_quiz.dev.json",
    "sherlock": "quiz/sherlock_quiz.dev.json",
    "retain": "quiz/retain_quiz.dev.json",
}
# Quizzes the project writes and ships (``core/assets/questions``), read from the package, not the
# data folder: more general knowledge for the retain side of a choice (a default chosen on 26
# known retain questions fell from 0.92 to 0.70 on unseen ones), and the bio quiz reworded.
SHIPPED_QUIZZES: dict[str, str] = {
    "general": "questions/general_knowledge.json",
    "bio-paraphrase": "questions/bio_quiz.dev.paraphrase.json",
    # the attack bench's probe sets (data/probes.py): each dev question asked four other ways
    "bio-probes": "probes/bio_quiz.dev.probes.json",
    "sherlock-probes": "probes/sherlock_quiz.dev.probes.json",
}
# a shipped quiz whose records ask another quiz's questions again: the quiz they come from (a
# record lands in its original's half, so a held-out fact stays held out)
SOURCE_QUIZ: dict[str, str] = {"bio-paraphrase": "bio", "bio-probes": "bio", "sherlock-probes": "sherlock"}
QUIZ_NAMES: tuple[str, ...] = (*QUIZ_FILES, *SHIPPED_QUIZZES)  # every name a `quiz:` spec accepts
QUESTION_FILE_SUFFIXES = (".json", ".csv")
PARTS = ("all", "train", "heldout")


class QuestionFileError(ValueError):
    """A question file that cannot be used; the message names the file, the row and the fix."""


def _answer_index(raw, where: str) -> int:
    if isinstance(raw, bool):
        raise QuestionFileError(f"{where}: 'answer' must be 0-3 or A-D, got {raw!r}")
    if isinstance(raw, str):
        s = raw.strip()
        if s.upper() in LETTERS:
            return LETTERS.index(s.upper())
        try:
            raw = int(s)
        except ValueError:
            raise QuestionFileError(f"{where}: 'answer' must be 0-3 or A-D, got {raw!r}") from None
    if not isinstance(raw, int) or not 0 <= raw <= 3:
        raise QuestionFileError(f"{where}: answer {raw!r} out of range (must be 0-3 or A-D)")
    return raw


def _record(r: dict, where: str, source: str, choices) -> Question:
    q = r.get("question")
    if not isinstance(q, str) or not q.strip():
        raise QuestionFileError(f"{where}: missing or empty 'question'")
    if not isinstance(choices, (list, tuple)) or len(choices) != 4:
        n = len(choices) if isinstance(choices, (list, tuple)) else "no"
        raise QuestionFileError(f"{where}: expected 4 choices, got {n}")
    if any(not isinstance(c, (str, int, float)) or not str(c).strip() for c in choices):
        raise QuestionFileError(f"{where}: every choice must be a non-empty string")
    if "answer" not in r or r["answer"] in (None, ""):
        raise QuestionFileError(f"{where}: missing 'answer'")
    choices = tuple(str(c) for c in choices)
    answer = _answer_index(r["answer"], where)
    extra = {k: v for k, v in r.items() if k not in ("question", "choices", "answer")}
    qid = str(r.get("id") or hashlib.sha1((q + "|".join(choices)).encode()).hexdigest()[:10])
    subject = str(r.get("topic") or r.get("story") or r.get("subject") or source)
    return Question(f"{source}:{qid}", q, choices, answer, subject, source, extra)


def parse_question_json(path: Path, source: str) -> list[Question]:
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise QuestionFileError(f"{path}: not valid JSON ({e})") from None
    if isinstance(rows, dict) and isinstance(rows.get("questions"), list):
        rows = rows["questions"]
    if not isinstance(rows, list):
        raise QuestionFileError(f"{path}: expected a JSON list of question objects")
    out = []
    for i, r in enumerate(rows):
        where = f"{path}, question {i + 1}"
        if not isinstance(r, dict):
            raise QuestionFileError(f"{where}: expected an object with question, choices, answer")
        if "choices" not in r:
            raise QuestionFileError(f"{where}: missing 'choices' (a list of 4 strings)")
        out.append(_record(r, where, source, r["choices"]))
    return out


def parse_question_csv(path: Path, source: str) -> list[Question]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        if "question" not in cols or "answer" not in cols:
            raise QuestionFileError(f"{path}: the header must have 'question' and 'answer' columns, got {cols}")
        for layout in (["choice0", "choice1", "choice2", "choice3"], list(LETTERS), ["a", "b", "c", "d"]):
            if all(c in cols for c in layout):
                break
        else:
            raise QuestionFileError(f"{path}: expected 4 choice columns (choice0..choice3 or A,B,C,D), got {cols}")
        out = []
        for i, raw in enumerate(reader):
            r = {k.strip(): v for k, v in raw.items() if k is not None}
            where = f"{path}, row {i + 2}"
            choices = [r.get(c) for c in layout]
            if any(c is None for c in choices):
                raise QuestionFileError(f"{where}: expected 4 choices, got {sum(c is not None for c in choices)}")
            rest = {k: v for k, v in r.items() if k not in layout}
            out.append(_record(rest, where, source, choices))
    return out


def parse_question_file(path: str | Path, source: str | None = None) -> list[Question]:
    """Questions from a .json or .csv file; raises :class:`QuestionFileError` with the fix."""
    p = Path(path)
    if not p.is_file():
        raise QuestionFileError(f"question file {str(p)!r} not found")
    source = source or p.stem
    if p.suffix.lower() == ".json":
        qs = parse_question_json(p, source)
    elif p.suffix.lower() == ".csv":
        qs = parse_question_csv(p, source)
    else:
        raise QuestionFileError(f"{p}: question files must be .json (WMDP schema) or .csv")
    if not qs:
        raise QuestionFileError(f"{p}: no questions in the file")
    dup = len(qs) - len({q.id for q in qs})
    if dup:
        raise QuestionFileError(f"{p}: {dup} duplicate question id(s)")
    return qs


def in_train_half(key: str) -> bool:
    """A stable 50/50 split by id: the same record lands in the same half in every file and run."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 2 == 0


def split_part(questions: list[Question], part: str) -> list[Question]:
    """'train' (selection and tuning) or 'heldout' (reporting) half of a question list, by id hash
    (a reworded question by its original's id, ``extra["split_key"]``: it lands in the same half)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if part == "all":
        return list(questions)
    return [q for q in questions if in_train_half(q.extra.get("split_key", q.id)) == (part == "train")]


def drop_flagged(questions: list[Question], flag: str) -> list[Question]:
    """Questions whose extra field ``flag`` is not true (e.g. retain records that overlap biology)."""
    return [q for q in questions if not q.extra.get(flag)]
