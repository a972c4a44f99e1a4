"""Where a job starts from and what its checkpoints say: the parent adapter, and OpenAI's checkpoint objects.

A job that continues a fine-tune gets its parent's adapter (tokenizer and chat template included) before training:
from the parent's published manifest, or straight from the checkpoint a job uploaded. Both are verified file by
file against what their writer recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sage_ft.jobs.model import CheckpointRecord, Job, fine_tuned_model_name
from sage_ft.storage import ObjectStore, fetch_part
from sage_ft.storage.checkpoints import CHECKPOINT_NAME, checkpoint_model_name, fetch_checkpoint_adapter

# trainer log keys (TRL's SFT and DPO metrics) -> the names events and checkpoint objects use (OpenAI's where it has
# one: train_mean_token_accuracy, valid_loss, valid_mean_token_accuracy)
_NAMES = {
    "mean_token_accuracy": "train_mean_token_accuracy",
    "eval_loss": "valid_loss",
    "eval_mean_token_accuracy": "valid_mean_token_accuracy",
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "logps/chosen": "logps_chosen",  # the chosen and rejected answers' log-probabilities: falling together is
    "logps/rejected": "logps_rejected",  # likelihood displacement, which the RPO term (dpo.sft_weight) guards against
    "eval_rewards/accuracies": "valid_reward_accuracy",
    "eval_rewards/margins": "valid_reward_margin",
    "reward": "train_reward_mean",  # reinforcement (TRL's GRPO): OpenAI's RFT names
    "reward_std": "train_reward_std",
    "eval_reward": "valid_reward_mean",
    "grader/error_rate": "grader_error_rate",
}


def named_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """The metrics of one trainer log line worth showing, by their public names (a multi grader's members as
    ``<name>_reward_mean``)."""
    out = {name: float(logs[key]) for key, name in _NAMES.items() if isinstance(logs.get(key), int | float)}
    for key, value in logs.items():
        if key.startswith("grader/") and key.endswith("_mean") and isinstance(value, int | float):
            out[f"{key.removeprefix('grader/').removesuffix('_mean')}_reward_mean"] = float(value)
    return out


class ParentMissingError(FileNotFoundError):
    """The model or checkpoint a job starts from is gone (deleted after the job was queued)."""


def fetch_parent(store: ObjectStore, parent: str, dest: Path) -> Path:
    """The parent's adapter directory at ``dest``: a checkpoint (``<model>:ckpt-step-<n>``) or a published model."""
    from sage_ft.errors import ConfigError
    from sage_ft.storage import StorageError

    match = CHECKPOINT_NAME.match(parent)
    try:
        if match:
            job_id = "ftjob-" + match.group(1).rsplit(":", 1)[-1]
            return fetch_checkpoint_adapter(store, job_id, int(match.group(2)), dest)
        return fetch_part(store, parent, "adapter", dest)
    except FileNotFoundError:
        raise ConfigError(f"model: {parent}, which this job starts from, is no longer in the store") from None
    except StorageError as err:
        if "not published" in str(err) or "has no 'adapter'" in str(err):
            raise ConfigError(f"model: {parent}, which this job starts from, is no longer published") from None
        raise


def checkpoint_record(job: Job, step: int, size: int, metrics: dict[str, Any]) -> CheckpointRecord:
    """The checkpoint at ``step``: the model name it can be served as, and its metrics (the unknown ones left out)."""
    name = fine_tuned_model_name(job.root_model, job.suffix, job.id)
    shown = {k: v for k, v in metrics.items() if v is not None}
    return CheckpointRecord(
        job_id=job.id, step=step, model=checkpoint_model_name(name, step), metrics={"step": step, **shown}, bytes=size
    )
