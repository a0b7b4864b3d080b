"""The bench's result as a markdown table (CLI text, docs)."""

from __future__ import annotations


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def markdown(r: dict) -> str:
    head = (
        f"target `{r['target']}`, {r['part']} part: {r['n_known_forget']} known forget questions, "
        f"{r['n_known_retain']} known retain questions (`{r.get('retain_set', '')}`); probes `{r['probes']}`; "
        f"{r['wall_s']:.0f} s in all\n\n"
        "Recovery: of the facts known in both forms that the defence made the model get wrong in the "
        "original wording, the share it answers right again under the attack.\n\n"
        "| defence | attack | threat | facts | forget acc. (original) | forget acc. (attacked) | forgotten | "
        "recovered | recovery | retain acc. (n) | s |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = [
        f"| {x['defence']} | {x['attack']} | {x['threat']} | {x['n_facts']} | {_f(x['forget_acc_original'])} | "
        f"{_f(x['forget_acc_attacked'])} | {x['n_forgotten']} | {x['n_recovered']} | **{_f(x['recovery_rate'])}** | "
        f"{_f(x['retain_acc'])} ({x['n_retain']}, {x['retain_form']}) | {x['wall_s']:.0f} |"
        for x in r["rows"]
    ]
    return head + "\n".join(rows)
