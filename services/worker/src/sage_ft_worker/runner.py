"""One delivery of a ``train`` task: claim → fetch data → train in a child → events and checkpoints → publish.

The lease decides who trains, not the broker: a delivery that finds the job taken or finished leaves at once. The
lease is renewed on a thread of its own (``lease.LeaseKeeper``) that never waits on storage, and survives Redis
blips. Checkpoints go to the object store as they appear, so a redelivery after a lost worker resumes from the
newest committed one; a failed checkpoint upload is retried with the next one and never ends the attempt. The
adapter is uploaded under this attempt's own keys, and the manifest commit is fenced by the lease: a stale attempt
commits nothing. Only after the commit is the job marked succeeded, and only then is superseded output removed.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_ft.config import TrainingConfig
from sage_ft.data.builtin import builtin_dataset_path
from sage_ft.fsutil import disk_full_reason
from sage_ft.jobs import job_states
from sage_ft.jobs.model import CheckpointRecord, Job, JobError, JobStatus, fine_tuned_model_name
from sage_ft.jobs.secrets import SecretBox
from sage_ft.jobs.spec import JobRequest, build_training_config
from sage_ft.jobs.store import event_record
from sage_ft.packing import describe_setup
from sage_ft.presets import PresetConfigs
from sage_ft.proc import call_at_lower_priority, describe_exit, peak_rss, stop, tail, wait_exit
from sage_ft.storage import ObjectStore, publish_model
from sage_ft.storage.base import AccessDeniedError, PreconditionFailedError, StorageError
from sage_ft.storage.checkpoints import (
    begin_attempt,
    commit_checkpoint,
    delete_checkpoints,
    fetch_checkpoint,
    remove_uncommitted,
)
from sage_ft.storage.manifest import PublishFencedError, collect_garbage, delete_model
from sage_ft_worker import job_eval, metrics
from sage_ft_worker.context import WorkerContext
from sage_ft_worker.lease import REDIS_DOWN, LeaseKeeper
from sage_ft_worker.lineage import checkpoint_record, fetch_parent, named_metrics
from sage_ft_worker.publishing import publish_with_retries
from sage_ft_worker.spare import start_trainer
from sage_ft_worker.trainer_files import EVENTS, RESULT, STOP

log = logging.getLogger(__name__)


@dataclass
class _Run:
    job: Job
    store: ObjectStore
    workdir: Path
    spec: JobRequest
    total_steps: int = 0
    step: int = 0
    tokens: int = 0
    loss: float | None = None
    stop_reason: str | None = None  # "cancel" | "pause"
    stop_requested_at: int | None = None  # the step forwarded when the flag arrived
    offset: int = 0
    last_uploaded: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # events not yet sent to the job store
    # this run's name as a writer of events and checkpoints, and how many of each it has sent: a batch resent after
    # a lost reply (Redis restarted mid-call) is appended once (``JobStore.add_events``'s ``once``)
    writer: str = field(default_factory=lambda: uuid.uuid4().hex)
    events_sent: int = 0
    checkpoints_made: int = 0
    unsent_checkpoints: list[tuple[int, CheckpointRecord]] = field(default_factory=list)  # (its number, it), in order
    eta: float | None = None  # newest ETA in seconds, not yet written to the job
    training: dict[str, Any] | None = None  # the trainer's batch layout, not yet written to the job
    started: float = field(default_factory=time.monotonic)
    extra: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)  # newest named metrics (accuracy, rewards, valid loss)
    keeper: LeaseKeeper | None = None
    peak_rss: int = 0  # the trainer's peak resident memory, sampled while it runs (the kernel's high-water mark)
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)  # for the trainer's environment only


class TrainRunner:
    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.owner = ctx.settings.worker.name
        self.lease_s = ctx.settings.jobs.lease_seconds
        self._flags_lock = threading.Lock()

    # -- entry ------------------------------------------------------------------------------------------------

    def run(self) -> str:
        claim = job_states.claim(self.ctx.jobs, self.job_id, self.owner, self.lease_s)
        if claim.job is None:
            metrics.DUPLICATE_DELIVERIES.inc()
            log.info("job %s: delivery skipped (%s)", self.job_id, claim.reason)
            return f"skipped: {claim.reason}"
        job = claim.job
        started = time.monotonic()
        self.ctx.jobs.add_event(job.id, f"Attempt {job.attempt} started on worker {self.owner}")
        outcome = "error"
        try:
            outcome = self._train(job)
            return outcome
        except AccessDeniedError as err:  # revoked or wrong storage credentials: every retry would meet the same
            log.error("job %s: attempt %d: %s", job.id, job.attempt, err)
            error = JobError(code="storage_access_denied", message=f"{err}; nothing was published")
            job_states.finish(self.ctx.jobs, job.id, self.owner, JobStatus.FAILED, error)
            self.ctx.jobs.add_event(job.id, f"Job failed: {error.message}", level="error")
            outcome = "failed"
            return outcome
        except Exception as err:
            log.exception("job %s: attempt %d failed in the worker", job.id, job.attempt)
            self._requeue_or_fail(job, f"{type(err).__name__}: {err}")
            return "requeued"
        finally:
            metrics.JOB_DURATION.labels(outcome=outcome).observe(time.monotonic() - started)
            metrics.forget_job(job.id)

    def _requeue_or_fail(self, job: Job, reason: str) -> None:
        """A fault outside training (storage down, worker bug): hand the job back; the reconciler re-enqueues it."""
        if job.attempt >= job.max_attempts:
            job_states.finish(
                self.ctx.jobs, job.id, self.owner, JobStatus.FAILED, JobError(code="worker_error", message=reason)
            )
            self.ctx.jobs.add_event(job.id, f"Job failed: {reason}", level="error")
        elif job_states.finish(self.ctx.jobs, job.id, self.owner, JobStatus.QUEUED, enqueued_at=0.0):
            self.ctx.jobs.add_event(job.id, f"Attempt {job.attempt} failed ({reason}); job re-queued", level="warn")

    # -- one attempt ------------------------------------------------------------------------------------------

    def _prepare(self, run: _Run) -> None:
        job, store, workdir, spec = run.job, run.store, run.workdir, run.spec
        data = workdir / "data"
        data.mkdir(parents=True)
        if job.training_file:
            train_path = store.get_file(f"files/{job.training_file}", data / "train.jsonl")
        else:
            train_path = builtin_dataset_path(spec.task or "code")
        val_path = store.get_file(f"files/{job.validation_file}", data / "val.jsonl") if job.validation_file else None
        parent = str(fetch_parent(store, job.parent_model, workdir / "parent")) if job.parent_model else None
        paths = {
            "data_path": str(train_path),
            "output_dir": str(workdir / "out"),
            "validation_file": str(val_path) if val_path else None,
            "init_adapter": parent,
        }
        if job.config is not None:  # resolved by an earlier attempt: the same run, whichever machine this is
            config = TrainingConfig.model_validate({**job.config, **paths})
        else:
            config, hyper = self._resolve(job, spec, paths)
            settled = {"config": config.portable(), "hyperparameters": hyper}
            self.ctx.jobs.update(job.id, lambda j: j.model_copy(update=settled) if j.config is None else None)
        config.save(workdir / "config.yaml")
        run.secret_env = SecretBox(self.ctx.settings.jobs.secrets_key).open(self.ctx.jobs.secrets(job.id))
        if config.method == "rft":  # model graders ask serving, as the job's tenant
            run.secret_env.update(
                SAGE_TRAIN_GRADER_SERVING_URL=self.ctx.settings.worker.serving_url,
                SAGE_TRAIN_GRADER_TENANT=job.tenant,
            )
        run.extra["config"] = config.portable()
        latest = begin_attempt(store, job.id, job.attempt)  # from here on, older attempts commit no checkpoint
        if latest is not None:
            fetch_checkpoint(store, job.id, latest, workdir / "out" / "checkpoints" / f"checkpoint-{latest.step}")
            run.last_uploaded = latest.step
            resumed = {"step": latest.step, "attempt": latest.attempt}
            self.ctx.jobs.add_event(job.id, f"Resuming from checkpoint at step {latest.step}", data=resumed)

    def _resolve(self, job: Job, spec: JobRequest, paths: dict[str, Any]) -> tuple[TrainingConfig, dict[str, Any]]:
        """The job's config, resolved here once: ``auto`` is this worker's accelerator's preset."""
        preset = spec.preset or self.ctx.settings.worker.preset
        if preset == "auto":
            choice = PresetConfigs.choose()
            preset = choice.name
            self.ctx.jobs.add_event(job.id, f"Preset auto: {choice.name} ({choice.reason})")
        return build_training_config(
            spec,
            preset=preset,
            data_path=paths["data_path"],
            output_dir=paths["output_dir"],
            validation_path=paths["validation_file"],
            run_id=job.id,
            base_model=job.base_model,
            init_adapter=paths["init_adapter"],
        )

    def _train(self, job: Job) -> str:
        store = self.ctx.tenant_store(job.tenant)
        workdir = self.ctx.settings.work_dir / job.id
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        run = _Run(job=job, store=store, workdir=workdir, spec=JobRequest.model_validate(job.spec))
        try:
            self._prepare(run)
        except PublishFencedError as err:  # a later attempt already began: this delivery is stale
            log.warning("job %s: attempt %d is stale (%s); leaving", job.id, job.attempt, err)
            return "lease lost"
        except Exception as err:
            from sage_ft.errors import SageFTError
            from sage_ft.storage import StorageError

            if isinstance(err, SageFTError) and not isinstance(err, StorageError):
                return self._fail(run, "invalid_request", str(err))
            raise
        keeper = LeaseKeeper(
            self.ctx.jobs,
            job.id,
            self.owner,
            self.lease_s,
            self.ctx.settings.jobs.heartbeat_seconds,
            on_flags=lambda current: self._on_flags(run, current),
        )
        run.keeper = keeper
        with keeper:
            t_launch = time.monotonic()
            proc = start_trainer(self.ctx.spare, self.ctx.settings.worker.nproc, workdir, run.secret_env)
            try:  # the trainer got the worker's priority; watching it runs below that, so it never slows training
                lost = call_at_lower_priority(lambda: self._monitor(run, proc), self.ctx.settings.worker.monitor_nice)
            finally:
                stop(proc)
                self.ctx.spare.start()  # warms up while this job's output is published
            if lost:
                return "lease lost"
            t_exit = time.monotonic()
            self._drain(run)
            outcome = self._conclude(run, proc.returncode)
        log.info(
            "job %s: %s; prepare %.2fs, trainer %.2fs, conclude %.2fs",
            job.id,
            outcome,
            t_launch - run.started,
            t_exit - t_launch,
            time.monotonic() - t_exit,
        )
        return outcome

    def _monitor(self, run: _Run, proc: Any) -> bool:
        """Forward progress until the child exits; True if our lease was lost (someone else owns the job now).

        Heartbeats and user flags are handled by the lease keeper's threads, so a slow upload here delays neither."""
        assert run.keeper is not None
        while proc.poll() is None:
            run.peak_rss = max(run.peak_rss, peak_rss(proc.pid))
            self._drain(run)
            if run.keeper.lost.is_set():
                return True
            poll = self.ctx.settings.worker.poll_seconds  # finer until step 1, which a user waits for; either way,
            wait_exit(proc, poll if run.step else min(poll, 0.05))  # this returns the moment the trainer exits
        return run.keeper.lost.is_set()

    def _on_flags(self, run: _Run, current: Job) -> None:
        """A cancel or pause arrived (pub/sub or heartbeat): the trainer stops at the end of its current step."""
        with self._flags_lock:  # both keeper threads call this
            if run.stop_reason is not None or not (current.cancel_requested or current.pause_requested):
                return
            run.stop_reason = "cancel" if current.cancel_requested else "pause"
        run.stop_requested_at = run.step
        (run.workdir / STOP).write_text(str(current.stop_requested_at or time.time()))
        if run.stop_reason == "pause":
            run.pending.append(event_record(f"Pausing at step {run.step}: saving a checkpoint"))

    def _drain(self, run: _Run) -> None:
        """Forward what the trainer wrote since the last call: one Redis round trip per batch, not per step."""
        path = run.workdir / EVENTS
        if not path.exists():
            return
        with path.open("rb") as fh:
            fh.seek(run.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        run.offset += end + 1
        for line in chunk[: end + 1].splitlines():
            self._on_event(run, json.loads(line))
        self._flush(run)

    def _flush(self, run: _Run) -> None:
        """Send buffered events; while Redis is away they stay buffered (in order) for the next call."""
        try:
            while run.unsent_checkpoints:
                seq, record = run.unsent_checkpoints[0]
                self.ctx.jobs.add_checkpoint(record, once=(run.writer, seq))
                run.unsent_checkpoints.pop(0)
            if run.pending:
                batch = list(run.pending)
                self.ctx.jobs.add_events(run.job.id, batch, once=(run.writer, run.events_sent + 1))
                run.events_sent += len(batch)
                del run.pending[: len(batch)]
            if run.training is not None:
                training = run.training
                self.ctx.jobs.update(run.job.id, lambda j: j.model_copy(update={"training": training}))
                run.training = None
            if run.eta is not None:
                step, eta = run.step, time.time() + run.eta
                self.ctx.jobs.update(run.job.id, lambda j: j.model_copy(update={"step": step, "estimated_finish": eta}))
                run.eta = None
        except REDIS_DOWN as err:
            log.info(
                "job %s: Redis unavailable (%s); %d events buffered", run.job.id, type(err).__name__, len(run.pending)
            )

    def _on_event(self, run: _Run, ev: dict[str, Any]) -> None:
        run.total_steps = int(ev.get("total_steps") or run.total_steps)
        run.tokens = int(ev.get("tokens_seen") or run.tokens)
        kind, step = ev["kind"], int(ev["step"])
        if kind == "start":
            run.training = ev.get("setup") or None
            message = f"Training started at step {step} of {run.total_steps}"
            if run.training:
                message += f": {describe_setup(run.training)}"
            data = {"setup": run.training, "config": ev.get("config")}  # the config as the trainer loaded it
            run.pending.append(event_record(message, data={k: v for k, v in data.items() if v} or None))
        elif kind == "log" and ev.get("loss") is not None:
            if step > run.step:
                metrics.STEPS.inc(step - run.step)
            run.step, run.loss = step, float(ev["loss"])
            if run.keeper is not None:
                run.keeper.progress = {
                    "step": step,
                    "total_steps": run.total_steps,
                    "trained_tokens": run.tokens or None,
                }
            metrics.LOSS.labels(job=run.job.id).set(run.loss)
            if ev.get("tokens_per_second"):
                metrics.TOKENS_PER_SECOND.labels(job=run.job.id).set(float(ev["tokens_per_second"]))
            if ev.get("metrics", {}).get("gpu_memory_bytes"):
                metrics.GPU_MEMORY.labels(job=run.job.id).set(float(ev["metrics"]["gpu_memory_bytes"]))
            named = named_metrics(ev.get("metrics") or {})
            run.latest.update(named)
            data = {
                "step": step,
                "total_steps": run.total_steps,
                "train_loss": run.loss,
                "learning_rate": ev.get("learning_rate"),
                "tokens_per_second": ev.get("tokens_per_second"),
                "eta_seconds": ev.get("eta_seconds"),
                "epoch": ev.get("epoch"),
                **named,
            }
            rewards = (
                f", reward accuracy={named['reward_accuracy']:.2f}, margin={named['reward_margin']:.3f}"
                if "reward_accuracy" in named and "reward_margin" in named
                else ""
            )
            run.pending.append(
                event_record(
                    f"Step {step}/{run.total_steps}: training loss={run.loss:.4f}{rewards}", type="metrics", data=data
                )
            )
            if ev.get("eta_seconds") is not None:
                run.eta = float(ev["eta_seconds"])
            if ev.get("samples"):  # reinforcement: a few sampled answers and the rewards the grader gave them
                shown = [f"{s['reward']:.2f}: {str(s['answer'])[:60]!r}" for s in ev["samples"]]
                message = f"Sampled answers at step {step} (reward: answer): " + "; ".join(shown)
                run.pending.append(event_record(message, type="samples", data={"step": step, "samples": ev["samples"]}))
        elif kind == "log" and (ev.get("metrics") or {}).get("eval_loss") is not None:
            named = named_metrics(ev["metrics"])
            run.latest.update(named)
            run.pending.append(
                event_record(
                    f"Step {step}/{run.total_steps}: validation loss={named['valid_loss']:.4f}",
                    type="metrics",
                    data={"step": step, **named},
                )
            )
        elif kind == "checkpoint" and ev.get("checkpoint") and run.stop_reason != "cancel":
            self._flush(run)  # the steps up to the checkpoint come before its event
            self._upload_checkpoint(run, step, Path(ev["checkpoint"]))

    def _upload_checkpoint(self, run: _Run, step: int, local: Path) -> None:
        """Upload the trainer's staged copy of a checkpoint (see trainer_main.FileProgress), then drop the copy."""
        if step <= run.last_uploaded or not local.is_dir() or (run.keeper is not None and run.keeper.lost.is_set()):
            shutil.rmtree(local, ignore_errors=True)
            return
        t0 = time.monotonic()
        keeper = run.keeper
        try:
            fence = keeper.holds if keeper is not None else lambda: True
            ckpt = commit_checkpoint(run.store, run.job.id, run.job.attempt, step, local, fence)
        except (PublishFencedError, PreconditionFailedError) as err:  # stale: nothing committed, uploads removed
            log.warning("job %s: checkpoint %d not committed: %s", run.job.id, step, err)
            return
        except AccessDeniedError:
            raise  # ends the attempt: the adapter could not be published either
        except OSError as err:  # a store outage (StorageError) or a vanished file: training goes on, the next
            # checkpoint is uploaded in its place
            log.warning("job %s: checkpoint %d not uploaded: %s", run.job.id, step, err)
            run.pending.append(
                event_record(
                    f"Checkpoint at step {step} could not be uploaded ({err}); training "
                    "continues and the next checkpoint is tried",
                    level="warn",
                )
            )
            return
        finally:
            shutil.rmtree(local, ignore_errors=True)
        metrics.CHECKPOINT_UPLOAD.observe(time.monotonic() - t0)
        size = ckpt.size
        run.last_uploaded = step
        job = run.job
        record = checkpoint_record(job, step, size, {"train_loss": run.loss, **run.latest})
        run.pending.append(
            event_record(
                f"Checkpoint at step {step} uploaded ({size / 1e6:.1f} MB)",
                data={"checkpoint": record.model_dump(include={"step", "model", "bytes"})},
            )
        )
        run.checkpoints_made += 1
        run.unsent_checkpoints.append((run.checkpoints_made, record))
        self._flush(run)  # sent now, or (Redis away) at the next flush

    # -- the end ----------------------------------------------------------------------------------------------

    def _fail(self, run: _Run, code: str, message: str) -> str:
        # the job's model name is its own and it never succeeded: whatever is there (a stale attempt's commit or
        # uploads) goes
        try:
            delete_model(run.store, fine_tuned_model_name(run.job.root_model, run.job.suffix, run.job.id))
        except StorageError as err:  # nothing of it is visible (its job never succeeded); the failure still counts
            log.warning("job %s: could not remove its uploads: %s", run.job.id, err)
        failed = [event_record(f"Job failed: {message}", level="error")]
        error = JobError(code=code, message=message)
        job_states.finish(self.ctx.jobs, run.job.id, self.owner, JobStatus.FAILED, error, events=failed)
        return "failed"

    def _retry_or_fail(self, run: _Run, code: str, reason: str, returncode: int | None, detail: str = "") -> str:
        """An attempt that ended for a reason another attempt may not meet: re-queued while attempts remain, then
        failed with that reason. Bounded by the job's attempts: it never loops."""
        job = run.job
        log.warning("job %s: attempt %d ended: %s", job.id, job.attempt, reason)
        if job.attempt < job.max_attempts:
            job_states.finish(self.ctx.jobs, job.id, self.owner, JobStatus.QUEUED, enqueued_at=0.0)
            message = f"Attempt {job.attempt} of {job.max_attempts} ended: {reason}; re-queued"
            data = {"code": code, "returncode": returncode, "peak_rss_bytes": run.peak_rss}
            self.ctx.jobs.add_event(job.id, message, level="warn", data=data)
            return "requeued"
        return self._fail(run, code, f"{reason} (attempt {job.attempt} of {job.max_attempts}){detail}")

    def _conclude(self, run: _Run, returncode: int | None) -> str:
        job, jobs = run.job, self.ctx.jobs
        result_path = run.workdir / RESULT
        result = json.loads(result_path.read_text()) if result_path.exists() else None
        if result is None:  # the trainer died: a signal (the kernel's OOM killer), a full disk, or a crash
            log_tail = tail(run.workdir / "trainer.log")
            killed = returncode is not None and returncode < 0
            full = None if killed else disk_full_reason(run.workdir, log_text=log_tail)
            if full is not None:
                return self._retry_or_fail(run, "disk_full", full, returncode)
            reason = describe_exit(returncode, run.peak_rss)
            code = "trainer_killed" if killed else "trainer_crashed"
            return self._retry_or_fail(run, code, reason, returncode, detail="" if killed else f": {log_tail}")
        if result["status"] == "error":
            if result["error"]["code"] == "disk_full":  # another attempt, maybe on another worker, may have room
                return self._retry_or_fail(run, "disk_full", result["error"]["message"], returncode)
            return self._fail(run, result["error"]["code"], result["error"]["message"])
        current = jobs.get_job(job.id)
        cancel = run.stop_reason == "cancel" or (current is not None and current.cancel_requested)
        if cancel:
            delete_checkpoints(run.store, job.id)
            jobs.clear_checkpoints(job.id)  # the listing and the store agree: both empty
            delete_model(run.store, fine_tuned_model_name(job.root_model, job.suffix, job.id))
            job_states.finish(jobs, job.id, self.owner, JobStatus.CANCELLED)
            latency = {"step": result["global_step"], "stop_latency_steps": result.get("stop_latency_steps")}
            jobs.add_event(
                job.id, f"Job cancelled at step {result['global_step']}; nothing was published", data=latency
            )
            return "cancelled"
        if result["status"] == "stopped":
            status = job_states.finish_pause(jobs, job.id, self.owner, result["global_step"])
            if status == JobStatus.QUEUED:
                jobs.add_event(
                    job.id,
                    f"Resumed while pausing at step {result['global_step']}; re-queued to "
                    "continue from that checkpoint",
                )
                return "requeued"
            jobs.add_event(job.id, f"Job paused at step {result['global_step']}; resume continues from there")
            return "paused"
        return self._publish(run, result)

    def _publish(self, run: _Run, result: dict[str, Any]) -> str:
        job, jobs = run.job, self.ctx.jobs
        name = fine_tuned_model_name(job.root_model, job.suffix, job.id)
        parts = {"adapter": run.workdir / "out" / "adapter"}
        logs = run.workdir / "out" / "logs"
        if logs.is_dir() and any(p.is_file() for p in logs.rglob("*")):
            parts["logs"] = logs  # TensorBoard event files, published with the model
        keeper = run.keeper
        assert keeper is not None
        self._flush(run)
        jobs.add_event(job.id, f"Publishing {name} (attempt {job.attempt})")
        evaluation = job_eval.record(jobs, job, name, result["evaluation"]) if result.get("evaluation") else None
        try:
            publish_with_retries(
                lambda: publish_model(
                    run.store,
                    name,
                    parts,
                    base_model=job.root_model,
                    job_id=job.id,
                    alias=run.spec.name,
                    training=run.extra.get("config", {}),
                    metrics={
                        "train_loss": result.get("train_loss"),
                        "global_step": result["global_step"],
                        "trained_tokens": result.get("trained_tokens"),
                        **run.latest,
                        **({"evaluation": evaluation} if evaluation else {}),
                    },
                    scope=f"attempts/{job.attempt}",
                    attempt=job.attempt,
                    fence=keeper.holds,
                    parent=job.parent_model,
                ),
                keeper,
                self.ctx.settings.worker.publish_retry_seconds,
                job.id,
            )
        except BaseException as err:
            job_eval.discard(jobs, evaluation, job.tenant)
            if not isinstance(err, PublishFencedError | PreconditionFailedError):
                raise
            log.warning(
                "job %s: attempt %d lost its lease before committing; nothing visible: %s", job.id, job.attempt, err
            )
            return "lease lost"
        final = [event_record(job_eval.describe(evaluation), data=evaluation)] if evaluation else []
        final += [
            event_record(f"New fine-tuned model created: {name}"),
            event_record("The job has successfully completed"),
        ]
        done = job_states.finish(
            jobs,
            job.id,
            self.owner,
            JobStatus.SUCCEEDED,
            events=final,  # with the state: whoever sees the job succeeded sees how it ended
            fine_tuned_model=name,
            trained_tokens=result.get("trained_tokens"),
            train_seconds=result.get("train_seconds"),
            step=result["global_step"],
            total_steps=result["total_steps"],
            evaluation=evaluation,
        )
        if done is None:  # committed, but the job is not ours: hidden until its holder commits over it
            log.warning("job %s: committed %s but the lease had moved on", job.id, name)
            job_eval.discard(jobs, evaluation, job.tenant)
            return "lease lost"
        removed = collect_garbage(run.store, name)  # final: superseded attempts and crash leftovers go
        removed += remove_uncommitted(run.store, job.id)
        if removed:
            log.info("job %s: removed %d superseded objects of %s", job.id, removed, name)
        shutil.rmtree(run.workdir, ignore_errors=True)
        return "succeeded"
