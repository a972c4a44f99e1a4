"""Resolving and loading base models: local names, directories or hub ids; full precision or bitsandbytes.

Precision and optimizer requests that the current device cannot honour (fp16 or paged 8-bit optimizers on a CPU)
are downgraded with a warning, so a GPU preset still runs, slowly but correctly, on a laptop or in CI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_ft.config import TrainingConfig
from sage_ft.errors import ConfigError, ModelNotFoundError
from sage_ft.settings import path_settings, training_env_settings
from sage_ft.training.attention import AttentionChoice
from sage_ft.training.chat import ensure_chat_template

log = logging.getLogger(__name__)


def resolve_model(name: str, models_root: Path | None = None) -> str:
    """A directory path, ``<models_root>/<name>`` if it exists, or else ``name`` as a hub id."""
    as_path = Path(name).expanduser()
    if as_path.is_dir():
        return str(as_path)
    root = models_root or path_settings().resolved_models_root()
    local = root / name
    if local.is_dir() and (local / "config.json").exists():
        return str(local)
    return name


def adapter_base_model(adapter_dir: Path) -> str:
    """The resolved base model of an adapter: from sage_ft.json when we wrote it, else PEFT's adapter_config."""
    meta = adapter_dir / "sage_ft.json"
    if meta.exists():
        data = json.loads(meta.read_text(encoding="utf-8"))
        trained_on = data.get("base_model_path")
        if trained_on and Path(trained_on).is_dir():
            return str(trained_on)
        name = str(data["base_model"])  # moved to another machine: resolve the name there
    else:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        name = str(cfg["base_model_name_or_path"])
    return resolve_model(name)


@dataclass(frozen=True)
class Runtime:
    """What the run will actually use, after matching the config to the hardware."""

    device: str
    fp16: bool
    bf16: bool
    optim: str
    compute_dtype: str  # torch dtype name for weights / 4-bit compute

    def notes(self, config: TrainingConfig) -> list[str]:
        out = []
        if config.fp16 and not self.fp16:
            out.append(f"fp16 requested but unsupported on {self.device}; training in {self.compute_dtype}")
        if config.bf16 and not self.bf16:
            out.append(f"bf16 requested but unsupported on {self.device}; training in {self.compute_dtype}")
        if config.optim != self.optim:
            out.append(f"optimizer {config.optim} needs CUDA; using {self.optim} on {self.device}")
        return out


def plan_runtime(config: TrainingConfig) -> Runtime:
    import torch

    if torch.cuda.is_available():
        bf16 = config.bf16 and torch.cuda.is_bf16_supported()
        fp16 = config.fp16 or (config.bf16 and not bf16)
        dtype = "bfloat16" if bf16 else "float16" if fp16 else "float32"
        return Runtime("cuda", fp16=fp16, bf16=bf16, optim=config.optim, compute_dtype=dtype)
    optim = config.optim
    if "paged" in optim or "8bit" in optim:
        optim = "adamw_torch"
    return Runtime("cpu", fp16=False, bf16=False, optim=optim, compute_dtype="float32")


def _hub_error(name: str, err: Exception) -> ModelNotFoundError:
    root = path_settings().resolved_models_root()
    local = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    import difflib

    close = difflib.get_close_matches(name, local, n=3)
    hint = (
        f" Closest local models: {', '.join(close)}."
        if close
        else (f" Local models in {root}: {', '.join(local)}." if local else "")
    )
    return ModelNotFoundError(
        f"model '{name}' was not found locally and could not be loaded from the hub ({type(err).__name__}).{hint}"
    )


def check_remote_code(config: TrainingConfig) -> None:
    if config.trust_remote_code and not training_env_settings().allow_remote_code:
        raise ConfigError(
            "trust_remote_code is disabled on this installation "
            "(an operator can allow it with SAGE_TRAIN_ALLOW_REMOTE_CODE=true)"
        )


def load_tokenizer(model_path: str, config: TrainingConfig) -> Any:
    from transformers import AutoTokenizer

    check_remote_code(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_path,
            trust_remote_code=config.trust_remote_code,
            local_files_only=training_env_settings().offline,
        )
    except (OSError, ValueError) as err:
        raise _hub_error(config.model_name, err) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"model '{config.model_name}' has no fast tokenizer; one is needed for loss masking")
    ensure_chat_template(tokenizer)
    return tokenizer


def quantization_config(config: TrainingConfig, runtime: Runtime) -> Any:
    if not config.quantization:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if config.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=config.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=getattr(torch, runtime.compute_dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def model_head_dim(model_path: str, config: TrainingConfig) -> int:
    """The attention head size of the model at ``model_path``, from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(
            model_path, trust_remote_code=config.trust_remote_code, local_files_only=training_env_settings().offline
        )
    except (OSError, ValueError) as err:
        raise _hub_error(config.model_name, err) from None
    text = model_config.get_text_config()
    head_dim = getattr(text, "head_dim", None)
    return int(head_dim or text.hidden_size // text.num_attention_heads)


def load_model(
    model_path: str, config: TrainingConfig, runtime: Runtime, tokenizer: Any, attention: AttentionChoice | None = None
) -> Any:
    """The base model, quantized if asked and prepared for k-bit training, with gradient checkpointing set.
    ``attention``: the packed-attention backend of a packed run (None: the model's default attention)."""
    import torch
    from transformers import AutoModelForCausalLM

    quant = quantization_config(config, runtime)
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, runtime.compute_dtype),
        "trust_remote_code": config.trust_remote_code,
        "use_safetensors": True,
        "local_files_only": training_env_settings().offline,
    }
    if attention is not None:
        kwargs["attn_implementation"] = attention.implementation
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": 0} if runtime.device == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except OSError as err:
        raise _hub_error(config.model_name, err) from None
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if runtime.device == "cuda" and quant is None:
        model = model.to("cuda")
    return model
