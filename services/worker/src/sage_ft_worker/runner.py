"""One delivery of a ``train`` task: claim → fetch data → train in a child → events and checkpoints → publish.

The lease decides who trains, not the broker: a delivery that finds the job taken or finished leaves at once.
Checkpoints go to the object store as they appear, so a redelivery after a lost worker resumes from the newest
committed one. The adapter is published with its manifest last, and only then is the job marked succeeded.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_ft.data.builtin import builtin_dataset_path
from sage_ft.jobs import lifecycle
from sage_ft.jobs.model import Job, JobError, JobStatus, fine_tuned_model_name
from sage_ft.jobs.spec import JobRequest, build_training_config
from sage_ft.jobs.store import event_record
from sage_ft.presets import PresetConfigs
from sage_ft.proc import call_at_lower_priority, stop, tail, wait_exit
from sage_ft.storage import ObjectStore, publish_model
from sage_ft.storage.checkpoints import committed_steps, delete_checkpoints, fetch_checkpoint, upload_checkpoint
from sage_ft_worker import metrics
from sage_ft_worker.context import WorkerContext
from sage_ft_worker.launcher import launch, trainer_command
from sage_ft_worker.trainer_main import EVENTS, RESULT, STOP

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
    offset: int = 0
    last_uploaded: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # events not yet sent to the job store
    eta: float | None = None  # newest ETA in seconds, not yet written to the job
    started: float = field(default_factory=time.monotonic)
    extra: dict[str, Any] = field(default_factory=dict)


class TrainRunner:
    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.owner = ctx.settings.worker.name
        self.lease_s = ctx.settings.jobs.lease_seconds

    # -- entry ------------------------------------------------------------------------------------------------

    def run(self) -> str:
        claim = lifecycle.claim(self.ctx.jobs, self.job_id, self.owner, self.lease_s)
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
            lifecycle.finish(self.ctx.jobs, job.id, self.owner, JobStatus.FAILED,
                             JobError(code="worker_error", message=reason))  # fmt: skip
            self.ctx.jobs.add_event(job.id, f"Job failed: {reason}", level="error")
        elif lifecycle.finish(self.ctx.jobs, job.id, self.owner, JobStatus.QUEUED, enqueued_at=0.0):
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
        preset = spec.preset or self.ctx.settings.worker.preset
        if preset == "auto":
            choice = PresetConfigs.choose()
            preset = choice.name
            self.ctx.jobs.add_event(job.id, f"Preset auto: {choice.name} ({choice.reason})")
        config, hyper = build_training_config(
            spec,
            preset=preset,
            data_path=str(train_path),
            output_dir=str(workdir / "out"),
            validation_path=str(val_path) if val_path else None,
            run_id=job.id,
        )
        config.save(workdir / "config.yaml")
        run.extra["config"] = config.model_dump(mode="json", exclude={"data_path", "output_dir", "validation_file"})
        self.ctx.jobs.update(job.id, lambda j: _set(j, hyperparameters=hyper))
        steps = committed_steps(store, job.id)
        if steps:
            fetch_checkpoint(store, job.id, steps[-1], workdir / "out" / "checkpoints" / f"checkpoint-{steps[-1]}")
            run.last_uploaded = steps[-1]
            self.ctx.jobs.add_event(job.id, f"Resuming from checkpoint at step {steps[-1]}")

    def _train(self, job: Job) -> str:
        store = self.ctx.tenant_store(job.tenant)
        workdir = self.ctx.settings.work_dir / job.id
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        run = _Run(job=job, store=store, workdir=workdir, spec=JobRequest.model_validate(job.spec))
        try:
            self._prepare(run)
        except Exception as err:
            from sage_ft.errors import SageFTError
            from sage_ft.storage import StorageError

            if isinstance(err, SageFTError) and not isinstance(err, StorageError):
                return self._fail(run, "invalid_request", str(err))
            raise
        t_launch = time.monotonic()
        proc = launch(trainer_command(self.ctx.settings.worker.nproc, ["--workdir", str(workdir)]),
                      workdir / "trainer.log", workdir)  # fmt: skip
        try:  # the trainer got the worker's priority; watching it runs below that, so it never slows training
            lost = call_at_lower_priority(lambda: self._monitor(run, proc), self.ctx.settings.worker.monitor_nice)
        finally:
            stop(proc)
        if lost:
            return "lease lost"
        t_exit = time.monotonic()
        self._drain(run)
        outcome = self._conclude(run, proc.returncode)
        log.info("job %s: %s; prepare %.2fs, trainer %.2fs, conclude %.2fs", job.id, outcome,
                 t_launch - run.started, t_exit - t_launch, time.monotonic() - t_exit)  # fmt: skip
        return outcome

    def _monitor(self, run: _Run, proc: Any) -> bool:
        """Forward progress until the child exits; True if our lease was lost (someone else owns the job now)."""
        poll = self.ctx.settings.worker.poll_seconds
        every = self.ctx.settings.jobs.heartbeat_seconds
        last_beat = time.monotonic()
        while proc.poll() is None:
            self._drain(run)
            if time.monotonic() - last_beat >= every:
                last_beat = time.monotonic()
                beat = lifecycle.heartbeat(self.ctx.jobs, run.job.id, self.owner, self.lease_s, step=run.step,
                                           total_steps=run.total_steps, trained_tokens=run.tokens or None)  # fmt: skip
                if beat is None:
                    log.warning("job %s: lease lost; stopping the trainer without side effects", run.job.id)
                    return True
            if run.stop_reason is None:
                current = self.ctx.jobs.get_job(run.job.id)
                if current is not None and (current.cancel_requested or current.pause_requested):
                    run.stop_reason = "cancel" if current.cancel_requested else "pause"
                    (run.workdir / STOP).touch()
                    if run.stop_reason == "pause":
                        self.ctx.jobs.add_event(run.job.id, f"Pausing at step {run.step}: saving a checkpoint")
            wait_exit(proc, poll)  # returns the moment the trainer exits, not at the next tick
        return False

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
        self.ctx.jobs.add_events(run.job.id, run.pending)
        run.pending = []
        if run.eta is not None:
            step, eta = run.step, time.time() + run.eta
            self.ctx.jobs.update(run.job.id, lambda j: _set(j, step=step, estimated_finish=eta))
            run.eta = None

    def _on_event(self, run: _Run, ev: dict[str, Any]) -> None:
        run.total_steps = int(ev.get("total_steps") or run.total_steps)
        run.tokens = int(ev.get("tokens_seen") or run.tokens)
        kind, step = ev["kind"], int(ev["step"])
        if kind == "start":
            run.pending.append(event_record(f"Training started at step {step} of {run.total_steps}"))
        elif kind == "log" and ev.get("loss") is not None:
            if step > run.step:
                metrics.STEPS.inc(step - run.step)
            run.step, run.loss = step, float(ev["loss"])
            metrics.LOSS.labels(job=run.job.id).set(run.loss)
            if ev.get("tokens_per_second"):
                metrics.TOKENS_PER_SECOND.labels(job=run.job.id).set(float(ev["tokens_per_second"]))
            if ev.get("metrics", {}).get("gpu_memory_bytes"):
                metrics.GPU_MEMORY.labels(job=run.job.id).set(float(ev["metrics"]["gpu_memory_bytes"]))
            data = {"step": step, "total_steps": run.total_steps, "train_loss": run.loss,
                    "learning_rate": ev.get("learning_rate"), "tokens_per_second": ev.get("tokens_per_second"),
                    "eta_seconds": ev.get("eta_seconds"), "epoch": ev.get("epoch")}  # fmt: skip
            run.pending.append(event_record(f"Step {step}/{run.total_steps}: training loss={run.loss:.4f}",
                                            type="metrics", data=data))  # fmt: skip
            if ev.get("eta_seconds") is not None:
                run.eta = float(ev["eta_seconds"])
        elif kind == "checkpoint" and ev.get("checkpoint") and run.stop_reason != "cancel":
            self._flush(run)  # the steps up to the checkpoint come before its event
            self._upload_checkpoint(run, step, Path(ev["checkpoint"]))

    def _upload_checkpoint(self, run: _Run, step: int, local: Path) -> None:
        """Upload the trainer's staged copy of a checkpoint (see trainer_main.FileProgress), then drop the copy."""
        if step <= run.last_uploaded or not local.is_dir():
            shutil.rmtree(local, ignore_errors=True)
            return
        t0 = time.monotonic()
        try:
            size = upload_checkpoint(run.store, run.job.id, step, local)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        metrics.CHECKPOINT_UPLOAD.observe(time.monotonic() - t0)
        run.last_uploaded = step
        job = run.job
        name = fine_tuned_model_name(job.model, job.suffix, job.id)
        self.ctx.jobs.add_checkpoint(job.id, {
            "object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{job.id.split('-', 1)[-1]}-{step}",
            "created_at": int(time.time()), "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}",
            "fine_tuning_job_id": job.id, "step_number": step,
            "metrics": {"step": step, "train_loss": run.loss}, "bytes": size,
        })  # fmt: skip
        self.ctx.jobs.add_event(job.id, f"Checkpoint at step {step} uploaded ({size / 1e6:.1f} MB)")

    # -- the end ----------------------------------------------------------------------------------------------

    def _fail(self, run: _Run, code: str, message: str) -> str:
        lifecycle.finish(self.ctx.jobs, run.job.id, self.owner, JobStatus.FAILED,
                         JobError(code=code, message=message))  # fmt: skip
        self.ctx.jobs.add_event(run.job.id, f"Job failed: {message}", level="error")
        return "failed"

    def _conclude(self, run: _Run, returncode: int | None) -> str:
        job, jobs = run.job, self.ctx.jobs
        result_path = run.workdir / RESULT
        result = json.loads(result_path.read_text()) if result_path.exists() else None
        if result is None:
            log_tail = tail(run.workdir / "trainer.log")
            if job.attempt < job.max_attempts:
                lifecycle.finish(jobs, job.id, self.owner, JobStatus.QUEUED, enqueued_at=0.0)
                jobs.add_event(job.id, f"Trainer exited with {returncode} and no result; re-queued", level="warn")
                return "requeued"
            return self._fail(run, "trainer_crashed", f"the trainer exited with {returncode}: {log_tail}")
        if result["status"] == "error":
            return self._fail(run, result["error"]["code"], result["error"]["message"])
        current = jobs.get_job(job.id)
        cancel = run.stop_reason == "cancel" or (current is not None and current.cancel_requested)
        if cancel:
            delete_checkpoints(run.store, job.id)
            lifecycle.finish(jobs, job.id, self.owner, JobStatus.CANCELLED)
            jobs.add_event(job.id, f"Job cancelled at step {result['global_step']}; nothing was published")
            return "cancelled"
        if result["status"] == "stopped":
            status = lifecycle.finish_pause(jobs, job.id, self.owner, result["global_step"])
            if status == JobStatus.QUEUED:
                jobs.add_event(job.id, f"Resumed while pausing at step {result['global_step']}; re-queued to "
                                       "continue from that checkpoint")  # fmt: skip
                return "requeued"
            jobs.add_event(job.id, f"Job paused at step {result['global_step']}; resume continues from there")
            return "paused"
        return self._publish(run, result)

    def _publish(self, run: _Run, result: dict[str, Any]) -> str:
        job, jobs = run.job, self.ctx.jobs
        name = fine_tuned_model_name(job.model, job.suffix, job.id)
        parts = {"adapter": run.workdir / "out" / "adapter"}
        logs = run.workdir / "out" / "logs"
        if logs.is_dir() and any(p.is_file() for p in logs.rglob("*")):
            parts["logs"] = logs  # TensorBoard event files, published with the model
        publish_model(
            run.store, name, parts, base_model=job.model, job_id=job.id,
            alias=run.spec.name, training=run.extra.get("config", {}),
            metrics={"train_loss": result.get("train_loss"), "global_step": result["global_step"],
                     "trained_tokens": result.get("trained_tokens")},
        )  # fmt: skip
        done = lifecycle.finish(jobs, job.id, self.owner, JobStatus.SUCCEEDED, fine_tuned_model=name,
                                trained_tokens=result.get("trained_tokens"), step=result["global_step"],
                                total_steps=result["total_steps"])  # fmt: skip
        if done is None:
            log.warning("job %s: published %s but the lease had moved on", job.id, name)
            return "lease lost"
        jobs.add_event(job.id, f"New fine-tuned model created: {name}")
        jobs.add_event(job.id, "The job has successfully completed")
        shutil.rmtree(run.workdir, ignore_errors=True)
        return "succeeded"


def _set(job: Job, **fields: Any) -> Job:
    for key, value in fields.items():
        setattr(job, key, value)
    return job
