"""The committed ``docs/openapi.json`` is what the app serves: a route or schema changed without
regenerating it fails here (with the command that regenerates it)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from unlearn_core.server import openapi as O


def test_the_committed_openapi_json_is_current():
    committed = json.loads(O.OPENAPI_PATH.read_text(encoding="utf-8"))
    assert committed == O.schema(), f"docs/openapi.json is stale: regenerate it with `{O.REGENERATE}`"


def test_it_is_what_the_app_serves_and_names_every_route():
    from unlearn_core.server import create_app

    app = create_app(lambda: None, token="")  # no lifespan (no `with`): nothing loads, the schema needs no model
    served = TestClient(app).get("/openapi.json").json()
    assert served == O.schema()
    assert {
        "/api/health",
        "/api/mcq",
        "/api/perplexity",
        "/api/tasks/perplexity",
        "/api/tasks/{task_id}",
        "/api/jobs/{job_id}",
        "/api/rmu/{name}/cancel",
    } <= set(served["paths"])


def test_the_check_sees_a_changed_schema():
    """The comparison is exact: one description changed is a difference."""
    spec = O.schema()
    changed = json.loads(O.render(spec))
    changed["paths"]["/api/mcq"]["post"]["summary"] = "something else"
    assert changed != spec and json.loads(O.render(spec)) == spec
