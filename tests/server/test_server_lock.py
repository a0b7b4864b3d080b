"""The model lock: short holds, interactive requests first, the same numbers in steps, honest ETAs.

On the tiny backend (FastAPI TestClient). Long requests are made slow where a test needs them
to be slow by wrapping the real per-batch function with a sleep (the numbers stay the real
ones), and the step budget is made small, so a 10k-token request is many lock holds here as it
is on the embedded model.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
import torch
from api_helpers import app, client, engine, lock, ok, run_task, small_job, wait_job  # noqa: F401 (fixtures)

from unlearn_core.evaluation import mcq as M
from unlearn_core.evaluation import metrics as MT
from unlearn_core.features import stats as F
from unlearn_core.method.interventions import Intervention
from unlearn_core.server import jobs as J
from unlearn_core.server import steps as ST
from unlearn_core.server.model_lock import ModelLock

IV = {"sae": "tiny", "features": [2, 3, 4], "value": 20.0, "mode": "clamp"}
IVS = [Intervention("tiny", (2, 3, 4), 20.0)]
GEO = "mmlu:high_school_geography"


@contextmanager
def budget(app, seconds: float):
    state = app.state.server
    before = state.lock_budget_s
    state.lock_budget_s = seconds
    try:
        yield state
    finally:
        state.lock_budget_s = before


def holds(client, label: str) -> dict:
    return ok(client.get("/api/info"))["lock_stats"]["by_label"].get(label, {"n": 0, "max_hold_s": 0.0})


def wait_until(cond, timeout: float = 10.0) -> None:
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "timed out"
        time.sleep(0.002)


# ---------------------------------------------------------------- the lock itself


def test_release_hands_the_lock_to_a_waiter_before_the_holder_takes_it_again():
    """The defect behind 11: with threading.RLock, work that released the lock between chunks
    took it straight back, so a waiting request waited for the whole computation."""
    lk = ModelLock()
    order: list[str] = []
    lk.acquire(label="long")

    def waiter():
        with lk:
            order.append("waiter")

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: lk.interactive_waiting() == 1)
    for _ in range(3):  # the long work's next chunks, released and taken again at once
        lk.release()
        lk.acquire(label="long")
        order.append("long")
    lk.release()
    t.join(5)
    assert order[0] == "waiter", order


def test_waiting_interactive_acquirer_beats_a_waiting_background_one():
    lk = ModelLock()
    order: list[str] = []
    lk.acquire(label="holder")

    def take(name: str, background: bool):
        lk.acquire(background=background, label=name)
        order.append(name)
        lk.release()

    bg = threading.Thread(target=take, args=("job", True))
    bg.start()
    wait_until(lambda: len(lk._background) == 1)  # the job chunk queued first ...
    ia = threading.Thread(target=take, args=("request", False))
    ia.start()
    wait_until(lambda: lk.interactive_waiting() == 1)  # ... then a request
    lk.release()
    bg.join(5)
    ia.join(5)
    assert order == ["request", "job"]


def test_lock_is_reentrant_times_outermost_holds_and_times_out():
    lk = ModelLock()
    with lk:
        with lk:  # the same thread again: no deadlock
            assert lk.owned()
        assert lk.owned()
        got: list[bool] = []
        t = threading.Thread(target=lambda: got.append(lk.acquire(timeout=0.05)))
        t.start()
        t.join(5)
        assert got == [False] and lk.interactive_waiting() == 0
    assert not lk.owned()
    s = lk.stats.summary()
    assert s["n"] == 1 and s["longest"][0] == "model" and s["by_label"]["model"]["n"] == 1
    with pytest.raises(RuntimeError):
        lk.release()


def test_run_steps_keeps_holds_within_the_budget(app, client):
    state = app.state.server
    with budget(app, 0.12):
        before = holds(client, "unit steps")["n"]
        n = ST.run_steps(state, (lambda engine: time.sleep(0.05) for _ in range(10)), "unit steps")
        after = holds(client, "unit steps")
    assert n == after["n"] - before >= 4  # 10 x 50 ms in holds of two steps
    assert after["max_hold_s"] < 0.3  # one hold for all would be 0.5 s


# ---------------------------------------------------------------- long requests let others in


@pytest.mark.parametrize(
    "path, body, label",
    [
        ("/api/perplexity", {"corpus": "wikitext", "interventions": [IV]}, "perplexity"),
        ("/api/loss_added", {"corpus": "webtext", "interventions": [IV]}, "loss_added"),
    ],
)
def test_long_request_releases_the_lock_and_lets_a_request_in(app, client, monkeypatch, path, body, label):
    real = MT.target_logprobs
    started = threading.Event()

    def slow(*args):  # the real numbers, slower: 40 windows' log-probs, 50 ms each, per pass
        started.set()
        time.sleep(0.05)
        return real(*args)

    monkeypatch.setattr(MT, "target_logprobs", slow)
    done: dict[str, float] = {}
    before = holds(client, label)["n"]

    def long():
        run_task(client, path, body)  # default n_tokens 10k (loss_added: a new clean baseline): a task
        done["long"] = time.perf_counter()

    with budget(app, 0.2):
        t = threading.Thread(target=long)
        t.start()
        assert started.wait(10)
        t0 = time.perf_counter()
        for text in ("a", "bb", "ccc"):
            ok(client.post("/api/tokenize", json={"text": text}))
        done["tokenize"] = time.perf_counter()
        t.join(60)
    assert done["tokenize"] < done["long"], "the short request waited for the whole long one"
    assert done["tokenize"] - t0 < 2.0
    after = holds(client, label)
    assert after["n"] - before > 5  # many holds, each about the budget
    assert after["max_hold_s"] < 1.0  # ~0.2 s; a hold over the whole request would be > 2 s


# ---------------------------------------------------------------- the same numbers in steps


def test_perplexity_and_loss_added_in_steps_equal_metrics_exactly(app, client, engine, lock, monkeypatch):
    n, ctx = 3_000, 256
    monkeypatch.setattr(MT, "FORWARD_LAYERS", 1)  # the tiny model's 2 blocks in 2 steps
    with budget(app, 0.0):  # one step per hold
        ppl = run_task(
            client, "/api/perplexity", {"corpus": "wikitext", "part": "heldout", "n_tokens": n, "interventions": [IV]}
        )
        la = run_task(client, "/api/loss_added", {"corpus": "wikitext@heldout", "interventions": [IV], "n_tokens": n})
    with lock:
        docs = F.corpus_docs(engine, "wikitext@heldout")
        base = MT.perplexity(engine, docs, None, n_tokens=n, ctx=ctx)
        inter = MT.perplexity(engine, docs, IVS, n_tokens=n, ctx=ctx)
        windows = MT.corpus_windows(engine.model, docs, n, ctx)
        clean = MT.mean_nll(engine, windows, None)[0]  # not the disk cache: the computation itself
    assert len(windows) > 4  # several steps
    assert (ppl["base"]["mean_nll"], ppl["base"]["n_tokens"]) == (base["mean_nll"], base["n_tokens"])
    assert ppl["base"]["perplexity"] == base["perplexity"]
    assert (ppl["intervened"]["mean_nll"], ppl["intervened"]["perplexity"]) == (inter["mean_nll"], inter["perplexity"])
    assert (la["clean_loss"], la["intervened_loss"]) == (clean, inter["mean_nll"])
    assert la["loss_added"] == inter["mean_nll"] - clean
    # the clean baseline went to the cache entry metrics.clean_nll_cached reads
    assert MT.clean_nll_path(engine, "wikitext@heldout", windows).is_file()
    with lock:
        assert MT.clean_nll_cached(engine, "wikitext@heldout", windows) == clean


def test_long_windows_use_smaller_batches_with_the_same_numbers(app, client, engine, lock, monkeypatch):
    monkeypatch.setattr(MT, "FORWARD_LAYERS", 1)
    with budget(app, 0.0):
        ppl = run_task(client, "/api/perplexity", {"corpus": "webtext", "n_tokens": 2_000, "ctx": 512})
    with lock:
        windows = MT.corpus_windows(engine.model, F.corpus_docs(engine, "webtext@all"), 2_000, 512)
        ref = MT.mean_nll(engine, windows, None, batch_size=MT.nll_batch_size(512))
    assert MT.nll_batch_size(512) == 2 and MT.nll_batch_size(256) == MT.NLL_BATCH
    assert (ppl["base"]["mean_nll"], ppl["base"]["n_tokens"]) == ref


def test_feature_statistics_in_steps_equal_one_pass(app, engine, lock, tmp_path):
    state = app.state.server
    with budget(app, 0.0):
        st = ST.feature_stats_chunked(state, "tiny", "wikitext@train", 7_000)
    assert st.window_max.shape[0] > 16 * 3  # several batches of 16 windows
    with lock:
        own = engine.settings.cache_dir
        engine.settings.cache_dir = str(tmp_path)  # a fresh cache: computed in one pass here
        try:
            ref = F.feature_stats(engine, "tiny", "wikitext@train", n_tokens=7_000)
        finally:
            engine.settings.cache_dir = own
        again = F.feature_stats(engine, "tiny", "wikitext@train", n_tokens=7_000)  # reads the server's entry
    for name in ("freq", "mean_act", "mean_active", "max_act", "hist", "window_max"):
        assert torch.equal(getattr(st, name), getattr(ref, name)), name
        assert torch.equal(getattr(again, name), getattr(ref, name)), name
    assert st.n_tokens == ref.n_tokens and st.windows == ref.windows


@pytest.mark.parametrize("strict", [False, True])
def test_known_filter_in_steps_equals_known_questions_and_shares_its_cache(app, engine, lock, monkeypatch, strict):
    state = app.state.server
    qs = state.question_set(GEO).questions[20:30]
    with lock:
        fit = [q for q in qs if ST.fits_context(engine, q)]
        ref = M.known_questions(engine, fit[:8], use_cache=False, strict=strict)
        ref += M.known_questions(engine, fit[8:], use_cache=False, strict=strict)
    with budget(app, 0.0):
        got, skipped = ST.select_questions(state, qs, known=True, strict=strict)
    assert [q.id for q in got] == [q.id for q in ref] and skipped == len(qs) - len(fit)

    def no_scoring(*a, **k):
        raise AssertionError("recomputed: the server wrote another cache entry")

    monkeypatch.setattr(M, "score_questions", no_scoring)
    with lock:  # the engine's own known filter now reads what the server wrote
        assert M.known_questions(engine, fit[:8], strict=strict) == [q for q in ref if q in fit[:8]]


def test_mcq_curve_and_generation_in_steps_equal_one_pass(app, client, engine, lock):
    qid = ok(client.get("/api/questions", params={"set": "wmdp-bio", "limit": 1}))["questions"][0]["id"]
    values = [float(v) for v in range(0, 200, 10)]  # 20 values: 3 steps
    with budget(app, 0.0):
        r = ok(client.post("/api/mcq", json={"question_id": qid, "interventions": [IV], "values": values}))
        g = ok(
            client.post(
                "/api/generate",
                json={
                    "prompt": "The virus",
                    "interventions": [IV],
                    "max_new_tokens": 12,
                    "temperature": 0.8,
                    "seed": 3,
                },
            )
        )
    _, q = app.state.server.find_question("wmdp-bio", qid)
    with lock:
        curve = M.score_curve(engine, q, IVS, values)
        base = MT.generate(engine, "The virus", None, max_new_tokens=12, temperature=0.8, seed=3)
        inter = MT.generate(engine, "The virus", IVS, max_new_tokens=12, temperature=0.8, seed=3)
    assert [p["score"]["probs"] for p in r["curve"]] == [s.probs for s in curve]
    assert (g["base"], g["intervened"]) == (base, inter)


def test_generation_steps_match_generate_with_other_work_in_between(engine, lock):
    """Token by token, with the random state and hooks of other work in between, the text is
    what TransformerLens's generate gives (greedy, sampled, clamped, stopping at EOS)."""
    for ivs, temp, seed in ((None, 0.0, 0), (IVS, 0.0, 0), (None, 1.0, 3), (IVS, 0.7, 11)):
        with lock:
            ref = MT.generate(engine, "Anthrax is", ivs, max_new_tokens=40, temperature=temp, seed=seed)
        g = MT.Generation(engine, "Anthrax is", ivs, max_new_tokens=40, temperature=temp, seed=seed)
        while not g.done:
            with lock:
                g.step(engine)
                torch.manual_seed(99)  # someone else's sampling
                torch.rand(5)
                MT.mean_nll(engine, [[1, 5, 6, 7]], IVS)  # someone else's hooks
        with lock:
            assert g.text() == ref, (ivs, temp, seed)


# ---------------------------------------------------------------- jobs


def test_eta_counts_only_the_configurations_phase():
    job = J.Job(
        id="x",
        spec={"thresholds": [0.01], "ns": [10, 20], "values": [1.0, 2.0, 3.0]},
        namespace="",
        created=0.0,
        status="running",
        started=1000.0,
    )
    assert job.total == 7
    job.results = [{"config": "none"}]  # setup: known filter, statistics and the baseline took 100 s
    job.phase, job.phase_started = "configurations", 1100.0
    s = job.summary(now=1105.0)
    assert s["phase"] == "configurations" and s["eta_s"] is None  # no rate yet: none computed in this phase
    job.results += [{"config": c} for c in "abc"]  # one selection's 3 values, done together at 1130
    job.work_done, job.last_work = 3, 1130.0
    s = job.summary(now=1130.0)
    assert s["rate_per_min"] == pytest.approx(6.0)  # 3 in 30 s, not 4 in 130 s
    assert s["eta_s"] == pytest.approx(30.0)  # 3 left, 10 s each
    assert job.summary(now=1140.0)["eta_s"] == pytest.approx(20.0)  # the next group is a third done
    job.empty_left = 3  # the next selection is empty: nothing to compute, nothing to wait for
    assert job.summary(now=1130.0)["eta_s"] == 0.0


def test_job_reports_phases_runs_in_the_background_and_equals_one_pass(app, client, engine, lock):
    spec = small_job(question_limit=3, selection_tokens=300, loss_tokens=600, delay_per_config=0.3)
    with budget(app, 0.0):
        jid = ok(client.post("/api/jobs", json=spec), 201)["id"]
        seen: list[tuple] = []
        stages: list[tuple] = []
        end = time.time() + 60
        while True:
            s = ok(client.get(f"/api/jobs/{jid}"))
            seen.append((s["phase"], s["eta_s"]))
            stages.append((s["phase"], s["stage_done"], s["stage_total"], s["stage_eta_s"], s["eta_s"]))
            if s["status"] in ("done", "failed", "cancelled"):
                break
            assert time.time() < end
            time.sleep(0.02)
    j = wait_job(client, jid)
    assert j["status"] == "done", j
    assert "configurations" in {p for p, _ in seen} and any(e is not None for p, e in seen if p == "configurations")
    # issue 35: before the first configuration sets the run's rate, the stage's steps and ETA show;
    # each stage's announced total is exactly the steps it takes (never passed, and reached)
    assert all(d <= t for _, d, t, _, _ in stages if t is not None), stages
    for phase in ("baseline", "configurations"):
        assert any(p == phase and 0 < d == t for p, d, t, _, _ in stages), (phase, stages)
    assert any(p == "baseline" and se is not None and e is None for p, _, _, se, e in stages), stages
    assert j["setup_s"] is not None and j["phase"] is None
    labels = ok(client.get("/api/info"))["lock_stats"]["by_label"]
    assert "background: configurations" in labels and "background: baseline" in labels
    # the accuracies and loss of a configuration equal the one-pass computation
    from unlearn_core.evaluation.sweep import evaluate_configs

    row = {r["config"]: r for r in j["results"]}["t=0.5|n=2|c=50"]
    configs = [[Intervention("tiny", tuple(row["features"]), v, "clamp")] for v in (10.0, 50.0)]  # as the job
    iv = configs[1]
    state = app.state.server
    forget = state.question_set("wmdp-bio").questions[:3]
    geo = state.question_set(GEO).questions[:3]
    with lock:
        forget = [q for q in forget if ST.fits_context(engine, q)]
        geo = [q for q in geo if ST.fits_context(engine, q)]
        r_f, r_g = (evaluate_configs(engine, qs, configs)[1] for qs in (forget, geo))
        windows = F.windows_for(engine, F.corpus_docs(engine, "webtext"), 600, 256)
        loss = MT.mean_nll(engine, windows, iv)[0] - MT.mean_nll(engine, windows, None)[0]
    assert (row["forget_accuracy"], row["side_effect_accuracy"][GEO]) == (r_f.accuracy, r_g.accuracy)
    assert row["loss_added"] == loss
