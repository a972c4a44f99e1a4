"""Merging a LoRA adapter into its **unquantized** base model, atomically.

A QLoRA adapter was trained against 4-bit weights, but merging into 4-bit weights would bake quantization error
into the result; the base is always reloaded in fp32/bf16/fp16 here. The merged model is written to a temporary
sibling directory and renamed into place only when complete, so a failure leaves nothing at ``output_dir``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from sage_ft.errors import MergeError
from sage_ft.fsutil import atomic_directory
from sage_ft.training.loading import adapter_base_model

MERGED_DTYPES = ("float32", "bfloat16", "float16")


def _default_dtype(adapter: Path) -> str:
    import torch

    if not torch.cuda.is_available():
        return "float32"
    meta = adapter / "sage_ft.json"
    cfg = json.loads(meta.read_text(encoding="utf-8")).get("config", {}) if meta.exists() else {}
    return "bfloat16" if cfg.get("bf16") else "float16" if cfg.get("fp16") else "float32"


def merge_adapter(
    adapter_dir: str | Path, output_dir: str | Path, *, dtype: str | None = None, base_model: str | None = None
) -> Path:
    """Merge ``adapter_dir`` into its base and write safetensors, tokenizer, chat template, generation config."""
    adapter = Path(adapter_dir).expanduser()
    target = Path(output_dir).expanduser()
    if not (adapter / "adapter_config.json").exists():
        raise MergeError(f"{adapter}: not a LoRA adapter directory (adapter_config.json missing)")
    dtype = dtype or _default_dtype(adapter)
    if dtype not in MERGED_DTYPES:
        raise MergeError(f"dtype must be one of {', '.join(MERGED_DTYPES)} (never a quantized type), got {dtype}")
    try:
        with atomic_directory(target) as tmp:
            _merge_into(adapter, tmp, dtype, base_model or adapter_base_model(adapter))
    except MergeError:
        raise
    except Exception as err:
        raise MergeError(f"merge of {adapter} failed: {type(err).__name__}: {err}") from err
    return target


def _merge_into(adapter: Path, out: Path, dtype: str, base_path: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base: Any = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype), use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    with contextlib.suppress(OSError):  # a base without generation_config.json: transformers derives one
        GenerationConfig.from_pretrained(base_path).save_pretrained(out)
    meta = {"merged_from": str(adapter), "base_model": base_path, "dtype": dtype}
    (out / "sage_ft_merge.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
