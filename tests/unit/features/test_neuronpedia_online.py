"""The Neuronpedia *online* path, driven end to end against a local fake that answers with
Neuronpedia's real response shapes (tests/fake_neuronpedia_real.py cites the sources).

Every test runs under a network guard: any connection (or DNS lookup) to a host other than
127.0.0.1 is refused and recorded, and a test that caused one fails at teardown.
"""

from __future__ import annotations

import logging
import socket

import pytest
from api_helpers import app, client, engine, ok  # noqa: F401 (fixtures)
from fake_neuronpedia_real import INDEX, MODEL, SOURCE, RealNeuronpedia, make_feature
from loopback_helpers import loopback_env

from unlearn_core.features import neuronpedia as NP
from unlearn_core.features.neuronpedia import (
    NeuronpediaConfig,
    get_feature,
    get_feature_for_sae,
    search_explanations,
)

LOOPBACK = "127.0.0.1"


class NetGuard:
    """Refuses every connection / name lookup that is not 127.0.0.1, and remembers the attempt."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def check(self, host: object, port: object = None) -> None:
        if isinstance(host, bytes):
            host = host.decode()
        if host != LOOPBACK:
            self.blocked.append(f"{host}:{port}")
            raise ConnectionRefusedError(f"test network guard: {host}:{port} is not the fake")


@pytest.fixture(autouse=True)
def net_guard(monkeypatch):
    guard = NetGuard()
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            guard.check(address[0], address[1])
        return real_connect(sock, address)

    def getaddrinfo(host, port, *args, **kwargs):
        guard.check(host, port)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard
    assert guard.blocked == [], f"the code tried to reach hosts other than the fake: {guard.blocked}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No key, no offline flags, no proxies; the cache in tmp; NEURONPEDIA_URL set by `fake`."""
    loopback_env(monkeypatch)
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def fake(monkeypatch):
    server = RealNeuronpedia().start()
    monkeypatch.setenv("NEURONPEDIA_URL", server.url)
    yield server
    server.stop()


def fast_cfg(**overrides) -> NeuronpediaConfig:
    """The environment's config (so NEURONPEDIA_URL is honoured) with test-sized waits."""
    cfg = NeuronpediaConfig(timeout=3.0, backoff=0.01)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def expected_activations(feature: dict) -> list[dict]:
    return [{"tokens": a["tokens"], "values": a["values"], "max_value": a["maxValue"]} for a in feature["activations"]]


# ----------------------------------------------------------------------------- feature


def test_get_feature_parses_the_real_shape(fake):
    sent = fake.feature()
    info = get_feature(MODEL, SOURCE, INDEX)  # default config: URL from the environment
    assert info.available and info.message == "" and not info.from_cache
    assert [r["path"] for r in fake.requests] == [f"/api/feature/{MODEL}/{SOURCE}/{INDEX}"]
    assert info.explanations == [e["description"] for e in sent["explanations"]]
    assert info.explanations == ["viruses and viral infection", "pathogen names in biology text"]
    assert info.top_logits == list(zip(sent["pos_str"], sent["pos_values"]))
    assert info.top_logits[0] == (" virus", 0.912)
    assert info.bottom_logits == list(zip(sent["neg_str"], sent["neg_values"]))
    assert info.activations == expected_activations(sent)
    assert info.activations[0]["tokens"][3] == " virus" and info.activations[0]["max_value"] == 14.5
    assert info.frac_nonzero == pytest.approx(sent["frac_nonzero"])
    assert info.url == f"https://www.neuronpedia.org/{MODEL}/{SOURCE}/{INDEX}"
    again = get_feature(MODEL, SOURCE, INDEX)
    assert again.from_cache and again.explanations == info.explanations and fake.count == 1


def test_get_feature_for_a_saelens_sae(fake):
    """gemma-scope-2-270m-pt-res / layer_5_width_16k_l0_medium -> gemma-3-270m/5-gemmascope-2-res-16k."""
    info = get_feature_for_sae("gemma-scope-2-270m-pt-res", "layer_5_width_16k_l0_medium", INDEX)
    assert fake.requests[-1]["path"] == "/api/feature/gemma-3-270m/5-gemmascope-2-res-16k/4242"
    assert info.available and (info.model_id, info.sae_id) == ("gemma-3-270m", "5-gemmascope-2-res-16k")
    assert info.explanations[0] == "viruses and viral infection"
    assert info.activations == expected_activations(fake.feature())


def test_missing_feature_is_a_404_and_not_retried(fake):
    info = get_feature(MODEL, SOURCE, 999, fast_cfg(retries=4))
    assert not info.available and info.message == "HTTP 404"
    assert fake.responses[-1]["body"]["error"].startswith("The model, source, or feature")
    info = get_feature("no-such-model", SOURCE, 1, fast_cfg(retries=4))
    assert not info.available and info.message == "HTTP 404"
    assert fake.responses[-1]["body"]["message"] == fake.responses[-1]["body"]["error"]
    assert fake.count == 2


def test_legacy_null_answer_reads_as_not_found(fake):
    """An older feature route answered 200 with the body `null` for a missing feature."""
    fake.not_found_style = "null"
    cfg = fast_cfg(retries=3)
    info = get_feature(MODEL, SOURCE, 999, cfg)
    assert (fake.responses[-1]["status"], fake.responses[-1]["body"]) == (200, None)
    assert not info.available and "not found" in info.message
    assert fake.count == 1 and not list(cfg.cache_dir.glob("*.json"))


def test_activation_values_stay_aligned_with_tokens(fake):
    """JSON.stringify writes a NaN activation as null; dropping it would shift every later value."""
    fake.add_feature(make_feature(index=7, activations=[(["<bos>", " anthrax", " spores"], [0.0, None, 7.5])]))
    info = get_feature(MODEL, SOURCE, 7, fast_cfg())
    (act,) = info.activations
    assert act["tokens"] == ["<bos>", " anthrax", " spores"]
    assert act["values"] == [0.0, 0.0, 7.5] and act["max_value"] == 7.5


# ----------------------------------------------------------------------------- rate limiting


def test_429_with_the_real_body_is_retried_then_succeeds(fake):
    fake.rate_limit(2)
    info = get_feature(MODEL, SOURCE, INDEX, fast_cfg(retries=3))
    statuses = [r["status"] for r in fake.responses]
    assert statuses == [429, 429, 200]
    first = fake.responses[0]
    assert "Retry-After" not in first["headers"]  # the real middleware sends none
    assert first["body"]["requestWindow"] == "60 m" and first["body"]["error"].startswith("Rate limit exceeded")
    assert info.available and info.explanations[0] == "viruses and viral infection"


def test_repeated_429_is_a_clear_unavailable_result(fake, caplog):
    fake.rate_limit(100)
    cfg = fast_cfg(retries=3)
    with caplog.at_level(logging.WARNING, logger="unlearn_core.features.neuronpedia"):
        info = get_feature(MODEL, SOURCE, INDEX, cfg)
        results = search_explanations("viral infection", model_id=MODEL, sae_ids=[SOURCE], cfg=cfg)
    assert not info.available and "rate limited" in info.message and "429" in info.message
    assert info.url.endswith(f"/{MODEL}/{SOURCE}/{INDEX}")
    assert results == []
    assert "rate limited" in caplog.text
    assert fake.count == 2 * cfg.retries
    assert not list(cfg.cache_dir.glob("*.json"))  # a refusal is never cached
    fake.rate_limit(0)
    assert get_feature(MODEL, SOURCE, INDEX, cfg).available


# ----------------------------------------------------------------------------- search


@pytest.fixture
def searchable(fake):
    fake.add_feature(make_feature(index=77, explanations=["viral replication in host cells"]))
    fake.add_feature(make_feature(layer="12-gemmascope-2-res-16k", index=5, explanations=["virus names"]))
    fake.add_feature(
        make_feature(
            model_id="gemma-2-2b", layer="20-gemmascope-res-16k", index=9, explanations=["computer virus and malware"]
        )
    )
    return fake


def _as_client_results(body: dict) -> list[dict]:
    return [
        {"model_id": r["modelId"], "sae_id": r["layer"], "index": int(r["index"]), "description": r["description"]}
        for r in body["results"]
    ]


@pytest.mark.parametrize(
    "kwargs,path,hits",
    [
        ({"model_id": MODEL, "sae_ids": [SOURCE]}, "/api/explanation/search", {(SOURCE, 4242), (SOURCE, 77)}),
        (
            {"model_id": MODEL},
            "/api/explanation/search-model",
            {(SOURCE, 4242), (SOURCE, 77), ("12-gemmascope-2-res-16k", 5)},
        ),
        (
            {},
            "/api/explanation/search-all",
            {(SOURCE, 4242), (SOURCE, 77), ("12-gemmascope-2-res-16k", 5), ("20-gemmascope-res-16k", 9)},
        ),
    ],
)
def test_search_explanations_parses_the_real_shape(searchable, kwargs, path, hits):
    results = search_explanations("viral virus", cfg=fast_cfg(), **kwargs)
    req, resp = searchable.requests[-1], searchable.responses[-1]
    assert req["method"] == "POST" and req["path"] == path
    assert resp["status"] == 200, resp["body"]  # the fake validates bodies like the real route
    assert "nextOffset" not in resp["body"] and resp["body"]["results"][0]["neuron"]["activations"]
    assert results == _as_client_results(resp["body"])
    assert {(r["sae_id"], r["index"]) for r in results} == hits
    assert all(isinstance(r["index"], int) and r["description"] for r in results)


def test_search_returns_the_first_page_only(fake):
    for i in range(25):
        fake.add_feature(make_feature(index=100 + i, explanations=[f"viral protein {i}"]))
    results = search_explanations("viral protein", model_id=MODEL, sae_ids=[SOURCE], cfg=fast_cfg())
    body = fake.responses[-1]["body"]
    assert body["hasMore"] is True and body["nextOffset"] == 20
    assert len(results) == 20 and results == _as_client_results(body)


# ----------------------------------------------------------------------------- no other host


def test_guard_blocks_the_real_site(fake, net_guard, tmp_path):
    """Proof the guard works: the default URL (neuronpedia.org) is refused and recorded."""
    cfg = NeuronpediaConfig(
        base_url=NP.DEFAULT_BASE_URL, retries=1, timeout=2.0, cache_dir=tmp_path / "c", offline=False
    )
    info = get_feature(MODEL, SOURCE, INDEX, cfg)
    assert not info.available and info.message == "connection error"
    assert net_guard.blocked and "neuronpedia.org" in net_guard.blocked[0]
    assert fake.count == 0
    net_guard.blocked.clear()  # expected here; any other test that does this fails at teardown


def test_environment_url_is_the_only_host_used(fake, net_guard):
    get_feature(MODEL, SOURCE, INDEX)
    get_feature_for_sae("gemma-scope-2-270m-pt-res", "layer_5_width_16k_l0_medium", 1)
    search_explanations("viral virus")
    assert fake.count == 3 and net_guard.blocked == []


# ----------------------------------------------------------------------------- the server endpoint


def test_dashboard_endpoint_serves_the_fake(fake, client, engine, monkeypatch):  # noqa: F811
    monkeypatch.setattr(engine.saes["tiny"], "neuronpedia_id", f"{MODEL}/{SOURCE}")
    for index in (2, 3):
        fake.add_feature(make_feature(index=index, explanations=[f"feature {index} about viruses"]))
    body = {"feature": 2, "corpora": ["webtext"], "n_tokens": 64, "k": 1}
    fake.rate_limit(1)  # one 429, then the answer
    d = ok(client.post("/api/features/dashboard", json=body))["neuronpedia"]
    sent = fake.feature(index=2)
    assert [r["path"] for r in fake.requests] == [f"/api/feature/{MODEL}/{SOURCE}/2"] * 2
    assert d["available"] is True and d["explanations"] == ["feature 2 about viruses"]
    assert d["top_logits"] == [list(p) for p in zip(sent["pos_str"], sent["pos_values"])]
    assert d["activations"] == expected_activations(sent)
    assert d["url"] == f"https://www.neuronpedia.org/{MODEL}/{SOURCE}/2"

    fake.rate_limit(100)
    d = ok(client.post("/api/features/dashboard", json={**body, "feature": 3}))["neuronpedia"]
    assert d["available"] is False and "rate limited" in d["message"]
