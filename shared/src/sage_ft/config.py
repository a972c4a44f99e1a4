"""Training configuration: the documented Python API (``TrainingConfig``, ``LoRAConfig``).

Plain pydantic models so that the CLI, the gateway and the worker share one validated schema, and so that
``config.model_name = "..."`` after construction is validated too (``validate_assignment``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sage_ft.errors import ConfigError

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-1.5B-Instruct"


class LoRAConfig(BaseModel):
    """LoRA adapter shape. Defaults match the product docs: r=8, alpha=16, dropout 0.05."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(default=8, ge=1, le=1024, description="Adapter rank.")
    lora_alpha: int = Field(default=16, ge=1, description="Scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer except the output head.",
    )
    bias: Literal["none", "all", "lora_only"] = Field(default="none", description="Which biases to train.")
    modules_to_save: list[str] | None = Field(default=None, description="Extra modules trained in full.")


class DPOSettings(BaseModel):
    """Direct preference optimization (TRL's ``DPOTrainer``): how far the policy may move from the reference."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    beta: float = Field(
        default=0.1,
        gt=0,
        le=2,
        description="Strength of the pull towards the reference model; lower lets the model move further from it.",
    )
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(default="sigmoid", description="DPO loss variant.")
    sft_weight: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="Weight of a supervised loss on the chosen answers added to the DPO loss (RPO, Pang et al. "
        "2024; LLaMA-Factory's pref_ftx). It guards against likelihood displacement, where DPO widens the margin by "
        "making both answers unlikely and the model's answers collapse; 0 is plain DPO.",
    )


class RFTSettings(BaseModel):
    """Reinforcement fine-tuning (TRL's ``GRPOTrainer``): answers sampled from the model being trained are scored by
    ``grader`` (an OpenAI grader: ``sage_ft.graders``), and the policy moves towards the higher-rewarded ones."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    grader: dict[str, Any] | None = Field(
        default=None, description="The grader that scores each sampled answer (required for method rft)."
    )
    num_generations: int = Field(
        default=8, ge=2, le=64, description="Answers sampled per prompt (OpenAI's compute_multiplier scales it)."
    )
    max_completion_length: int = Field(default=128, ge=1, le=32768, description="Longest sampled answer, in tokens.")
    temperature: float = Field(default=1.0, gt=0, le=2, description="Sampling temperature of the rollouts.")
    beta: float = Field(
        default=0.0, ge=0, le=10, description="KL pull towards the starting model; 0 (TRL's default) loads no copy."
    )
    eval_interval: int | None = Field(
        default=None, ge=1, description="Score the validation prompts every this many steps (None: at checkpoints)."
    )
    eval_samples: int = Field(default=1, ge=1, le=16, description="Answers sampled per validation prompt.")
    response_format: dict[str, Any] | None = Field(
        default=None,
        description="OpenAI's response_format (json_object or json_schema): transformers rollouts and the end-of-job "
        "evaluation sample within it, and only an answer that matches it has a sample.output_json for the grader.",
    )
    rollouts: Literal["auto", "transformers", "vllm"] = Field(
        default="auto",
        description="What samples the answers: transformers' generation, or vLLM inside the trainer process (TRL's "
        "colocate mode: needs CUDA and the vllm package in the worker); auto: vllm where both are there.",
    )
    vllm_gpu_memory_utilization: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="With vLLM rollouts: the share of GPU memory vLLM may take beside training.",
    )

    @field_validator("grader")
    @classmethod
    def _valid_grader(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from sage_ft.graders import parse_grader

        try:
            return parse_grader(value, "grader").model_dump(mode="json", exclude_none=True)
        except ConfigError as err:
            raise ValueError(str(err)) from None


class TrainingConfig(BaseModel):
    """Everything one fine-tuning run needs. Unknown fields are rejected, so typos fail loudly."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    model_name: str = Field(default=DEFAULT_MODEL, description="Hub id, local directory, or local model name.")
    data_path: str | None = Field(default=None, description="Training data: JSON array or JSONL.")
    output_dir: str = Field(default="./output", description="Where adapter, checkpoints and logs are written.")
    validation_file: str | None = Field(default=None, description="Separate validation data file.")
    validation_split: float = Field(default=0.0, ge=0.0, lt=0.5, description="Share of the training data held out.")
    eval_items: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="After training, answer up to this many held-out records with the fine-tune and its base and "
        "score both (exact, token F1, ROUGE-L) with the held-out loss (0: off; needs validation data).",
    )
    eval_max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Answer length of that evaluation.")

    num_train_epochs: float = Field(default=3.0, gt=0)
    max_steps: int = Field(default=-1, description="If > 0, overrides num_train_epochs.")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    per_device_train_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=1024, ge=16, description="Tokens per sequence; longer ones are truncated.")
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    lr_scheduler_type: str = Field(default="linear")
    max_grad_norm: float = Field(default=1.0, gt=0)

    load_in_8bit: bool = False
    load_in_4bit: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    fp16: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    optim: str = Field(default="adamw_torch", description="Any transformers optimizer name.")

    logging_steps: int = Field(default=10, ge=1)
    save_steps: int = Field(default=100, ge=1)
    save_total_limit: int | None = Field(default=3, ge=1)
    eval_steps: int | None = Field(default=None, ge=1)
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"], description="tensorboard, wandb, or none.")
    run_name: str | None = None
    wandb_project: str | None = Field(default=None, description="W&B project when report_to has wandb.")
    wandb_entity: str | None = Field(default=None, description="W&B entity (team or user); the account's default.")
    wandb_tags: list[str] = Field(default_factory=list, description="Tags on the W&B run.")
    wandb_run_id: str | None = Field(
        default=None, description="Stable W&B run id: a resumed run continues the same W&B run instead of a new one."
    )
    seed: int = 42

    packing: bool | Literal["auto"] = Field(
        default="auto",
        description="true: pack records into rows of max_length (TRL best-fit decreasing; fewer, fuller steps). "
        "false: one record a row, padded. auto: each batch's records end to end in one row (padding-free: the "
        "steps of a padded run without its padding) when lengths vary, padded when they do not. Each record "
        "attends only to itself either way.",
    )
    train_on_prompt: bool = Field(default=False, description="Also compute loss on prompt tokens.")
    trust_remote_code: bool = Field(default=False, description="Run model code from the hub. Off by default.")
    preset: str | None = Field(default=None, description="Name of the preset this config came from, if any.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    method: Literal["sft", "dpo", "rft"] = Field(
        default="sft",
        description="sft: supervised on the answers; dpo: preference pairs (chosen over rejected); rft: "
        "reinforcement from a grader's rewards on sampled answers.",
    )
    dpo: DPOSettings = Field(default_factory=DPOSettings, description="DPO settings, used when method is dpo.")
    rft: RFTSettings = Field(default_factory=RFTSettings, description="RFT settings, used when method is rft.")
    init_adapter: str | None = Field(
        default=None,
        description="Start from this adapter directory (a fine-tune "
        "of model_name) instead of a fresh adapter; its LoRA shape is kept.",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _method_alias(cls, value: Any) -> Any:
        return {"supervised": "sft", "reinforcement": "rft"}.get(value, value)  # the OpenAI API's names

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if value == ["none"]:
            return []
        return value

    @field_validator("report_to")
    @classmethod
    def _known_reporters(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {"tensorboard", "wandb"})
        if unknown:
            raise ValueError(f"unknown reporter(s) {unknown}; use tensorboard, wandb or none")
        return value

    @model_validator(mode="after")
    def _exclusive_options(self) -> TrainingConfig:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit are mutually exclusive; choose one quantization")
        if self.fp16 and self.bf16:
            raise ValueError("fp16 and bf16 are mutually exclusive; choose one precision")
        if self.validation_file and self.validation_split:
            raise ValueError("set validation_file or validation_split, not both")
        if self.method == "rft" and self.rft.grader is None:
            raise ValueError("rft.grader: reinforcement fine-tuning needs a grader to score the sampled answers")
        return self

    # -- construction helpers -------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build from plain data, turning pydantic's errors into one readable ConfigError."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]["loc"] if err.errors() else ()
            raise ConfigError(format_validation_error(err), loc=tuple(str(p) for p in first)) from None

    def update(self, **changes: Any) -> TrainingConfig:
        """A validated copy with ``changes`` applied (nested ``lora`` dicts are merged)."""
        data = self.model_dump()
        for key, kind in (("lora", LoRAConfig), ("dpo", DPOSettings)):
            nested = changes.pop(key, None)
            if isinstance(nested, kind):
                data[key] = nested.model_dump()
            elif nested:
                data[key].update(nested)
        data.update(changes)
        return TrainingConfig.from_dict(data)

    MACHINE_PATHS: ClassVar[tuple[str, ...]] = ("data_path", "output_dir", "validation_file", "init_adapter")

    def portable(self) -> dict[str, Any]:
        """The config without this machine's paths (data, output, validation file, the parent adapter's copy): what a
        job shows, what its manifest records, and what a later attempt on another worker trains with again."""
        return self.model_dump(mode="json", exclude=set(self.MACHINE_PATHS))

    # -- persistence ----------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write YAML (``.yaml``/``.yml``) or JSON (anything else)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(mode="json")
        if path.suffix.lower() in {".yaml", ".yml"}:
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        else:
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: config file is not UTF-8") from None
        try:
            data = yaml.safe_load(text) if path.suffix.lower() in {".yaml", ".yml"} else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot parse config: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: config must be a mapping of field names to values")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"{path}: {format_validation_error(err)}") from None

    @property
    def quantization(self) -> str | None:
        return "4bit" if self.load_in_4bit else "8bit" if self.load_in_8bit else None


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, naming the field: ``lora.r: Input should be greater than or equal to 1``."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "config"
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


def init_adapter_shape(adapter_dir: Path) -> dict[str, Any]:
    """The LoRA shape of the adapter a run starts from: training continues it, so its shape is the run's."""
    path = adapter_dir / "adapter_config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"init_adapter: {adapter_dir} is not a LoRA adapter directory ({err})") from None
    targets = raw.get("target_modules")
    return {
        "r": int(raw.get("r", 8)),
        "lora_alpha": int(raw.get("lora_alpha", 16)),
        "target_modules": sorted(targets) if isinstance(targets, list | set) else targets or "all-linear",
        "bias": raw.get("bias", "none"),
        "modules_to_save": raw.get("modules_to_save"),
    }
