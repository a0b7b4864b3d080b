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
) -> str:
    """'the top N features …' for the search method (specificity to the query against the
    background) or the frequency method (the paper's: frequency on the forget corpus among features
    under the retain threshold)."""
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
