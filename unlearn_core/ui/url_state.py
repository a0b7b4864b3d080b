"""URL state: the widgets that define a view keep their value in the URL.

The widgets that define a view (question set and id, SAE, feature ids, mode, clamp value,
dashboard feature, job id, ...) keep their value in a query parameter named after the widget's key
(:func:`url_widget`, :func:`url_selectbox`): read from the URL the first time the session meets
that key, written back to the URL on every run (the *value*, e.g. a question id, never its label),
and remembered for the session in a plain dict, so another page with a widget of the same key
starts from it and a view can be shared by copying the URL.
(Streamlit's ``bind="query-params"`` is not used: it stores select-box *labels* and drops values
that came from the URL when the user switches pages; ``persist_state`` keeps values per page.)
"""

from __future__ import annotations

import streamlit as st

from unlearn_core.ui import render as R


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


def write_url(key: str, value, default=None, keep_default: bool = False) -> None:
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
    msg = f"The link's `{key}={R.short(raw, 60)}` was not used for **{label}**: {reason}. It starts {fallback} instead."
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


def shared() -> dict:
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
            keep = st.session_state.get(key, shared().get(key, default))
            start = keep if valid(keep) else default
            _reject_url(key, raw, label, reason, "empty" if start is None else f"at `{_url_str(start)}`", where)
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
    remembered = shared()
    st.session_state[key] = remembered[key] if key in remembered and valid(remembered[key]) else default
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
    shared()[key] = value
    write_url(key, value, default)
    return value


def url_selectbox(label: str, options, key: str, container=None, **kwargs):
    """``st.selectbox`` whose *value* (not its formatted label) lives in ``?key=<value>``; the
    first option is the default (written to the URL too). See the module docstring."""
    opts = list(options)
    _prepare(key, one_of(opts), lambda v: v in opts, opts[0] if opts else None, label, container)
    value = (container or st).selectbox(label, opts, key=key, **kwargs)
    shared()[key] = value
    write_url(key, value, keep_default=True)
    return value


def link_tau() -> None:
    """A link's ``?tau=`` for a gated mode: sets the gate to "value" with that tau, once per link
    value (the user's later changes stay); a bad value is reported, not used."""
    raw = st.query_params.get("tau")
    if raw is None or st.session_state.get("_tau_link") == raw:
        return
    st.session_state["_tau_link"] = raw
    try:
        tau = float(raw)
        if not 0.0 <= tau <= 1.0:
            raise ValueError("out of range (allowed: 0 to 1)")
    except ValueError as e:
        reason = str(e) if "range" in str(e) else "not a number"
        _reject_url("tau", raw, "Gate τ", reason, "from the percentile")
        return
    st.session_state["gate_how"], st.session_state["gate_tau"] = "value", tau
