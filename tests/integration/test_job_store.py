"""The job store and state machine against a private redis-server: CAS, leases, reaper, reconciler, idempotency."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack import start_redis

from sage_ft.jobs import Job, JobConflictError, JobStatus, JobStore, job_states
from sage_ft.jobs.model import CheckpointRecord
from sage_ft.jobs.store import event_record


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobStore]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield JobStore.from_url(url, prefix="test")
    proc.stop()


def new_job(store: JobStore, tenant: str = "t1", **kw: object) -> Job:
    job, created = store.create_job(Job(id=f"ftjob-{time.time_ns():x}", tenant=tenant, model="m", **kw))  # type: ignore[arg-type]
    assert created
    return job


def test_only_one_of_many_concurrent_claims_wins(store: JobStore) -> None:
    job = new_job(store)
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def contend(owner: str) -> None:
        barrier.wait()
        if job_states.claim(store, job.id, owner, lease_s=30).job is not None:
            winners.append(owner)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    current = store.get_job(job.id)
    assert current is not None and current.lease_owner == winners[0] and current.attempt == 1


def test_lease_expiry_reaper_requeues_then_fails_after_max_attempts(store: JobStore) -> None:
    job = new_job(store, max_attempts=2)
    enqueued: list[str] = []
    assert job_states.claim(store, job.id, "a", lease_s=0.2).job is not None
    assert job_states.claim(store, job.id, "b", lease_s=5).job is None  # a live lease belongs to "a"
    assert job_states.reap(store, lambda j: enqueued.append(j.id)) == []  # not expired yet
    time.sleep(0.3)
    assert job_states.heartbeat(store, job.id, "a", 5) is not None  # a late heartbeat still renews: nobody took it
    time.sleep(0.1)
    store.update(job.id, lambda j: j.model_copy(update={"lease_expires_at": 0.0}))  # "a" died
    assert job_states.reap(store, lambda j: enqueued.append(j.id)) == [job.id]
    after = store.get_job(job.id)
    assert after is not None and after.status == JobStatus.QUEUED and enqueued == [job.id]
    assert job_states.heartbeat(store, job.id, "a", 5) is None  # the old owner has lost it
    claimed = job_states.claim(store, job.id, "b", lease_s=0.1).job
    assert claimed is not None and claimed.attempt == 2
    time.sleep(0.2)
    job_states.reap(store, lambda j: enqueued.append(j.id))
    failed = store.get_job(job.id)
    assert failed is not None and failed.status == JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "worker_lost"
    assert job_states.finish(store, job.id, "b", JobStatus.SUCCEEDED) is None  # too late to succeed


def test_cancel_rules(store: JobStore) -> None:
    queued = new_job(store)
    assert job_states.request_cancel(store, queued.id).status == JobStatus.CANCELLED
    assert job_states.claim(store, queued.id, "w", 30).job is None
    with pytest.raises(JobConflictError):
        job_states.request_cancel(store, queued.id)
    running = new_job(store)
    job_states.claim(store, running.id, "w", 30)
    flagged = job_states.request_cancel(store, running.id)
    assert flagged.status == JobStatus.RUNNING and flagged.cancel_requested


def test_reconciler_reenqueues_only_what_the_broker_lost(store: JobStore) -> None:
    lost = new_job(store, enqueued_at=time.time() - 60)
    held = new_job(store, enqueued_at=time.time() - 60)
    fresh = new_job(store, enqueued_at=time.time())
    enqueued: list[str] = []
    fixed = job_states.reconcile(store, lambda j: enqueued.append(j.id), lambda jid: jid == held.id, after_s=30)
    assert lost.id in fixed and held.id not in fixed and fresh.id not in fixed
    assert lost.id in enqueued


def test_idempotency_key_returns_the_first_job(store: JobStore) -> None:
    a, created_a = store.create_job(Job(id="ftjob-idem-a", tenant="t9", model="m"), "key-1")
    b, created_b = store.create_job(Job(id="ftjob-idem-b", tenant="t9", model="m"), "key-1")
    c, created_c = store.create_job(Job(id="ftjob-idem-c", tenant="t8", model="m"), "key-1")  # other tenant
    assert created_a and not created_b and created_c
    assert b.id == a.id and c.id == "ftjob-idem-c"
    assert [j.id for j in store.list_jobs("t9")[0]] == ["ftjob-idem-a"]


def test_events_page_newest_first_with_cursor(store: JobStore) -> None:
    job = new_job(store)
    for i in range(5):
        store.add_event(job.id, f"e{i}")
    page, more = store.events_page(job.id, limit=2)
    assert [(e.seq, e.message) for e in page] == [(5, "e4"), (4, "e3")] and more
    nxt, more = store.events_page(job.id, before=page[-1].seq, limit=10)
    assert [e.message for e in nxt] == ["e2", "e1", "e0"] and not more
    assert [(e.seq, e.message) for e in store.events_after(job.id, 3)] == [(4, "e3"), (5, "e4")]


def test_checkpoints_read_back_oldest_first_and_as_stored_by_earlier_versions(store: JobStore) -> None:
    job = new_job(store)
    legacy = {  # how a checkpoint was stored before CheckpointRecord: OpenAI's object itself
        "object": "fine_tuning.job.checkpoint",
        "id": f"ftckpt-{job.id.split('-', 1)[-1]}-10",
        "created_at": 1700000000,
        "fine_tuned_model_checkpoint": "ft:m:s:abc:ckpt-step-10",
        "fine_tuning_job_id": job.id,
        "step_number": 10,
        "metrics": {"step": 10, "train_loss": 1.5},
        "bytes": 123,
    }
    store.r.rpush(f"test:job:{job.id}:ckpts", json.dumps(legacy))
    store.add_checkpoint(
        CheckpointRecord(job_id=job.id, step=20, model="ft:m:s:abc:ckpt-step-20", bytes=7), once=("w", 2)
    )
    old, new = store.checkpoints(job.id)
    assert (old.step, old.model, old.metrics["train_loss"], old.bytes) == (10, "ft:m:s:abc:ckpt-step-10", 1.5, 123)
    assert (new.job_id, new.step, new.bytes) == (job.id, 20, 7) and new.created_at > old.created_at


def test_jobs_by_status_counts(store: JobStore, tmp_path: Path) -> None:
    before = store.count_by_status()
    job = new_job(store)
    job_states.request_cancel(store, job.id)
    after = store.count_by_status()
    assert after.get("cancelled", 0) == before.get("cancelled", 0) + 1


def test_a_stale_attempt_is_fenced_off_the_commit_by_the_real_lease(
    store: JobStore, s3_endpoint: dict[str, str], tmp_path: Path
) -> None:
    """Attempt 1 lost its lease (reaped) and attempt 2 owns the job: attempt 1's publish, fenced by its lease keeper
    against real Redis, commits nothing to the real S3 server and removes its uploads; attempt 2's commits."""
    import uuid

    from sage_ft.storage.manifest import PublishFencedError, publish_model, read_manifest
    from sage_ft.storage.s3 import S3Store, s3_client
    from sage_ft_worker.lease import LeaseKeeper

    objects = S3Store(
        s3_client(s3_endpoint["endpoint"], s3_endpoint["access_key"], s3_endpoint["secret_key"]),
        f"fence-{uuid.uuid4().hex[:8]}",
    )
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"w")
    job = new_job(store)
    assert job_states.claim(store, job.id, "wa", lease_s=0.3).job is not None
    stale = LeaseKeeper(store, job.id, "wa", 0.3, 60, on_flags=lambda _: None)  # its threads are not needed here
    time.sleep(0.4)
    assert job_states.reap(store, enqueue=lambda _: None) == [job.id]
    live = job_states.claim(store, job.id, "wb", lease_s=30).job
    assert live is not None and live.attempt == 2

    with pytest.raises(PublishFencedError):
        publish_model(
            objects,
            "m",
            {"adapter": adapter},
            base_model="b",
            job_id=job.id,
            scope="attempts/1",
            attempt=1,
            fence=stale.holds,
        )
    assert list(objects.list_objects("models/")) == [] and stale.lost.is_set()
    keeper = LeaseKeeper(store, job.id, "wb", 30, 60, on_flags=lambda _: None)
    committed = publish_model(
        objects,
        "m",
        {"adapter": adapter},
        base_model="b",
        job_id=job.id,
        scope="attempts/2",
        attempt=2,
        fence=keeper.holds,
    )
    assert read_manifest(objects, "m") == committed and committed.attempt == 2 and not keeper.lost.is_set()


def test_finished_jobs_leave_redis_after_their_retention_and_active_ones_stay(store: JobStore) -> None:
    done, running = new_job(store, tenant="ret"), new_job(store, tenant="ret")
    for job in (done, running):
        assert job_states.claim(store, job.id, "w", lease_s=30).job is not None
        store.add_event(job.id, "Step 1/2: training loss=1.0")
        store.add_checkpoint(
            CheckpointRecord(job_id=job.id, step=1, model=f"ft:b:s:{job.id}:ckpt-step-1"), once=("w", 1)
        )
    assert job_states.finish(store, done.id, "w", JobStatus.SUCCEEDED) is not None
    ended = store.get_job(done.id).finished_at  # type: ignore[union-attr]
    assert done.id not in store.purge_finished(ended - 1)  # not yet past its retention (others of this module may be)
    assert done.id in store.purge_finished(ended + 1)
    assert store.get_job(done.id) is None
    assert not store.r.exists(*(f"test:job:{done.id}:{part}" for part in ("events", "ckpts", "sent")))
    assert [j.id for j in store.list_jobs("ret")[0]] == [running.id]
    assert store.get_job(running.id) is not None and store.r.exists(f"test:job:{running.id}:events")
    assert running.id not in store.purge_finished(time.time() + 3600)  # a running job is never purged
    assert store.get_job(running.id) is not None


class ReplyDropper:
    """A TCP proxy in front of Redis that passes on the next request naming ``drop_reply_to``'s command, then drops
    the connection instead of its reply: the command ran, its caller never heard (as when Redis restarts between
    running and answering)."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.trigger: bytes | None = None
        self.dropping = threading.Event()
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_reply_to(self, command: str) -> None:
        self.trigger = f"${len(command)}\r\n{command}\r\n".encode()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.dropping.is_set():
                    self.dropping.clear()
                    self.dropped += 1
                    break
                if not replies and self.trigger is not None and self.trigger in data:
                    self.trigger = None
                    self.dropping.set()
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_writer_resending_after_a_lost_reply_appends_its_events_and_checkpoints_once(store: JobStore) -> None:
    """A worker rides out a Redis restart by resending (redis-py's retry, then its own buffer): what the lost call had
    written must not be written twice, while a plain append is (the proxy's fault is real)."""
    job = new_job(store)
    proxy = ReplyDropper(int(store.r.connection_pool.connection_kwargs["port"]))
    try:
        rides = JobStore.from_url(proxy.url, prefix="test", ride_out_s=2)
        rides.add_events(job.id, [event_record("first")], once=("w1", 1))  # connected, the script loaded
        proxy.drop_reply_to("RPUSH")
        assert rides.add_events(job.id, [event_record("plain")]) == 3  # ran twice: the fault this guards against
        assert proxy.dropped == 1
        proxy.drop_reply_to("EVALSHA")
        records = [event_record(f"step {i}") for i in (2, 3)]
        assert rides.add_events(job.id, records, once=("w1", 2)) == 5
        assert proxy.dropped == 2
        # the retries ran out and the worker's buffer resends the same records with a newer one behind them
        assert rides.add_events(job.id, [*records, event_record("step 4")], once=("w1", 2)) == 6
        assert rides.add_events(job.id, [event_record("other")], once=("w2", 1)) == 7  # another writer's own count
        messages = [e.message for e in store.events_after(job.id)]
        assert messages == ["first", "plain", "plain", "step 2", "step 3", "step 4", "other"]

        ckpt = CheckpointRecord(job_id=job.id, step=4, model=f"ft:b:s:{job.id}:ckpt-step-4")
        proxy.drop_reply_to("EVALSHA")
        rides.add_checkpoint(ckpt, once=("w1", 1))
        rides.add_checkpoint(ckpt, once=("w1", 1))
        assert proxy.dropped == 3 and [c.step for c in store.checkpoints(job.id)] == [4]
    finally:
        proxy.close()


def test_a_transition_whose_reply_was_lost_is_still_the_callers(store: JobStore) -> None:
    """Redis ran the EXEC that finished the job, then the connection dropped: the retried transaction finds the
    record as it wrote it, so the worker still owns its success (None would make it discard its own evaluation), and
    what the transition counts (finished jobs, the webhook outbox) is counted once."""
    job = new_job(store)
    assert job_states.claim(store, job.id, "w", lease_s=30).job is not None
    proxy = ReplyDropper(int(store.r.connection_pool.connection_kwargs["port"]))
    try:
        rides = JobStore.from_url(proxy.url, prefix="test", ride_out_s=2)
        finished = int(store.r.hget("test:stats:finished", "succeeded") or 0)
        outbox = store.r.xlen("test:webhooks:outbox")
        proxy.drop_reply_to("EXEC")
        done = job_states.finish(rides, job.id, "w", JobStatus.SUCCEEDED, fine_tuned_model="ft:m:x")
        assert proxy.dropped == 1
        assert done is not None and done.status == JobStatus.SUCCEEDED and done.fine_tuned_model == "ft:m:x"
        assert int(store.r.hget("test:stats:finished", "succeeded")) == finished + 1
        assert store.r.xlen("test:webhooks:outbox") == outbox + 1
        # a transition another writer made is still not this caller's
        other = new_job(store)
        assert job_states.claim(store, other.id, "w", lease_s=30).job is not None
        assert job_states.finish(store, other.id, "w", JobStatus.FAILED) is not None
        assert job_states.finish(rides, other.id, "w", JobStatus.FAILED) is None
    finally:
        proxy.close()
