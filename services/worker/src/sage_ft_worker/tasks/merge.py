"""``sage_ft.merge(tenant, model)``: merge a published adapter into its base and add ``merged/`` to the manifest."""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from pathlib import Path

from sage_ft.jobs.broker import MERGE_TASK
from sage_ft.storage import fetch_part, publish_model, read_model
from sage_ft.storage.base import IntegrityError
from sage_ft.storage.manifest import model_prefix
from sage_ft.storage.merges import clear_merge_failure, record_merge_failure
from sage_ft_worker.celery_app import app

log = logging.getLogger(__name__)


@app.task(name=MERGE_TASK)
def merge(tenant: str, model: str) -> str:
    from sage_ft.training.loading import resolve_model
    from sage_ft.training.merge import merge_adapter

    ctx = app.context
    store = ctx.tenant_store(tenant)
    manifest = read_model(store, model)
    if manifest is None:
        log.warning("merge of %s skipped: not published", model)
        return "not found"
    ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="merge-", dir=ctx.settings.work_dir))
    try:
        adapter = fetch_part(store, model, "adapter", scratch / "adapter")
        merged = merge_adapter(adapter, scratch / "merged", base_model=resolve_model(manifest.base_model))
        replaced = manifest.location("merged") if "merged" in manifest.parts else None
        now = publish_model(
            store,
            model,
            {"merged": Path(merged)},
            base_model=manifest.base_model,
            scope=f"merges/{uuid.uuid4().hex[:12]}",
        )
        if replaced and replaced != now.location("merged"):
            store.delete_prefix(model_prefix(model) + replaced)  # the merge it superseded
        clear_merge_failure(store, model)
    except Exception as err:  # serving is waiting for merged/: tell it why it will not come, then fail the task
        log.exception("merge of %s failed", model)
        code = "checksum_mismatch" if isinstance(err, IntegrityError) else "merge_failed"  # serving's name for it
        record_merge_failure(store, model, f"{type(err).__name__}: {err}", ctx.settings.worker.name, code)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return "merged"
