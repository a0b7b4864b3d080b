"""Shared by the in-process server tests (FastAPI TestClient on the tiny backend)."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient


def wait_ok(c: TestClient, timeout: float = 60) -> None:
    end = time.time() + timeout
    while c.get("/api/health").json()["status"] != "ok":
        assert time.time() < end, "model did not load"
        time.sleep(0.05)


def ok(r, code: int = 200) -> dict:
    assert r.status_code == code, r.text
    return r.json()


def wait_job(client, job_id: str, timeout: float = 90) -> dict:
    end = time.time() + timeout
    while True:
        j = ok(client.get(f"/api/jobs/{job_id}"))
        if j["status"] in ("done", "failed", "cancelled"):
            return j
        assert time.time() < end, j
        time.sleep(0.1)
