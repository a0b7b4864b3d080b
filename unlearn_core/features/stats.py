"""Per-feature statistics, max-activating examples, logit effects, selection and search.

Statistics run the model only up to the SAE's hook (``stop_at_layer``, no logits) over
BOS-prefixed windows of a corpus, and are cached on disk (safetensors) keyed by
model + SAE fingerprint + corpus (a file corpus: also its contents) + token budget + window size.
Entries shipped with the embedded SAE (``shipped_stats``) are read under the same key first.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import torch

from unlearn_core.core import cache as C
from unlearn_core.data import loaders as D
from unlearn_core.features.shipped_stats import cached_stats  # also the server's chunked path's reader
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import pad_right
from unlearn_core.model.saes import LoadedSAE

N_BINS = 32
BIN_EDGES = torch.logspace(-2, 3, N_BINS + 1)  # activation histogram: log-spaced, 0.01 .. 1000


def sae_fingerprint(loaded: LoadedSAE) -> str:
    """The SAE's identity for disk caches: its selector, hook, width and a digest of every
    parameter's bytes (thresholds and biases too), recomputed only when a parameter changed."""
    params = sorted(loaded.sae.named_parameters())
    stamp = tuple((n, p.data_ptr(), p._version) for n, p in params)
    memo = loaded.__dict__.setdefault("_digest_memo", {})
    if memo.get("stamp") != stamp:
        memo.update(stamp=stamp, digest=C.digest_tensors(params))
    return C.key_of(loaded.key, loaded.hook_name, loaded.d_sae, memo["digest"])


def parse_corpus_spec(spec: str) -> tuple[str, str]:
    """'wmdp-bio-text@train' -> ('wmdp-bio-text', 'train'); plain names mean all documents."""
    name, _, part = spec.partition("@")
    return name, part or "all"


def corpus_docs(engine: Engine, spec: str) -> list[str]:
    name, part = parse_corpus_spec(spec)
    return D.load_corpus(name, engine.settings.data_dir, part=part)


def corpus_digest(docs: list[str]) -> str:
    """A corpus's content for cache keys: a named corpus whose file was edited, or a target
    defined again under the same name, misses the cache instead of being served the old text's
    results."""
    return C.digest_texts(docs)


def windows_for(engine: Engine, docs: list[str], n_tokens: int, ctx: int) -> list[list[int]]:
    from unlearn_core.model.forward import corpus_windows

    return corpus_windows(engine.model, docs, n_tokens, ctx)


def layer_of_hook(hook_name: str) -> int:
    return int(hook_name.split(".")[1]) + 1 if hook_name.startswith("blocks.") else 0


@torch.inference_mode()
def encode_tokens(engine: Engine, sae_key: str, tokens: torch.Tensor) -> torch.Tensor:
    """SAE codes [B, T, d_sae] at the SAE's hook, running the model only as far as needed."""
    loaded = engine.saes[sae_key]
    model = engine.model
    acts = {}

    def grab(x, hook):
        acts["x"] = x

    with model.hooks(fwd_hooks=[(loaded.hook_name, grab)]):
        model(tokens.to(model.cfg.device), stop_at_layer=layer_of_hook(loaded.hook_name))
    return loaded.sae.encode(acts["x"].to(loaded.sae.W_enc.dtype))


def special_ids(engine: Engine) -> list[int]:
    tok = engine.model.tokenizer
    return sorted({i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if i is not None})


def counted_mask(engine: Engine, toks: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Positions that count in statistics: real tokens that are not BOS/EOS/pad (as in the paper;
    windows hold BOS separators between documents, which must not count)."""
    mask = torch.arange(toks.shape[1])[None, :] < lens[:, None]
    mask[:, 0] = False
    return mask & ~torch.isin(toks, torch.tensor(special_ids(engine)))


@dataclass
class FeatureStats:
    sae_key: str
    corpus: str
    n_tokens: int
    freq: torch.Tensor  # [d_sae] fraction of counted tokens (not BOS/EOS/pad) where the feature is > 0
    mean_act: torch.Tensor  # [d_sae] mean activation over all counted tokens
    mean_active: torch.Tensor  # [d_sae] mean activation where active
    max_act: torch.Tensor  # [d_sae]
    hist: torch.Tensor  # [d_sae, N_BINS] counts of active values per log-spaced bin
    window_max: torch.Tensor  # [n_windows, d_sae] float16: max activation per window (examples, quantiles)
    windows: list[list[int]]


def stats_windows(
    engine: Engine, corpus: str, n_tokens: int = 100_000, ctx: int = 128
) -> tuple[list[str], list[list[int]]]:
    """The corpus's documents and the windows statistics run on (tokenizes: needs the model lock)."""
    docs = corpus_docs(engine, corpus)
    return docs, windows_for(engine, docs, n_tokens, ctx)


def stats_path(
    engine: Engine, sae_key: str, corpus: str, docs: list[str], n_tokens: int = 100_000, ctx: int = 128
) -> Path:
    """The disk cache entry of ``feature_stats`` for these arguments."""
    return C.entry_path(
        engine.settings.cache_dir,
        "feature_stats",
        engine.cache_identity(),
        sae_fingerprint(engine.saes[sae_key]),
        corpus,
        corpus_digest(docs),
        n_tokens,
        ctx,
        N_BINS,
        suffix=".safetensors",
    )


class StatsAccumulator:
    """Feature statistics added one batch of windows at a time, in order (``add(i)`` for every
    ``i < n_batches``), so the work can be spread over several calls (the server takes its model
    lock per few batches) and still give bit-for-bit what one pass gives."""

    def __init__(self, engine: Engine, sae_key: str, windows: list[list[int]], batch_size: int = 16, progress=None):
        self.engine, self.sae_key, self.windows, self.batch_size, self.progress = (
            engine,
            sae_key,
            windows,
            batch_size,
            progress,
        )
        d = self.d = engine.saes[sae_key].d_sae
        self.count = torch.zeros(d, dtype=torch.float64)
        self.total = torch.zeros(d, dtype=torch.float64)
        self.mx = torch.zeros(d)
        self.hist = torch.zeros(d * N_BINS, dtype=torch.float64)
        self.wmax = torch.zeros(len(windows), d, dtype=torch.float16)
        self.n = 0
        self.next_batch = 0

    @property
    def n_batches(self) -> int:
        return -(-len(self.windows) // self.batch_size)

    @torch.inference_mode()
    def add(self, i: int) -> None:
        if i != self.next_batch:
            raise ValueError(f"statistics batches must be added in order: expected {self.next_batch}, got {i}")
        engine = self.engine
        s = i * self.batch_size
        batch = self.windows[s : s + self.batch_size]
        toks, lens = pad_right(batch, 0)
        f = encode_tokens(engine, self.sae_key, toks).float().cpu()
        mask = counted_mask(engine, toks, lens)
        f = f * mask[..., None]
        flat = f[mask]  # [tokens, d]
        self.n += flat.shape[0]
        active = flat > 0
        self.count += active.sum(0)
        self.total += flat.sum(0).double()
        self.mx = torch.maximum(self.mx, flat.max(0).values)
        self.wmax[s : s + len(batch)] = f.max(1).values.half()
        rows, cols = active.nonzero(as_tuple=True)
        b = torch.bucketize(flat[rows, cols], BIN_EDGES).clamp(1, N_BINS) - 1
        self.hist.index_add_(0, cols * N_BINS + b, torch.ones_like(b, dtype=torch.float64))
        self.next_batch += 1
        if self.progress:
            self.progress(sum(len(w) - 1 for w in batch))

    def result(self) -> dict:
        if self.next_batch != self.n_batches:
            raise ValueError(f"statistics incomplete: {self.next_batch} of {self.n_batches} batches added")
        n, count, d = self.n, self.count, self.d
        return {
            "n_tokens": torch.tensor([n]),
            "freq": (count / max(n, 1)).float(),
            "mean_act": (self.total / max(n, 1)).float(),
            "mean_active": (self.total / count.clamp(min=1)).float(),
            "max_act": self.mx,
            "hist": self.hist.view(d, N_BINS).float(),
            "window_max": self.wmax,
        }


def stats_from(sae_key: str, corpus: str, t: dict, windows: list[list[int]]) -> FeatureStats:
    return FeatureStats(
        sae_key,
        corpus,
        int(t["n_tokens"][0]),
        t["freq"],
        t["mean_act"],
        t["mean_active"],
        t["max_act"],
        t["hist"],
        t["window_max"],
        windows,
    )


def feature_stats(
    engine: Engine,
    sae_key: str,
    corpus: str,
    n_tokens: int = 100_000,
    ctx: int = 128,
    batch_size: int = 16,
    progress=None,
) -> FeatureStats:
    docs, windows = stats_windows(engine, corpus, n_tokens, ctx)
    path = stats_path(engine, sae_key, corpus, docs, n_tokens, ctx)

    def compute() -> dict:
        acc = StatsAccumulator(engine, sae_key, windows, batch_size, progress)
        for i in range(acc.n_batches):
            acc.add(i)
        return acc.result()

    return stats_from(sae_key, corpus, cached_stats(path, compute), windows)


def token_strs(engine: Engine, ids: list[int]) -> list[str]:
    tok = engine.model.tokenizer
    return [tok.decode([i]) for i in ids]


PER_QUANTILE = 2  # examples shown from each activation band


@torch.inference_mode()
def top_examples(
    engine: Engine, stats: FeatureStats, feature: int, *, k: int = 8, n_quantiles: int = 4, context: int = 24
) -> dict:
    """Top-k windows by max activation, plus ``PER_QUANTILE`` samples from each of ``n_quantiles``
    activation bands below them (as SAEDashboard)."""
    col = stats.window_max[:, feature].float()
    order = torch.argsort(col, descending=True)
    top = [int(i) for i in order[:k] if col[i] > 0]
    active = [int(i) for i in order if col[i] > 0]
    quantiles = []
    if n_quantiles > 0 and len(active) > k:
        rest = active[k:]
        g = torch.Generator().manual_seed(feature)
        band = max(1, len(rest) // n_quantiles)
        for qi in range(n_quantiles):
            chunk = rest[qi * band : (qi + 1) * band] if qi < n_quantiles - 1 else rest[qi * band :]
            if not chunk:
                continue
            pick = torch.randperm(len(chunk), generator=g)[:PER_QUANTILE].tolist()
            lo, hi = float(col[chunk[-1]]), float(col[chunk[0]])
            quantiles.append({"range": [lo, hi], "examples": [chunk[p] for p in pick]})
    wanted = sorted(set(top) | {i for q in quantiles for i in q["examples"]})
    rendered = {}
    if wanted:
        toks, lens = pad_right([stats.windows[i] for i in wanted], 0)
        f = encode_tokens(engine, stats.sae_key, toks)[..., feature].float().cpu()
        # the positions the statistics count: not the first, and no BOS/EOS/pad (a window holds
        # BOS separators between documents; a peak there is not what the feature is about)
        f = f * counted_mask(engine, toks, lens)
        for j, wi in enumerate(wanted):
            n = int(lens[j])
            vals = f[j, :n].clone()
            peak = int(vals.argmax())
            lo, hi = max(1, peak - context), min(n, peak + context // 2 + 1)
            ids = stats.windows[wi][lo:hi]
            rendered[wi] = {
                "window": wi,
                "tokens": token_strs(engine, ids),
                "values": [round(float(v), 4) for v in vals[lo:hi]],
                "max": float(vals.max()),
                "peak": peak - lo,
            }
    return {
        "corpus": stats.corpus,
        "top": [rendered[i] for i in top],
        "quantiles": [{"range": q["range"], "examples": [rendered[i] for i in q["examples"]]} for q in quantiles],
    }


@torch.inference_mode()
def logit_effects(engine: Engine, sae_key: str, feature: int, k: int = 10) -> dict:
    """Top and bottom tokens of W_dec[i] @ W_U (the direct effect of the feature on the logits)."""
    loaded = engine.saes[sae_key]
    check_feature(loaded, feature)
    w = loaded.sae.W_dec[feature].to(engine.model.W_U.dtype) @ engine.model.W_U
    top = torch.topk(w, k)
    bot = torch.topk(-w, k)
    return {
        "top": [(engine.model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)],
        "bottom": [(engine.model.tokenizer.decode([int(i)]), float(-v)) for v, i in zip(bot.values, bot.indices)],
    }


def check_feature(loaded: LoadedSAE, feature: int) -> None:
    if not 0 <= int(feature) < loaded.d_sae:
        raise ValueError(f"feature {feature} out of range for SAE {loaded.key!r} (d_sae={loaded.d_sae})")


def select_features(
    forget_freq: torch.Tensor, retain_freq: torch.Tensor, threshold: float = 0.01, n: int = 20
) -> list[dict]:
    """The paper's selection: drop features with retain frequency >= threshold, rank the rest by
    forget frequency, keep the top n (features that never fire on the forget corpus are dropped)."""
    if forget_freq.shape != retain_freq.shape:
        raise ValueError("forget and retain frequencies must have the same shape")
    if not 0 < threshold <= 1 or n < 1:
        raise ValueError("threshold must be in (0, 1] and n >= 1")
    ok = (retain_freq < threshold) & (forget_freq > 0)
    idx = torch.nonzero(ok).flatten()
    order = idx[torch.argsort(forget_freq[idx], descending=True, stable=True)][:n]
    return [
        {
            "feature": int(i),
            "forget_freq": float(forget_freq[i]),
            "retain_freq": float(retain_freq[i]),
            "ratio": float(forget_freq[i] / max(float(retain_freq[i]), 1e-6)),
        }
        for i in order
    ]


@torch.inference_mode()
def token_activations_from_codes(
    engine: Engine, sae_key: str, ids: list[int], codes: torch.Tensor, features: list[int] | None = None, top_k: int = 5
) -> dict:
    """Per-token values of chosen features, and the top features of every token (BOS excluded).

    ``codes`` [T, d_sae] are the SAE codes of ``ids`` (BOS first); callers that cache
    activations (the server) pass them in, others use :func:`token_activations`.
    """
    loaded = engine.saes[sae_key]
    for i in features or []:
        check_feature(loaded, i)
    f = codes.float().cpu().clone()
    f[0] = 0.0
    tv, ti = torch.topk(f, min(top_k, loaded.d_sae), dim=-1)
    return {
        "tokens": token_strs(engine, ids),
        "features": list(features or []),
        "values": f[:, list(features)].tolist() if features else [],
        "top_features": [[(int(i), float(v)) for v, i in zip(tv[t], ti[t]) if v > 0] for t in range(len(ids))],
    }


def token_activations(
    engine: Engine, sae_key: str, text: str, features: list[int] | None = None, top_k: int = 5
) -> dict:
    toks = engine.model.to_tokens(text, prepend_bos=True)
    codes = encode_tokens(engine, sae_key, toks)[0]
    return token_activations_from_codes(engine, sae_key, toks[0].tolist(), codes, features, top_k)


def logit_lens_meaningful(engine: Engine, sae_key: str) -> bool:
    """Whether a feature's direct logit effect (W_dec @ W_U) says much: only for hooks in the last
    third of the model; read off an early residual it is mostly noise."""
    layer = engine.saes[sae_key].layer
    return layer is None or layer + 1 >= engine.model.cfg.n_layers * 2 / 3


def description_path(engine: Engine, sae_key: str, stats: FeatureStats) -> Path:
    digest = stats.__dict__.get("_digest")
    if digest is None:  # the statistics' own content (computed once per object)
        digest = stats.__dict__["_digest"] = hashlib.sha1(stats.window_max.numpy().tobytes()).hexdigest()
    return C.entry_path(
        engine.settings.cache_dir,
        "descriptions",
        engine.cache_identity(),
        sae_fingerprint(engine.saes[sae_key]),
        stats.corpus,
        stats.n_tokens,
        C.key_of(stats.windows),
        digest,
    )


def auto_description(engine: Engine, sae_key: str, feature: int, stats: FeatureStats | None = None) -> str:
    """A short automatic description from the max-activating contexts of ``stats`` (the peak words,
    phrases and the words around them; the logit lens only where it means something), labelled
    '[automatic]'. Cached on disk per SAE and statistics: the second call reads it."""
    from unlearn_core.features.descriptions import describe_examples

    check_feature(engine.saes[sae_key], feature)
    lens = logit_lens_meaningful(engine, sae_key)
    if stats is None:
        tokens = [t for t, _ in logit_effects(engine, sae_key, feature, k=5)["top"]] if lens else None
        return describe_examples([], logit_tokens=tokens)["text"]
    path = description_path(engine, sae_key, stats)
    known = C.read_json(path) or {}
    if str(feature) in known:
        return known[str(feature)]
    examples = top_examples(engine, stats, feature, k=12, n_quantiles=0, context=12)["top"]
    tokens = [t for t, _ in logit_effects(engine, sae_key, feature, k=5)["top"]] if lens else None
    text = describe_examples(examples, logit_tokens=tokens)["text"]
    known = C.read_json(path) or {}  # another feature may have been added meanwhile
    known[str(feature)] = text
    C.atomic_write_json(path, known)
    return text


def dashboard(
    engine: Engine,
    sae_key: str,
    feature: int,
    corpora: list[str],
    n_tokens: int = 100_000,
    k: int = 8,
    with_neuronpedia: bool = True,
    *,
    stats: dict[str, FeatureStats] | None = None,
    guard: Callable[[], ContextManager] = contextlib.nullcontext,
) -> dict:
    """A feature's dashboard. ``stats`` (per corpus) skips computing statistics; ``guard`` is entered
    around each piece of model work (one corpus's examples, then the description): the server
    passes its model lock, so a dashboard over several corpora is several short holds."""
    loaded = engine.saes[sae_key]
    check_feature(loaded, feature)
    out: dict = {"sae": sae_key, "feature": feature, "corpora": {}, "bin_edges": BIN_EDGES.tolist()}
    first_stats = None
    for corpus in corpora:
        with guard():
            st = (stats or {}).get(corpus) or feature_stats(engine, sae_key, corpus, n_tokens)
            first_stats = first_stats or st
            out["corpora"][corpus] = {
                "n_tokens": st.n_tokens,
                "freq": float(st.freq[feature]),
                "mean_act": float(st.mean_act[feature]),
                "mean_active": float(st.mean_active[feature]),
                "max_act": float(st.max_act[feature]),
                "hist": st.hist[feature].tolist(),
                "examples": top_examples(engine, st, feature, k=k),
            }
    with guard():
        out["logits"] = logit_effects(engine, sae_key, feature)
        out["logit_lens_meaningful"] = logit_lens_meaningful(engine, sae_key)
        out["description"] = auto_description(engine, sae_key, feature, first_stats)
    out["neuronpedia"] = None
    if with_neuronpedia:
        from unlearn_core.features import neuronpedia as NP

        if loaded.neuronpedia_id:
            model_id, sae_id = loaded.neuronpedia_id.split("/", 1)
            out["neuronpedia"] = NP.get_feature(model_id, sae_id, feature).__dict__
        else:
            out["neuronpedia"] = {"available": False, "message": "no Neuronpedia id for this SAE (local SAE)"}
    return out
