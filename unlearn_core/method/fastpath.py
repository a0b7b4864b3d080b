"""Fast paths for the clamp slider and curves: recompute only what a clamp change can change.

For one question we cache, once, the clean residual at the SAE hook, the SAE codes there, the
clean keys/values of every later layer and the clean final residual. A clamp value then changes
the residual only by ``sum_i (new_i - old_i) * W_dec[i]`` over the selected features and only
where they fire, so:

* only the blocks after the hook run, and only from the first changed position ``p0`` on,
  attending to the cached clean keys/values of the positions before it;
* cloze scoring shares the question prefix across the four answers (the prefix is run once
  per clamp value, the four answers attend to it);
* logits are computed only where they are read (the last position for letters, the answer
  tokens for cloze);
* all clamp values of a curve go through as one batch.

It serves every mode (clamp/zero/add/reconstruct and the gated ones) at
``hook_resid_post``/``hook_resid_pre`` of one SAE whose decoder is affine; anything else falls
back to the straightforward path (``supports``). A gate's decision does not depend on c: it is
read once per question from the cached codes (rho over the prompt's counted positions, as the
hook measures it), and a shut row's change is zero. Equality with the straightforward path is
tested to 1e-4.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch

from unlearn_core.data.loaders import Question
from unlearn_core.data.prompts import MCQScore, all_orderings, cloze_prefix, format_prompt, letter_token_ids
from unlearn_core.method.interventions import Intervention, counted_positions, gate_fraction, special_ids
from unlearn_core.method.modes import GATED_MODES
from unlearn_core.model.forward import pad_right, target_logprobs, tokenize, unembed

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def downstream_start(hook_name: str) -> int | None:
    m = _HOOK_RE.match(hook_name)
    if not m:
        return None
    layer = int(m.group(1))
    return layer + 1 if m.group(2) == "post" else layer


def supports(engine, interventions: list[Intervention], scoring: str) -> bool:
    if scoring not in ("cloze", "letter") or len(interventions) != 1:
        return False
    iv = interventions[0]
    if iv.sae_key not in engine.saes:
        return False
    loaded = engine.saes[iv.sae_key]
    cfg = loaded.sae.cfg
    affine = (
        getattr(cfg, "normalize_activations", "none") == "none"
        and getattr(cfg, "reshape_activations", "none") == "none"
    )
    return affine and downstream_start(loaded.hook_name) is not None


@dataclass
class PromptCache:
    """Everything about one question's rows that no clamp value can change."""

    tokens: torch.Tensor  # [R, T] right-padded rows (cloze: 4, letter: 1)
    lens: torch.Tensor  # [R]
    shared: int  # leading positions identical in every row (cloze: the prefix, letter: T)
    needed: list[list[int]]  # per row: positions whose logits are read
    targets: list[list[int]]  # cloze: per row, the token predicted at each needed position
    x: torch.Tensor  # [R, T, d] clean residual at the hook
    codes: torch.Tensor  # [R, T, d_sae] SAE codes (BOS zeroed)
    keys: list[torch.Tensor]  # per downstream layer: [R, T, h, dh] clean keys (pre-rotary, as TL caches them)
    values: list[torch.Tensor]
    final: torch.Tensor  # [R, T, d] clean final residual (before ln_final)
    start_layer: int
    questions: list = None  # per row, the question it scores (letter orderings: one per ordering)
    base: list = None  # the clean MCQScores (one per row for letter rows, else one), once computed
    gate_prompt: int | None = None  # cloze: the gate counts the question prefix only (as the hook is told)


_LRU: "OrderedDict[tuple, PromptCache]" = OrderedDict()
_LRU_LOCK = threading.Lock()
LRU_SIZE = 16
STATS = {"hits": 0, "misses": 0}


def _rows(engine, q: Question, scoring: str, style: str):
    model = engine.model
    tok = model.tokenizer
    if scoring == "letter":
        tokens, lens = tokenize(model, [format_prompt(q, style, tok)])
        T = int(lens[0])
        return tokens, lens, T, [[T - 1]], [[]]
    prefix = [tok.bos_token_id] + tok(cloze_prefix(q), add_special_tokens=False)["input_ids"]
    conts = [tok(" " + c.strip(), add_special_tokens=False)["input_ids"] or [tok.eos_token_id] for c in q.choices]
    tokens, lens = pad_right([prefix + c for c in conts], tok.pad_token_id or 0)
    P = len(prefix)
    needed = [[P - 1 + j for j in range(len(c))] for c in conts]
    return tokens, lens, P, needed, [list(c) for c in conts]


@torch.inference_mode()
def prompt_cache(engine, q: Question, scoring: str, style: str, sae_key: str) -> PromptCache:
    loaded = engine.saes[sae_key]
    key = (engine.cache_namespace(), q.id, q.question, q.choices, scoring, style, sae_key, loaded.hook_name)
    with _LRU_LOCK:
        if key in _LRU:
            _LRU.move_to_end(key)
            STATS["hits"] += 1
            return _LRU[key]
        STATS["misses"] += 1
    pc = _build(engine, *_rows(engine, q, scoring, style), sae_key, [q])
    pc.gate_prompt = pc.shared if scoring == "cloze" else None
    with _LRU_LOCK:
        _LRU[key] = pc
        while len(_LRU) > LRU_SIZE:
            _LRU.popitem(last=False)
    return pc


def _letter_ordering_rows(engine, variants: list[Question], style: str):
    """One right-padded letter prompt per ordering; the shared prefix is the stem they all start with."""
    model = engine.model
    tokens, lens = tokenize(model, [format_prompt(v, style, model.tokenizer) for v in variants])
    same = (tokens == tokens[0:1]).all(0)
    limit = int(lens.min())
    P = int(torch.nonzero(~same[:limit]).flatten()[0]) if not bool(same[:limit].all()) else limit
    return tokens, lens, P, [[int(n) - 1] for n in lens], [[] for _ in variants]


@torch.inference_mode()
def _build(engine, tokens, lens, shared, needed, targets, sae_key: str, questions: list) -> PromptCache:
    """The upstream pass of every row (to the end, keeping downstream keys/values) and the SAE codes."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    model = engine.model
    loaded = engine.saes[sae_key]
    tokens = tokens.to(model.cfg.device)
    start = downstream_start(loaded.hook_name)
    kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, tokens.shape[0])
    grabbed = {}
    with model.hooks(fwd_hooks=[(loaded.hook_name, lambda x, hook: grabbed.__setitem__("x", x))]):
        final = model(tokens, past_kv_cache=kv, stop_at_layer=model.cfg.n_layers)
    x = grabbed["x"]
    codes = loaded.sae.encode(x.to(loaded.sae.W_enc.dtype))
    codes[:, 0, :] = 0.0
    return PromptCache(
        tokens,
        lens,
        shared,
        needed,
        targets,
        x,
        codes,
        [kv.entries[i].past_keys for i in range(start, model.cfg.n_layers)],
        [kv.entries[i].past_values for i in range(start, model.cfg.n_layers)],
        final,
        start,
        questions,
    )


def gate_rho(engine, pc: PromptCache, iv: Intervention) -> torch.Tensor:
    """[R] rho of each row, from the cached codes (BOS zeroed, as in the hook)."""
    counted = counted_positions(pc.tokens, special_ids(engine.model.tokenizer), pc.gate_prompt)
    return gate_fraction(pc.codes[..., list(iv.features)], counted)


def gate_open(engine, pc: PromptCache, iv: Intervention) -> torch.Tensor | None:
    """[R] bool: the rows a gated intervention changes (None for an ungated one)."""
    return gate_rho(engine, pc, iv) > iv.gate if iv.mode in GATED_MODES else None


def residual_delta(
    sae, pc: PromptCache, iv: Intervention, values: torch.Tensor, gate: torch.Tensor | None = None
) -> torch.Tensor:
    """[V, R, T, d]: the change of the hook's output for each clamp value (zero at BOS), in the
    SAE's dtype (fp32), as the hook computes it; ``_with_delta`` adds it and rounds to the model's.
    ``gate`` ([R] bool, gated modes): rows left unchanged where it is False."""
    feats = list(iv.features)
    R, T, d = pc.x.shape
    V = values.shape[0]
    W = sae.W_dec
    values = values.to(W.dtype)
    scales = None if iv.scales is None else torch.tensor(iv.scales, dtype=W.dtype, device=W.device)  # [F]
    if iv.mode == "add":
        if scales is None:
            delta = -(values[:, None] * 1.0) @ W[feats].sum(0, keepdim=True)  # [V, d]
        else:
            delta = -(values[:, None] * scales[None, :]) @ W[feats]  # sum_i -c * scale_i * W_dec[i]
        out = delta[:, None, None, :].expand(V, R, T, d).clone()
    else:
        f = pc.codes[..., feats]  # [R, T, F]
        active = ((f > 0).any(-1, keepdim=True).expand_as(f) if iv.mode == "dsg" else f > 0).to(f.dtype)
        if gate is not None:
            active = active * gate.to(f.device, f.dtype)[:, None, None]
        target = torch.zeros_like(values) if iv.mode == "zero" else -values  # [V]
        target = target[:, None] if scales is None else target[:, None] * scales[None, :]  # [V, 1 or F]
        # per value: sum_i active_i * (target_i - f_i) * W_dec[i]
        coef = active[None] * (target[:, None, None, :] - f[None])  # [V, R, T, F]
        out = coef @ W[feats]  # [V, R, T, d]
        if iv.mode == "reconstruct":
            recon = sae.decode(pc.codes)
            out = out + (recon - pc.x)[None]
    out[:, :, 0, :] = 0.0
    return out


def _with_delta(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The hook's output: x + delta summed in delta's dtype (fp32), rounded once to x's (bf16 on a
    GPU), as ``interventions.apply_to_resid`` does; a bf16 model must not get an fp32 residual."""
    return (x.to(delta.dtype) + delta).to(x.dtype)


def first_changed(pc: PromptCache, iv: Intervention, gate: torch.Tensor | None = None) -> int:
    """First position any row's hook output can change at (T if none; ``gate`` as for
    ``residual_delta``)."""
    T = pc.tokens.shape[1]
    if iv.mode in ("add", "reconstruct"):
        return 1
    if gate is not None and not bool(gate.any()):
        return T
    act = (pc.codes[..., list(iv.features)] > 0).any(-1)  # [R, T]
    act = (act[gate.to(act.device)] if gate is not None else act).any(0)  # [T]
    act[0] = False
    idx = torch.nonzero(act).flatten()
    return int(idx[0]) if idx.numel() else T


def _run_blocks(
    model, resid: torch.Tensor, start: int, past_k: list, past_v: list, last_only: bool = False
) -> tuple[torch.Tensor, list, list]:
    """Blocks start.. on ``resid`` (positions after the cached ones); returns the final residual and
    new K/V. With ``last_only`` the final block runs its queries and MLP at the last position only
    (nothing after it reads the others) and the result is [B, 1, d]."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    from unlearn_core.model.fast_blocks import block_last, block_supported

    new_k, new_v = [], []
    blocks = model.blocks[start:]
    for j, block in enumerate(blocks):
        entry = TransformerLensKeyValueCacheEntry(past_k[j], past_v[j])
        if last_only and j == len(blocks) - 1 and block_supported(block):
            resid = block_last(block, resid, 1, entry)
        else:
            resid = block(resid, past_kv_cache_entry=entry)
        new_k.append(entry.past_keys)
        new_v.append(entry.past_values)
    return (resid[:, -1:] if last_only else resid), new_k, new_v


@torch.inference_mode()
def downstream_final(engine, pc: PromptCache, delta: torch.Tensor, p0: int, last_only: bool = False) -> torch.Tensor:
    """[V, R, T, d] final residuals under each delta (positions < p0 are the clean ones).

    ``last_only`` (one unpadded row, as letter scoring has) computes only the last position:
    the result is then [V, 1, 1, d]."""
    model = engine.model
    V = delta.shape[0]
    R, T, d = pc.x.shape
    P = pc.shared
    if last_only:
        if R != 1 or int(pc.lens[0]) != T:
            raise ValueError("last_only needs one unpadded row")
        if p0 >= T:
            return pc.final[None, :, -1:].expand(V, 1, 1, d).clone()
        seg = _with_delta(pc.x[0, p0:][None], delta[:, 0, p0:])
        ks = [k[0:1, :p0].expand(V, -1, -1, -1) for k in pc.keys]
        vs = [v[0:1, :p0].expand(V, -1, -1, -1) for v in pc.values]
        fin, _, _ = _run_blocks(model, seg, pc.start_layer, ks, vs, last_only=True)
        return fin[:, None]
    out = pc.final[None].expand(V, R, T, d).clone()
    if p0 >= T:
        return out
    if p0 < P:
        # shared segment [p0, P): identical in every row, so run it once per value (row 0)
        seg = _with_delta(pc.x[0, p0:P][None], delta[:, 0, p0:P])  # [V, P-p0, d]
        ks = [k[0:1, :p0].expand(V, -1, -1, -1) for k in pc.keys]
        vs = [v[0:1, :p0].expand(V, -1, -1, -1) for v in pc.values]
        fin, ks, vs = _run_blocks(model, seg, pc.start_layer, ks, vs)
        out[:, :, p0:P] = fin[:, None]
        if T > P:  # then every row's own tokens [P, T), attending to the new shared segment
            seg = _with_delta(pc.x[None, :, P:], delta[:, :, P:]).reshape(V * R, T - P, d)
            ks = [k.repeat_interleave(R, 0) for k in ks]
            vs = [v.repeat_interleave(R, 0) for v in vs]
            fin, _, _ = _run_blocks(model, seg, pc.start_layer, ks, vs)
            out[:, :, P:] = fin.view(V, R, T - P, d)
    else:
        seg = _with_delta(pc.x[None, :, p0:], delta[:, :, p0:]).reshape(V * R, T - p0, d)
        ks = [k[:, :p0].repeat(V, 1, 1, 1) for k in pc.keys]
        vs = [v[:, :p0].repeat(V, 1, 1, 1) for v in pc.values]
        fin, _, _ = _run_blocks(model, seg, pc.start_layer, ks, vs)
        out[:, :, p0:] = fin.view(V, R, T - p0, d)
    return out


def _scores_from_final(engine, pc: PromptCache, final: torch.Tensor, scoring: str) -> list:
    """Scores for each of the V leading entries of ``final`` (letters: V x R, value-major)."""
    model = engine.model
    if scoring == "letter":  # final is [V, 1, 1, d] (last_only) or [V, R, T, d]: each row's last token is read
        R = final.shape[1]
        h = final[:, :, 0] if final.shape[2] == 1 else torch.stack([final[:, r, pc.needed[r][0]] for r in range(R)], 1)
        logp = torch.log_softmax(unembed(model, h).float(), -1)  # [V, R, vocab]
        variants = letter_token_ids(model.tokenizer)
        probs = torch.stack([logp[..., ids].exp().max(-1).values for ids in variants], -1).cpu()  # [V, R, 4]
        return [MCQScore.letter(p, p.sum(), q.answer) for pv in probs for p, q in zip(pv, pc.questions)]
    q = pc.questions[0]
    # every row's answer positions through the unembedding together (each pass reads all of W_U)
    V = final.shape[0]
    rows = torch.cat([final[:, r, pc.needed[r]] for r in range(final.shape[1])], 1)  # [V, sum n_r, d]
    tgt = torch.tensor([t for r in pc.targets for t in r])
    tok_lp = target_logprobs(model, rows.reshape(-1, rows.shape[-1]), tgt.repeat(V)).view(V, -1)  # [V, sum n_r]
    ll = torch.stack([part.mean(-1) for part in tok_lp.split([len(n) for n in pc.needed], -1)], -1).cpu()
    return [MCQScore.cloze(row, q.answer) for row in ll]


@torch.inference_mode()
def score_curve(
    engine,
    q: Question,
    interventions: list[Intervention],
    values: list[float],
    scoring: str,
    style: str,
    chunk: int = 8,
) -> list:
    """Scores for each clamp value, in chunks of ``chunk`` values per batch."""
    iv = interventions[0]
    pc = prompt_cache(engine, q, scoring, style, iv.sae_key)
    sae = engine.saes[iv.sae_key].sae
    gate = gate_open(engine, pc, iv)
    p0 = first_changed(pc, iv, gate)
    if p0 >= pc.tokens.shape[1]:  # no selected feature fires on this question (or the gate is shut)
        return [base_score(engine, q, scoring, style, iv.sae_key)] * len(values)
    out = []
    for s in range(0, len(values), chunk):
        # clamp values in the SAE's dtype: bf16 would round c (401 -> 400) where the hook does not
        vals = torch.tensor([float(v) for v in values[s : s + chunk]], dtype=pc.codes.dtype, device=pc.x.device)
        delta = residual_delta(sae, pc, iv, vals, gate)
        final = downstream_final(engine, pc, delta, p0, last_only=scoring == "letter")
        out += _scores_from_final(engine, pc, final, scoring)
    return out


@torch.inference_mode()
def base_score(engine, q: Question, scoring: str, style: str, sae_key: str):
    """The clean scores from the cached final residual (no recomputation)."""
    return _base(engine, prompt_cache(engine, q, scoring, style, sae_key), scoring)[0]


def _base(engine, pc: PromptCache, scoring: str) -> list:
    """The clean scores of every row of ``pc``, computed once."""
    if pc.base is None:
        pc.base = _scores_from_final(engine, pc, pc.final[None], scoring)
    return [replace(s) for s in pc.base]


def supports_configs(engine, configs: list[Intervention], scoring: str) -> bool:
    """Several single-intervention configurations on the same SAE can share one prompt cache."""
    return (
        bool(configs)
        and len({c.sae_key for c in configs}) == 1
        and all(supports(engine, [c], scoring) for c in configs)
    )


@torch.inference_mode()
def score_configs(engine, q: Question, configs: list[Intervention], scoring: str, style: str, chunk: int = 8) -> list:
    """One score per configuration (features, value, mode may all differ), sharing the upstream
    pass, and batching configurations downstream from the earliest changed position."""
    pc = prompt_cache(engine, q, scoring, style, configs[0].sae_key)
    return [rows[0] for rows in _score_configs(engine, pc, configs, scoring, chunk)]


@torch.inference_mode()
def score_orderings(
    engine, q: Question, configs: list[Intervention], style: str, chunk: int = 4
) -> tuple[list, list[list]]:
    """Letter scores of all 24 orderings of ``q``: (clean scores, one list per configuration).

    The orderings are the rows of one cache: the upstream pass runs once for all of them, and
    per configuration the stem they share (the question, ~45% of a WMDP prompt) runs once
    before each ordering's own tokens. Not kept in the LRU: 24 rows of SAE codes are large."""
    variants = all_orderings(q)
    sae_key = configs[0].sae_key if configs else next(iter(engine.saes))
    pc = _build(engine, *_letter_ordering_rows(engine, variants, style), sae_key, variants)
    return _base(engine, pc, "letter"), _score_configs(engine, pc, configs, "letter", chunk) if configs else []


@torch.inference_mode()
def _score_configs(engine, pc: PromptCache, configs: list[Intervention], scoring: str, chunk: int) -> list[list]:
    """Per configuration, the scores of every row (letters) or the one score (cloze)."""
    sae = engine.saes[configs[0].sae_key].sae
    T = pc.tokens.shape[1]
    per = 1 if scoring == "cloze" else pc.tokens.shape[0]
    out: list = [None] * len(configs)
    # configurations whose features never fire on this question (or whose gate is shut) score as the clean model
    gates = [gate_open(engine, pc, iv) for iv in configs]
    starts = [first_changed(pc, iv, g) for iv, g in zip(configs, gates)]
    live = [i for i in range(len(configs)) if starts[i] < T]
    for i in set(range(len(configs))) - set(live):
        out[i] = _base(engine, pc, scoring)
    last_only = scoring == "letter" and pc.tokens.shape[0] == 1
    for s in range(0, len(live), chunk):
        idx = live[s : s + chunk]
        deltas = [
            residual_delta(
                sae,
                pc,
                configs[i],
                torch.tensor([configs[i].value], dtype=pc.codes.dtype, device=pc.x.device),
                gates[i],
            )
            for i in idx
        ]
        p0 = min(starts[i] for i in idx)
        scores = _scores_from_final(engine, pc, downstream_final(engine, pc, torch.cat(deltas), p0, last_only), scoring)
        for j, i in enumerate(idx):
            out[i] = scores[j * per : (j + 1) * per]
    return out
