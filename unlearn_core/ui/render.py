"""Pure view helpers (no Streamlit, no server): HTML, formatting, parsing.

Everything here takes plain JSON-like data (as the server returns it) and is unit-tested
without a browser. A sweep's results (tables, the unlearning score) are :mod:`.results`'.
"""

from __future__ import annotations

import html
import math
import re
from typing import Iterable

from unlearn_core.evaluation.verdicts import verdict
from unlearn_core.features.selection_phrase import selection_phrase

LETTERS = ("A", "B", "C", "D")

# Sequential "YlOrRd" stops for positive activations and "Blues" for negative ones. Each token's
# background is opaque and its text colour is chosen from that background's luminance, so the
# heat map reads the same in the light and the dark theme. Zero-activation tokens get no
# background and keep the theme's own text colour.
_POS_STOPS = [(255, 255, 178), (254, 204, 92), (253, 141, 60), (240, 59, 32), (189, 0, 38)]
_NEG_STOPS = [(239, 243, 255), (189, 215, 231), (107, 174, 214), (49, 130, 189), (8, 81, 156)]
MIN_SHADE = 0.12  # the faintest shade a non-zero activation gets (so it is always visible)


# ---------------------------------------------------------------- colours


def _interp(stops: list[tuple[int, int, int]], x: float) -> tuple[int, int, int]:
    x = min(1.0, max(0.0, x))
    pos = x * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    t = pos - i
    a, b = stops[i], stops[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * t) for k in range(3))  # type: ignore[return-value]


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance in [0, 1]."""

    def ch(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (ch(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_colour(rgb: tuple[int, int, int]) -> str:
    """Black or white, whichever contrasts more with the background ``rgb``."""
    lum = luminance(rgb)
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


def shade(value: float, vmax: float) -> tuple[tuple[int, int, int], str] | None:
    """(background rgb, text colour) for ``value`` on a scale up to ``vmax``; None for zero."""
    if not value or not math.isfinite(value) or vmax <= 0:
        return None
    x = MIN_SHADE + (1 - MIN_SHADE) * min(1.0, abs(value) / vmax)
    rgb = _interp(_POS_STOPS if value > 0 else _NEG_STOPS, x)
    return rgb, text_colour(rgb)


# ---------------------------------------------------------------- token heat map


def _visible(token: str) -> str:
    """The token as shown: newlines become a visible mark plus a line break."""
    esc = html.escape(token)
    return esc.replace("\r", "").replace("\n", "↵<br>").replace("\t", "⇥ ")


def token_heatmap_html(
    tokens: list[str],
    values: list[float],
    vmax: float | None = None,
    peak: int | None = None,
    label: str | None = None,
    skip_first: bool = False,
) -> str:
    """Tokens as ``<span>``s coloured by activation; the exact value is in each ``title``.

    ``vmax`` fixes the scale (default: the largest |value|), ``peak`` outlines one token,
    ``skip_first`` leaves the first token (BOS) unshaded.
    """
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} values")
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    scale = vmax if vmax is not None else (max(finite) if finite else 0.0)
    spans = []
    for i, (tok, v) in enumerate(zip(tokens, values)):
        v = 0.0 if v is None or not math.isfinite(v) else float(v)
        title = html.escape(f"#{i} {tok!r}: {v:.3f}", quote=True)
        style = "border-radius:3px;padding:1px 0;"
        sh = None if (skip_first and i == 0) else shade(v, scale)
        if sh is not None:
            (r, g, b), fg = sh
            style += f"background-color:rgb({r},{g},{b});color:{fg};"
        if peak is not None and i == peak:
            style += "outline:2px solid #1f77b4;"
        spans.append(
            f'<span class="uw-tok" data-i="{i}" data-v="{v:.4f}" title="{title}" style="{style}">{_visible(tok)}</span>'
        )
    head = (
        f'<div class="uw-heat-label" style="font-size:0.8em;opacity:0.75;">{html.escape(label)}</div>' if label else ""
    )
    return (
        f'{head}<div class="uw-heat" style="font-family:ui-monospace,SFMono-Regular,Menlo,monospace;'
        f'line-height:1.9;white-space:pre-wrap;word-break:break-word;margin-bottom:0.6em;">' + "".join(spans) + "</div>"
    )


def legend_html(vmax: float, what: str = "activation") -> str:
    """A small colour bar: 0 … vmax."""
    cells = []
    for k in range(6):
        x = MIN_SHADE + (1 - MIN_SHADE) * k / 5
        r, g, b = _interp(_POS_STOPS, x)
        cells.append(
            f'<span style="display:inline-block;width:1.6em;height:0.9em;background-color:rgb({r},{g},{b});"></span>'
        )
    return (
        f'<div style="font-size:0.8em;opacity:0.85;">{html.escape(what)}: 0 '
        + "".join(cells)
        + f" {vmax:.3g} &nbsp;(hover a token for its value)</div>"
    )


# ---------------------------------------------------------------- features


def parse_feature_list(text: str, default_sae: str) -> list[tuple[str, int]]:
    """'12, 40 tiny:7' -> [(default, 12), (default, 40), ('tiny', 7)], order kept, duplicates dropped.

    A token is an id, or ``SAE_KEY:ID`` for a feature of another SAE (the key may itself hold
    colons, as 'release:sae_id' selectors do; the id is what follows the last one).
    """
    out: list[tuple[str, int]] = []
    for part in re.split(r"[,\s;]+", text or ""):
        if not part:
            continue
        key, _, num = part.rpartition(":")
        try:
            fid = int(num)
        except ValueError:
            raise ValueError(f"not a feature id: {part!r} (use ids like 12, or SAE:12)") from None
        if fid < 0:
            raise ValueError(f"feature ids are >= 0, got {fid}")
        item = (key or default_sae, fid)
        if item not in out:
            out.append(item)
    return out


def format_feature_list(items: Iterable[tuple[str, int]], default_sae: str) -> str:
    """The inverse of :func:`parse_feature_list`: plain ids for the default SAE."""
    return ", ".join(str(f) if s == default_sae else f"{s}:{f}" for s, f in items)


SET_SEP, SET_NAME_SEP = "|", "~"


def clean_set_name(name: str) -> str:
    """A feature-set name that survives the URL encoding below."""
    return re.sub(r"[|~]", "-", (name or "").strip()) or "my set"


def encode_feature_sets(sets: dict[str, list[tuple[str, int]]], base_sae: str) -> str:
    """Named feature sets as one URL value: ``name~12, 40|other~7`` ('' when there are none)."""
    return SET_SEP.join(
        f"{clean_set_name(n)}{SET_NAME_SEP}{format_feature_list(items, base_sae)}" for n, items in sets.items()
    )


def decode_feature_sets(raw: str, base_sae: str) -> dict[str, list[tuple[str, int]]]:
    """The inverse of :func:`encode_feature_sets`; ValueError on a malformed entry."""
    out: dict[str, list[tuple[str, int]]] = {}
    for part in (raw or "").split(SET_SEP):
        if not part.strip():
            continue
        name, sep, ids = part.partition(SET_NAME_SEP)
        if not sep or not name.strip():
            raise ValueError(f"not a feature set: {part!r} (expected name~ids)")
        out[clean_set_name(name)] = parse_feature_list(ids, base_sae)
    return out


def interventions_for(
    items: list[tuple[str, int]], value: float, mode: str, default_sae: str, gate: dict | None = None
) -> list[dict]:
    """One intervention per SAE, as the server's JSON wants it (``reconstruct`` may have none);
    ``gate`` ({"gate": tau} or {"gate_percentile": p, "gate_corpus": c}) for the gated modes."""
    by_sae: dict[str, list[int]] = {}
    for s, f in items:
        by_sae.setdefault(s, []).append(int(f))
    if not by_sae and mode == "reconstruct":
        by_sae[default_sae] = []
    extra = dict(gate or {}) if mode in GATED else {}
    return [{"sae": s, "features": fs, "value": float(value), "mode": mode, **extra} for s, fs in by_sae.items()]


GATED = ("gated", "dsg")


def tau_curve_points(gate: dict, n: int = 101) -> tuple[list[float], list[float]]:
    """P(correct) against tau for one gated intervention (``/api/mcq``'s ``gates`` entry): the
    open clamp's where rho > tau, else the clean model's (the decision does not depend on c)."""
    taus = [i / (n - 1) for i in range(n)]
    return taus, [gate["p_correct_open"] if gate["rho"] > t else gate["p_correct_clean"] for t in taus]


def gate_markdown(g: dict) -> str:
    state = "**open**: the clamp applies" if g["open"] else "**shut**: this prompt is left exactly as the clean model"
    return (
        f"Gate: ρ = **{g['rho']:.3f}** of the prompt's tokens carry a selected feature; τ = **{g['tau']:.3f}** "
        f"→ {state}."
    )


# ---------------------------------------------------------------- questions and probabilities


def question_text(q: dict) -> str:
    """The question with lettered choices (as the scorer shows it, without the prompt wrapper)."""
    return q["question"] + "\n" + "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, q["choices"]))


def short(text: str, n: int = 90) -> str:
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 1] + "…"


def question_box_label(n_shown: int, data: dict) -> str:
    """The question box's label. With the known filter only a page of the set was checked, so the
    count says how many were checked: "14 of 190" would read as "14 of the 190 are known"."""
    if data.get("known"):
        checked = min(data["limit"], max(0, data["total"] - data.get("offset", 0)))
        return f"Question ({n_shown} known among the first {checked} checked, of {data['total']} in {data['label']})"
    return f"Question ({n_shown} of {data['total']} in {data['label']})"


def selection_summary(t: dict, forget_corpus: str) -> str:
    """How a target picks its features, in one phrase (a target dict as the server sends it; the
    forget corpus as resolved, which may be a labelled stand-in)."""
    sel = t["selection"]
    return selection_phrase(
        sel.get("method", "frequency"),
        sel["n"],
        query=sel.get("query", ""),
        background=sel.get("background", ""),
        threshold=sel.get("threshold"),
        forget_corpus=forget_corpus,
        retain_corpora=t["retain_corpora"],
        forget_questions=f"the train half of `{t['forget_questions']}`" if t.get("forget_questions") else "",
    )


def fmt_prob(p: float | None) -> str:
    return "–" if p is None else f"{p:.4f}"


def prob_cells(probs: list[float]) -> list[str]:
    """['A 0.3120', 'B 0.2210', ...]: letter and value in one cell, easy to read (and to test)."""
    return [f"{L} {fmt_prob(p)}" for L, p in zip(LETTERS, probs)]


def prob_bars_html(base: list[float], inter: list[float], answer: int, label: str = "intervened") -> str:
    """Horizontal bars of each answer's probability, base (grey) over intervened (red).

    Plain HTML rather than a plotly chart: it sits in the slider's fragment, and a chart redraw
    costs the browser more than the rest of a slider step."""
    top = max([*base, *inter, 1e-9])

    def bar(p: float, colour: str) -> str:
        w = 100.0 * p / top
        return (
            f'<div style="display:flex;align-items:center;gap:6px;height:15px">'
            f'<div style="width:{w:.1f}%;max-width:85%;height:11px;background:{colour};border-radius:2px"></div>'
            f'<span style="font-size:0.8em;font-variant-numeric:tabular-nums">{p:.4f}</span></div>'
        )

    rows = []
    for i, L in enumerate(LETTERS):
        mark = " ✓" if i == answer else ""
        rows.append(
            f'<div style="display:flex;align-items:center;gap:8px;margin:4px 0">'
            f'<div style="width:2.2em;font-weight:{700 if i == answer else 400}">{L}{mark}</div>'
            f'<div style="flex:1">{bar(base[i], "#9aa5b1")}{bar(inter[i], "#d62728")}</div></div>'
        )
    legend = (
        f'<div style="font-size:0.8em;opacity:0.8"><span style="color:#9aa5b1">■</span> base &nbsp; '
        f'<span style="color:#d62728">■</span> {html.escape(label)}</div>'
    )
    return '<div class="uw-bars">' + legend + "".join(rows) + "</div>"


def prob_table_markdown(rows: list[tuple[str, dict]], answer: int) -> str:
    """A markdown table of A-D probabilities per row (label, score dict with probs/predicted)."""
    head = "| | " + " | ".join(f"{L} {'✓' if i == answer else ''}".strip() for i, L in enumerate(LETTERS))
    head += " | predicted | mass on A-D |\n|---|" + "---|" * 6 + "\n"
    body = ""
    for label, s in rows:
        cells = prob_cells(s["probs"])
        cells = [f"**{c}**" if i == s["predicted"] else c for i, c in enumerate(cells)]
        verdict = "correct" if s["predicted"] == answer else "wrong"
        body += (
            f"| {label} | " + " | ".join(cells) + f" | {LETTERS[s['predicted']]} ({verdict}) | "
            f"{s.get('mass', float('nan')):.3f} |\n"
        )
    return head + body


def demo_sentence(q: dict, base: dict, inter: dict, n_features: int, c: float) -> str:
    """The guided demo's result in plain words: what the clean and the clamped model answer."""

    def answer(s: dict) -> str:
        i = s["predicted"]
        return f"**{LETTERS[i]}. {q['choices'][i]}** ({'right' if i == q['answer'] else 'wrong'})"

    verb = "still answers" if inter["predicted"] == base["predicted"] else "answers"
    text = (
        f"Clean, the model answers {answer(base)}. With the {n_features} feature(s) clamped at c = {c:g} it "
        f"{verb} {answer(inter)}."
    )
    v = verdict(q["answer"], base["probs"], base["predicted"], inter["probs"], inter["predicted"])
    return text + f" **{v.sentence()}**"


# ---------------------------------------------------------------- data sources


def source_kind(value: str) -> str:
    """How a data source from /api/info is provided: local file, hub, package, fallback, missing."""
    v = value or ""
    if v.startswith("fallback"):
        return "OFFLINE FALLBACK"
    if v == "unavailable":
        return "unavailable"
    if v.startswith("hub"):
        return "Hugging Face hub (needs internet)"
    if v.startswith("package:"):
        return "packaged data (" + v.split(":", 1)[1] + ")"
    return "real data (local file)"


# ---------------------------------------------------------------- sweep settings and progress


def parse_numbers(text: str, kind=float) -> list:
    """'0.01, 0.001' -> [0.01, 0.001]; raises ValueError naming the bad entry."""
    out = []
    for part in re.split(r"[,\s;]+", text or ""):
        if not part:
            continue
        try:
            v = kind(part)
        except ValueError:
            raise ValueError(f"not a number: {part!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"not a finite number: {part!r}")
        if v not in out:
            out.append(v)
    return out


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "estimating…"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def job_counts(j: dict) -> tuple[int, int]:
    """(configurations done, configurations in all) of a sweep job's summary: its ``total``
    counts the clean baseline too, which is not a configuration."""
    return max(0, j["done"] - 1), max(0, j["total"] - 1)


def job_progress(j: dict, now: float) -> tuple[float, str]:
    """The progress bar's fraction and text for a running sweep job: configurations apart from the
    clean baseline, what the worker is doing when that is not the configurations themselves, and
    the ETA, or, before the first configuration has set a rate, how long it has run."""
    done, total = job_counts(j)
    base = "the clean baseline done" if j["done"] >= 1 else "the clean baseline first"
    shown = j.get("phase") not in (None, "configurations") and not (j["done"] >= 1 and j["phase"] == "baseline")
    phase = f" · now: {j['phase']}" if shown else ""
    if j.get("eta_s") is not None:
        eta = f"ETA {fmt_eta(j['eta_s'])}"
    elif j.get("stage_total") and j.get("stage_eta_s") is not None:
        stage = "this stage" if shown else "these configurations"
        eta = (
            f"step {j['stage_done']} / {j['stage_total']} of {stage}, ETA {fmt_eta(j['stage_eta_s'])}; "
            "the whole run's ETA comes with the first configuration"
        )
    elif j.get("started"):
        eta = f"running {fmt_eta(now - j['started'])}; the ETA comes with the first configuration"
    else:
        eta = "queued"
    rate = f" · {j['rate_per_min']:.1f} configurations/min" if j.get("rate_per_min") else ""
    text = f"{j['status']}: {done} / {total} configurations ({base}){phase} · {eta}{rate}"
    return j["done"] / max(1, j["total"]), text


def token_label(token: str) -> str:
    """A token as a table shows it: ``repr`` (spaces and control characters visible), and for
    characters outside Latin script their Unicode names, so a token whose script the viewer's fonts
    lack reads as words, not as boxes (headless Chromium here draws Malayalam or CJK as boxes)."""
    import unicodedata

    shown = repr(token)
    odd = [ch for ch in token if ord(ch) > 0x24F and not ch.isspace()]
    if not odd:
        return shown
    names = [unicodedata.name(ch, f"U+{ord(ch):04X}") for ch in odd[:2]]
    return f"{shown} ({', '.join(n.lower() for n in names)}{', …' if len(odd) > 2 else ''})"


def plain_demo_plan(t: dict) -> str:
    """What the guided demo does, in plain words (the precise terms sit one click away)."""
    n, iv = t["selection"]["n"], t["intervention"]
    gated = " on prompts about the topic" if iv.get("mode") in GATED else ""
    return (
        f"The demo finds the {n} features of the model's sparse autoencoder that carry this topic most, "
        f"switches them off{gated} (pushes each one to −{iv['c']:g} wherever it is active), then looks for a "
        "quiz question the model knew that it now gets wrong, and a general-knowledge question it still "
        "gets right."
    )


def run_name(j: dict, role: str) -> str:
    """A sweep run as a legend names it: its role and when it was made (the id stays in the picker)."""
    import time

    return f"{role} ({time.strftime('%b %d %H:%M', time.localtime(j['created']))})"
