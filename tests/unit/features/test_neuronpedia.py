"""Tests for unlearn_core.features.neuronpedia against a fake Neuronpedia on 127.0.0.1 (no real network)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from loopback_helpers import LoopbackServer, loopback_env

from unlearn_core.features import neuronpedia as NP
from unlearn_core.features.neuronpedia import (
    FeatureInfo,
    NeuronpediaConfig,
    get_feature,
    get_feature_for_sae,
    neuronpedia_ids_for_sae,
    search_explanations,
)

MODEL = "gemma-2-2b"
SAE = "7-gemmascope-res-16k"
INDEX = 1234
FEATURE_PATH = f"/api/feature/{MODEL}/{SAE}/{INDEX}"
SECRET = "sk-np-THIS-IS-A-SECRET-KEY-123"

# A trimmed but structurally faithful /api/feature response.
FEATURE_JSON = {
    "modelId": MODEL,
    "layer": SAE,
    "index": str(INDEX),
    "sourceSetName": "gemmascope-res-16k",
    "maxActApprox": 42.5,
    "hasVector": False,
    "neg_str": [" Nevertheless", "ocl", " pian"],
    "neg_values": [-0.71, -0.65, -0.6],
    "pos_str": [" plutonium", " uranium", " enrichment"],
    "pos_values": [1.21, 1.05, 0.98],
    "frac_nonzero": 0.00042,
    "freq_hist_data_bar_heights": [10, 5, 1],
    "freq_hist_data_bar_values": [1.0, 2.0, 3.0],
    "explanations": [
        {
            "id": "clx123",
            "modelId": MODEL,
            "layer": SAE,
            "index": str(INDEX),
            "description": "nuclear weapons materials",
            "typeName": "oai_token-act-pair",
            "explanationModelName": "gpt-4o-mini",
        },
        {"id": "clx124", "description": "radioactive elements"},
        {"id": "clx125"},  # no description: skipped
    ],
    "activations": [
        {
            "id": "act1",
            "tokens": ["<bos>", "The", " plutonium", " core"],
            "values": [0.0, 0.0, 42.5, 3.1],
            "maxValue": 42.5,
            "maxValueTokenIndex": 2,
        },
        {
            "id": "act2",
            "tokens": ["en", "riched", " uranium"],
            "values": [0.0, 1.5, 30.25],
            # maxValue missing: computed from values
        },
    ],
}

SEARCH_JSON = {
    "request": {"modelId": MODEL, "layers": [SAE], "query": "nuclear", "offset": 0},
    "results": [
        {"modelId": MODEL, "layer": SAE, "index": "1234", "description": "nuclear weapons materials"},
        {"modelId": MODEL, "layer": SAE, "index": "77", "description": "nuclear power plants"},
        {"modelId": MODEL, "layer": SAE, "index": "not-a-number", "description": "dropped"},
    ],
    "resultsCount": 3,
    "hasMore": False,
    "nextOffset": 20,
}


class FakeNeuronpedia(LoopbackServer):
    """Recorded-response server. ``mode`` picks behaviour; every request is recorded."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | 429-then-ok | 500 | 404 | badjson | slow
        self.retry_after = "0"
        self.slow_seconds = 2.0
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake._lock:
                    fake.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": json.loads(body) if body else None,
                        }
                    )
                    n = len(fake.requests)
                mode = fake.mode
                if mode == "slow":
                    fake._stop.wait(fake.slow_seconds)
                    return self._send(200, FEATURE_JSON)
                if mode == "500":
                    return self._send(500, {"error": "boom"})
                if mode == "404":
                    return self._send(404, {"message": "Feature not found"})
                if mode == "429-then-ok" and n == 1:
                    return self._send(429, {"error": "rate limited"}, {"Retry-After": fake.retry_after})
                if mode == "badjson":
                    return self._send_raw(200, b"{not json at all")
                if self.path.startswith("/api/explanation/"):
                    return self._send(200, SEARCH_JSON)
                if self.path.startswith("/api/feature/"):
                    return self._send(200, FEATURE_JSON)
                return self._send(404, {"message": "no route"})

            def _send(self, status, obj, extra=None):
                self._send_raw(status, json.dumps(obj).encode(), extra)

            def _send_raw(self, status, payload, extra=None):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (extra or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # client gave up (timeout test)
                    pass

            do_GET = _handle
            do_POST = _handle

        super().__init__(Handler)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def stop(self) -> None:
        self._stop.set()  # a slow answer ends now
        super().stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Isolate from the machine's env: no offline flags, no key, no proxies for loopback."""
    loopback_env(monkeypatch)


@pytest.fixture
def server():
    fake = FakeNeuronpedia().start()
    yield fake
    fake.stop()


@pytest.fixture
def make_cfg(server, tmp_path):
    def _make(**overrides) -> NeuronpediaConfig:
        kwargs = dict(
            base_url=server.url,
            api_key=None,
            timeout=2.0,
            retries=3,
            backoff=0.01,
            cache_dir=tmp_path / "np-cache",
            offline=False,
        )
        kwargs.update(overrides)
        return NeuronpediaConfig(**kwargs)

    return _make


def _closed_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_env(monkeypatch, tmp_path):
    cfg = NeuronpediaConfig()
    assert cfg.base_url == "https://www.neuronpedia.org"
    assert cfg.api_key is None
    assert (cfg.timeout, cfg.retries, cfg.backoff) == (10.0, 3, 0.5)
    assert cfg.cache_dir == Path(NP.__file__).resolve().parents[2] / "cache" / "neuronpedia"
    assert cfg.offline is False

    monkeypatch.setenv("NEURONPEDIA_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = NeuronpediaConfig()
    assert cfg.base_url == "http://127.0.0.1:9"
    assert cfg.cache_dir == tmp_path / "neuronpedia"
    assert cfg.offline is True

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("UNLEARN_OFFLINE", "1")
    assert NeuronpediaConfig().offline is True


# ----------------------------------------------------------------------------- parsing + cache


def test_get_feature_parses_response(server, make_cfg):
    info = get_feature(MODEL, SAE, INDEX, make_cfg())
    assert isinstance(info, FeatureInfo)
    assert info.available and not info.from_cache and info.message == ""
    assert (info.model_id, info.sae_id, info.index) == (MODEL, SAE, INDEX)
    assert info.url == f"https://www.neuronpedia.org/{MODEL}/{SAE}/{INDEX}"
    assert info.explanations == ["nuclear weapons materials", "radioactive elements"]
    assert info.top_logits == [(" plutonium", 1.21), (" uranium", 1.05), (" enrichment", 0.98)]
    assert info.bottom_logits[0] == (" Nevertheless", -0.71) and len(info.bottom_logits) == 3
    assert info.frac_nonzero == pytest.approx(0.00042)
    assert len(info.activations) == 2
    a0, a1 = info.activations
    assert a0["tokens"] == ["<bos>", "The", " plutonium", " core"]
    assert a0["values"] == [0.0, 0.0, 42.5, 3.1] and a0["max_value"] == 42.5
    assert a1["max_value"] == 30.25  # computed when maxValue is missing
    assert server.requests[0]["method"] == "GET"
    assert server.requests[0]["path"] == FEATURE_PATH


def test_missing_keys_are_tolerated():
    info = NP.parse_feature({"explanations": None, "pos_str": ["a"]}, MODEL, SAE, 3)
    assert info.available and info.explanations == [] and info.top_logits == []
    assert info.activations == [] and info.frac_nonzero is None


def test_cache_hit_does_not_touch_server(server, make_cfg):
    cfg = make_cfg()
    first = get_feature(MODEL, SAE, INDEX, cfg)
    assert server.count == 1 and not first.from_cache
    files = list(cfg.cache_dir.glob("*.json"))
    assert len(files) == 1
    assert not list(cfg.cache_dir.glob(".tmp-*"))  # atomic write left no temp files
    second = get_feature(MODEL, SAE, INDEX, cfg)
    assert server.count == 1
    assert second.available and second.from_cache
    assert second.explanations == first.explanations
    assert second.top_logits == first.top_logits  # tuples survive the JSON round trip


def test_corrupt_cache_is_logged_deleted_and_refetched(server, make_cfg, caplog):
    cfg = make_cfg()
    get_feature(MODEL, SAE, INDEX, cfg)
    (cache_file,) = cfg.cache_dir.glob("*.json")
    cache_file.write_text("{this is not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="unlearn_core.features.neuronpedia"):
        info = get_feature(MODEL, SAE, INDEX, cfg)
    assert "corrupt" in caplog.text.lower()
    assert server.count == 2
    assert info.available and not info.from_cache
    json.loads(cache_file.read_text(encoding="utf-8"))  # rewritten, valid again


def test_errors_are_not_cached(server, make_cfg):
    cfg = make_cfg()
    server.mode = "404"
    assert not get_feature(MODEL, SAE, INDEX, cfg).available
    assert not list(cfg.cache_dir.glob("*.json"))  # glob of a missing dir is empty too
    server.mode = "ok"
    assert get_feature(MODEL, SAE, INDEX, cfg).available
    assert server.count == 2


# ----------------------------------------------------------------------------- retries / errors


def test_429_then_success_retries(server, make_cfg):
    server.mode = "429-then-ok"
    info = get_feature(MODEL, SAE, INDEX, make_cfg())
    assert info.available
    assert server.count == 2


def test_large_retry_after_is_not_honoured(server, make_cfg):
    server.mode = "429-then-ok"
    server.retry_after = "3600"
    start = time.monotonic()
    info = get_feature(MODEL, SAE, INDEX, make_cfg())
    assert info.available and server.count == 2
    assert time.monotonic() - start < 2.0


def test_500_exhausts_retries(server, make_cfg):
    server.mode = "500"
    cfg = make_cfg(retries=3)
    info = get_feature(MODEL, SAE, INDEX, cfg)
    assert not info.available
    assert info.message == "HTTP 500"
    assert server.count == cfg.retries
    assert info.url.endswith(f"/{MODEL}/{SAE}/{INDEX}")


def test_404_is_not_retried(server, make_cfg):
    server.mode = "404"
    info = get_feature(MODEL, SAE, INDEX, make_cfg(retries=5))
    assert not info.available and info.message == "HTTP 404"
    assert server.count == 1


def test_invalid_json_response(server, make_cfg):
    server.mode = "badjson"
    info = get_feature(MODEL, SAE, INDEX, make_cfg())
    assert not info.available and "json" in info.message.lower()


def test_timeout_returns_unavailable(server, make_cfg):
    server.mode = "slow"
    server.slow_seconds = 3.0
    start = time.monotonic()
    info = get_feature(MODEL, SAE, INDEX, make_cfg(timeout=0.2, retries=2))
    assert not info.available and info.message == "timeout"
    assert server.count == 2
    assert time.monotonic() - start < 2.5


def test_unreachable_port_does_not_raise(tmp_path):
    cfg = NeuronpediaConfig(
        base_url=f"http://127.0.0.1:{_closed_port()}",
        timeout=1.0,
        retries=2,
        backoff=0.01,
        cache_dir=tmp_path / "c",
        offline=False,
    )
    info = get_feature(MODEL, SAE, INDEX, cfg)
    assert not info.available and info.message == "connection error"
    assert search_explanations("nuclear", cfg=cfg) == []


# ----------------------------------------------------------------------------- offline


def test_offline_without_cache_makes_no_request(server, make_cfg, monkeypatch):
    monkeypatch.setenv("UNLEARN_OFFLINE", "1")
    cfg = make_cfg(offline=NP._default_offline())
    assert cfg.offline
    info = get_feature(MODEL, SAE, INDEX, cfg)
    assert not info.available and info.message == "offline"
    assert server.count == 0


def test_offline_returns_cached_data(server, make_cfg, monkeypatch):
    get_feature(MODEL, SAE, INDEX, make_cfg())
    assert server.count == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = get_feature(MODEL, SAE, INDEX, make_cfg(offline=NP._default_offline()))
    assert info.available and info.from_cache
    assert info.explanations[0] == "nuclear weapons materials"
    assert server.count == 1


def test_no_neuronpedia_id(server, make_cfg):
    info = get_feature(None, None, 5, make_cfg())
    assert not info.available and info.message == "no Neuronpedia id for this SAE"
    info = get_feature_for_sae("no-such-release", "nothing", 5, make_cfg())
    assert not info.available and info.message == "no Neuronpedia id for this SAE"
    assert server.count == 0


# ----------------------------------------------------------------------------- API key


def test_api_key_header_sent_and_never_leaked(server, make_cfg, monkeypatch, caplog):
    monkeypatch.setenv("NEURONPEDIA_API_KEY", SECRET)
    cfg = make_cfg(api_key=NP._default_api_key())
    assert cfg.api_key == SECRET
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)
    with caplog.at_level(logging.DEBUG):
        assert get_feature(MODEL, SAE, INDEX, cfg).available
        server.mode = "500"
        get_feature(MODEL, SAE, INDEX + 1, cfg)
    headers = {k.lower(): v for k, v in server.requests[0]["headers"].items()}
    assert headers.get("x-api-key") == SECRET
    assert caplog.records  # something was logged, and none of it is the key
    assert SECRET not in caplog.text
    for f in cfg.cache_dir.glob("*.json"):
        assert SECRET not in f.read_text(encoding="utf-8")


def test_no_api_key_header_without_env(server, make_cfg):
    cfg = make_cfg(api_key=NP._default_api_key())
    assert cfg.api_key is None
    get_feature(MODEL, SAE, INDEX, cfg)
    headers = {k.lower() for k in server.requests[0]["headers"]}
    assert "x-api-key" not in headers


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "model_id,sae_id,index",
    [
        ("gemma-2-2b", "7-gemmascope-res-16k", -1),
        ("gemma-2-2b", "7-gemmascope-res-16k", 1.5),
        ("gemma-2-2b", "7-gemmascope-res-16k", True),
        ("../etc", "x", 1),
        ("gemma-2-2b", "7/gemmascope", 1),
        ("gemma 2", "x", 1),
        ("gemma-2-2b", "x?y=1", 1),
    ],
)
def test_invalid_inputs_raise(model_id, sae_id, index, server, make_cfg):
    with pytest.raises(ValueError):
        get_feature(model_id, sae_id, index, make_cfg())
    assert server.count == 0


def test_search_input_validation(make_cfg):
    cfg = make_cfg()
    with pytest.raises(ValueError):
        search_explanations("ab", cfg=cfg)
    with pytest.raises(ValueError):
        search_explanations("nuclear", sae_ids=[SAE], cfg=cfg)
    with pytest.raises(ValueError):
        search_explanations("nuclear", model_id=MODEL, sae_ids=["bad/id"], cfg=cfg)


# ----------------------------------------------------------------------------- search


def test_search_explanations_endpoints_and_cache(server, make_cfg):
    cfg = make_cfg()
    results = search_explanations("nuclear", model_id=MODEL, sae_ids=[SAE], cfg=cfg)
    assert results == [
        {"model_id": MODEL, "sae_id": SAE, "index": 1234, "description": "nuclear weapons materials"},
        {"model_id": MODEL, "sae_id": SAE, "index": 77, "description": "nuclear power plants"},
    ]
    req = server.requests[-1]
    assert req["method"] == "POST" and req["path"] == "/api/explanation/search"
    assert req["body"] == {"modelId": MODEL, "layers": [SAE], "query": "nuclear", "offset": 0}

    search_explanations("nuclear", cfg=cfg)
    assert server.requests[-1]["path"] == "/api/explanation/search-all"
    assert server.requests[-1]["body"] == {"query": "nuclear", "offset": 0}

    search_explanations("nuclear", model_id=MODEL, cfg=cfg)
    assert server.requests[-1]["path"] == "/api/explanation/search-model"
    assert server.requests[-1]["body"] == {"modelId": MODEL, "query": "nuclear", "offset": 0}

    n = server.count
    assert search_explanations("nuclear", model_id=MODEL, sae_ids=[SAE], cfg=cfg) == results
    assert server.count == n  # cache hit


def test_search_errors_return_empty(server, make_cfg):
    server.mode = "500"
    assert search_explanations("nuclear", cfg=make_cfg(retries=2)) == []
    assert server.count == 2
    server.mode = "ok"
    assert search_explanations("nuclear", cfg=make_cfg(offline=True)) == []
    assert server.count == 2


# ----------------------------------------------------------------------------- SAELens ids


def test_neuronpedia_ids_for_sae():
    assert neuronpedia_ids_for_sae("gemma-scope-2b-pt-res-canonical", "layer_7/width_16k/canonical") == (
        "gemma-2-2b",
        "7-gemmascope-res-16k",
    )
    assert neuronpedia_ids_for_sae("gemma-scope-2b-pt-res-canonical", "layer_999/nope") is None
    assert neuronpedia_ids_for_sae("definitely-not-a-release", "x") is None
