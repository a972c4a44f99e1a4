"""One long-lived thread that makes every launcher call, so model servers have one owner for serving's lifetime.

``proc.spawn`` sets ``PR_SET_PDEATHSIG``, which Linux fires when the *thread* that forked exits, not the process.
AnyIO's worker threads (``run_in_threadpool``) retire after ten idle seconds and stop with the event loop, so a server
started from one was SIGKILLed at random while in use. A single-worker executor's thread never retires: it lives
until ``close``, which serving calls last, after every server is stopped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class LauncherThread:
    def __init__(self, name: str = "sage-launcher") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.ident: int | None = None
        self._pool.submit(self._remember).result()  # start the thread now, not on first use

    def _remember(self) -> None:
        self.ident = threading.get_ident()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the owner thread and await its result (the event loop stays free meanwhile)."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def call_sync(self, fn: Callable[..., T], *args: object) -> T:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
