"""A local fake of Neuronpedia that answers with the *real* response shapes (127.0.0.1, free port).

The shapes below were read from Neuronpedia's own webapp source, not guessed:

* hijohnnylin/neuronpedia  apps/webapp/lib/db/neuron.ts
    ``getNeuronOptimized``: the feature is the Prisma ``Neuron`` row with ``model``, ``lists``,
    ``creator{name}``, ``source``, ``sourceSet``, ``comments`` included, ``correlated_features_*``
    blanked to [], ``activations`` = every public ``Activation`` row ordered by ``maxValue`` desc,
    ``explanations`` = {id, description, explanationModelName, typeName, scores, triggeredByUser}
    ordered by scoreV2/scoreV1 desc.
* hijohnnylin/neuronpedia  apps/webapp/prisma/schema.prisma
    field names and types of ``Neuron`` (index is a *string*; pos_str/pos_values, neg_str/neg_values,
    frac_nonzero, freq_hist_*, logits_hist_*, topkCosSim*, ...), ``Activation`` (tokens, values,
    maxValue, maxValueTokenIndex, minValue, dfaValues, lossValues, ...), ``Explanation``.
* shayansadeghieh/neuronpedia and mitre/neuronpedia (forks of it)
  apps/webapp/app/api/feature/[modelId]/[layer]/[index]/route.ts
    ``GET /api/feature/{modelId}/{layer}/{index}``: ``NextResponse.json(neuron)``, or
    ``{error: ERROR_NOT_FOUND_MESSAGE}`` with status 404. An older version of the same route built
    the 404 response without returning it, so it answered **200 with the body ``null``**
    (``not_found_style="null"`` here).
* hijohnnylin/neuronpedia  apps/webapp/lib/db/userCanAccess.ts + apps/webapp/lib/api-error.ts
    an unknown model/source throws ``notFound(ERROR_NOT_FOUND_MESSAGE)``, rendered centrally as
    ``{error: msg, message: msg}`` with status 404.
* mitre/neuronpedia  apps/webapp/app/api/explanation/{search,search-model,search-all}/route.tsx
    POST bodies validated with yup (modelId, layers[], query min 3, offset int; 400 ``{message}``
    otherwise); answer ``{request, results, resultsCount, hasMore, nextOffset}`` where each result
    is the raw SQL row {modelId, layer, index, description, explanationModelName, typeName,
    cosine_similarity} plus ``neuron`` (the feature with its top 3 activations); up to 20 results
    (MAX_EXPLANATION_SEARCH_RESULTS); ``nextOffset`` is undefined (absent) when there is no more.
* hijohnnylin/neuronpedia  apps/webapp/middleware.ts
    rate limiting (Upstash sliding window, ``RATE_LIMIT_WINDOW = '60 m'``): status 429 with JSON
    ``{endpoint, limitPerWindow, requestWindow, remainingRequests: 0, error: "Rate limit exceeded
    for this endpoint. ..."}`` and **no Retry-After header**; successful /api answers carry
    ``Access-Control-Allow-*`` and ``x-limit-remaining`` headers.

Everything here is data made up for tests in those shapes; no Neuronpedia code is copied.
"""

from __future__ import annotations

import json
import re
import threading
from copy import deepcopy
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from loopback_helpers import LoopbackServer

PUBLIC_URL = "https://www.neuronpedia.org"
CONTACT_EMAIL = "johnny@neuronpedia.org"
NOT_FOUND_MESSAGE = (
    "The model, source, or feature you specified is not available. Check available public "
    f"models/sources (including which ones have inference enabled) at {PUBLIC_URL}/available-resources"
)
RATE_LIMIT_WINDOW = "60 m"
# (endpoint prefix, limit) in middleware.ts's NORMAL_RATE_LIMITS order (the first hit is reported).
RATE_LIMITS = [("/", 25000), ("/api", 25000), ("/api/explanation/search", 200)]
MAX_EXPLANATION_SEARCH_RESULTS = 20
ACTS_TO_RETURN = 3  # activations kept on the neuron embedded in each search result
PUBLIC_ACTIVATIONS_USER = "clkht01d40000jv08hvalcvly"
CREATED_AT = "2025-12-10T18:04:11.123Z"

MODEL = "gemma-3-270m"
SOURCE = "5-gemmascope-2-res-16k"
INDEX = 4242


def source_set_of(layer: str) -> str:
    """Neuronpedia's getSourceSetNameFromSource: drop the leading "<layer>-"."""
    return layer.split("-", 1)[1] if "-" in layer else layer


def make_activation(
    model_id: str, layer: str, index: int, n: int, tokens: list[str], values: list[float | None]
) -> dict[str, Any]:
    """One Prisma ``Activation`` row, every column present (most of them ignored by the client)."""
    numeric = [v for v in values if v is not None]
    top = max(range(len(values)), key=lambda i: values[i] if values[i] is not None else float("-inf"))
    return {
        "id": f"cmact{index}x{n:04d}",
        "tokens": tokens,
        "dataIndex": str(31000 + n),
        "index": str(index),
        "layer": layer,
        "modelId": model_id,
        "dataSource": "monology/pile-uncopyrighted",
        "maxValue": max(numeric),
        "maxValueTokenIndex": top,
        "minValue": min(numeric),
        "values": values,
        "dfaValues": [],
        "dfaTargetIndex": None,
        "dfaMaxValue": None,
        "zQIndices": [],
        "zKIndices": [],
        "zValues": [],
        "creatorId": PUBLIC_ACTIVATIONS_USER,
        "createdAt": CREATED_AT,
        "lossValues": [],
        "logitContributions": None,
        "binMin": -1,
        "binMax": max(numeric),
        "binContains": -1,
        "qualifyingTokenIndex": None,
    }


def make_explanation(
    index: int, n: int, description: str, type_name: str = "oai_token-act-pair", model_name: str = "gemini-2.0-flash"
) -> dict[str, Any]:
    """An explanation as getNeuronOptimized selects it."""
    return {
        "id": f"cmexp{index}x{n:02d}",
        "description": description,
        "explanationModelName": model_name,
        "typeName": type_name,
        "scores": [],
        "triggeredByUser": None,
    }


def make_feature(
    model_id: str = MODEL,
    layer: str = SOURCE,
    index: int = INDEX,
    *,
    explanations: list[str] | None = None,
    activations: list[tuple[list[str], list[float | None]]] | None = None,
    pos: list[tuple[str, float]] | None = None,
    neg: list[tuple[str, float]] | None = None,
    frac_nonzero: float = 0.000731,
) -> dict[str, Any]:
    """A /api/feature response body (the Neuron row + relations), as getNeuronOptimized returns it."""
    if explanations is None:
        explanations = ["viruses and viral infection", "pathogen names in biology text"]
    activations = (
        activations
        if activations is not None
        else [
            (["<bos>", "The", " influenza", " virus", " spreads"], [0.0, 0.0, 11.25, 14.5, 2.0]),
            (["<bos>", "H", "5", "N", "1", " avian"], [0.0, 3.5, 6.0, 8.75, 12.0, 1.25]),
            ([" a", " viral", " vector"], [0.0, 9.5, 4.0]),
        ]
    )
    pos = pos if pos is not None else [(" virus", 0.912), (" viral", 0.874), ("virus", 0.811), (" viruses", 0.79)]
    neg = neg if neg is not None else [(" Nevertheless", -0.702), ("ocl", -0.655), (" pian", -0.61)]
    acts = [make_activation(model_id, layer, index, n, t, v) for n, (t, v) in enumerate(activations)]
    acts.sort(key=lambda a: a["maxValue"], reverse=True)  # orderBy maxValue desc
    set_name = source_set_of(layer)
    return {
        "modelId": model_id,
        "layer": layer,
        "index": str(index),
        "sourceSetName": set_name,
        "creatorId": "clkht01d40000jv08hvalcvly",
        "createdAt": CREATED_AT,
        "maxActApprox": max((a["maxValue"] for a in acts), default=0.0),
        "hasVector": False,
        "vector": [],
        "vectorLabel": None,
        "vectorDefaultSteerStrength": 10,
        "hookName": None,
        "topkCosSimIndices": [index, 9120, 301],
        "topkCosSimValues": [1.0, 0.41, 0.38],
        "neuron_alignment_indices": [],
        "neuron_alignment_values": [],
        "neuron_alignment_l1": [],
        "correlated_neurons_indices": [],
        "correlated_neurons_pearson": [],
        "correlated_neurons_l1": [],
        "correlated_features_indices": [],
        "correlated_features_pearson": [],
        "correlated_features_l1": [],
        "neg_str": [t for t, _ in neg],
        "neg_values": [v for _, v in neg],
        "pos_str": [t for t, _ in pos],
        "pos_values": [v for _, v in pos],
        "frac_nonzero": frac_nonzero,
        "freq_hist_data_bar_heights": [412, 230, 97, 31, 6],
        "freq_hist_data_bar_values": [1.2, 3.6, 6.0, 8.4, 10.8],
        "logits_hist_data_bar_heights": [3, 51, 880, 47, 5],
        "logits_hist_data_bar_values": [-0.6, -0.3, 0.0, 0.3, 0.6],
        "decoder_weights_dist": [],
        "umap_cluster": None,
        "umap_log_feature_sparsity": None,
        "umap_x": None,
        "umap_y": None,
        "model": {
            "id": model_id,
            "displayNameShort": model_id,
            "displayName": model_id.upper(),
            "creatorId": "clkht01d40000jv08hvalcvly",
            "tlensId": None,
            "dimension": 640,
            "visibility": "PUBLIC",
            "defaultSourceSetName": set_name,
            "defaultSourceId": layer,
            "inferenceEnabled": True,
            "instruct": False,
            "layers": 18,
            "neuronsPerLayer": 2048,
            "owner": "Google",
            "website": "https://ai.google.dev/gemma",
            "createdAt": CREATED_AT,
            "updatedAt": CREATED_AT,
        },
        "lists": [],
        "creator": {"name": "neuronpedia"},
        "source": {
            "id": layer,
            "modelId": model_id,
            "hasDashboards": True,
            "inferenceEnabled": True,
            "saelensConfig": None,
            "saelensRelease": "gemma-scope-2-270m-pt-res",
            "saelensSaeId": "layer_5_width_16k_l0_medium",
            "hfRepoId": None,
            "hfFolderId": None,
            "visibility": "PUBLIC",
            "setName": set_name,
            "creatorId": "clkht01d40000jv08hvalcvly",
            "num_prompts": 24576,
            "num_tokens_in_prompt": 128,
            "dataset": "monology/pile-uncopyrighted",
            "notes": None,
            "createdAt": CREATED_AT,
        },
        "sourceSet": {
            "modelId": model_id,
            "name": set_name,
            "hasDashboards": True,
            "visibility": "PUBLIC",
            "description": "Gemma Scope 2 residual stream, 16k",
            "type": "res",
            "creatorName": "Google DeepMind",
            "urls": [],
            "releaseName": "gemma-scope-2",
            "defaultRange": 1,
            "defaultShowBreaks": True,
            "showDfa": False,
            "createdAt": CREATED_AT,
        },
        "comments": [],
        "activations": acts,
        "explanations": [make_explanation(index, n, d) for n, d in enumerate(explanations)],
    }


class RealNeuronpedia(LoopbackServer):
    """Threaded HTTP server on 127.0.0.1 answering like neuronpedia.org.

    Knobs: ``rate_limit(n)`` makes the next n /api requests answer 429 (middleware body, no
    Retry-After unless ``retry_after`` is set); ``not_found_style`` is ``"404"`` (current route)
    or ``"null"`` (older route: 200 with body null). Every request is recorded in ``requests``
    and every answer's status/headers/body in ``responses``.
    """

    def __init__(self) -> None:
        self.features: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.not_found_style = "404"
        self.retry_after: str | None = None  # the real middleware sends none
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._rate_limited_left = 0
        self._lock = threading.Lock()
        self.add_feature(make_feature())
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = fake._answer(self.command, self.path, dict(self.headers), raw)
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    ctype = "text/html; charset=utf-8" if isinstance(body, bytes) else "application/json"
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            do_GET = _handle
            do_POST = _handle

        super().__init__(Handler)

    # ------------------------------------------------------------------ control

    def add_feature(self, feature: dict[str, Any]) -> dict[str, Any]:
        self.features[(feature["modelId"], feature["layer"], feature["index"])] = feature
        return feature

    def feature(self, model_id: str = MODEL, layer: str = SOURCE, index: int = INDEX) -> dict[str, Any]:
        return self.features[(model_id, layer, str(index))]

    def rate_limit(self, n: int) -> None:
        with self._lock:
            self._rate_limited_left = n

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    # ------------------------------------------------------------------ routing

    def _answer(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        path = unquote(urlsplit(target).path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = "<invalid json>"
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
            limited = self._rate_limited_left > 0 and path.startswith("/api")
            if limited:
                self._rate_limited_left -= 1
        if limited:
            status, out, extra = self._too_many(path)
        else:
            status, out, extra = self._route(method, path, body)
        with self._lock:
            self.responses.append({"status": status, "headers": extra, "body": out})
        return status, out, extra

    def _too_many(self, path: str) -> tuple[int, Any, dict[str, str]]:
        endpoint, limit = next((e, n) for e, n in reversed(RATE_LIMITS) if path.lower().startswith(e))
        body = {
            "endpoint": endpoint,
            "limitPerWindow": limit,
            "requestWindow": RATE_LIMIT_WINDOW,
            "remainingRequests": 0,
            "error": (
                f"Rate limit exceeded for this endpoint. The limit for this endpoint ({endpoint}) is "
                f"{limit} requests per {RATE_LIMIT_WINDOW}. Contact {CONTACT_EMAIL} to increase "
                "your rate limit."
            ),
        }
        return 429, body, ({"Retry-After": self.retry_after} if self.retry_after is not None else {})

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        cors = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Content-Type",
            "x-limit-remaining": "24987",
        }
        m = re.fullmatch(r"/api/feature/([^/]+)/([^/]+)/([^/]+)", path)
        if m and method == "GET":
            status, out = self._feature(*m.groups())
            return status, out, cors
        m = re.fullmatch(r"/api/explanation/(search|search-model|search-all)", path)
        if m and method == "POST":
            status, out = self._search(m.group(1), body)
            return status, out, cors
        # Next.js app router: an unknown path is its HTML 404 page, not JSON.
        return 404, b"<!DOCTYPE html><html><body><h1>404</h1>This page could not be found.</body></html>", {}

    def _feature(self, model_id: str, layer: str, index: str) -> tuple[int, Any]:
        if not any(k[0] == model_id and k[1] == layer for k in self.features):
            # assertUserCanAccessModelAndSource -> notFound(...) -> toErrorResponse
            return 404, {"error": NOT_FOUND_MESSAGE, "message": NOT_FOUND_MESSAGE}
        feature = self.features.get((model_id, layer, index))
        if feature is None:
            if self.not_found_style == "null":
                return 200, None
            return 404, {"error": NOT_FOUND_MESSAGE}
        return 200, deepcopy(feature)

    def _search(self, kind: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"message": "Invalid JSON body"}
        required = {
            "search": ["modelId", "layers", "query"],
            "search-model": ["modelId", "query"],
            "search-all": ["query"],
        }[kind]
        for name in required:
            if body.get(name) in (None, ""):
                return 400, {"message": f"{name} is a required field"}
        if not isinstance(body["query"], str) or len(body["query"]) < 3:
            return 400, {"message": "query must be at least 3 characters"}
        if kind == "search" and not (
            isinstance(body["layers"], list) and all(isinstance(x, str) for x in body["layers"])
        ):
            return 400, {"message": "layers must be a `array` type"}
        offset = body.get("offset") or 0
        if not isinstance(offset, int):
            return 400, {"message": "offset must be an integer"}
        words = [w for w in re.findall(r"[a-z0-9]+", body["query"].lower()) if len(w) >= 3]
        rows = []
        for (model_id, layer, index), feature in self.features.items():
            if kind != "search-all" and model_id != body["modelId"]:
                continue
            if kind == "search" and layer not in body["layers"]:
                continue
            for exp in feature["explanations"]:
                hits = sum(w in exp["description"].lower() for w in words)
                if hits:
                    rows.append((hits, model_id, layer, index, exp, feature))
        rows.sort(key=lambda r: (-r[0], r[1], r[2], int(r[3])))
        page = rows[offset : offset + MAX_EXPLANATION_SEARCH_RESULTS]
        results = []
        for hits, model_id, layer, index, exp, feature in page:
            neuron = {
                k: v
                for k, v in deepcopy(feature).items()
                if k not in ("model", "lists", "creator", "source", "sourceSet", "comments")
            }
            neuron["activations"] = neuron["activations"][:ACTS_TO_RETURN]
            neuron["explanations"] = [
                {k: e[k] for k in ("description", "explanationModelName", "typeName")} for e in feature["explanations"]
            ]
            results.append(
                {
                    "modelId": model_id,
                    "layer": layer,
                    "index": index,
                    "description": exp["description"],
                    "explanationModelName": exp["explanationModelName"],
                    "typeName": exp["typeName"],
                    "cosine_similarity": round(0.5 + 0.1 * hits, 6),
                    "neuron": neuron,
                }
            )
        has_more = len(results) == MAX_EXPLANATION_SEARCH_RESULTS
        out = {"request": body, "results": results, "resultsCount": len(results), "hasMore": has_more}
        if has_more:  # undefined nextOffset is dropped by JSON.stringify
            out["nextOffset"] = offset + len(results)
        return 200, out
