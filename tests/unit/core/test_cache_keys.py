"""Every disk cache is keyed by what it was computed from, never by a name or ids alone (issue:
silent stale results). Each test makes the same name or ids point at other content and checks
the cache misses (the result equals an uncached computation); an unchanged input still hits,
counted by the model's forward calls."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_helpers import ForwardCounter

from unlearn_core.core import cache as C
from unlearn_core.data.loaders import Question
from unlearn_core.evaluation import metrics as MT
from unlearn_core.evaluation.mcq import known_path, known_questions
from unlearn_core.evaluation.targets import Target
from unlearn_core.features import stats as F
from unlearn_core.method import gate as G
from unlearn_core.model.tiny import tiny_engine
from unlearn_core.training import rmu

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())

WORDS = ("red", "blue", "cat", "dog", "sun", "moon", "tree", "rock", "fish", "bird", "milk", "salt", "gold", "iron")


def question_set(seed: int, n: int = 12) -> list[Question]:
    """``n`` questions with ids q0..q(n-1); another seed gives other text, choices and answers."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.sample(WORDS, 6)
        out.append(
            Question(
                f"q{i}", f"Which one is {words[0]} {words[1]}?", tuple(words[2:6]), rng.randrange(4), "toys", "test"
            )
        )
    return out


@pytest.fixture
def engine(tmp_path):
    return tiny_engine(cache_dir=str(tmp_path / "cache"))


def test_same_ids_other_content_miss_the_known_cache(engine):
    """The issue's reproduction: set B has set A's ids and other questions."""
    a, b = question_set(1), question_set(2)
    assert [q.id for q in a] == [q.id for q in b]
    known = lambda qs, **kw: [q.id for q in known_questions(engine, qs, scoring="cloze", **kw)]  # noqa: E731
    truth_a, truth_b = known(a, use_cache=False), known(b, use_cache=False)
    assert truth_a and truth_a != truth_b  # told apart by what the model answers
    assert known(a) == truth_a
    assert known_path(engine, a, scoring="cloze") != known_path(engine, b, scoring="cloze")
    assert known(b) == truth_b  # before the fix: truth_a, from the cache


@pytest.mark.parametrize("change", ["text", "choice", "answer"])
def test_one_edited_question_misses_the_known_cache(engine, change):
    a = question_set(3)
    q = a[5]
    edited = {
        "text": dict(question=q.question + " Really?"),
        "choice": dict(choices=(q.choices[0] + "s",) + q.choices[1:]),
        "answer": dict(answer=(q.answer + 1) % 4),
    }[change]
    b = a[:5] + [Question(**{**q.__dict__, **edited})] + a[6:]
    assert known_path(engine, a) != known_path(engine, b)


def test_an_unchanged_set_hits_the_cache_without_a_forward_pass(engine):
    a = question_set(4)
    with ForwardCounter(engine.model) as first:
        known = known_questions(engine, a, scoring="cloze")
    assert first.n > 0 and known
    with ForwardCounter(engine.model) as second:
        again = known_questions(engine, list(a), scoring="cloze")  # an equal list, built anew
    assert second.n == 0 and again == known


def test_weights_changed_under_the_same_model_name_miss(engine):
    a = question_set(5)
    before = known_path(engine, a)
    assert known_path(engine, a) == before  # stable while nothing changes
    with torch.no_grad():
        engine.model.blocks[0].mlp.W_out.mul_(1.5)  # a model folder rewritten, another hub revision
    assert engine.model_name == "tiny" and known_path(engine, a) != before


def test_an_sae_threshold_change_misses_the_statistics_cache(engine, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("alpha beta gamma delta " * 60)
    docs = F.corpus_docs(engine, str(corpus))
    before = F.stats_path(engine, "tiny", str(corpus), docs, 400, 32)
    with torch.no_grad():
        engine.saes["tiny"].sae.threshold.add_(0.01)  # W_enc and W_dec unchanged: the old fingerprint's sums
    assert F.stats_path(engine, "tiny", str(corpus), docs, 400, 32) != before


@pytest.fixture
def data_dir(tmp_path, shared_data):
    """A data folder whose WikiText-2 file the test may edit (the named corpus 'wikitext')."""
    d = tmp_path / "data"
    (d / "text").mkdir(parents=True)
    (d / "text" / "wikitext-2-raw.test.txt").write_text(" = Apples = \n\nApples grow on trees in the autumn .\n" * 40)
    return d


def edit_wikitext(data_dir) -> None:
    (data_dir / "text" / "wikitext-2-raw.test.txt").write_text(
        " = Pears = \n\nSeven pears fell into the river .\n" * 40
    )


def test_a_named_corpus_edited_misses_the_statistics_cache(engine, data_dir):
    engine.settings.data_dir = str(data_dir)
    first = F.feature_stats(engine, "tiny", "wikitext", n_tokens=300, ctx=32)
    edit_wikitext(data_dir)
    second = F.feature_stats(engine, "tiny", "wikitext", n_tokens=300, ctx=32)
    assert second.windows != first.windows
    fresh = F.StatsAccumulator(engine, "tiny", second.windows)
    for i in range(fresh.n_batches):
        fresh.add(i)
    assert torch.equal(second.freq, fresh.result()["freq"])  # computed on the new text, not read back
    assert len(list(Path(engine.settings.cache_dir).glob("feature_stats/*"))) == 2


def test_a_named_corpus_edited_misses_the_gate_cache(engine, data_dir):
    engine.settings.data_dir = str(data_dir)
    a = G.calibrate(engine, "tiny", (3, 4), "wikitext", n_tokens=300, ctx=32)
    edit_wikitext(data_dir)
    b = G.calibrate(engine, "tiny", (3, 4), "wikitext", n_tokens=300, ctx=32)
    windows = F.windows_for(engine, F.corpus_docs(engine, "wikitext"), 300, 32)
    assert b.rhos == G.rho_of_tokens(engine, "tiny", (3, 4), windows) != a.rhos


def test_a_named_corpus_edited_misses_the_clean_loss_cache(engine, data_dir):
    engine.settings.data_dir = str(data_dir)
    docs = F.corpus_docs(engine, "wikitext")
    first = MT.loss_added(engine, docs, [], n_tokens=300, ctx=32, corpus="wikitext")
    edit_wikitext(data_dir)
    docs = F.corpus_docs(engine, "wikitext")
    second = MT.loss_added(engine, docs, [], n_tokens=300, ctx=32, corpus="wikitext")
    windows = MT.corpus_windows(engine.model, docs, 300, 32)
    assert second.clean_loss == pytest.approx(MT.mean_nll(engine, windows, None)[0], abs=1e-6)
    assert second.clean_loss != pytest.approx(first.clean_loss, abs=1e-3)


def test_an_rmu_run_is_never_reused_for_other_text_under_the_same_corpus_name(engine, tmp_path):
    forget = tmp_path / "forget.txt"
    forget.write_text("\n\n".join("1 2 3 4 + 5 = 6 " * 20 for _ in range(10)))
    retain = tmp_path / "retain.txt"
    retain.write_text("\n\n".join("the cat sat on a mat " * 20 for _ in range(10)))
    target = Target("toy", "toy", str(forget), "quiz:bio", (str(retain),), ("quiz:retain",))
    cfg = rmu.RMUConfig(
        layer=1, update_layers=(1,), steering_coeff=5.0, alpha=1.0, lr=1e-3, batch_size=2, steps=2, ctx=16, seed=0
    )
    card = rmu.train(engine, "r", target, cfg)
    assert rmu.train(engine, "r", target, cfg)["delta_sha256"] == card["delta_sha256"]  # same text: reused
    forget.write_text("\n\n".join("9 8 7 * 6 / 5 = 4 " * 20 for _ in range(10)))
    with pytest.raises(rmu.RMUError, match="already exists with other settings"):
        rmu.train(engine, "r", target, cfg)


def test_ray_worker_refuses_the_same_ids_with_other_content(shared_data, tmp_path):
    from unlearn_core.data.loaders import load_question_set
    from unlearn_core.evaluation.ray_backend import EngineWorker, make_tasks
    from unlearn_core.method.interventions import Intervention

    geo = "mmlu:high_school_geography"
    full = load_question_set(geo, str(shared_data)).questions
    tasks = make_tasks({geo: (geo, full, full[:3])}, [[[Intervention("tiny", (1,), 5.0)]]], parts=1)
    worker = EngineWorker.__new__(EngineWorker)
    worker.engine, worker.sets = tiny_engine(cache_dir=str(tmp_path)), {}
    worker.engine.settings.data_dir = str(shared_data)
    assert worker.questions(geo, tasks[0].refs, tasks[0].digest) == full[:3]
    worker.sets[geo] = [Question(**{**q.__dict__, "answer": (q.answer + 1) % 4}) for q in full]  # ids kept
    with pytest.raises(ValueError, match="other content"):
        worker.questions(geo, tasks[0].refs, tasks[0].digest)


def test_old_keys_are_ignored_and_cache_info_and_clear_work(engine, tmp_path):
    a = question_set(6)
    path = known_path(engine, a, scoring="cloze")
    assert path.parent.name == "known" and path.suffix == ".json"
    stale = path.parent / "0123456789abcdef01234567.json"  # an entry written under an earlier key scheme
    C.atomic_write_json(stale, [q.id for q in a])
    assert known_questions(engine, a, scoring="cloze") == known_questions(engine, a, scoring="cloze", use_cache=False)

    cache_dir = engine.settings.cache_dir
    run = lambda *args: subprocess.run(
        [
            sys.executable,
            "-m",
            "unlearn_core",
            "cache",
            *args,
            "--json",  # noqa: E731
            "--cache-dir",
            cache_dir,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    (Path(cache_dir) / "rmu" / "keep").mkdir(parents=True)
    (Path(cache_dir) / "rmu" / "keep" / "card.json").write_text("{}")
    info = json.loads(run("info").stdout)
    rows = {r["kind"]: r for r in info["kinds"]}
    assert info["version"] == C.CACHE_VERSION and rows["known"]["files"] == 2 and rows["rmu"]["files"] == 1
    assert all(r["key"] and r["invalidation"] for r in rows.values())
    bad = run("clear", "--kind", "nope")
    assert bad.returncode == 2 and "unknown cache kind" in bad.stderr
    gone = {r["kind"]: r["files"] for r in json.loads(run("clear").stdout)["removed"]}
    assert gone["known"] == 2 and "rmu" not in gone  # user results stay unless named
    assert not path.parent.exists() and (Path(cache_dir) / "rmu" / "keep" / "card.json").exists()
    assert json.loads(run("clear", "--kind", "rmu").stdout)["removed"] == [{"kind": "rmu", "files": 1, "bytes": 2}]


def test_the_cache_audit_page_is_generated_from_the_registry():
    from unlearn_core.core.cache_admin import audit_markdown, cache_kinds

    page = (ROOT / "docs" / "research" / "caches.md").read_text()
    regenerate = "python -m unlearn_core cache info --markdown > docs/research/caches.md"
    assert page == audit_markdown(), f"regenerate: {regenerate}"
    kinds = cache_kinds()
    assert {
        "known",
        "feature_stats",
        "baselines",
        "gate",
        "descriptions",
        "rmu",
        "question_sets",
        "slider_scores",
        "ray_question_refs",
    } <= set(kinds)


def test_the_server_reads_a_question_file_again_when_it_changed(tmp_path, shared_data):
    """The server keeps loaded sets in memory; an edited quiz file (same name, same ids) is read again."""
    import os
    import shutil

    from unlearn_core.server.state import ServerState

    data = tmp_path / "data"
    (data / "quiz").mkdir(parents=True)
    src = shared_data / "quiz" / "retain_quiz.dev.json"
    shutil.copy(src, data / "quiz" / "retain_quiz.dev.json")
    engine = tiny_engine(cache_dir=str(tmp_path / "cache"))
    engine.settings.data_dir = str(data)
    state = ServerState(lambda: engine)
    first = state.question_set("quiz:retain")
    assert state.question_set("quiz:retain") is first  # unchanged: served from memory
    rows = json.loads(src.read_text())
    rows[0]["question"] = "Edited: " + rows[0]["question"]
    path = data / "quiz" / "retain_quiz.dev.json"
    path.write_text(json.dumps(rows))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later modification time, whatever the clock
    second = state.question_set("quiz:retain")
    assert second is not first and second.questions[0].question.startswith("Edited: ")
    assert second.questions[0].id == first.questions[0].id
