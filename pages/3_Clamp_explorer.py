"""Clamp explorer: one question, a set of features, a mode and a clamp value c: the A/B/C/D
probabilities with and without the intervention (live as the slider moves), the probability-vs-c
curve (the paper's Figure 4) with loss added, the prompt's activations, and generations."""

from __future__ import annotations

import json

import streamlit as st

from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import feature_sets as FS
from unlearn_core.ui import figures as FIG
from unlearn_core.ui import nav as NV
from unlearn_core.ui import page as PG
from unlearn_core.ui import pickers as PK
from unlearn_core.ui import questions as QS
from unlearn_core.ui import render as R
from unlearn_core.ui import rmu_view as RV
from unlearn_core.ui import target_picker as TP
from unlearn_core.ui import url_state as US
from unlearn_core.ui import widgets as WG

info, sae = PG.tool_page("Clamp explorer")
labels = PK.mode_labels()
CURVE_VALUES = [float(v) for v in range(0, TP.MAX_C + 1, TP.MAX_C // 20)]  # 21 values over the slider, one call
LOSS_VALUES = [25.0, 50.0, 100.0, 200.0, 400.0]

target = TP.current_target()
q, qs_meta = QS.question_picker(info, target=target)
if q is None:
    st.stop()
with st.expander("The question", expanded=False):
    QS.show_question(q)


def use_target_defaults() -> None:
    """A callback: the target's default intervention (its selection, mode and c) into the widgets."""
    try:
        sel = CN.cached("select_target", target=target["name"], sae=sae)
    except Exception as e:  # shown below, after the rerun
        st.session_state["_target_error"] = e
        return
    if not sel["features"]:
        st.session_state["_target_error"] = ValueError(
            "no feature passes the target's selection on this SAE: "
            + R.selection_summary(target, TP.selection_corpus(target))
        )
        return
    st.session_state["features"] = R.format_feature_list([(sae, r["feature"]) for r in sel["features"]], sae)
    st.session_state["mode"] = target["intervention"]["mode"]
    st.session_state["c"] = TP.clamp_c(target["intervention"]["c"])


c1, c2 = st.columns([3, 2])
with c1:
    items = FS.features_input(info, sae)
    if target:
        iv0 = target["intervention"]
        st.button(
            "Use the target's default features",
            key="use_target",
            on_click=use_target_defaults,
            help=f"The {target['name']} target's selection "
            f"({R.selection_summary(target, TP.selection_corpus(target))}) "
            f"with its default mode ({iv0['mode']}) and c ({iv0['c']:g}); slow the first time.",
        )
    err = st.session_state.pop("_target_error", None)
    if err is not None:
        ER.show_error(err, "the target's default features")
with c2:
    modes = info.get("modes") or list(labels)
    mode = US.url_selectbox(
        "Mode",
        modes,
        key="mode",
        format_func=lambda m: PK.mode_short().get(m, m),
        help="clamp-when-active is the paper's method; 'add' is a different (unconditional) "
        "intervention; 'reconstruct' drops the SAE error term (its damage is the SAE's own); "
        "'gated' clamps only prompts where the features fire on more than τ of the tokens "
        "(Dynamic SAE Guardrails), 'dsg' with DSG's own clamp.",
    )
    gate = None
    if mode in R.GATED:
        US.link_tau()  # a link's ?tau= (the guided demo's gated default): tau itself, not a percentile
        how = (
            st.segmented_control(
                "Gate τ",
                ["percentile", "value"],
                default="percentile",
                key="gate_how",
                help="A percentile of ρ over windows of a retain corpus (DSG: 95th), "
                "calibrated once per feature set on the server; or τ itself.",
            )
            or "percentile"
        )
        if how == "percentile":
            gate = {
                "gate_percentile": float(
                    st.number_input("Percentile of ρ on wikitext@train", 0.0, 100.0, 95.0, step=1.0, key="gate_pct")
                )
            }
        else:
            gate = {"gate": float(st.number_input("τ", 0.0, 1.0, 0.15, step=0.01, key="gate_tau"))}
    rmu_done = RV.finished()
    variant = (
        st.selectbox(
            "Compare with a fine-tuned model (RMU, persistent)",
            [None, *rmu_done],
            key="variant",
            format_func=lambda v: "— none —" if v is None else v,
            help="A finished RMU or persistent run (train one on the Batch evaluation page): its probabilities "
            "on this question, next to the base model's and the clamp's.",
        )
        if rmu_done
        else None
    )
    on_top = bool(variant) and st.checkbox(
        "Clamp on top of it",
        key="on_top",
        help="Apply the clamp to the fine-tuned model instead of the model as loaded: "
        "the curve, loss added, heat map and generation below are then "
        "the RMU model's (with and without the clamp).",
    )
    top = {"variant": variant} if on_top else {}  # requests on the RMU model, the clamp on top of it
zero = mode == "zero"
if not items and mode != "reconstruct":
    st.info(
        "Choose features to clamp: type ids, load a feature set (made on **Feature search** or **Token "
        "highlighting**), use the target's default features (button above), or the forget/retain selection "
        "below.",
        icon=":material/touch_app:",
    )
    c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    thr = c1.select_slider("Retain threshold", [0.5, 0.1, 0.05, 0.01, 0.005, 0.001], value=0.01, key="sug_thr")
    n = c2.number_input("N", 1, 100, 10, key="sug_n")

    def suggest() -> None:  # a callback: it reads the widgets' current values from the session state
        thr, n = float(st.session_state["sug_thr"]), int(st.session_state["sug_n"])
        try:
            sel = CN.cached("select", threshold=thr, n=n, n_tokens=20_000, sae=sae)
        except Exception as e:  # shown below, after the rerun
            st.session_state["_suggest_error"] = e
            return
        if sel["features"]:
            st.session_state["features"] = R.format_feature_list([(sae, r["feature"]) for r in sel["features"]], sae)
        else:
            st.session_state["_suggest_error"] = ValueError(
                f"no feature passes the retain threshold {thr:g} on this SAE; raise it"
            )

    c3.button(
        "Use the top-N forget/retain features",
        on_click=suggest,
        help="The paper's selection on wmdp-bio-text vs wikitext (slow the first time).",
    )
    err = st.session_state.pop("_suggest_error", None)
    if err is not None:
        ER.show_error(err, "the forget/retain selection")
    NV.page_link("search", "Find features on the Feature search page", icon=NV.ICONS["search"])
    st.stop()

ids_text = R.format_feature_list(items, sae)
qset = st.session_state.get("qset", "wmdp-bio")
C_DEFAULT = 20
CURVE_CHUNK = 7  # clamp values per request: the curve fills in as it comes, and each request is short


def slider_value() -> float:
    """The clamp value c from the slider (kept in the URL); 0 for zero ablation."""
    c = US.url_widget(
        st.slider,
        "Clamp value c (active features are set to −c)",
        "c",
        C_DEFAULT,
        parse=US.int_in(0, TP.MAX_C),
        min_value=0,
        max_value=TP.MAX_C,
        step=1,
        disabled=zero,
        help="Paper: 20–25 on gemma-2b-it, 50–100 on gemma-2-2b-it; this workbench's targets default "
        "to a few hundred (the target button above sets it). c = 0 is zero ablation, which the "
        "paper found ineffective.",
    )
    return 0.0 if zero else float(c)


def prob_rows(res: dict, value: float) -> list[tuple[str, dict]]:
    """The probability table's rows: base, the RMU model when one is compared (it does not depend
    on c, so a slider move reads it from the app's cache), and the intervened model."""
    base = res["base"]  # clamping on top of an RMU model: that model's, without the clamp
    inter = res["curve"][0]["score"]
    rows = [("base", base), (f"{variant} + clamp (c={value:g})" if top else f"intervened (c={value:g})", inter)]
    if variant:
        other = {} if top else {"variant": variant}
        rv = ER.attempt(
            lambda: CN.cached("mcq", question_id=q["id"], set=qset, **other),
            "scoring on the model as loaded" if top else f"scoring on {variant}",
        )
        if rv is not None:
            rows = (
                [("base", rv["base"]), (variant, base), rows[1]] if top else [rows[0], (variant, rv["base"]), rows[1]]
            )
    return rows


def answer_summary(res: dict, rows: list[tuple[str, dict]], value: float) -> None:
    """The answer's change, P(correct) against the base (and the RMU model's), and how it is scored."""
    base, inter, answer = rows[0][1], rows[-1][1], res["question"]["answer"]
    b, a = R.LETTERS[base["predicted"]], R.LETTERS[inter["predicted"]]
    change = f"the answer changes **{b} → {a}**" if a != b else f"the answer stays **{a}**"
    st.markdown(f"Correct answer: **{R.LETTERS[answer]}** · {change}")
    p_ok = (base["probs"][answer], inter["probs"][answer])
    st.metric(
        f"P(correct answer {R.LETTERS[answer]})",
        f"{p_ok[1]:.4f}",
        f"{p_ok[1] - p_ok[0]:+.4f} vs base",
        delta_color="off",  # a drop is the aim on a forget question and a loss on a retain one: no colour claims either
    )
    if len(rows) == 3:
        p_rmu = rows[1][1]["probs"][answer]
        st.metric(f"P(correct) on {variant}", f"{p_rmu:.4f}", f"{p_rmu - p_ok[0]:+.4f} vs base", delta_color="off")
    how = (
        "probabilities are a softmax over the four answers' mean log-likelihoods (cloze), so they sum to 1"
        if res["scoring"] == "cloze"
        else "probabilities are softmax over the whole vocabulary, so they need not sum to 1 ('mass on A-D')"
    )
    cap = (
        f"Question {q['id']} · {labels.get(mode, mode)} · c = {value:g} · {len(items)} feature(s): "
        f"{R.short(ids_text, 80) or '—'}"
    )
    st.caption(f"{cap}. Scoring: {res['scoring']} ({res['prompt_format']} prompt); {how}.")


def gate_panels(res: dict, value: float) -> None:
    """For each gated intervention: whether its gate opens on this prompt, and P(correct) against τ."""
    answer = res["question"]["answer"]
    for g in res.get("gates") or []:
        st.markdown(R.gate_markdown(g))
        taus, ps = R.tau_curve_points(g)
        st.plotly_chart(
            FIG.tau_curve(taus, ps, g["rho"], g["tau"], R.LETTERS[answer]), key=f"tau_curve_{g['intervention']}"
        )
        st.caption(
            f"P(correct) against τ at c = {value:g}: {g['p_correct_open']:.3f} where the gate opens (τ < ρ), "
            f"{g['p_correct_clean']:.3f} (the clean model) where it stays shut"
            + (
                "; with several gated interventions, each curve holds the others' gates open."
                if len(res["gates"]) > 1
                else "."
            )
        )


@st.fragment
def live() -> None:
    """The slider and everything that depends on c. A fragment: moving the slider reruns only
    this, not the question list, the heat map or the generation panel."""
    value = slider_value()
    ivs = R.interventions_for(items, value, mode, sae, gate)
    res = ER.attempt(
        lambda: CN.cached("mcq", question_id=q["id"], set=qset, interventions=ivs, values=[value], **top),
        "scoring the question",
        spinner=f"Scoring with c = {value:g}…",
    )
    if res is None:
        return
    st.session_state["_clamp_scored"] = {
        "id": q["id"],
        "prompts": res.get("prompts") or [],
        "scoring": res["scoring"],
        "base": res["base"],
        "answer": res["question"]["answer"],
    }
    st.subheader("Answer probabilities")
    rows = prob_rows(res, value)
    answer = res["question"]["answer"]
    st.markdown(R.prob_table_markdown(rows, answer))
    left, right = st.columns([2, 3])
    with left:
        answer_summary(res, rows, value)
    with right:
        st.markdown(
            R.prob_bars_html(rows[0][1]["probs"], rows[-1][1]["probs"], answer, rows[-1][0]), unsafe_allow_html=True
        )
    gate_panels(res, value)
    with st.expander("Interventions sent to the server"):
        st.code(json.dumps(res["interventions"], indent=1), language="json")


def draw_curve(slot, points: list[dict], base: dict, answer: int, key: str, loss: dict | None = None) -> None:
    """The probability-vs-c figure of the points so far into ``slot`` (with the loss added, once
    there is some): drawn while the chunks come in and again when the curve is complete."""
    values, probs = [p["value"] for p in points], [p["score"]["probs"] for p in points]
    fig = FIG.prob_curve(
        values, probs, answer, base=base["probs"], loss=loss, mode_label=PK.mode_short().get(mode, mode)
    )
    slot.plotly_chart(fig, key=key)


def curve_points(slot, base: dict, answer: int) -> list[dict] | None:
    """The curve's points, scored a chunk of clamp values per request and drawn as they come in
    (None when a request failed: the failure is shown)."""
    # the curve sets every intervention's value itself: requested with a fixed one, so moving the
    # slider reuses the cached chunks instead of scoring 21 values again
    curve_ivs = R.interventions_for(items, CURVE_VALUES[0], mode, sae, gate)
    points: list[dict] = []
    chunks = [CURVE_VALUES[i : i + CURVE_CHUNK] for i in range(0, len(CURVE_VALUES), CURVE_CHUNK)]
    for k, vals in enumerate(chunks):
        if points:  # what has come so far, while the rest is scored
            draw_curve(slot, points, base, answer, f"curve_part{k}")
        part = ER.attempt(
            lambda vals=vals: CN.cached(
                "mcq", question_id=q["id"], set=qset, interventions=curve_ivs, values=vals, **top
            ),
            "the probability curve",
            spinner=f"Scoring clamp values {vals[0]:g}–{vals[-1]:g} ({k + 1} of {len(chunks)})…",
        )
        if part is None:
            return None
        points += part["curve"]
    return points


def loss_added_values(corpus: str, ntok: int) -> dict[float, float]:
    """Loss added at each of LOSS_VALUES (as tasks: past the synchronous limit too), with a
    progress bar; stops at the first failure (shown) with what it has."""
    bar = st.progress(0.0, text="loss added…")
    out = {}
    for i, v in enumerate(LOSS_VALUES):
        r = ER.attempt(
            lambda v=v: CN.cached(
                "loss_added_task",
                interventions=R.interventions_for(items, v, mode, sae, gate),
                corpus=corpus,
                n_tokens=ntok,
                **top,
            ),
            f"loss added at c={v:g}",
        )
        if r is None:
            break
        out[v] = r["loss_added"]
        bar.progress((i + 1) / len(LOSS_VALUES), text=f"loss added at c = {v:g}: {r['loss_added']:+.4f}")
    bar.empty()
    return out


@st.fragment
def curve_panel(base: dict, answer: int) -> None:
    """The probability-vs-c curve (the paper's Figure 4) and loss added. Its own fragment: it does
    not depend on the slider, so a slider move does not redraw it; its button reruns only it."""
    st.subheader("Probabilities against c")
    if zero:
        st.info("Zero ablation has no c: the curve is flat. Choose another mode to see it.")
        return
    slot = st.empty()
    points = curve_points(slot, base, answer)
    if points is None:
        return
    loss_store = st.session_state.setdefault("loss_added", {})
    c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    corpus = c1.selectbox("Loss-added corpus", ["webtext", "wikitext", "pile"], key="loss_corpus")
    ntok = c2.number_input(
        "Tokens", 256, int(info.get("limits", {}).get("max_eval_tokens", 100_000)), 2000, step=500, key="loss_tokens"
    )
    lkey = f"{ids_text}|{mode}|{corpus}|{int(ntok)}|{top.get('variant', '')}"
    if c3.button(
        f"Add loss added at c = {', '.join(f'{v:g}' for v in LOSS_VALUES)}",
        help="Mean next-token loss with the clamp minus without, on a sample of the corpus. "
        "Slow on CPU: one evaluation per value.",
    ):
        out = loss_added_values(corpus, int(ntok))
        if out:
            loss_store[lkey] = out
    loss = loss_store.get(lkey)
    draw_curve(slot, points, base, answer, "curve", loss)
    dotted = f"{top['variant']} without the clamp" if top else "the clean model"
    st.caption(
        f"Solid lines: with the intervention at each c; dotted: {dotted}. "
        + (
            f"Grey squares: loss added on {int(ntok)} tokens of {corpus} (right axis)."
            if loss
            else "Press the button to add the loss added (right axis)."
        )
    )


live()
scored = st.session_state.get("_clamp_scored") or {}
if scored.get("id") != q["id"]:
    st.stop()  # the scoring failed (said above)
c_now = 0.0 if zero else float(st.session_state.get("c", C_DEFAULT))
ivs = R.interventions_for(items, c_now, mode, sae, gate)
prompts = scored["prompts"] or [R.question_text(q)]
curve_panel(scored["base"], scored["answer"])

# ---------------------------------------------------------------- where the features fire
cloze = scored.get("scoring") == "cloze"
shown = prompts[q["answer"]] if cloze and len(prompts) == 4 else prompts[0]
st.subheader("Where the features fire in the scored text")
feats = [f for s, f in items if s == sae]
if feats:
    acts = ER.attempt(
        lambda: CN.cached("activations", text=shown, sae=sae, features=feats, top_k=1, **top),
        "the prompt's activations",
        spinner="Encoding the prompt…",
    )
    if acts is not None:
        combined = [max(row) if row else 0.0 for row in acts["values"]]
        vmax = max(combined + [1e-9])
        WG.heatmap(acts["tokens"], combined, vmax=vmax, skip_first=True)
        st.markdown(R.legend_html(vmax, "max activation of the chosen features"), unsafe_allow_html=True)
        what = (
            "Cloze scoring scores four texts, the question followed by each answer; this is the correct "
            "answer's (the other three share the question part). "
            if cloze
            else "The prompt exactly as letter scoring reads it. "
        )
        st.caption(
            what + "In it, the clamp acts only where a chosen feature is > 0 (coloured tokens); in "
            "generation, also on generated tokens where a chosen feature fires."
        )
else:
    st.caption("No features of the selected SAE chosen.")

# ---------------------------------------------------------------- generation
st.subheader("Generation: base vs intervened")
# the prompt the scorer reads, without an answer: cloze's question prefix, or the lettered prompt
gen_default = (
    prompts[0][: len(prompts[0]) - len(" " + q["choices"][0].strip())] if cloze and len(prompts) == 4 else prompts[0]
)
# keyed by question and scoring: a text area keeps what it holds under one key, so one key for every
# question would keep the previous question's prompt (and generate for a question not on screen)
prompt = st.text_area(
    "Prompt",
    value=gen_default,
    key=f"gen_prompt:{q['id']}:{scored.get('scoring')}",
    height=140,
    help="The question as it is scored; edit freely.",
)
c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
max_new = c1.number_input("New tokens", 1, int(info.get("limits", {}).get("max_new_tokens", 512)), 40, key="gen_n")
gparams = dict(prompt=prompt, interventions=ivs, max_new_tokens=int(max_new), **top)
if WG.once(
    "generate",
    gparams,
    c2.button(
        "Generate both", help="Greedy decoding with the slider's current c; the clamp also applies to generated tokens."
    ),
):
    g = ER.attempt(
        lambda: CN.cached("generate_task", **gparams), "generation", spinner="Generating (base, then intervened)…"
    )
    if g is not None:
        a, b = st.columns(2)
        model = top.get("variant", "")
        for col, title, out in (
            (a, f"**{model or 'Base'}**", g["base"]),
            (
                b,
                f"**{model + ' + clamp' if model else 'Intervened'}** ({labels.get(mode, mode)}, c = {c_now:g})",
                g.get("intervened"),
            ),
        ):
            col.markdown(title)
            col.code(out if (out or "").strip() else f"(only whitespace: {out!r})", language=None, wrap_lines=True)

st.divider()
st.caption("This view is in the URL (question, features, mode, c): copy the address bar to share it.")
