"""A view of a store under a key prefix: how tenants are kept apart when auth is on (``tenants/<id>/...``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sage_ft.storage.base import ObjectInfo, ObjectStore, check_key, check_prefix


class PrefixedStore(ObjectStore):
    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = check_prefix(prefix.rstrip("/") + "/")

    def __repr__(self) -> str:
        return f"PrefixedStore({self.inner!r}, {self.prefix!r})"

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _strip(self, info: ObjectInfo) -> ObjectInfo:
        return ObjectInfo(info.key[len(self.prefix) :], info.size)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        return self._strip(self.inner.put_file(self._k(key), path))

    def put_stream(self, key: str, stream: BinaryIO, length: int = -1) -> ObjectInfo:
        return self._strip(self.inner.put_stream(self._k(key), stream, length))

    def get_file(self, key: str, dest: Path) -> Path:
        return self.inner.get_file(self._k(key), dest)

    def open(self, key: str) -> BinaryIO:
        return self.inner.open(self._k(key))

    def stat(self, key: str) -> ObjectInfo | None:
        info = self.inner.stat(self._k(key))
        return self._strip(info) if info else None

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for info in self.inner.list_objects(self.prefix + check_prefix(prefix)):
            yield self._strip(info)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        return self.inner.read_versioned(self._k(key))

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        self.inner.put_if(self._k(key), data, token)

    def delete(self, key: str) -> None:
        self.inner.delete(self._k(key))


LOCAL_TENANT = "local"  # the one tenant when auth is off (the embedded default); its keys carry no prefix


def tenant_store(store: ObjectStore, tenant: str) -> ObjectStore:
    """The tenant's view: the whole store for the local tenant, ``tenants/<tenant>/`` for any other."""
    return store if tenant == LOCAL_TENANT else PrefixedStore(store, f"tenants/{tenant}")
