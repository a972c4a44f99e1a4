"""Object storage: one interface, a local-directory store and an S3 store, plus model manifests."""

from __future__ import annotations

from sage_ft.settings import StorageSettings, path_settings, storage_settings
from sage_ft.storage.base import IntegrityError, ObjectInfo, ObjectNotFoundError, ObjectStore, StorageError
from sage_ft.storage.local import LocalStore
from sage_ft.storage.manifest import Manifest, delete_model, list_models, publish_model, read_manifest
from sage_ft.storage.names import fetch_part, read_model


def make_store(settings: StorageSettings | None = None) -> ObjectStore:
    """The store the settings describe (``SAGE_STORAGE_*``)."""
    settings = settings or storage_settings()
    if settings.backend == "local":
        return LocalStore(settings.local_root or path_settings().resolved_output_root())
    from sage_ft.storage.s3 import S3Store, s3_client

    access = settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    client = s3_client(
        settings.s3_endpoint,
        access,
        secret,
        secure=settings.s3_secure,
        region=settings.s3_region,
        timeout=settings.timeout_seconds,
    )
    return S3Store(client, settings.s3_bucket, part_size=settings.part_size_mb * 1024 * 1024, attempts=settings.retries)


__all__ = [
    "IntegrityError",
    "LocalStore",
    "Manifest",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "StorageError",
    "delete_model",
    "fetch_part",
    "list_models",
    "make_store",
    "publish_model",
    "read_manifest",
    "read_model",
]
