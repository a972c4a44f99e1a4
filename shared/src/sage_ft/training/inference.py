"""Local generation with a trained adapter or merged model: used by the demo, tests and benchmarks.

Serving uses vLLM in production; this path exists so the Python API can check a fine-tune with no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sage_ft.training.chat import ensure_chat_template, render_prompt
from sage_ft.training.loading import adapter_base_model


def load_for_inference(model_dir: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from an adapter directory (base + adapter) or a merged/plain model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir).expanduser()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tokenizer)
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base_path = adapter_base_model(path)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True)
        model: Any = PeftModel.from_pretrained(base, path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    model.eval()
    return model, tokenizer


def generate_reply(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    max_new_tokens: int = 128,
    response_format: dict[str, Any] | None = None,
) -> str:
    """Greedy completion of the next assistant turn, rendered with the model's chat template; held to
    ``response_format`` where it names a JSON format (``sage_ft.training.constrained``)."""
    import torch

    from sage_ft.training.constrained import processor_factory

    prompt = render_prompt(tokenizer, messages)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    eos = [t for t in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int)]
    make = processor_factory(tokenizer, response_format, eos)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=[make()] if make else None,
        )
    text: str = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return text.strip()
