"""Published fine-tunes: the part a plan chose (an adapter to hot-load, or merged weights) fetched, verified and put
on a server from the pool.

When the engine needs merged weights the job did not publish, a worker merges the adapter (serving has no GPU stack)
and this waits for the manifest to list them, or for the worker's recorded failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from sage_ft.storage import ObjectStore
from sage_ft.storage.manifest import Manifest
from sage_ft.storage.merges import clear_merge_failure, merge_failure
from sage_ft_serving import artifacts
from sage_ft_serving.engines import Engine
from sage_ft_serving.plan import Plan
from sage_ft_serving.pool import ServerPool
from sage_ft_serving.records import Key, Server

log = logging.getLogger(__name__)


class MergeFailedError(RuntimeError):
    """The worker's merge of an adapter failed; its reason and code (``checksum_mismatch`` when the adapter's bytes
    were not the published ones, as serving's own check calls it) reach the deployment at once."""

    def __init__(self, message: str, code: str = "merge_failed") -> None:
        super().__init__(message)
        self.code = code


async def place(
    pool: ServerPool, engine: Engine, key: Key, artifact: artifacts.Artifact, base_ref: str, plan: Plan
) -> Server:
    """``artifact`` served for ``key`` on the server of its key (started, or restarted for a larger LoRA slot)."""
    server = await pool.ensure_for(engine, artifact, base_ref, plan)
    await pool.attach(server, engine, key, artifact, plan)
    return server


async def merged(
    store: ObjectStore, manifest: Manifest, why: str | None, enqueue: Callable[[], None], timeout: float
) -> Manifest:
    """Have a worker merge ``manifest``'s adapter (``enqueue``), then wait for the manifest that lists the merged
    weights; raises ``MergeFailedError`` with the worker's reason, or ``TimeoutError``."""
    log.info("merging %s: %s", manifest.name, why or "the engine cannot load adapters")
    await run_in_threadpool(clear_merge_failure, store, manifest.name)
    await run_in_threadpool(enqueue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        current = await run_in_threadpool(artifacts.resolve, store, manifest.name)
        if current is None:
            raise MergeFailedError(f"{manifest.name} was deleted while it was being merged")
        if "merged" in current.parts:
            return current
        failure = await run_in_threadpool(merge_failure, store, manifest.name)
        if failure:
            worker, error = failure.get("worker", "?"), failure.get("error", "unknown error")
            message = f"merging {manifest.name} failed on worker {worker}: {error}"
            raise MergeFailedError(message, code=failure.get("code") or "merge_failed")
    raise TimeoutError(f"merging {manifest.name} did not finish within {timeout:.0f} s; is a worker running?")
