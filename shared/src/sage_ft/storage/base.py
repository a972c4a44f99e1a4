"""The object store interface every service uses, whatever sits behind it.

Keys are ``/``-separated relative paths (``models/code/adapter/adapter_config.json``). They are validated here once,
so no implementation can be steered outside its root or bucket by a crafted name.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sage_ft.errors import SageFTError

_SEGMENT = re.compile(r"^[A-Za-z0-9._@=+-][A-Za-z0-9._@=+: -]*$")
CHUNK = 1024 * 1024


class StorageError(SageFTError, OSError):
    """The object store failed or refused a request (after retries for transient errors)."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    pass


class IntegrityError(StorageError):
    """A file's size or sha256 does not match its manifest."""


class AccessDeniedError(StorageError):
    """The store refused the credentials or their permissions (S3's 403: revoked or wrong keys, a missing grant).
    Retrying does not help until an operator fixes the credentials."""


class PreconditionFailedError(StorageError):
    """A conditional write found another version of the object than the one the writer read: someone else wrote."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def check_key(key: str) -> str:
    """Reject keys that could escape the store: absolute, empty segments, ``..``, backslashes, control chars."""
    if not key or key.startswith("/") or "\\" in key or len(key) > 1024:
        raise StorageError(f"invalid object key {key!r}")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _SEGMENT.match(part):
            raise StorageError(f"invalid object key {key!r} (segment {part!r})")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is a key that may end with ``/`` (or be empty: the whole store)."""
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ObjectStore(ABC):
    """Blob storage with atomic single-object writes. Directory helpers build on the primitives."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> ObjectInfo: ...

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, length: int = -1) -> ObjectInfo:
        """Store a stream; the object appears only once complete (``length`` -1 when unknown)."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> Path: ...

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; the caller closes it."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, recursively, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    # -- helpers ------------------------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        import io

        return self.put_stream(key, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and a version token for ``put_if``; None if there is no such object."""
        try:
            data = self.get_bytes(key)
        except ObjectNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """Write ``data`` only if the object is still at version ``token`` (None: still absent); otherwise raise
        ``PreconditionFailedError``. Stores with conditional writes make the check and the write one operation;
        this default is a read-then-write, only as good as the caller's own lock."""
        current = self.read_versioned(key)
        if (current[1] if current else None) != token:
            raise PreconditionFailedError(f"{key} changed since it was read")
        self.put_bytes(key, data)

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def delete_prefix(self, prefix: str) -> int:
        keys = [o.key for o in self.list_objects(check_prefix(prefix))]
        for key in keys:
            self.delete(key)
        return len(keys)

    def delete_unlisted(self, prefix: str, keep: tuple[str, ...]) -> int:
        """Delete every object under ``prefix`` whose key starts with none of ``keep`` (whole keys or key prefixes):
        the garbage collection of a commit point, which keeps what it lists."""
        doomed = [o.key for o in self.list_objects(check_prefix(prefix)) if not o.key.startswith(keep)]
        for key in doomed:
            self.delete(key)
        return len(doomed)

    def upload_dir(self, local_dir: Path, prefix: str) -> list[ObjectInfo]:
        prefix = check_prefix(prefix.rstrip("/") + "/")
        return [
            self.put_file(prefix + p.relative_to(local_dir).as_posix(), p)
            for p in sorted(local_dir.rglob("*"))
            if p.is_file()
        ]

    def download_prefix(self, prefix: str, dest: Path) -> list[Path]:
        prefix = check_prefix(prefix.rstrip("/") + "/")
        out = []
        for obj in self.list_objects(prefix):
            out.append(self.get_file(obj.key, dest / obj.key[len(prefix) :]))
        return out
