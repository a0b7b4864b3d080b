"""A target's previous default beside its current one, on held-out questions in the quiz's own
wording and reworded by hand (``quiz:bio-paraphrase``, each rewording in its original's half),
the retain quiz and the shipped general-knowledge questions, and loss added on WebText.

    python bench/defaults_compare.py [--target bio-basics] [--old method=frequency,threshold=0.01,n=50,c=400]

Forgetting that holds only for the quiz's own wording is not forgetting: the paraphrase row is
the check. Every number is over the clean model's known questions of that set (strict filter).
"""

from __future__ import annotations

import json

from common import load, machine, parser


def _settings(text: str) -> dict:
    out: dict = {}
    for kv in text.split(","):
        k, v = kv.split("=")
        out[k] = v if k in ("method", "mode", "scale") else (int(v) if k == "n" else float(v))
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--target", default="bio-basics")
    p.add_argument("--old", default="method=frequency,threshold=0.01,n=50,c=400")
    p.add_argument("--sets", default="quiz:bio@heldout,quiz:bio-paraphrase@heldout")
    p.add_argument("--retain", default="quiz:retain@heldout!overlaps_bio,quiz:general@heldout")
    p.add_argument("--loss-tokens", type=int, default=20_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    eng, _ = load(args)
    from unlearn_core.evaluation.target_eval import evaluate_target
    from unlearn_core.evaluation.targets import get_target, replace_intervention

    new = get_target(args.target)
    old = replace_intervention(new, **_settings(args.old))
    forget_sets, retain = args.sets.split(","), args.retain.split(",")
    rows = []
    for label, t in (("previous default", old), ("current default", new)):
        for i, f in enumerate(forget_sets):
            r = evaluate_target(eng, t, f, retain, loss_tokens=args.loss_tokens if i == 0 else 0)
            rows.append((label, t, r))
    if args.json:
        print(json.dumps([{"label": label, **r} for label, _, r in rows], indent=2, default=str))
        return
    print(machine())
    print(f"target {args.target}; retain sets: {', '.join(retain)}")
    print("| default | selection | forget set | forget known | forget acc. | " + " | ".join(retain) + " | loss added |")
    print("| --- " * (5 + len(retain) + 1) + "|")
    for label, t, r in rows:
        sel, iv = t.selection, t.intervention
        how = f"{sel.method} N={sel.n} {iv.mode} c={iv.c:g}"
        ret = " | ".join(f"{d['intervened_accuracy']:.3f} ({d['n_known']})" for d in r["retain_sets"])
        la = f"{r['loss_added']:+.4f}" if r["loss_added"] is not None else ""
        f = r["forget"]
        print(
            f"| {label} | {how} | `{f['questions']}` | {f['n_known']} | {f['intervened_accuracy']:.3f} | {ret} | {la} |"
        )


if __name__ == "__main__":
    main()
