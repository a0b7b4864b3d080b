"""What a request may name: question sets, corpora and the files the server's own targets trust.

Why names only: the engine also reads file paths, which a server must not expose; a file is
read only when one of the server's own targets names it.
"""

from __future__ import annotations

import logging
import os
import threading

from unlearn_core.data import loaders as D
from unlearn_core.data.question_files import QUIZ_NAMES
from unlearn_core.model.engine import Engine

log = logging.getLogger("unlearn_core.server")


def origin_stamp(origin: str) -> tuple:
    """(path, size, mtime) of each local file a question set was read from (``origin`` lists
    them, ';'-separated); hub and package origins have no stamp and never change under a name."""
    out = []
    for part in origin.split(";"):
        try:
            st = os.stat(part)
        except (OSError, ValueError):
            continue
        out.append((part, st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_question_set(spec: str, data_dir: str | None, allow_paths: bool = False) -> D.QuestionSet:
    """``data.load_question_set`` without file paths (unless the caller vouches for the spec),
    with unknown MMLU subjects checked first (KeyError -> 404)."""
    subjects = D.question_set_subjects(spec)
    if subjects is not None:
        check_subjects(subjects, data_dir)
    return D.load_question_set(spec, data_dir, allow_paths=allow_paths)


# Held while a target defined in the app is written or deleted, and while targets are read: the
# name check and the save are one step, and a read never meets a folder being deleted.
TARGETS_LOCK = threading.RLock()


def server_targets(engine: Engine) -> dict:
    """The targets this server offers: the engine's (built-in, its targets file, saved ones)."""
    from unlearn_core.evaluation.targets import engine_targets

    with TARGETS_LOCK:
        return engine_targets(engine)


def drop_unfinished_saves(engine: Engine) -> list[str]:
    """Remove ``<saved targets>/.<name>.tmp`` folders a server stopped mid-save left behind (the
    loader would read them as targets). Under ``TARGETS_LOCK``, so never a save in progress."""
    import shutil

    from unlearn_core.evaluation.targets import saved_targets_dir

    folder = saved_targets_dir(engine.settings)
    gone = []
    with TARGETS_LOCK:
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                    gone.append(p.name)
    if gone:
        log.warning("removed unfinished target saves: %s", ", ".join(gone))
    return gone


def trusted_files(engine: Engine) -> tuple[set[str], set[str]]:
    """(question-file bases, corpus-file names) that the server's own targets name: the only
    paths it reads. A broken targets file trusts nothing beyond the built-in targets."""
    from unlearn_core.evaluation.targets import TargetError, load_targets

    try:
        targets = server_targets(engine)
    except TargetError:
        targets = load_targets(None)
    sets, corpora = set(), set()
    for t in targets.values():
        for spec in (t.forget_questions, *t.retain_questions):
            base = D.split_spec(spec)[0]
            if D.is_question_file(base):
                sets.add(base)
        for c in (t.forget_corpus, t.forget_corpus_fallback, *t.retain_corpora, t.loss_corpus, t.ppl_corpus):
            name = (c or "").partition("@")[0]
            if name and not _named_corpus(name):
                corpora.add(name)
    return sets, corpora


def check_subjects(subjects: list[str], data_dir: str | None) -> None:
    known = set(D.mmlu_subjects(data_dir))
    if not subjects:
        raise KeyError("no MMLU subject given")
    bad = [s for s in subjects if known and s not in known]
    if bad:
        raise KeyError(f"unknown MMLU subject(s) {bad[:5]}; see /api/info question_sets")


QUIZ_SETS = [
    ("quiz:bio", "bio quiz: textbook biology and infectious disease (the bio-basics target)"),
    ("quiz:sherlock", "Sherlock Holmes quiz: canon and story facts (the sherlock target)"),
    ("quiz:retain", "general-knowledge quiz (retain set)"),
    ("quiz:retain!overlaps_bio", "general-knowledge quiz without the records that touch biology"),
]


def question_set_names(data_dir: str | None, extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """The quizzes first (the targets' sets), then ``extra`` (other target sets), then WMDP/MMLU."""
    out = list(QUIZ_SETS) + list(extra or [])
    out += [
        ("wmdp-bio", "WMDP-bio (falls back to labelled MMLU biology when missing)"),
        ("mmlu:side-effects", "MMLU " + ", ".join(D.SIDE_EFFECT_SUBJECTS)),
    ]
    out += [(f"mmlu:{s}", f"MMLU {s.replace('_', ' ')}") for s in D.mmlu_subjects(data_dir)]
    first: dict[str, str] = {}
    for n, d in out:
        first.setdefault(n, d)  # first occurrence of each name, in order
    return list(first.items())


CORPUS_PARTS = ("all", "train", "heldout")


def corpus_names() -> list[str]:
    return sorted(D.CORPORA) + ["wmdp-bio-text"] + [f"quiz:{q}" for q in QUIZ_NAMES] + ["mmlu:<subject,...>"]


def _named_corpus(name: str) -> bool:
    return (
        name in D.CORPORA
        or name == "wmdp-bio-text"
        or name.startswith("mmlu:")
        or (name.startswith("quiz:") and name[5:] in QUIZ_NAMES)
    )


def check_corpus(spec: str, data_dir: str | None, trusted: set[str] | frozenset = frozenset()) -> str:
    """Only named corpora (and the files ``trusted`` lists: those the server's own targets name):
    the engine also reads file paths, which a server must not expose."""
    name, _, part = spec.partition("@")
    if part and part not in CORPUS_PARTS:
        raise ValueError(f"corpus part must be one of {CORPUS_PARTS}, got {part!r}")
    if name in D.CORPORA or name == "wmdp-bio-text" or name in trusted:
        return spec
    if name.startswith("quiz:"):
        if name[5:] not in QUIZ_NAMES:
            raise ValueError(
                f"unknown corpus {spec!r}: no quiz {name[5:]!r}; known: {', '.join('quiz:' + q for q in QUIZ_NAMES)}"
            )
        return spec
    if name.startswith("mmlu:"):
        try:
            check_subjects([s for s in name[5:].split(",") if s], data_dir)
        except KeyError as e:
            raise ValueError(f"unknown corpus {spec!r}: {e.args[0]}") from None
        return spec
    raise ValueError(f"unknown corpus {spec!r}; known: {corpus_names()} (optionally '@train' or '@heldout')")
