"""``POST /v1/fine_tuning/jobs`` with ``dry_run: true``: the job's cost (``sage_ft.jobs.estimate``), no job made.

The request is checked exactly as a real one is (same 4xx). Token lengths are exact when the base model is installed
under the models root and ``transformers`` is importable here (the embedded stack); otherwise they are the
validator's estimate (characters / 4), and ``tokens_exact`` says so. The memory estimate needs the model's
``config.json``: from the models root, or for a hub id from this host's Hugging Face cache.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from sage_ft.data.builtin import builtin_dataset_path
from sage_ft.data.loader import read_file
from sage_ft.data.validate import validate_raw
from sage_ft.jobs.estimate import PastJob, estimate
from sage_ft.jobs.spec import JobRequest
from sage_ft.models import local_model_dir
from sage_ft_gateway.services.jobs import JobService
from sage_ft_gateway.state import GatewayState

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _token_counter(model_dir: str) -> Any:
    """Exact lengths through the model's tokenizer and chat template; None where transformers is not installed."""
    try:
        from transformers import AutoTokenizer

        from sage_ft.training.chat import ensure_chat_template, token_counter
    except ImportError:
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        ensure_chat_template(tokenizer)
    except (OSError, ValueError) as err:
        log.info("estimate: no tokenizer from %s (%s); lengths are estimated", model_dir, err)
        return None
    return token_counter(tokenizer)


def _model_config(model_dir: Path | None, base: str) -> dict[str, Any] | None:
    """The base model's ``config.json``: under the models root, or for a hub id in this host's Hugging Face cache
    (where a worker on the same machine downloaded it); None when neither has it."""
    path: Path | None = model_dir / "config.json" if model_dir is not None else None
    if path is None and "/" in base:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(base, "config.json")
        path = Path(found) if isinstance(found, str) else None
    if path is None:
        return None
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config


class EstimateService:
    LENGTHS_KEPT = 16  # files whose token lengths are kept: a form asks again on every change of a field

    def __init__(self, state: GatewayState, jobs: JobService) -> None:
        self.state = state
        self.jobs = jobs
        # (tenant, file id, name, model dir) -> lengths: an uploaded file never changes under its id
        self._file_lengths = functools.lru_cache(maxsize=self.LENGTHS_KEPT)(self._read_file_lengths)

    def estimate(self, tenant: str, request: JobRequest) -> dict[str, Any]:
        checked = self.jobs.check_request(tenant, request)
        config = checked.config
        base = checked.base or request.model
        model_dir = local_model_dir(self.state.settings.paths.resolved_models_root(), base)
        counter = _token_counter(str(model_dir)) if model_dir is not None else None
        lengths, exact = self._lengths(tenant, request, counter, str(model_dir) if model_dir else None)
        preset = request.preset or "auto"
        history = [
            PastJob(int(r["tokens"]), float(r["seconds"]), r.get("train_seconds"))
            for r in self.state.jobs.recent_runs(base, preset)
        ]
        model = _model_config(model_dir, base)
        gateway = self.state.settings.gateway
        body = estimate(
            lengths,
            config,
            has_validation_file=bool(request.validation_file),
            model=model,
            history=history,
            default_rate=gateway.estimate_tokens_per_second,
            liger=gateway.estimate_liger,
        )
        body.update(
            tokens_exact=exact,
            model=request.model,
            base_model=base,
            preset=preset,
            method=request.method_type,
            hyperparameters=checked.hyperparameters,
        )
        return {"object": "fine_tuning.job.estimate", "estimate": body}

    def _lengths(self, tenant: str, request: JobRequest, counter: Any, model: str | None) -> tuple[list[int], bool]:
        if not request.training_file:  # a built-in task
            raw = read_file(builtin_dataset_path(str(request.task)))
            return validate_raw(raw, token_counter=counter).token_lengths, counter is not None
        record = self.jobs.files.get(tenant, request.training_file)  # the tenant's own, or a 404
        return self._file_lengths(tenant, record.id, record.filename, model)

    def _read_file_lengths(self, tenant: str, file_id: str, filename: str, model: str | None) -> tuple[list[int], bool]:
        """Token lengths of an uploaded file's records (exact with the model's tokenizer); kept by ``_file_lengths``."""
        counter = _token_counter(model) if model is not None else None
        with tempfile.TemporaryDirectory(prefix="sage-estimate-") as tmp:
            path = self.state.tenant_store(tenant).get_file(f"files/{file_id}", Path(tmp) / "train.jsonl")
            raw = read_file(path, name=filename)
            return validate_raw(raw, token_counter=counter).token_lengths, counter is not None
