"""What a worker process holds: settings, the job store and the object store, built once per process."""

from __future__ import annotations

from functools import cached_property

from sage_ft.jobs import JobStore
from sage_ft.storage import ObjectStore, make_store
from sage_ft.storage.scoped import tenant_store
from sage_ft_worker.settings import Settings
from sage_ft_worker.spare import SpareTrainer


class WorkerContext:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    @cached_property
    def jobs(self) -> JobStore:
        jobs = self.settings.jobs
        return JobStore.from_url(jobs.redis_url.get_secret_value(), jobs.key_prefix, ride_out_s=jobs.lease_seconds / 2)

    @cached_property
    def store(self) -> ObjectStore:
        return make_store(self.settings.storage)

    @cached_property
    def spare(self) -> SpareTrainer:
        worker = self.settings.worker
        return SpareTrainer(self.settings.work_dir, enabled=worker.spare_trainer and worker.nproc == 1)

    def tenant_store(self, tenant: str) -> ObjectStore:
        return tenant_store(self.store, tenant)
