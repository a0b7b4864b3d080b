"""Plotly figure builders for the app (pure: JSON in, ``go.Figure`` out).

Colours are fixed per answer letter / per corpus so the same thing has the same colour on
every page; backgrounds are left to Streamlit's theme so figures read in light and dark mode.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from unlearn_core.ui.render import LETTERS

LETTER_COLOURS = {"A": "#1f77b4", "B": "#ff7f0e", "C": "#2ca02c", "D": "#d62728"}
CORPUS_COLOURS = ["#636efa", "#ef553b", "#00cc96", "#ab63fa"]
RUN_SYMBOLS = ["circle", "diamond", "square", "triangle-up", "x"]
RUN_COLOURS = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a"]


def _layout(fig: go.Figure, title: str | None = None, height: int = 360) -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        margin=dict(l=10, r=10, t=50 if title else 20, b=10),
        # the legend under the plot: above it, a long title ran into it (issue 35, defect 14)
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
    )
    return fig


def probs_bar(
    base: list[float],
    intervened: list[float] | None,
    answer: int,
    label: str = "intervened",
    title: str = "P(answer letter): base vs intervened",
    choices: list[str] | None = None,
) -> go.Figure:
    """Grouped bars: A-D probability, base vs intervened; the correct letter is marked (with the
    answers' own words under the letters when ``choices`` are given)."""
    x = [f"{L} ✓" if i == answer else L for i, L in enumerate(LETTERS)]
    if choices:
        x = [f"{x[i]}<br>{_short(c, 22)}" for i, c in enumerate(choices)]
    fig = go.Figure()
    fig.add_bar(
        name="base", x=x, y=base, marker_color="#9aa5b1", text=[f"{p:.4f}" for p in base], textposition="outside"
    )
    if intervened is not None:
        fig.add_bar(
            name=label,
            x=x,
            y=intervened,
            marker_color="#d62728",
            text=[f"{p:.4f}" for p in intervened],
            textposition="outside",
        )
    top = max([*base, *(intervened or [])] + [1e-9])
    fig.update_layout(barmode="group", yaxis=dict(title="probability", range=[0, top * 1.25]))
    return _layout(fig, title, 340)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def prob_curve(
    values: list[float],
    probs: list[list[float]],
    answer: int,
    base: list[float] | None = None,
    current: float | None = None,
    loss: dict[float, float] | None = None,
    mode_label: str = "",
) -> go.Figure:
    """Probability of each letter against the clamp value c (the paper's Figure 4), optional loss added."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, L in enumerate(LETTERS):
        name = f"{L} (correct)" if i == answer else L
        fig.add_trace(
            go.Scatter(
                x=values,
                y=[p[i] for p in probs],
                mode="lines+markers",
                name=name,
                line=dict(color=LETTER_COLOURS[L], width=4 if i == answer else 2),
                marker=dict(size=5),
            ),
            secondary_y=False,
        )
        if base is not None:
            fig.add_trace(
                go.Scatter(
                    x=[min(values), max(values)],
                    y=[base[i], base[i]],
                    mode="lines",
                    line=dict(color=LETTER_COLOURS[L], dash="dot", width=1),
                    showlegend=False,
                    hovertemplate=f"base {L}: %{{y:.4f}}<extra></extra>",
                ),
                secondary_y=False,
            )
    if loss:
        xs = sorted(loss)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[loss[v] for v in xs],
                mode="lines+markers",
                name="loss added",
                line=dict(color="#7f7f7f", dash="dash"),
                marker=dict(symbol="square", size=8),
            ),
            secondary_y=True,
        )
        fig.update_yaxes(title_text="loss added (nats/token)", secondary_y=True, showgrid=False, rangemode="tozero")
    if current is not None:
        fig.add_vline(x=current, line=dict(color="#888", dash="dash", width=1))
    fig.update_xaxes(title_text="clamp value c (active features set to −c)")
    fig.update_yaxes(title_text="probability", secondary_y=False)
    title = "Probability of each answer vs c" + (f" — {mode_label}" if mode_label else "")
    return _layout(fig, title, 420)


def activation_hist(bin_edges: list[float], hists: dict[str, list[float]]) -> go.Figure:
    """Histogram of a feature's non-zero activations per corpus (log-spaced bins, log x axis)."""
    fig = go.Figure()
    used = [i for h in hists.values() for i, v in enumerate(h) if v]
    lo, hi = (min(used), max(used)) if used else (0, len(bin_edges) - 2)
    for k, (corpus, h) in enumerate(hists.items()):
        idx = range(lo, hi + 1)
        total = sum(h) or 1.0
        # x at the arithmetic middle and width = the bin's span, so on the log axis each bar covers its bin
        fig.add_bar(
            name=corpus,
            x=[(bin_edges[i] + bin_edges[i + 1]) / 2 for i in idx],
            width=[bin_edges[i + 1] - bin_edges[i] for i in idx],
            y=[h[i] / total for i in idx],
            marker_color=CORPUS_COLOURS[k % len(CORPUS_COLOURS)],
            opacity=0.6,
            customdata=[[bin_edges[i], bin_edges[i + 1], h[i]] for i in idx],
            hovertemplate="%{customdata[0]:.3g}–%{customdata[1]:.3g}: %{customdata[2]:.0f} tokens"
            "<extra>" + corpus + "</extra>",
        )
    fig.update_layout(barmode="overlay", bargap=0.05)
    fig.update_xaxes(type="log", title_text="activation (when > 0)")
    fig.update_yaxes(title_text="share of active tokens")
    return _layout(fig, "Activation histogram", 300)


ACC_RANGE = [-0.03, 1.05]  # accuracies are in [0, 1]; a little room so markers at 0 and 1 show whole


def _n_text(r: dict, side_word: str) -> str:
    """'n=…' of the questions behind a row's forget and side-effect accuracies (when known)."""
    parts = [
        f"forget n={r['forget_n']}" if r.get("forget_n") is not None else "",
        f"{side_word} n={r['side_n']}" if r.get("side_n") is not None else "",
    ]
    return " · ".join(p for p in parts if p)


def _hover(r: dict, label: str, x_name: str, x_key: str, x_fmt: str, side_word: str) -> str:
    lines = [label, f"{x_name}={format(r[x_key], x_fmt)}", f"forget acc={r['forget_accuracy']:.3f}"]
    n = _n_text(r, side_word)
    return "<br>".join(lines + ([n] if n else []))


def _run_points(
    fig: go.Figure,
    rows: list[dict],
    name: str,
    k: int,
    y_key: str,
    x_key: str,
    row: int,
    col: int,
    show_legend: bool,
    x_name: str,
    x_fmt: str,
    side_word: str,
) -> None:
    pts = [r for r in rows if r["config"] != "none" and r.get(x_key) is not None and r.get(y_key) is not None]
    base = next((r for r in rows if r["config"] == "none"), None)
    colour = RUN_COLOURS[k % len(RUN_COLOURS)]
    # the clean model's star first: configuration markers that coincide with it are drawn on top of it,
    # and its label says how many there are
    if base is not None and base.get(x_key) is not None and base.get(y_key) is not None:
        same = sum(1 for r in pts if abs(r[x_key] - base[x_key]) < 1e-9 and abs(r[y_key] - base[y_key]) < 1e-9)
        label = "no intervention" + (f" (and {same} configuration{'s' if same > 1 else ''})" if same else "")
        fig.add_trace(
            go.Scatter(
                x=[base[x_key]],
                y=[base[y_key]],
                mode="markers+text",
                name=f"{name}: no intervention",
                legendgroup=name,
                showlegend=show_legend,
                text=[label],
                # inside the plot: above a star at the top, the label ran into the next plot's title
                textposition=("bottom" if base[y_key] > 0.8 else "top") + (" left" if base[x_key] > 0.6 else " right"),
                cliponaxis=False,
                marker=dict(symbol="star", size=18, color=colour, line=dict(width=1.5, color="#000")),
                hovertext=[_hover(base, "no intervention", x_name, x_key, x_fmt, side_word)],
                hovertemplate="%{hovertext}<extra>" + name + "</extra>",
            ),
            row=row,
            col=col,
        )
    if pts:
        fig.add_trace(
            go.Scatter(
                x=[r[x_key] for r in pts],
                y=[r[y_key] for r in pts],
                mode="markers",
                name=name,
                legendgroup=name,
                showlegend=show_legend,
                cliponaxis=False,
                marker=dict(
                    symbol=RUN_SYMBOLS[k % len(RUN_SYMBOLS)], size=10, color=colour, line=dict(width=1.5, color="#fff")
                ),
                hovertext=[_hover(r, r["config"], x_name, x_key, x_fmt, side_word) for r in pts],
                hovertemplate="%{hovertext}<extra>" + name + "</extra>",
            ),
            row=row,
            col=col,
        )


def span_range(values: list[float], min_pad: float = 0.05) -> list[float] | None:
    """An axis range around ``values`` with a margin, never of zero width (plotly would show v±1
    for a single value); None when there are no values."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    pad = max((hi - lo) * 0.08, min_pad, abs(hi) * 0.05 if hi == lo else 0.0)
    return [lo - pad, hi + pad]


def figure5(
    runs: dict[str, list[dict]], forget_label: str = "forget accuracy", side_label: str = "side-effect accuracy"
) -> go.Figure:
    """The paper's Figure 5 for one or more runs: forget accuracy vs side-effect accuracy, and vs
    loss added; the no-intervention point of each run is a star. ``runs``: name -> flat result rows
    (optional ``forget_n`` / ``side_n``: the questions behind the accuracies, shown on hover).

    Accuracy axes are fixed to [0, 1] (with a small margin), so coinciding points do not stretch
    them to 0-2; the loss-added axis spans the points with a margin, never zero width."""
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=(f"{forget_label} vs {side_label}", f"{forget_label} vs loss added"),
    )
    side_short = side_label.split(" (")[0]
    side_word = side_short.split()[0]
    for k, (name, rows) in enumerate(runs.items()):
        _run_points(fig, rows, name, k, "forget_accuracy", "side_effect_mean", 1, 1, True, side_short, ".3f", side_word)
        _run_points(fig, rows, name, k, "forget_accuracy", "loss_added", 1, 2, False, "loss added", ".4f", side_word)
    fig.update_xaxes(title_text=side_label + " (higher is better)", range=ACC_RANGE, row=1, col=1)
    fig.update_yaxes(title_text=forget_label + " (lower is better)", range=ACC_RANGE, row=1, col=1)
    fig.update_yaxes(range=ACC_RANGE, row=1, col=2)
    loss = [r.get("loss_added") for rows in runs.values() for r in rows if r.get("forget_accuracy") is not None]
    loss_range = span_range(loss)
    fig.update_xaxes(
        title_text="loss added (lower is better)",
        row=1,
        col=2,
        range=loss_range or [0, 1],
        showticklabels=loss_range is not None,
    )
    if loss_range is None:  # an invisible point keeps the (empty) right plot drawn, with a note in it
        fig.add_trace(
            go.Scatter(x=[0.5], y=[0.5], mode="markers", marker=dict(opacity=0), showlegend=False, hoverinfo="skip"),
            row=1,
            col=2,
        )
        fig.add_annotation(
            text="loss added not measured<br>(loss-added tokens = 0)",
            showarrow=False,
            x=0.5,
            y=0.5,
            row=1,
            col=2,
            font=dict(color="#888"),
        )
    _layout(fig, None, 480)
    fig.update_layout(
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0), margin=dict(l=10, r=10, t=40, b=10)
    )
    return fig


def tau_curve(taus: list[float], p_correct: list[float], rho: float, tau: float, answer_letter: str) -> go.Figure:
    """P(correct) against the gate's tau: a step at tau = rho (open to its left, shut to its right);
    the current tau is the dashed line."""
    fig = go.Figure(
        go.Scatter(
            x=taus,
            y=p_correct,
            mode="lines",
            line_shape="hv",
            name=f"P({answer_letter})",
            hovertemplate="τ %{x:.2f}: P(correct) %{y:.3f}<extra></extra>",
        )
    )
    fig.add_vline(x=tau, line_dash="dash", line_color="#888", annotation_text=f"τ = {tau:.3f}")
    fig.add_vline(
        x=rho,
        line_dash="dot",
        line_color="#d62728",
        annotation_text=f"ρ = {rho:.3f}",
        annotation_position="bottom right",
    )
    fig.update_xaxes(title_text="gate τ (the clamp applies where ρ > τ)", range=[0, 1])
    fig.update_yaxes(title_text=f"P(correct answer {answer_letter})", range=[-0.02, 1.02])
    return _layout(fig, None, 300)


def probe_figure(rows: list[dict], title: str = "") -> go.Figure:
    """The gate's robustness probe: forget accuracy (clean, static, gated) and the gate-open rate
    against the filler length, one panel for filler before the question and one after."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("filler before the question", "filler after the question"),
        horizontal_spacing=0.08,
    )
    series = [
        ("clean", "clean accuracy", "#7f7f7f", "dot"),
        ("static", "static clamp accuracy", "#d62728", "solid"),
        ("gated", "gated clamp accuracy", "#1f77b4", "solid"),
        ("gate_open", "gate open (share)", "#2ca02c", "dash"),
    ]
    for col, where in enumerate(("prepend", "append"), start=1):
        part = sorted((r for r in rows if r["where"] == where), key=lambda r: r["filler_tokens"])
        for key, name, colour, dash in series:
            fig.add_trace(
                go.Scatter(
                    x=[r["filler_tokens"] for r in part],
                    y=[r[key] for r in part],
                    name=name,
                    mode="lines+markers",
                    line=dict(color=colour, dash=dash),
                    legendgroup=key,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="filler tokens", row=1, col=col)
        fig.update_yaxes(range=ACC_RANGE, row=1, col=col)
    fig.update_yaxes(title_text="accuracy on the forget questions / gate-open share", row=1, col=1)
    return _layout(fig, title or None, 420)
