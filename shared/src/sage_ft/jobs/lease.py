"""Owner-checked leases on single Redis keys: the worker running an eval run, the gateway sending one webhook attempt.

A lease is the key holding its owner's name with an expiry. It is taken only where none is held (``SET NX PX``),
and renewed or released only by its owner (a compare in Lua): a holder that outlived its lease, whose work another
process took over meanwhile, can neither extend nor drop the newcomer's. A holder that dies keeps the work away from
others until the expiry, so holders renew a short lease while they work instead of taking a long one.
(A job's lease is part of the job record, fenced with it: ``sage_ft.jobs.job_states``.)
"""

from __future__ import annotations

from typing import Any

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class KeyLeases:
    def __init__(self, client: Any) -> None:
        self.r = client
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def claim(self, key: str, owner: str, lease_s: float, *, keep: bool = False) -> bool:
        """Take the lease if no one holds it; with ``keep``, an ``owner`` that holds it already renews it."""
        taken = bool(self.r.set(key, owner, nx=True, px=int(lease_s * 1000)))
        return taken or (keep and self.renew(key, owner, lease_s))

    def renew(self, key: str, owner: str, lease_s: float) -> bool:
        """False when ``owner`` no longer holds it (it expired, and perhaps another took it)."""
        return bool(self._renew(keys=[key], args=[owner, int(lease_s * 1000)]))

    def release(self, key: str, owner: str) -> None:
        self._release(keys=[key], args=[owner])
