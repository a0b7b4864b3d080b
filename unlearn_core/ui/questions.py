"""The question set and question pickers (bound to the URL) and how a question is shown."""

from __future__ import annotations

import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import render as R
from unlearn_core.ui import url_state as US


def question_sets(info: dict, target: dict | None = None) -> list[str]:
    """The server's question sets; with a target, its forget set first, then its retain sets."""
    names = [s["name"] for s in info.get("question_sets", [])] or ["wmdp-bio"]
    if target:
        first = [target["forget_questions"], *target["retain_questions"]]
        names = list(dict.fromkeys(first + names))
    return names


def _follow_target(target: dict | None) -> None:
    """When the sidebar target changes, the question set moves to the new target's forget set."""
    name = target["name"] if target else None
    before = st.session_state.get("_qset_target")
    st.session_state["_qset_target"] = name
    if target and before is not None and before != name:
        st.session_state["qset"] = target["forget_questions"]
        US.shared()["qset"] = target["forget_questions"]


def question_picker(
    info: dict, allow_known: bool = True, target: dict | None = None
) -> tuple[dict | None, dict | None]:
    """Pick a question set and a question (both bound to the URL). Returns (question, set meta).

    With a target, its forget question set is the default and its retain sets come next."""
    sets = question_sets(info, target)
    desc = {s["name"]: s["description"] for s in info.get("question_sets", [])}
    if target:
        _follow_target(target)
        desc.setdefault(target["forget_questions"], f"forget questions of {target['name']}")
    c1, c2 = st.columns([1, 2])
    role = {}
    if target:
        role = {n: "retain set" for n in target["retain_questions"]}
        role[target["forget_questions"]] = "forget set"

    def label(n: str) -> str:
        if n in role:
            return f"{n} ({target['name']} {role[n]})"
        return desc.get(n, n)[:60] if n.startswith("mmlu:") and n != "mmlu:side-effects" else n

    qset = US.url_selectbox("Question set", sets, key="qset", container=c1, format_func=label)
    known = False
    if allow_known:
        known = US.url_widget(
            c1.checkbox,
            "Only questions the model knows",
            "known",
            False,
            parse=US.parse_bool,
            help="Keeps questions the clean model answers correctly (checked on the first 30; "
            "slow on the first use with the real model). With a target that asks for it, "
            "the strict filter: also wrong with the question text blanked.",
        )
    limit = 30 if known else info.get("limits", {}).get("max_page", 2000)
    kw = {"strict": True} if known and target and target.get("strict_known") else {}
    data = ER.attempt(
        lambda: CN.cached("questions", set=qset, known=known, limit=limit, **kw),
        f"the question set {qset!r}",
        spinner="Checking which questions the model knows (all 24 orderings; slow the first time)…"
        if known
        else "Loading questions…",
    )
    if data is None:
        return None, None
    if data.get("is_fallback"):
        st.warning(
            f"{data['label']}: the real WMDP-bio questions were not found, so these stand in.",
            icon=":material/inventory_2:",
        )
    qs = data["questions"]
    if not qs:
        c2.warning("No questions in this set" + (" that the model knows" if known else "") + ".")
        return None, data
    filt = c2.text_input("Filter questions", key="qfilter", placeholder="word in the question…")
    if filt:
        hits = [q for q in qs if filt.lower() in q["question"].lower()]
        if hits:
            qs = hits
        else:  # say so, rather than silently showing the whole set as if it had matched
            c2.warning(
                f"No question in this set contains “{filt}”; showing all {len(qs)}.", icon=":material/search_off:"
            )
    by_id = {q["id"]: q for q in qs}
    qid = US.url_selectbox(
        R.question_box_label(len(qs), data),
        list(by_id),
        key="q",
        container=c2,
        format_func=lambda i: R.short(by_id[i]["question"], 110) if i in by_id else i,
    )
    return by_id.get(qid), data


def show_question(q: dict, reveal: bool = True) -> None:
    st.markdown(f"**{q['question']}**")
    lines = []
    for i, (L, c) in enumerate(zip(R.LETTERS, q["choices"])):
        mark = " :green[**✓ correct**]" if reveal and i == q["answer"] else ""
        lines.append(f"- **{L}.** {c}{mark}")
    st.markdown("\n".join(lines))
    st.caption(f"{q['source']} · {q['subject']} · id `{q['id']}`")
