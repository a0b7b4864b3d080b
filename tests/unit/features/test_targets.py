"""Targets, question files, the strict known filter and format-matched selection (no real model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

from unlearn_core.data import loaders as D
from unlearn_core.data.question_files import QuestionFileError, parse_question_file, split_part
from unlearn_core.data.questions import Question, fact_text
from unlearn_core.evaluation import mcq
from unlearn_core.evaluation import targets as T
from unlearn_core.features import stats as F
from unlearn_core.features import text_search as TXS

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


# ---------------------------------------------------------------- question files


def _json(tmp_path: Path, rows, name: str = "q.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(rows))
    return p


def test_json_question_file_keeps_extra_fields(tmp_path):
    p = _json(
        tmp_path,
        [
            {
                "question": "Q1?",
                "choices": ["a", "b", "c", "d"],
                "answer": 2,
                "id": "x1",
                "topic": "cells",
                "overlaps_bio": True,
            },
            {"question": "Q2?", "choices": ["a", "b", "c", "d"], "answer": "B"},
        ],
    )
    qs = parse_question_file(p)
    assert [q.answer for q in qs] == [2, 1]
    assert qs[0].extra == {"id": "x1", "topic": "cells", "overlaps_bio": True}
    assert qs[0].subject == "cells" and qs[0].id == "q:x1"
    assert qs[1].id.startswith("q:") and qs[1].id != qs[0].id


def test_csv_question_file_in_both_layouts(tmp_path):
    p = tmp_path / "mmlu_like.csv"
    p.write_text("question,choice0,choice1,choice2,choice3,answer\nWhat?,w,x,y,z,3\n")
    assert parse_question_file(p)[0].choices == ("w", "x", "y", "z")
    p2 = tmp_path / "letters.csv"
    p2.write_text("question,A,B,C,D,answer,topic\nWho?,w,x,y,z,C,history\n")
    q = parse_question_file(p2)[0]
    assert q.answer == 2 and q.extra["topic"] == "history"


@pytest.mark.parametrize(
    "rows,needle",
    [
        ([{"question": "Q?", "choices": ["a", "b", "c"], "answer": 0}], "expected 4 choices, got 3"),
        ([{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 4}], "out of range"),
        ([{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "E"}], "must be 0-3 or A-D"),
        ([{"question": "Q?", "choices": ["a", "b", "c", "d"]}], "missing 'answer'"),
        ([{"choices": ["a", "b", "c", "d"], "answer": 1}], "missing or empty 'question'"),
        ([{"question": "Q?", "answer": 1}], "missing 'choices'"),
        ({"not": "a list"}, "expected a JSON list"),
        ([], "no questions"),
    ],
)
def test_bad_json_question_files_say_what_is_wrong(tmp_path, rows, needle):
    p = _json(tmp_path, rows)
    with pytest.raises(QuestionFileError, match=needle) as e:
        parse_question_file(p)
    assert str(p) in str(e.value)


def test_bad_csv_and_paths(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("question,choice0,choice1,answer\nQ?,a,b,1\n")
    with pytest.raises(QuestionFileError, match="4 choice columns"):
        parse_question_file(p)
    p.write_text("question,A,B,C,D,answer\nQ?,a,b,c,d,9\n")
    with pytest.raises(QuestionFileError, match=r"row 2: answer 9 out of range"):
        parse_question_file(p)
    with pytest.raises(QuestionFileError, match="not found"):
        parse_question_file(tmp_path / "missing.json")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(QuestionFileError, match=".json .* or .csv"):
        parse_question_file(tmp_path / "x.txt")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(QuestionFileError, match="not valid JSON"):
        parse_question_file(tmp_path / "broken.json")


def test_question_files_load_wherever_question_sets_do(tmp_path):
    p = _json(
        tmp_path,
        [{"question": f"Q{i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4, "flag": i == 0} for i in range(10)],
    )
    qs = D.load_question_set(str(p))
    assert len(qs.questions) == 10 and qs.label == "file q.json"
    train, held = D.load_question_set(f"{p}@train"), D.load_question_set(f"{p}@heldout")
    assert len(train.questions) + len(held.questions) == 10
    assert not {q.id for q in train.questions} & {q.id for q in held.questions}
    assert len(D.load_question_set(f"{p}!flag").questions) == 9
    with pytest.raises(KeyError, match="file paths are not accepted"):
        D.load_question_set(str(p), allow_paths=False)


# ---------------------------------------------------------------- quizzes, specs, corpora


def test_quiz_sets_parts_and_flags(shared_data):
    full = D.load_question_set("quiz:retain")
    assert len(full.questions) == 133
    train, held = D.load_question_set("quiz:retain@train"), D.load_question_set("quiz:retain@heldout")
    assert sorted(q.id for q in train.questions + held.questions) == sorted(q.id for q in full.questions)
    assert 40 < len(train.questions) < 93
    nobio = D.load_question_set("quiz:retain@heldout!overlaps_bio")
    assert all(not q.extra.get("overlaps_bio") for q in nobio.questions)
    assert len(nobio.questions) < len(held.questions)
    assert "heldout part" in nobio.label and "without overlaps_bio" in nobio.label
    assert D.split_spec("quiz:retain@heldout!overlaps_bio") == ("quiz:retain", "heldout", "overlaps_bio")
    assert D.split_spec("mmlu:side-effects") == ("mmlu:side-effects", "all", None)
    with pytest.raises(KeyError, match="unknown quiz"):
        D.load_question_set("quiz:nope")


def test_quiz_corpus_is_the_same_part_as_the_questions(shared_data):
    docs = D.load_corpus("quiz:bio", part="train")
    qs = D.load_question_set("quiz:bio@train").questions
    assert docs == [fact_text(q) for q in qs]
    assert docs[0].startswith("Question: ") and "\nAnswer: " in docs[0]
    assert not set(docs) & set(D.load_corpus("quiz:bio", part="heldout"))


def test_split_is_by_id_and_stable():
    qs = [Question(f"s:{i}", "q?", ("a", "b", "c", "d"), 0, "s", "t") for i in range(200)]
    train = split_part(qs, "train")
    assert 70 < len(train) < 130
    assert [q.id for q in split_part(list(reversed(qs)), "train")] == [q.id for q in reversed(train)]


# ---------------------------------------------------------------- strict known filter


class _FakeScore:
    def __init__(self, correct: bool):
        self.correct = correct


def test_strict_known_filter_on_hand_made_cases(tiny, monkeypatch):
    """with question right / blanked right: known (loose) | known (strict)"""
    table = {"k": (True, False), "bias": (True, True), "wrong": (False, False), "lucky_blank": (False, True)}
    qs = [Question(name, "q?", ("a", "b", "c", "d"), 0, "s", "t") for name in table]

    def fake_scores(engine, questions, interventions=None, scoring=None, style=None, batch_size=8, progress=None):
        out = []
        for q in questions:
            base, blank = q.id.split("#")[0].split("@")[0], q.id.endswith("#blank")
            assert (q.question == "") == blank
            out.append(_FakeScore(table[base][1 if blank else 0]))
        return out

    monkeypatch.setattr(mcq, "score_questions", fake_scores)
    loose = mcq.known_questions(tiny, qs, scoring="cloze", use_cache=False)
    strict = mcq.known_questions(tiny, qs, scoring="cloze", use_cache=False, strict=True)
    assert [q.id for q in loose] == ["k", "bias"]
    assert [q.id for q in strict] == ["k"]
    # letters: every one of the 24 orderings must be right, and the blank (original order) wrong
    assert [q.id for q in mcq.known_questions(tiny, qs, scoring="letter", use_cache=False, strict=True)] == ["k"]


def test_blanked_question_is_the_cloze_prompt_without_text():
    q = Question("b", "Which bacterium causes anthrax?", ("w", "x", "y", "z"), 3, "s", "t")
    assert mcq.cloze_prefix(q.blanked()) == "Question: \nAnswer:"
    assert q.blanked().answer == 3 and q.blanked().choices == q.choices


# ---------------------------------------------------------------- format-matched selection


def test_format_matched_selection_drops_a_feature_firing_on_both_formats():
    # feature 0: fires on quiz format (forget quiz AND retain quiz), never on WikiText -> format feature
    # feature 1: fires only on the forget topic; feature 2: common everywhere
    forget = torch.tensor([0.30, 0.20, 0.25])
    retain_quiz = torch.tensor([0.30, 0.00, 0.20])
    wiki = torch.tensor([0.00, 0.001, 0.20])

    class S:
        def __init__(self, f):
            self.freq = f

    paper = [r["feature"] for r in F.select_features(forget, wiki, 0.01, 3)]
    matched = [r["feature"] for r in F.select_features(forget, T.retain_frequency([S(retain_quiz), S(wiki)]), 0.01, 3)]
    assert paper == [0, 1]  # the paper's selection keeps the format feature, ranked first
    assert matched == [1]


def test_select_for_target_reports_retain_corpora(tiny, shared_data):
    t = T.get_target("bio-basics")
    out = T.select_for_target(tiny, t, n=5)
    assert out["retain_corpora"] == list(t.retain_corpora)
    assert out["forget_corpus"] == t.forget_corpus
    assert "relaxed" in out["note"]  # the tiny backend's random SAE needs a relaxed threshold, and says so
    assert 0 < len(out["features"]) <= 5
    for r in out["features"]:
        assert set(r["retain_freqs"]) == set(t.retain_corpora)
        assert r["retain_freq"] == pytest.approx(max(r["retain_freqs"].values()))


# ---------------------------------------------------------------- the registry and user targets


def test_builtin_targets_load():
    ts = T.load_targets()
    assert {"bio-basics", "sherlock", "wmdp-bio"} <= set(ts)
    bio = ts["bio-basics"]
    assert bio.forget_questions == "quiz:bio" and bio.eval_part == "heldout" and bio.strict_known
    assert "quiz:retain@train" in bio.retain_corpora  # format-matched
    wmdp = ts["wmdp-bio"]
    assert wmdp.scoring == "letter" and wmdp.orderings and wmdp.forget_corpus_fallback == "wmdp-bio-text@train"
    assert ts["sherlock"].forget_corpus == "sherlock@train"


def test_wmdp_target_falls_back_to_question_text_with_a_label(shared_data, monkeypatch):
    monkeypatch.delenv("UNLEARN_WMDP_FORGET_CORPUS", raising=False)
    corpus, note = T.forget_corpus_for(T.get_target("wmdp-bio"), None)
    assert corpus == "wmdp-bio-text@train" and "not available" in note


def test_user_target_toml(tmp_path, shared_data):
    (tmp_path / "corpus.txt").write_text("Dragons breathe fire.\n\nDragons hoard gold.\n")
    _json(
        tmp_path,
        [{"question": "What do dragons hoard?", "choices": ["gold", "fish", "snow", "rice"], "answer": 0}],
        "dragons.json",
    )
    f = tmp_path / "mine.toml"
    f.write_text(
        '[dragons]\ndescription = "dragon lore"\nforget_corpus = "corpus.txt"\n'
        'forget_questions = "dragons.json"\nretain_corpora = ["wikitext@train"]\n'
        'retain_questions = "quiz:retain"\n[dragons.selection]\nn = 7\n[dragons.intervention]\nc = 30\n'
    )
    ts = T.load_targets(str(f))
    d = ts["dragons"]
    assert d.forget_corpus == str(tmp_path / "corpus.txt") and d.forget_questions == str(tmp_path / "dragons.json")
    assert d.retain_questions == ("quiz:retain",) and d.selection.n == 7 and d.intervention.c == 30
    assert d.source == str(f)
    assert D.load_corpus(d.forget_corpus) == ["Dragons breathe fire.\n\nDragons hoard gold."]
    forget, retain = T.question_specs(d)
    assert forget == str(tmp_path / "dragons.json") + "@heldout" and retain == ["quiz:retain@heldout"]
    assert T.question_specs(d, forget_file="x.csv", retain_files=["y.json"]) == ("x.csv", ["y.json"])


@pytest.mark.parametrize(
    "body,needle",
    [
        ('[x]\nforget_corpus = "a.txt"\n', "missing"),
        (
            '[x]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\ncolour="red"\n',
            "unknown field",
        ),
        (
            '[x]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\n'
            '[x.intervention]\nmode="melt"\n',
            "mode must be one of",
        ),
        (
            '[x]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\n'
            "[x.selection]\nthreshold=2\n",
            "threshold",
        ),
        (
            '[bio-basics]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\n',
            "name of a built-in",
        ),
        (
            '[x]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\n'
            '[x.selection]\nmethod="magic"\n',
            "selection method must be one of",
        ),
        (
            '[x]\nforget_corpus="a"\nforget_questions="b"\nretain_corpora=["c"]\nretain_questions=["d"]\n'
            '[x.selection]\nmethod="search"\n',
            "selection query",
        ),
        ("[x\n", "not valid TOML"),
    ],
)
def test_bad_user_targets_get_clear_errors(tmp_path, body, needle):
    f = tmp_path / "t.toml"
    f.write_text(body)
    with pytest.raises(T.TargetError, match=needle):
        T.load_targets(str(f))


def test_target_defined_in_the_app_is_saved_and_loaded(tmp_path, shared_data):
    rows = [{"question": "What do dragons hoard?", "choices": ["gold", "fish", "snow", "rice"], "answer": 0}]
    t = T.save_target(tmp_path, "dragons", "dragon lore", ["Dragons hoard gold.", "  "], rows, n=7, c=30)
    assert t.name == "dragons" and t.selection.n == 7 and t.intervention.c == 30
    assert t.forget_corpus == str(tmp_path / "dragons" / "corpus.jsonl")
    assert D.load_corpus(t.forget_corpus) == ["Dragons hoard gold."]
    assert len(D.load_question_set(t.forget_questions).questions) == 1
    assert T.load_targets(None, tmp_path)["dragons"] == t
    assert T.save_target(tmp_path, "emoji", "dragons 🐉 «lore»", ["x"], rows).description == "dragons 🐉 «lore»"
    with pytest.raises(T.TargetError, match="exists already"):
        T.save_target(tmp_path, "dragons", "", ["x"], rows, existing=T.load_targets(None, tmp_path))
    with pytest.raises(T.TargetError, match="name"):
        T.save_target(tmp_path, "../evil", "", ["x"], rows)
    with pytest.raises(QuestionFileError, match="expected 4 choices"):
        T.save_target(tmp_path, "bad", "", ["x"], [{"question": "q", "choices": ["a"], "answer": 0}])
    with pytest.raises(T.TargetError, match="corpus is empty"):
        T.save_target(tmp_path, "empty", "", [" "], rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dragons", "emoji"]  # failed saves leave nothing behind


def test_with_part():
    assert T.with_part("quiz:retain!overlaps_bio", "heldout") == "quiz:retain@heldout!overlaps_bio"
    assert T.with_part("quiz:bio@train", "heldout") == "quiz:bio@train"
    assert T.with_part("mmlu:side-effects", "all") == "mmlu:side-effects"


# ---------------------------------------------------------------- target eval


EVAL_KEYS = {"n_questions", "n_known", "base_accuracy", "intervened_accuracy"}


def test_evaluate_target_on_tiny(tiny, shared_data):
    from unlearn_core.evaluation.target_eval import evaluate_target

    r = evaluate_target(tiny, T.get_target("bio-basics"), loss_tokens=300)
    assert r["target"] == "bio-basics"
    assert EVAL_KEYS <= set(r["forget"]) and EVAL_KEYS <= set(r["retain"])
    assert r["forget"]["questions"] == "quiz:bio@heldout"
    assert r["retain"]["questions"] == "quiz:retain@heldout!overlaps_bio"
    assert isinstance(r["loss_added"], float)
    assert r["intervention"]["features"] and r["intervention"]["c"] == T.get_target("bio-basics").intervention.c


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "unlearn_core", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_target_list_json(tmp_path):
    p = _cli("target", "list", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    names = [t["name"] for t in json.loads(p.stdout)]
    assert names[:3] == ["bio-basics", "sherlock", "wmdp-bio"]


def test_cli_target_eval_json_contract_on_tiny(tmp_path, shared_data, capsys, monkeypatch):
    qfile = _json(
        tmp_path,
        [{"question": f"Q{i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4} for i in range(4)],
        "forget.json",
    )
    # a small retain file too: the target's own retain sets cost minutes on the tiny model (24 orderings a question)
    rfile = _json(
        tmp_path,
        [{"question": f"R{i}?", "choices": ["a", "b", "c", "d"], "answer": 0} for i in range(4)],
        "retain.json",
    )
    monkeypatch.chdir(tmp_path)  # in this process (the subprocess run: test_cli_target_list_json)
    p = run_cli(
        capsys,
        "target",
        "eval",
        "bio-basics",
        "--tiny",
        "--json",
        "--loss-tokens",
        "200",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--forget-questions",
        str(qfile),
        "--retain-questions",
        str(rfile),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert {"target", "intervention", "forget", "retain", "loss_added"} <= set(out)
    assert out["target"] == "bio-basics"
    assert EVAL_KEYS <= set(out["forget"]) and EVAL_KEYS <= set(out["retain"])
    assert out["forget"]["n_questions"] == 4 and out["forget"]["questions"] == str(qfile)
    assert isinstance(out["loss_added"], float)


def test_cli_target_eval_unknown_target_is_a_clean_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = run_cli(capsys, "target", "eval", "no-such-target", "--tiny", "--cache-dir", str(tmp_path / "c"))
    assert p.returncode == 2 and "unknown target" in p.stderr and "Traceback" not in p.stderr


def test_targets_experiment_runs_end_to_end_on_tiny(tiny, shared_data):
    from unlearn_core.evaluation.experiments import sweep_report as SWR
    from unlearn_core.evaluation.experiments import target_sweep as TX

    t = T.replace_intervention(T.get_target("bio-basics"), threshold=1.0, n=3, c=10.0, method="frequency", mode="clamp")
    r = TX.run(tiny, t, thresholds=(1.0,), ns=(3,), values=(10.0,), loss_tokens=100, ppl_tokens=100, max_loss=0.05)
    assert [row["config"] for row in r["rows"]] == ["none", "paper t=1 N=3 c=10", "format-matched t=1 N=3 c=10"]
    assert r["rows"][1]["retain_corpora"] == ["wikitext@train"]
    assert r["rows"][2]["retain_corpora"] == list(t.retain_corpora)
    assert r["rows"][2]["shipped_default"] and not r["rows"][1]["shipped_default"]
    assert r["chosen"] is None  # the tiny model knows no question, so nothing keeps retain accuracy
    # the question-based selections have no known train question to rank features on: skipped, and said why
    assert set(r["skipped_variants"]) == {"attribution", "fisher"}
    assert all("knows none" in why for why in r["skipped_variants"].values())
    assert r["rows"][0]["loss_added_choice"] == 0.0 and r["choice_loss_corpus"] == "webtext-train"
    # the choice's loss is measured on another corpus than the reported one, so the two differ
    assert all(row["loss_added_choice"] != row["loss_added"] for row in r["rows"][1:])
    md = SWR.markdown(r)
    assert "none qualifies" in md and md.count("\n| ") == 5  # header, rule, three rows
    assert "loss added <= 0.05 nats on `webtext-train`" in md and "| loss added (choice) |" in md


def _sweep_row(config, forget, retain, loss, n=50, c=100.0):
    return {
        "config": config,
        "forget@train": forget,
        "retain_pool@train": retain,
        "loss_added_choice": loss,
        "loss_added": 99.0,
        "n": n,
        "c": c,
    }


def test_targets_choice_respects_the_retain_floor_and_the_loss_budget():
    """Lowest train forget among rows keeping retain and the loss budget; the reported (held-out) loss is not read."""
    from unlearn_core.evaluation.experiments import sweep_report as SWR
    from unlearn_core.evaluation.experiments import target_sweep as TX

    rows = [
        _sweep_row("deep", 0.1, 0.95, 0.30),
        _sweep_row("breaks retain", 0.0, 0.80, 0.01),
        _sweep_row("within", 0.4, 0.92, 0.04),
        _sweep_row("within, more retain", 0.4, 0.97, 0.05, c=200.0),
        _sweep_row("mild", 0.8, 1.00, 0.00),
    ]
    assert TX.choose(rows, 0.9, None)["config"] == "deep"
    assert TX.choose(rows, 0.9, 0.05)["config"] == "within"  # tie on forget: less loss added, before retain
    assert TX.choose(rows, 0.9, 0.01)["config"] == "mild"
    assert TX.choose(rows, 0.99, 0.05)["config"] == "mild"
    assert TX.choose(rows[:4], 0.99, None) is None
    # the rule as shipped (retain >= 0.95 pooled, loss <= 0.05): "deep" adds too much, "within" keeps too little
    assert (TX.MIN_RETAIN, TX.MAX_LOSS) == (0.95, 0.05) and TX.choose(rows)["config"] == "within, more retain"
    assert TX.margin(TX.choose(rows), TX.MIN_RETAIN, TX.MAX_LOSS) == pytest.approx({"retain": 0.02, "loss": 0.0})
    assert TX.choose([{**rows[0], "forget@train": None}, rows[4]], 0.9, None)["config"] == "mild"  # no known forget
    assert SWR.rule_text({"min_retain": 0.9, "max_loss": 0.05, "choice_loss_corpus": "webtext-train"}) == (
        "lowest forget accuracy with retain accuracy >= 0.9 and loss added <= 0.05 nats on `webtext-train`; "
        "ties: less loss added on `webtext-train`, then higher retain"
    )


def test_pooled_retain_weighs_every_question_alike():
    from unlearn_core.evaluation.experiments import target_sweep as TX

    quiz = [(26, 26), (20, 26), (0, 0)]  # per configuration: (correct, total)
    general = [(40, 40), (38, 40), (0, 0)]
    assert TX.pooled_accuracy([quiz, general]) == [1.0, pytest.approx(58 / 66), None]
    assert TX.pooled_accuracy([quiz]) == [1.0, pytest.approx(20 / 26), None]


def test_targets_choice_breaks_a_tie_on_forget_by_the_loss_added_then_retain():
    """Equal train forget: the row adding less loss on the choice corpus wins, even with less retain; equal
    loss too (or none measured, as in a saved sweep from before the column existed): higher retain."""
    from unlearn_core.evaluation.experiments import sweep_report as SWR
    from unlearn_core.evaluation.experiments import target_sweep as TX

    paper = _sweep_row("paper N=100 c=100", 0.667, 1.000, 0.131, n=100)
    search = _sweep_row("search N=20 c=100", 0.667, 0.926, 0.006, n=20)
    assert TX.choose([paper, search], 0.9, None)["config"] == "search N=20 c=100"
    assert TX.choose([paper, {**search, "loss_added_choice": 0.131}], 0.9, None)["config"] == "paper N=100 c=100"
    unmeasured = [{k: v for k, v in r.items() if k != "loss_added_choice"} for r in (paper, search)]
    assert TX.choose(unmeasured, 0.9, None)["config"] == "paper N=100 c=100"
    assert TX.choose([paper, {**search, "forget@train": 0.556}], 0.9, None)["config"] == "search N=20 c=100"
    assert SWR.rule_text({"min_retain": 0.9, "max_loss": None, "choice_loss_corpus": None}) == (
        "lowest forget accuracy with retain accuracy >= 0.9; ties: higher retain"
    )


def test_targets_experiment_sweeps_a_retain_list_once(tiny, shared_data):
    """A target whose retain list is the paper's (WikiText-2 only) gets one variant, not the same rows twice."""
    from unlearn_core.evaluation.experiments import sweep_report as SWR
    from unlearn_core.evaluation.experiments import target_sweep as TX

    # its default is a search; its rows here are not
    t = T.replace_intervention(T.get_target("sherlock"), threshold=1.0, n=3, c=10.0, method="frequency")
    assert t.retain_corpora == TX.PAPER_RETAIN
    with pytest.raises(ValueError, match="needs loss_tokens"):  # a budget with no loss measured would pass every row
        TX.run(tiny, t, thresholds=(1.0,), ns=(3,), values=(10.0,), loss_tokens=0, ppl_tokens=100, max_loss=0.05)
    r = TX.run(
        tiny,
        t,
        thresholds=(1.0,),
        ns=(3,),
        values=(10.0,),
        loss_tokens=0,
        ppl_tokens=100,
        variants=("paper", "format-matched"),
        max_loss=None,
    )
    assert [row["config"] for row in r["rows"]] == ["none", "paper t=1 N=3 c=10"]
    assert "loss_added_choice" not in r["rows"][1] and "loss added (choice)" not in SWR.markdown(r)  # none measured
    assert list(r["skipped_variants"]) == ["format-matched"] and r["rows"][1]["shipped_default"]
    assert "Variant `format-matched` not swept" in SWR.markdown(r)


def test_targets_experiment_sweeps_the_search_variant_of_a_target_with_a_query(tiny, shared_data):
    """sherlock has a selection query: the sweep adds search rows (no threshold), one per distinct feature
    list; a search row made the default selects the same features through select_for_target."""
    from unlearn_core.evaluation.experiments import sweep_report as SWR
    from unlearn_core.evaluation.experiments import target_sweep as TX

    sherlock = T.get_target("sherlock")
    assert sherlock.selection.query == "Sherlock Holmes" and sherlock.selection.method == "search"  # the registry's
    t = T.replace_intervention(sherlock, threshold=1.0, n=3, c=10.0, method="frequency")  # a frequency default here
    r = TX.run(tiny, t, thresholds=(1.0,), ns=(3, 50), values=(10.0,), loss_tokens=0, ppl_tokens=100, max_loss=None)
    search = [row for row in r["rows"][1:] if row["selection"] == "search"]
    assert [row["config"] for row in r["rows"][:3]] == ["none", "paper t=1 N=3 c=10", "paper t=1 N=50 c=10"]
    assert search and search[0]["config"] == 'search "Sherlock Holmes" N=3 c=10' and search[0]["threshold"] is None
    # the tiny SAE has few non-dense features: N=50 finds the same list as N=3 or a longer one, never a repeat
    assert len({tuple(row["features"]) for row in search}) == len(search)
    assert r["rows"][1]["shipped_default"] and not any(row["shipped_default"] for row in search)
    chosen = TX.with_default(t, search[0])
    assert chosen.selection.method == "search" and chosen.selection.n == 3 and chosen.intervention.c == 10.0
    TX.mark_shipped(r["rows"], chosen)
    assert [row["config"] for row in r["rows"][1:] if row["shipped_default"]] == [search[0]["config"]]
    sel = T.select_for_target(tiny, chosen)
    assert [x["feature"] for x in sel["features"]] == search[0]["features"]
    assert 'search "Sherlock Holmes" N=3 c=10' in SWR.markdown(r)
    back = TX.with_default(chosen, r["rows"][1])  # a frequency row switches the method back
    assert back.selection.method == "frequency" and back.selection.threshold == 1.0
    with pytest.raises(ValueError, match="no selection query"):
        TX.run(tiny, T.get_target("bio-basics"), variants=("search",), ns=(3,), values=(10.0,))


def test_search_selection_drops_dense_features_and_keeps_the_search_order(tiny, shared_data):
    """select_by_search: the non-dense prefix of Feature search's specificity ranking; every feature it
    returns fires on the query (checked by encoding the query's residuals directly)."""
    from types import SimpleNamespace

    from unlearn_core.features import specificity as SP

    sae = tiny.default_sae
    bg = F.feature_stats(tiny, sae, "webtext-train", n_tokens=2000)
    query = "Sherlock Holmes"
    toks = tiny.model.to_tokens(query, prepend_bos=True)
    _, cache = tiny.model.run_with_cache(toks, names_filter=tiny.saes[sae].hook_name)
    codes = tiny.saes[sae].sae.encode(cache[tiny.saes[sae].hook_name])[0, 1:]
    active = set(torch.nonzero(codes.max(0).values > 0).flatten().tolist())
    freq = torch.full_like(bg.freq, 0.001)  # a background where every feature is rare ...
    top = int(codes.max(0).values.argmax())
    freq[top] = 0.5  # ... but the strongest one on the query, which is dense there
    fake = SimpleNamespace(freq=freq, max_act=bg.max_act)
    rows = TXS.select_by_search(tiny, sae, query, fake, n=5)
    ids = [r["feature"] for r in rows]
    assert top not in ids and 0 < len(ids) <= 5 and set(ids) <= active
    assert not any(r["dense"] for r in rows) and freq[top] > SP.DENSE_FREQ
    full = TXS.search_by_text(  # the target's selection reads its query alone (its default was chosen so)
        tiny, sae, query, k=10**6, background=freq, background_max=bg.max_act, rank="specificity", context=False
    )
    assert ids == [r["feature"] for r in full if not r["dense"]][:5]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    with pytest.raises(ValueError):
        TXS.select_by_search(tiny, sae, query, fake, n=0)


def test_select_for_target_with_the_search_method(tiny, shared_data):
    """method = "search": rows with the search's fields and the frequency columns, no threshold; an explicit
    threshold (the app's selection table) selects by frequency instead."""
    t = T.replace_intervention(T.get_target("sherlock"), method="search", n=4)
    out = T.select_for_target(tiny, t)
    assert out["method"] == "search" and out["threshold"] is None and out["query"] == "Sherlock Holmes"
    assert 0 < len(out["features"]) <= 4
    for r in out["features"]:
        assert {"top_token", "score", "forget_freq", "retain_freq", "ratio"} <= set(r)
        assert set(r["retain_freqs"]) == set(t.retain_corpora)
    assert 'most specific to "Sherlock Holmes"' in T.selection_text(out)
    iv = T.default_intervention(tiny, t)
    assert list(iv.features) == [r["feature"] for r in out["features"]]
    by_freq = T.select_for_target(tiny, t, threshold=1.0)
    assert by_freq["threshold"] == 1.0 and "top_token" not in by_freq["features"][0]
    assert "among those firing on less than 1 of the tokens of `wikitext@train`" in T.selection_text(by_freq)


def test_cli_max_loss_is_parsed_before_any_model_loads():
    """A bad --max-loss is argparse's error (exit 2), before the engine starts; 'none' is no budget;
    the defaults are the rule's (``target_sweep.MIN_RETAIN``, ``MAX_LOSS``)."""
    from unlearn_core.cli import build_parser
    from unlearn_core.evaluation.experiments import target_sweep as TX

    p = build_parser()
    args = p.parse_args(["experiment", "targets"])
    assert (args.min_retain, args.max_loss) == (TX.MIN_RETAIN, TX.MAX_LOSS)
    assert p.parse_args(["experiment", "targets", "--max-loss", "none"]).max_loss is None
    assert p.parse_args(["experiment", "targets", "--max-loss", "0.05"]).max_loss == 0.05
    for bad in ("x", "-1", "nan"):
        with pytest.raises(SystemExit) as e:
            p.parse_args(["experiment", "targets", "--max-loss", bad])
        assert e.value.code == 2


def test_merged_sweeps_apply_the_rule_to_every_row():
    """Two saved sweeps of one target: the union of their rows (a repeated row once), chosen again."""
    from unlearn_core.evaluation.experiments import target_sweep as TX

    base = {"target": "t", "n_known": {"forget@train": 3}, "min_retain": 0.95, "max_loss": 0.05, "seconds": 10}
    none = {"config": "none"}
    a = {**base, "rows": [none, _sweep_row("a", 0.5, 1.0, 0.01), _sweep_row("b", 0.3, 0.9, 0.01)], "chosen": "a"}
    b = {**base, "rows": [none, _sweep_row("a", 0.5, 1.0, 0.01), _sweep_row("c", 0.4, 0.96, 0.05)], "chosen": "c"}
    m = TX.merge([a, b])
    assert [r["config"] for r in m["rows"]] == ["none", "a", "b", "c"] and m["chosen"] == "c"
    assert [r["chosen"] for r in m["rows"][1:]] == [False, False, True] and m["seconds"] == 20
    with pytest.raises(ValueError, match="min_retain"):
        TX.merge([a, {**b, "min_retain": 0.9}])


def test_unlearning_score_is_the_best_forget_at_full_retain():
    from unlearn_core.evaluation.experiments import target_sweep as TX

    rows = [
        {**_sweep_row("deep", 0.2, 0.95, 0.3), "retain_pool@heldout": 0.95, "forget@heldout": 0.1},
        {**_sweep_row("kept", 0.4, 1.0, 0.3), "retain_pool@heldout": 1.0, "forget@heldout": 0.45},
        {**_sweep_row("mild", 0.7, 1.0, 0.0), "retain_pool@heldout": 0.99, "forget@heldout": 0.6},
    ]
    assert TX.unlearning_score(rows, "train") == (pytest.approx(0.6), "kept")
    assert TX.unlearning_score(rows, "heldout") == (pytest.approx(0.55), "kept")
    assert TX.unlearning_score(rows[:1], "heldout") is None


def test_a_gated_default_gets_its_tau_from_the_retain_corpora(tiny, shared_data):
    """mode = "dsg" (or "gated") in a target's [intervention]: tau is the highest, over the target's
    retain corpora, of the gate_percentile-th rho (as the gate table calibrates it), computed here
    corpus by corpus with ``calibrate``. Before, such a target failed ("needs a gate tau")."""
    from unlearn_core.method.gate import calibrate

    base = T.replace_intervention(T.get_target("sherlock"), n=3, retain_corpora=("wikitext@train", "webtext-train"))
    t = T.replace_intervention(base, mode="dsg", c=50.0, gate_percentile=90.0)
    iv = T.default_intervention(tiny, t)
    taus = [calibrate(tiny, iv.sae_key, iv.features, c, 90.0).tau for c in t.retain_corpora]
    assert iv.mode == "dsg" and iv.c == 50.0 and iv.gate == pytest.approx(max(taus))
    assert len(set(taus)) == 2  # the corpora differ, so "the highest" is a real choice here
    assert T.default_intervention(tiny, base).gate is None  # a static default has no gate
    assert t.to_dict()["intervention"]["gate_percentile"] == 90.0
    assert "gate_percentile" not in base.to_dict()["intervention"]  # read only by the gated modes
    bad = {**t.to_dict(), "intervention": {"mode": "dsg", "c": 50.0, "gate_percentile": 150}}
    bad = {k: v for k, v in bad.items() if k not in ("name", "source")}
    with pytest.raises(T.TargetError, match="gate_percentile"):
        T.target_from_dict("bad", bad)


def test_a_gated_targets_sweep_rows_carry_their_own_tau(tiny, shared_data):
    """`experiment targets` on a target whose default is gated: each row's features get the tau the
    default would (they failed with "needs a gate tau" before)."""
    from unlearn_core.evaluation.experiments import target_sweep as TX
    from unlearn_core.method.gate import tau_over

    t = T.replace_intervention(T.get_target("sherlock"), mode="gated", gate_percentile=90.0)
    assert TX._tau(tiny, "tiny", (2, 3), t) == tau_over(tiny, "tiny", (2, 3), list(t.retain_corpora), 90.0)["tau"]
    assert TX._tau(tiny, "tiny", (2, 3), T.replace_intervention(t, mode="clamp")) is None
