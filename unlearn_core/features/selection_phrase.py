"""How a target's features are selected, in one phrase.

Its own module, free of torch, because both sides say it: the engine's CLI and benches (from a
selection result) and the app (from a target as the server sends it). One function keeps the
two from drifting apart."""

from __future__ import annotations

from typing import Iterable


def selection_phrase(
    method: str,
    n: int,
    *,
    query: str = "",
    background: str = "",
    threshold: float | None = None,
    forget_corpus: str = "",
    retain_corpora: Iterable[str] = (),
    forget_questions: str = "",
    n_questions: tuple[int, int] | None = None,
) -> str:
    """'the top N features …' for the search method (specificity to the query against the
    background), the question-based ones (attribution, DSG's Fisher; ``n_questions``: the known
    forget and retain questions they read, when known) or the frequency method (the paper's:
    frequency on the forget corpus among features under the retain threshold)."""
    if method in ("attribution", "fisher"):
        on = forget_questions or "the train half of the forget questions"  # as the caller words it
        if n_questions:
            on += f" ({n_questions[0]} known forget, {n_questions[1]} known retain questions)"
        what = (
            "attribution to the correct answer (activation x gradient), forget minus retain"
            if method == "attribution"
            else "DSG's Fisher score (squared mean activation, forget/retain ratio in the top 5%)"
        )
        return f"the top {n} features by {what} on {on}"
    if method == "search":
        return (
            f'the top {n} features most specific to "{query}" against `{background}` '
            "(Feature search's ranking, dense features dropped)"
        )
    retain = ", ".join(f"`{c}`" for c in retain_corpora)
    return (
        f"the top {n} features by firing frequency on `{forget_corpus}` among those firing on less "
        f"than {threshold:g} of the tokens of {retain}"
    )
