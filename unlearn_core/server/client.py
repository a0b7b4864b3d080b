"""A small client for the workbench server (``python -m unlearn_core serve``), over ``requests``.

Configuration: ``UNLEARN_SERVER_URL`` (default http://127.0.0.1:8765) and ``UNLEARN_TOKEN``.
Failures are explicit: :class:`ServerUnavailableError` when nothing answers (the message says
how to start a server), :class:`ServerError` with the server's status and message otherwise.
``ensure_server(auto_start=True)`` starts a local server as a subprocess when none answers.
Every default of a request field is the server schema's own (:func:`schema_default`), read when
this module loads, so the client never repeats one by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import requests

from unlearn_core.server import schemas as S

DEFAULT_URL = "http://127.0.0.1:8765"
START_HINT = (
    "start one with `python -m unlearn_core serve` (or `bash scripts/run.sh`), "
    "or point UNLEARN_SERVER_URL at a running server"
)


class ServerUnavailableError(ConnectionError):
    """No server answers at the URL."""


class ServerError(RuntimeError):
    """The server answered with an error status; ``message`` is its explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(f"server error {status}: {message}")
        self.status, self.message = status, message


def schema_default(model: type, field: str) -> Any:
    """The default of ``field`` in the request schema ``model`` (a default factory is called):
    one source for every default the client sends, so a default changed in the schema reaches it."""
    return model.model_fields[field].get_default(call_default_factory=True)


_d = schema_default  # short, for the method signatures below


def _default_url() -> str:
    return (os.environ.get("UNLEARN_SERVER_URL") or DEFAULT_URL).rstrip("/")


def _on(variant: str, body: dict) -> dict:
    """The request body, naming the model variant only when it is not the model as loaded (an older
    server without variants still answers base requests)."""
    return {**body, "variant": variant} if variant and variant != "base" else body


FINISHED = ("done", "cancelled", "failed")


def wait_until_finished(fetch, what: str, counts: tuple[str, str], timeout: float, poll: float) -> dict:
    """Poll ``fetch()`` until its status is finished; a TimeoutError names ``what`` and its progress
    (the two ``counts`` fields) when ``timeout`` seconds pass first. Jobs, tasks and RMU runs share it."""
    end = time.time() + timeout
    while (r := fetch())["status"] not in FINISHED:
        if time.time() > end:
            done, total = (r.get(k) for k in counts)
            raise TimeoutError(f"{what} not finished after {timeout:.0f} s ({done}/{total})")
        time.sleep(poll)
    return r


class UnlearnClient:
    """One method per endpoint; each returns the decoded JSON response."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 3.0,
    ):
        self.base_url = (base_url or _default_url()).rstrip("/")
        self.token = token if token is not None else os.environ.get("UNLEARN_TOKEN") or None
        self.timeout = (connect_timeout, timeout)
        self.session = requests.Session()
        self.process: subprocess.Popen | None = None  # set when ensure_server started the server

    def __repr__(self) -> str:  # never show the token
        return f"UnlearnClient({self.base_url!r})"

    # -- transport

    def request(
        self, method: str, path: str, json: Any = None, params: dict | None = None, timeout: float | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.base_url + path
        # A kept-alive connection the server has since closed fails at once; one retry on a fresh
        # connection is safe for every call except the ones that change job state.
        retries = 0 if (method == "POST" and path.startswith("/api/jobs")) else 1
        try:
            while True:
                try:
                    r = self.session.request(
                        method,
                        url,
                        json=json,
                        params=params,
                        headers=headers,
                        timeout=(self.timeout[0], timeout) if timeout else self.timeout,
                    )
                    break
                except requests.ConnectionError:
                    if retries == 0:
                        raise
                    retries -= 1
                    self.session.close()
        except requests.exceptions.InvalidJSONError as e:
            raise ValueError(f"request body is not valid JSON (NaN or infinity?): {e}") from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise ServerUnavailableError(
                f"no workbench server answers at {self.base_url} ({type(e).__name__}); {START_HINT}"
            ) from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServerError(r.status_code, str(detail))
        return r.json()

    # -- server

    def health(self, timeout: float = 5.0) -> dict:
        return self.request("GET", "/api/health", timeout=timeout)

    def info(self) -> dict:
        return self.request("GET", "/api/info")

    def wait_ready(self, timeout: float = 300.0, poll: float = 0.25) -> dict:
        """Wait until /api/health says "ok" (the model is loaded)."""
        end = time.time() + timeout
        last: Exception | None = None
        while time.time() < end:
            if self.process is not None and self.process.poll() is not None:
                raise ServerUnavailableError(
                    f"the server process exited with code {self.process.returncode}{_log_tail(self)}"
                )
            try:
                h = self.health()
                if h["status"] == "ok":
                    return h
                if h["status"] == "error":
                    raise ServerError(503, h.get("detail") or "model failed to load")
            except ServerUnavailableError as e:
                last = e
            time.sleep(poll)
        raise ServerUnavailableError(
            f"server at {self.base_url} not ready after {timeout:.0f} s ({last or 'still loading'}); {START_HINT}"
        )

    # -- text and features

    def tokenize(self, text: str) -> dict:
        return self.request("POST", "/api/tokenize", {"text": text})

    def activations(
        self,
        text: str,
        sae: str | None = None,
        features: list[int] | None = None,
        top_k: int = _d(S.ActivationsRequest, "top_k"),
        variant: str = "base",
    ) -> dict:
        return self.request(
            "POST",
            "/api/activations",
            _on(variant, {"text": text, "sae": sae, "features": features or [], "top_k": top_k}),
        )

    def dashboard(
        self,
        feature: int,
        sae: str | None = None,
        corpora: list[str] | None = None,
        n_tokens: int = _d(S.DashboardRequest, "n_tokens"),
        k: int = _d(S.DashboardRequest, "k"),
        neuronpedia: bool = _d(S.DashboardRequest, "neuronpedia"),
        variant: str = "base",
    ) -> dict:
        body = {"sae": sae, "feature": feature, "n_tokens": n_tokens, "k": k, "neuronpedia": neuronpedia}
        if corpora:
            body["corpora"] = corpora
        return self.request("POST", "/api/features/dashboard", _on(variant, body))

    def search(
        self,
        text: str,
        sae: str | None = None,
        k: int = _d(S.SearchRequest, "k"),
        background: str | None = _d(S.SearchRequest, "background"),
        background_tokens: int = _d(S.SearchRequest, "background_tokens"),
        variant: str = "base",
        rank: str = _d(S.SearchRequest, "rank"),
        dense_last: bool = _d(S.SearchRequest, "dense_last"),
    ) -> dict:
        """Features active on ``text``: by specificity against ``background`` (dense ones flagged
        and last), or ``rank="max"`` by the largest activation (``background=None``: plain)."""
        return self.request(
            "POST",
            "/api/features/search",
            _on(
                variant,
                {
                    "sae": sae,
                    "text": text,
                    "k": k,
                    "background": background,
                    "background_tokens": background_tokens,
                    "rank": rank,
                    "dense_last": dense_last,
                },
            ),
        )

    def select(
        self,
        forget: str = _d(S.SelectRequest, "forget"),
        retain: str = _d(S.SelectRequest, "retain"),
        threshold: float = _d(S.SelectRequest, "threshold"),
        n: int = _d(S.SelectRequest, "n"),
        n_tokens: int = _d(S.SelectRequest, "n_tokens"),
        describe: bool = _d(S.SelectRequest, "describe"),
        sae: str | None = None,
        variant: str = "base",
        method: str = _d(S.SelectRequest, "method"),
        target: str | None = None,
    ) -> dict:
        """The paper's selection on two corpora, or a target's by ``method`` (attribution, fisher: its questions)."""
        body = {"sae": sae, "forget": forget, "retain": retain, "threshold": threshold, "n": n}
        body.update(n_tokens=n_tokens, describe=describe, method=method, target=target)
        return self.request("POST", "/api/features/select", _on(variant, body))

    # -- targets

    def targets(self) -> dict:
        """{"default": name, "targets": [target dict + resolved_forget_corpus, forget_corpus_note]}."""
        return self.request("GET", "/api/targets")

    def select_target(
        self,
        target: str,
        sae: str | None = None,
        n: int | None = None,
        threshold: float | None = None,
        describe: bool = _d(S.TargetSelectRequest, "describe"),
        variant: str = "base",
        method: str | None = None,
    ) -> dict:
        """The target's selection (n, threshold and method default to the target's)."""
        body: dict = {"target": target, "sae": sae, "describe": describe}
        if method is not None:
            body["method"] = method
        if n is not None:
            body["n"] = n
        if threshold is not None:
            body["threshold"] = threshold
        return self.request("POST", "/api/targets/select", _on(variant, body))

    def create_target(
        self,
        name: str,
        documents: list[str],
        questions: list[dict],
        description: str = _d(S.TargetCreateRequest, "description"),
        retain_corpora: list[str] | None = None,
        retain_questions: list[str] | None = None,
        threshold: float | None = None,
        n: int | None = None,
        c: float | None = None,
        mode: str | None = None,
    ) -> dict:
        """Define a target (saved on the server): the forget corpus as documents, the forget questions
        as rows ``{"question", "choices": [4], "answer": 0-3 or "A"-"D"}``; what is not given takes
        the server's defaults (``schemas.TargetCreateRequest``: the bio-basics retain corpora, ...).
        Returns the new target as :meth:`targets` lists it."""
        body: dict = {"name": name, "description": description, "documents": documents, "questions": questions}
        for k, v in (
            ("retain_corpora", retain_corpora),
            ("retain_questions", retain_questions),
            ("threshold", threshold),
            ("n", n),
            ("c", c),
            ("mode", mode),
        ):
            if v is not None:
                body[k] = v
        return self.request("POST", "/api/targets", body)

    def delete_target(self, name: str) -> dict:
        """Delete a target defined in the app (built-in and targets-file ones cannot be)."""
        return self.request("DELETE", f"/api/targets/{quote(name, safe='')}")

    def demo(self, target: str, max_scan: int | None = None) -> dict:
        """The guided demo on a target: a forgotten question and a kept one (or why there is none)."""
        body: dict = {"target": target}
        if max_scan is not None:
            body["max_scan"] = max_scan
        return self.request("POST", "/api/demo", body)

    # -- questions

    def questions(
        self, set: str = "wmdp-bio", known: bool = False, limit: int = 50, offset: int = 0, strict: bool = False
    ) -> dict:
        params = {"set": set, "known": str(known).lower(), "limit": limit, "offset": offset}
        if strict:  # only sent when asked for, so an older server still answers plain requests
            params["strict"] = "true"
        return self.request("GET", "/api/questions", params=params)

    def mcq(
        self,
        question_id: str | None = None,
        set: str = _d(S.MCQRequest, "set"),
        interventions: list[dict] | None = None,
        values: list[float] | None = None,
        question: dict | None = None,
        variant: str = "base",
    ) -> dict:
        body: dict = {"set": set, "interventions": interventions or [], "variant": variant}
        if question_id is not None:
            body["question_id"] = question_id
        if question is not None:
            body["question"] = question
        if values is not None:
            body["values"] = values
        return self.request("POST", "/api/mcq", body)

    # -- metrics

    def generate(
        self,
        prompt: str,
        interventions: list[dict] | None = None,
        max_new_tokens: int = _d(S.GenerateRequest, "max_new_tokens"),
        temperature: float = _d(S.GenerateRequest, "temperature"),
        seed: int = _d(S.GenerateRequest, "seed"),
        variant: str = "base",
    ) -> dict:
        return self.request(
            "POST",
            "/api/generate",
            {
                "prompt": prompt,
                "interventions": interventions or [],
                "max_new_tokens": max_new_tokens,
                "variant": variant,
                "temperature": temperature,
                "seed": seed,
            },
        )

    def loss_added(
        self,
        interventions: list[dict],
        corpus: str = _d(S.LossAddedRequest, "corpus"),
        n_tokens: int = _d(S.LossAddedRequest, "n_tokens"),
        variant: str = "base",
    ) -> dict:
        return self.request(
            "POST",
            "/api/loss_added",
            _on(variant, {"corpus": corpus, "interventions": interventions, "n_tokens": n_tokens}),
        )

    def perplexity(
        self,
        corpus: str = _d(S.PerplexityRequest, "corpus"),
        part: str = _d(S.PerplexityRequest, "part"),
        interventions: list[dict] | None = None,
        n_tokens: int = _d(S.PerplexityRequest, "n_tokens"),
        variant: str = "base",
    ) -> dict:
        return self.request(
            "POST",
            "/api/perplexity",
            _on(variant, {"corpus": corpus, "part": part, "interventions": interventions or [], "n_tokens": n_tokens}),
        )

    # -- tasks (long requests: 202, then polled; the result is the synchronous endpoint's answer)

    def submit_task(self, kind: str, body: dict) -> dict:
        return self.request("POST", f"/api/tasks/{kind}", body)

    def task(self, task_id: str) -> dict:
        return self.request("GET", f"/api/tasks/{task_id}")

    def cancel_task(self, task_id: str) -> dict:
        return self.request("POST", f"/api/tasks/{task_id}/cancel")

    def run_task(self, kind: str, body: dict, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        """Submit a task, wait for it, and return its result (a ServerError when it fails)."""
        task_id = self.submit_task(kind, body)["id"]
        t = wait_until_finished(lambda: self.task(task_id), f"task {task_id}", ("done", "total"), timeout, poll)
        if t["status"] != "done":
            raise ServerError(400, f"task {task_id} {t['status']}: {t.get('error') or ''}".strip())
        return t["result"]

    def loss_added_task(
        self,
        interventions: list[dict],
        corpus: str = _d(S.LossAddedRequest, "corpus"),
        n_tokens: int = _d(S.LossAddedRequest, "n_tokens"),
        variant: str = "base",
    ) -> dict:
        """``loss_added`` as a task (no synchronous limit on n_tokens)."""
        return self.run_task(
            "loss_added", _on(variant, {"corpus": corpus, "interventions": interventions, "n_tokens": n_tokens})
        )

    def perplexity_task(
        self,
        corpus: str = _d(S.PerplexityRequest, "corpus"),
        part: str = _d(S.PerplexityRequest, "part"),
        interventions: list[dict] | None = None,
        n_tokens: int = _d(S.PerplexityRequest, "n_tokens"),
        variant: str = "base",
    ) -> dict:
        """``perplexity`` as a task (no synchronous limit on n_tokens)."""
        return self.run_task(
            "perplexity",
            _on(variant, {"corpus": corpus, "part": part, "interventions": interventions or [], "n_tokens": n_tokens}),
        )

    def generate_task(
        self,
        prompt: str,
        interventions: list[dict] | None = None,
        max_new_tokens: int = _d(S.GenerateRequest, "max_new_tokens"),
        temperature: float = _d(S.GenerateRequest, "temperature"),
        seed: int = _d(S.GenerateRequest, "seed"),
        variant: str = "base",
    ) -> dict:
        """``generate`` as a task (no synchronous limit on max_new_tokens)."""
        return self.run_task(
            "generate",
            {
                "prompt": prompt,
                "interventions": interventions or [],
                "max_new_tokens": max_new_tokens,
                "variant": variant,
                "temperature": temperature,
                "seed": seed,
            },
        )

    # -- jobs

    def submit_job(self, spec: dict) -> dict:
        return self.request("POST", "/api/jobs", spec)

    def jobs(self) -> dict:
        return self.request("GET", "/api/jobs")

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/api/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict:
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def wait_job(self, job_id: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(lambda: self.job(job_id), f"job {job_id}", ("done", "total"), timeout, poll)

    # -- RMU runs (model variants rmu:<name>)

    def train_rmu(self, name: str, target: str = _d(S.RMUTrainRequest, "target"), **hyper) -> dict:
        return self.request("POST", "/api/rmu", {"name": name, "target": target, **hyper})

    def rmu_runs(self) -> list[dict]:
        return self.request("GET", "/api/rmu")["runs"]

    def rmu_run(self, name: str) -> dict:
        return self.request("GET", f"/api/rmu/{name}")

    def cancel_rmu(self, name: str) -> dict:
        return self.request("POST", f"/api/rmu/{name}/cancel")

    def wait_rmu(self, name: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        return wait_until_finished(lambda: self.rmu_run(name), f"RMU run {name}", ("step", "steps"), timeout, poll)

    # -- a server this client started

    def stop_server(self, timeout: float = 10.0) -> None:
        """Terminate the server process started by ``ensure_server`` (no-op otherwise)."""
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


def _log_tail(client: UnlearnClient, n: int = 2000) -> str:
    path = getattr(client, "log_path", None)
    if not path or not Path(path).exists():
        return ""
    return "; server log tail:\n" + Path(path).read_text(errors="replace")[-n:]


def is_local(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


def ensure_server(
    url: str | None = None,
    auto_start: bool = False,
    timeout: float = 300.0,
    extra_args: list[str] | None = None,
    token: str | None = None,
) -> UnlearnClient:
    """A client for a server that answers and has its model loaded.

    With ``auto_start`` and a local URL where nothing answers, start ``python -m unlearn_core
    serve --host H --port P [extra_args]`` as a subprocess (log in a temp file, kept in
    ``client.log_path``; stop it with ``client.stop_server()``) and wait for /api/health.
    """
    client = UnlearnClient(url, token=token)
    try:
        client.health()
    except ServerUnavailableError:
        if not auto_start:
            raise
        if not is_local(client.base_url):
            raise ServerUnavailableError(
                f"no server at {client.base_url}; auto-start only works for a local URL; {START_HINT}"
            ) from None
        u = urlparse(client.base_url)
        port = u.port or 8765
        log = tempfile.NamedTemporaryFile(prefix="unlearn-server-", suffix=".log", delete=False)
        cmd = [
            sys.executable,
            "-m",
            "unlearn_core",
            "serve",
            "--host",
            u.hostname,
            "--port",
            str(port),
            *(extra_args or []),
        ]
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        if client.token:
            env["UNLEARN_TOKEN"] = client.token  # the server it starts accepts this client
        client.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        client.log_path = log.name
        log.close()
    try:
        client.wait_ready(timeout)
    except BaseException:
        client.stop_server()
        raise
    return client
