"""An offline stand-in for a hub model: a BPE tokenizer trained here and a small random Qwen2.

No model hub is reachable on CI machines, so tests, the demo and benchmarks build this instead. It has the same
architecture, file layout and chat template conventions as ``Qwen/Qwen2.5-*-Instruct`` (ChatML, ``<|im_end|>`` as
EOS), and head_dim 64 so the vLLM CPU build accepts it. It is written into the local models root, where the rest of
the stack finds local models by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from sage_ft.data.builtin import BUILTIN_TASKS, builtin_dataset_path
from sage_ft.fsutil import atomic_directory
from sage_ft.settings import path_settings
from sage_ft.training.chat import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EXTRA_CORPUS = (
    "The quick brown fox jumps over the lazy dog. sage-ft fine-tunes language models with LoRA adapters. "
    "def main():\n    return 0\nimport os, sys, json\nfor i in range(10):\n    print(i)\n"
    "system user assistant question answer context instruction input output\n"
)


def _corpus(extra_texts: list[str] | None) -> list[str]:
    texts = [EXTRA_CORPUS]
    for task in BUILTIN_TASKS:
        texts.extend(builtin_dataset_path(task).read_text(encoding="utf-8").splitlines())
        # decoded JSON text too, so merges cover the content rather than only its escaped form
        texts.extend(
            str(v)
            for line in builtin_dataset_path(task).read_text(encoding="utf-8").splitlines()
            for v in _strings(json.loads(line))
        )
    texts.extend(extra_texts or [])
    return texts


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def build_tokenizer(extra_texts: list[str] | None = None, vocab_size: int = 2048):  # type: ignore[no-untyped-def]
    """Byte-level BPE trained on the built-in datasets, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(extra_texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.model_max_length = 2048
    return fast


def build_tiny_model(
    name: str = "sage-tiny",
    *,
    models_root: Path | None = None,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    init_std: float = 0.1,
    extra_texts: list[str] | None = None,
    architecture: str = "qwen2",
    max_positions: int = 2048,
    tie_embeddings: bool = True,
    num_kv_heads: int | None = None,
    vocab_size: int | None = None,
    intermediate_size: int | None = None,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """Write tokenizer + random-weight Qwen2 or Llama (safetensors) to ``<models_root>/<name>`` and return the path.

    The shape knobs (``architecture``, ``max_positions``, ``tie_embeddings``, sizes) give tests models that differ
    the way users' models do. ``num_kv_heads`` below ``num_heads`` makes grouped-query attention; ``vocab_size``
    above the tokenizer's pads the embedding and LM head (as Qwen2.5's 151,936 rows do for 151,665 tokens), which
    sets the LM head's share of the FLOPs without changing tokenization. ``intermediate_size`` defaults to three
    times the hidden size. ``dtype`` and ``device`` say where the weights are made: a billion-parameter shape
    (``benchmarks/gpu_train.py``) is initialized on the GPU in bf16, not in fp32 on the CPU. Reuses an existing build
    unless ``overwrite``. The directory appears atomically.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if architecture not in ("qwen2", "llama"):
        raise ValueError(f"architecture must be qwen2 or llama, got {architecture!r}")

    root = (models_root or path_settings().resolved_models_root()).expanduser()
    target = root / name
    if (target / "config.json").exists() and not overwrite:
        return target
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_texts)
    head_dim = hidden_size // num_heads
    if head_dim < 64:
        raise ValueError("head_dim must be >= 64 (vLLM CPU kernels require it)")
    config_class, model_class = (
        (Qwen2Config, Qwen2ForCausalLM) if architecture == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    )
    tokenizer.model_max_length = max_positions
    config = config_class(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 3,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
        # Wide init so logits can be sharp: with the usual 0.02 a tied 128-wide head caps logit gaps near 3,
        # and loss could not fall far however well the adapter learns.
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_class._from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=config.bos_token_id,
        do_sample=False,
    )
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target
