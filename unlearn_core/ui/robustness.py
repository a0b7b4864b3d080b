"""The Robustness page's pure parts: an attack run's result (``GET /api/attacks/{id}/result``) as
a defences x attacks grid, its heat map, the fact table of one cell and a relearning curve.

JSON in, rows or ``go.Figure`` out; no Streamlit, no torch (the Streamlit glue is
:mod:`.robustness_view`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# recovery: 0 (the defence holds: green) to 1 (everything it hid comes back: red)
RECOVERY_SCALE = [[0.0, "#1a9850"], [0.5, "#fee08b"], [1.0, "#d73027"]]
RETAIN_SCALE = [[0.0, "#d73027"], [0.5, "#fee08b"], [1.0, "#1a9850"]]  # retain: 1 is good
NO_RECOVERY = "—"
NO_RATE = "#d9d9d9"  # a cell without a rate: the defence forgot none of its facts


@dataclass
class Grid:
    defences: list[str]  # rows of the map, in the run's order
    attacks: list[str]  # columns ("few_shot:8", "relearn:facts", ...)
    cells: dict[tuple[str, str], dict]  # (defence, attack) -> the result's row


def grid(result: dict) -> Grid:
    rows = result.get("rows") or []
    defences = list(dict.fromkeys(r["defence"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    return Grid(defences, attacks, {(r["defence"], r["attack"]): r for r in rows})


def cell_text(row: dict | None) -> str:
    """'recovered/forgotten', or '—' when the defence made the model forget none of the facts."""
    if row is None:
        return ""
    return NO_RECOVERY if not row.get("n_forgotten") else f"{row['n_recovered']}/{row['n_forgotten']}"


def _acc(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def cell_hover(row: dict) -> str:
    rate = row.get("recovery_rate")
    lines = [
        f"<b>{row['defence']} × {row['attack']}</b> ({row.get('threat', '?')})",
        f"recovery {NO_RECOVERY if rate is None else f'{rate:.2f}'}: "
        f"{row.get('n_recovered', 0)} of {row.get('n_forgotten', 0)} forgotten facts back",
        f"{row.get('n_facts', 0)} facts known in both forms",
        f"forget acc. {_acc(row.get('forget_acc_original'))} (original) → {_acc(row.get('forget_acc_attacked'))} "
        "(attacked)",
        f"retain acc. {_acc(row.get('retain_acc'))} (n={row.get('n_retain', 0)}, {row.get('retain_form', '')})",
    ]
    return "<br>".join(lines)


def retain_column(result: dict, g: Grid) -> list[tuple[float | None, int, str]]:
    """Per defence: its retain accuracy in the retain questions' own wording (every such row has
    the same), else under the first attack that has one; (accuracy, n, form)."""
    out = []
    for d in g.defences:
        rows = [g.cells[(d, a)] for a in g.attacks if (d, a) in g.cells]
        plain = [r for r in rows if r.get("retain_form") == "original wording"] or rows
        r = next((x for x in plain if x.get("retain_acc") is not None), plain[0] if plain else {})
        out.append((r.get("retain_acc"), int(r.get("n_retain") or 0), r.get("retain_form") or ""))
    return out


def heat_map(result: dict) -> go.Figure:
    """Recovery per defence x attack ('k/n' in each cell, '—' where nothing was forgotten) and the
    retain accuracy beside it. A transparent marker on each cell carries (defence, attack) for a click."""
    g = grid(result)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.84, 0.16], shared_yaxes=True, horizontal_spacing=0.02)
    for trace in (_cell_floor(g), _recovery_cells(g), _cell_labels(g)):
        fig.add_trace(trace, row=1, col=1)
    fig.add_trace(_retain_cells(result, g), row=1, col=2)
    fig.update_yaxes(autorange="reversed", type="category", row=1, col=1)
    fig.update_xaxes(type="category", side="top", row=1, col=1)
    fig.update_xaxes(type="category", side="top", row=1, col=2)
    height = 190 + 64 * max(1, len(g.defences))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=70), clickmode="event+select", dragmode=False)
    return fig


def _cell_floor(g: Grid) -> go.Heatmap:
    """Grey under every cell: one with no rate ("—") still reads as a cell."""
    present = [[0 if (d, a) in g.cells else None for a in g.attacks] for d in g.defences]
    return go.Heatmap(
        z=present,
        x=g.attacks,
        y=g.defences,
        colorscale=[[0, NO_RATE], [1, NO_RATE]],
        showscale=False,
        hoverinfo="skip",
        xgap=3,
        ygap=3,
    )


def _recovery_cells(g: Grid) -> go.Heatmap:
    z = [[(g.cells.get((d, a)) or {}).get("recovery_rate") for a in g.attacks] for d in g.defences]
    return go.Heatmap(
        z=z,
        x=g.attacks,
        y=g.defences,
        zmin=0,
        zmax=1,
        colorscale=RECOVERY_SCALE,
        hoverinfo="skip",
        xgap=3,
        ygap=3,
        colorbar=dict(
            title=dict(text="recovery: 0 all stay forgotten · 1 all come back", side="top"),
            orientation="h",
            x=0.0,
            xanchor="left",
            y=-0.04,
            yanchor="top",
            len=0.6,
            thickness=10,
        ),
    )


def _cell_labels(g: Grid) -> go.Scatter:
    """'k/n' on each cell, and the transparent marker a click selects."""
    pts = [(d, a) for d in g.defences for a in g.attacks if (d, a) in g.cells]
    return go.Scatter(
        x=[a for _, a in pts],
        y=[d for d, _ in pts],
        mode="markers+text",
        text=[cell_text(g.cells[p]) for p in pts],
        textfont=dict(size=15, color="#111"),
        marker=dict(size=46, symbol="square", opacity=0.0, color="#000"),
        # a click selects a cell: keep every cell's label as it was (plotly fades the others)
        selected=dict(marker=dict(opacity=0.0), textfont=dict(color="#111")),
        unselected=dict(marker=dict(opacity=0.0), textfont=dict(color="#111")),
        customdata=[[d, a] for d, a in pts],
        hovertext=[cell_hover(g.cells[p]) for p in pts],
        hovertemplate="%{hovertext}<extra></extra>",
        showlegend=False,
        name="cells",
    )


def _retain_cells(result: dict, g: Grid) -> go.Heatmap:
    retain = retain_column(result, g)
    return go.Heatmap(
        z=[[r[0]] for r in retain],
        x=["retain acc."],
        y=g.defences,
        zmin=0,
        zmax=1,
        colorscale=RETAIN_SCALE,
        showscale=False,
        xgap=3,
        ygap=3,
        text=[[f"{_acc(r[0])}<br>n={r[1]}"] for r in retain],
        texttemplate="%{text}",
        textfont=dict(size=13, color="#111"),
        hovertext=[[f"retain accuracy {_acc(r[0])} on {r[1]} known questions ({r[2]})"] for r in retain],
        hovertemplate="%{hovertext}<extra></extra>",
    )


def picked_cell(event) -> tuple[str, str] | None:
    """(defence, attack) of a click on the heat map (Streamlit's selection event), or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for p in points or []:
        data = p.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2:
            return str(data[0]), str(data[1])
    return None


def fact_rows(row: dict) -> list[dict]:
    """The cell's facts as table rows: recovered first, then the rest of the forgotten, then the others."""
    facts = list(row.get("facts") or [])
    facts.sort(key=lambda f: (not f.get("recovered"), not f.get("forgotten")))
    return [
        {
            "fact": f.get("source_id"),
            "P clean": f.get("p_clean"),
            "P defended": f.get("p_defended"),
            "P attacked": f.get("p_attacked"),
            "forgotten": bool(f.get("forgotten")),
            "recovered": bool(f.get("recovered")),
            "original question": f.get("original"),
            "attacked form": f.get("attacked"),
            "known in both forms": bool(f.get("known_original") and f.get("known_attacked")),
        }
        for f in facts
    ]


def curve_figure(row: dict) -> go.Figure | None:
    """A relearning row's accuracy on V (the held-back forgotten facts) against training steps, one
    line per learning rate (None when the row has no curve)."""
    curve = [p for p in row.get("curve") or [] if p.get("v_acc") is not None]
    if not curve:
        return None
    fig = go.Figure()
    for lr in sorted({p["lr"] for p in curve}):
        pts = sorted((p for p in curve if p["lr"] == lr), key=lambda p: p["step"])
        fig.add_trace(
            go.Scatter(
                x=[p["step"] for p in pts],
                y=[p["v_acc"] for p in pts],
                mode="lines+markers",
                name=f"lr {lr:g}" + (" (reported)" if lr == row.get("lr") else ""),
                customdata=[[p.get("t_acc"), p.get("retain_acc")] for p in pts],
                hovertemplate="step %{x}: V acc. %{y:.2f}, T acc. %{customdata[0]:.2f}, "
                "retain acc. %{customdata[1]:.2f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="fine-tuning steps")
    fig.update_yaxes(title_text="accuracy on V (facts it never trained on)", range=[-0.03, 1.05])
    fig.update_layout(
        title="Relearning: do the held-back facts come back?",
        height=340,
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0),
    )
    return fig


def run_label(run: dict) -> str:
    """What never changes about a run (the select box's option labels are not redrawn)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["created"]))
    what = f"{', '.join(run['defences'])} × {len(run['attacks'])} attack(s)"
    return f"{run['target']} · {what} · {when} · {run['id'][-8:]}"


def progress(run: dict) -> tuple[float, str]:
    """(fraction, text) of a queued or running run: rows done, the row now, the ETA."""
    from unlearn_core.ui.render import fmt_eta

    done, total = run["done"], max(1, run["total"])
    if run["status"] == "queued":
        return done / total, f"queued: {done} of {total} rows done; it starts when the server's bench worker is free"
    if run.get("phase") != "rows":
        what = {"defences": "preparing the defences", "known questions": "finding the facts the model knows"}
        return done / total, f"running: {what.get(run.get('phase'), 'starting')}… ({done} of {total} rows done)"
    eta = fmt_eta(run.get("eta_s")) if run.get("eta_s") is not None else "once the first row is in"
    now = f" · now: {run['current']}" if run.get("current") else ""
    return done / total, f"running: {done} of {total} rows done{now} · ETA {eta}"
