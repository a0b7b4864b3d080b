"""The defaults' rule over the gate table's rows (static, gated and DSG clamps side by side)."""

from __future__ import annotations

import pytest


def test_the_gate_tables_rows_meet_the_defaults_rule():
    """``gate.rule_rows``: the pooled retain weighs questions, not sets; ``choose`` then keeps the
    rows within the retain floor and the loss budget and takes the lowest forget accuracy."""
    from unlearn_core.evaluation.experiments.gate import rule_rows
    from unlearn_core.evaluation.experiments.target_sweep import choose

    def row(method, n, c, forget, a, b, loss):
        return {"method": method, "n": n, "c": c, "forget": forget, "retain": {"A": a, "B": b}, "loss_added": loss}

    result = {
        "n_known": {"forget": 40, "A": 10, "B": 30},
        "rows": [
            row("clamp", 10, 400, 0.30, 0.80, 1.00, 0.04),  # pooled (8 + 30) / 40 = 0.95: at the floor
            row("clamp", 10, 800, 0.10, 1.00, 1.00, 0.09),  # over the loss budget
            row("dsg", 5, 400, 0.20, 1.00, 0.90, 0.00),  # pooled (10 + 27) / 40 = 0.925: under the floor
            row("gated", 5, 400, 0.25, 1.00, 0.967, 0.00),  # pooled (10 + 29) / 40 = 0.975
        ],
    }
    rows = rule_rows(result, ["A", "B"])
    assert [r["retain_pool@train"] for r in rows] == pytest.approx([0.95, 1.0, 0.925, 0.975], abs=1e-3)
    best = choose(rows)
    assert (best["method"], best["n"], best["c"]) == ("gated", 5, 400)
