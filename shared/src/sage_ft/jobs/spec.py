"""The fine-tuning job request (OpenAI body + sage-ft extensions) and its translation to a ``TrainingConfig``.

The gateway validates a request with ``JobRequest`` and ``build_training_config`` (so a bad learning rate is a 400
naming the parameter, not a failed job), and the worker builds the real config with the same function. Torch-free.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from sage_ft.config import LoRAConfig, TrainingConfig, init_adapter_shape
from sage_ft.data.builtin import BUILTIN_TASKS
from sage_ft.errors import ConfigError, request_error
from sage_ft.graders.model import Grader
from sage_ft.models import LOCAL_NAME
from sage_ft.presets import PresetConfigs
from sage_ft.protocol.common import FINE_TUNING_METHODS, TAGGED_UNIONS
from sage_ft.response_format import grammar_of

Auto = Literal["auto"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


Epochs = Annotated[int, Field(ge=1, le=50)]
BatchSize = Annotated[int, Field(ge=1, le=256)]
Multiplier = Annotated[float, Field(gt=0, le=10)]
Beta = Annotated[float, Field(gt=0, le=2)]
METHODS = FINE_TUNING_METHODS
DPO_BETA = 0.1  # beta "auto": TRL's and OpenAI's default
# DPO's "auto", chosen from the number of pairs as OpenAI's auto is (its cookbook's rule: 3 epochs, more for a small
# set so that it is seen enough times in all, within 1-25 epochs; a batch of about 0.2% of the set). A pair's signal
# is weaker than an answer's, so a small set is passed over until it is seen DPO_TARGET_PAIRS times (OpenAI's 100
# doubled). Measured on the tiny model (docs/fine-tuning-api.md): 8 pairs at TRL's 6 steps flip 0 of 8 answers;
# at this rule's 200 steps, with the RPO term, 7 of 8.
DPO_TARGET_PAIRS = 200
DPO_EPOCHS = (3, 1, 25)  # the usual, the fewest, the most
DPO_BATCH_SHARE = 0.002
RFT_SAMPLES = 8  # answers sampled per prompt at compute_multiplier 1 (TRL's num_generations default)
_FT_MODEL = re.compile(r"^ft:[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
CHECKPOINT_ID = re.compile(r"^ftckpt-([0-9a-f]{1,64})-([0-9]{1,12})$")


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Epochs | Auto = Field(default="auto", description="Passes over the training data (1-50).")
    batch_size: BatchSize | Auto = Field(default="auto", description="Examples per step (1-256).")
    learning_rate_multiplier: Multiplier | Auto = Field(
        default="auto", description="Scales the preset's learning rate."
    )


# set by the job itself (model, files, outputs), or by an operator (remote code), never by a caller's config
_NOT_CONFIGURABLE = frozenset(
    {"model_name", "data_path", "output_dir", "validation_file", "trust_remote_code", "method", "init_adapter"}
)  # method: method.type; init_adapter: model


def _config_overrides() -> type[BaseModel]:
    """``config``: any ``TrainingConfig`` field a caller may set, each optional, with the field's own constraints, so
    its JSON schema says exactly what is accepted (the cross-field rules, such as 4-bit xor 8-bit, stay checks)."""
    fields: dict[str, Any] = {}
    for name, info in TrainingConfig.model_fields.items():
        if name in _NOT_CONFIGURABLE:
            continue
        annotation: Any = info.annotation
        if name == "report_to":
            annotation = list[Literal["tensorboard", "wandb", "none"]]
        fields[name] = (annotation | None, FieldInfo.merge_field_infos(info, default=None, default_factory=None))
    model: type[BaseModel] = create_model("ConfigOverrides", __config__=ConfigDict(extra="forbid"), **fields)
    return model


ConfigOverrides = _config_overrides()


class DpoHyperparameters(Hyperparameters):
    beta: Beta | Auto = Field(
        default="auto", description="How far the model may move from the reference, (0, 2]; auto is 0.1."
    )


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Dpo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised"]
    supervised: Supervised | None = None

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self.supervised.hyperparameters if self.supervised is not None else Hyperparameters()


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["dpo"]
    dpo: Dpo | None = None

    @property
    def hyperparameters(self) -> DpoHyperparameters:
        return self.dpo.hyperparameters if self.dpo is not None else DpoHyperparameters()


class ReinforcementHyperparameters(Hyperparameters):
    eval_interval: Annotated[int, Field(ge=1, le=100_000)] | Auto = Field(
        default="auto", description="Steps between evaluations of the validation prompts; auto: at checkpoints."
    )
    eval_samples: Annotated[int, Field(ge=1, le=16)] | Auto = Field(
        default="auto", description="Answers sampled per validation prompt; auto is 1."
    )
    compute_multiplier: Annotated[float, Field(gt=0, le=8)] | Auto = Field(
        default="auto", description=f"Scales the answers sampled per prompt ({RFT_SAMPLES} at 1); auto is 1."
    )
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = Field(
        default=None, description="Accepted for compatibility; the open models trained here do not reason apart."
    )


class JsonSchemaFormat(BaseModel):
    """OpenAI's ``json_schema`` response format: a name and a JSON Schema (checked here as a schema)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, serialize_by_alias=True)  # "schema" as OpenAI
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _a_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as err:
            where = ".".join(str(p) for p in err.absolute_path)
            raise ValueError(f"not a valid JSON Schema{f' at {where}' if where else ''}: {err.message}") from None
        grammar_of(value)  # sampling is held to it: a schema llguidance cannot enforce is refused here
        return value


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: ``text``, ``json_object`` or ``json_schema`` (with ``json_schema``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given with type json_schema, and only then")
        return self


class Reinforcement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: Grader
    hyperparameters: ReinforcementHyperparameters = Field(default_factory=ReinforcementHyperparameters)
    response_format: ResponseFormat | None = Field(
        default=None,
        description="Structured output for the sampled answers: sampling is held to it (transformers rollouts and the "
        "end-of-job evaluation), and an answer that is not a JSON object matching it has no sample.output_json.",
    )


class ReinforcementMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["reinforcement"]
    reinforcement: Reinforcement

    @property
    def hyperparameters(self) -> ReinforcementHyperparameters:
        return self.reinforcement.hyperparameters


# OpenAI's ``method``: one member per ``type``, so the schema itself says that ``type: supervised`` takes no ``dpo``
# settings (and the reverse); parse_request names the field when a request says otherwise.
Method = Annotated[SupervisedMethod | DpoMethod | ReinforcementMethod, Field(discriminator="type")]


class WandbIntegration(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None
    api_key: SecretStr | None = Field(
        default=None, description="Stored encrypted, given to the trainer only, echoed as ****."
    )


class Integration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["wandb"]
    wandb: WandbIntegration


_MODEL_PATTERN = (
    r"^(?!.*\.\.)([A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
    r"|[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
    r"|ft:[A-Za-z0-9][A-Za-z0-9_.:-]{0,199})$"
)
METADATA_SCHEMA: dict[str, Any] = {
    "maxProperties": 16,
    "propertyNames": {"maxLength": 64},
    "additionalProperties": {"type": "string", "maxLength": 512},
}


def check_metadata(v: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's metadata limits, for every object that carries metadata (jobs, evals)."""
    if v is not None and (len(v) > 16 or any(len(k) > 64 or len(x) > 512 for k, x in v.items())):
        raise ValueError("at most 16 pairs, keys up to 64 and values up to 512 characters")
    return v


AUTO_EVAL_ITEMS = 50  # held-out records answered by the fine-tune and its base at the end of a job


class JobEval(BaseModel):
    """``extra_body={"eval": {...}}``: the evaluation at the end of the job (on by default with a validation file)."""

    model_config = ConfigDict(extra="forbid")
    holdout: float | None = Field(
        default=None, gt=0, lt=0.5, description="Share of the training records held out (instead of a validation file)."
    )
    max_items: int = Field(default=AUTO_EVAL_ITEMS, ge=0, le=1000, description="Held-out records answered (0: off).")
    max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Answer length.")


class JobRequest(BaseModel):
    """``POST /v1/fine_tuning/jobs``. Unknown fields are rejected by name. The JSON schema carries every rule the
    validators apply (patterns, ranges, enums), so a request the schema allows is one the API accepts."""

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={"anyOf": [{"required": ["training_file"]}, {"required": ["task"]}]},
    )

    model: str = Field(
        description="A hub id (owner/name), a local model name, or a fine-tuned model (ft:... id, "
        "checkpoint id or alias) to continue from.",
        json_schema_extra={"pattern": _MODEL_PATTERN},
    )
    training_file: str | None = None
    validation_file: str | None = None
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = Field(default=None, json_schema_extra=METADATA_SCHEMA)
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated top-level form
    integrations: list[Integration] | None = None
    # sage-ft extensions (extra_body in the openai client)
    preset: str | None = Field(default=None, json_schema_extra={"enum": [*PresetConfigs.NAMES, "auto", None]})
    task: str | None = Field(default=None, json_schema_extra={"enum": [*BUILTIN_TASKS, None]})
    lora: LoRAConfig | None = None
    quantization: Literal["none", "8bit", "4bit"] | None = None
    max_length: int | None = Field(default=None, ge=16, le=131072)
    packing: bool | Literal["auto"] | None = Field(
        default=None,
        description="Pack several records into each row (auto, the default: when record lengths vary).",
    )
    train_on_prompt: bool | None = None
    learning_rate: float | None = Field(default=None, gt=0, lt=1)
    name: str | None = Field(default=None, json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"})
    max_steps: int | None = Field(default=None, ge=1)
    save_steps: int | None = Field(default=None, ge=1)
    config: ConfigOverrides | None = None  # type: ignore[valid-type]  # any other TrainingConfig field
    from_checkpoint: str | None = Field(
        default=None,
        description="Start from an earlier job's checkpoint.",
        json_schema_extra={"pattern": CHECKPOINT_ID.pattern},
    )
    eval: JobEval | None = None
    dry_run: bool | None = Field(
        default=None,
        description="Return the job's estimate (tokens, steps, seconds, peak memory) instead of creating it.",
    )

    @field_validator("config", mode="before")
    @classmethod
    def _fixed_fields(cls, v: Any) -> Any:
        fixed = sorted(set(v) & _NOT_CONFIGURABLE) if isinstance(v, dict) else []
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be set here (the job's model, files and outputs are)")
        return v

    def config_changes(self) -> dict[str, Any]:
        """The ``config`` fields the caller set (what a --config file sets), as plain data."""
        return self.config.model_dump(exclude_unset=True) if self.config is not None else {}

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not (_HUB_ID.match(v) or LOCAL_NAME.match(v) or _FT_MODEL.match(v)) or ".." in v:
            raise ValueError(
                "must be a hub id such as 'Qwen/Qwen2.5-Coder-1.5B-Instruct', a local model name, or a "
                "fine-tuned model id (ft:...)"
            )
        return v

    @field_validator("from_checkpoint")
    @classmethod
    def _checkpoint(cls, v: str | None) -> str | None:
        if v is not None and not CHECKPOINT_ID.match(v):
            raise ValueError("must be a checkpoint id such as 'ftckpt-<job hex>-<step>'")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not _ALIAS.match(v) or v.startswith("ft:")):
            raise ValueError("must be letters, digits, '.', '_' or '-', up to 64 characters")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(v)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str | None) -> str | None:
        if v is not None and v not in BUILTIN_TASKS:
            raise ValueError(f"unknown task; choose one of {', '.join(BUILTIN_TASKS)}")
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        if v is not None and v.replace("-", "_").lower() not in (*PresetConfigs.NAMES, "auto"):
            raise ValueError(f"unknown preset; choose one of {', '.join(PresetConfigs.NAMES)} or auto")
        return v

    def is_local_model(self) -> bool:
        return "/" not in self.model and not self.model.startswith("ft:")

    @property
    def method_type(self) -> str:
        return self.method.type if self.method is not None else "supervised"

    def effective_hyperparameters(self) -> Hyperparameters:
        if self.method is not None:
            return self.method.hyperparameters
        return self.hyperparameters or Hyperparameters()


def parse_request(body: dict[str, Any]) -> JobRequest:
    """Validate a request body; the ConfigError names the parameter (``method.supervised.hyperparameters.n_epochs``)."""
    try:
        return JobRequest.model_validate(body)
    except ValidationError as err:
        param, msg = request_error(err.errors()[0], TAGGED_UNIONS)
        raise ConfigError(f"{param}: {msg}", param=param) from None


def build_training_config(
    request: JobRequest,
    *,
    preset: str,
    data_path: str | None,
    output_dir: str,
    validation_path: str | None = None,
    model_path: str | None = None,
    run_id: str | None = None,
    base_model: str | None = None,
    init_adapter: str | None = None,
    records: int | None = None,
) -> tuple[TrainingConfig, dict[str, Any]]:
    """The run's ``TrainingConfig`` and the resolved hyperparameters shown on the job.

    ``preset`` is the concrete preset (the worker resolves ``auto`` from its accelerator). The absolute
    ``learning_rate`` extension overrides ``learning_rate_multiplier``. A ``wandb`` integration turns on W&B
    reporting with its project, entity, name and tags; ``run_id`` (the job id) keeps one W&B run across attempts.
    ``base_model``: the base a fine-tuned ``model`` was trained on; ``init_adapter``: its adapter, on local disk.
    DPO's "auto" beta is ``DPO_BETA``, and its "auto" epochs and batch size come from ``records`` (the pairs; counted
    from ``data_path`` when not given) by ``dpo_auto``.
    """
    hp = request.effective_hyperparameters()
    dpo = request.method_type == "dpo"
    base = PresetConfigs.get(preset)
    if dpo and records is None and data_path is not None and Path(data_path).is_file():
        records = _count_records(data_path)
    values: dict[str, Any] = {
        "model_name": model_path or base_model or request.model,
        "method": "sft",
        "init_adapter": init_adapter,
        "data_path": data_path,
        "validation_file": validation_path,
        "output_dir": output_dir,
        "num_train_epochs": hp.n_epochs if hp.n_epochs != "auto" else base.num_train_epochs,  # auto: the preset's
        "seed": request.seed if request.seed is not None else 42,
        "logging_steps": 1,
        "report_to": ["tensorboard"],
    }
    wandb = next((i.wandb for i in request.integrations or [] if i.type == "wandb"), None)
    if wandb is not None:
        values.update(
            report_to=["tensorboard", "wandb"],
            wandb_project=wandb.project,
            wandb_entity=wandb.entity,
            wandb_tags=wandb.tags or [],
            run_name=wandb.name or run_id,
            wandb_run_id=run_id,
        )
    if dpo and records:
        epochs, batch = dpo_auto(records, base.per_device_train_batch_size * base.gradient_accumulation_steps)
        if hp.n_epochs == "auto":
            values["num_train_epochs"] = epochs
        if hp.batch_size == "auto":
            values["per_device_train_batch_size"], values["gradient_accumulation_steps"] = batch, 1
    if hp.batch_size != "auto":
        values["per_device_train_batch_size"] = hp.batch_size
        values["gradient_accumulation_steps"] = 1
    multiplier = hp.learning_rate_multiplier if hp.learning_rate_multiplier != "auto" else 1.0
    values["learning_rate"] = request.learning_rate or base.learning_rate * multiplier
    beta = None
    if dpo:
        beta = hp.beta if isinstance(hp, DpoHyperparameters) and hp.beta != "auto" else DPO_BETA
        values["method"] = "dpo"
    if isinstance(request.method, ReinforcementMethod):
        values.update(method="rft", rft=rft_settings(request.method))
    if request.quantization is not None:
        values["load_in_4bit"] = request.quantization == "4bit"
        values["load_in_8bit"] = request.quantization == "8bit"
    for field in ("max_length", "packing", "train_on_prompt", "max_steps", "save_steps"):
        value = getattr(request, field)
        if value is not None:
            values[field] = value
    if request.lora is not None:
        values["lora"] = request.lora
    settings = request.eval or JobEval()
    if settings.holdout:
        if validation_path:
            raise ConfigError(
                "eval.holdout: the job has a validation_file; hold records out or give one, not both",
                param="eval.holdout",
            )
        values["validation_split"] = settings.holdout
    if validation_path or settings.holdout:
        values.update(eval_items=settings.max_items, eval_max_new_tokens=settings.max_new_tokens)
    if init_adapter is not None:
        values["lora"] = init_adapter_shape(Path(init_adapter))  # training continues that adapter: its shape
    try:
        config = base.update(**values)
    except ConfigError as err:  # a request field: named by where pydantic says the config failed
        raise ConfigError(str(err), param=_request_param(err.loc, request.method_type)) from None
    if request.config_changes():
        try:
            config = config.update(**request.config_changes())
        except ConfigError as err:  # the raw ``config`` extension: its own path inside it
            raise ConfigError(str(err), param=".".join(("config", *(err.loc or ())))) from None
    if beta is not None:
        config = config.update(dpo={"beta": beta})
    shown = {
        "n_epochs": config.num_train_epochs if hp.n_epochs == "auto" else hp.n_epochs,
        "batch_size": config.per_device_train_batch_size * config.gradient_accumulation_steps,
        "learning_rate_multiplier": multiplier,
        "learning_rate": config.learning_rate,
        "preset": preset,
    }
    if beta is not None:
        shown["beta"] = beta
    if config.method == "rft":
        shown.update(
            eval_interval=config.rft.eval_interval or config.save_steps,
            eval_samples=config.rft.eval_samples,
            compute_multiplier=config.rft.num_generations / RFT_SAMPLES,
        )
    return config, shown


def dpo_auto(pairs: int, preset_batch: int) -> tuple[int, int]:
    """DPO's ``auto`` epochs and batch size for ``pairs`` training pairs (``DPO_TARGET_PAIRS``)."""
    usual, fewest, most = DPO_EPOCHS
    if pairs * usual < DPO_TARGET_PAIRS:
        epochs = min(most, math.ceil(DPO_TARGET_PAIRS / pairs))
    elif pairs * usual > 25_000:
        epochs = max(fewest, 25_000 // pairs)
    else:
        epochs = usual
    return epochs, max(1, min(preset_batch, math.ceil(pairs * DPO_BATCH_SHARE)))


def _count_records(path: str) -> int:
    from sage_ft.data.loader import read_file

    return len(read_file(path).records)


def rft_settings(method: ReinforcementMethod) -> dict[str, Any]:
    """``TrainingConfig.rft`` from OpenAI's reinforcement method: the grader, and the samples per prompt."""
    hp = method.hyperparameters
    multiplier = hp.compute_multiplier if hp.compute_multiplier != "auto" else 1.0
    settings: dict[str, Any] = {
        "grader": method.reinforcement.grader.model_dump(mode="json", exclude_none=True),
        "num_generations": max(2, min(64, round(RFT_SAMPLES * multiplier))),
    }
    if method.reinforcement.response_format is not None:
        settings["response_format"] = method.reinforcement.response_format.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    if hp.eval_interval != "auto":
        settings["eval_interval"] = hp.eval_interval
    if hp.eval_samples != "auto":
        settings["eval_samples"] = hp.eval_samples
    return settings


def requested_hyperparameters(request: JobRequest) -> dict[str, Any]:
    """The hyperparameters a job shows until a worker resolves its config: what the request set, the defaults that do
    not depend on where it trains (a learning-rate multiplier of 1, DPO's beta), and ``auto`` for what the preset
    decides there (epochs, batch size). Never a stand-in preset's values, which the run may not use."""
    hp = request.effective_hyperparameters()
    shown: dict[str, Any] = {
        "n_epochs": hp.n_epochs,
        "batch_size": hp.batch_size,
        "learning_rate_multiplier": hp.learning_rate_multiplier if hp.learning_rate_multiplier != "auto" else 1.0,
    }
    if request.preset is not None:  # else the worker's own default preset decides
        shown["preset"] = request.preset
    if request.learning_rate is not None:
        shown["learning_rate"] = request.learning_rate
    if request.method_type == "dpo":
        shown["beta"] = hp.beta if isinstance(hp, DpoHyperparameters) and hp.beta != "auto" else DPO_BETA
    if isinstance(hp, ReinforcementHyperparameters):
        shown.update(eval_interval=hp.eval_interval, eval_samples=hp.eval_samples)
        shown["compute_multiplier"] = hp.compute_multiplier if hp.compute_multiplier != "auto" else 1.0
    return shown


# Config fields set from request fields of another name.
_CONFIG_TO_PARAM = {
    "num_train_epochs": "method.hyperparameters.n_epochs",
    "per_device_train_batch_size": "method.hyperparameters.batch_size",
    "gradient_accumulation_steps": "method.hyperparameters.batch_size",
    "load_in_4bit": "quantization",
    "load_in_8bit": "quantization",
}


def _request_param(loc: tuple[str, ...] | None, method: str) -> str | None:
    """The request parameter behind a failing config location (``("lora", "r")`` -> ``lora.r``)."""
    if not loc:
        return None
    mapped = _CONFIG_TO_PARAM.get(loc[0])
    return mapped.replace("method.", f"method.{method}.") if mapped else ".".join(loc)
