"""Fixtures that run the real stack: redis-server, the gateway (uvicorn) and Celery workers as processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from stack import Stack, qa_lines


@pytest.fixture(scope="module")
def make_stack(
    tmp_path_factory: pytest.TempPathFactory, sage_home: Path, tiny_model: Path
) -> Iterator[Callable[..., Stack]]:
    """Build stacks with given env; every one started here is stopped at module end."""
    stacks: list[Stack] = []

    def make(storage: dict[str, str] | None = None, persist: bool = False, **env: str) -> Stack:
        base = tmp_path_factory.mktemp("stack")
        storage = storage or {"SAGE_STORAGE_BACKEND": "local", "SAGE_STORAGE_LOCAL_ROOT": str(base / "store")}
        defaults = {
            "SAGE_HOME": str(sage_home),
            "SAGE_WORKER_PRESET": "cpu",
            "SAGE_WORKER_POLL_SECONDS": "0.2",
            "SAGE_GATEWAY_MAINTENANCE_SECONDS": "1",
            "SAGE_HEARTBEAT_SECONDS": "1",
            "SAGE_LEASE_SECONDS": "8",
            "SAGE_RECONCILE_AFTER_SECONDS": "5",
        }
        stack = Stack(base, {**defaults, **storage, **env}, persist=persist)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """The default stack: a gateway and one worker ("w1") on the local store. A module defines its own for more."""
    st = make_stack()
    st.start_gateway()
    st.start_worker("w1")
    return st


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    """The real openai client against the module's ``stack`` fixture."""
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def good_file(client: openai.OpenAI, qa_records: list[dict]) -> str:
    return client.files.create(file=("qa.jsonl", qa_lines(qa_records[:8])), purpose="fine-tune").id
