"""Features by text: which features fire on a piece of text, ranked by activation or by
specificity against a background corpus (Feature search, and the "search" selection of a target)."""

from __future__ import annotations

import torch

from unlearn_core.features.stats import FeatureStats, encode_tokens, token_strs
from unlearn_core.model.engine import Engine


@torch.inference_mode()
def search_from_codes(
    engine: Engine,
    ids: list[int],
    codes: torch.Tensor,
    k: int = 20,
    background: torch.Tensor | None = None,
    background_max: torch.Tensor | None = None,
    rank: str = "max",
    dense_last: bool = True,
) -> list[dict]:
    """Features that fire on the tokens (BOS excluded).

    ``rank="specificity"`` (needs the background's firing frequency and max activation): ranked by
    ``specificity.scores``, dense features flagged and last unless ``dense_last`` is False.
    ``rank="max"``: by max activation, or with a background frequency by max act x (1 - freq)."""
    from unlearn_core.features import specificity as SP

    if len(ids) < 2:
        raise ValueError("text has no tokens after BOS")
    if rank not in ("max", "specificity"):
        raise ValueError(f"rank must be 'max' or 'specificity', not {rank!r}")
    f = codes[1:].float().cpu()
    mx, arg = f.max(0)
    dense = background > SP.DENSE_FREQ if background is not None else torch.zeros_like(mx, dtype=torch.bool)
    if rank == "specificity":
        if background is None or background_max is None:
            raise ValueError("specificity ranking needs a background corpus (its firing frequency and max activation)")
        score = SP.scores(mx, background, background_max)
        order = SP.order(score, mx > 0, dense, dense_last)[:k]
    else:
        score = mx * (1 - background) if background is not None else mx
        order = [int(i) for i in torch.argsort(score, descending=True)[:k] if mx[i] > 0]
    strs = token_strs(engine, ids[1:])
    return [
        {
            "feature": i,
            "max_act": float(mx[i]),
            "n_tokens_active": int((f[:, i] > 0).sum()),
            "top_token": strs[int(arg[i])],
            "score": float(score[i]),
            "dense": bool(dense[i]) if background is not None else None,
            "background_freq": float(background[i]) if background is not None else None,
        }
        for i in order
    ]


# Neutral sentences a short query is read inside (``context=True``): the query always follows a
# space, so its tokens are the same in each, and no carrier is about any topic. Fixed before
# measuring (bench/text_search_quality.py); not fitted to any query or corpus.
CARRIERS = (
    "This is about {q}.",
    "I read an article about {q} today.",
    "Here is what the report says about {q}:",
    "She asked me what I knew about {q}, and I told her.",
)
CONTEXT_MAX_TOKENS = 16  # a longer text is its own context


def query_in_context(engine: Engine, sae_key: str, query: str) -> tuple[list[int], torch.Tensor] | None:
    """The query's token ids (BOS first) and its codes averaged over ``CARRIERS`` ([1 + n, d_sae],
    row 0 zeros): what the SAE reads in the query's own tokens once the model has a sentence around
    them. None when the query is too long, or a carrier splits it into other tokens."""
    q = " ".join(query.split())
    ids = engine.model.to_tokens(" " + q, prepend_bos=False)[0].tolist()
    if not ids or len(ids) > CONTEXT_MAX_TOKENS:
        return None
    rows = []
    for carrier in CARRIERS:
        toks = engine.model.to_tokens(carrier.format(q=q), prepend_bos=True)
        flat = toks[0].tolist()
        start = next((i for i in range(len(flat) - len(ids) + 1) if flat[i : i + len(ids)] == ids), None)
        if start is None:
            return None
        rows.append(encode_tokens(engine, sae_key, toks)[0, start : start + len(ids)].float().cpu())
    codes = torch.stack(rows).mean(0)
    bos = engine.model.to_tokens("", prepend_bos=True)[0, :1].tolist()
    return bos + ids, torch.cat([torch.zeros_like(codes[:1]), codes])


def search_by_text(engine: Engine, sae_key: str, text: str, context: bool = True, **options) -> list[dict]:
    """``search_from_codes`` on ``text`` (with BOS) encoded by ``sae_key``; ``options`` are its
    keyword arguments (k, background, background_max, rank, dense_last), defaults kept in one place.

    With ``context`` (the default), a short text (a word or a name) is read inside neutral
    sentences (``query_in_context``): alone, "anthrax" is the sub-tokens 'anth' and 'rax', and
    the features that fire hardest on those also fire on "Anthony" and LaTeX."""
    read = query_in_context(engine, sae_key, text) if context else None
    if read is not None:
        return search_from_codes(engine, read[0], read[1], **options)
    toks = engine.model.to_tokens(text, prepend_bos=True)
    return search_from_codes(engine, toks[0].tolist(), encode_tokens(engine, sae_key, toks)[0], **options)


def select_by_search(engine: Engine, sae_key: str, query: str, background: FeatureStats, n: int) -> list[dict]:
    """The ``n`` features most specific to ``query`` against ``background`` (Feature search's
    default ranking), dense ones dropped: what a person finds by typing the concept's name."""
    if n < 1:
        raise ValueError("n must be >= 1")
    found = search_by_text(
        engine,
        sae_key,
        query,
        k=engine.saes[sae_key].d_sae,
        background=background.freq,
        background_max=background.max_act,
        rank="specificity",
        context=False,
    )
    return [r for r in found if not r["dense"]][:n]
