"""Object store on a local directory: the embedded single-machine default (``~/.sage/finetune_output``)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from sage_ft.storage.base import (
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    PreconditionFailedError,
    check_key,
    check_prefix,
)


class LocalStore(ObjectStore):
    """Keys map to files under ``root``. Writes go to a temp file and are renamed into place (atomic)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({self.root})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextmanager
    def _staged(self, key: str) -> Iterator[Path]:
        """A temp file next to ``key``'s path; renamed into place, after an fsync, if the block succeeds."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".upload.", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_stream(self, key: str, stream: BinaryIO, length: int = -1) -> ObjectInfo:
        with self._staged(key) as tmp, tmp.open("wb") as out:
            shutil.copyfileobj(stream, out, 1024 * 1024)
        return ObjectInfo(key, self._path(key).stat().st_size)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        with self._staged(key) as tmp:
            shutil.copyfile(path, tmp)  # copied inside the kernel (sendfile), not through Python buffers
        return ObjectInfo(key, self._path(key).stat().st_size)

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """Compare and write under an exclusive lock on the root, so two processes on this machine serialize."""
        with (self.root / ".cas.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self._path(key)
            current = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            if current != token:
                raise PreconditionFailedError(f"{key} changed since it was read")
            self.put_bytes(key, data)

    def get_file(self, key: str, dest: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFoundError(f"no object {key}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {key}") from None

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return ObjectInfo(key, path.stat().st_size) if path.is_file() else None

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.name.startswith((".upload.", ".cas.lock")):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                yield ObjectInfo(key, path.stat().st_size)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # prune empty parents up to the root so listings stay clean
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break
