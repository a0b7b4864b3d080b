"""The selection table's columns follow what each row carries: a search row its query token and
specificity, a question-based row (attribution, fisher) its score, even when the server sends
``top_token: null`` for it (it did, and the Feature search table showed a column of "None")."""

from __future__ import annotations

from unlearn_core.ui.selection_view import selection_table

BASE = {"forget_freq": 0.1, "retain_freq": 0.01, "ratio": 10.0, "retain_freqs": {"wikitext@train": 0.01}}


def test_a_question_based_row_shows_its_score_not_a_query_token():
    df = selection_table([{"feature": 7, "score": 227.6, "top_token": None, **BASE}], ["wikitext@train"], False)
    assert "score" in df.columns and "query token" not in df.columns and "specificity" not in df.columns
    assert df["score"].tolist() == [227.6]


def test_a_search_row_shows_its_query_token_and_specificity():
    df = selection_table([{"feature": 3, "score": 5.0, "top_token": " Holmes", **BASE}], ["wikitext@train"], False)
    assert df["query token"].tolist() == [" Holmes"] and df["specificity"].tolist() == [5.0]
    assert "score" not in df.columns and df["retain: wikitext@train"].tolist() == [0.01]
