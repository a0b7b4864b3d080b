"""The data half of the Batch evaluation form: from the target, or the paper's WMDP-bio setup.

Both return the same spec fields (question sets, selection corpora, known filter, loss corpus),
so the page adds the sweep grid and submits. The target form is *prefilled* from the target
(its held-out question sets, as ``target eval`` reports, its corpora and strict-known setting)
and sends every value explicitly, so what the form shows is what runs; its widget keys carry
the target's name, so choosing another target in the sidebar prefills afresh.
"""

from __future__ import annotations

import streamlit as st

from unlearn_core.data.specs import BIO_FALLBACK_SUBJECTS, SIDE_EFFECT_SUBJECTS, with_part
from unlearn_core.ui import questions as QS
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import widgets as WG

BIO_FALLBACK = "mmlu:" + ",".join(BIO_FALLBACK_SUBJECTS)
MAX_SETS = 8  # the server's limit on side-effect / retain question sets
MAX_CORPORA = 4
FEW_QUESTIONS = 10  # below this many questions an accuracy (and the score) is mostly noise


def default_grid(t: dict | None) -> tuple[str, str, str]:
    """The sweep grid's first values (thresholds, N, c) from the target's default intervention, so
    the form starts where the target's default is: N and half of it, c and its half and quarter."""
    from unlearn_core.evaluation.grid import PAPER_THRESHOLDS, default_grid

    if not t:
        return ", ".join(f"{x:g}" for x in PAPER_THRESHOLDS), "10, 20", "100, 200, 400"
    sel = t["selection"]
    thresholds, ns, cs = default_grid(
        sel["n"], float(t["intervention"]["c"]), sel["threshold"], sel.get("method", "frequency")
    )
    return ", ".join(f"{x:g}" for x in thresholds), ", ".join(map(str, ns)), ", ".join(f"{v:g}" for v in cs)


def prefill_grid(t: dict | None) -> None:
    """Put ``default_grid(t)`` in the grid's widgets the first time and when the target changes."""
    name = t["name"] if t else None
    if st.session_state.get("_b_grid_target", "unset") != name:
        st.session_state["_b_grid_target"] = name
        for key, value in zip(("b_thr", "b_ns", "b_vals"), default_grid(t)):
            st.session_state[key] = value


def sweep_grid(thr_text: str, ns_text: str, val_text: str, max_c: float, parse) -> tuple[list, list, list]:
    """The grid from the form's texts (``parse`` as ``render.parse_numbers``); ValueError says what is
    wrong. A negative c is refused: features are set to -c, so it would raise them (steering)."""
    thresholds, ns, values = parse(thr_text, float), parse(ns_text, int), parse(val_text, float)
    if not (thresholds and ns and values):
        raise ValueError("give at least one threshold, one N and one clamp value")
    if any(not 0 < t <= 1 for t in thresholds):
        raise ValueError("thresholds must be in (0, 1]")
    if any(n < 1 for n in ns):
        raise ValueError("N must be at least 1")
    bad = [v for v in values if not 0 <= v <= max_c]
    if bad:
        raise ValueError(
            f"clamp values c must be between 0 and {max_c:g} (got {', '.join(f'{v:g}' for v in bad)}): the features "
            "are set to -c where they fire, so a negative c would raise them instead of suppressing them"
        )
    return thresholds, ns, values


def named_corpora(info: dict) -> list[str]:
    return [c for c in info.get("corpora", []) if "<" not in c]


def target_form(t: dict, info: dict) -> dict:
    """Widgets prefilled from target ``t``; returns the spec's data fields (with ``target``)."""
    k = t["name"]
    limits = info.get("limits", {})
    part = t.get("eval_part", "heldout")
    forget0 = with_part(t["forget_questions"], part)
    retain0 = [with_part(s, part) for s in t["retain_questions"]][:MAX_SETS]
    sets = list(
        dict.fromkeys([forget0, t["forget_questions"], *retain0, *t["retain_questions"], *QS.question_sets(info)])
    )
    corpora = named_corpora(info)
    st.caption(
        f"Prefilled from the target **{k}**: its forget and retain questions ({part} part: the text used "
        "for selection is the other half), its forget and retain corpora, its known filter. Change any of "
        "them; what you see is what runs."
    )
    c1, c2, c3 = st.columns([3, 1.4, 0.8], vertical_alignment="bottom")  # "Known questions only" fits
    forget_set = c1.selectbox("Forget questions", sets, key=f"b_tforget_{k}")
    known = c2.checkbox(
        "Known questions only",
        True,
        key=f"b_tknown_{k}",
        help="Keep the questions the clean model answers correctly (letter scoring: in all 24 "
        "orderings); cached on the server.",
    )
    strict = c3.checkbox(
        "Strict",
        bool(t.get("strict_known")),
        key=f"b_tstrict_{k}",
        disabled=not known,
        help="The strict known filter: also drop questions answered right with the question text "
        "blanked (answer bias, not knowledge).",
    )
    retain_sets = st.multiselect(
        "Retain questions",
        sets,
        default=retain0,
        key=f"b_tretain_{k}",
        max_selections=MAX_SETS,
        help="Accuracy is reported per set and averaged (the 'side-effect' columns).",
    )
    c1, c2 = st.columns(2)
    fcorpus = c1.selectbox(
        "Forget corpus (selection)", list(dict.fromkeys([TP.selection_corpus(t), *corpora])), key=f"b_tfcorpus_{k}"
    )
    rcorpora = c2.multiselect(
        "Retain corpora (selection; a feature's retain frequency is its highest over them)",
        list(dict.fromkeys([*t["retain_corpora"], *corpora])),
        default=t["retain_corpora"],
        key=f"b_trcorpora_{k}",
        max_selections=MAX_CORPORA,
    )
    c1, c2 = st.columns(2)
    loss_corpus = c1.selectbox(
        "Loss-added corpus", list(dict.fromkeys([t["loss_corpus"], *corpora])), key=f"b_tloss_corpus_{k}"
    )
    sel_tokens = WG.stats_tokens_input(
        c2, "Selection tokens per corpus", f"b_tsel_tokens_{k}", limits, low=16, value=int(t["selection"]["tokens"])
    )
    return {
        "target": k,
        "forget_set": forget_set,
        "side_effect_sets": list(retain_sets),
        "known": bool(known),
        "strict_known": bool(known and strict),
        "forget_corpus": fcorpus,
        "retain_corpora": list(rcorpora),
        "loss_corpus": loss_corpus,
        "selection_tokens": int(sel_tokens),
    }


def paper_form(info: dict, wmdp: dict | None) -> dict:
    """The paper's setup: WMDP-bio (or the explicit MMLU-biology fallback), MMLU side-effect
    subjects, one forget and one retain corpus."""
    limits = info.get("limits", {})
    wmdp_label = wmdp["label"] if wmdp else "WMDP-bio"
    forget_opts = {
        "wmdp-bio": wmdp_label + (" (the server's offline fallback)" if wmdp and wmdp["is_fallback"] else ""),
        BIO_FALLBACK: "OFFLINE FALLBACK chosen explicitly: MMLU biology subjects ("
        + ", ".join(BIO_FALLBACK_SUBJECTS)
        + ")",
    }
    corpora = named_corpora(info)
    subjects = sorted(
        s["name"][5:]
        for s in info.get("question_sets", [])
        if s["name"].startswith("mmlu:") and s["name"] != "mmlu:side-effects"
    )
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    forget_set = c1.selectbox(
        "Forget questions", list(forget_opts), key="b_forget", format_func=lambda k: forget_opts[k]
    )
    known = c2.checkbox(
        "Known questions only",
        True,
        key="b_known",
        help="Keep questions the clean model answers correctly in all 24 orderings of the choices "
        "(as the paper and SAEBench); computed once per question and cached on the server.",
    )
    side = st.multiselect(
        "Side-effect subjects (MMLU)",
        subjects,
        key="b_side",
        default=[s for s in SIDE_EFFECT_SUBJECTS if s in subjects] or None,
        max_selections=MAX_SETS,
        help="The paper's four by default; accuracy is reported per subject and averaged.",
    )
    c1, c2 = st.columns(2)
    loss_corpus = c1.selectbox(
        "Loss-added corpus", ["webtext", *[c for c in corpora if c != "webtext"]], key="b_loss_corpus"
    )
    sel_tokens = WG.stats_tokens_input(c2, "Selection tokens per corpus", "b_sel_tokens", limits, low=16)
    c1, c2 = st.columns(2)
    fcorpus = c1.selectbox("Forget corpus (selection)", ["wmdp-bio-text@train", *corpora], key="b_fcorpus")
    rcorpus = c2.selectbox("Retain corpus (selection)", ["wikitext@train", *corpora], key="b_rcorpus")
    return {
        "forget_set": forget_set,
        "side_effect_sets": [f"mmlu:{s}" for s in side],
        "known": bool(known),
        "forget_corpus": fcorpus,
        "retain_corpus": rcorpus,
        "loss_corpus": loss_corpus,
        "selection_tokens": int(sel_tokens),
    }


# ---------------------------------------------------------------- results: how many questions


def few_questions(results: list[dict], spec: dict, word: str = "side-effect") -> str | None:
    """A warning when an accuracy of this run rests on fewer than FEW_QUESTIONS questions (the
    clean baseline's counts: every configuration is scored on the same questions), else None."""
    base = next((r for r in results if r["config"] == "none"), None) or (results[0] if results else None)
    if base is None:
        return None
    nq = base.get("n_questions") or {}
    small = []
    if nq.get("forget") is not None and nq["forget"] < FEW_QUESTIONS:
        small.append(f"**{nq['forget']} forget questions**")
    for s in spec.get("side_effect_sets") or []:
        if nq.get(s) is not None and nq[s] < FEW_QUESTIONS:
            small.append(f"**{nq[s]} {word} questions** (`{s}`)")
    if not small:
        return None
    how = ("raise the question limit" if spec.get("question_limit") else "use larger question sets") + (
        " or turn the known filter off (it keeps only the questions the clean model knows)"
        if spec.get("known", True)
        else ""
    )
    return (
        "Few questions: this run's accuracies rest on " + ", ".join(small) + f", fewer than {FEW_QUESTIONS}. "
        "One question moves such an accuracy (and the unlearning score) by 1/n, so a score like 0.000 or "
        f"1.000 says little; to compare configurations, {how}."
    )
