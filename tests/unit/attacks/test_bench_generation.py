"""The generation attack's batched texts and outcomes against one-at-a-time ``metrics.generate``."""

from __future__ import annotations

import json

from unlearn_core.attacks import bench as B
from unlearn_core.attacks.defences import Defence
from unlearn_core.data import loaders as D
from unlearn_core.data.probes import link, raw_id
from unlearn_core.evaluation.generation_check import NEW_TOKENS, says
from unlearn_core.evaluation.metrics import generate
from unlearn_core.method.interventions import Intervention

IV = Intervention("tiny", (1, 2, 3), 30.0)
STEMS = ["The answer is", "It is called", "Cells need", "Everyone knows the", "So", "The organ that"]


def test_generation_row_equals_one_prompt_at_a_time(tiny, tmp_path, shared_data, monkeypatch):
    """Keywords taken from the clean model's own texts (so most probes are 'said' clean and the
    defended text decides); batches of 4, so the probes span two."""
    monkeypatch.setattr(B, "GEN_STEP", 4)
    bio = D.load_question_set("quiz:bio", str(shared_data)).questions[: len(STEMS)]
    clean = {s: generate(tiny, s, None, max_new_tokens=NEW_TOKENS) for s in STEMS}
    rows = [
        {
            "id": f"{raw_id(q)}.g",
            "source_id": raw_id(q),
            "probe": "generation",
            "question": s,
            "choices": list(q.choices),
            "answer": q.answer,
            "keywords": [clean[s][2:5] if i % 3 else "zzq"],  # every third probe: never said
        }
        for i, (q, s) in enumerate(zip(bio, STEMS))
    ]
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(rows))
    probes = link(D.load_question_set(str(path)).questions, bio, "quiz:bio")
    inputs = B.Inputs(bio, probes, [], [], "cloze", str(path))
    row = B.run_one(tiny, inputs, Defence("clamp", (IV,)), "generation")
    defended = {s: generate(tiny, s, [IV], max_new_tokens=NEW_TOKENS) for s in STEMS}
    assert len(row["facts"]) == len(STEMS)
    for f, lp in zip(row["facts"], probes):
        s, k = lp.probe.question, lp.keywords[0]
        assert inputs.cache[("none", lp.probe.id, "text")] == clean[s]
        assert f["known_attacked"] == says(clean[s], k)
        if f["known_attacked"]:
            assert inputs.cache[("clamp", lp.probe.id, "text")] == defended[s]
            assert f["defended_attacked"] == says(defended[s], k)
    said = [f["known_attacked"] for f in row["facts"]]
    assert any(said) and not all(said)
