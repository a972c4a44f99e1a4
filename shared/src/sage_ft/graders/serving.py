"""Asking a served model over serving's OpenAI chat API: for model graders, and for the answers an eval run grades;
and asking serving to run a python grader in its sandbox.

A model server still starting (503), a full queue (429) or a dropped connection is retried, with backoff, until
the deadline; a 404 (no such model) is not.
"""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from sage_ft.graders.grading import ChatAnswer, ModelCallError
from sage_ft.graders.model import SamplingParams
from sage_ft.graders.sandbox import PythonOutcome, Sandbox
from sage_ft.settings import GraderSettings

RETRY_STATUS = frozenset({429, 502, 503, 504})


def retryable(err: BaseException) -> bool:
    if isinstance(err, httpx.HTTPStatusError):
        return err.response.status_code in RETRY_STATUS
    return isinstance(err, httpx.TransportError)


def error_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def post_retried(client: httpx.Client, path: str, body: dict[str, Any], deadline_s: float) -> dict[str, Any]:
    """POST ``body`` to ``path`` through ``client`` and return the JSON answer, retried as the module says."""
    for attempt in Retrying(
        retry=retry_if_exception(retryable),
        reraise=True,
        stop=stop_after_delay(deadline_s),
        wait=wait_exponential(multiplier=0.5, max=5),
    ):
        with attempt:
            resp = client.post(path, json=body)
            resp.raise_for_status()
            answer: dict[str, Any] = resp.json()
    return answer


def chat_completion(client: httpx.Client, body: dict[str, Any], deadline_s: float) -> dict[str, Any]:
    """One chat completion through ``client`` (serving, or the gateway), retried as the module says."""
    return post_retried(client, "/v1/chat/completions", body, deadline_s)


class ServingModels:
    """``ModelCaller`` over serving's HTTP API, for one tenant (fine-tunes are the tenant's own)."""

    def __init__(self, base_url: str, tenant: str, timeout_s: float, names: dict[str, str] | None = None) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"X-Sage-Tenant": tenant}, timeout=httpx.Timeout(timeout_s, connect=10.0)
        )
        self.timeout_s = timeout_s
        self.names = names or {}  # a grader's model -> the name serving knows it by (an alias resolved)

    def chat(self, model: str, messages: list[dict[str, str]], params: SamplingParams | None) -> ChatAnswer:
        p = params or SamplingParams()
        served = self.names.get(model, model)
        body: dict[str, Any] = {"model": served, "messages": messages, "temperature": p.temperature or 0.0}
        extra = {"top_p": p.top_p, "seed": p.seed, "max_tokens": p.max_completions_tokens or 64}
        body.update({k: v for k, v in extra.items() if v is not None})
        try:
            answer = chat_completion(self.client, body, self.timeout_s)
            text = answer["choices"][0]["message"].get("content") or ""
        except httpx.HTTPStatusError as err:
            status = err.response.status_code
            message = f"serving answered {status} for model '{model}': {error_message(err.response)}"
            raise ModelCallError(message, not_found=status == 404) from None
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as err:
            raise ModelCallError(f"model '{model}' did not answer: {type(err).__name__}: {err}") from None
        usage = answer.get("usage") or {}
        return ChatAnswer(text, usage.get("total_tokens"))

    def close(self) -> None:
        self.client.close()


PYTHON_ROUTE = "/v1/graders/python"
SANDBOX_RETRY_S = 15.0  # a serving restarting is back within this; one that is down answers sandbox_unavailable


class ServingSandbox(Sandbox):
    """Python graders run by serving (``POST /v1/graders/python``), which has the container engine: for the
    gateway and workers in containers, where bubblewrap cannot make namespaces. A serving that cannot be reached
    (or is busy) is retried for ``SANDBOX_RETRY_S``, then the call is ``sandbox_unavailable``, like a missing
    local sandbox."""

    def __init__(self, base_url: str, settings: GraderSettings) -> None:
        self.base_url = base_url
        self.settings = settings

    def run(self, source: str, sample: dict[str, Any], item: Any, image_tag: str | None = None) -> PythonOutcome:
        wall = self.settings.python_wall_seconds
        body = {"source": source, "sample": sample, "item": item, "image_tag": image_tag}
        # the call may take its whole wall limit, plus a container's start and removal
        timeout = httpx.Timeout(wall + 60, connect=10.0)
        try:
            with httpx.Client(base_url=self.base_url, timeout=timeout) as client:
                answer = post_retried(client, PYTHON_ROUTE, body, SANDBOX_RETRY_S)
        except httpx.HTTPStatusError as err:
            why = f"serving answered {err.response.status_code}: {error_message(err.response)}"
            return PythonOutcome(None, 0.0, "sandbox_unavailable", why)
        except httpx.HTTPError as err:
            return PythonOutcome(None, 0.0, "sandbox_unavailable", f"serving did not answer: {type(err).__name__}")
        return PythonOutcome.from_json(answer)
