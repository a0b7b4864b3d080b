"""Streamlit glue shared by every page: the client, cached calls, status, errors, shared state.

URL state: the widgets that define a view (question set and id, SAE, feature ids, mode, clamp
value, dashboard feature, job id, ...) keep their value in a query parameter named after the
widget's key (:func:`url_widget`, :func:`url_selectbox`): read from the URL the first time the
session meets that key, written back to the URL on every run (the *value*, e.g. a question id,
never its label), and remembered for the session in a plain dict, so another page with a
widget of the same key starts from it and a view can be shared by copying the URL.
(Streamlit's ``bind="query-params"`` is not used: it stores select-box *labels* and drops values
that came from the URL when the user switches pages; ``persist_state`` keeps values per page.)
Feature *sets* are named collections kept in ``st.session_state`` (one browser session); the
pages put the feature ids themselves in the URL.
"""
from __future__ import annotations

from unlearn_core.core.paths import ASSETS

import hashlib
import json
import os
import re
import time
from typing import Any, Callable

import streamlit as st

from unlearn_core.server.client import DEFAULT_URL, ServerError, ServerUnavailableError, UnlearnClient
from unlearn_core.ui import render as R

# (key, path, title, icon) of every page, in menu order; paths are relative to app.py
PAGE_LIST = [
    ("home", "app.py", "Home", ":material/home:"),
    ("search", "pages/1_Feature_search.py", "Feature search", ":material/search:"),
    ("tokens", "pages/2_Token_highlighting.py", "Token highlighting", ":material/ink_highlighter:"),
    ("clamp", "pages/3_Clamp_explorer.py", "Clamp explorer", ":material/tune:"),
    ("batch", "pages/4_Batch_evaluation.py", "Batch evaluation", ":material/balance:"),
]
PAGES = {k: p for k, p, _, _ in PAGE_LIST}
ICONS = {k: i for k, _, _, i in PAGE_LIST}
MAX_C = 500  # the clamp value range of the app's sliders and links (the targets' defaults are in the hundreds)


# ---------------------------------------------------------------- client


def server_url() -> str:
    return (os.environ.get("UNLEARN_SERVER_URL") or DEFAULT_URL).rstrip("/")


@st.cache_resource(show_spinner=False)
def _client(url: str, token: str) -> UnlearnClient:
    return UnlearnClient(url, token=token or "", timeout=3600.0)


def get_client() -> UnlearnClient:
    """One client per (URL, token) for the whole app process (``st.cache_resource``)."""
    return _client(server_url(), os.environ.get("UNLEARN_TOKEN") or "")


def call(method: str, *args, retry: bool = True, **kwargs) -> Any:
    """``client.<method>(...)``. A pure request is retried once when the connection drops (a
    server closes a kept-alive connection after an internal error); submissions are not."""
    client = get_client()
    try:
        return getattr(client, method)(*args, **kwargs)
    except ServerUnavailableError:
        if not retry:
            raise
        return getattr(client, method)(*args, **kwargs)


@st.cache_data(show_spinner=False, ttl=3600, max_entries=512)
def _cached(url: str, engine_sig: str, method: str, args_json: str) -> Any:
    kwargs = json.loads(args_json)
    return call(method, **kwargs)


def cached(method: str, **kwargs) -> Any:
    """A server call cached in the app (``st.cache_data``) by URL, loaded model and arguments.

    Only for deterministic, read-only requests (scores, activations, dashboards, questions)."""
    sig = st.session_state.get("_engine_sig", "")
    return _cached(server_url(), sig, method, json.dumps(kwargs, sort_keys=True))


@st.cache_data(show_spinner=False, ttl=15, max_entries=16)
def _info(url: str, token_hash: str) -> dict:
    return call("info")


# ---------------------------------------------------------------- URL state


def _url_str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _page_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return str(getattr(ctx, "page_script_hash", "") or "") if ctx else ""


def _written(key: str) -> set[str]:
    """The URL values this session wrote for ``key`` on the current page.

    A rerun request carries the browser's query string, which can lag behind what the script
    wrote (rapid slider presses: the run for 71 is still on its way when 72 is pressed). Any value
    this session wrote itself is therefore not news from a link; only values it never wrote are.
    The history starts afresh on each page switch, so a link into a page always wins."""
    ss = st.session_state
    page = _page_id()
    if ss.get("_url_page") != page or not isinstance(ss.get("_url_written"), dict):
        ss["_url_page"] = page
        ss["_url_written"] = {}
    return ss["_url_written"].setdefault(key, set())


def _write_url(key: str, value, default=None, keep_default: bool = False) -> None:
    written = _written(key)
    if value is None or (value == default and not keep_default):
        if key in st.query_params:
            del st.query_params[key]
    else:
        raw = _url_str(value)
        written.add(raw)  # before the URL changes: a run interrupted here must not see it as a link
        if st.query_params.get(key) != raw:
            st.query_params[key] = raw


def _reject_url(key: str, raw: str, label: str, reason: str, fallback: str, where=None) -> None:
    """Say, just above the widget, that a link's value was not used (never fall back silently)."""
    msg = (f"The link's `{key}={R.short(raw, 60)}` was not used for **{label}**: {reason}. "
           f"It starts at {fallback} instead.")
    (where if where is not None else st).warning(msg, icon=":material/link_off:")


def parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def int_in(lo: int, hi: int):
    def parse(raw: str) -> int:
        try:
            v = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"not a whole number (allowed: {lo} to {hi})") from None
        if not lo <= v <= hi:
            raise ValueError(f"out of range (allowed: {lo} to {hi})")
        return v

    return parse


def one_of(options):
    by_str = {_url_str(o): o for o in options}

    def parse(raw: str):
        if raw not in by_str:
            shown = ", ".join(list(by_str)[:8]) + (", …" if len(by_str) > 8 else "")
            raise ValueError(f"not one of the choices here ({shown})")
        return by_str[raw]

    return parse


def _shared() -> dict:
    """Values of URL-state keys for this session (a plain dict: it survives page switches)."""
    return st.session_state.setdefault("_url_state", {})


def _prepare(key: str, parse, valid, default, label: str, where=None) -> None:
    """Set the state of a widget about to be created, always to a valid value.

    Order: a URL value this session did not write itself (a shared link, a link from another
    page) wins; then the widget's own state (the user's latest choice); then the value remembered
    from another page; then ``default``. A link's value that cannot be used is reported.
    A value that changes, or that a widget adopts on a new page, is set through the Session State
    API, never left to the widget's own default: when a widget's options change under it (the
    known filter shortens the question list), a value set this way reaches the browser, while a
    default index would leave the browser showing its old choice and the script using another.
    A widget keeping its own valid value on the same page is left alone (see below)."""
    page = _page_id()
    placed = st.session_state.setdefault("_url_widget_page", {})  # key -> page its widget was last set on
    raw = st.query_params.get(key)
    if raw is not None and raw not in _written(key):
        try:
            value = parse(raw)
            if not valid(value):
                raise ValueError("not available here")
        except (TypeError, ValueError, KeyError) as e:
            reason = str(e) if isinstance(e, ValueError) and str(e) and str(e) != raw else "not a valid value"
            keep = st.session_state.get(key, _shared().get(key, default))
            _reject_url(key, raw, label, reason, f"`{_url_str(keep if valid(keep) else default)}`", where)
        else:
            st.session_state[key] = value
            placed[key] = page
            return
    if key in st.session_state and valid(st.session_state[key]):
        if placed.get(key) != page:
            # written again on purpose: after a page switch the value belongs to the previous
            # page's widget, and a new widget adopts only values set through the Session State API
            st.session_state[key] = st.session_state[key]
            placed[key] = page
        # else left alone: a value set through the API is pushed to the browser on every run,
        # and would snap a slider back to this run's value while newer key presses are on their way
        return
    shared = _shared()
    st.session_state[key] = shared[key] if key in shared and valid(shared[key]) else default
    placed[key] = page


def url_widget(widget, label: str, key: str, default, parse=None, value_arg: str = "value", **kwargs):
    """``widget(label, key=key, **kwargs)`` (st.slider, c1.text_input, ...) whose value lives in
    ``?key=...`` (removed while it equals ``default``); see the module docstring. ``value_arg``
    names the widget's initial-value parameter; it is not passed: the value is set through the
    Session State API (:func:`_prepare`)."""
    parse = parse or (str if isinstance(default, (str, type(None))) else type(default))

    def valid(v) -> bool:
        if v is None:
            return default is None
        try:
            parse(_url_str(v))
            return True
        except (TypeError, ValueError):
            return False

    kwargs.pop(value_arg, None)
    _prepare(key, parse, valid, default, label, getattr(widget, "__self__", None))
    value = widget(label, key=key, **kwargs)
    _shared()[key] = value
    _write_url(key, value, default)
    return value


def url_selectbox(label: str, options, key: str, container=None, **kwargs):
    """``st.selectbox`` whose *value* (not its formatted label) lives in ``?key=<value>``; the
    first option is the default (written to the URL too). See the module docstring."""
    opts = list(options)
    _prepare(key, one_of(opts), lambda v: v in opts, opts[0] if opts else None, label, container)
    value = (container or st).selectbox(label, opts, key=key, **kwargs)
    _shared()[key] = value
    _write_url(key, value, keep_default=True)
    return value


# ---------------------------------------------------------------- errors


def how_to_start_md(url: str) -> str:
    return (f"**No workbench server answers at `{url}`.**\n\n"
            "Start one in a terminal, from the repository folder:\n\n"
            "```bash\n"
            "bash scripts/run.sh                      # server + this app, in one command\n"
            ".venv/bin/python -m unlearn_core serve   # only the server (the real model)\n"
            ".venv/bin/python -m unlearn_core serve --tiny   # tiny test backend, starts in seconds\n"
            "```\n"
            "To use a server on another machine, set `UNLEARN_SERVER_URL` (and `UNLEARN_TOKEN` if it "
            "needs one) before starting the app, or start it with `bash scripts/run.sh --remote URL`. "
            "Then press **Retry**.")


def show_error(e: BaseException, what: str = "the request") -> None:
    """Explain a failure and what to do about it (never a traceback)."""
    if isinstance(e, ServerUnavailableError):
        st.error(how_to_start_md(server_url()), icon=":material/power_off:")
        st.caption(f"Details: {e}")
        st.button("Retry", key=f"retry_{hashlib.md5(str(e).encode()).hexdigest()[:8]}_{time.time_ns()}")
    elif isinstance(e, ServerError):
        if e.status == 401:
            st.error("The server needs a token: set `UNLEARN_TOKEN` to the server's token before starting the "
                     f"app. ({e.message})", icon=":material/lock:")
        elif e.status == 503:
            st.warning(f"The server is still loading its model; try again in a moment. ({e.message})", icon=":material/hourglass_top:")
        elif e.status == 500:
            st.error(f"The server failed on {what} (internal error {e.status}); the details are in the server's "
                     "log (`cache/server.log` when started by `scripts/run.sh`). Try other inputs, or restart the "
                     "server.", icon=":material/error:")
        else:
            st.error(f"The server rejected {what} ({e.status}): {e.message}", icon=":material/warning:")
    elif isinstance(e, (ValueError, KeyError)):
        st.error(f"Invalid input for {what}: {e}", icon=":material/warning:")
    elif isinstance(e, TimeoutError):
        st.error(f"{what.capitalize()} took too long: {e}", icon=":material/timer:")
    else:
        st.error(f"Unexpected problem with {what}: {type(e).__name__}: {e}", icon=":material/warning:")


def attempt(fn: Callable[[], Any], what: str, spinner: str | None = None) -> Any:
    """Run ``fn`` (a server call); on failure show the error and return None."""
    try:
        if spinner:
            with st.spinner(spinner):
                return fn()
        return fn()
    except Exception as e:  # every failure is shown, none is raised into Streamlit's traceback box
        show_error(e, what)
        return None


# ---------------------------------------------------------------- server status


def require_server() -> dict:
    """The server's /api/info, with a status line in the sidebar; stops the page when the server is
    missing, loading or failing (after saying why and what to do)."""
    url = server_url()
    client = get_client()
    try:
        health = call("health")
    except Exception as e:
        show_error(e, "the health check")
        st.stop()
    if health["status"] == "loading":
        st.info(f"The server at `{url}` is loading its model (up {health['uptime_s']:.0f} s). "
                "This page continues by itself once it is ready.", icon=":material/hourglass_top:")
        _wait_for_model()
        st.stop()
    if health["status"] == "error":
        st.error(f"The server at `{url}` failed to load its model: {health.get('detail') or 'unknown error'}. "
                 "Check its log, fix the settings and restart it.", icon=":material/error:")
        st.stop()
    try:
        info = _info(url, hashlib.sha256((client.token or "").encode()).hexdigest())
    except Exception as e:
        show_error(e, "reading the server's info")
        st.stop()
    st.session_state["_engine_sig"] = f"{info.get('model')}|{info.get('dtype')}|" + ",".join(
        s["key"] for s in info.get("saes", []))
    with st.sidebar:
        saes = ", ".join(s["key"] for s in info.get("saes", [])) or "none"
        st.markdown(f":green[●] **Server** `{url}`  \nmodel **{info.get('model')}** · SAE **{saes}** · "
                    f"{info.get('device')} / {info.get('dtype')}")
    return info


@st.fragment(run_every=3)
def _wait_for_model() -> None:
    try:
        if call("health")["status"] != "loading":
            st.rerun(scope="app")
    except Exception:
        pass


def mode_labels() -> dict[str, str]:
    from unlearn_core.method.interventions import MODE_LABELS

    return MODE_LABELS


def sae_keys(info: dict) -> list[str]:
    return [s["key"] for s in info.get("saes", [])]


def sae_info(info: dict, key: str) -> dict:
    return next((s for s in info.get("saes", []) if s["key"] == key), {})


def sae_picker(info: dict, label: str = "SAE") -> str:
    keys = sae_keys(info)

    def fmt(k: str) -> str:
        s = sae_info(info, k)
        return f"{k} (layer {s.get('layer')}, {s.get('d_sae')} features, {s.get('hook_name')})"

    return url_selectbox(label, keys, key="sae", format_func=fmt, disabled=len(keys) == 1,
                         help="Which SAE's features; its hook point comes from the SAE itself.")


@st.cache_data(show_spinner=False, ttl=10, max_entries=8)
def _finished_variants(url: str, engine_sig: str) -> list[str]:
    return [r["variant"] for r in call("rmu_runs") if r["status"] == "done"]


def model_picker() -> str:
    """The model a page reads features on: 'base' (the model as loaded) or a finished RMU run
    ('rmu:<name>', in place of it); in ``?model=``. No picker while the server has no finished run."""
    try:
        opts = ["base", *_finished_variants(server_url(), st.session_state.get("_engine_sig", ""))]
    except Exception:  # noqa: BLE001 - an older server without RMU: the model as loaded
        opts = ["base"]
    if len(opts) == 1:
        return "base"
    value = url_selectbox("Model", opts, key="model",
                          format_func=lambda v: "the model as loaded" if v == "base" else f"{v} (RMU fine-tuned)",
                          help="Read the SAE's features on an RMU model (a finished run of the Batch evaluation "
                               "page's RMU panel) in place of the model as loaded: how fine-tuning moved them.")
    if value != "base":
        st.caption(f":orange[●] Every number on this page is on **{value}**, not on the model as loaded.")
    return value


# ---------------------------------------------------------------- feature sets


def feature_sets() -> dict[str, list[dict]]:
    """name -> [{"sae": key, "feature": id}], for this browser session."""
    return st.session_state.setdefault("feature_sets", {})


def add_to_set(name: str, sae: str, features: list[int]) -> int:
    name = R.clean_set_name(name)
    items = feature_sets().setdefault(name, [])
    have = {(i["sae"], i["feature"]) for i in items}
    added = 0
    for f in features:
        if (sae, int(f)) not in have:
            items.append({"sae": sae, "feature": int(f)})
            have.add((sae, int(f)))
            added += 1
    st.session_state["fs_last"] = name
    return added


def set_items(name: str) -> list[tuple[str, int]]:
    return [(i["sae"], int(i["feature"])) for i in feature_sets().get(name, [])]


def add_to_set_widget(sae: str, features: list[int], key: str, label: str | None = None) -> None:
    """A set-name box and an 'add' button for ``features`` (of SAE ``sae``)."""
    if not features:
        return
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    name = c1.text_input("Feature set", value=st.session_state.get("fs_last", "my set"), key=f"{key}_name",
                         help="A named collection kept in this browser session, used by the other pages.")
    n = len(features)
    text = label or (f"Add feature {features[0]} to “{name}”" if n == 1 else f"Add {n} features to “{name}”")

    def add() -> None:  # a callback, so the sidebar's list of sets is up to date in the same run
        set_name = st.session_state.get(f"{key}_name") or "my set"
        added = add_to_set(set_name, sae, features)
        st.toast(f"{added} feature(s) added to “{set_name.strip() or 'my set'}”"
                 + (f" ({n - added} already there)" if added < n else ""))

    c2.button(text, key=f"{key}_add", on_click=add)


def _sync_sets_url(base_sae: str) -> None:
    """Feature sets live in ``?sets=`` too, so they survive a reload and travel with a link.

    Read once per browser session (merged into the session's sets), written on every run."""
    sets = feature_sets()
    if not st.session_state.get("_sets_loaded"):
        st.session_state["_sets_loaded"] = True
        raw = st.query_params.get("sets")
        if raw:
            try:
                for name, items in R.decode_feature_sets(raw, base_sae).items():
                    sets.setdefault(name, [{"sae": s, "feature": f} for s, f in items])
            except ValueError as e:
                st.sidebar.warning(f"The link's feature sets (`sets=`) could not be read: {e}",
                                   icon=":material/link_off:")
    enc = R.encode_feature_sets({n: set_items(n) for n in sets}, base_sae)
    _write_url("sets", enc or None)


def feature_sets_sidebar(default_sae: str | None = None, base_sae: str | None = None) -> None:
    """The session's feature sets, with links that open them in the clamp explorer."""
    _sync_sets_url(base_sae or default_sae or "")
    sets = feature_sets()
    with st.sidebar.expander(f"Feature sets ({len(sets)})", expanded=bool(sets)):
        if not sets:
            st.caption("None yet: add features from Feature search or Token highlighting.")
        for name in list(sets):
            items = set_items(name)
            ids = R.format_feature_list(items, default_sae or "")
            st.markdown(f"**{name}** ({len(items)}): `{R.short(ids, 60) or '—'}`")
            c1, c2 = st.columns(2)
            with c1:
                page_link("clamp", "Clamp these", ICONS["clamp"], {"features": ids} if ids else None)
            if c2.button("Delete", key=f"fs_del_{name}"):
                sets.pop(name, None)
                st.rerun()


def features_input(info: dict, sae: str, key: str = "features") -> list[tuple[str, int]]:
    """Feature ids typed in (bound to the URL) or loaded from a feature set; parsed and checked."""
    sets = feature_sets()
    if sets:
        def load() -> None:
            pick = st.session_state.get("fs_pick")
            if pick and pick in sets:
                st.session_state[key] = R.format_feature_list(set_items(pick), sae)

        st.selectbox("Load a feature set", [None, *sets], key="fs_pick", on_change=load,
                     format_func=lambda n: "— choose —" if n is None else f"{n} ({len(sets[n])} features)")
    text = url_widget(st.text_input, "Feature ids", key, "", placeholder="e.g. 12, 40, 7",
                      help="Comma-separated ids of the selected SAE; `SAE_KEY:ID` for another SAE.")
    try:
        items = R.parse_feature_list(text, sae)
    except ValueError as e:
        st.error(str(e))
        return []
    for s, f in items:
        meta = sae_info(info, s)
        if not meta:
            st.error(f"Unknown SAE {s!r} in the feature ids; loaded: {', '.join(sae_keys(info))}")
            return []
        if f >= meta.get("d_sae", 0):
            st.error(f"Feature {f} is out of range for SAE {s!r} ({meta.get('d_sae')} features).")
            return []
    limit = info.get("limits", {}).get("max_features", 512)
    if len(items) > limit:
        st.error(f"At most {limit} features at once (the server's limit); got {len(items)}.")
        return []
    return items


# ---------------------------------------------------------------- targets

from unlearn_core.features.default_target import DEFAULT_TARGET  # noqa: E402  (the one definition)


def targets() -> dict[str, dict]:
    """The server's unlearning targets by name (GET /api/targets, cached); {} when unavailable."""
    try:
        return {t["name"]: t for t in cached("targets")["targets"]}
    except Exception as e:  # the pages still work without targets; say why once, in the sidebar
        st.sidebar.warning(f"No unlearning targets: {getattr(e, 'message', e)}", icon=":material/warning:")
        return {}


def targets_changed() -> None:
    """After a target was created or deleted: drop the app's cached server answers (the target
    list, and anything read under a target's name or its files, e.g. one defined again)."""
    _cached.clear()
    _info.clear()


def select_target_next_run(name: str) -> None:
    """Make ``name`` the sidebar's target on the next run (the picker exists already on this one)."""
    st.session_state["_pick_target"] = name


def clamp_c(c: float) -> int:
    """A target's clamp value as the Clamp explorer's slider takes it (an int in 0..MAX_C)."""
    return int(round(min(max(float(c), 0), MAX_C)))


def target_picker() -> dict | None:
    """The unlearning target every page works on, in the sidebar (``?target=``, default
    bio-basics), with its description. Returns the target (a dict from /api/targets) or None."""
    ts = targets()
    st.session_state["_target_info"] = None
    if not ts:
        return None
    pick = st.session_state.pop("_pick_target", None)
    if pick in ts:  # just defined in the app (select_target_next_run)
        st.session_state["target"] = pick
        _shared()["target"] = pick
    names = sorted(ts, key=lambda n: (n != DEFAULT_TARGET, n))  # the default first: url_selectbox's default
    with st.sidebar:
        name = url_selectbox("Unlearning target", names, key="target",
                             help="What to forget and what to keep: its forget and retain corpora and question "
                                  "sets, and its default intervention. Every page starts from it.")
        t = ts[name]
        st.caption(t["description"])
    st.session_state["_target_info"] = t
    return t


def current_target() -> dict | None:
    """The target chosen in the sidebar on this run (set by :func:`target_picker`)."""
    return st.session_state.get("_target_info")


def selection_corpus(t: dict) -> str:
    """The corpus the server selects the target's features on (its own, or the labelled fallback)."""
    return t.get("resolved_forget_corpus") or t["forget_corpus"]


# ---------------------------------------------------------------- questions


def question_sets(info: dict, target: dict | None = None) -> list[str]:
    """The server's question sets; with a target, its forget set first, then its retain sets."""
    names = [s["name"] for s in info.get("question_sets", [])] or ["wmdp-bio"]
    if target:
        first = [target["forget_questions"], *target["retain_questions"]]
        names = list(dict.fromkeys(first + names))
    return names


def _follow_target(target: dict | None) -> None:
    """When the sidebar target changes, the question set moves to the new target's forget set."""
    name = target["name"] if target else None
    before = st.session_state.get("_qset_target")
    st.session_state["_qset_target"] = name
    if target and before is not None and before != name:
        st.session_state["qset"] = target["forget_questions"]
        _shared()["qset"] = target["forget_questions"]


def question_picker(info: dict, allow_known: bool = True,
                    target: dict | None = None) -> tuple[dict | None, dict | None]:
    """Pick a question set and a question (both bound to the URL). Returns (question, set meta).

    With a target, its forget question set is the default and its retain sets come next."""
    sets = question_sets(info, target)
    desc = {s["name"]: s["description"] for s in info.get("question_sets", [])}
    if target:
        _follow_target(target)
        desc.setdefault(target["forget_questions"], f"forget questions of {target['name']}")
    c1, c2 = st.columns([1, 2])
    role = {}
    if target:
        role = {n: "retain set" for n in target["retain_questions"]}
        role[target["forget_questions"]] = "forget set"

    def label(n: str) -> str:
        if n in role:
            return f"{n} ({target['name']} {role[n]})"
        return desc.get(n, n)[:60] if n.startswith("mmlu:") and n != "mmlu:side-effects" else n

    qset = url_selectbox("Question set", sets, key="qset", container=c1, format_func=label)
    known = False
    if allow_known:
        known = url_widget(c1.checkbox, "Only questions the model knows", "known", False, parse=parse_bool,
                           help="Keeps questions the clean model answers correctly (checked on the first 30; "
                                 "slow on the first use with the real model). With a target that asks for it, "
                                 "the strict filter: also wrong with the question text blanked.")
    limit = 30 if known else info.get("limits", {}).get("max_page", 2000)
    kw = {"strict": True} if known and target and target.get("strict_known") else {}
    data = attempt(lambda: cached("questions", set=qset, known=known, limit=limit, **kw), f"the question set {qset!r}",
                   spinner="Checking which questions the model knows (all 24 orderings; slow the first time)…"
                   if known else "Loading questions…")
    if data is None:
        return None, None
    if data.get("is_fallback"):
        st.warning(f"{data['label']}: the real WMDP-bio questions were not found, so these stand in.", icon=":material/inventory_2:")
    qs = data["questions"]
    if not qs:
        c2.warning("No questions in this set" + (" that the model knows" if known else "") + ".")
        return None, data
    filt = c2.text_input("Filter questions", key="qfilter", placeholder="word in the question…")
    if filt:
        hits = [q for q in qs if filt.lower() in q["question"].lower()]
        if hits:
            qs = hits
        else:  # say so, rather than silently showing the whole set as if it had matched
            c2.warning(f"No question in this set contains “{filt}”; showing all {len(qs)}.", icon=":material/search_off:")
    by_id = {q["id"]: q for q in qs}
    qid = url_selectbox(R.question_box_label(len(qs), data), list(by_id), key="q",
                        container=c2, format_func=lambda i: R.short(by_id[i]["question"], 110) if i in by_id else i)
    return by_id.get(qid), data


def show_question(q: dict, reveal: bool = True) -> None:
    st.markdown(f"**{q['question']}**")
    lines = []
    for i, (L, c) in enumerate(zip(R.LETTERS, q["choices"])):
        mark = " :green[**✓ correct**]" if reveal and i == q["answer"] else ""
        lines.append(f"- **{L}.** {c}{mark}")
    st.markdown("\n".join(lines))
    st.caption(f"{q['source']} · {q['subject']} · id `{q['id']}`")


# ---------------------------------------------------------------- misc


def page_link(page: str, label: str, icon: str | None = None, query_params: dict | None = None) -> None:
    """``st.page_link`` to one of :data:`PAGES` (a key or a path). When the page runs on its own
    (not under ``app.py``, e.g. in a test), Streamlit knows no other page: a plain link is shown."""
    from streamlit.errors import StreamlitPageNotFoundError

    path = PAGES.get(page, page)
    try:
        st.page_link(path, label=label, icon=icon, query_params=query_params or None)
    except StreamlitPageNotFoundError:
        from urllib.parse import urlencode

        name = "" if path == "app.py" else re.sub(r"^\d+_", "", path.rsplit("/", 1)[-1].removesuffix(".py"))
        qs = ("?" + urlencode(query_params)) if query_params else ""
        st.markdown(f"{icon or ''} [{label}](/{name}{qs})")


def page_setup(title: str) -> None:
    """Page config and the sidebar menu (Streamlit's own page list is switched off in
    ``.streamlit/config.toml``: it would call the home page "app").

    The favicon is a file shipped in the package, served by the app: a ``:material/…:`` icon
    would be fetched from fonts.gstatic.com (errors offline). The CSS lets metric cards and
    sidebar labels wrap instead of being cut off with an ellipsis in narrow columns."""
    icon = str(ASSETS / "favicon.png")
    st.set_page_config(page_title=f"{title} · SAE Unlearning Workbench", page_icon=icon, layout="wide")
    st.html("<style>"
            "[data-testid='stMetricValue'] *, [data-testid='stMetricLabel'] *, "
            "[data-testid='stSidebar'] [data-testid='stPageLink'] *, "
            "[data-testid='stSidebar'] [data-testid='stWidgetLabel'] * "
            "{white-space: normal !important; overflow-wrap: anywhere; text-overflow: clip !important;}"
            "[data-testid='stMetricValue'] {line-height: 1.15;}"
            "</style>")
    with st.sidebar:
        for key, _path, label, icon in PAGE_LIST:
            page_link(key, label, icon)
        st.divider()


def heatmap(tokens: list[str], values: list[float], **kw) -> None:
    st.markdown(R.token_heatmap_html(tokens, values, **kw), unsafe_allow_html=True)


def once(key: str, params: Any, clicked: bool) -> bool:
    """True when the button was clicked now, or was clicked before for these same ``params`` (so
    results of slow, button-triggered work stay on screen across reruns)."""
    done = st.session_state.setdefault("_ran", {})
    sig = json.dumps(params, sort_keys=True, default=str)
    if clicked:
        done[key] = sig
    return done.get(key) == sig


def kaleido_available() -> bool:
    """PNG export needs kaleido and a Chromium it can drive (no browser download here)."""
    try:
        import kaleido  # noqa: F401
    except Exception:
        return False
    if not os.environ.get("BROWSER_PATH"):
        for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
            if os.path.exists(p):
                os.environ["BROWSER_PATH"] = p
                break
    return bool(os.environ.get("BROWSER_PATH"))


def tool_page(title: str, pick_model: bool = False) -> tuple[dict, str]:
    """The opening every tool page shares: setup, title, server check, SAE picker, feature sets
    (and with ``pick_model``, the model picker: ``current_variant()``).

    Returns the server's info and the chosen SAE key (require_server stops the page when the
    server cannot be reached)."""
    page_setup(title)
    st.title(title)
    info = require_server()
    target_picker()
    sae = sae_picker(info)
    st.session_state["_variant"] = model_picker() if pick_model else "base"
    feature_sets_sidebar(sae, (sae_keys(info) or [sae])[0])
    return info, sae


def current_variant() -> dict:
    """``{"variant": name}`` for a request on the page's model, {} on the model as loaded (the
    app's cache keys of base requests stay as they were)."""
    v = st.session_state.get("_variant", "base")
    return {} if v == "base" else {"variant": v}
