"""View helpers for the Streamlit app (``app.py`` and ``pages/``).

* :mod:`.render`  pure functions (no Streamlit): token heat-map HTML, feature-id parsing,
  probability formatting, the SAEBench-style unlearning score, result tables;
* :mod:`.figures` plotly figure builders;
* :mod:`.common`  Streamlit glue: the server client (``st.cache_resource``), cached server calls,
  the server-status banner, error rendering, feature sets, shared pickers.

The app computes nothing itself: every number comes from the workbench server through
:class:`unlearn_core.server.client.UnlearnClient`.
"""
