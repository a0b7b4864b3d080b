"""A small, failure-tolerant Neuronpedia client.

Neuronpedia (https://www.neuronpedia.org) has human-readable explanations, top/bottom logits
and top activating examples for the features of many public SAEs. The workbench uses it only
to *describe* features, so it must never break an experiment: every network or HTTP problem
becomes ``FeatureInfo(available=False, message=...)`` (or an empty search result) instead of an
exception, and successful answers are cached on disk so repeated runs, and offline runs, still
have them. Only bad inputs (negative index, unsafe ids) raise ``ValueError``, because those are
bugs in the caller, not network trouble.

Configuration comes from the environment:

* ``NEURONPEDIA_URL``      base URL (default ``https://www.neuronpedia.org``)
* ``NEURONPEDIA_API_KEY``  optional key, sent as ``X-Api-Key``; never logged, cached or repr'd
* ``UNLEARN_CACHE_DIR``    cache root; the client uses ``<root>/neuronpedia``
* ``UNLEARN_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``  do not touch the network at all
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from unlearn_core.core.paths import REPO_ROOT as _REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://www.neuronpedia.org"
# Human feature pages always point at the public site (the API base may be a mirror/proxy).
PUBLIC_PAGE_URL = "https://www.neuronpedia.org"
API_KEY_HEADER = "X-Api-Key"
REPO_ROOT = _REPO_ROOT
SAFE_ID = re.compile(r"^[A-Za-z0-9._\-]+$")
# Retry-After values above this are not honoured (we fall back to our own backoff), so a
# server cannot park an experiment for minutes.
MAX_RETRY_AFTER_S = 10.0
_TRUE = {"1", "true", "yes", "on"}
# Neuronpedia's 429 (its middleware) has a JSON body but no Retry-After, and an hourly window:
# say plainly that we were refused, so nobody mistakes it for a missing feature.
RATE_LIMITED_MESSAGE = "rate limited by Neuronpedia (HTTP 429)"
NULL_BODY_MESSAGE = "not found (empty response)"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _default_base_url() -> str:
    return (os.environ.get("NEURONPEDIA_URL") or DEFAULT_BASE_URL).rstrip("/")


def _default_api_key() -> str | None:
    return os.environ.get("NEURONPEDIA_API_KEY") or None


def _default_cache_dir() -> Path:
    root = os.environ.get("UNLEARN_CACHE_DIR")
    return (Path(root) if root else REPO_ROOT / "cache") / "neuronpedia"


def _default_offline() -> bool:
    return _env_flag("UNLEARN_OFFLINE") or _env_flag("HF_HUB_OFFLINE")


@dataclass
class NeuronpediaConfig:
    """Where and how to talk to Neuronpedia. Defaults are read from the environment."""

    base_url: str = field(default_factory=_default_base_url)
    # repr=False: the key must never end up in logs, tracebacks or printed configs.
    api_key: str | None = field(default_factory=_default_api_key, repr=False)
    timeout: float = 10.0
    retries: int = 3  # total attempts for retryable failures (429, 5xx, timeouts, conn errors)
    backoff: float = 0.5  # seconds; attempt n waits backoff * 2**n
    cache_dir: Path = field(default_factory=_default_cache_dir)
    offline: bool = field(default_factory=_default_offline)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.cache_dir = Path(self.cache_dir)


@dataclass
class FeatureInfo:
    """What Neuronpedia knows about one SAE feature (or why we could not find out)."""

    model_id: str
    sae_id: str
    index: int
    explanations: list[str] = field(default_factory=list)
    top_logits: list[tuple[str, float]] = field(default_factory=list)
    bottom_logits: list[tuple[str, float]] = field(default_factory=list)
    # each: {"tokens": [str], "values": [float], "max_value": float}
    activations: list[dict[str, Any]] = field(default_factory=list)
    frac_nonzero: float | None = None
    url: str = ""
    available: bool = False
    message: str = ""
    from_cache: bool = False


# ----------------------------------------------------------------------------- validation


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not SAFE_ID.match(value):
        raise ValueError(f"invalid Neuronpedia {what}: {value!r} (allowed: letters, digits, . _ -)")
    return value


def _check_index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"feature index must be a non-negative int, got {index!r}")
    return index


def feature_page_url(model_id: str, sae_id: str, index: int) -> str:
    """The human-readable Neuronpedia page for a feature."""
    return f"{PUBLIC_PAGE_URL}/{model_id}/{sae_id}/{index}"


# ----------------------------------------------------------------------------- disk cache


def _cache_key(method: str, url: str, body: Any) -> str:
    # Headers (and so the API key) are deliberately not part of the key or the file.
    payload = json.dumps([method.upper(), url, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _cache_path(cfg: NeuronpediaConfig, key: str) -> Path:
    return cfg.cache_dir / f"{key}.json"


def _cache_read(path: Path) -> Any | None:
    """Return cached data, or None on a miss. A corrupt file is logged, deleted and ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read Neuronpedia cache file %s: %s", path, exc)
        return None
    try:
        entry = json.loads(text)
        if not isinstance(entry, dict) or "data" not in entry:
            raise ValueError("not a cache entry")
        return entry["data"]
    except ValueError as exc:  # JSONDecodeError is a ValueError
        log.warning("corrupt Neuronpedia cache file %s (%s); deleting and refetching", path, exc)
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        return None


def _cache_write(path: Path, url: str, data: Any) -> None:
    """Atomic write (temp file in the same dir + os.replace) so readers never see half a file."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=".tmp-", suffix=".json", delete=False
        ) as tmp:
            tmp_name = tmp.name
            json.dump({"url": url, "saved_at": time.time(), "data": data}, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:  # a cache we cannot write is not worth failing over
        log.warning("cannot write Neuronpedia cache file %s: %s", path, exc)
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


# ----------------------------------------------------------------------------- HTTP


def _retry_delay(cfg: NeuronpediaConfig, attempt: int, response: requests.Response | None) -> float:
    if response is not None:
        retry_after = response.headers.get("Retry-After")
        if retry_after is not None:
            try:
                seconds = float(retry_after)
            except ValueError:
                seconds = -1.0  # HTTP-date form: ignore, use our own backoff
            if 0.0 <= seconds <= MAX_RETRY_AFTER_S:
                return seconds
    return cfg.backoff * (2**attempt)


def _fetch(method: str, url: str, body: Any, cfg: NeuronpediaConfig) -> tuple[Any | None, str]:
    """One logical request with retries. Returns (data, "") or (None, reason). Never raises."""
    headers = {"Accept": "application/json"}
    if cfg.api_key:
        headers[API_KEY_HEADER] = cfg.api_key
    attempts = max(1, int(cfg.retries))
    message = "unknown error"
    for attempt in range(attempts):
        response = None
        try:
            response = requests.request(method, url, json=body, headers=headers, timeout=cfg.timeout)
        except requests.Timeout:
            message = "timeout"
        except requests.ConnectionError:
            message = "connection error"
        except requests.RequestException as exc:  # invalid URL etc.: retrying will not help
            log.warning("Neuronpedia request to %s failed: %s", url, type(exc).__name__)
            return None, f"request error ({type(exc).__name__})"
        else:
            status = response.status_code
            if status == 200:
                try:
                    data = response.json()
                except ValueError:
                    log.warning("Neuronpedia returned invalid JSON for %s", url)
                    return None, "invalid JSON in response"
                # An older /api/feature route answered a missing feature with 200 and `null`.
                return (None, NULL_BODY_MESSAGE) if data is None else (data, "")
            message = RATE_LIMITED_MESSAGE if status == 429 else f"HTTP {status}"
            if status != 429 and status < 500:
                log.warning("Neuronpedia request to %s failed: %s", url, message)
                return None, message
        if attempt + 1 < attempts:
            delay = _retry_delay(cfg, attempt, response)
            log.info(
                "Neuronpedia %s for %s; retry %d/%d in %.2fs",
                message,
                url,
                attempt + 1,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    log.warning("Neuronpedia request to %s failed after %d attempt(s): %s", url, attempts, message)
    return None, message


def _request_json(method: str, path: str, body: Any, cfg: NeuronpediaConfig) -> tuple[Any | None, bool, str]:
    """Cached request. Returns (data, from_cache, message); data is None when unavailable."""
    url = f"{cfg.base_url}{path}"
    cache_file = _cache_path(cfg, _cache_key(method, url, body))
    cached = _cache_read(cache_file)
    if cached is not None:
        return cached, True, ""
    if cfg.offline:
        return None, False, "offline"
    data, message = _fetch(method, url, body, cfg)
    if data is None:
        return None, False, message
    if isinstance(data, (dict, list)):  # don't cache "null" / odd answers
        _cache_write(cache_file, url, data)
    return data, False, ""


# ----------------------------------------------------------------------------- parsing


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pairs(tokens: Any, values: Any) -> list[tuple[str, float]]:
    if not isinstance(tokens, list) or not isinstance(values, list):
        return []
    out = []
    for tok, val in zip(tokens, values):
        fval = _as_float(val)
        if fval is not None:
            out.append((str(tok), fval))
    return out


def _parse_activation(act: Any) -> dict[str, Any] | None:
    if not isinstance(act, dict):
        return None
    tokens = [str(t) for t in act.get("tokens") or []]
    # values[i] belongs to tokens[i]: JSON.stringify writes NaN as null, and dropping it would
    # shift every later value onto the wrong token, so a missing value reads as 0.
    values = [_as_float(x) or 0.0 for x in act.get("values") or []]
    max_value = _as_float(act.get("maxValue"))
    if max_value is None:
        max_value = max(values) if values else 0.0
    return {"tokens": tokens, "values": values, "max_value": max_value}


def parse_feature(data: dict[str, Any], model_id: str, sae_id: str, index: int) -> FeatureInfo:
    """Turn a ``/api/feature`` response into a FeatureInfo, tolerating missing keys."""
    explanations = [
        str(e["description"]) for e in data.get("explanations") or [] if isinstance(e, dict) and e.get("description")
    ]
    activations = [a for a in map(_parse_activation, data.get("activations") or []) if a]
    return FeatureInfo(
        model_id=model_id,
        sae_id=sae_id,
        index=index,
        explanations=explanations,
        top_logits=_pairs(data.get("pos_str"), data.get("pos_values")),
        bottom_logits=_pairs(data.get("neg_str"), data.get("neg_values")),
        activations=activations,
        frac_nonzero=_as_float(data.get("frac_nonzero")),
        url=feature_page_url(model_id, sae_id, index),
        available=True,
    )


# ----------------------------------------------------------------------------- public API


def get_feature(
    model_id: str | None, sae_id: str | None, index: int, cfg: NeuronpediaConfig | None = None
) -> FeatureInfo:
    """Fetch one feature (``GET /api/feature/{modelId}/{saeId}/{index}``); never raises on I/O.

    ``model_id``/``sae_id`` of None or "" mean "this SAE has no Neuronpedia id" and give an
    unavailable FeatureInfo rather than an error, so callers can pass lookups through as-is.
    """
    cfg = cfg or NeuronpediaConfig()
    _check_index(index)
    if not model_id or not sae_id:
        return FeatureInfo(
            model_id=model_id or "",
            sae_id=sae_id or "",
            index=index,
            message="no Neuronpedia id for this SAE",
        )
    _check_id(model_id, "model id")
    _check_id(sae_id, "SAE id")
    data, from_cache, message = _request_json("GET", f"/api/feature/{model_id}/{sae_id}/{index}", None, cfg)
    if data is not None and not isinstance(data, dict):
        data, message = None, "unexpected response"
    if data is None:
        return FeatureInfo(
            model_id=model_id,
            sae_id=sae_id,
            index=index,
            url=feature_page_url(model_id, sae_id, index),
            message=message,
        )
    info = parse_feature(data, model_id, sae_id, index)
    info.from_cache = from_cache
    return info


def search_explanations(
    query: str,
    model_id: str | None = None,
    sae_ids: list[str] | None = None,
    cfg: NeuronpediaConfig | None = None,
) -> list[dict[str, Any]]:
    """Semantic search over feature explanations; returns [] when Neuronpedia is unavailable.

    With ``model_id`` and ``sae_ids`` → ``POST /api/explanation/search``; with only
    ``model_id`` → ``/api/explanation/search-model``; with neither → ``/api/explanation/search-all``.
    Only the first page (up to 20 results on Neuronpedia) is returned.
    Each result is ``{"model_id", "sae_id", "index", "description"}``.
    """
    cfg = cfg or NeuronpediaConfig()
    if not isinstance(query, str) or len(query.strip()) < 3:
        raise ValueError("query must be a string of at least 3 characters (Neuronpedia's minimum)")
    query = query.strip()
    if sae_ids and not model_id:
        raise ValueError("sae_ids need a model_id")
    if model_id is not None:
        _check_id(model_id, "model id")
    if sae_ids:
        sae_ids = [_check_id(s, "SAE id") for s in sae_ids]
        path = "/api/explanation/search"
        body: dict[str, Any] = {"modelId": model_id, "layers": sae_ids, "query": query, "offset": 0}
    elif model_id:
        path = "/api/explanation/search-model"
        body = {"modelId": model_id, "query": query, "offset": 0}
    else:
        path = "/api/explanation/search-all"
        body = {"query": query, "offset": 0}
    data, _from_cache, message = _request_json("POST", path, body, cfg)
    if data is None:
        log.warning("Neuronpedia explanation search unavailable: %s", message)
        return []
    results = data.get("results") if isinstance(data, dict) else data
    out: list[dict[str, Any]] = []
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            index = int(item.get("index"))
        except (TypeError, ValueError):
            continue
        out.append(
            {
                "model_id": str(item.get("modelId") or ""),
                "sae_id": str(item.get("layer") or ""),
                "index": index,
                "description": str(item.get("description") or ""),
            }
        )
    return out


def neuronpedia_ids_for_sae(release: str, sae_id: str) -> tuple[str, str] | None:
    """Map a SAELens (release, sae_id) to Neuronpedia's (modelId, saeId) via SAELens's bundled
    registry (works offline). None if the SAE is unknown or has no Neuronpedia page."""
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        entry = get_pretrained_saes_directory().get(release)
    except Exception as exc:  # missing/odd sae_lens must not break describing features
        log.warning("cannot read the SAELens registry: %s", exc)
        return None
    np_ids = getattr(entry, "neuronpedia_id", None) or {}
    np_id = np_ids.get(sae_id) if isinstance(np_ids, dict) else None
    if not isinstance(np_id, str) or "/" not in np_id:
        return None
    model_id, _, np_sae_id = np_id.partition("/")
    if not SAFE_ID.match(model_id) or not SAFE_ID.match(np_sae_id):
        return None
    return model_id, np_sae_id


def get_feature_for_sae(release: str, sae_id: str, index: int, cfg: NeuronpediaConfig | None = None) -> FeatureInfo:
    """``get_feature`` for a SAELens (release, sae_id); unavailable if it has no Neuronpedia id."""
    ids = neuronpedia_ids_for_sae(release, sae_id)
    if ids is None:
        return get_feature(None, None, index, cfg)
    return get_feature(ids[0], ids[1], index, cfg)
