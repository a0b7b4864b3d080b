"""Forward-pass primitives shared by scoring, metrics and statistics.

The embedded model's 262k-wide unembedding dominates a full forward on a CPU, so we run the
blocks with ``stop_at_layer=n_layers`` and unembed only the positions that are needed.
"""

from __future__ import annotations

import torch
from transformer_lens.utilities import apply_softcap

from unlearn_core.model.fast_blocks import project


def tokenize(model, texts: list[str], prepend_bos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens [B, T] and lengths [B]. Texts that already start with BOS get no second one."""
    tok = model.tokenizer
    ids = []
    for t in texts:
        has_bos = tok.bos_token is not None and t.startswith(tok.bos_token)
        enc = tok(t, add_special_tokens=False)["input_ids"]
        if prepend_bos and not has_bos and tok.bos_token_id is not None:
            enc = [tok.bos_token_id] + enc
        ids.append(enc)
    return pad_right(ids, pad_id(model))


def pad_id(model) -> int:
    tok = model.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def pad_right(ids: list[list[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(x) for x in ids)
    out = torch.full((len(ids), T), pad, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    lens = torch.tensor([len(x) for x in ids], dtype=torch.long)
    return (out.to(device), lens.to(device)) if device else (out, lens)


def final_resid(model, tokens: torch.Tensor, fwd_hooks=()) -> torch.Tensor:
    """Residual after the last block (before ln_final), with hooks applied.

    Right padding needs no attention mask here: attention is causal, so pads after a row's last
    real token never influence the positions we read.
    """
    tokens = tokens.to(model.cfg.device)
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        return model(tokens, stop_at_layer=model.cfg.n_layers)


def unembed(model, resid: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
    """Logits for the given residuals (any leading shape): ln_final, W_U (optionally a column subset), softcap."""
    x = model.ln_final(resid)
    # W_U directly (TransformerLens's Unembed copies the whole W_U, 262k x 640 for Gemma, on
    # every call), and no pass adding a bias that is all zeros.
    if columns is None:
        logits = project(x, model.W_U, model.b_U)
    else:
        logits = project(x, model.W_U[:, columns], model.b_U, model.b_U[columns])
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


def last_positions(resid: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return resid[torch.arange(resid.shape[0], device=resid.device), lengths.to(resid.device) - 1]


def target_logprobs(model, x: torch.Tensor, targets: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """log p(targets[i] | x[i]) under the full-vocabulary softmax, in fp32, for residuals x [N, d].

    Rows go through the unembedding in chunks, so a long answer list never holds [N, vocab]
    logits at once (a 262k vocabulary makes that gigabytes). Row chunks, not vocabulary slices:
    column slices of W_U are strided and were slower when tried."""
    out = []
    targets = targets.to(x.device)
    for s in range(0, x.shape[0], chunk):
        lp = torch.log_softmax(unembed(model, x[s : s + chunk]).float(), -1)
        out.append(lp.gather(-1, targets[s : s + chunk, None])[:, 0])
    return torch.cat(out) if out else torch.zeros(0, device=x.device)


def token_logprobs(
    model, tokens: torch.Tensor, lengths: torch.Tensor, fwd_hooks=(), chunk: int = 256
) -> list[torch.Tensor]:
    """Per row, log p(token_t | tokens_<t) for t = 1..len-1 (full-vocabulary softmax), in fp32."""
    resid = final_resid(model, tokens, fwd_hooks)
    out = []
    for b in range(tokens.shape[0]):
        n = int(lengths[b])
        out.append(target_logprobs(model, resid[b, : n - 1], tokens[b, 1:n], chunk))
    return out


def corpus_windows(model, docs: list[str], n_tokens: int, ctx: int = 256) -> list[list[int]]:
    """Windows of up to ``ctx`` tokens (BOS + ctx-1 text tokens), ``n_tokens`` predicted tokens in total."""
    tok = model.tokenizer
    bos = tok.bos_token_id
    stream: list[int] = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"]
        if bos is not None:
            stream.append(bos)
        if len(stream) >= n_tokens * 1.1 + ctx:
            break
    windows, step = [], ctx - 1
    budget = n_tokens
    for s in range(0, len(stream), step):
        if budget <= 0:
            break
        w = stream[s : s + min(step, budget)]
        if len(w) < 2:
            break
        windows.append(([bos] if bos is not None else []) + w)
        budget -= len(w)
    return windows
