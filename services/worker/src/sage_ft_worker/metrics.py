"""Worker metrics. The solo pool runs tasks in the worker process, so a per-worker HTTP port serves them."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

STEPS = Counter("sage_ft_train_steps_total", "Optimizer steps completed by this worker's trainers.")
# Per job: a worker trains one job at a time and drops the series when it ends, so this stays one series a worker.
LOSS = Gauge("sage_ft_train_loss", "Latest training loss of the job this worker is running.", ["job"])
TOKENS_PER_SECOND = Gauge("sage_ft_train_tokens_per_second", "Latest training throughput of the running job.", ["job"])
GPU_MEMORY = Gauge("sage_ft_train_gpu_memory_bytes", "Peak GPU memory of the running job's trainer (GPU only).",
                   ["job"])  # fmt: skip
JOB_METRICS = (LOSS, TOKENS_PER_SECOND, GPU_MEMORY)
JOB_DURATION = Histogram(
    "sage_ft_job_duration_seconds",
    "Wall time of a train task attempt, by outcome.",
    ["outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
CHECKPOINT_UPLOAD = Histogram(
    "sage_ft_checkpoint_upload_seconds",
    "Time to upload and verify one checkpoint.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DUPLICATE_DELIVERIES = Counter(
    "sage_ft_duplicate_deliveries_total", "Task deliveries that found the job already taken or finished."
)


def forget_job(job_id: str) -> None:
    """Drop a finished job's series."""
    for gauge in JOB_METRICS:
        with contextlib.suppress(KeyError):
            gauge.remove(job_id)


def serve(host: str, port: int) -> None:
    if port:
        start_http_server(port, addr=host)
