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
from sage_ft.storage.base import PreconditionFailedError
from sage_ft.storage.manifest import PublishFencedError, collect_garbage
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
    assert [o.key for o in store.upload_dir(src, "models/x/adapter")] == [
        "models/x/adapter/sub/c.json",
        "models/x/adapter/w.bin",
    ]
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
    store = s3_store(dead, attempts=2)  # constructing it contacts nothing: a service starts while S3 is down
    with pytest.raises(StorageError, match="unavailable after 2 attempts"):
        store.stat("anything")


def _adapter(tmp_path: Path, content: bytes = b"weights") -> Path:
    d = tmp_path / f"adapter-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(content)
    (d / "adapter_config.json").write_text(json.dumps({"r": 8}))
    return d


def test_publish_writes_manifest_last_and_readers_verify(store: ObjectStore, tmp_path: Path) -> None:
    manifest = publish_model(store, "code", {"adapter": _adapter(tmp_path)}, base_model="sage-tiny", job_id="j1")
    assert manifest.parts == ["adapter"] and set(manifest.files) == {
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    }
    assert [m.name for m in list_models(store)] == ["code"]
    got = fetch_part(store, "code", "adapter", tmp_path / "cache" / "code")
    assert (got / "adapter_model.safetensors").read_bytes() == b"weights"

    store.put_bytes(manifest.key("adapter/adapter_model.safetensors"), b"tampered")
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
    assert [o.key for o in store.list_objects("models/")] == [], "a failed publish removes its own uploads"


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
    s3 = make_store(
        StorageSettings(
            backend="s3",
            s3_endpoint=s3_endpoint["endpoint"],
            s3_bucket="from-settings",
            s3_access_key=s3_endpoint["access_key"],
            s3_secret_key=s3_endpoint["secret_key"],
        )
    )
    s3.put_bytes("files/x", b"1")
    assert s3.get_bytes("files/x") == b"1"
    assert "testing" not in repr(s3) and "topsecret" not in repr(StorageSettings(s3_secret_key="topsecret"))


def test_conditional_writes_compare_versions(store: ObjectStore) -> None:
    store.put_if("c/k.json", b"one", None)  # absent -> created
    with pytest.raises(PreconditionFailedError):
        store.put_if("c/k.json", b"again", None)  # no longer absent
    data, token = store.read_versioned("c/k.json") or (b"", "")
    assert data == b"one"
    store.put_if("c/k.json", b"two", token)
    with pytest.raises(PreconditionFailedError):
        store.put_if("c/k.json", b"stale", token)  # someone wrote since that version was read
    assert store.get_bytes("c/k.json") == b"two" and store.read_versioned("missing/k") is None


def test_publishes_never_overwrite_and_garbage_is_collected(store: ObjectStore, tmp_path: Path) -> None:
    first = publish_model(
        store, "m1", {"adapter": _adapter(tmp_path, b"v1")}, base_model="b", scope="attempts/1", attempt=1
    )
    assert first.key("adapter/adapter_model.safetensors") == "models/m1/attempts/1/adapter/adapter_model.safetensors"
    second = publish_model(
        store, "m1", {"adapter": _adapter(tmp_path, b"v2")}, base_model="b", scope="attempts/2", attempt=2
    )
    # the first attempt's files are untouched until garbage collection: a reader holding its manifest still works
    assert store.get_bytes(first.key("adapter/adapter_model.safetensors")) == b"v1"
    assert collect_garbage(store, "m1") == 2
    keys = sorted(o.key for o in store.list_objects("models/m1/"))
    assert keys == [
        "models/m1/attempts/2/adapter/adapter_config.json",
        "models/m1/attempts/2/adapter/adapter_model.safetensors",
        "models/m1/manifest.json",
    ]
    assert read_manifest(store, "m1") == second and second.attempt == 2


def test_a_fenced_publish_commits_nothing_and_leaves_nothing(store: ObjectStore, tmp_path: Path) -> None:
    kept = publish_model(store, "m2", {"adapter": _adapter(tmp_path, b"good")}, base_model="b", scope="attempts/2")
    with pytest.raises(PublishFencedError):
        publish_model(
            store,
            "m2",
            {"adapter": _adapter(tmp_path, b"stale")},
            base_model="b",
            scope="attempts/1",
            fence=lambda: False,
        )
    assert read_manifest(store, "m2") == kept
    assert not [o.key for o in store.list_objects("models/m2/attempts/1/")]


def test_a_commit_race_is_won_by_the_lease_holder_and_lost_by_anyone_else(store: ObjectStore, tmp_path: Path) -> None:
    """Another writer commits between our read of the manifest and our commit: without a fence (a merge) we give
    up and remove our files; with a live fence (the job's lease holder) we commit over it."""

    def racing_fence() -> bool:
        publish_model(store, "m3", {"adapter": _adapter(tmp_path, b"late")}, base_model="b", scope="attempts/1")
        return True

    with pytest.raises(PreconditionFailedError):
        publish_model(
            _RaceOnce(store, tmp_path), "m4", {"merged": _adapter(tmp_path)}, base_model="b", scope="merges/x"
        )
    other = read_manifest(store, "m4")
    assert other is not None and other.parts == ["adapter"]  # the other writer's commit stands, ours never landed
    assert not list(store.list_objects("models/m4/merges/"))
    won = publish_model(
        store,
        "m3",
        {"adapter": _adapter(tmp_path, b"ours")},
        base_model="b",
        scope="attempts/2",
        fence=_once(racing_fence),
    )
    assert read_manifest(store, "m3") == won and won.locations["adapter"] == "attempts/2/adapter/"


def _once(fn):  # type: ignore[no-untyped-def]
    done = []

    def call() -> bool:
        if done:
            return True
        done.append(1)
        return bool(fn())

    return call


class _RaceOnce(ObjectStore):
    """A store view that, on the first read of a manifest, lets another publisher commit right after the read."""

    def __init__(self, inner: ObjectStore, tmp_path: Path) -> None:
        self.inner, self.tmp, self.raced = inner, tmp_path, False

    def read_versioned(self, key: str):  # type: ignore[no-untyped-def]
        got = self.inner.read_versioned(key)
        if not self.raced:
            self.raced = True
            publish_model(self.inner, "m4", {"adapter": _adapter(self.tmp, b"other")}, base_model="b")
        return got

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        self.inner.put_if(key, data, token)

    def put_file(self, key, path):  # type: ignore[no-untyped-def]
        return self.inner.put_file(key, path)

    def put_stream(self, key, stream, length=-1):  # type: ignore[no-untyped-def]
        return self.inner.put_stream(key, stream, length)

    def get_file(self, key, dest):  # type: ignore[no-untyped-def]
        return self.inner.get_file(key, dest)

    def open(self, key):  # type: ignore[no-untyped-def]
        return self.inner.open(key)

    def stat(self, key):  # type: ignore[no-untyped-def]
        return self.inner.stat(key)

    def list_objects(self, prefix=""):  # type: ignore[no-untyped-def]
        return self.inner.list_objects(prefix)

    def delete(self, key):  # type: ignore[no-untyped-def]
        self.inner.delete(key)


def _checkpoint_dir(tmp_path: Path, step: int) -> Path:
    local = tmp_path / f"checkpoint-{step}"
    local.mkdir()
    (local / "adapter_model.safetensors").write_bytes(f"weights of step {step}".encode())
    (local / "optimizer.pt").write_bytes(b"state")
    return local


def test_checkpoints_are_committed_by_their_attempt_and_a_stale_one_commits_nothing(
    store: ObjectStore, tmp_path: Path
) -> None:
    """Attempt 2 began (it resumes from attempt 1's step 2): attempt 1, stale but unaware of it (its fence still
    says yes), commits nothing and leaves no upload; the next attempt resumes from attempt 2's checkpoint only."""
    from sage_ft.storage.checkpoints import begin_attempt, commit_checkpoint, committed, fetch_checkpoint

    def holds() -> bool:
        return True

    assert begin_attempt(store, "ftjob-c1", 1) is None
    commit_checkpoint(store, "ftjob-c1", 1, 2, _checkpoint_dir(tmp_path, 2), holds)
    resumed = begin_attempt(store, "ftjob-c1", 2)
    assert resumed is not None and (resumed.step, resumed.attempt) == (2, 1)
    with pytest.raises(PublishFencedError, match="attempt 2 owns"):
        commit_checkpoint(store, "ftjob-c1", 1, 4, _checkpoint_dir(tmp_path, 4), holds)
    assert not list(store.list_objects("jobs/ftjob-c1/checkpoints/attempt-1/step-4/"))
    assert list(committed(store, "ftjob-c1")) == [2]
    with pytest.raises(PublishFencedError):  # a stale delivery cannot take the checkpoints back either
        begin_attempt(store, "ftjob-c1", 1)

    # the window between the fence and the commit: attempt 2 is frozen there while attempt 3 begins
    def frozen_while_attempt_3_begins() -> bool:
        begin_attempt(store, "ftjob-c1", 3)
        return True

    with pytest.raises(PublishFencedError):
        commit_checkpoint(store, "ftjob-c1", 2, 6, _checkpoint_dir(tmp_path, 6), frozen_while_attempt_3_begins)
    latest = begin_attempt(store, "ftjob-c1", 4)
    assert latest is not None and (latest.step, latest.attempt) == (2, 1)
    commit_checkpoint(store, "ftjob-c1", 4, 8, _checkpoint_dir(tmp_path, 8), holds)
    latest = begin_attempt(store, "ftjob-c1", 5)
    assert latest is not None and (latest.step, latest.attempt, latest.location) == (8, 4, "attempt-4/step-8/")
    out = fetch_checkpoint(store, "ftjob-c1", latest, tmp_path / "resume")
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights of step 8"
    assert not list(store.list_objects("jobs/ftjob-c1/checkpoints/attempt-2/"))


def test_a_refused_fence_commits_no_checkpoint_and_leftovers_are_collected(store: ObjectStore, tmp_path: Path) -> None:
    from sage_ft.storage.checkpoints import begin_attempt, commit_checkpoint, committed, remove_uncommitted

    begin_attempt(store, "ftjob-c2", 1)
    with pytest.raises(PublishFencedError, match="lease moved on"):
        commit_checkpoint(store, "ftjob-c2", 1, 2, _checkpoint_dir(tmp_path, 2), lambda: False)
    assert committed(store, "ftjob-c2") == {}
    commit_checkpoint(store, "ftjob-c2", 1, 4, _checkpoint_dir(tmp_path, 4), lambda: True)
    store.put_bytes("jobs/ftjob-c2/checkpoints/attempt-1/step-6/optimizer.pt", b"a killed upload")
    assert remove_uncommitted(store, "ftjob-c2") == 1
    assert {o.key for o in store.list_objects("jobs/ftjob-c2/")} == {
        "jobs/ftjob-c2/checkpoints/index.json",
        "jobs/ftjob-c2/checkpoints/attempt-1/step-4/adapter_model.safetensors",
        "jobs/ftjob-c2/checkpoints/attempt-1/step-4/optimizer.pt",
    }


def test_checkpoints_of_the_older_layout_stay_resumable_and_servable(store: ObjectStore, tmp_path: Path) -> None:
    """``step-N/checkpoint.json`` from before fencing: read as committed, carried into the index by the next
    attempt, and still served as ``<model>:ckpt-step-N``."""
    import hashlib

    from sage_ft.storage.checkpoints import begin_attempt, checkpoint_manifest, commit_checkpoint, committed

    data = b"old weights"
    store.put_bytes("jobs/ftjob-c3/checkpoints/step-5/adapter_model.safetensors", data)
    files = {"adapter_model.safetensors": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    store.put_bytes(
        "jobs/ftjob-c3/checkpoints/step-5/checkpoint.json", json.dumps({"step": 5, "files": files}).encode()
    )
    assert list(committed(store, "ftjob-c3")) == [5]
    resumed = begin_attempt(store, "ftjob-c3", 2)
    assert resumed is not None and (resumed.step, resumed.attempt, resumed.location) == (5, None, "step-5/")
    commit_checkpoint(store, "ftjob-c3", 2, 7, _checkpoint_dir(tmp_path, 7), lambda: True)
    assert list(committed(store, "ftjob-c3")) == [5, 7]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"final")
    publish_model(store, "ft:m:x:c3", {"adapter": adapter}, base_model="b", job_id="ftjob-c3")
    for step in (5, 7):
        manifest = checkpoint_manifest(store, "ft:m:x:c3", step)
        assert manifest is not None
        key = manifest.key("adapter/adapter_model.safetensors")
        assert store.get_bytes(key) == (data if step == 5 else b"weights of step 7")
