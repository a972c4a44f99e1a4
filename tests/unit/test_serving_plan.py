"""The pre-deploy plan: engine arguments derived from differently shaped models and adapters, and refusals that
name their reason. Integration tests start real vLLM servers with these plans (test_serving_shapes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from sage_ft_serving.plan import (
    GIB,
    Inputs,
    Limits,
    NotServableError,
    kv_bytes_per_token,
    make_plan,
    model_context_length,
    rank_slot,
)

QWEN = {
    "model_type": "qwen2",
    "max_position_embeddings": 32768,
    "hidden_size": 1536,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "torch_dtype": "bfloat16",
    "sliding_window": 32768,
    "use_sliding_window": False,
}
SMALL = {
    "model_type": "llama",
    "max_position_embeddings": 1024,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": 2048,
    "torch_dtype": "float32",
}
CPU = Limits(
    max_model_len=32768, max_lora_rank=512, gpu=False, kv_cache_gb=1, gpu_memory_gb=0, gpu_memory_utilization=0.9
)
LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA", "bias": "none"}


def inputs(config: dict[str, Any] | None, adapter: dict[str, Any] | None = LORA, **kw: Any) -> Inputs:
    base = {
        "base_config": config,
        "tokenizer_config": None,
        "weights_bytes": 0,
        "adapter_config": adapter,
        "adapter_tokenizer": None,
        "training_max_length": None,
    }
    return Inputs(**{**base, **kw})


@pytest.mark.parametrize(
    ("config", "tokenizer", "expected"),
    [
        (QWEN, {"model_max_length": 131072}, 32768),
        (SMALL, None, 1024),
        (SMALL, {"model_max_length": 512}, 512),  # the tokenizer is stricter
        ({**SMALL, "rope_scaling": {"rope_type": "linear", "factor": 4.0}}, None, 4096),
        ({**SMALL, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, None, 2048),  # old key name
        ({**SMALL, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, None, 1024),  # already scaled
        ({**SMALL, "max_position_embeddings": 4096, "n_positions": 2048}, None, 2048),  # the smallest key wins
        ({"text_config": SMALL, "model_type": "llava"}, None, 1024),  # multimodal: the text part
        ({"hidden_size": 64}, None, None),  # nothing to derive from
    ],
)
def test_context_length_comes_from_the_model(config: dict, tokenizer: dict | None, expected: int | None) -> None:
    assert model_context_length(config, tokenizer) == expected


def test_the_setting_caps_the_context_and_the_model_caps_the_setting() -> None:
    small = make_plan(True, inputs(SMALL), CPU)
    assert small.max_model_len == 1024 and any("model's own limit" in n for n in small.notes)
    capped = make_plan(True, inputs(QWEN), Limits(**{**CPU.__dict__, "max_model_len": 4096, "kv_cache_gb": 4}))
    assert capped.max_model_len == 4096 and not capped.notes
    trained = make_plan(True, inputs(SMALL, training_max_length=2048), CPU)
    assert any("fine-tuned on sequences of up to 2048" in n for n in trained.notes)


def test_kv_cache_memory_cuts_the_context_or_refuses() -> None:
    per_token = kv_bytes_per_token(QWEN)
    assert per_token == 2 * 28 * 2 * 128 * 2  # K and V, layers, KV heads, head_dim, bf16
    plan = make_plan(True, inputs(QWEN), Limits(**{**CPU.__dict__, "kv_cache_gb": 0.25}))
    fits = int(0.25 * GIB // per_token) // 16 * 16
    assert plan.max_model_len == fits < 32768 and any("VLLM_CPU_KVCACHE_SPACE" in n for n in plan.notes)
    with pytest.raises(NotServableError, match="does not fit") as err:
        make_plan(True, inputs(QWEN), Limits(**{**CPU.__dict__, "kv_cache_gb": 0.0001}))
    assert err.value.code == "model_too_large"
    gpu = Limits(**{**CPU.__dict__, "gpu": True, "gpu_memory_gb": 4})
    with pytest.raises(NotServableError, match="GPU memory"):
        make_plan(True, inputs(QWEN, weights_bytes=4 * GIB), gpu)  # weights alone fill the card
    assert make_plan(True, inputs(QWEN, weights_bytes=3 * GIB), gpu).max_model_len < 32768


@pytest.mark.parametrize(
    ("rank", "slot"), [(1, 1), (2, 8), (8, 8), (16, 16), (100, 128), (128, 128), (300, 320), (512, 512), (513, None)]
)
def test_rank_slot_is_the_smallest_vllm_size_that_holds_the_adapter(rank: int, slot: int | None) -> None:
    assert rank_slot(rank) == slot


def test_adapter_rank_sets_the_slot_including_rank_pattern() -> None:
    assert make_plan(True, inputs(SMALL, {**LORA, "r": 8}), CPU).lora_rank == 8
    plan = make_plan(True, inputs(SMALL, {**LORA, "r": 8, "rank_pattern": {"v_proj": 100}}), CPU)
    assert (plan.mode, plan.lora_rank, plan.adapter_rank) == ("adapter", 128, 100)


@pytest.mark.parametrize(
    ("adapter", "tokenizer", "reason"),
    [
        ({**LORA, "modules_to_save": ["lm_head"]}, None, "modules_to_save: lm_head"),
        ({**LORA, "trainable_token_indices": [5, 6]}, None, "trainable_token_indices"),
        ({**LORA, "target_modules": ["q_proj", "embed_tokens"]}, None, "embed_tokens"),
        ({**LORA, "use_dora": True}, None, "DoRA"),
        ({**LORA, "bias": "lora_only"}, None, "biases"),
        ({**LORA, "r": 1024}, None, "rank 1024"),
        (LORA, {"model": {"vocab": {f"t{i}": i for i in range(2048)}}, "added_tokens": [{"id": 2048}]}, "2049 tokens"),
    ],
)
def test_what_vllm_cannot_hot_load_is_served_merged_and_says_why(adapter: dict, tokenizer: Any, reason: str) -> None:
    plan = make_plan(True, inputs(SMALL, adapter, adapter_tokenizer=tokenizer), CPU)
    assert plan.mode == "merged" and plan.part == "merged" and plan.lora_rank is None
    assert plan.reason is not None and reason in plan.reason


def test_a_classifier_head_and_a_fitting_tokenizer_still_hot_load() -> None:
    tok = {"model": {"vocab": {f"t{i}": i for i in range(2000)}}, "added_tokens": [{"id": 2040}]}
    plan = make_plan(True, inputs(SMALL, {**LORA, "modules_to_save": ["score"]}, adapter_tokenizer=tok), CPU)
    assert plan.mode == "adapter"


def test_the_operator_rank_cap_sends_larger_adapters_to_merged() -> None:
    capped = Limits(**{**CPU.__dict__, "max_lora_rank": 64})
    assert make_plan(True, inputs(SMALL, {**LORA, "r": 128}), capped).mode == "merged"
    assert make_plan(True, inputs(SMALL, {**LORA, "r": 64}), capped).lora_rank == 64


def test_an_engine_without_hot_loading_always_serves_merged() -> None:
    plan = make_plan(False, inputs(SMALL), CPU)
    assert plan.mode == "merged" and plan.reason is None


def test_an_unreadable_base_config_leaves_the_context_to_the_engine() -> None:
    plan = make_plan(True, inputs(None), CPU)
    assert plan.max_model_len is None and plan.lora_rank == 8 and plan.notes


def test_an_unsupported_dtype_is_refused() -> None:
    with pytest.raises(NotServableError, match="float8_e4m3fn") as err:
        make_plan(True, inputs({**SMALL, "torch_dtype": "float8_e4m3fn"}), CPU)
    assert err.value.code == "unsupported_dtype"


def test_a_sentence_transformers_model_is_bounded_by_its_max_seq_length() -> None:
    bert = {
        "model_type": "bert",
        "max_position_embeddings": 512,
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
    }
    assert model_context_length(bert) == 512
    assert model_context_length(bert, None, {"max_seq_length": 256}) == 256  # what vLLM's pooling runner derives
