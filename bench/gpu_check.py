"""The GPU check (issue 15): throughput on a random-weight gemma-2-2b-it-shaped model, the server's
/api/mcq latency, the CUDA-vs-CPU parity tests and the unit tests on CUDA, as one table.

Run it through ``bash bench/gpu.sh`` (checks the Python packages and CUDA first); written for one
H100/H200 in under 8 minutes, with no network and no model weights:

* Model: a TransformerLens HookedTransformer with gemma-2-2b-it's official shapes (26 layers,
  d_model 2304, GQA 8/4 heads of 256, d_mlp 9216, vocabulary 256000, local/global attention,
  softcaps), from ``get_pretrained_model_config`` (TransformerLens hard-codes gemma-2's config,
  so it works offline; if it fails, the same values from the model's Hugging Face config.json are
  used and the table says so), random weights (speed does not depend on them), in the dtype the
  project's engine picks on the device (bf16 on CUDA), with the engine's fast blocks installed.
* SAE: a random JumpReLU SAE of Gemma Scope's layer-7 16k shape (``blocks.7.hook_resid_post``,
  d_in 2304, d_sae 16384) built from sae_lens's ``JumpReLUSAEConfig``; its threshold is set so
  that about ``--l0`` features fire per token. The clamped features are the most frequent ones,
  so they fire from the first token on and every clamp recomputes everything after the hook: an
  upper bound on the work (real WMDP features start firing a little later in the prompt).
* Tokenizer: none of Gemma's is available offline, so a stand-in word-level tokenizer with the
  model's vocabulary size (Gemma's chat markers and the letters as single tokens) and synthetic
  questions of 150-250 prompt tokens (WMDP-bio-like lengths), scored as the CLI's ``eval`` scores
  an instruct model: chat prompt, letter scoring, ``mcq.score_questions`` in batches of 8.
* Sweep: 16 configurations SAEBench-style (2 feature selections x N in {10, 20} x c in
  {25, 50, 100, 200}) through ``sweep.evaluate_configs`` (the server's batch-evaluation path).
* Server: ``server.create_app`` around this engine, served by uvicorn over HTTP on 127.0.0.1 in a
  thread of this process (``unlearn serve`` loads models by name only), called with
  ``unlearn_core.server.client``; the question is sent inline (no data files on the GPU machine).

``--dry-run`` runs every step the same way on the CPU with small shapes and few questions.

    python bench/gpu_check.py [--dry-run] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("UNLEARN_NO_HUB", "1")

import torch  # noqa: E402
from common import cpu_name, free_port, pct  # noqa: E402  (also puts the repo root on sys.path)

from unlearn_core.data.loaders import Question  # noqa: E402
from unlearn_core.evaluation.mcq import score_questions  # noqa: E402
from unlearn_core.evaluation.sweep import evaluate_configs  # noqa: E402
from unlearn_core.method.interventions import Intervention  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "google/gemma-2-2b-it"
HOOK_LAYER = 7
SAE_KEY = "random-jumprelu-16k-L7"
# google/gemma-2-2b-it config.json (Hugging Face), in TransformerLens's terms; used only when
# get_pretrained_model_config fails (query_pre_attn_scalar 256 -> attn_scale 16).
GEMMA2_2B = json.loads((ROOT / "bench" / "gemma2_2b_config.json").read_text())
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
TEMPLATE_WORDS = (
    "The following are multiple choice questions with answers about biology Answer user model A B C D . : ( ) ?"
).split()


# --------------------------------------------------------------------------- what runs


# the sizes of the real run (CUDA) and of the dry run (CPU); only sizes and device differ.
# The counts in ASKED are the defaults of the options of the same names.
SIZES = {
    False: dict(device="cuda", shrink=False, d_sae=16384, questions=1273, sweep_questions=100, server_repeats=20),
    True: dict(device="cpu", shrink=True, d_sae=512, questions=16, sweep_questions=4, server_repeats=4),
}
ASKED = ("questions", "sweep_questions", "server_repeats")


def sizes(args) -> dict:
    """The real sizes, or the dry run's small ones, with the counts the options ask for."""
    return {**SIZES[bool(args.dry_run)], **{k: getattr(args, k) for k in ASKED if getattr(args, k)}}


def model_config(device: str, dtype: torch.dtype, shrink: bool):
    from transformer_lens import HookedTransformerConfig

    try:
        from transformer_lens.loading_from_pretrained import get_pretrained_model_config

        d = get_pretrained_model_config(MODEL_NAME, device=device, dtype=dtype).to_dict()
        source = f"get_pretrained_model_config('{MODEL_NAME}')"
    except Exception as e:  # noqa: BLE001 - offline or renamed: the same values, hard-coded
        d = dict(GEMMA2_2B, device=device, dtype=dtype)
        source = f"{MODEL_NAME} config.json, hard-coded ({type(e).__name__} from TransformerLens)"
    d.update(init_weights=False, seed=0, tokenizer_prepends_bos=False)
    if shrink:  # the dry run: the same architecture, small
        n = HOOK_LAYER + 3
        d.update(n_layers=n, d_model=64, d_head=16, n_heads=4, n_key_value_heads=2, d_mlp=128, n_params=None)
        d.update(d_vocab=4096, d_vocab_out=4096, rotary_dim=16, attn_scale=4.0)
        d["attn_types"] = (d.get("attn_types") or ["global"] * n)[:n]
        source += ", shrunk for the dry run"
    return HookedTransformerConfig.from_dict(d), source


def stand_in_tokenizer(vocab_size: int):
    """Word-level: Gemma's specials and chat markers, the template's words, then w0, w1, ... up to
    the model's vocabulary size (so synthetic token ids span the whole unembedding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = list(dict.fromkeys(SPECIALS + TEMPLATE_WORDS))
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[4:],
    )
    tok.padding_side = "right"
    folder = tempfile.mkdtemp(prefix="gpu_check_tokenizer_")  # TransformerLens re-loads it from its folder
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@torch.no_grad()  # not inference_mode: inference tensors as parameters break the fast blocks' caches
def random_model(cfg, tok):
    from transformer_lens import HookedTransformer

    from unlearn_core.model.fast_blocks import use_fast_attention, use_fast_gated_mlps, use_fast_unembed

    with torch.device(cfg.device):  # allocate on the device directly (2.6B parameters)
        model = HookedTransformer(cfg, tokenizer=tok)
    g = torch.Generator(cfg.device).manual_seed(0)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=g, device=p.device).to(p.dtype) / p.shape[-2] ** 0.5)
        elif name.split(".")[-1].startswith("w"):  # norm scales
            p.fill_(1.0)
        else:
            p.zero_()
    model.eval()
    # as unlearn_core.model.models.load_model does for every model it loads
    use_fast_gated_mlps(model)
    use_fast_attention(model)
    use_fast_unembed(model)
    return model


@torch.no_grad()
def random_sae(d_in: int, d_sae: int, device: str):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from unlearn_core.model.saes import LoadedSAE

    hook = f"blocks.{HOOK_LAYER}.hook_resid_post"
    cfg = JumpReLUSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        dtype="float32",
        device=device,
        apply_b_dec_to_input=False,
        normalize_activations="none",
        metadata=SAEMetadata(model_name="gemma-2-2b-it (random)", hook_name=hook),
    )
    sae = JumpReLUSAE(cfg)
    g = torch.Generator(device).manual_seed(1)
    sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g, device=device) / d_in**0.5)
    w = torch.randn(d_sae, d_in, generator=g, device=device)
    sae.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))  # unit-norm decoder rows, as Gemma Scope's
    sae.b_enc.copy_(torch.randn(d_sae, generator=g, device=device) * 0.1)
    sae.b_dec.zero_()
    sae.threshold.fill_(0.0)  # set by calibrate()
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return LoadedSAE(SAE_KEY, sae, hook, d_sae, d_in, source="random (gpu_check)")


def synthetic_questions(n: int, vocab_size: int, seed: int = 0) -> list[Question]:
    """``n`` questions whose chat prompts are 150-250 tokens (the stand-in tokenizer: one word, one
    token; ~30 tokens of instruction and chat template around the question and choices)."""
    rng = random.Random(seed)
    first = len(dict.fromkeys(SPECIALS + TEMPLATE_WORDS))

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(vocab_size - first)}" for _ in range(k))

    out = []
    for i in range(n):
        total = rng.randint(150, 250) - 30
        lens = [rng.randint(3, 25) for _ in range(4)]
        stem = max(10, total - sum(lens))
        out.append(
            Question(
                f"synthetic-{i}",
                words(stem) + " ?",
                tuple(words(k) for k in lens),
                rng.randrange(4),
                "biology",
                "synthetic",
            )
        )
    return out


@torch.inference_mode()
def calibrate(engine, questions: list[Question], l0: int, n_select: int) -> tuple[float, list[int]]:
    """Set the SAE threshold so ~``l0`` features fire per token on these prompts; return the
    measured L0 and the features by firing frequency (most frequent first)."""
    from unlearn_core.evaluation.mcq import format_prompt
    from unlearn_core.model.forward import tokenize

    model, loaded = engine.model, engine.saes[SAE_KEY]
    sae = loaded.sae
    tokens, lens = tokenize(model, [format_prompt(q, engine.prompt_format, model.tokenizer) for q in questions])
    got = {}
    with model.hooks(fwd_hooks=[(loaded.hook_name, lambda x, hook: got.__setitem__("x", x))]):
        model(tokens.to(model.cfg.device), stop_at_layer=HOOK_LAYER + 1)
    pos = torch.arange(tokens.shape[1])
    mask = ((pos[None] >= 1) & (pos[None] < lens[:, None])).to(got["x"].device)  # not BOS, not padding
    x = got["x"][mask].to(sae.W_enc.dtype)
    pre = x @ sae.W_enc + sae.b_enc
    sae.threshold.fill_(float(pre.topk(l0, dim=-1).values[:, -1].median()))
    fires = sae.encode(x) > 0
    freq = fires.float().mean(0)
    return float(fires.sum(-1).float().mean()), [int(f) for f in freq.argsort(descending=True)[:n_select]]


def build_engine(device: str, shrink: bool, d_sae: int):
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.engine import engine_from_parts
    from unlearn_core.model.models import pick_dtype, torch_dtype

    dtype_name = pick_dtype("auto", device)  # what the engine would use on this device
    cfg, source = model_config(device, torch_dtype(dtype_name), shrink)
    tok = stand_in_tokenizer(cfg.d_vocab)
    model = random_model(cfg, tok)
    sae = random_sae(cfg.d_model, d_sae, device)
    settings = load_settings(
        {
            "model": "gemma-2-2b-it-random",
            "saes": [SAE_KEY],
            "device": device,
            "dtype": dtype_name,
            "prompt_format": "chat",
            "scoring": "letter",
            "cache_dir": tempfile.mkdtemp(prefix="gpu_check_cache_"),
        }
    )
    engine = engine_from_parts(model, [sae], settings, model_name="gemma-2-2b-it-random")
    return engine, source, dtype_name


# --------------------------------------------------------------------------- the server


def server_latency(engine, q: Question, feats: list[int], repeats: int) -> tuple[float, list[float]]:
    """First /api/mcq call on a question (builds its cache), then ``repeats`` one-value calls."""
    import uvicorn

    from unlearn_core.server import create_app
    from unlearn_core.server.client import UnlearnClient

    port = free_port()
    app = create_app(lambda: engine, token="")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", workers=1))
    th = threading.Thread(target=server.run, name="gpu-check-server", daemon=True)
    th.start()
    try:
        client = UnlearnClient(f"http://127.0.0.1:{port}", token="")
        client.wait_ready(timeout=120)
        body = {"question": q.question, "choices": list(q.choices), "answer": q.answer, "subject": q.subject}
        ivs = [{"sae": SAE_KEY, "features": feats, "value": 50.0, "mode": "clamp"}]
        t = time.perf_counter()
        client.mcq(question=body, interventions=ivs, values=[50.0])
        first = time.perf_counter() - t
        one = []
        for i in range(repeats):  # values 7 apart: the server prefetches only c +- 1
            t = time.perf_counter()
            r = client.mcq(question=body, interventions=ivs, values=[1.0 + 7 * i])
            one.append(time.perf_counter() - t)
            assert len(r["curve"]) == 1, r
        return first, one
    finally:
        server.should_exit = True
        th.join(30)


# --------------------------------------------------------------------------- the unit tests


def run_pytest(args: list[str], env: dict, timeout: float, forbid_skips: bool = False) -> str:
    """Run pytest in a subprocess; its summary line, or an exception (failures, timeout, and with
    ``forbid_skips`` any skipped test: the parity tests must really run)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        sys.stdout.write(out[-3000:])
        raise RuntimeError(f"timed out after {timeout:.0f} s ({out.count('.')} dots so far)") from None
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    summary = next(
        (
            ln.strip("= ")
            for ln in reversed(lines)
            if re.search(
                r"\b(passed|failed|error|skipped|"
                r"deselected|no tests ran)\b",
                ln,
            )
        ),
        "",
    )
    if p.returncode != 0:
        sys.stdout.write(p.stdout[-6000:] + p.stderr[-2000:])
        raise RuntimeError(f"pytest exit {p.returncode}: {summary or 'no summary'}")
    if forbid_skips and re.search(r"\bskipped\b", summary):
        sys.stdout.write(p.stdout[-3000:])
        raise RuntimeError(f"tests were skipped: {summary}")
    return f"{summary} (wall {time.perf_counter() - t:.0f} s)"


# --------------------------------------------------------------------------- the table


NOTES = [
    "Random weights of real shapes: speed does not depend on weights; accuracies are meaningless.",
    "Stand-in word-level tokenizer (no Gemma tokenizer offline) and synthetic questions of WMDP-bio-like "
    "length; the clamped features fire from the first token on, so every clamp recomputes all blocks "
    "after layer 7 (an upper bound on the work).",
    "Server: create_app(engine) served by uvicorn over HTTP in a thread of this process "
    "(`unlearn serve` loads models by name only); the client runs in the same process.",
]


class Table:
    """The rows so far; the markdown file is rewritten after every row (a killed run leaves its rows)."""

    def __init__(self, title: str, out: Path):
        self.title, self.out = title, out
        self.rows: list[tuple[str, str]] = []
        self.failed: list[str] = []
        self.done = False
        out.parent.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        print(f"  {name}: {value}", flush=True)
        self.out.write_text(self.markdown())

    def step(self, name: str, fn, *needs):
        """Run ``fn()`` (returns a value string, or (value, result)); a failure is a FAILED row,
        and a step whose inputs failed is a skipped row; both make the check fail."""
        if any(n is None for n in needs):
            self.failed.append(name)
            self.add(name, "SKIPPED: an earlier step it needs failed")
            return None
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - reported in the table, and the exit status
            traceback.print_exc()
            self.failed.append(name)
            self.add(name, f"FAILED: {type(e).__name__}: {str(e)[:300]}".replace("|", "/").replace("\n", " "))
            return None
        value, result = out if isinstance(out, tuple) else (out, True)
        self.add(name, value)
        return result

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", "| what | value |", "| --- | --- |"]
        lines += [f"| {n} | {v} |" for n, v in self.rows]
        lines += [""] + [f"* {n}" for n in NOTES]
        if self.failed:
            status = f"FAILED steps: {', '.join(self.failed)}"
        else:
            status = "all steps passed" if self.done else "INCOMPLETE: the check has not finished"
        return "\n".join(lines + ["", status, ""])

    def finish(self) -> str:
        self.done = True
        md = self.markdown()
        self.out.write_text(md)
        return md


# a test module that imports streamlit, or the AppTest fixtures of test_app
USES_STREAMLIT = re.compile(r"^\s*(from streamlit\b|import streamlit\b|from test_app import)", re.M)


def default_unit_tests(dry_run: bool, have_streamlit: bool) -> str:
    """The unit-test step's pytest arguments. A GPU image may lack streamlit (the H200 image did):
    the test modules that import it are AppTest UI tests, not device code, so they are left out by
    name, in the row's label, rather than failing the whole step at collection."""
    if dry_run:
        return "tests/unit/evaluation/test_mcq.py"
    args = "-m 'not integration and not browser and not cuda'"
    if not have_streamlit:
        ui = sorted(f for f in (ROOT / "tests").rglob("test_*.py") if USES_STREAMLIT.search(f.read_text()))
        args += "".join(f" --ignore {f.relative_to(ROOT)}" for f in ui)
    return args


def default_out(dry_run: bool) -> Path:
    name = "gpu_check_dry_run.md" if dry_run else "gpu_check.md"
    return Path(os.environ["OUT"]) / name if os.environ.get("OUT") else ROOT / "bench" / "results" / name


def gpu_name() -> str:
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)"
    return "none (CPU dry run)"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, small shapes, few questions: every step, quickly")
    p.add_argument("--out", help="markdown file (default $OUT/gpu_check.md, else bench/results/gpu_check.md)")
    p.add_argument("--questions", type=int, help="questions scored for one clamp (default 1273; dry run 16)")
    p.add_argument("--sweep-questions", type=int, help="questions of the 16-configuration sweep (100; dry run 4)")
    p.add_argument("--server-repeats", type=int, help="one-value /api/mcq calls timed (20; dry run 4)")
    p.add_argument("--l0", type=int, default=64, help="features firing per token in the random SAE (default 64)")
    p.add_argument(
        "--unit-tests",
        default=None,
        help="pytest arguments of the unit-test step (default: -m 'not integration and not browser "
        "and not cuda'; dry run: tests/unit/evaluation/test_mcq.py)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="the whole check's time budget; the unit-test step gets what is left (at least 60 s)",
    )
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    sz = sizes(args)
    device = sz["device"]
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available (use --dry-run for the CPU rehearsal)", file=sys.stderr)
        return 2
    title = "GPU check" + (" (CPU dry run: small shapes, few questions)" if args.dry_run else "")
    tab = Table(title, Path(args.out) if args.out else default_out(args.dry_run))
    cuda = torch.version.cuda or "none"
    tab.add("GPU", gpu_name())
    tab.add(
        "torch / CUDA / host",
        f"{torch.__version__} / CUDA {cuda} / {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def build():
        t = time.perf_counter()
        engine, source, dtype = build_engine(device, sz["shrink"], sz["d_sae"])
        sync(device)
        c = engine.model.cfg
        n = sum(p.numel() for p in engine.model.parameters())
        tab.add(
            "model",
            f"gemma-2-2b-it shapes ({source}): {c.n_layers} layers, d_model {c.d_model}, "
            f"vocab {c.d_vocab}, {n / 1e6:,.0f}M parameters, random weights, {dtype} on {device}",
        )
        return f"{time.perf_counter() - t:.1f} s", engine

    engine = tab.step("build engine (random model + SAE + stand-in tokenizer)", build)
    qs = synthetic_questions(sz["questions"], engine.model.cfg.d_vocab if engine else 256000)
    sweep_qs = qs[: sz["sweep_questions"]]

    def calib():
        from unlearn_core.evaluation.mcq import format_prompt
        from unlearn_core.model.forward import tokenize

        l0, feats = calibrate(engine, qs[:16], args.l0, 40)
        n_tok = [len(tokenize(engine.model, [format_prompt(q, "chat", engine.model.tokenizer)])[0][0]) for q in qs]
        s = engine.saes[SAE_KEY]
        tab.add(
            "SAE",
            f"random JumpReLU via JumpReLUSAEConfig at {s.hook_name}, d_in {s.d_in}, d_sae {s.d_sae}, "
            f"measured L0 {l0:.0f}",
        )
        tab.add(
            "questions",
            f"{len(qs)} synthetic, chat prompt {min(n_tok)}-{max(n_tok)} tokens "
            f"(mean {sum(n_tok) / len(n_tok):.0f}); letter scoring, batches of 8",
        )
        return f"L0 {l0:.0f}; clamped: the 10/20 most frequent features", feats

    feats = tab.step("calibration: SAE threshold, clamped features", calib, engine)
    iv = [Intervention(SAE_KEY, tuple(feats[:20]), 50.0)] if feats else None

    def warm():
        t = time.perf_counter()
        score_questions(engine, qs[:8], iv)
        evaluate_configs(engine, qs[:1], [iv], scoring="letter", style="chat")
        sync(device)
        return f"{time.perf_counter() - t:.1f} s (first calls: kernels, allocator; not in the figures below)"

    tab.step("warm-up", warm, engine, iv)

    def score_all(ivs, label):
        def run():
            t = time.perf_counter()
            scores = score_questions(engine, qs, ivs)
            sync(device)
            dt = time.perf_counter() - t
            assert len(scores) == len(qs)
            return f"{dt:.1f} s, {len(qs) / dt:.1f} questions/s ({label})"

        return run

    tab.step(f"{len(qs)} questions, clean model", score_all(None, "mcq.score_questions, as `eval`"), engine)
    tab.step(
        f"{len(qs)} questions, one clamp (20 features, c=50)",
        score_all(iv, "the same path with the clamp hooks"),
        engine,
        iv,
    )

    def sweep():
        from unlearn_core.method import fastpath

        sets = (feats[:20], feats[20:40])  # two "retain thresholds" = two feature lists
        configs = [
            [Intervention(SAE_KEY, tuple(fs[:n]), float(c))]
            for fs in sets
            for n in (10, 20)
            for c in (25, 50, 100, 200)
        ]
        fastpath._LRU.clear()
        t = time.perf_counter()
        res = evaluate_configs(engine, sweep_qs, configs, scoring="letter", style="chat")
        sync(device)
        dt = time.perf_counter() - t
        assert len(res) == 16 and all(r.total == len(sweep_qs) for r in res)
        n = len(configs) * len(sweep_qs)
        return f"{dt:.1f} s, {n / dt:.1f} configuration-questions/s (sweep.evaluate_configs)"

    tab.step(f"sweep: 16 configurations x {len(sweep_qs)} questions", sweep, engine, feats)

    def server():
        first, one = server_latency(engine, qs[0], feats[:20], sz["server_repeats"])
        return (
            f"first call {first * 1000:.0f} ms (builds the question's cache); one clamp value p50 "
            f"{pct(one, 0.5) * 1000:.0f} ms, p95 {pct(one, 0.95) * 1000:.0f} ms over {len(one)} calls"
        )

    tab.step("server /api/mcq (uvicorn, HTTP, in-process engine)", server, engine, feats)
    if device == "cuda":
        tab.add("peak GPU memory (benchmark)", f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")

    parity_env = {"UNLEARN_PARITY_DEVICE": device}
    tab.step(
        "CUDA vs CPU parity tests (-m cuda)" + (" [dry run: cpu vs cpu]" if args.dry_run else ""),
        lambda: run_pytest(["-m", "cuda", "tests/unit/model/test_cuda_parity.py"], parity_env, 300, forbid_skips=True),
    )
    unit = (
        args.unit_tests
        if args.unit_tests is not None
        else default_unit_tests(args.dry_run, importlib.util.find_spec("streamlit") is not None)
    )
    left = max(60.0, args.budget_s - (time.perf_counter() - t_start))
    tab.step(
        f"unit tests, UNLEARN_TEST_DEVICE={device} ({unit})",
        lambda: run_pytest(shlex.split(unit), {"UNLEARN_TEST_DEVICE": device}, left),
    )
    tab.add("total wall time", f"{time.perf_counter() - t_start:.0f} s")

    md = tab.finish()
    print("\n" + md)
    print(f"written to {tab.out}")
    return 1 if tab.failed else 0


if __name__ == "__main__":
    sys.exit(main())
