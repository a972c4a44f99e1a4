"""Chat backends. All but ``mock`` speak the OpenAI chat API, so one client serves them with different endpoints.

- ``finetune``: your fine-tuned models through the sage-ft gateway (serving deploys them on the first request);
- ``openai``: the OpenAI API (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``);
- ``vllm``: any OpenAI-compatible server at ``--base-url``;
- ``ollama``: Ollama's OpenAI-compatible endpoint at ``OLLAMA_HOST``;
- ``mock``: no model at all; answers with a summary of the retrieved passages (for tests and demos).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from sage_ft_cli.client import CLIError

BACKENDS = ("finetune", "openai", "vllm", "ollama", "mock")


class ChatBackend:
    def __init__(self, name: str, base_url: str | None, model: str | None, api_key: str | None = None) -> None:
        self.name = name
        self.base_url = (base_url or "").rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(30.0, read=None))

    def close(self) -> None:
        self.http.close()

    def reply(self, messages: list[dict[str, str]], stream: bool, passages: list[str] | None = None,
              max_tokens: int = 512) -> Iterator[str]:  # fmt: skip
        """The answer, in pieces as they arrive when ``stream``."""
        if self.name == "mock":
            yield mock_answer(messages[-1]["content"], passages or [])
            return
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                "temperature": 0, "stream": stream}  # fmt: skip
        url = f"{self.base_url}/chat/completions"
        try:
            if not stream:
                resp = self.http.post(url, json=body)
                data = _checked(resp, self)
                yield data["choices"][0]["message"]["content"] or ""
                return
            with self.http.stream("POST", url, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _checked(resp, self)
                for line in resp.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            yield piece
        except httpx.ConnectError:
            raise CLIError(f"the {self.name} backend at {self.base_url} is not reachable") from None
        except httpx.HTTPError as err:
            raise CLIError(f"the {self.name} backend at {self.base_url} failed: {err}") from None


def _checked(resp: httpx.Response, backend: ChatBackend) -> Any:
    if resp.status_code < 400:
        return resp.json()
    try:
        error = resp.json().get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = resp.text[:300]
    raise CLIError(f"{backend.name} backend ({backend.base_url}), model {backend.model!r}: {resp.status_code} "
                   f"{message}")  # fmt: skip


def mock_answer(question: str, passages: list[str]) -> str:
    if not passages:
        return f"(mock) No passages matched: {question!r}. Build an index and pass --index NAME."
    first = passages[0].strip().splitlines()
    summary = " ".join(line.strip() for line in first[:3])
    return f"(mock) From {len(passages)} passage(s): {summary}"
