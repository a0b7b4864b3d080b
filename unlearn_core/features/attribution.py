"""Feature scores from questions: attribution (activation x gradient) and DSG's Fisher proxy.

Both read one *scored row* per question, the tokens the project scores it on, and sum per
feature over the row's positions; ``feature_scores`` keeps one sum per side (forget, retain),
normalised as each method says, cached on disk. The ranking is ``score_ranking``'s.

* ``attribution``: per question q and feature i, ``a_qi = sum_t f_i(t) * dlogP_q/df_i(t)`` over
  every position t of the row but the first (BOS, which no clamp touches), where f are the SAE
  codes at the SAE's hook, spliced in with the error term kept (``x_hat = decode(f) +
  (x - decode(f)).detach()``: the forward is the clean model's, the gradient flows through the
  codes only), and ``logP_q`` is what the project scores: cloze, the mean log-likelihood of the
  correct choice's tokens after the question prefix (``mcq.cloze_logliks``); letter, the log of
  the correct letter's probability (max over its token variants, ``mcq.letter_probs_batch``).
  ``f * grad`` is the first-order estimate of ``logP(with f_i) - logP(f_i set to 0 at those
  positions)``: a positive value means removing the feature lowers the correct answer's
  log-probability. A side's value is the mean of ``a_qi`` over its questions.
* ``fisher``: a side's value is the mean activation of each feature over every counted token
  (not BOS, EOS or pad) of its questions' rows, pooled over tokens as DSG pools over its corpus
  (their ``dsg_utils/activation_collection.py``, ``get_feature_activation_sparsity``).

Each side also keeps, per feature, the fraction of its questions on whose row the feature fires
somewhere (a counted position, > 0): the ranking keeps features that fire on forget questions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterable

import torch

from unlearn_core.core import cache as C
from unlearn_core.data.prompts import cloze_prefix, format_prompt, letter_token_ids
from unlearn_core.data.questions import Question, questions_digest
from unlearn_core.features.stats import encode_tokens, sae_fingerprint, special_ids
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import final_resid, tokenize, unembed

SCORE_METHODS = ("attribution", "fisher")
SIDES = ("forget", "retain")
CACHE_KIND = "feature_scores"


@dataclass(frozen=True)
class ScoredRow:
    """The tokens a question is scored on (BOS first) and where its answer is read: logP is the
    mean over ``read`` positions of the max over ``targets[j]`` of log p(token | position)."""

    ids: list[int]
    read: list[int]
    targets: list[list[int]]


def scored_row(engine: Engine, q: Question, scoring: str, style: str) -> ScoredRow:
    """Cloze: the question prefix + the correct choice, read at each of the choice's tokens (as
    ``cloze_logliks``). Letter: the prompt, read at its last position for the correct letter's
    variants (as ``letter_probs_batch``)."""
    model = engine.model
    tok = model.tokenizer
    if scoring == "cloze":
        prefix = [tok.bos_token_id] + tok(cloze_prefix(q), add_special_tokens=False)["input_ids"]
        cont = tok(" " + q.correct_text.strip(), add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
        P = len(prefix)
        return ScoredRow(prefix + cont, [P - 1 + j for j in range(len(cont))], [[t] for t in cont])
    if scoring == "letter":
        tokens, lens = tokenize(model, [format_prompt(q, style, tok)])
        n = int(lens[0])
        return ScoredRow(tokens[0, :n].tolist(), [n - 1], [letter_token_ids(tok)[q.answer]])
    raise ValueError(f"scoring must be 'letter' or 'cloze', got {scoring!r}")


def answer_logprob(engine: Engine, resid: torch.Tensor, row: ScoredRow) -> torch.Tensor:
    """logP of the row's correct answer from its final residual [T, d] (full-vocabulary softmax, fp32)."""
    lp = torch.log_softmax(unembed(engine.model, resid[row.read]).float(), -1)
    return torch.stack([lp[j, ids].max() for j, ids in enumerate(row.targets)]).mean()


def codes_and_gradient(
    engine: Engine, sae_key: str, row: ScoredRow, delta: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(codes f [T, d_sae], dlogP/df [T, d_sae], logP) with the SAE spliced in at its hook, error
    term kept. ``delta`` [T, d_sae] is added to the codes first (finite differences in the tests)."""
    loaded = engine.saes[loaded_key(engine, sae_key)]
    sae = loaded.sae
    box: dict[str, torch.Tensor] = {}

    def splice(x: torch.Tensor, hook=None) -> torch.Tensor:
        x32 = x.detach().to(sae.W_enc.dtype)
        f0 = sae.encode(x32).detach()
        f = f0 + delta.to(f0.device, f0.dtype)[None] if delta is not None else f0.clone()
        f.requires_grad_(True)
        box["f"] = f
        return (sae.decode(f) + (x32 - sae.decode(f0))).to(x.dtype)  # the error term of the clean codes

    tokens = torch.tensor([row.ids], dtype=torch.long)
    with torch.inference_mode(False), torch.enable_grad():
        resid = final_resid(engine.model, tokens, [(loaded.hook_name, splice)])
        lp = answer_logprob(engine, resid[0], row)
        (grad,) = torch.autograd.grad(lp, box["f"])
    return box["f"].detach()[0].float().cpu(), grad[0].float().cpu(), float(lp.detach())


def loaded_key(engine: Engine, sae_key: str) -> str:
    if sae_key not in engine.saes:
        raise KeyError(f"unknown SAE {sae_key!r}; loaded: {sorted(engine.saes)}")
    return sae_key


@dataclass
class SideSums:
    """One side's running sums (float64): the per-question values summed, the fires count, and
    (fisher) the counted tokens."""

    value: torch.Tensor
    fires: torch.Tensor
    n_questions: int = 0
    n_tokens: int = 0

    @classmethod
    def zeros(cls, d: int) -> "SideSums":
        return cls(torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64))


def add_question(engine: Engine, sae_key: str, method: str, q: Question, scoring: str, style: str, s: SideSums):
    """Add one question's contribution to ``s`` (one forward, and for attribution one backward)."""
    row = scored_row(engine, q, scoring, style)
    ids = torch.tensor(row.ids)
    counted = ~torch.isin(ids, torch.tensor(special_ids(engine)))
    counted[0] = False
    if method == "attribution":
        f, g, _ = codes_and_gradient(engine, sae_key, row)
        s.value += (f[1:].double() * g[1:].double()).sum(0)  # every position a clamp touches (all but BOS)
    elif method == "fisher":
        f = encode_tokens(engine, sae_key, ids[None])[0].float().cpu()
        s.value += (f * counted[:, None]).sum(0).double()
        s.n_tokens += int(counted.sum())
    else:
        raise ValueError(f"method must be one of {SCORE_METHODS}, got {method!r}")
    s.fires += ((f > 0) & counted[:, None]).any(0).double()
    s.n_questions += 1


def scores_path(
    engine: Engine, sae_key: str, method: str, forget: list[Question], retain: list[Question], scoring: str, style: str
) -> Path:
    """The disk cache entry of ``feature_scores``: keyed by the model, the SAE, the questions' content."""
    return C.entry_path(
        engine.settings.cache_dir,
        CACHE_KIND,
        engine.cache_identity(),
        sae_fingerprint(engine.saes[loaded_key(engine, sae_key)]),
        questions_digest(forget),
        questions_digest(retain),
        method,
        scoring,
        style if scoring == "letter" else None,
        suffix=".safetensors",
    )


def run_in_order(engine: Engine) -> Callable[[Iterable[Callable[[Engine], None]]], None]:
    """The default runner of ``feature_scores``' steps: each in turn (the server passes its
    ``run_steps``, which takes the model lock per few steps)."""

    def run(steps: Iterable[Callable[[Engine], None]]) -> None:
        for step in steps:
            step(engine)

    return run


def compute_scores(
    engine: Engine,
    sae_key: str,
    method: str,
    forget: list[Question],
    retain: list[Question],
    scoring: str,
    style: str,
    progress=None,
    run=None,
) -> dict[str, torch.Tensor]:
    """Per side: ``<side>_value`` (the method's per-feature value), ``<side>_fires`` (fraction of
    its questions whose row the feature fires on) and ``<side>_n`` (its questions). One step per
    question; ``progress(1)`` after each (``len(forget) + len(retain)`` in all)."""
    if method not in SCORE_METHODS:
        raise ValueError(f"method must be one of {SCORE_METHODS}, got {method!r}")
    d = engine.saes[loaded_key(engine, sae_key)].d_sae
    sums = {side: SideSums.zeros(d) for side in SIDES}

    def step(q: Question, side: str) -> Callable[[Engine], None]:
        def one(eng: Engine) -> None:
            add_question(eng, sae_key, method, q, scoring, style, sums[side])
            if progress:
                progress(1)

        return one

    (run or run_in_order(engine))(step(q, side) for side, qs in zip(SIDES, (forget, retain)) for q in qs)
    out = {}
    for side, s in sums.items():
        per = s.n_tokens if method == "fisher" else s.n_questions
        out[f"{side}_value"] = (s.value / max(per, 1)).float()
        out[f"{side}_fires"] = (s.fires / max(s.n_questions, 1)).float()
        out[f"{side}_n"] = torch.tensor([s.n_questions])
    return out


def feature_scores(
    engine: Engine,
    sae_key: str,
    method: str,
    forget: list[Question],
    retain: list[Question],
    scoring: str | None = None,
    style: str | None = None,
    progress=None,
    run=None,
    once: Callable[[Path], ContextManager] | None = None,
) -> dict[str, torch.Tensor]:
    """``compute_scores``, cached on disk (``scores_path``): a second call with the same model,
    SAE and questions reads the entry and runs no forward pass. ``once(path)`` is entered around
    the read-or-compute (the server's per-entry lock)."""
    scoring, style = scoring or engine.scoring, style or engine.prompt_format
    path = scores_path(engine, sae_key, method, forget, retain, scoring, style)
    with once(path) if once else contextlib.nullcontext():
        return C.cached_tensors(
            path, lambda: compute_scores(engine, sae_key, method, forget, retain, scoring, style, progress, run)
        )
