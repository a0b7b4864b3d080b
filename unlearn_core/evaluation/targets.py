"""Unlearning targets: what to forget and what to keep, as one named concept.

A target bundles a forget corpus, a forget question set, retain corpora and retain question
sets, how features are selected (format-matched: forget text against retain text of the same
format, so answer-letter and question-word features drop out) and a default intervention, the
one the demo and ``target eval`` apply. The built-in ones live in ``core/assets/targets.toml`` (data,
not code); a user adds their own in a TOML file of the same schema (``--targets FILE`` or the
``targets_file`` setting), where file paths are relative to that file.
"""

from __future__ import annotations

import json
import logging
import sys
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from unlearn_core.core.paths import ASSETS
from unlearn_core.data import loaders as D
from unlearn_core.data.specs import with_part
from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: F401  (re-exported)
from unlearn_core.features.selection_phrase import selection_phrase
from unlearn_core.features.target_limits import MAX_SAVED_QUESTIONS, MAX_SAVED_TEXT, NAME_RE
from unlearn_core.method.clamp_scales import SCALE_RULES, scales_for
from unlearn_core.method.modes import GATED_MODES, MODES

if TYPE_CHECKING:
    import torch

    from unlearn_core.method.interventions import Intervention

log = logging.getLogger(__name__)
BUILTIN_FILE = ASSETS / "targets.toml"


SELECTION_METHODS = ("frequency", "search", "attribution", "fisher")
QUESTION_METHODS = ("attribution", "fisher")  # scored on the train half's known questions (target_scores)


class TargetError(ValueError):
    """A target definition that cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class Selection:
    """How a target's features are chosen.

    ``method = "frequency"`` (the paper's): retain frequency (the max over the retain corpora) <
    threshold, ranked by forget frequency. ``method = "search"`` (the Gemma Scope Harry Potter
    study's way in): the features most specific to ``query``, the concept's own name, against the
    ``background`` corpus's firing frequencies, dense ones dropped; threshold is not used. A book's
    most frequent distinctive features are its narration style, not its topic (docs/decisions.md, sherlock).
    ``method = "attribution"`` (activation x gradient of the correct answer's log-probability,
    forget minus retain) and ``"fisher"`` (Dynamic SAE Guardrails' selection) rank features by the
    train half of the target's known questions (``features.attribution``, ``score_ranking``);
    threshold is not used."""

    threshold: float = 0.01
    n: int = 20
    tokens: int = 50_000
    method: str = "frequency"
    query: str = ""
    background: str = "webtext-train"


@dataclass(frozen=True)
class DefaultIntervention:
    mode: str = "clamp"
    c: float = 100.0
    scale: str = "uniform"  # or "forget-max": c_i = c * (max on the forget corpus / the median's; clamp_scales)
    # gated modes (gated, dsg): tau = this percentile of rho on each retain corpus, the highest of them
    gate_percentile: float = 95.0


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    forget_corpus: str
    forget_questions: str
    retain_corpora: tuple[str, ...]
    retain_questions: tuple[str, ...]
    selection: Selection = field(default_factory=Selection)
    intervention: DefaultIntervention = field(default_factory=DefaultIntervention)
    forget_corpus_fallback: str | None = None  # used, and labelled, when forget_corpus cannot be had
    loss_corpus: str = "webtext"
    ppl_corpus: str | None = None
    eval_part: str = "heldout"  # the part of each question set that `target eval` reports on
    strict_known: bool = True
    scoring: str | None = None  # None: the engine's (cloze for base models)
    orderings: bool = False  # letter scoring: known = correct in all 24 orderings
    demo_prompt: str = ""
    # the attack bench's probe set for the forget questions (``data.probes``): a question-set spec
    # (``quiz:bio-probes``) or file; None: the bench's probe attacks need --probes
    probes: str | None = None
    # the retain question sets whose known questions the default's choice pools (a subset of
    # retain_questions; empty: the first): a floor read on more questions moves less on unseen ones
    choice_retain: tuple[str, ...] = ()
    source: str = "built-in"

    @property
    def choice_retain_sets(self) -> tuple[str, ...]:
        return self.choice_retain or self.retain_questions[:1]

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["intervention"]["scale"] == "uniform":  # the default: left out, as before the option existed
            del d["intervention"]["scale"]
        if d["intervention"]["mode"] not in GATED_MODES:  # read only by the gated modes
            del d["intervention"]["gate_percentile"]
        return d


_FIELDS = {f for f in Target.__dataclass_fields__} - {"name", "source", "selection", "intervention"}
_REQUIRED = ("forget_corpus", "forget_questions", "retain_corpora", "retain_questions")


def _resolve_path(spec: str, base: Path | None) -> str:
    """A relative file path in a user's TOML is relative to that file; names stay names."""
    if base is None:
        return spec
    name, sep, rest = spec.partition("@")
    p = Path(name)
    if p.suffix.lower() in (".txt", ".jsonl", ".json", ".csv") and not p.is_absolute():
        return str((base / p).resolve()) + sep + rest
    return spec


def target_from_dict(name: str, d: dict, source: str = "built-in", base: Path | None = None) -> Target:
    where = f"target {name!r} ({source})"
    if not isinstance(d, dict):
        raise TargetError(f"{where}: expected a table")
    unknown = set(d) - _FIELDS - {"selection", "intervention"}
    if unknown:
        raise TargetError(
            f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}, [selection], [intervention]"
        )
    missing = [k for k in _REQUIRED if not d.get(k)]
    if missing:
        raise TargetError(f"{where}: missing {missing}")
    kw = {k: v for k, v in d.items() if k in _FIELDS}
    for k in ("retain_corpora", "retain_questions"):
        v = kw[k]
        kw[k] = tuple([v] if isinstance(v, str) else v)
    for k in ("forget_corpus", "forget_questions", "forget_corpus_fallback", "ppl_corpus", "probes"):
        if kw.get(k):
            kw[k] = _resolve_path(kw[k], base)
    kw["retain_corpora"] = tuple(_resolve_path(x, base) for x in kw["retain_corpora"])
    kw["retain_questions"] = tuple(_resolve_path(x, base) for x in kw["retain_questions"])
    cr = kw.get("choice_retain", ())
    kw["choice_retain"] = tuple(_resolve_path(x, base) for x in ([cr] if isinstance(cr, str) else cr))
    if not set(kw["choice_retain"]) <= set(kw["retain_questions"]):
        raise TargetError(f"{where}: choice_retain must name sets of retain_questions, got {list(kw['choice_retain'])}")
    kw.setdefault("description", "")
    try:
        sel = Selection(**d.get("selection", {}))
        iv = DefaultIntervention(**d.get("intervention", {}))
    except TypeError as e:
        raise TargetError(f"{where}: {e}") from None
    if not 0 < sel.threshold <= 1 or sel.n < 1 or sel.tokens < 16:
        raise TargetError(f"{where}: selection needs 0 < threshold <= 1, n >= 1, tokens >= 16")
    if sel.method not in SELECTION_METHODS:
        raise TargetError(f"{where}: selection method must be one of {SELECTION_METHODS}")
    if (
        not isinstance(sel.query, str)
        or len(sel.query) > 200
        or (sel.method == "search" and len(sel.query.strip()) < 3)
    ):
        raise TargetError(
            f'{where}: selection query must be text of at most 200 characters (at least 3 with method = "search")'
        )
    if iv.mode not in MODES:
        raise TargetError(f"{where}: intervention mode must be one of {MODES}")
    if iv.scale not in SCALE_RULES:
        raise TargetError(f"{where}: intervention scale must be one of {SCALE_RULES}")
    if not isinstance(iv.gate_percentile, (int, float)) or not 0 <= iv.gate_percentile <= 100:
        raise TargetError(f"{where}: intervention gate_percentile must be a number in [0, 100]")
    if kw.get("eval_part", "heldout") not in ("all", "train", "heldout"):
        raise TargetError(f"{where}: eval_part must be all, train or heldout")
    if kw.get("scoring") not in (None, "letter", "cloze"):
        raise TargetError(f"{where}: scoring must be letter or cloze")
    return Target(name=name, selection=sel, intervention=iv, source=source, **kw)


def read_targets_file(path: str | Path, source: str | None = None) -> dict[str, Target]:
    p = Path(path)
    if not p.is_file():
        raise TargetError(f"targets file {str(p)!r} not found")
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{p}: not valid TOML ({e})") from None
    base = None if source == "built-in" else p.resolve().parent
    return {name: target_from_dict(name, d, source or str(p), base) for name, d in raw.items()}


def load_targets(targets_file: str | None = None, saved_dir: str | Path | None = None) -> dict[str, Target]:
    """The built-in targets, a user's TOML file, and the targets defined in the app (saved under
    ``saved_dir``, one folder each). No target may reuse another's name."""
    out = read_targets_file(BUILTIN_FILE, "built-in")
    files = [Path(targets_file)] if targets_file else []
    if saved_dir and Path(saved_dir).is_dir():
        files += sorted(Path(saved_dir).glob("[!.]*/target.toml"))  # not the .<name>.tmp folders of a save
    for f in files:
        try:
            found = read_targets_file(f)
        except TargetError:
            if f == Path(targets_file or ""):
                raise  # the user's own file: say what is wrong
            log.warning("skipping the broken saved target %s: %s", f.parent.name, sys.exc_info()[1])
            continue
        for name, t in found.items():
            if name in out:
                raise TargetError(f"target {name!r} in {f} has the name of a {out[name].source} target; rename it")
            out[name] = t
    return out


def get_target(name: str, targets_file: str | None = None, saved_dir: str | Path | None = None) -> Target:
    targets = load_targets(targets_file, saved_dir)
    if name not in targets:
        raise KeyError(f"unknown target {name!r}; known: {sorted(targets)}")
    return targets[name]


def saved_targets_dir(settings) -> Path:
    """Where targets defined in the app are kept (the cache folder: they are the user's data)."""
    return Path(settings.cache_dir) / "targets"


def engine_targets(engine) -> dict[str, Target]:
    return load_targets(engine.settings.targets_file, saved_targets_dir(engine.settings))


def engine_target(engine, name: str) -> Target:
    return get_target(name, engine.settings.targets_file, saved_targets_dir(engine.settings))


def _toml_str(x: str) -> str:
    return json.dumps(x, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def save_target(
    folder: str | Path,
    name: str,
    description: str,
    documents: list[str],
    questions: list[dict],
    retain_corpora: tuple[str, ...] = ("quiz:retain@train", "wikitext@train", "webtext-train"),
    retain_questions: tuple[str, ...] = ("quiz:retain",),
    threshold: float = 0.01,
    n: int = 50,
    c: float = 200.0,
    mode: str = "clamp",
    existing: dict[str, Target] | None = None,
) -> Target:
    """Write a target defined in the app: its corpus (``corpus.jsonl``), its questions
    (``questions.json``, validated like any question file) and ``target.toml``, then read it
    back through the same loader as every other target. Nothing outside ``folder/<name>`` is written."""
    import shutil

    if not NAME_RE.match(name or ""):
        raise TargetError(
            "a target name is 1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit"
        )
    if existing and name in existing:
        raise TargetError(f"a target named {name!r} exists already ({existing[name].source}); pick another name")
    docs = [d for d in documents if isinstance(d, str) and d.strip()]
    if not docs:
        raise TargetError("the forget corpus is empty: give at least one non-empty document")
    if sum(len(d) for d in docs) > MAX_SAVED_TEXT:
        raise TargetError(f"the forget corpus is larger than {MAX_SAVED_TEXT:,} characters")
    if not questions or len(questions) > MAX_SAVED_QUESTIONS:
        raise TargetError(f"give between 1 and {MAX_SAVED_QUESTIONS} questions")
    root = Path(folder)
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
        (tmp / "questions.json").write_text(json.dumps(questions), encoding="utf-8")
        from unlearn_core.data.question_files import parse_question_file

        parse_question_file(tmp / "questions.json", source=name)  # fails with the row and the fix
        lines = [
            f"[{name}]",
            f"description = {_toml_str(description or name)}",
            'forget_corpus = "corpus.jsonl"',
            'forget_questions = "questions.json"',
            f"retain_corpora = [{', '.join(map(_toml_str, retain_corpora))}]",
            f"retain_questions = [{', '.join(map(_toml_str, retain_questions))}]",
            'eval_part = "all"',
            f"[{name}.selection]",
            f"threshold = {float(threshold)!r}",
            f"n = {int(n)}",
            f"[{name}.intervention]",
            f"mode = {_toml_str(mode)}",
            f"c = {float(c)!r}",
        ]
        (tmp / "target.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        read_targets_file(tmp / "target.toml")  # validates the rest
        shutil.rmtree(root / name, ignore_errors=True)
        tmp.rename(root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_targets_file(root / name / "target.toml")[name]


def forget_corpus_for(target: Target, data_dir: str | None) -> tuple[str, str]:
    """(corpus spec, note): the forget corpus, or its labelled fallback when it cannot be had."""
    name, part = target.forget_corpus.partition("@")[::2]
    try:
        D.load_corpus(name, data_dir, part=part or "all")
        return target.forget_corpus, ""
    except D.DataUnavailableError:
        if not target.forget_corpus_fallback:
            raise
        return target.forget_corpus_fallback, (
            f"{target.forget_corpus} is not available here (see docs/research/setups.md); "
            f"features are selected on the stand-in {target.forget_corpus_fallback}"
        )


def retain_frequency(stats: list) -> torch.Tensor:
    """A feature's retain frequency over several retain corpora: its highest one, so a feature
    common in any of them is dropped."""
    import torch

    return torch.stack([s.freq for s in stats]).max(0).values


def selection_method(target: Target, method: str | None = None, threshold: float | None = None) -> str:
    """The method a selection runs: ``method``, else the target's (a threshold alone: frequency)."""
    return method or (target.selection.method if threshold is None else "frequency")


def tiny_fallback(engine, target: Target, method: str | None, threshold: float | None) -> bool:
    """Whether a selection that found no known question may run the frequency selection instead:
    only on the tiny test backend (random weights know no question), only for a target's own
    question-based default (asked for by name, such a method fails with its reason)."""
    tiny = engine.extra.get("selection_threshold") is not None
    return tiny and method is None and threshold is None and target.selection.method in QUESTION_METHODS


def select_for_target(
    engine,
    target: Target,
    sae_key: str | None = None,
    n: int | None = None,
    threshold: float | None = None,
    progress=None,
    method: str | None = None,
    scores: tuple | None = None,
) -> dict:
    """A target's selection (its ``selection.method``, or ``method``; a ``threshold`` without a method:
    frequency): rows with the forget and each retain corpus's frequency, plus the corpora used. The
    question-based methods add ``score`` and the questions read; ``scores``: their precomputed
    ``target_scores.target_feature_scores``."""
    from unlearn_core.evaluation.target_scores import NoQuestionsError
    from unlearn_core.features import stats as F

    sae_key = sae_key or engine.default_sae
    sel = target.selection
    resolved = selection_method(target, method, threshold)
    if resolved not in SELECTION_METHODS:
        raise TargetError(f"selection method must be one of {SELECTION_METHODS}, not {resolved!r}")
    forget, note = forget_corpus_for(target, engine.settings.data_dir)
    rows: list = []
    how: dict = {}
    if resolved != "frequency":
        try:
            rows, how = _ranked_rows(engine, target, sae_key, resolved, n or sel.n, progress, scores)
        except NoQuestionsError:
            if not tiny_fallback(engine, target, method, threshold):
                raise
            note = (note + " " if note else "") + (
                f"(test backend: no known question to rank by the target's {resolved} selection; frequency instead)"
            )
            resolved = "frequency"
    forced = engine.extra.get("selection_threshold")  # the tiny test backend's random SAE
    if forced is not None and threshold is None and resolved == "frequency":
        threshold = forced
        note = (note + " " if note else "") + f"(test backend: retain threshold relaxed to {forced:g})"
    fs = F.feature_stats(engine, sae_key, forget, n_tokens=sel.tokens, progress=progress)
    rs = [F.feature_stats(engine, sae_key, c, n_tokens=sel.tokens, progress=progress) for c in target.retain_corpora]
    rf = retain_frequency(rs)
    if resolved == "frequency":
        rows = F.select_features(fs.freq, rf, threshold or sel.threshold, n or sel.n)
        how = {"threshold": threshold or sel.threshold, "method": "frequency"}
    else:
        for r in rows:  # the same frequency columns as the paper's selection, so every consumer reads them alike
            i = r["feature"]
            r.update(
                forget_freq=float(fs.freq[i]),
                retain_freq=float(rf[i]),
                ratio=float(fs.freq[i] / max(float(rf[i]), 1e-6)),
            )
    for r in rows:
        r["retain_freqs"] = {s.corpus: float(s.freq[r["feature"]]) for s in rs}
    return {
        "target": target.name,
        "sae": sae_key,
        "forget_corpus": forget,
        "retain_corpora": list(target.retain_corpora),
        **how,
        "note": note,
        "features": rows,
        "forget_stats": fs,
    }


def _ranked_rows(engine, target: Target, sae_key: str, method: str, n: int, progress, scores) -> tuple[list, dict]:
    """Rows and their description for the search and question-based methods."""
    sel = target.selection
    if method == "search":
        from unlearn_core.features import stats as F
        from unlearn_core.features import text_search as TXS

        bg = F.feature_stats(engine, sae_key, sel.background, n_tokens=sel.tokens, progress=progress)
        rows = TXS.select_by_search(engine, sae_key, sel.query, bg, n)
        return rows, {"threshold": None, "method": "search", "query": sel.query, "background": sel.background}
    from unlearn_core.evaluation.target_scores import question_selection

    # ``progress`` counts statistics tokens: the question scores' own (questions) are not mixed in
    # (the CLI's `features select` and the server show theirs)
    return question_selection(engine, target, sae_key, method, n, None, scores)


def selection_text(sel: dict) -> str:
    """One phrase saying how a ``select_for_target`` result was chosen (the CLI and benches show it)."""
    return selection_phrase(
        sel.get("method", "frequency"),
        len(sel["features"]),
        query=sel.get("query", ""),
        forget_questions=f"`{sel['forget_questions']}`" if sel.get("forget_questions") else "",
        n_questions=(sel["n_forget_questions"], sel["n_retain_questions"]) if "n_forget_questions" in sel else None,
        background=sel.get("background", ""),
        threshold=sel.get("threshold"),
        forget_corpus=sel["forget_corpus"],
        retain_corpora=sel["retain_corpora"],
    )


def default_intervention(
    engine, target: Target, sae_key: str | None = None, progress=None, scores: tuple | None = None
) -> Intervention:
    """The target's default clamp (its selection, c and scale); ``scores``: a question-based
    selection's precomputed scores (the server computes them in short lock holds)."""
    rows = select_for_target(engine, target, sae_key, progress=progress, scores=scores)
    threshold = rows["threshold"]
    feats = tuple(r["feature"] for r in rows["features"])
    if not feats:
        why = {
            "search": f"no non-dense feature fires on the query {target.selection.query!r}",
            "attribution": "no feature firing on its train-half forget questions has a positive attribution score",
            "fisher": "no feature firing on its train-half forget questions passes DSG's percentile filters",
        }.get(rows["method"])
        why = why or f"no feature passes the selection (retain threshold {threshold:g}); raise the threshold"
        raise TargetError(f"target {target.name!r}: {why}")
    from unlearn_core.method.interventions import Intervention  # torch: not needed to read the registry

    iv = target.intervention
    scales = scales_for(iv.scale, rows["forget_stats"].max_act, feats)
    tau = None
    if iv.mode in GATED_MODES:  # calibrated as the gate table's: cached per features and corpus
        from unlearn_core.method.gate import tau_over

        tau = tau_over(engine, rows["sae"], feats, list(target.retain_corpora), iv.gate_percentile)["tau"]
    return Intervention(rows["sae"], feats, iv.c, iv.mode, tau, scales=scales)


def question_specs(
    target: Target, forget_file: str | None = None, retain_files: list[str] | None = None
) -> tuple[str, list[str]]:
    """The forget and retain question specs `target eval` scores: the given files whole, else the
    target's own sets restricted to ``eval_part``."""
    forget = forget_file or with_part(target.forget_questions, target.eval_part)
    retain = list(retain_files) if retain_files else [with_part(s, target.eval_part) for s in target.retain_questions]
    return forget, retain


def replace_intervention(target: Target, **kw) -> Target:
    """The same target with other selection or intervention settings (sweeps, the app)."""
    sel = {k: kw.pop(k) for k in ("threshold", "n", "tokens", "method", "query", "background") if k in kw}
    iv = {k: kw.pop(k) for k in ("mode", "c", "scale", "gate_percentile") if k in kw}
    return replace(
        target, selection=replace(target.selection, **sel), intervention=replace(target.intervention, **iv), **kw
    )
