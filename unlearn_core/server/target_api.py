"""Unlearning targets over HTTP: the registry, format-matched selection and the guided demo.

Why not just call ``targets.select_for_target`` / ``demo.run_demo`` under the model lock: the
first selection computes feature statistics on three corpora (minutes on the real model), and
the demo scores up to ~240 prompts. Here the statistics are computed in steps of one batch of
windows (``state.feature_stats_chunked``; then cached on disk, so ``select_for_target`` under
the lock only reads them), and the demo takes the lock per question, so interactive requests
interleave with both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

from unlearn_core.data import loaders as D
from unlearn_core.data.question_files import QUIZ_NAMES
from unlearn_core.evaluation.targets import (
    DEFAULT_TARGET,
    Target,
    forget_corpus_for,
    saved_targets_dir,
    select_for_target,
)
from unlearn_core.method.interventions import Intervention
from unlearn_core.method.modes import GATED_MODES
from unlearn_core.model.engine import Engine
from unlearn_core.server import schemas as S
from unlearn_core.server.access import check_corpus, check_subjects, corpus_names, drop_unfinished_saves, server_targets
from unlearn_core.server.state import ServerState
from unlearn_core.server.steps import feature_stats_chunked, fits_context, run_steps, select_questions


def get_target(engine: Engine, name: str) -> Target:
    """The target by name (KeyError -> 404; a broken targets file is a TargetError -> 400)."""
    targets = server_targets(engine)
    if name not in targets:
        raise KeyError(f"unknown target {name!r}; known: {sorted(targets)}")
    return targets[name]


def target_out(engine: Engine, t: Target) -> dict:
    """``Target.to_dict()`` plus the forget corpus this server would select on, and why, and whether
    it was defined in the app."""
    try:
        resolved, note = forget_corpus_for(t, engine.settings.data_dir)
    except D.DataUnavailableError as e:
        resolved, note = None, f"the forget corpus cannot be had here: {e}"
    return {
        **t.to_dict(),
        "resolved_forget_corpus": resolved,
        "forget_corpus_note": note,
        "defined_in_app": is_saved(engine, t),
    }


def list_targets(engine: Engine) -> dict:
    targets = server_targets(engine)
    default = DEFAULT_TARGET if DEFAULT_TARGET in targets else next(iter(targets))
    return {"default": default, "targets": [target_out(engine, t) for t in targets.values()]}


# ---------------------------------------------------------------- targets defined in the app


class TargetExistsError(ValueError):
    """A target of that name exists already (409)."""


class TargetProtectedError(ValueError):
    """A built-in or targets-file target: not deletable over HTTP (403)."""


FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")  # what targets._resolve_path would turn into a path


def _looks_like_a_path(name: str) -> bool:
    return (
        name.startswith("file:")
        or "/" in name
        or "\\" in name
        or name.startswith(".")
        or Path(name).suffix.lower() in FILE_SUFFIXES
    )


def named_retain_corpus(spec: str, data_dir: str | None) -> str:
    """A retain corpus a saved target may name: a named corpus only (never a file, even one
    another target names), so the target file the server writes trusts no new path."""
    if _looks_like_a_path(spec.partition("@")[0]):
        raise ValueError(
            f"retain corpus {spec!r}: file paths are not accepted; use a named corpus: "
            f"{', '.join(corpus_names())} (optionally '@train' or '@heldout')"
        )
    return check_corpus(spec, data_dir)


def named_question_set(spec: str, data_dir: str | None) -> str:
    """A retain question set a saved target may name: a named set only (quiz, WMDP-bio, MMLU)."""
    base = D.split_spec(spec)[0]  # a bad '!flag' is a ValueError (400)
    if D.is_question_file(base) or _looks_like_a_path(base):
        raise ValueError(
            f"retain question set {spec!r}: file paths are not accepted; use a named set (see /api/info question_sets)"
        )
    try:
        subjects = D.question_set_subjects(spec)
        if subjects is not None:
            check_subjects(subjects, data_dir)
    except KeyError as e:
        raise ValueError(f"retain question set {spec!r}: {e.args[0]}") from None
    if base.startswith("quiz:") and base[5:] not in QUIZ_NAMES:
        raise ValueError(
            f"retain question set {spec!r}: no quiz {base[5:]!r}; known: {', '.join('quiz:' + q for q in QUIZ_NAMES)}"
        )
    return spec


def question_rows(rows: list[dict]) -> list[dict]:
    """The rows with ids that depend on their content: every saved target's questions file is
    ``questions.json``, so two targets (or a target deleted and defined again) with ids "1", "2", ...
    would otherwise share the known-questions cache, which is keyed by question id. A row's own
    id is kept as the prefix; duplicates among the given ids are refused first."""
    seen: dict[str, int] = {}
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        digest = hashlib.sha1(
            json.dumps([r.get("question"), r.get("choices"), r.get("answer")], sort_keys=True, default=str).encode()
        ).hexdigest()[:10]
        if r.get("id") not in (None, ""):
            own = str(r["id"])
            if own in seen:
                raise ValueError(f"questions {seen[own] + 1} and {i + 1} have the same id {own!r}")
            seen[own] = i
            r["id"] = f"{own}-{digest}"
        else:
            r["id"] = digest
        out.append(r)
    return out


def is_saved(engine: Engine, t: Target) -> bool:
    """Whether ``t`` was defined in the app (its TOML is ``<saved targets>/<name>/target.toml``)."""
    if t.source == "built-in":
        return False
    want = saved_targets_dir(engine.settings) / t.name / "target.toml"
    try:
        return Path(t.source).resolve() == want.resolve()
    except (OSError, ValueError):
        return False


def _clean(message: str, folder: Path, name: str) -> str:
    """A save error without the server's folders in it."""
    tmp = folder / f".{name}.tmp"
    return (
        message.replace(str(tmp / "questions.json"), "questions")
        .replace(str(tmp / "target.toml"), "the target")
        .replace(str(tmp), "the target")
    )


def create_target(state: ServerState, req) -> dict:
    """Save a target defined in the app (``targets.save_target``) and return it as GET /api/targets
    lists it. ``req`` is a ``schemas.TargetCreateRequest``."""
    from unlearn_core.data.question_files import QuestionFileError
    from unlearn_core.evaluation.targets import TargetError, save_target

    engine = state.engine()
    data_dir = engine.settings.data_dir
    retain_corpora = tuple(named_retain_corpus(c, data_dir) for c in req.retain_corpora)
    retain_questions = tuple(named_question_set(s, data_dir) for s in req.retain_questions)
    rows = question_rows(req.questions)
    folder = saved_targets_dir(engine.settings)
    with state.targets_lock:
        drop_unfinished_saves(engine)
        existing = server_targets(engine)  # a broken targets file: TargetError (400), nothing is written
        if req.name in existing:
            raise TargetExistsError(
                f"a target named {req.name!r} exists already ({existing[req.name].source}); pick another name"
            )
        try:
            t = save_target(
                folder,
                req.name,
                req.description,
                req.documents,
                rows,
                retain_corpora=retain_corpora,
                retain_questions=retain_questions,
                threshold=req.threshold,
                n=req.n,
                c=req.c,
                mode=req.mode,
                existing=existing,
            )
        except (TargetError, QuestionFileError) as e:
            raise ValueError(_clean(str(e), folder, req.name)) from None
        if t.retain_corpora != retain_corpora or t.retain_questions != retain_questions:  # never: checked above
            shutil.rmtree(folder / req.name, ignore_errors=True)
            raise ValueError("the retain corpora and question sets must be named ones")
        state.drop_question_sets(folder / req.name)  # a target of the same name deleted earlier
    return target_out(engine, t)


def delete_target(state: ServerState, name: str) -> dict:
    """Delete a target defined in the app (its folder); built-in and targets-file ones stay."""
    engine = state.engine()
    folder = saved_targets_dir(engine.settings)
    with state.targets_lock:
        t = get_target(engine, name)
        if not is_saved(engine, t):
            raise TargetProtectedError(
                f"target {name!r} is not one defined in the app (source: {t.source}); only those can be deleted here"
            )
        shutil.rmtree(folder / t.name)
        state.drop_question_sets(folder / t.name)
    return {"deleted": t.name}


def stats_corpora(engine: Engine, t: Target, method: str | None = None) -> tuple[str, ...]:
    """The corpora whose feature statistics the target's selection (by ``method``) reads."""
    forget, _ = forget_corpus_for(t, engine.settings.data_dir)
    background = (t.selection.background,) if (method or t.selection.method) == "search" else ()
    return (forget, *t.retain_corpora, *background)


def warm_stats(state: ServerState, engine: Engine, sae: str, t: Target, method: str | None = None) -> None:
    """Feature statistics of the target's forget and retain corpora, in short lock holds
    (cached on disk with the same key ``select_for_target`` uses)."""
    for corpus in stats_corpora(engine, t, method):
        feature_stats_chunked(state, sae, corpus, t.selection.tokens)


def question_scores(
    state: ServerState, engine: Engine, sae: str, t: Target, method: str, sync: bool = False, task: str = ""
) -> tuple:
    """``target_scores.target_feature_scores`` (same disk entry, same numbers) with the lock taken per
    few questions: the known filter of the train half (the server's stepped one, when the target
    scores as the server does; else in one hold), then one question per step. With ``sync``, known
    statuses past ``SYNC_KNOWN_QUESTIONS`` or scores not cached are a ``TaskRequired`` naming ``task``."""
    from unlearn_core.core import cache as C
    from unlearn_core.evaluation import target_scores as TS
    from unlearn_core.evaluation.mcq import known_path
    from unlearn_core.features import attribution as A
    from unlearn_core.server.sync_limits import check_known, check_scores

    scoring = t.scoring or engine.scoring
    forget, retain = TS.train_question_sets(engine, t, load=lambda spec: state.question_set(spec).questions)
    if scoring == engine.scoring:
        limit = {"max_uncached": S.SYNC_KNOWN_QUESTIONS, "task": task} if sync else {}
        fk = select_questions(state, forget, known=True, strict=t.strict_known, **limit)[0]
        rk = select_questions(state, retain, known=True, strict=t.strict_known, **limit)[0]
        if not fk:
            raise TS.NoQuestionsError(f"target {t.name!r}: the model knows none of its train-half forget questions")
    else:
        if sync:
            paths = [known_path(engine, qs, t.strict_known, scoring) for qs in (forget, retain)]
            check_known(sum(len(qs) for qs, p in zip((forget, retain), paths) if not C.is_cached(p)), 0, task)
        with state.model("known filter") as eng:
            fk, rk = TS.known_train_questions(eng, t, forget, retain)
    with state.model("feature scores") as eng:  # the namespace in the path names this thread's model variant
        path = A.scores_path(eng, sae, method, fk, rk, scoring, engine.prompt_format)
    if sync:
        check_scores(C.is_cached(path), task, method, len(fk) + len(rk))

    def compute() -> dict:
        run = lambda steps: run_steps(state, steps, f"{method} scores")
        return A.compute_scores(engine, sae, method, fk, rk, scoring, engine.prompt_format, run=run)

    with state.once(path):
        return C.cached_tensors(path, compute), (fk, rk)


def scores_or_fallback(
    state: ServerState, engine: Engine, sae: str, t: Target, method, threshold, sync: bool, task: str
) -> tuple | None:
    """A question-based selection's scores (``question_scores``), None for the other methods, and
    None where the tiny test backend knows no question for a target's own question-based default
    (``targets.tiny_fallback``: ``select_for_target`` then runs the frequency selection and says so)."""
    from unlearn_core.evaluation.target_scores import NoQuestionsError
    from unlearn_core.evaluation.targets import QUESTION_METHODS, selection_method, tiny_fallback

    resolved = selection_method(t, method, threshold)
    if resolved not in QUESTION_METHODS:
        return None
    try:
        return question_scores(state, engine, sae, t, resolved, sync, task)
    except NoQuestionsError:
        if not tiny_fallback(engine, t, method, threshold):
            raise
        return None


def select(
    state: ServerState,
    name: str,
    sae: str,
    n: int | None = None,
    threshold: float | None = None,
    describe: bool = False,
    method: str | None = None,
    sync: bool = False,
    task: str = "targets_select",
) -> dict:
    """The target's selection rows (its own method, or ``method``), plus the corpora (and, for the
    question-based methods, the questions) actually used, without the raw stats. With ``sync`` (a
    synchronous endpoint), statistics, known statuses, question scores or descriptions past the
    synchronous limits are refused with a :class:`~.sync_limits.TaskRequired` naming ``task``."""
    from unlearn_core.evaluation.targets import selection_method
    from unlearn_core.features.stats import auto_description
    from unlearn_core.server.sync_limits import check_descriptions, check_stats

    engine = state.engine()
    t = get_target(engine, name)
    resolved = selection_method(t, method, threshold)
    if sync:
        check_stats(state, task, sae, [(c, t.selection.tokens) for c in stats_corpora(engine, t, resolved)])
    warm_stats(state, engine, sae, t, resolved)
    scores = scores_or_fallback(state, engine, sae, t, method, threshold, sync, task)
    with state.model("target select"):  # the statistics are on disk now: tokenizing and reading
        out = select_for_target(engine, t, sae, n=n, threshold=threshold, method=method, scores=scores)
    fs = out.pop("forget_stats")
    if describe and sync:
        check_descriptions(state, task, sae, fs, [r["feature"] for r in out["features"]])
    if describe:  # one feature per step
        run_steps(
            state,
            (
                (lambda eng, r=r: r.update(description=auto_description(eng, sae, r["feature"], fs)))
                for r in out["features"]
            ),
            "describe",
        )
    out["n_tokens"] = t.selection.tokens
    return out


def default_intervention(
    state: ServerState, engine: Engine, t: Target, sync: bool = False, task: str = "demo"
) -> Intervention:
    """``targets.default_intervention`` with the statistics computed corpus by corpus first, and a
    question-based selection's scores question by question (``question_scores``; with ``sync``,
    scores not cached yet are a ``TaskRequired`` naming ``task``), so no lock hold is long."""
    from unlearn_core.evaluation.targets import default_intervention as make
    from unlearn_core.evaluation.targets import selection_method

    warm_stats(state, engine, engine.default_sae, t, selection_method(t))
    scores = scores_or_fallback(state, engine, engine.default_sae, t, None, None, sync, task)
    if t.intervention.mode in GATED_MODES:  # tau: each retain corpus's rho in a hold of its own (cached)
        from unlearn_core.evaluation.targets import select_for_target
        from unlearn_core.method.gate import calibrate

        with state.model("demo"):
            rows = select_for_target(engine, t, scores=scores)
        feats = tuple(r["feature"] for r in rows["features"])
        for corpus in t.retain_corpora if feats else ():
            with state.model("gate calibration"):
                calibrate(engine, rows["sae"], feats, corpus, t.intervention.gate_percentile)
    with state.model("demo"):
        return make(engine, t, scores=scores)


# ---------------------------------------------------------------- the guided demo


def check_demo(state: ServerState, name: str, max_scan: int) -> None:
    """The synchronous demo's limits: ``max_scan`` (400) and the selection's statistics (409)."""
    from unlearn_core.server.sync_limits import check_demo_scan, check_stats

    engine = state.engine()
    t = get_target(engine, name)  # an unknown target is a 404 first
    check_demo_scan(max_scan)
    from unlearn_core.evaluation.targets import selection_method

    corpora = stats_corpora(engine, t, selection_method(t))
    check_stats(state, "demo", engine.default_sae, [(c, t.selection.tokens) for c in corpora])
    scores_or_fallback(state, engine, engine.default_sae, t, None, None, True, "demo")  # on disk, or the task


def run_demo(state: ServerState, name: str, max_scan: int, min_conf: float = 0.5) -> dict:
    """``demo.run_demo``'s result (same keys), computed with the lock per corpus and per chunk of
    ``demo.CHUNK`` questions. A task's steps: the statistics' batches, then one per question of
    each set (up to ``max_scan``; those a scan that stopped early never reached count as done with it)."""
    from unlearn_core.evaluation import demo

    engine = state.engine()
    t = get_target(engine, name)
    iv = default_intervention(state, engine, t)  # TargetError (a ValueError, 400) when no feature passes
    scanned: list[int] = []

    def load(spec: str) -> list:
        qs = state.question_set(spec).questions
        scanned.append(min(len(qs), max_scan))
        state.expect(scanned[-1])
        return qs

    stepped = [0]

    @contextlib.contextmanager
    def questions(n: int):  # a chunk of n questions, one lock hold: n steps of a task's progress
        state.before_hold()
        with state.model("demo"):
            yield
        for _ in range(n):
            state.after_step()
        stepped[0] += n

    def forget_done(_n: int, _msg: str) -> None:
        for _ in range(scanned[0] - stepped[0]):  # the forget questions not reached
            state.after_step()

    found = demo.find_examples(
        engine,
        t,
        iv,
        min_conf=min_conf,
        max_scan=max_scan,
        progress=forget_done,
        guard=questions,
        load=load,
        skip=lambda eng, q: not fits_context(eng, q),
    )

    @contextlib.contextmanager
    def one_generation():  # a lock hold per generation (12 tokens), not for the whole check
        with state.model("demo generation"):
            yield

    gen = demo.generation(engine, t, iv, guard=one_generation, load=lambda s: state.question_set(s).questions)
    return demo.result(engine, t, iv, found, gen)
