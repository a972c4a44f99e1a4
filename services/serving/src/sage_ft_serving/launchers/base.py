"""What an engine asks a launcher for (``ServerSpec``), and what it gets back (``ServerHandle``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MANAGED_BY = "sage-ft.managed-by"  # label on every container/Deployment serving starts, to find them after a restart
SERVER_LABEL = "sage-ft.server"


@dataclass
class ServerSpec:
    """One model server. ``args`` may hold ``{host}`` and ``{port}``, filled in by the launcher."""

    name: str  # DNS-safe, unique among running servers
    engine: str
    module: str  # python -m <module> (process launcher); containers run the engine image's own entrypoint
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    python: Path | None = None  # interpreter for the process launcher
    health_path: str = "/health"
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def argv(self, host: str, port: int) -> list[str]:
        return [a.replace("{host}", host).replace("{port}", str(port)) for a in self.args]


@dataclass
class ServerHandle:
    name: str
    url: str  # base URL of the server's OpenAI API, without /v1
    pid: int | None = None
    log_path: Path | None = None
    ref: object = None  # the launcher's own object (Popen, container id, ...)


class Launcher(ABC):
    kind: str

    @abstractmethod
    def start(self, spec: ServerSpec) -> ServerHandle:
        """Start the server and return at once; the caller waits for health."""

    @abstractmethod
    def stop(self, handle: ServerHandle) -> None:
        """Stop the server and everything it started; idempotent."""

    @abstractmethod
    def alive(self, handle: ServerHandle) -> bool: ...

    def describe_failure(self, handle: ServerHandle) -> str:
        """A line for an error message when the server died or never became healthy."""
        return ""

    def path_for_server(self, path: Path) -> str:
        """How the server sees a local path (the same path for processes; a volume path in containers)."""
        return str(path)

    def cleanup_orphans(self) -> int:
        """Remove servers a previous run of serving left behind (by label); returns how many."""
        return 0

    def close(self) -> None:
        """Release the launcher's own resources."""
        return None


def volume_path(home: Path, mount: str, path: Path) -> str:
    """``path`` as a container sees it: the sage home is the volume mounted at ``mount`` in model servers."""
    try:
        rel = path.resolve().relative_to(home.resolve())
    except ValueError:
        raise ValueError(f"{path} is outside {home}, the directory shared with model servers") from None
    return str(PurePosixPath(mount) / rel.as_posix())
