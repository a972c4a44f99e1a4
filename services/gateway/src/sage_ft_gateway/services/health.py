"""Readiness without hanging: each dependency probe runs on its own thread, is waited for at most
``probe_timeout_seconds``, and its answer is reused for ``probe_cache_seconds``. A store that froze makes ``/readyz``
say so within the timeout; it never holds the request for the store's own (much longer) timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

Probe = Callable[[], object]


class Readiness:
    def __init__(self, probes: dict[str, Probe], timeout_s: float, cache_s: float) -> None:
        self.probes = probes
        self.timeout_s, self.cache_s = timeout_s, cache_s
        self._pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="readyz")
        self._lock = threading.Lock()
        self._running: dict[str, Future[object]] = {}
        self._cached: dict[str, tuple[float, str]] = {}

    def _future(self, name: str) -> Future[object]:
        """The probe in flight for ``name`` (a hung one is waited on again, never stacked), or a new one."""
        with self._lock:
            running = self._running.get(name)
            if running is None or running.done():
                running = self._pool.submit(self.probes[name])
                self._running[name] = running
            return running

    def check(self) -> dict[str, str]:
        now = time.monotonic()
        fresh = {n: r for n, (at, r) in self._cached.items() if now - at < self.cache_s}
        futures = {name: self._future(name) for name in self.probes if name not in fresh}
        deadline = now + self.timeout_s
        for name, future in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
                result = "ok"
            except FutureTimeout:
                result = f"unreachable: no answer within {self.timeout_s:g}s"
            except Exception as err:  # the probe's own failure, named
                result = f"unreachable: {type(err).__name__}"
            self._cached[name] = (time.monotonic(), result)
            fresh[name] = result
        return {name: fresh[name] for name in self.probes}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
