"""PNG export of plots with kaleido driving the local Chromium (no browser download)."""

import os
import shutil

import pytest


def test_png_export_with_local_chromium():
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run must install it")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    from unlearn_core.ui.widgets import kaleido_available

    assert kaleido_available()
    import plotly.graph_objects as go

    png = go.Figure(go.Scatter(x=[0, 50, 100], y=[0.6, 0.4, 0.2])).to_image(format="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
