"""Chat backends. All but ``mock`` speak the OpenAI chat API, so the ``openai`` SDK serves them with different
endpoints.

- ``finetune``: your fine-tuned models through the sage-ft gateway (serving deploys them on the first request);
- ``openai``: the OpenAI API (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``);
- ``vllm``: any OpenAI-compatible server at ``--base-url``;
- ``ollama``: Ollama's OpenAI-compatible endpoint at ``OLLAMA_HOST``;
- ``mock``: no model at all; answers with a summary of the retrieved passages (for tests and demos).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai

from sage_ft_cli.client import CLIError

BACKENDS = ("finetune", "openai", "vllm", "ollama", "mock")


class ChatBackend:
    """One OpenAI-compatible endpoint, spoken to through the ``openai`` SDK (streaming, errors, retries)."""

    def __init__(self, name: str, base_url: str | None, model: str | None, api_key: str | None = None) -> None:
        self.name = name
        self.base_url = (base_url or "").rstrip("/")
        self.model = model
        self.client: openai.OpenAI | None = None
        if name != "mock":
            # local servers need no key, but the SDK wants one; it is sent only to the endpoint the user chose
            self.client = openai.OpenAI(
                base_url=self.base_url,
                api_key=api_key or "unused",
                max_retries=2,
                timeout=openai.Timeout(None, connect=30.0),
            )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def reply(
        self, messages: list[dict[str, str]], stream: bool, passages: list[str] | None = None, max_tokens: int = 512
    ) -> Iterator[str]:
        """The answer, in pieces as they arrive when ``stream``."""
        if self.client is None:
            yield mock_answer(messages[-1]["content"], passages or [])
            return
        chat: Any = messages
        try:
            if not stream:
                resp = self.client.chat.completions.create(
                    model=str(self.model), messages=chat, max_tokens=max_tokens, temperature=0
                )
                yield resp.choices[0].message.content or ""
                return
            for chunk in self.client.chat.completions.create(
                model=str(self.model), messages=chat, stream=True, max_tokens=max_tokens, temperature=0
            ):
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        except openai.APIConnectionError:
            raise CLIError(f"the {self.name} backend at {self.base_url} is not reachable") from None
        except openai.APIStatusError as err:
            body = err.body if isinstance(err.body, dict) else {}
            error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
            message = error.get("message") or err.message
            raise CLIError(
                f"{self.name} backend ({self.base_url}), model {self.model!r}: {err.status_code} {message}"
            ) from None
        except openai.OpenAIError as err:
            raise CLIError(f"the {self.name} backend at {self.base_url} failed: {err}") from None


def embedder(base_url: str, api_key: str | None) -> Callable[[str], Callable[[list[str]], list[list[float]]]]:
    """``embedder(model)(texts)``: vectors from the gateway's ``/v1/embeddings`` (serving starts the model server)."""

    def for_model(model: str) -> Callable[[list[str]], list[list[float]]]:
        client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "unused", max_retries=2, timeout=openai.Timeout(600.0, connect=30.0)
        )

        def embed(texts: list[str]) -> list[list[float]]:
            try:
                resp = client.embeddings.create(model=model, input=texts, encoding_format="float")
            except openai.APIConnectionError:
                raise CLIError(f"no gateway answers at {base_url} to compute embeddings") from None
            except openai.APIStatusError as err:
                raise CLIError(f"embeddings from {model}: {err.status_code} {err.message}") from None
            return [list(item.embedding) for item in sorted(resp.data, key=lambda d: d.index)]

        return embed

    return for_model


def mock_answer(question: str, passages: list[str]) -> str:
    if not passages:
        return f"(mock) No passages matched: {question!r}. Build an index and pass --index NAME."
    first = passages[0].strip().splitlines()
    summary = " ".join(line.strip() for line in first[:3])
    return f"(mock) From {len(passages)} passage(s): {summary}"
