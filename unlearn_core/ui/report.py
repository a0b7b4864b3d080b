"""The guided demo as one self-contained HTML file: what was done, what it did, in a page that opens
offline and shows the same numbers and verdicts as Home.

Why plain HTML and CSS bars (no Plotly, no fonts, no images): the file is sent to people who were
not at the demo; it must open anywhere, with no network request, and stay small. Every text from
the server (questions, descriptions) is escaped.
"""

from __future__ import annotations

import html
import time

from unlearn_core.evaluation.verdicts import verdict_of

LETTERS = "ABCD"
STYLE = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;max-width:860px;margin:2em auto;padding:0 1em}
body{color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}.verdict{font-weight:600;margin:.5em 0}
table{border-collapse:collapse;width:100%;margin:.5em 0}td,th{padding:3px 6px;text-align:left;vertical-align:middle}
.bar{height:12px;display:block;min-width:1px}.barcell{width:24%}.clean{background:#9aa5b1}.clamped{background:#d62728}
.ok{color:#1a7f37}.num{font-variant-numeric:tabular-nums;width:4.5em}.feat td{border-top:1px solid #eee}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _bars(ex: dict) -> str:
    """One row per answer: its text and a clean and a clamped bar with their probabilities."""
    q, base, inter = ex["question"], ex["base"]["probs"], ex["intervened"]["probs"]
    rows = []
    for i, choice in enumerate(q["choices"]):
        right = ' <span class="ok">✓ right answer</span>' if i == q["answer"] else ""
        cells = "".join(
            f'<td class="num">{p[i]:.3f}</td><td class="barcell">'
            f'<span class="bar {cls}" style="width:{100 * p[i]:.1f}%"></span></td>'
            for p, cls in ((base, "clean"), (inter, "clamped"))
        )
        rows.append(f"<tr><td>{LETTERS[i]}. {_e(choice)}{right}</td>{cells}</tr>")
    head = "<tr><th>answer</th><th>clean</th><th></th><th>clamped</th><th></th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _example(title: str, ex: dict | None, missing: str) -> str:
    if ex is None:
        return f"<h2>{_e(title)}</h2><p>{_e(missing)}</p>"
    v = verdict_of(ex)
    return (
        f"<h2>{_e(title)}</h2><p><b>{_e(ex['question']['question'])}</b></p>{_bars(ex)}"
        f'<p class="verdict">{_e(v.sentence())}</p>'
    )


def _generation(g: dict | None) -> str:
    if not g:
        return "<h2>In free text</h2><p>No forget question among the first few is answered in free text.</p>"
    said = (
        f"The clamped text is {g['degenerate']}: broken output, not evidence of forgetting."
        if g["degenerate"]
        else f"The clamped model {g['verdict']}."
    )
    return (
        f"<h2>In free text</h2><p>Asked openly: <code>{_e(g['prompt'].splitlines()[0])}</code> "
        f"(keyword: <b>{_e(g['keyword'])}</b>)</p><table><tr><th>clean</th><th>clamped</th></tr>"
        f"<tr><td>{_e(g['clean'].strip())}</td><td>{_e(g['clamped'].strip())}</td></tr></table>"
        f'<p class="verdict">{_e(said)}</p>'
    )


def _retain_title(ex: dict | None) -> str:
    if ex is not None and verdict_of(ex).kind != "kept":
        return "Weakened: a general-knowledge question that stays right, but less sure"
    return "Kept: a general-knowledge question that stays right"


def report_html(res: dict, target: dict, info: dict, descriptions: dict[int, str] | None = None) -> str:
    """The demo result ``res`` (``/api/demo``) on ``target`` as a standalone page; ``descriptions``:
    feature id -> automatic description, where there are some."""
    iv = res["intervention"]
    gate = (
        f", only on prompts where they fire on more than τ = {iv['gate']:.3f} of the tokens" if iv.get("gate") else ""
    )
    feats = "".join(f"<tr><td>{f}</td><td>{_e((descriptions or {}).get(f) or '—')}</td></tr>" for f in iv["features"])
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    forget, retain = res.get("forget_example"), res.get("retain_example")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unlearning demo: {_e(target["name"])}</title>
<style>{STYLE}</style></head><body>
<h1>Unlearning demo: {_e(target["name"])}</h1>
<p class="meta">SAE Unlearning Workbench · {_e(when)} · model {_e(info.get("model"))} · SAE {_e(iv["sae"])}</p>
<p>{_e(target.get("description", ""))}</p>
<p class="verdict">{_e(res["summary"])}</p>
<h2>What was done</h2>
<p>{len(iv["features"])} features of the sparse autoencoder were set to −c = −{iv["c"]:g} wherever they were active
({_e(iv["mode"])}{_e(gate)}); everything the autoencoder does not explain was kept.
Verdicts: "kept" means still right with P(correct) at most 0.10 lower than clean.</p>
{_example("Forgotten: a question the model knew", forget, "No checked forget question flipped.")}
{_example(_retain_title(retain), retain, "No checked retain question stayed right.")}
{_generation(res.get("generation"))}
<h2>The features</h2>
<table class="feat"><tr><th>feature</th><th>automatic description</th></tr>{feats}</table>
<p class="meta">{res["n_checked_forget"]} forget and {res["n_checked_retain"]} retain question(s) checked;
features selected on {_e(res.get("forget_corpus", ""))}.</p>
</body></html>
"""
