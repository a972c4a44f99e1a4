"""One delivery of an eval run: ask serving for each item's answer, grade it, store it, with bounded concurrency.

Serving is asked, not a model loaded here, so the vLLM server and its hot-loaded adapters are reused, and a base
model and its fine-tunes share one server. The run's lease is renewed on a thread of its own; the reaper hands the
run to another worker if this one dies. Items already graded are skipped (the store writes each index once), so a
resumed run grades only the rest. A cancel (or the run's deletion) is seen within half a second, after an answer.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
import redis

from sage_ft.evals import run_states
from sage_ft.evals.items import load_rows
from sage_ft.evals.runs import FileContentSource, GradedItem, RunRequest, criteria_of, grade_item, prompt
from sage_ft.evals.runstore import ACTIVE_RUN, EvalRun, RunStore
from sage_ft.evals.store import EvalStore
from sage_ft.graders import AnyGrader, Grading, python_sandbox
from sage_ft.graders.serving import ServingModels, chat_completion, error_message
from sage_ft_worker import metrics
from sage_ft_worker.context import WorkerContext

log = logging.getLogger(__name__)
STATUS_EVERY_S = 0.5  # how often a running eval reads its status (a cancel, a deletion)


class ModelUnavailableError(Exception):
    """Serving says the run's model does not exist (or is not the tenant's): no item can be answered."""


class _Lease:
    """Renews the run's lease every heartbeat; ``lost`` is set when it is someone else's or could not be renewed
    for a whole lease."""

    def __init__(self, runs: RunStore, run_id: str, owner: str, lease_s: float, every_s: float) -> None:
        self.runs, self.run_id, self.owner, self.lease_s, self.every_s = runs, run_id, owner, lease_s, every_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.every_s):
            try:
                if not self.runs.renew(self.run_id, self.owner, self.lease_s):
                    log.warning("eval run %s: lease lost; stopping", self.run_id)
                    self.lost.set()
                    return
                renewed = time.monotonic()
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() - renewed >= self.lease_s:
                    self.lost.set()
                    return


class EvalRunner:
    def __init__(self, ctx: WorkerContext, run_id: str) -> None:
        self.ctx, self.run_id = ctx, run_id
        self.runs = RunStore(ctx.jobs)
        self.settings = ctx.settings.worker
        self.owner = self.settings.name

    def run(self) -> str:
        current = self.runs.get(self.run_id)
        if current is None or current.status not in ACTIVE_RUN:
            metrics.DUPLICATE_DELIVERIES.inc()
            return current.status if current else "deleted"
        jobs = self.ctx.settings.jobs
        if not self.runs.claim(self.run_id, self.owner, jobs.lease_seconds):
            metrics.DUPLICATE_DELIVERIES.inc()
            return "taken"
        try:
            with _Lease(self.runs, self.run_id, self.owner, jobs.lease_seconds, jobs.heartbeat_seconds) as lease:
                run = run_states.start(self.runs, self.run_id)
                outcome = self._execute(run, lease) if run is not None else "gone"
        except KeyError:
            outcome = "deleted"  # the run (or its eval) was deleted while it ran
        finally:
            self.runs.release(self.run_id, self.owner)
        metrics.EVAL_RUNS.labels(outcome).inc()
        return outcome

    def _fail(self, code: str, message: str) -> str:
        run_states.finish(self.runs, self.run_id, "failed", {"code": code, "message": message})
        self.runs.add_event(self.run_id, message, level="error", type="failed")
        return "failed"

    def _execute(self, run: EvalRun, lease: _Lease) -> str:
        record = EvalStore(self.ctx.jobs).get(run.tenant, run.eval_id)
        if record is None:
            return self._fail("eval_not_found", f"The eval {run.eval_id} was deleted.")
        request = RunRequest.model_validate({"data_source": run.data_source})
        scratch = Path(tempfile.mkdtemp(prefix="eval-", dir=self._work_dir()))
        try:
            rows = self._rows(run, request, record.item_schema, scratch)
        except Exception as err:  # the file vanished or no longer matches: nothing can be graded
            return self._fail("invalid_file", f"The run's rows could not be read: {err}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        done = self.runs.done_indices(self.run_id)
        todo = [i for i in range(len(rows)) if i not in done]
        self.runs.add_event(
            self.run_id,
            f"attempt {run.attempts} on {self.owner}: {len(done)} of {len(rows)} items "
            f"already graded, {len(todo)} to go",
            type="started",
            data={"attempt": run.attempts, "done": len(done), "total": len(rows)},
        )
        criteria = criteria_of(record.testing_criteria)
        try:
            stopped = self._grade_all(run, request, criteria, rows, todo, lease)
        except ModelUnavailableError as err:
            return self._fail("model_not_found", str(err))
        if stopped:
            return stopped
        ended = run_states.finish(self.runs, self.run_id, "completed")
        counts = self.runs.counts(self.run_id)
        self.runs.add_event(
            self.run_id,
            f"run {ended.status}: {counts.get('passed', 0)} passed, "
            f"{counts.get('failed', 0)} failed, {counts.get('errored', 0)} errored",
            type=ended.status,
            data=counts,
        )
        return ended.status

    def _work_dir(self) -> Path:
        work = self.ctx.settings.work_dir
        work.mkdir(parents=True, exist_ok=True)
        return work

    def _rows(self, run: EvalRun, request: RunRequest, schema: dict[str, Any], scratch: Path) -> list[dict]:
        source = request.data_source.source
        if isinstance(source, FileContentSource):
            return source.content
        path = self.ctx.tenant_store(run.tenant).get_file(f"files/{source.id}", scratch / "rows.jsonl")
        return load_rows(path, schema)

    def _grade_all(
        self,
        run: EvalRun,
        request: RunRequest,
        criteria: list[AnyGrader],
        rows: list[dict],
        todo: list[int],
        lease: _Lease,
    ) -> str | None:
        """Grade ``todo`` with at most ``eval_concurrency`` answers in flight; the reason it stopped early, if it
        did (canceled, deleted, lease lost). Model graders ask serving as the run's tenant."""
        limit = self.settings.eval_concurrency
        pending: set[Future[GradedItem]] = set()
        graders = self.ctx.settings.graders
        models = ServingModels(self.settings.serving_url, run.tenant, graders.model_timeout_seconds)
        grading = Grading(models, python_sandbox(graders, self.settings.serving_url))
        queue = iter(todo)
        stopped: str | None = None
        next_check = time.monotonic() + STATUS_EVERY_S
        headers = {"X-Sage-Tenant": run.tenant}
        timeout = httpx.Timeout(self.settings.eval_request_seconds, connect=10.0)
        with (
            httpx.Client(base_url=self.settings.serving_url, headers=headers, timeout=timeout) as client,
            ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"eval-{run.id}") as pool,
            contextlib.closing(models),
        ):
            while True:
                while stopped is None and len(pending) < limit and (index := next(queue, None)) is not None:
                    job = (client, grading, run, request, criteria, index, rows[index])
                    pending.add(pool.submit(self._grade_one, *job))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    graded = future.result()  # ModelUnavailableError ends the run
                    if self.runs.add_item(self.run_id, graded):
                        metrics.EVAL_ITEMS.labels(graded.status).inc()
                if lease.lost.is_set():
                    stopped = "lease lost"
                elif time.monotonic() >= next_check or not pending:  # a cancel is seen within STATUS_EVERY_S
                    next_check = time.monotonic() + STATUS_EVERY_S
                    stopped = self._stopped()
        return stopped

    def _stopped(self) -> str | None:
        """Why the run must stop now (canceled, failed, deleted), or None."""
        status = self.runs.status(self.run_id)
        if status is None:
            return "deleted"
        return None if status == "in_progress" else status

    def _grade_one(
        self,
        client: httpx.Client,
        grading: Grading,
        run: EvalRun,
        request: RunRequest,
        criteria: list[AnyGrader],
        index: int,
        row: dict[str, Any],
    ) -> GradedItem:
        item = row["item"]
        messages = prompt(request, item)
        params = request.data_source.sampling_params
        body: dict[str, Any] = {
            "model": run.serve_as or run.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_completion_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        started = time.perf_counter()
        text, error, extra = None, None, {}
        try:
            answer = chat_completion(client, body, self.settings.eval_request_seconds)
            choice = answer["choices"][0]
            text = choice["message"].get("content") or ""
            extra = {"finish_reason": choice.get("finish_reason"), "usage": answer.get("usage")}
        except httpx.HTTPStatusError as err:
            if err.response.status_code == 404:
                raise ModelUnavailableError(
                    f"Serving does not know the model '{run.model}': {error_message(err.response)}"
                ) from None
            error = f"serving answered {err.response.status_code}: {error_message(err.response)}"
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as err:
            error = f"{type(err).__name__}: {err}"
        graded = grade_item(grading, criteria, index, item, messages, text, run.model, error)
        graded.sampling = {
            **extra,
            "max_completion_tokens": params.max_completion_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        metrics.EVAL_ITEM_SECONDS.observe(time.perf_counter() - started)
        return graded
