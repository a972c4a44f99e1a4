"""Object store on S3 through the ``minio`` client: MinIO in compose/Helm, or any S3 endpoint.

Large uploads are multipart (minio splits at ``part_size``). Transient failures (connection errors, 5xx, throttling)
are retried with exponential backoff through tenacity; a seekable stream is rewound before each attempt.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error, ServerError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from sage_ft.storage.base import (
    AccessDeniedError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    PreconditionFailedError,
    StorageError,
    check_key,
    check_prefix,
)

T = TypeVar("T")
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
# 403s: the credentials are revoked, wrong or expired, or lack a grant; no retry fixes that
_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidSecurity",
}


def _transient(err: BaseException) -> bool:
    if isinstance(err, S3Error):
        return err.code in _TRANSIENT_CODES
    return isinstance(err, ServerError | urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


class _Body(io.RawIOBase):
    """A GET response as a file object that returns its connection to the pool on close."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._response.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


def s3_client(
    endpoint: str,
    access_key: str | None,
    secret_key: str | None,
    *,
    secure: bool = False,
    region: str | None = None,
    timeout: float = 30.0,
) -> Minio:
    """A minio client whose HTTP pool does not retry on its own: ``S3Store`` is the one retry layer, so the retry
    budget (attempts x backoff) is what the settings say and an unreachable endpoint fails in seconds. ``timeout``
    bounds the connect and every read of a response, so a frozen server costs a call at most attempts x timeout."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout),
        retries=False,
        maxsize=10,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
    )
    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http)


class S3Store(ObjectStore):
    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        part_size: int = 16 * 1024 * 1024,
        attempts: int = 5,
        create_bucket: bool = True,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self.attempts = attempts
        self._bucket_checked = not create_bucket

    def ensure_bucket(self) -> None:
        """Create the bucket if missing: on first use, not at construction, so a service starts while the store is
        down and becomes ready when it returns."""
        if not self._bucket_checked:
            if not self._call(self.client.bucket_exists, self.bucket):
                self._call(self.client.make_bucket, self.bucket)
            self._bucket_checked = True

    def __repr__(self) -> str:
        return f"S3Store({self.client._base_url.host}/{self.bucket})"

    def _call(self, fn: Callable[..., T], *args: Any, before: Callable[[], None] | None = None, **kwargs: Any) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if before is not None:
                        before()
                    return fn(*args, **kwargs)
        except S3Error as err:
            if err.code in _PRECONDITION_CODES:
                raise PreconditionFailedError(f"{err.object_name or 'object'} changed since it was read") from None
            if err.code in _MISSING_CODES:
                raise ObjectNotFoundError(f"no object {err.object_name or ''}") from None
            if err.code in _DENIED_CODES:
                why = f"S3 {err.code} on bucket {self.bucket}: {err.message}"
                raise AccessDeniedError(
                    f"access denied by the object store ({why}); its credentials were refused"
                ) from err
            raise StorageError(f"S3 {err.code}: {err.message}") from err
        except (ServerError, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
            raise StorageError(f"S3 endpoint unavailable after {self.attempts} attempts: {err}") from err
        raise AssertionError("unreachable")  # pragma: no cover

    def put_stream(self, key: str, stream: BinaryIO, length: int = -1) -> ObjectInfo:
        check_key(key)
        self.ensure_bucket()
        start = stream.tell() if stream.seekable() else None

        def rewind() -> None:
            if start is not None:
                stream.seek(start)

        self._call(self.client.put_object, self.bucket, key, stream, length, part_size=self.part_size, before=rewind)
        info = self.stat(key)
        if info is None:
            raise StorageError(f"upload of {key} did not persist")
        return info

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        check_key(key)
        self.ensure_bucket()
        self._call(self.client.fput_object, self.bucket, key, str(path), part_size=self.part_size)
        return ObjectInfo(key, path.stat().st_size)

    def get_file(self, key: str, dest: Path) -> Path:
        check_key(key)
        self.ensure_bucket()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._call(self.client.fget_object, self.bucket, key, str(dest))
        return dest

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        self.ensure_bucket()
        response = self._call(self.client.get_object, self.bucket, key)
        return io.BufferedReader(_Body(response), 1024 * 1024)

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        self.ensure_bucket()
        try:
            obj = self._call(self.client.stat_object, self.bucket, key)
        except ObjectNotFoundError:
            return None
        return ObjectInfo(key, int(obj.size or 0))

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        self.ensure_bucket()
        objects = self._call(lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True)))
        for obj in sorted(objects, key=lambda o: o.object_name or ""):
            if obj.object_name and not obj.is_dir:
                yield ObjectInfo(obj.object_name, int(obj.size or 0))

    def delete(self, key: str) -> None:
        check_key(key)
        self.ensure_bucket()
        self._call(self.client.remove_object, self.bucket, key)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object and its ETag, from one GET (the ETag is the token S3's conditional writes compare)."""
        check_key(key)
        self.ensure_bucket()
        try:
            response = self._call(self.client.get_object, self.bucket, key)
        except ObjectNotFoundError:
            return None
        try:
            return response.read(), str(response.headers.get("etag", "")).strip('"')
        finally:
            response.close()
            response.release_conn()

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """One conditional PUT (``If-Match: <etag>``, or ``If-None-Match: *`` for "still absent"): S3, MinIO and
        moto check and write atomically. minio-py's public ``put_object`` drops these headers into user metadata,
        so the single-part PUT is sent through its ``_put_object``, which passes headers as they are."""
        check_key(key)
        self.ensure_bucket()
        condition = {"If-Match": f'"{token}"'} if token else {"If-None-Match": "*"}
        headers = {"Content-Type": "application/json", **condition}
        self._call(self.client._put_object, self.bucket, key, data, headers=headers)
