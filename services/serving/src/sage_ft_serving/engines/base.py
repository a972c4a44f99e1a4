"""The engine interface. Every engine speaks the same OpenAI API, so nothing past this layer branches on it."""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import httpx

from sage_ft_serving.artifacts import Artifact
from sage_ft_serving.launchers.base import ServerHandle, ServerSpec
from sage_ft_serving.plan import Plan


class Engine(ABC):
    name: str
    part: str  # the published part it serves: "adapter" (hot-loaded) or "merged"
    hot_loads: bool  # can load adapters onto a running server (several models share one server)

    @abstractmethod
    def server_key(self, artifact: Artifact, base_ref: str, plan: Plan) -> str:
        """Models with the same key share one server (vLLM: one per base model)."""

    @abstractmethod
    def spec(self, artifact: Artifact, base_ref: str, path_for_server: Callable[[Path], str], plan: Plan) -> ServerSpec:
        """How to start a server for ``artifact``; ``path_for_server`` maps local paths to the server's view."""

    @abstractmethod
    async def attach(
        self, client: httpx.AsyncClient, server: ServerHandle, artifact: Artifact, server_path: str, plan: Plan
    ) -> str:
        """Make ``artifact`` servable on ``server``; returns the model id to put in requests."""

    async def detach(self, client: httpx.AsyncClient, server: ServerHandle, engine_model: str) -> None:
        """Stop serving ``engine_model`` on a server that stays up (hot-loading engines only)."""
        return None


def server_name(engine: str, key: str, label: str) -> str:
    """A DNS-safe, stable name for the server behind ``key`` (containers and Deployments are named by it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:30].strip("-")
    return f"sage-{engine}-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
