"""The client's task methods: long requests submitted (202), polled, their result returned.

A ``<method>_task`` takes the arguments of the synchronous ``<method>`` (and sends the same body)
and returns what it returns, without its synchronous limit: the app falls back to it when the
synchronous call answers that a task is needed (:func:`.client_transport.needs_task`). A base of
:class:`.client.UnlearnClient`, on the transport's ``request``.
"""

from __future__ import annotations

from unlearn_core.server import schemas as S
from unlearn_core.server.client_jobs import wait_until_finished
from unlearn_core.server.client_transport import ServerError, Transport
from unlearn_core.server.client_transport import schema_default as _d
from unlearn_core.server.client_transport import with_variant as _on


class TaskMethods(Transport):
    """One method per task kind; each waits for the task and returns its result."""

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

    # -- metrics

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

    # -- features

    def dashboard_task(
        self,
        feature: int,
        sae: str | None = None,
        corpora: list[str] | None = None,
        n_tokens: int = _d(S.DashboardRequest, "n_tokens"),
        k: int = _d(S.DashboardRequest, "k"),
        neuronpedia: bool = _d(S.DashboardRequest, "neuronpedia"),
        variant: str = "base",
    ) -> dict:
        """``dashboard`` as a task (statistics neither cached nor shipped, of any size)."""
        body = {"sae": sae, "feature": feature, "n_tokens": n_tokens, "k": k, "neuronpedia": neuronpedia}
        if corpora:
            body["corpora"] = corpora
        return self.run_task("features_dashboard", _on(variant, body))

    def search_task(
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
        """``search`` as a task (a background's statistics neither cached nor shipped, of any size)."""
        body = {
            "sae": sae,
            "text": text,
            "k": k,
            "background": background,
            "background_tokens": background_tokens,
            "rank": rank,
            "dense_last": dense_last,
        }
        return self.run_task("features_search", _on(variant, body))

    def select_task(
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
        """``select`` as a task (statistics neither cached nor shipped, a target's question scores; any size)."""
        body = {"sae": sae, "forget": forget, "retain": retain, "threshold": threshold, "n": n}
        body.update(n_tokens=n_tokens, describe=describe, method=method, target=target)
        return self.run_task("features_select", _on(variant, body))

    # -- questions and the guided demo

    def questions_task(
        self,
        set: str = _d(S.QuestionsKnownRequest, "set"),
        known: bool = True,
        limit: int = _d(S.QuestionsKnownRequest, "limit"),
        offset: int = _d(S.QuestionsKnownRequest, "offset"),
        strict: bool = _d(S.QuestionsKnownRequest, "strict"),
    ) -> dict:
        """``questions(known=True)`` as the task ``questions_known`` (any number of questions whose
        known status is not cached yet; progress per question). Without ``known`` there is no
        limit, so no task: that is a ValueError."""
        if not known:
            raise ValueError("a page without the known filter needs no task: use questions()")
        body = {"set": set, "limit": limit, "offset": offset, "strict": strict}
        return self.run_task("questions_known", body)

    def select_target_task(
        self,
        target: str,
        sae: str | None = None,
        n: int | None = None,
        threshold: float | None = None,
        describe: bool = _d(S.TargetSelectRequest, "describe"),
        variant: str = "base",
    ) -> dict:
        """``select_target`` as the task ``targets_select`` (statistics and descriptions of any size)."""
        body: dict = {"target": target, "sae": sae, "describe": describe}
        if n is not None:
            body["n"] = n
        if threshold is not None:
            body["threshold"] = threshold
        return self.run_task("targets_select", _on(variant, body))

    def demo_task(self, target: str, max_scan: int | None = None) -> dict:
        """``demo`` as a task (any max_scan up to the schema's, statistics of any size)."""
        body: dict = {"target": target}
        if max_scan is not None:
            body["max_scan"] = max_scan
        return self.run_task("demo", body)
