"""Feature statistics and selection against direct computations on the tiny model."""

import math

import pytest
import torch

from unlearn_core.features import stats as F
from unlearn_core.features import text_search as TXS
from unlearn_core.model.tiny import ALWAYS_FIRES, NEVER_FIRES, TINY_HOOK


@pytest.fixture()
def corpus(tmp_path, monkeypatch):
    p = tmp_path / "c.jsonl"
    import json

    docs = ["Cells divide and proteins fold. " * 3, "The market rallied on Friday. " * 4, "Enzymes speed reactions."]
    p.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    return str(p)


def direct_codes(tiny, windows):
    """Codes at every counted token: not the first, not a BOS separator between documents."""
    m, sae = tiny.model, tiny.saes["tiny"].sae
    bos = m.tokenizer.bos_token_id
    rows = []
    for w in windows:
        _, cache = m.run_with_cache(torch.tensor([w]), names_filter=[TINY_HOOK])
        keep = torch.tensor([i > 0 and t != bos for i, t in enumerate(w)])
        x = cache[TINY_HOOK][0, keep].double()
        pre = x @ sae.W_enc.double() + sae.b_enc.double()
        rows.append(torch.where(pre > sae.threshold.double(), pre, torch.zeros_like(pre)))
    return torch.cat(rows)


def test_stats_match_direct_computation(tiny, corpus):
    st = F.feature_stats(tiny, "tiny", corpus, n_tokens=150, ctx=40, batch_size=3)
    codes = direct_codes(tiny, st.windows)
    n_sep = sum(t == tiny.model.tokenizer.bos_token_id for w in st.windows for t in w[1:])
    assert n_sep >= 1  # the corpus has document separators, which must not count
    assert st.n_tokens == codes.shape[0] == 150 - n_sep
    torch.testing.assert_close(st.freq.double(), (codes > 0).double().mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(st.mean_act.double(), codes.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(st.max_act.double(), codes.max(0).values, atol=1e-4, rtol=1e-4)
    assert st.freq[NEVER_FIRES] == 0 and st.freq[ALWAYS_FIRES] == 1
    assert torch.allclose(st.hist.sum(1).double(), (codes > 0).sum(0).double())
    # cached: the second call reads the same numbers from disk
    again = F.feature_stats(tiny, "tiny", corpus, n_tokens=150, ctx=40)
    assert torch.equal(again.freq, st.freq)


def test_top_examples_are_sorted_and_token_level(tiny, corpus):
    st = F.feature_stats(tiny, "tiny", corpus, n_tokens=150, ctx=40)
    feat = int(torch.argsort(-st.freq)[3])
    ex = F.top_examples(tiny, st, feat, k=3)
    maxes = [e["max"] for e in ex["top"]]
    assert maxes == sorted(maxes, reverse=True) and maxes[0] == pytest.approx(float(st.max_act[feat]), rel=1e-2)
    for e in ex["top"]:
        assert len(e["tokens"]) == len(e["values"]) and e["values"][e["peak"]] == pytest.approx(e["max"], rel=1e-3)


def test_selection_on_hand_made_frequencies():
    forget = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.0, 0.6])
    retain = torch.tensor([0.001, 0.02, 0.0, 0.005, 0.0, 0.01])
    rows = F.select_features(forget, retain, threshold=0.01, n=3)
    assert [r["feature"] for r in rows] == [0, 2, 3]  # 5 and 1 fail the threshold, 4 never fires on forget
    assert rows[0]["forget_freq"] == 0.5 and rows[0]["retain_freq"] == pytest.approx(0.001)
    assert [r["feature"] for r in F.select_features(forget, retain, threshold=0.05, n=2)] == [5, 0]
    with pytest.raises(ValueError):
        F.select_features(forget, retain, threshold=0, n=3)


def test_logit_effects_and_search(tiny):
    eff = F.logit_effects(tiny, "tiny", 5, k=4)
    w = tiny.saes["tiny"].sae.W_dec[5] @ tiny.model.W_U
    assert eff["top"][0][1] == pytest.approx(float(w.max()), rel=1e-5)
    assert eff["bottom"][0][1] == pytest.approx(float(w.min()), rel=1e-5)
    hits = TXS.search_by_text(tiny, "tiny", "Proteins fold.", k=5)
    assert hits and all(h["max_act"] > 0 for h in hits)
    assert [h["max_act"] for h in hits] == sorted([h["max_act"] for h in hits], reverse=True)
    ta = F.token_activations(tiny, "tiny", "Proteins fold.", [ALWAYS_FIRES, NEVER_FIRES])
    assert ta["values"][0] == [0.0, 0.0]  # BOS
    assert all(v[0] > 0 and v[1] == 0 for v in ta["values"][1:])
    with pytest.raises(ValueError):
        F.logit_effects(tiny, "tiny", 10_000)


def test_auto_description_is_labelled(tiny, corpus):
    st = F.feature_stats(tiny, "tiny", corpus, n_tokens=150, ctx=40)
    assert F.auto_description(tiny, "tiny", 5, st).startswith("[automatic]")


def test_quantile_samples_and_features_firing_in_many_windows(tiny, corpus):
    st = F.feature_stats(tiny, "tiny", corpus, n_tokens=600, ctx=20)
    assert len(st.windows) > 10
    ex = F.top_examples(tiny, st, ALWAYS_FIRES, k=4, n_quantiles=3)
    assert len(ex["top"]) == 4 and len(ex["quantiles"]) == 3
    lo_hi = [q["range"] for q in ex["quantiles"]]
    assert all(lo <= hi for lo, hi in lo_hi) and lo_hi[0][1] >= lo_hi[-1][0]
    assert not F.top_examples(tiny, st, ALWAYS_FIRES, k=4, n_quantiles=0)["quantiles"]
    assert F.auto_description(tiny, "tiny", ALWAYS_FIRES, st).startswith("[automatic]")


def test_sae_eval_on_tiny(tiny):
    from unlearn_core.evaluation.sae_eval import loss_recovered, reconstruction_stats

    docs = ["Cells divide and proteins fold. " * 4, "Enzymes speed up reactions. " * 4]
    r = reconstruction_stats(tiny, "tiny", docs, n_tokens=100, ctx=40)
    assert r["n_tokens"] == 100 and 1 <= r["l0"] <= 64 and r["explained_variance"] < 1
    assert 0 < r["dead_fraction"] < 1  # feature 0 never fires
    lr = loss_recovered(tiny, "tiny", docs, n_tokens=60, ctx=30)
    assert lr["n_tokens"] == 60
    expected = (lr["zero_ablation_loss"] - lr["spliced_loss"]) / (lr["zero_ablation_loss"] - lr["clean_loss"])
    assert lr["loss_recovered"] == pytest.approx(expected)
    assert 0 < r["dense_fraction"] <= 1 - r["dead_fraction"]  # a random SAE: features fire on most tokens


def test_sae_eval_delta_loss_and_spliced_perplexity_against_hooks(tiny):
    """Δloss per corpus and the spliced perplexity against a hand-written splice: the residual at
    the hook replaced by the SAE's reconstruction (BOS kept), nothing clamped."""
    import math

    from unlearn_core.evaluation.metrics import corpus_windows
    from unlearn_core.evaluation.sae_eval import corpus_report, spliced_perplexity

    docs = {"a": ["Cells divide and proteins fold. " * 4], "b": ["Enzymes speed up reactions. " * 4]}
    rep = corpus_report(tiny, "tiny", docs, n_tokens=60, ctx=30)
    sae = tiny.saes["tiny"].sae

    def splice(x, hook):
        out = sae.decode(sae.encode(x))
        out[:, 0] = x[:, 0]
        return out

    def mean_loss(windows, hooks=()) -> float:
        with tiny.model.hooks(fwd_hooks=list(hooks)):
            losses = [tiny.model(torch.tensor([w]), return_type="loss", loss_per_token=True)[0] for w in windows]
        return float(torch.cat(losses).sum() / sum(len(x) for x in losses))

    for name, d in docs.items():
        windows = corpus_windows(tiny.model, d, 60, 30)
        clean, spliced = mean_loss(windows), mean_loss(windows, [(TINY_HOOK, splice)])
        assert rep[name]["clean_loss"] == pytest.approx(clean, rel=1e-4)
        assert rep[name]["delta_loss"] == pytest.approx(spliced - clean, abs=1e-4)
    p = spliced_perplexity(tiny, "tiny", docs["a"], n_tokens=60, ctx=30)
    assert p["spliced"] == pytest.approx(math.exp(rep["a"]["spliced_loss"]), rel=1e-4)


def test_examples_never_peak_on_a_document_separator(tiny, corpus, monkeypatch):
    """Windows hold mid-window <bos> separators between documents. A feature that fires hardest
    there must not show a separator as its peak: the examples' max must be the statistics' max
    (which counts no BOS/EOS/pad), and the automatic description must not say '<bos>'."""
    st = F.feature_stats(tiny, "tiny", corpus, n_tokens=300, ctx=64)
    bos = tiny.model.tokenizer.bos_token_id
    assert any(bos in w[1:] for w in st.windows)  # the case under test exists
    real = F.encode_tokens

    def loud_separators(engine, sae_key, tokens):
        f = real(engine, sae_key, tokens).clone()
        f[..., 5] = torch.where(tokens.to(f.device) == bos, 1000.0, 1.0)
        return f

    monkeypatch.setattr(F, "encode_tokens", loud_separators)
    ex = F.top_examples(tiny, st, 5, k=3, n_quantiles=0)
    assert ex["top"]
    for e in ex["top"]:
        assert e["max"] == 1.0 and e["tokens"][e["peak"]] != "<bos>"
    assert "'<bos>'" not in F.auto_description(tiny, "tiny", 5, st)


def test_specificity_ranks_a_specific_feature_above_a_dense_one(tiny):
    """Hand-made: feature 0 fires on every token of every text (dense, huge activation), feature 1
    rarely and strongly on this text, feature 2 rarely but weakly. Specificity puts 1 first, then
    2, and the dense one last though it has the largest activation; asked to, it ranks 0 by score."""
    from unlearn_core.features import specificity as SP

    d = tiny.saes["tiny"].d_sae
    codes = torch.zeros(4, d)
    codes[1:, 0] = 800.0  # BOS row (0) is ignored
    codes[2, 1] = 9.0
    codes[3, 2] = 0.5
    freq = torch.full((d,), 0.0)
    freq[0], freq[1], freq[2] = 0.95, 0.002, 0.002
    mx = torch.zeros(d)
    mx[0], mx[1], mx[2] = 900.0, 10.0, 10.0
    rows = TXS.search_from_codes(tiny, [2, 5, 6, 7], codes, k=3, background=freq, background_max=mx, rank="specificity")
    assert [r["feature"] for r in rows] == [1, 2, 0]
    assert [r["dense"] for r in rows] == [False, False, True]
    assert rows[0]["score"] == pytest.approx(0.9 * math.log2(1 / 0.002))
    by_max = TXS.search_from_codes(tiny, [2, 5, 6, 7], codes, k=3)
    assert [r["feature"] for r in by_max] == [0, 1, 2]
    s = SP.scores(torch.tensor([800.0, 9.0]), torch.tensor([0.95, 0.002]), torch.tensor([900.0, 10.0]))
    assert SP.order(s, torch.tensor([True, True]), torch.tensor([True, False]), dense_last=False) == [1, 0]
    with pytest.raises(ValueError, match="needs a background"):
        TXS.search_from_codes(tiny, [2, 5, 6, 7], codes, rank="specificity")


def test_descriptions_come_from_contexts_and_are_cached(tiny, monkeypatch):
    from unlearn_core.features.descriptions import describe_examples, peak_word

    ex = [
        {"tokens": [" The", " spores", " of", " anth", "rax", " bacteria", " survive"], "peak": 4},
        {"tokens": [" inhaled", " anth", "rax", " spores", " kill"], "peak": 2},
        {"tokens": [" cutaneous", " anth", "rax", " from", " spores"], "peak": 2},
    ]
    assert peak_word(ex[0]["tokens"], 4) == "anthrax"
    d = describe_examples(ex)
    assert d["fires_on"] == ["anthrax"] and "spores" in d["context"] and d["logit_lens"] == []
    assert d["text"].startswith("[automatic] fires on 'anthrax'") and "logit lens" not in d["text"]
    assert "logit lens: promotes 'x'" in describe_examples(ex, logit_tokens=[" x"])["text"]
    st = F.feature_stats(tiny, "tiny", "webtext", n_tokens=300)
    first = F.auto_description(tiny, "tiny", 5, st)
    assert F.description_path(tiny, "tiny", st).exists()
    monkeypatch.setattr(F, "top_examples", lambda *a, **k: pytest.fail("the cached description was recomputed"))
    assert F.auto_description(tiny, "tiny", 5, st) == first  # the second call reads the cache


def test_explanation_query_matches_word_pieces_and_inflections():
    from unlearn_core.features.descriptions import matches_query

    d = "[automatic] fires on 'plasmid', 'Bacterial', 'anthracis'; around: cells, virus"
    assert matches_query("anthrax", d) and matches_query("bacteria", d) and matches_query("Plasmids", d)
    assert matches_query("virus cells", d) and matches_query("viruses", d)
    assert not matches_query("toxin", d) and not matches_query("anthrax toxin", d)
    assert not matches_query("cells", "fires on 'cell'")  # words under 6 letters match only as typed
    assert not matches_query("protein", d)


# ---------------------------------------------------------------- shipped statistics


def test_sparse_storage_round_trips_bit_for_bit():
    from unlearn_core.features import shipped_stats as SH

    g = torch.Generator().manual_seed(0)
    wmax = (torch.randn(37, 300, generator=g) * 50).relu().half()
    wmax[wmax < 20] = 0  # mostly zeros, as per-window maxima are
    wmax[0, :5] = torch.tensor([-0.0, float("nan"), float("inf"), 6e-8, 65504.0]).half()  # odd bit patterns
    wmax[3] = 0  # a row with nothing stored
    hist = torch.randint(0, 3, (300, F.N_BINS), generator=g).float()
    t = {"n_tokens": torch.tensor([1234]), "freq": torch.rand(300, generator=g), "window_max": wmax, "hist": hist}
    packed = SH.pack(t)
    assert packed["window_max.bits"].numel() == -(-37 * 300 // 8)  # one bit per position
    assert "window_max" not in packed and packed["window_max.values"].numel() < 2 * int((wmax != 0).sum())
    back = SH.unpack(packed)
    assert back.keys() == t.keys()
    assert torch.equal(back["window_max"].view(torch.int16), wmax.view(torch.int16))  # bits, NaN and -0.0 too
    assert back["window_max"].dtype == torch.float16 and torch.equal(back["hist"], hist)
    assert torch.equal(back["freq"], t["freq"]) and torch.equal(back["n_tokens"], t["n_tokens"])
    bad = dict(packed, **{"window_max.bits": packed["window_max.bits"][:-1]})
    with pytest.raises(ValueError, match="inconsistent"):
        SH.unpack(bad)


def _marked(st: "F.FeatureStats") -> dict:
    """Statistics unlike any computation's (every frequency 0.5), to tell a shipped entry's use."""
    return {
        "n_tokens": torch.tensor([st.n_tokens]),
        "freq": torch.full_like(st.freq, 0.5),
        "mean_act": st.mean_act,
        "mean_active": st.mean_active,
        "max_act": st.max_act,
        "hist": st.hist,
        "window_max": st.window_max,
    }


def test_a_shipped_entry_is_used_only_under_its_own_key(corpus, tmp_path, monkeypatch):
    from unlearn_core.features import shipped_stats as SH
    from unlearn_core.model.tiny import tiny_engine

    monkeypatch.setattr(SH, "SHIPPED_DIR", tmp_path / "shipped")
    fresh = F.feature_stats(tiny_engine(cache_dir=str(tmp_path / "c0")), "tiny", corpus, n_tokens=150, ctx=40)
    eng = tiny_engine(cache_dir=str(tmp_path / "c1"))
    docs, _ = F.stats_windows(eng, corpus, 150, 40)
    entry = F.stats_path(eng, "tiny", corpus, docs, 150, 40)
    SH.write_shipped(entry, _marked(fresh))
    # hit: same model, SAE, corpus content, tokens and window; nothing computed, nothing cached
    hit = F.feature_stats(eng, "tiny", corpus, n_tokens=150, ctx=40)
    assert bool((hit.freq == 0.5).all()) and torch.equal(hit.window_max, fresh.window_max)
    assert not entry.exists()
    # misses: other tokens, other window, and the same corpus name with other text
    assert not bool((F.feature_stats(eng, "tiny", corpus, n_tokens=140, ctx=40).freq == 0.5).all())
    assert not bool((F.feature_stats(eng, "tiny", corpus, n_tokens=150, ctx=30).freq == 0.5).all())
    with open(corpus, "a") as f:
        f.write('\n{"text": "An edited document under the same name."}')
    edited = F.feature_stats(eng, "tiny", corpus, n_tokens=150, ctx=40)
    assert not bool((edited.freq == 0.5).all())
    assert F.stats_path(eng, "tiny", corpus, F.corpus_docs(eng, corpus), 150, 40).exists()  # computed and cached


def test_a_shipped_entry_misses_for_another_sae_and_a_corrupt_file_is_computed(corpus, tmp_path, monkeypatch):
    from unlearn_core.features import shipped_stats as SH
    from unlearn_core.model.tiny import tiny_engine

    monkeypatch.setattr(SH, "SHIPPED_DIR", tmp_path / "shipped")
    eng = tiny_engine(cache_dir=str(tmp_path / "c"))
    fresh = F.feature_stats(tiny_engine(cache_dir=str(tmp_path / "c0")), "tiny", corpus, n_tokens=150, ctx=40)
    docs, _ = F.stats_windows(eng, corpus, 150, 40)
    entry = F.stats_path(eng, "tiny", corpus, docs, 150, 40)
    SH.write_shipped(entry, _marked(fresh))
    b_enc = eng.saes["tiny"].sae.b_enc.detach().clone()
    with torch.no_grad():
        eng.saes["tiny"].sae.b_enc.add_(1e-3)  # another SAE: another fingerprint
    assert not bool((F.feature_stats(eng, "tiny", corpus, n_tokens=150, ctx=40).freq == 0.5).all())
    with torch.no_grad():
        eng.saes["tiny"].sae.b_enc.copy_(b_enc)
    assert F.stats_path(eng, "tiny", corpus, docs, 150, 40) == entry  # back to the shipped key
    SH.shipped_path(entry).write_bytes(b"not safetensors")
    back = F.feature_stats(eng, "tiny", corpus, n_tokens=150, ctx=40)
    assert torch.equal(back.freq, fresh.freq) and entry.exists()


def test_a_short_query_is_read_in_context(tiny):
    """Context reading: the query's codes in each carrier sentence, found by its token ids and
    averaged, computed here directly with the model's cache and the SAE's weights."""
    q = "anthrax spores"
    ids = tiny.model.to_tokens(" " + q, prepend_bos=False)[0].tolist()
    rows = []
    for carrier in TXS.CARRIERS:
        toks = tiny.model.to_tokens(carrier.format(q=q), prepend_bos=True)[0].tolist()
        start = [i for i in range(len(toks)) if toks[i : i + len(ids)] == ids][0]
        codes = direct_codes(tiny, [toks])  # every token but the first (BOS)
        rows.append(codes[start - 1 : start - 1 + len(ids)])
    want = torch.stack(rows).mean(0)
    read = TXS.query_in_context(tiny, "tiny", q)
    assert read is not None and read[0][1:] == ids
    assert read[1][0].abs().sum() == 0 and torch.allclose(read[1][1:].double(), want, atol=1e-4)
    hits = TXS.search_by_text(tiny, "tiny", q, k=5)
    best = want.max(0).values
    assert [h["feature"] for h in hits] == torch.argsort(best, descending=True)[:5].tolist()
    assert hits[0]["max_act"] == pytest.approx(float(best.max()), rel=1e-4)
    alone = TXS.search_by_text(tiny, "tiny", q, k=5, context=False)
    assert [h["max_act"] for h in alone] != [h["max_act"] for h in hits]  # the carriers change what is read
    long = "Cells divide and proteins fold while enzymes speed reactions in every living tissue we know."
    assert (
        len(tiny.model.to_tokens(long)[0]) > TXS.CONTEXT_MAX_TOKENS + 1
        and TXS.query_in_context(tiny, "tiny", long) is None
    )
    assert TXS.search_by_text(tiny, "tiny", long, k=5) == TXS.search_by_text(tiny, "tiny", long, k=5, context=False)
