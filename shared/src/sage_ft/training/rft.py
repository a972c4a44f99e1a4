"""Reinforcement fine-tuning with TRL's ``GRPOTrainer`` and PEFT: the rows, the arguments and the reward.

No policy-gradient loss of ours: TRL samples ``num_generations`` answers per prompt from the model being trained
(transformers' generation here; vLLM in TRL's colocate or server mode where configured), scores them with the
reward function, and optimizes its group-relative objective. The reward is the job's grader, run by the same code
as ``/v1/fine_tuning/alpha/graders/run`` (``sage_ft.graders.Grading``); model graders ask serving with bounded
concurrency, python graders run in the sandbox.

Each row's grader ``item`` travels as one JSON string column, so rows with different extra fields make one
dataset; the reward function decodes it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trl import GRPOConfig, GRPOTrainer

from sage_ft.config import TrainingConfig
from sage_ft.data.reinforcement import Prompt
from sage_ft.errors import ConfigError
from sage_ft.graders import AnyGrader, GraderResult, Grading, parse_grader, sample_of
from sage_ft.training.constrained import constrain_generate, processor_factory

log = logging.getLogger(__name__)


def prompt_rows(prompts: list[Prompt]) -> list[dict[str, Any]]:
    """TRL's conversational prompt format, plus the grader's item as JSON."""
    return [{"prompt": p.messages, "item_json": json.dumps(p.item)} for p in prompts]


def rollout_engine(choice: str) -> str:
    """``transformers`` or ``vllm`` for ``RFTSettings.rollouts``: auto takes vLLM where a CUDA device and the vllm
    package are both there (TRL's colocate mode); asking for vLLM where either is missing is a config error."""
    import torch
    from trl.import_utils import is_vllm_available

    if choice == "transformers":
        return choice
    missing = [
        what for what, ok in (("a CUDA device", torch.cuda.is_available()), ("vllm", is_vllm_available())) if not ok
    ]
    if not missing:
        return "vllm"
    if choice == "vllm":
        raise ConfigError(
            f"rft.rollouts: vLLM rollouts need {' and '.join(missing)} in the worker", param="rft.rollouts"
        )
    return "transformers"


def grpo_args(common: dict[str, Any], cfg: TrainingConfig) -> GRPOConfig:
    """``per_device_train_batch_size`` counts prompts here, as a user means it; TRL's counts completions."""
    r = cfg.rft
    prompts = cfg.per_device_train_batch_size
    vllm: dict[str, Any] = {}
    if rollout_engine(r.rollouts) == "vllm":  # one engine in the trainer process, sharing the GPU and the weights
        vllm = {
            "use_vllm": True,
            "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": r.vllm_gpu_memory_utilization,
            "vllm_max_model_length": cfg.max_length + r.max_completion_length,
        }
    return GRPOConfig(
        **{
            **common,
            "per_device_train_batch_size": prompts * r.num_generations,
            "per_device_eval_batch_size": prompts * r.eval_samples,
            "remove_unused_columns": False,  # the reward reads item_json
            "include_num_input_tokens_seen": "no",  # TRL counts its own tokens (num_tokens)
            "eval_steps": r.eval_interval or common["eval_steps"],
        },
        num_generations=r.num_generations,
        num_generations_eval=r.eval_samples,
        max_completion_length=r.max_completion_length,
        temperature=r.temperature,
        beta=r.beta,
        log_completions=False,
        disable_dropout=True,
        **vllm,
    )


class GraderReward:
    """TRL's reward function: the grader's reward for each sampled answer on its row's item. It keeps each batch's
    results, so the trainer can log per-grader means and errors beside TRL's own reward mean."""

    __name__ = "grader"

    def __init__(
        self,
        grader: AnyGrader,
        grading: Grading,
        concurrency: int = 4,
        response_format: dict[str, Any] | None = None,
    ) -> None:
        self.grader, self.grading, self.concurrency = grader, grading, concurrency
        self.response_format = response_format  # an answer that does not match it has no output_json
        self.window: list[GraderResult] = []
        self.recent: list[dict[str, Any]] = []  # a few of the latest batch's answers, with their rewards

    def __call__(self, prompts: list[Any], completions: list[Any], item_json: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        items = [json.loads(raw) for raw in item_json]

        def one(text: str, item: dict[str, Any]) -> GraderResult:
            return self.grading.run(self.grader, sample_of(text, self.response_format), item)

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="reward") as pool:
            results = list(pool.map(one, texts, items))
        self.window.extend(results)
        self.recent = [
            {"prompt": _last_user(p), "answer": t, "reward": r.reward, "errors": r.errors.details}
            for p, t, r in list(zip(prompts, texts, results, strict=True))[:SAMPLES_SHOWN]
        ]
        return [r.reward for r in results]

    def samples(self) -> list[dict[str, Any]]:
        return list(self.recent)

    def drain(self) -> dict[str, float]:
        """Means since the last call: each sub-grader's reward (a multi grader's), and the share of answers the
        grader could not score (an error counts as reward 0)."""
        results, self.window = self.window, []
        if not results:
            return {}
        sums: dict[str, float] = defaultdict(float)
        for r in results:
            for name, value in r.sub_rewards.items():
                sums[f"grader/{name}_mean"] += value
        out = {k: v / len(results) for k, v in sums.items()}
        out["grader/error_rate"] = sum(r.errors.any for r in results) / len(results)
        return out


SAMPLES_SHOWN = 4  # sampled answers reported with their rewards, every eval_interval steps


def _last_user(prompt: Any) -> str:
    if isinstance(prompt, list):
        return next((str(m.get("content", "")) for m in reversed(prompt) if m.get("role") == "user"), "")
    return str(prompt)


class SageGRPOTrainer(GRPOTrainer):
    """Adds the grader's own figures (per-grader means, error rate) to each training log, and holds the sampled
    answers to the job's ``response_format`` (``sage_ft.training.constrained``)."""

    def __init__(self, *args: Any, reward: GraderReward, **kwargs: Any) -> None:
        super().__init__(*args, reward_funcs=[reward], **kwargs)
        self.reward = reward
        make = processor_factory(self.processing_class, reward.response_format, list(self.eos_token_ids))
        if make is not None and self.use_vllm:  # TRL's vLLM rollouts take a regex only
            log.warning("rft.response_format: vLLM rollouts are not held to it; the reward still checks it")
        elif make is not None:
            constrain_generate(self.model, make)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = {**logs, **self.reward.drain()}
        super().log(logs, start_time)


def make_reward(cfg: TrainingConfig, grading: Grading, concurrency: int) -> GraderReward:
    """``concurrency``: grader calls in flight at once (model graders wait on serving)."""
    assert cfg.rft.grader is not None  # TrainingConfig requires it for method rft
    return GraderReward(parse_grader(cfg.rft.grader, "rft.grader"), grading, concurrency, cfg.rft.response_format)
