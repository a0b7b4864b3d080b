"""The gate of the gated modes, measured outside a forward pass: rho of a prompt, tau calibrated
on a retain corpus, the gate-open rate of a question set, and P(correct) against tau.

Why a module apart from the hook: these read the SAE codes only (the model runs as far as the
SAE's hook), so the explorer can show rho and the batch page an open rate without scoring
anything, and a calibration is computed once per (features, corpus) and cached on disk.
DSG (Muhamed et al., 2025) sets tau to the 95th percentile of rho over retain windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unlearn_core.core import cache as C
from unlearn_core.data.loaders import Question
from unlearn_core.method.interventions import Intervention, counted_positions, gate_fraction, special_ids
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import pad_right

DEFAULT_PERCENTILE = 95.0
CALIBRATION_TOKENS = 20_000  # tokens of the retain corpus cut into windows
# tokens per window: about a question prompt's length. rho over long windows runs lower (more
# tokens dilute the few where a topic's features fire), so a tau taken on 128-token windows sits
# below the rho of ordinary short prompts and the gate opens on most of them (measured on the
# bio-basics train halves, docs/concepts/method.md on the gate).
CALIBRATION_CTX = 32
BATCH = 16


@torch.inference_mode()
def rho_of_tokens(
    engine: Engine, sae_key: str, features: tuple[int, ...], rows: list[list[int]], prompt_len: list[int] | None = None
) -> list[float]:
    """rho of each row of token ids (with their BOS): what the hook measures on a full pass."""
    from unlearn_core.features.stats import encode_tokens

    out: list[float] = []
    ids = special_ids(engine.model.tokenizer)
    pad = ids[0] if ids else 0
    for s in range(0, len(rows), BATCH):
        tokens, _ = pad_right(rows[s : s + BATCH], pad)
        codes = encode_tokens(engine, sae_key, tokens)
        codes[:, 0, :] = 0.0
        counted = counted_positions(tokens.to(codes.device), ids)
        if prompt_len is not None:
            for r, n in enumerate(prompt_len[s : s + BATCH]):
                counted[r, n:] = False
        out += [float(x) for x in gate_fraction(codes[..., list(features)], counted)]
    return out


def question_prompt(engine: Engine, q: Question, scoring: str, style: str) -> list[int]:
    """The token ids the gate decides on for ``q``: the letter prompt, or the cloze question prefix."""
    from unlearn_core.data.prompts import cloze_prefix, format_prompt
    from unlearn_core.model.forward import tokenize

    tok = engine.model.tokenizer
    if scoring == "cloze":
        return [tok.bos_token_id] + tok(cloze_prefix(q), add_special_tokens=False)["input_ids"]
    tokens, lens = tokenize(engine.model, [format_prompt(q, style, tok)])
    return tokens[0, : int(lens[0])].tolist()


def question_rhos(
    engine: Engine, questions: list[Question], iv: Intervention, scoring: str | None = None, style: str | None = None
) -> list[float]:
    scoring, style = scoring or engine.scoring, style or engine.prompt_format
    return rho_of_tokens(
        engine, iv.sae_key, iv.features, [question_prompt(engine, q, scoring, style) for q in questions]
    )


def open_rate(
    engine: Engine, questions: list[Question], iv: Intervention, scoring: str | None = None, style: str | None = None
) -> float | None:
    """The fraction of ``questions`` on which ``iv``'s gate opens (None for no questions)."""
    if not questions:
        return None
    rhos = question_rhos(engine, questions, iv, scoring, style)
    return sum(r > iv.gate for r in rhos) / len(rhos)


def percentile_tau(rhos: list[float], p: float) -> float:
    """tau = the p-th percentile (linear interpolation) of ``rhos``: about (100 - p)% of the
    retain windows would open the gate."""
    if not rhos:
        raise ValueError("no windows to calibrate the gate on")
    if not 0.0 <= p <= 100.0 or not math.isfinite(p):
        raise ValueError(f"gate percentile must be in [0, 100], got {p}")
    return float(np.percentile(np.asarray(rhos, dtype=np.float64), p))


@dataclass
class Calibration:
    tau: float
    percentile: float
    corpus: str
    n_windows: int
    rhos: list[float]  # per retain window
    open_fraction: float  # of those windows with rho > tau

    def to_dict(self, with_rhos: bool = False) -> dict:
        d = {k: getattr(self, k) for k in ("tau", "percentile", "corpus", "n_windows", "open_fraction")}
        return {**d, "rhos": self.rhos} if with_rhos else d


def calibration_path(
    engine: Engine, sae_key: str, features: tuple[int, ...], corpus: str, docs: list[str], n_tokens: int, ctx: int
) -> Path:
    from unlearn_core.features.stats import corpus_digest, sae_fingerprint

    return C.entry_path(
        engine.settings.cache_dir,
        "gate",
        engine.cache_identity(),
        sae_fingerprint(engine.saes[sae_key]),
        sorted(set(features)),
        corpus,
        corpus_digest(docs),
        n_tokens,
        ctx,
    )


def calibrate(
    engine: Engine,
    sae_key: str,
    features: tuple[int, ...],
    corpus: str,
    percentile: float = DEFAULT_PERCENTILE,
    n_tokens: int = CALIBRATION_TOKENS,
    ctx: int = CALIBRATION_CTX,
) -> Calibration:
    """tau from rho over windows of ``corpus``; the rhos are cached per (features, corpus)."""
    from unlearn_core.features.stats import corpus_docs, windows_for

    if not features:
        raise ValueError("a gate needs at least one feature")
    percentile_tau([0.0], percentile)  # the range check, before any work
    docs = corpus_docs(engine, corpus)
    path = calibration_path(engine, sae_key, features, corpus, docs, n_tokens, ctx)
    rhos = C.cached_json(
        path, lambda: rho_of_tokens(engine, sae_key, tuple(features), windows_for(engine, docs, n_tokens, ctx))
    )
    tau = percentile_tau(rhos, percentile)
    return Calibration(tau, percentile, corpus, len(rhos), rhos, sum(r > tau for r in rhos) / len(rhos))


def tau_over(
    engine: Engine, sae_key: str, features: tuple[int, ...], corpora: list[str], percentile: float = DEFAULT_PERCENTILE
) -> dict:
    """tau = the highest, over ``corpora`` (a target's retain corpora), of the ``percentile``-th rho:
    the gate stays shut on about (100 - percentile)% or more of every one of them."""
    cals = [calibrate(engine, sae_key, tuple(features), c, percentile) for c in corpora]
    best = max(cals, key=lambda c: c.tau)
    return {
        "tau": best.tau,
        "percentile": percentile,
        "corpus": best.corpus,
        "per_corpus": {c.corpus: round(c.tau, 4) for c in cals},
    }


def tau_curve(rho: float, clean: float, clamped: float, taus: list[float] | None = None) -> list[dict]:
    """P(correct) against tau for one prompt: the static clamp's where rho > tau, else the
    clean model's (the gate's decision does not depend on c, so two scores give the whole curve)."""
    taus = taus if taus is not None else [i / 100 for i in range(101)]
    return [{"tau": t, "p_correct": clamped if rho > t else clean, "open": rho > t} for t in taus]


DEFAULT_CORPUS = "wikitext@train"  # the retain corpus a percentile is taken on when none is named


def prompt_rho(
    engine: Engine, q: Question, iv: Intervention, scoring: str | None = None, style: str | None = None
) -> float:
    """rho of ``q``'s scored prompt; from the fast path's cached codes when it serves ``iv``
    (a slider step then costs nothing more), else by running the model to the SAE's hook."""
    from unlearn_core.method import fastpath

    scoring, style = scoring or engine.scoring, style or engine.prompt_format
    if fastpath.supports(engine, [iv], scoring):
        pc = fastpath.prompt_cache(engine, q, scoring, style, iv.sae_key)
        return float(fastpath.gate_rho(engine, pc, iv)[0])
    return question_rhos(engine, [q], iv, scoring, style)[0]


def opened(iv: Intervention) -> Intervention:
    """The same intervention with its gate held open (what it does to a prompt above tau)."""
    from dataclasses import replace

    if iv.mode == "gated":
        return replace(iv, mode="clamp", gate=None)
    return replace(iv, gate=0.0) if iv.mode == "dsg" else iv
