"""bf16 vs fp32 on the same weights: how far letter and cloze probabilities move, clean and under
a target's default intervention, and how often the predicted answer changes (issue 15).

bf16 is the automatic dtype on a GPU (``models.pick_dtype``); this runs both dtypes on the CPU.
For each model (the tiny test model, then the embedded Gemma 3 270M with the embedded SAE): the
first N questions of the target's forget set (the bio quiz), letter scoring (A/B/C/D after the
plain prompt, full-vocabulary softmax) and cloze scoring (the softmax over the four answers' mean
log-likelihoods), clean and with the target's default intervention (its selected features,
clamp to -c), selected once in fp32 and applied to both dtypes. Differences are over the 4 x N
probabilities; "same prediction" counts questions whose argmax agrees. Extra rows: the fast
slider path vs the straightforward hooks, both in bf16; and the bf16 model with an fp32
unembedding, to show how much of the difference is the bf16 rounding of the logits themselves;
and, as bf16's own noise floor, the bf16 model against itself with letters scored in batches of
8 vs one at a time (only the matmul shapes differ). The note under each model counts the (selected
feature, position) pairs whose firing differs between the dtypes: clamp-when-active is a step
there, so one flip can move a cloze probability far more than rounding does.

    OMP_NUM_THREADS=1 python bench/bf16.py [--n 20] [--target bio-basics] [--no-embedded]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import tempfile
import time

import torch
from common import cpu_name

from unlearn_core.features.default_target import DEFAULT_TARGET


def engines_tiny():
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import engine_from_parts
    from unlearn_core.model.tiny import tiny_engine, tiny_sae

    e32 = tiny_engine(cache_dir=tempfile.mkdtemp(prefix="bf16_tiny_"))
    m16 = copy.deepcopy(e32.model).to(torch.bfloat16, print_details=False)
    s = load_settings(
        {
            **{k: getattr(e32.settings, k) for k in ("model", "saes", "prompt_format", "scoring", "cache_dir")},
            "dtype": "bfloat16",
        }
    )
    e16 = engine_from_parts(m16, [tiny_sae(m16.cfg.d_model)], s, model_name="tiny")
    e16.extra.update(e32.extra)
    return e32, e16


def engine_embedded(model: str, sae: str, dtype: str):
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import load_engine

    return load_engine(load_settings({"model": model, "saes": [sae], "dtype": dtype, "device": "cpu"}), progress=False)


@contextlib.contextmanager
def fp32_unembedding(model):
    """Logits from an fp32 copy of W_U (and fp32 ln_final output) for a bf16 model."""
    from transformer_lens.utilities import apply_softcap

    from unlearn_core.evaluation import mcq
    from unlearn_core.model import forward

    W, b = model.W_U.detach().float(), model.b_U.detach().float()

    def unembed(m, resid, columns=None):
        x = m.ln_final(resid).float()
        logits = x @ (W if columns is None else W[:, columns]) + (b if columns is None else b[columns])
        return apply_softcap(logits, m.cfg.output_logits_soft_cap)

    saved = forward.unembed, mcq.unembed
    forward.unembed = mcq.unembed = unembed
    try:
        yield
    finally:
        forward.unembed, mcq.unembed = saved


def score(engine, qs, iv, scoring: str):
    from unlearn_core.evaluation import mcq

    return mcq.score_questions(engine, qs, [iv] if iv else None, scoring=scoring, style="plain")


def fast(engine, qs, iv, scoring: str):
    from unlearn_core.method import fastpath

    assert fastpath.supports(engine, [iv], scoring)
    return [fastpath.score_configs(engine, q, [iv], scoring, "plain")[0] for q in qs]


def compare(a: list, b: list) -> tuple[str, str, str, str]:
    d = torch.tensor([x.probs for x in a]) - torch.tensor([x.probs for x in b])
    ll = "-"
    if a[0].loglik is not None:
        ll = f"{(torch.tensor([x.loglik for x in a]) - torch.tensor([x.loglik for x in b])).abs().max():.2e}"
    same = sum(x.predicted == y.predicted for x, y in zip(a, b))
    return f"{d.abs().max():.2e}", f"{d.abs().mean():.2e}", ll, f"{same}/{len(a)}"


def firing_flips(e32, e16, qs, iv) -> str:
    from unlearn_core.method import fastpath

    n = flips = 0
    for q in qs:
        a, b = (
            fastpath.prompt_cache(e, q, "cloze", "plain", iv.sae_key).codes[..., list(iv.features)] > 0
            for e in (e32, e16)
        )
        n += int(a.sum())
        flips += int((a != b).sum())
    return f"selected features firing differently in bf16 (cloze rows): {flips} of {n} (feature, position) activations"


def measure(name: str, e32, e16, qs, iv, rows: list, extra: bool) -> None:
    from unlearn_core.evaluation import mcq

    for scoring in ("letter", "cloze"):
        t = time.perf_counter()
        clean32, clean16 = score(e32, qs, None, scoring), score(e16, qs, None, scoring)
        cl32, cl16 = score(e32, qs, iv, scoring), score(e16, qs, iv, scoring)
        rows.append((name, scoring, "clean: bf16 vs fp32", *compare(clean16, clean32)))
        rows.append((name, scoring, "clamp: bf16 vs fp32", *compare(cl16, cl32)))
        rows.append((name, scoring, "clamp, bf16: fast path vs hooks", *compare(fast(e16, qs, iv, scoring), cl16)))
        if scoring == "letter":
            one = mcq.score_questions(e16, qs, scoring=scoring, style="plain", batch_size=1)
            rows.append((name, scoring, "clean, bf16: batches of 8 vs 1 (noise floor)", *compare(clean16, one)))
        if extra:
            with fp32_unembedding(e16.model):
                u16 = score(e16, qs, None, scoring)
            rows.append((name, scoring, "clean: bf16 + fp32 unembedding vs fp32", *compare(u16, clean32)))
        print(f"[{name} {scoring}: {time.perf_counter() - t:.0f}s]", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:gemma-3-270m")
    p.add_argument("--sae", default="embedded")
    p.add_argument("--target", default=DEFAULT_TARGET)
    p.add_argument("--n", type=int, default=20, help="questions (the first N of the target's forget set)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--no-embedded", action="store_true", help="the tiny model only")
    args = p.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    from unlearn_core.data.loaders import load_question_set
    from unlearn_core.evaluation.targets import default_intervention, engine_target

    t0 = time.perf_counter()
    rows: list = []
    todo = [("tiny", engines_tiny)]
    if not args.no_embedded:
        todo.append(
            (args.model, lambda: tuple(engine_embedded(args.model, args.sae, d) for d in ("float32", "bfloat16")))
        )
    notes = []
    for name, make in todo:
        e32, e16 = make()
        torch.set_num_threads(args.threads)  # load_model sets every core
        target = engine_target(e32, args.target)
        iv = default_intervention(e32, target)
        qs = load_question_set(target.forget_questions, e32.settings.data_dir).questions[: args.n]
        notes.append(
            f"{name}: {iv.label()}, {len(qs)} questions of {target.forget_questions}; " + firing_flips(e32, e16, qs, iv)
        )
        measure(name, e32, e16, qs, iv, rows, extra=name != "tiny")
        del e32, e16
    print(
        f"\nCPU: {cpu_name()}; {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); {time.perf_counter() - t0:.0f}s in all"
    )
    for n in notes:
        print(f"- {n}")
    print(
        "\n| model | scoring | comparison | max abs diff p | mean abs diff p | max abs diff loglik | same prediction |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
