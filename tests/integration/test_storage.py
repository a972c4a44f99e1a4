"""Object stores (local directory and a real S3-protocol server) and manifest publishing."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sage_ft.settings import StorageSettings
from sage_ft.storage import (
    IntegrityError,
    LocalStore,
    ObjectNotFoundError,
    ObjectStore,
    StorageError,
    delete_model,
    fetch_part,
    list_models,
    make_store,
    publish_model,
    read_manifest,
)
from sage_ft.storage.s3 import S3Store, s3_client

MIB = 1024 * 1024


def s3_store(ep: dict[str, str], bucket: str | None = None, **kw: object) -> S3Store:
    client = s3_client(ep["endpoint"], ep["access_key"], ep["secret_key"])
    return S3Store(client, bucket or f"t-{uuid.uuid4().hex[:12]}", part_size=5 * MIB, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        yield s3_store(request.getfixturevalue("s3_endpoint"))


def test_round_trip_listing_and_delete(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("files/b", b"bee")
    src = tmp_path / "a.txt"
    src.write_text("alpha")
    assert store.put_file("files/a", src).size == 5
    store.put_stream("jobs/j1/checkpoints/step-10/x", io.BytesIO(b"12345"), 5)
    assert [o.key for o in store.list_objects("files/")] == ["files/a", "files/b"]
    assert store.get_bytes("files/b") == b"bee"
    assert store.get_file("files/a", tmp_path / "out" / "a").read_text() == "alpha"
    assert store.stat("files/a").size == 5 and store.stat("files/zzz") is None  # type: ignore[union-attr]
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("files/zzz")
    assert store.delete_prefix("files/") == 2
    assert [o.key for o in store.list_objects("")] == ["jobs/j1/checkpoints/step-10/x"]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/../b", "back\\slash", "", "a/./b", "nul\x00"])
def test_hostile_keys_are_rejected(store: ObjectStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        store.put_bytes(key, b"x")
    assert not (tmp_path / "escape").exists()


def test_directory_helpers(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "w.bin").write_bytes(os.urandom(1000))
    (src / "sub" / "c.json").write_text("{}")
    assert [o.key for o in store.upload_dir(src, "models/x/adapter")] == ["models/x/adapter/sub/c.json",
                                                                           "models/x/adapter/w.bin"]  # fmt: skip
    got = store.download_prefix("models/x/adapter", tmp_path / "dl")
    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in got) == ["sub/c.json", "w.bin"]
    assert (tmp_path / "dl" / "w.bin").read_bytes() == (src / "w.bin").read_bytes()


def test_s3_multipart_upload_of_large_files(s3_endpoint: dict[str, str], tmp_path: Path) -> None:
    store = s3_store(s3_endpoint)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MIB))  # three 5 MiB parts
    store.put_file("models/m/merged/model.safetensors", big)
    assert store.stat("models/m/merged/model.safetensors").size == 12 * MIB  # type: ignore[union-attr]
    data = os.urandom(11 * MIB)
    store.put_stream("files/stream", io.BytesIO(data), -1)  # unknown length: multipart by part_size
    assert store.get_bytes("files/stream") == data
    assert store.get_file("models/m/merged/model.safetensors", tmp_path / "back").read_bytes() == big.read_bytes()


def test_unreachable_s3_gives_clear_error_after_retries() -> None:
    from tests.conftest import _free_port

    dead = {"endpoint": f"127.0.0.1:{_free_port()}", "access_key": "a", "secret_key": "b"}
    with pytest.raises(StorageError, match="unavailable after 2 attempts"):
        s3_store(dead, attempts=2)


def _adapter(tmp_path: Path, content: bytes = b"weights") -> Path:
    d = tmp_path / f"adapter-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(content)
    (d / "adapter_config.json").write_text(json.dumps({"r": 8}))
    return d


def test_publish_writes_manifest_last_and_readers_verify(store: ObjectStore, tmp_path: Path) -> None:
    manifest = publish_model(store, "code", {"adapter": _adapter(tmp_path)}, base_model="sage-tiny", job_id="j1")
    assert manifest.parts == ["adapter"] and set(manifest.files) == {"adapter/adapter_model.safetensors",
                                                                     "adapter/adapter_config.json"}  # fmt: skip
    assert [m.name for m in list_models(store)] == ["code"]
    got = fetch_part(store, "code", "adapter", tmp_path / "cache" / "code")
    assert (got / "adapter_model.safetensors").read_bytes() == b"weights"

    store.put_bytes("models/code/adapter/adapter_model.safetensors", b"tampered")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        fetch_part(store, "code", "adapter", tmp_path / "cache2" / "code")
    assert not (tmp_path / "cache2" / "code").exists()


class FailingStore(LocalStore):
    """Dies on the second file upload, like a worker losing its storage mid-publish."""

    calls = 0

    def put_file(self, key: str, path: Path):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 2:
            raise StorageError("connection reset")
        return super().put_file(key, path)


def test_failed_publish_leaves_no_model(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "store")
    with pytest.raises(StorageError):
        publish_model(store, "half", {"adapter": _adapter(tmp_path)}, base_model="b")
    assert read_manifest(store, "half") is None and list_models(store) == []
    assert [o.key for o in store.list_objects("models/")], "the partial upload is there but unlisted"


def test_merge_adds_a_part_and_delete_unpublishes(store: ObjectStore, tmp_path: Path) -> None:
    first = publish_model(store, "qa", {"adapter": _adapter(tmp_path)}, base_model="b", metrics={"loss": 0.5})
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "model.safetensors").write_bytes(b"full")
    second = publish_model(store, "qa", {"merged": merged}, base_model="b")
    assert second.parts == ["adapter", "merged"] and second.created_at == first.created_at
    assert second.metrics == {"loss": 0.5} and second.updated_at
    assert fetch_part(store, "qa", "merged", tmp_path / "m").joinpath("model.safetensors").read_bytes() == b"full"
    with pytest.raises(StorageError, match="no 'eval' part"):
        fetch_part(store, "qa", "eval", tmp_path / "e")
    assert delete_model(store, "qa") == 3
    assert list_models(store) == [] and list(store.list_objects("models/")) == []


def test_invalid_model_names(store: ObjectStore, tmp_path: Path) -> None:
    for name in ["../x", "a/b", "", "-x", "x" * 200]:
        with pytest.raises(StorageError, match="invalid model name"):
            publish_model(store, name, {"adapter": _adapter(tmp_path)}, base_model="b")


def test_make_store_from_settings(tmp_path: Path, s3_endpoint: dict[str, str]) -> None:
    local = make_store(StorageSettings(backend="local", local_root=tmp_path / "l"))
    assert isinstance(local, LocalStore) and local.root == tmp_path / "l"
    s3 = make_store(StorageSettings(backend="s3", s3_endpoint=s3_endpoint["endpoint"], s3_bucket="from-settings",
                                    s3_access_key=s3_endpoint["access_key"],
                                    s3_secret_key=s3_endpoint["secret_key"]))  # fmt: skip
    s3.put_bytes("files/x", b"1")
    assert s3.get_bytes("files/x") == b"1"
    assert "testing" not in repr(s3) and "topsecret" not in repr(StorageSettings(s3_secret_key="topsecret"))
