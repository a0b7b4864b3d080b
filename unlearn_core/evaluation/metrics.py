"""Loss added, perplexity and generation, clean and intervened.

Perplexity method (documented so numbers are comparable): the documents are tokenized,
joined with BOS between them, cut into non-overlapping windows of ``ctx`` tokens, each window
is prefixed with BOS, and ppl = exp(mean next-token NLL over every predicted token). Loss
added uses the same windows: intervened mean loss minus clean mean loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn_core.core import cache as C
from unlearn_core.method.interventions import HookState, Intervention
from unlearn_core.model.engine import Engine
from unlearn_core.model.forward import (
    corpus_windows,  # noqa: F401 (re-exported)
    final_resid,
    pad_right,
    target_logprobs,
    token_logprobs,
)

NLL_BATCH = 4  # windows per forward in mean_nll (and per step of the server's chunked version)


def nll_batch_size(ctx: int) -> int:
    """Windows per forward for windows of ``ctx`` tokens: ``NLL_BATCH`` up to ctx 256 (~1k tokens a
    batch), fewer for longer windows, so one batch stays about a second on a small CPU."""
    return max(1, min(NLL_BATCH, 1024 // max(ctx, 1)))


@torch.inference_mode()
def window_nlls(engine: Engine, batch: list[list[int]], hooks) -> list[tuple[float, int]]:
    """Per window of ``batch`` (one forward pass): (summed NLL of its predicted tokens, their number)."""
    tokens, lens = pad_right(batch, 0)
    return [(float(-lp.sum()), lp.numel()) for lp in token_logprobs(engine.model, tokens, lens, hooks)]


class NLLSum:
    """The running sum of ``mean_nll``: windows added in order give bit-for-bit its result, however
    the batches are spread over calls (the server adds them one lock hold at a time)."""

    def __init__(self):
        self.total, self.n = 0.0, 0

    def add(self, rows: list[tuple[float, int]]) -> None:
        for nll, k in rows:
            self.total += nll
            self.n += k

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")


LOGPROB_CHUNK = 256  # rows per unembedding in token_logprobs (a 256-token window is one)
FORWARD_LAYERS = 6  # blocks per step of nll_steps' forward pass (Gemma 3 270M: 3 steps of ~0.4 s a batch)


def nll_steps(
    windows: list[list[int]],
    interventions: list[Intervention] | None,
    acc: NLLSum,
    batch_size: int = NLL_BATCH,
    n_layers: int | None = None,
):
    """``mean_nll`` as a sequence of steps (callables given the engine) that add to ``acc``: per
    batch of windows, the forward pass to the last residual, ``FORWARD_LAYERS`` blocks a step
    (TransformerLens's ``stop_at_layer`` / ``start_at_layer``, the residual handed on; with
    ``n_layers`` None, one step), then each window's log-probabilities, one unembedding chunk
    of rows per step (the 262k-wide unembedding is most of the time on Gemma). Run in order,
    with anything in between, they compute exactly what ``mean_nll`` computes: the same
    batches, blocks, chunks, sums and order (the tests check the numbers are equal)."""
    n = n_layers or 0
    cuts = list(range(0, n, FORWARD_LAYERS))[1:] + [n] if n > FORWARD_LAYERS else []
    for s in range(0, len(windows), batch_size):
        tokens, lens = pad_right(windows[s : s + batch_size], 0)
        held: dict = {}
        state = HookState()  # one per batch: a gate decided in its first blocks holds in the later ones

        def forward(engine, tokens=tokens, held=held, state=state):
            with torch.inference_mode():
                held["resid"] = final_resid(engine.model, tokens, engine.hooks(interventions, state))

        def blocks(engine, lo, hi, tokens=tokens, held=held, state=state):
            model = engine.model
            with torch.inference_mode(), model.hooks(fwd_hooks=engine.hooks(interventions, state)):
                if lo == 0:
                    held["resid"] = model(tokens.to(model.cfg.device), stop_at_layer=hi)
                else:
                    held["resid"] = model(held["resid"], start_at_layer=lo, stop_at_layer=hi)

        if cuts:
            for lo, hi in zip([0] + cuts[:-1], cuts):
                yield lambda engine, lo=lo, hi=hi, f=blocks: f(engine, lo, hi)
        else:
            yield forward
        for b in range(tokens.shape[0]):
            rows = int(lens[b]) - 1
            parts: list[torch.Tensor] = []
            starts = list(range(0, rows, LOGPROB_CHUNK)) or [0]
            for r in starts:

                def part(
                    engine,
                    b=b,
                    r=r,
                    rows=rows,
                    parts=parts,
                    held=held,
                    tokens=tokens,
                    last=r == starts[-1],
                    last_row=b == tokens.shape[0] - 1,
                ):
                    with torch.inference_mode():
                        e = min(r + LOGPROB_CHUNK, rows)
                        parts.append(
                            target_logprobs(
                                engine.model, held["resid"][b, r:e], tokens[b, 1 + r : 1 + e], LOGPROB_CHUNK
                            )
                        )
                        if last:  # as token_logprobs: the window's log-probs in one tensor, then summed
                            lp = torch.cat(parts)
                            acc.add([(float(-lp.sum()), lp.numel())])
                            parts.clear()
                            if last_row:
                                held.clear()

                yield part


@torch.inference_mode()
def mean_nll(
    engine: Engine,
    windows: list[list[int]],
    interventions: list[Intervention] | None = None,
    batch_size: int = NLL_BATCH,
    progress=None,
) -> tuple[float, int]:
    """(mean NLL per predicted token, number of predicted tokens)."""
    hooks = engine.hooks(interventions)
    acc = NLLSum()
    for s in range(0, len(windows), batch_size):
        batch = windows[s : s + batch_size]
        acc.add(window_nlls(engine, batch, hooks))
        if progress:
            progress(sum(len(w) - 1 for w in batch))
    return acc.mean, acc.n


@dataclass
class LossAdded:
    clean_loss: float
    intervened_loss: float
    loss_added: float
    n_tokens: int
    corpus: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def clean_nll_path(engine: Engine, corpus: str, windows: list[list[int]], batch_size: int = NLL_BATCH) -> Path:
    """Where the clean mean NLL of these windows is cached: keyed by the windows' token ids (their
    content) and the batch size (another batch size's sums may differ in the last bit)."""
    return C.entry_path(
        engine.settings.cache_dir, "baselines", engine.cache_identity(), corpus, C.key_of(windows), batch_size
    )


def clean_nll_cached(engine: Engine, corpus: str, windows: list[list[int]], progress=None) -> float:
    return C.cached_json(
        clean_nll_path(engine, corpus, windows), lambda: mean_nll(engine, windows, None, progress=progress)[0]
    )


def loss_added(
    engine: Engine,
    docs: list[str],
    interventions: list[Intervention],
    n_tokens: int = 50_000,
    ctx: int = 256,
    corpus: str = "corpus",
    progress=None,
) -> LossAdded:
    windows = corpus_windows(engine.model, docs, n_tokens, ctx)
    cached = clean_nll_path(engine, corpus, windows).exists()
    clean = clean_nll_cached(engine, corpus, windows, progress)
    if cached and progress:  # the clean half of the work was read, not done: a bar counts it as done
        progress(sum(len(w) - 1 for w in windows))
    inter, n = mean_nll(engine, windows, interventions, progress=progress)
    return LossAdded(clean, inter, inter - clean, n, corpus)


def perplexity(
    engine: Engine,
    docs: list[str],
    interventions: list[Intervention] | None = None,
    n_tokens: int = 20_000,
    ctx: int = 256,
    progress=None,
) -> dict:
    windows = corpus_windows(engine.model, docs, n_tokens, ctx)
    nll, n = mean_nll(engine, windows, interventions, progress=progress)
    return {"perplexity": math.exp(nll), "mean_nll": nll, "n_tokens": n, "ctx": ctx}


@torch.inference_mode()
def generate(
    engine: Engine,
    prompt: str,
    interventions: list[Intervention] | None = None,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """Greedy (temperature 0) or sampled continuation, with the KV cache.

    The intervention hooks stay attached for every step, and single-token cached steps are
    treated as continuations (their position 0 is a generated token, not BOS).
    """
    model = engine.model
    if max_new_tokens < 1 or max_new_tokens > 512:
        raise ValueError("max_new_tokens must be between 1 and 512")
    torch.manual_seed(seed)
    # TransformerLens generates from embeddings (hook_tokens never fires): a gate reads the prompt here
    state = HookState(tokens=model.to_tokens(prompt, prepend_bos=True))
    with model.hooks(fwd_hooks=engine.hooks(interventions, state)):
        out = model.generate(
            prompt,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=max(temperature, 1e-5),
            use_past_kv_cache=True,
            verbose=False,
            stop_at_eos=True,
            return_type="str",
            prepend_bos=True,
        )
    return out[len(prompt) :] if out.startswith(prompt) else out


@dataclass(eq=False)
class Generation:
    """``generate`` one token per ``step(engine)``, so a caller can let go of the model between
    tokens (the server takes its model lock per few steps; a 512-token generation is a minute
    on a small CPU).

    Each step makes exactly the calls TransformerLens's ``HookedTransformer.generate`` makes for
    one token of a string prompt (KV cache, greedy or sampled, stop at EOS; checked against
    ``generate`` in the tests), so the text is the same. The intervention hooks are attached only
    for the step's own forward pass, and the random state for sampling (seeded as ``generate``
    seeds it) is kept here, so other work between steps changes nothing.
    """

    engine: Engine
    prompt: str
    interventions: list[Intervention] | None = None
    max_new_tokens: int = 40
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_new_tokens > 512:
            raise ValueError("max_new_tokens must be between 1 and 512")
        self.state = HookState()  # kept across steps: a gate's prompt decision holds for every token
        self.hooks = self.engine.hooks(self.interventions, self.state)
        self.do_sample, self.sample_temperature = self.temperature > 0, max(self.temperature, 1e-5)
        self.index, self.done = 0, False
        self._rng = None
        self.sampled: list[torch.Tensor] = []

    def _swap_rng(self, state):
        cuda = self.device.type == "cuda"
        old = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None)
        if state is None:
            torch.manual_seed(self.seed)
        else:
            torch.set_rng_state(state[0])
            if cuda:
                torch.cuda.set_rng_state(state[1], self.device)
        return old

    @torch.inference_mode()
    def _setup(self) -> None:
        from transformer_lens import utilities as U
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        model = self.engine.model
        self.model = model
        tokens = model.to_tokens(self.prompt, prepend_bos=True)
        self.initial_mask = U.get_attention_mask(model.tokenizer, tokens, True)
        self.device = U.get_device_for_block_index(0, model.cfg)
        self.tokens = tokens.to(self.device)
        self.cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
        self.embeds = model.embed(self.tokens)
        self.eos = model.tokenizer.eos_token_id
        self.finished = torch.zeros(1, dtype=torch.bool, device=model.cfg.device)
        model.eval()
        self._rng = self._swap_rng(None)  # seeded as generate() seeds it ...
        self._rng = self._swap_rng(self._rng)  # ... kept here, and the caller's state put back

    @torch.inference_mode()
    def step(self, engine: Engine) -> None:
        """One token (the first step also runs the prompt)."""
        from transformer_lens import utilities as U

        if self.done:
            return
        model = engine.model
        with (
            U.LocallyOverridenDefaults(model, prepend_bos=True, padding_side=U.USE_DEFAULT_VALUE),
            model.hooks(fwd_hooks=self.hooks),
        ):
            if self.index == 0:
                self._setup()
                self.state.tokens = self.tokens  # the steps run from embeddings: the gate reads the prompt here
            n_new = len(self.sampled)
            mask = self.initial_mask.to(self.device)
            if n_new:
                mask = torch.cat([mask, torch.ones(1, n_new, dtype=mask.dtype, device=self.device)], dim=1)
            residual, pos_embed = model.get_residual(
                self.embeds,
                model.get_pos_offset(self.cache, 1),
                return_shortformer_pos_embed=True,
                device=self.device,
                attention_mask=mask,
            )
            logits = model.forward(
                residual[:, -1:] if self.index > 0 else residual,
                return_type="logits",
                prepend_bos=True,
                past_kv_cache=self.cache,
                start_at_layer=0,
                shortformer_pos_embed=pos_embed,
                attention_mask=mask,
            )
            final = logits[:, -1, :]
            if self.do_sample:
                outside = self._swap_rng(self._rng)
                try:
                    prev = (
                        torch.cat((self.tokens, torch.cat(self.sampled, dim=1)), dim=1) if self.sampled else self.tokens
                    )
                    tok = U.sample_logits(
                        final,
                        top_k=None,
                        top_p=None,
                        temperature=self.sample_temperature,
                        freq_penalty=0.0,
                        tokens=prev,
                    ).to(self.device)
                finally:
                    self._rng = self._swap_rng(outside)
            else:
                tok = final.argmax(-1).to(self.device)
            self.sampled.append(tok.unsqueeze(1))
            tok[self.finished] = self.eos
            dev = model.cfg.device
            self.finished.logical_or_(torch.isin(tok.to(dev), torch.tensor([self.eos]).to(dev)))
            self.embeds = torch.hstack([self.embeds, model.embed(tok.unsqueeze(-1))])
        self.index += 1
        self.done = bool(self.finished.all()) or self.index >= self.max_new_tokens

    def text(self) -> str:
        """The continuation, as ``generate`` returns it."""
        out = torch.cat((self.tokens, torch.cat(self.sampled, dim=1)), dim=1)
        text = self.engine.model.tokenizer.decode(out[0], skip_special_tokens=True)
        return text[len(self.prompt) :] if text.startswith(self.prompt) else text


def generate_pair(engine: Engine, prompt: str, interventions: list[Intervention], **kw) -> dict:
    return {
        "prompt": prompt,
        "base": generate(engine, prompt, None, **kw),
        "intervened": generate(engine, prompt, interventions, **kw),
    }
