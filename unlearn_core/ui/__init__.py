"""View helpers for the Streamlit app (``app.py`` and ``pages/``).

* :mod:`.render`  pure functions (no Streamlit): token heat-map HTML, feature-id parsing,
  probability formatting;
* :mod:`.results` pure functions on a sweep's results: the SAEBench-style unlearning score,
  result tables (the CLI's too);
* :mod:`.figures` plotly figure builders;
* Streamlit glue, one concern a module: :mod:`.connection` (the server client,
  ``st.cache_resource``, and cached server calls), :mod:`.errors` (how a failure is explained),
  :mod:`.url_state` (widgets whose value lives in the URL), :mod:`.nav` (page list, links, page
  setup), :mod:`.page` (the server-status check and the tool pages' opening), :mod:`.pickers`
  (SAE and model), :mod:`.target_picker`, :mod:`.questions`, :mod:`.feature_sets` and
  :mod:`.widgets` (small shared helpers);
* the page parts: :mod:`.batch_form`, :mod:`.demo_view`, :mod:`.rmu_view`,
  :mod:`.selection_view`, :mod:`.target_form`.

The app computes nothing itself: every number comes from the workbench server through
:class:`unlearn_core.server.client.UnlearnClient`; no module here imports torch.
"""
