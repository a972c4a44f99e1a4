"""``LoRATrainer``: the documented Python API, built on TRL's ``SFTTrainer`` / ``DPOTrainer`` and PEFT.

``config.method`` picks supervised fine-tuning (``sft``) or preference training (``dpo``, see ``training.dpo``).
``config.init_adapter`` starts from an earlier fine-tune's adapter (its LoRA shape and chat template) instead of a
fresh adapter.

Output layout under ``config.output_dir``::

    checkpoints/checkpoint-N/   full HF trainer state (optimizer, scheduler, RNG): resume is exact
    logs/                       TensorBoard event files
    adapter/                    final adapter (safetensors), tokenizer, chat template, sage_ft.json
    training_config.yaml        the config this run used

The adapter directory appears atomically: it is written aside and renamed when complete.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_ft.config import TrainingConfig, init_adapter_shape
from sage_ft.data.validate import ValidationReport, load_conversations, load_preferences, validate_file
from sage_ft.errors import ConfigError, TrainingOOMError
from sage_ft.evals.compare import Case, cases_from, cases_from_pairs, cases_from_prompts
from sage_ft.fsutil import atomic_directory
from sage_ft.packing import PackingDecision, decide_packing
from sage_ft.settings import training_env_settings
from sage_ft.training.attention import AttentionChoice, attention_for
from sage_ft.training.callbacks import TrainingCallback, _HFBridge
from sage_ft.training.chat import encode_conversation, prompt_token_counter, token_counter
from sage_ft.training.checkpoints import latest_checkpoint
from sage_ft.training.holdout import evaluate_holdout
from sage_ft.training.loading import load_model, load_tokenizer, model_head_dim, plan_runtime, resolve_model
from sage_ft.training.sft import SageSFTTrainer

log = logging.getLogger(__name__)
META_FILE = "sage_ft.json"


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path | None
    global_step: int
    total_steps: int
    stopped_early: bool
    resumed_from: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None  # fine-tune vs base on held-out records (``config.eval_items``)
    setup: dict[str, Any] = field(default_factory=dict)  # how the run was laid out (``LoRATrainer.setup``)

    @property
    def losses(self) -> list[float]:
        return [float(h["loss"]) for h in self.log_history if "loss" in h]


class LoRATrainer:
    """Fine-tune ``config.model_name`` with LoRA (optionally 8/4-bit) on ``config.data_path``."""

    def __init__(self, config: TrainingConfig, callbacks: list[TrainingCallback] | None = None) -> None:
        self.config = config
        self.callbacks = list(callbacks or [])
        self.runtime = plan_runtime(config)
        self.model_path = resolve_model(config.model_name)
        if config.init_adapter:
            self.config = config = config.update(lora=init_adapter_shape(Path(config.init_adapter)))
        self._tokenizer: Any = None
        self.holdout: list[Case] = []  # the held-out records (validation file or split), once datasets are built
        self.grading: Any = None  # RFT: the graders' runner, for the rewards and the held-out evaluation
        self.packing: PackingDecision | None = None  # decided from the training records in build_trainer
        self.attention: AttentionChoice | None = None  # the packed-attention backend of a packed run
        self._varied_lengths = False

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir).expanduser()

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:  # a fine-tune's own tokenizer and chat template when starting from one
            self._tokenizer = load_tokenizer(self.config.init_adapter or self.model_path, self.config)
        return self._tokenizer

    def _data_path(self) -> str:
        if not self.config.data_path:
            raise ConfigError("data_path is required: a JSON or JSONL file of training records")
        return self.config.data_path

    # -- data -----------------------------------------------------------------------------------------------

    def build_datasets(self) -> tuple[Any, Any]:
        """Validated, tokenized train (and optional eval) datasets with ``input_ids`` and ``assistant_masks``."""
        from datasets import Dataset

        cfg = self.config
        if cfg.method == "dpo":
            return self._preference_datasets()
        if cfg.method == "rft":
            return self._prompt_datasets()
        convs = load_conversations(self._data_path())
        eval_convs = load_conversations(cfg.validation_file) if cfg.validation_file else []

        def encode(items: list[Any]) -> Any:
            rows = [encode_conversation(self.tokenizer, c.messages, train_on_prompt=cfg.train_on_prompt) for c in items]
            return Dataset.from_list(rows)

        convs, eval_convs = self._split(convs, eval_convs)
        self.holdout = cases_from(eval_convs)
        return encode(convs), encode(eval_convs) if eval_convs else None

    def _split(self, records: list[Any], held: list[Any]) -> tuple[list[Any], list[Any]]:
        """Hold ``validation_split`` of the records out (records, not rows: the held-out ones are answered later);
        without a split, the validation file's records are the held-out ones."""
        from datasets import Dataset

        cfg = self.config
        if not cfg.validation_split or len(records) < 2:
            return records, held
        split = Dataset.from_dict({"i": list(range(len(records)))}).train_test_split(
            test_size=cfg.validation_split, seed=cfg.seed
        )
        return [records[i] for i in split["train"]["i"]], [records[i] for i in split["test"]["i"]]

    def _preference_datasets(self) -> tuple[Any, Any]:
        from datasets import Dataset

        from sage_ft.training.dpo import preference_rows

        cfg = self.config
        held = load_preferences(cfg.validation_file) if cfg.validation_file else []
        pairs, held = self._split(load_preferences(self._data_path()), held)
        self.holdout = cases_from_pairs(held)
        return Dataset.from_list(preference_rows(pairs)), Dataset.from_list(preference_rows(held)) if held else None

    def _prompt_datasets(self) -> tuple[Any, Any]:
        from datasets import Dataset

        from sage_ft.data.reinforcement import load_prompts
        from sage_ft.graders import parse_grader, template_fields
        from sage_ft.training.rft import prompt_rows

        cfg = self.config
        assert cfg.rft.grader is not None
        needed = template_fields(parse_grader(cfg.rft.grader, "rft.grader"))
        fits = {"prompt_tokens": prompt_token_counter(self.tokenizer), "max_length": cfg.max_length}
        held = load_prompts(cfg.validation_file, needed, **fits) if cfg.validation_file else []
        prompts, held = self._split(load_prompts(self._data_path(), needed, **fits), held)
        self.holdout = cases_from_prompts(held)
        return Dataset.from_list(prompt_rows(prompts)), Dataset.from_list(prompt_rows(held)) if held else None

    def validate_data(self) -> ValidationReport:
        """The dataset report with exact token counts from this model's tokenizer; loads no model weights."""
        return validate_file(
            self._data_path(), token_counter=token_counter(self.tokenizer), max_length=self.config.max_length
        )

    # -- trainer --------------------------------------------------------------------------------------------

    def _common_args(self, has_eval: bool) -> dict[str, Any]:
        """The ``TrainingArguments`` both methods share (schedule, precision, checkpoints, logging)."""
        cfg, rt = self.config, self.runtime
        report_to = [r for r in cfg.report_to if r != "tensorboard"]
        return dict(
            output_dir=str(self.checkpoint_dir),
            num_train_epochs=cfg.num_train_epochs,
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.per_device_train_batch_size,
            per_device_eval_batch_size=cfg.per_device_train_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            # transformers 5 folded warmup_ratio into warmup_steps: a float in [0, 1) is a ratio of the total steps
            # (an int would be a count). warmup_ratio is validated to [0, 1), so it is read as the ratio it is.
            warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay,
            lr_scheduler_type=cfg.lr_scheduler_type,
            max_grad_norm=cfg.max_grad_norm,
            fp16=rt.fp16,
            bf16=rt.bf16,
            optim=rt.optim,
            use_cpu=rt.device == "cpu",
            gradient_checkpointing=False,  # enabled on the model in load_model, before PEFT wraps it
            logging_steps=cfg.logging_steps,
            logging_first_step=True,
            save_strategy="steps",
            save_steps=cfg.save_steps,
            save_total_limit=cfg.save_total_limit,
            save_only_model=False,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=cfg.eval_steps or cfg.save_steps,
            report_to=report_to or "none",
            run_name=cfg.run_name,
            seed=cfg.seed,
            data_seed=cfg.seed,
            include_num_input_tokens_seen="non_padding",
            dataloader_num_workers=0,
            ddp_find_unused_parameters=False,  # every LoRA parameter takes part in each step
            disable_tqdm=True,
            remove_unused_columns=True,
        )

    def _args(self, has_eval: bool) -> Any:
        if self.config.method == "dpo":
            from sage_ft.training.dpo import dpo_args

            return dpo_args(self._common_args(has_eval), self.config)
        if self.config.method == "rft":
            from sage_ft.training.rft import grpo_args

            return grpo_args(self._common_args(has_eval), self.config)
        from trl import SFTConfig

        layout = self.packing.layout if self.packing is not None else "padded"
        liger = use_liger(self.runtime.device)
        batching: dict[str, Any] = {"max_length": self.config.max_length}
        if layout == "packed":
            batching["packing"] = True
        elif layout == "padding_free":  # records arrive cut at max_length (build_trainer); TRL refuses to cut them
            batching.update(padding_free=True, max_length=None)
        else:
            # Batches of similar lengths pad little (when lengths vary); Triton kernels (Liger) compile per shape, so
            # rows are padded to a multiple of 64 where they run instead of each new length compiling again.
            batching.update(
                _length_grouping() if self._varied_lengths else {}, pad_to_multiple_of=64 if liger else None
            )
        return SFTConfig(**self._common_args(has_eval), use_liger_kernel=liger, **batching)

    def _peft_config(self) -> Any:
        from peft import LoraConfig

        lora = self.config.lora
        return LoraConfig(
            r=lora.r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            target_modules=lora.target_modules,
            bias=lora.bias,
            modules_to_save=lora.modules_to_save,
            task_type="CAUSAL_LM",
        )

    def build_trainer(self) -> tuple[Any, _HFBridge]:
        """The configured ``SFTTrainer``, ``DPOTrainer`` or ``GRPOTrainer`` (exposed for tests and advanced use) and
        its progress bridge."""
        from peft import PeftModel, get_peft_model
        from transformers import PrinterCallback, set_seed

        cfg = self.config
        for note in self.runtime.notes(cfg):
            log.warning(note)
        set_seed(cfg.seed)  # before PEFT initialises lora_A, so a run is reproducible from its config
        train, evaluation = self.build_datasets()
        lengths = [len(ids) for ids in train["input_ids"]] if cfg.method == "sft" else []
        self._varied_lengths = len({min(n, cfg.max_length) for n in lengths}) > 1
        self.packing = decide_packing(cfg.packing, lengths, cfg.max_length, cfg.per_device_train_batch_size, cfg.method)
        records = len(train)
        if self.packing.layout == "padding_free":
            train, evaluation = (_truncated(d, cfg.max_length) if d is not None else None for d in (train, evaluation))
        if self.packing.shares_rows:
            head_dim = model_head_dim(self.model_path, cfg)
            self.attention = attention_for(self.runtime.device, self.runtime.compute_dtype, head_dim, True)
        model = load_model(self.model_path, cfg, self.runtime, self.tokenizer, self.attention)
        peft_config = None
        if cfg.init_adapter:
            model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
        elif cfg.method == "dpo":
            peft_config = self._peft_config()  # TRL wraps it: the reference is the model with the adapter disabled
        else:
            model = get_peft_model(model, self._peft_config())
        bridge = _HFBridge(self.callbacks)
        callbacks: list[Any] = [bridge]
        if "tensorboard" in cfg.report_to:
            callbacks.append(_tensorboard(self.output_dir / "logs"))
        kwargs: dict[str, Any] = dict(
            model=model,
            args=self._args(evaluation is not None),
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=self.tokenizer,
            callbacks=callbacks,
        )
        if cfg.method == "dpo":
            from sage_ft.training.dpo import SageDPOTrainer

            trainer: Any = SageDPOTrainer(**kwargs, peft_config=peft_config)
        elif cfg.method == "rft":
            from sage_ft.settings import GraderSettings
            from sage_ft.training.rft import SageGRPOTrainer, make_reward

            self.grading = self._grading()
            reward = make_reward(cfg, self.grading, GraderSettings().model_concurrency)
            trainer = SageGRPOTrainer(**kwargs, reward=reward)
            bridge.samples, bridge.samples_every = reward.samples, cfg.rft.eval_interval or cfg.save_steps
        else:
            trainer = SageSFTTrainer(**kwargs)
        # progress goes through TrainingCallback; HF's PrinterCallback would print raw log dicts to stdout
        trainer.remove_callback(PrinterCallback)
        liger = getattr(trainer.args, "use_liger_kernel", False)
        bridge.setup = self.setup(records, len(trainer.train_dataset), liger)
        if training_env_settings().fused_ops:
            from sage_ft.training.fused import fuse_training_ops

            liger = getattr(trainer.args, "use_liger_kernel", False)
            log.info("fused training ops: %s", fuse_training_ops(trainer.model, elementwise=not liger))
        return trainer, bridge

    def _grading(self) -> Any:
        """The graders' runner for RFT rewards: model graders through serving (where the worker says where it is),
        python graders in the sandbox."""
        from sage_ft.graders import Grading, python_sandbox
        from sage_ft.settings import GraderSettings

        env, graders = training_env_settings(), GraderSettings()
        models = None
        if env.grader_serving_url:  # httpx is needed only here
            from sage_ft.graders.serving import ServingModels

            models = ServingModels(env.grader_serving_url, env.grader_tenant, graders.model_timeout_seconds)
        return Grading(models, python_sandbox(graders, env.grader_serving_url))

    def setup(self, records: int, rows: int, liger: bool) -> dict[str, Any]:
        """How the run lays out its batches, for the start event and the result: the layout and why, the attention
        backend where records share rows, the training records, and the rows an epoch trains (packed rows hold
        several records; records that truncation left with nothing to train are dropped)."""
        packing = self.packing or decide_packing(False, [], self.config.max_length, 1, self.config.method)
        return {
            "layout": packing.layout,
            "packing_requested": packing.requested,
            "packing_reason": packing.reason,
            "attention": self.attention.backend if self.attention else None,
            "attention_reason": self.attention.reason if self.attention else None,
            "records": records,
            "rows_per_epoch": rows,
            "liger": bool(liger),
            "device": self.runtime.device,
        }

    def train(self, resume_from_checkpoint: bool | str | None = None) -> TrainResult:
        """Train, save the adapter and return a summary.

        ``resume_from_checkpoint=True`` continues from the newest ``checkpoints/checkpoint-N`` if there is one.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(self.output_dir / "training_config.yaml")
        trainer, bridge = self.build_trainer()
        resume: str | None = None
        if resume_from_checkpoint is True:
            found = latest_checkpoint(self.checkpoint_dir)
            resume = str(found) if found else None
        elif isinstance(resume_from_checkpoint, str):
            resume = resume_from_checkpoint
        if resume:
            log.info("resuming from %s", resume)
        wandb_run = _start_wandb(self.config) if "wandb" in self.config.report_to else None
        try:
            output = trainer.train(resume_from_checkpoint=resume)
        except Exception as err:
            if _is_oom(err):
                raise TrainingOOMError(str(err).splitlines()[0] if str(err) else "") from None
            raise
        finally:
            if wandb_run is not None:
                wandb_run.finish()
        state = trainer.state
        result = TrainResult(
            output_dir=self.output_dir,
            adapter_dir=None,
            global_step=state.global_step,
            total_steps=state.max_steps,
            stopped_early=bridge.stopped_early,
            resumed_from=resume,
            metrics=dict(output.metrics),
            log_history=list(state.log_history),
            setup=dict(bridge.setup),
        )
        if not bridge.stopped_early and self.config.eval_items and self.holdout:
            result.evaluation = evaluate_holdout(trainer, self.tokenizer, self.holdout, self.config, self.grading)
        if not bridge.stopped_early and trainer.is_world_process_zero():  # one writer under torchrun
            result.adapter_dir = self.save_adapter(trainer.model, result)
        return result

    def save_adapter(self, model: Any, result: TrainResult) -> Path:
        """Write adapter + tokenizer + chat template + metadata, appearing atomically as ``adapter/``."""
        target = self.output_dir / "adapter"
        with atomic_directory(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True, selected_adapters=["default"])  # not DPO's "ref"
            self.tokenizer.save_pretrained(tmp)
            meta = {
                "base_model": self.config.model_name,
                "base_model_path": self.model_path,
                "method": self.config.method,
                "global_step": result.global_step,
                "train_loss": result.metrics.get("train_loss"),
                "losses": result.losses,
                "config": self.config.model_dump(mode="json"),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return target


def use_liger(device: str) -> bool:
    """Liger's fused kernels for SFT: on CUDA only, where the package is installed and the operator allows it."""
    return (
        device == "cuda"
        and training_env_settings().liger_kernels
        and importlib.util.find_spec("liger_kernel") is not None
    )


def _truncated(dataset: Any, max_length: int) -> Any:
    """Token ids and loss mask cut at ``max_length``, keeping the start, and the records the cut left with nothing to
    train dropped: what TRL's own truncation does on the padded and packed paths."""
    if max(len(ids) for ids in dataset["input_ids"]) <= max_length:
        return dataset
    cut = dataset.map(lambda row: {k: row[k][:max_length] for k in ("input_ids", "assistant_masks")})
    return cut.filter(lambda row: any(row["assistant_masks"]))


def _length_grouping() -> dict[str, Any]:
    """``TrainingArguments`` for a sampler that batches records of similar length (its name changed in
    transformers 5.19: ``train_sampling_strategy``, before it ``group_by_length``)."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def _tensorboard(log_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    log_dir.mkdir(parents=True, exist_ok=True)
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def _start_wandb(cfg: TrainingConfig) -> Any:
    """Open the W&B run with the config's project, entity, name and tags before HF's WandbCallback looks for one.

    HF's callback only reads ``WANDB_PROJECT`` from the environment and never sets tags; an open run is reused by it.
    With ``wandb_run_id`` a resumed training continues the same run (``resume="allow"``).
    """
    import wandb

    return wandb.init(
        project=cfg.wandb_project or "sage-ft",
        entity=cfg.wandb_entity,
        name=cfg.run_name,
        tags=cfg.wandb_tags or None,
        id=cfg.wandb_run_id,
        resume="allow" if cfg.wandb_run_id else None,
        config=cfg.model_dump(mode="json"),
    )


def _is_oom(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
