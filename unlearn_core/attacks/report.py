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
        f"| {x['defence']} | {_attack(x)} | {x['threat']} | {x['n_facts']} | {_f(x['forget_acc_original'])} | "
        f"{_f(x['forget_acc_attacked'])} | {x['n_forgotten']} | {x['n_recovered']} | **{_f(x['recovery_rate'])}** | "
        f"{_f(x['retain_acc'])} ({x['n_retain']}, {x['retain_form']}) | {x['wall_s']:.0f} |"
        for x in r["rows"]
    ]
    return head + "\n".join(rows) + relearn_curves(r["rows"])


def _attack(x: dict) -> str:
    """The attack cell; a relearn row (threat "weights") says its split and where it was read."""
    if x["threat"] != "weights":
        return x["attack"]
    if x.get("skipped"):
        return f"{x['attack']} (not run: {x['skipped']})"
    split = f"T {x['n_T']} / V {x['n_V']}" if x["n_T"] else f"all {x['n_V']} forgotten"
    return f"{x['attack']} ({split}; lr {x['lr']:g}, step {x['step']})"


def _split_words(rel: list[dict]) -> str:
    """How ``relearn:facts`` split its facts: rows since 2026-12-08 say ``split`` (the known facts,
    the same T/V for every defence); older rows split each defence's own forgotten facts, and a
    page regenerated from their JSON must still say so."""
    facts = [x for x in rel if x["attack"] == "relearn:facts"]
    if facts and all("split" in x for x in facts):
        return (
            "for `relearn:facts` the known facts are split in half by a hash of their id, the same split for "
            "every defence: T is the training text, and V's forgotten facts are scored"
        )
    return (
        "for `relearn:facts` the forgotten ones are V, the held-out half of the facts the defence hid (T, the "
        "other half, is the training text): each defence's own split"
    )


def relearn_curves(rows: list[dict]) -> str:
    """The relearning curves of the relearn rows, one line per (lr, step)."""
    rel = [x for x in rows if x["threat"] == "weights" and x.get("curve")]
    if not rel:
        return ""
    lines = [
        "\n\nRelearn rows (threat `weights`: fine-tuned with the defence on, `attacks.relearn`): facts are "
        f"the known facts not trained on; {_split_words(rel)}; each row is read at the lr and step it names. "
        "Curves (V: the forgotten facts scored; T: the trained ones):",
        "",
        "| defence | attack | lr | step | loss | V acc. | T acc. | retain acc. |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in rel:
        for p in x["curve"]:
            loss = "—" if p["loss"] is None else f"{p['loss']:.3f}"
            lines.append(
                f"| {x['defence']} | {x['attack']} | {p['lr']:g} | {p['step']} | {loss} | {_f(p['v_acc'])} | "
                f"{_f(p['t_acc'])} | {_f(p['retain_acc'])} |"
            )
    return "\n".join(lines)
