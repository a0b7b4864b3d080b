"""Recovery computed from hand-made per-fact outcomes."""

from __future__ import annotations

import pytest

from unlearn_core.attacks.recovery import FactOutcome, summarize


def fact(i, known_o=True, known_a=True, d_o=False, d_a=False):
    return FactOutcome(f"f{i}", known_o, known_a, d_o, d_a)


def test_recovery_counts_only_facts_known_in_both_forms_and_forgotten():
    facts = [
        fact(1, d_o=False, d_a=True),  # forgotten, recovered
        fact(2, d_o=False, d_a=False),  # forgotten, stays forgotten
        fact(3, d_o=False, d_a=True),  # forgotten, recovered
        fact(4, d_o=True, d_a=True),  # never forgotten: not in the recovery's denominator
        fact(5, known_a=False, d_o=False, d_a=True),  # the probe form is not known: not a unit
        fact(6, known_o=False, d_o=False, d_a=True),  # the original is not known: not a unit
    ]
    s = summarize(facts)
    assert s["n_facts"] == 4 and s["n_known_original"] == 5
    assert (s["n_forgotten"], s["n_recovered"]) == (3, 2)
    assert s["recovery_rate"] == pytest.approx(2 / 3)
    assert s["forget_acc_original"] == pytest.approx(1 / 4)  # only f4 right under the defence
    assert s["forget_acc_attacked"] == pytest.approx(3 / 4)  # f1, f3, f4
    assert [f.to_dict()["recovered"] for f in facts] == [True, False, True, False, False, False]


def test_nothing_forgotten_means_no_recovery_rate():
    s = summarize([fact(1, d_o=True, d_a=True), fact(2, d_o=True, d_a=False)])
    assert s["recovery_rate"] is None and s["n_forgotten"] == 0 and s["forget_acc_attacked"] == 0.5
    assert summarize([])["n_facts"] == 0 and summarize([])["forget_acc_original"] is None
