"""The client's defaults are the server schemas' own: none is repeated by hand.

A default written twice drifts: the schema's changes and the client keeps sending the old
value. The client reads each one from the schema (``client.schema_default``); these tests check
what it actually sends, and that a default changed in the schema reaches it.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_core.server import schemas as S
from unlearn_core.server.client import UnlearnClient, schema_default

ROOT = Path(__file__).resolve().parents[2]

# client method -> (the schema of its request body, the arguments it cannot do without)
REQUESTS = {
    "activations": ("ActivationsRequest", {"text": "x"}),
    "dashboard": ("DashboardRequest", {"feature": 1}),
    "search": ("SearchRequest", {"text": "x"}),
    "select": ("SelectRequest", {}),
    "select_target": ("TargetSelectRequest", {"target": "t"}),
    "create_target": ("TargetCreateRequest", {"name": "n", "documents": ["d"], "questions": [{}]}),
    "demo": ("DemoRequest", {"target": "t"}),
    "mcq": ("MCQRequest", {"question_id": "q"}),
    "generate": ("GenerateRequest", {"prompt": "p"}),
    "loss_added": ("LossAddedRequest", {"interventions": [{"features": [1]}]}),
    "perplexity": ("PerplexityRequest", {}),
    "train_rmu": ("RMUTrainRequest", {"name": "r"}),
    "start_attack": ("AttackSpec", {}),
}

# run in a fresh process: change schema defaults, then import the client and record what it sends
CHILD = """
import json, sys
from unlearn_core.server import schemas as S
for model, field, value in json.loads(sys.argv[1]):
    getattr(S, model).model_fields[field].default = value
from unlearn_core.server.client import UnlearnClient
out = {}
for method, args in json.loads(sys.argv[2]).items():
    bodies = []
    c = UnlearnClient("http://127.0.0.1:9")
    c.request = lambda verb, path, json=None, **kw: bodies.append(json) or {}
    getattr(c, method)(**args)
    out[method] = bodies[0]
print(json.dumps(out))
"""


def sent(method: str, **kwargs) -> dict:
    """The JSON body ``client.<method>(**kwargs)`` sends (no server: the transport is replaced)."""
    bodies: list = []
    c = UnlearnClient("http://127.0.0.1:9")
    c.request = lambda verb, path, json=None, **kw: bodies.append(json) or {}
    getattr(c, method)(**kwargs)
    return bodies[0]


def changed(value):
    """Another value of the same type (the schema is not validated here, only read)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + (1 if isinstance(value, int) else 0.5)
    return value + "-changed"


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_every_field_the_client_fills_in_is_the_schemas_default(method):
    name, args = REQUESTS[method]
    model = getattr(S, name)
    body = sent(method, **args)
    assert set(body) <= set(model.model_fields), f"{method} sends fields {name} does not have"
    for field, value in body.items():
        if field not in args:
            assert value == schema_default(model, field), (method, field, value, schema_default(model, field))


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_every_default_in_the_client_signatures_is_the_schemas(method):
    """``help(client.x)`` shows the server's defaults; None means 'the server decides'."""
    name, _ = REQUESTS[method]
    model = getattr(S, name)
    for p in inspect.signature(getattr(UnlearnClient, method)).parameters.values():
        if p.name in model.model_fields and p.default is not inspect.Parameter.empty and p.default is not None:
            assert p.default == schema_default(model, p.name), (method, p.name, p.default)


def test_a_default_changed_in_the_schema_reaches_the_client():
    patches, expected = [], {}
    for method, (name, args) in REQUESTS.items():
        for field, value in sent(method, **args).items():
            if field not in args and field != "variant" and isinstance(value, (bool, int, float, str)):
                patches.append((name, field, changed(value)))
                expected.setdefault(method, {})[field] = changed(value)
    assert len(patches) >= 20  # every scalar default the client sends
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(patches), json.dumps({m: a for m, (_, a) in REQUESTS.items()})],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    bodies = json.loads(r.stdout.strip().splitlines()[-1])
    for method, fields in expected.items():
        for field, value in fields.items():
            assert bodies[method][field] == value, (method, field, bodies[method][field], value)
