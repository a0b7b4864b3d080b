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
from urllib.parse import quote, urlparse

from unlearn_core.server import schemas as S
from unlearn_core.server.client_jobs import FINISHED, LongRequests, wait_until_finished
from unlearn_core.server.client_tasks import TaskMethods
from unlearn_core.server.client_transport import (
    DEFAULT_URL,
    START_HINT,
    ServerError,
    ServerUnavailableError,
    needs_task,
    schema_default,
    with_variant,
)

# the names callers import from here, wherever they are defined
__all__ = [
    "DEFAULT_URL",
    "FINISHED",
    "START_HINT",
    "ServerError",
    "ServerUnavailableError",
    "UnlearnClient",
    "ensure_server",
    "is_local",
    "needs_task",
    "schema_default",
    "wait_until_finished",
]

_d = schema_default  # short, for the method signatures below


class UnlearnClient(LongRequests, TaskMethods):
    """One method per endpoint; each returns the decoded JSON response. Here the synchronous
    requests; the transport (:mod:`.client_transport`), the jobs and RMU runs (:mod:`.client_jobs`)
    and the tasks (:mod:`.client_tasks`) come from its bases."""

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
            with_variant(variant, {"text": text, "sae": sae, "features": features or [], "top_k": top_k}),
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
        *,
        task: bool = False,
    ) -> dict:
        body = {"sae": sae, "feature": feature, "n_tokens": n_tokens, "k": k, "neuronpedia": neuronpedia}
        if corpora:
            body["corpora"] = corpora
        return self.post("/api/features/dashboard", "features_dashboard", with_variant(variant, body), task)

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
        context: bool = _d(S.SearchRequest, "context"),
        *,
        task: bool = False,
    ) -> dict:
        """Features active on ``text``: by specificity against ``background`` (dense ones flagged
        and last), or ``rank="max"`` by the largest activation (``background=None``: plain). A
        short text is read inside neutral sentences unless ``context`` is False."""
        return self.post(
            "/api/features/search",
            "features_search",
            with_variant(
                variant,
                {
                    "sae": sae,
                    "text": text,
                    "k": k,
                    "background": background,
                    "background_tokens": background_tokens,
                    "rank": rank,
                    "dense_last": dense_last,
                    "context": context,
                },
            ),
            task,
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
        *,
        task: bool = False,
    ) -> dict:
        """The paper's selection on two corpora, or a target's by ``method`` (attribution, fisher: its questions)."""
        body = {"sae": sae, "forget": forget, "retain": retain, "threshold": threshold, "n": n}
        body.update(n_tokens=n_tokens, describe=describe, method=method, target=target)
        return self.post("/api/features/select", "features_select", with_variant(variant, body), task)

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
        *,
        task: bool = False,
    ) -> dict:
        """The target's selection (n, threshold and method default to the target's)."""
        body: dict = {"target": target, "sae": sae, "describe": describe}
        if method is not None:
            body["method"] = method
        if n is not None:
            body["n"] = n
        if threshold is not None:
            body["threshold"] = threshold
        return self.post("/api/targets/select", "targets_select", with_variant(variant, body), task)

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

    def demo(self, target: str, max_scan: int | None = None, *, task: bool = False) -> dict:
        """The guided demo on a target: a forgotten question and a kept one (or why there is none)."""
        body: dict = {"target": target}
        if max_scan is not None:
            body["max_scan"] = max_scan
        return self.post("/api/demo", "demo", body, task)

    # -- questions

    def questions(
        self,
        set: str = _d(S.QuestionsKnownRequest, "set"),
        known: bool = False,
        limit: int = _d(S.QuestionsKnownRequest, "limit"),
        offset: int = _d(S.QuestionsKnownRequest, "offset"),
        strict: bool = _d(S.QuestionsKnownRequest, "strict"),
    ) -> dict:
        """A page of a question set (with ``known``: the questions the clean model knows; past the
        synchronous limit of uncached ones, :meth:`questions_task`)."""
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
        *,
        task: bool = False,
    ) -> dict:
        return self.post(
            "/api/generate",
            "generate",
            {
                "prompt": prompt,
                "interventions": interventions or [],
                "max_new_tokens": max_new_tokens,
                "variant": variant,
                "temperature": temperature,
                "seed": seed,
            },
            task,
        )

    def loss_added(
        self,
        interventions: list[dict],
        corpus: str = _d(S.LossAddedRequest, "corpus"),
        n_tokens: int = _d(S.LossAddedRequest, "n_tokens"),
        variant: str = "base",
        *,
        task: bool = False,
    ) -> dict:
        body = {"corpus": corpus, "interventions": interventions, "n_tokens": n_tokens}
        return self.post("/api/loss_added", "loss_added", with_variant(variant, body), task)

    def perplexity(
        self,
        corpus: str = _d(S.PerplexityRequest, "corpus"),
        part: str = _d(S.PerplexityRequest, "part"),
        interventions: list[dict] | None = None,
        n_tokens: int = _d(S.PerplexityRequest, "n_tokens"),
        variant: str = "base",
        *,
        task: bool = False,
    ) -> dict:
        body = {"corpus": corpus, "part": part, "interventions": interventions or [], "n_tokens": n_tokens}
        return self.post("/api/perplexity", "perplexity", with_variant(variant, body), task)

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


def serve_command(host: str, port: int, extra_args: list[str] | None = None) -> list[str]:
    """``python -m unlearn_core serve`` on ``host:port`` with this interpreter (auto-start and tests)."""
    return [sys.executable, "-m", "unlearn_core", "serve", "--host", host, "--port", str(port), *(extra_args or [])]


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
        cmd = serve_command(u.hostname, port, extra_args)
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
