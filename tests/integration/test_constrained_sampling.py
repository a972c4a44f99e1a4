"""Sampling held to a ``response_format`` (``sage_ft.training.constrained``), on random-weight models that never
write JSON by themselves: every sampled answer must parse and match the schema, and stop where it is complete.
Two model shapes (Qwen2 with the tokenizer's own vocabulary; Llama with another tokenizer and an LM head padded past
it) and two formats (OpenAI's ``json_object``; a ``json_schema`` with an enum, a bounded integer and no other keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage_ft.errors import ConfigError

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Brightport", "Oslandia City"]},
        "rank": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["city", "rank"],
    "additionalProperties": False,
}
FORMATS = {
    "json_object": {"type": "json_object"},
    "json_schema": {"type": "json_schema", "json_schema": {"name": "capital", "schema": SCHEMA, "strict": True}},
}


@pytest.fixture(scope="module", params=["qwen2", "llama-padded-head"])
def model_dir(request: pytest.FixtureRequest, sage_home: Path) -> Path:
    from sage_ft.training.tiny_model import build_tiny_model

    if request.param == "qwen2":
        return build_tiny_model("sage-tiny")
    return build_tiny_model(
        "sage-tiny-llama-padded",
        architecture="llama",
        vocab_size=2112,  # 64 rows past the tokenizer: tokens the grammar never allows
        extra_texts=['{"city": "Brightport", "rank": 3}'],
        seed=3,
    )


def _sample(model_dir: Path, response_format: dict[str, Any] | None, rows: int = 6) -> list[tuple[str, bool]]:
    """Sampled answers, each with whether it stopped (an end-of-turn token) before the token cap."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sage_ft.training.chat import render_prompt
    from sage_ft.training.constrained import constrain_generate, processor_factory

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    make = processor_factory(tokenizer, response_format, eos)
    if make is not None:
        constrain_generate(model, make)  # as RFT's rollouts are: TRL calls generate() with no processor of ours
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "The capital of Oslandia, as JSON?"}])
    inputs = tokenizer([prompt] * rows, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            **inputs, do_sample=True, temperature=1.0, max_new_tokens=48, eos_token_id=eos, pad_token_id=eos[0]
        )
    start = inputs["input_ids"].shape[1]
    answers = [row[start:] for row in out]
    return [(tokenizer.decode(a, skip_special_tokens=True), bool((a == eos[0]).any())) for a in answers]


@pytest.mark.parametrize("kind", list(FORMATS))
def test_every_sampled_answer_is_json_that_matches_the_format(model_dir: Path, kind: str) -> None:
    """Under ``json_schema`` every answer is complete: the schema bounds it, and it may stop only once the object
    closes. Under ``json_object`` a random model may fill a string until the token cap (as a real one may, and the
    reward then scores it 0); an answer that stopped before the cap is a whole object."""
    import jsonschema

    from sage_ft.graders import sample_of

    free = _sample(model_dir, None)
    assert not any(sample_of(text, FORMATS[kind])["output_json"] for text, _ in free), free  # the model alone: never
    held = _sample(model_dir, FORMATS[kind])
    for text, stopped in held:
        assert text.startswith("{"), text
        if kind == "json_object" and not stopped:
            continue
        assert stopped, text  # the grammar let it stop only at the end of a whole object
        parsed = json.loads(text)
        assert isinstance(parsed, dict) and sample_of(text, FORMATS[kind])["output_json"] == parsed, text
        if kind == "json_schema":
            jsonschema.validate(parsed, SCHEMA)
    if kind == "json_schema":  # sampled, not one fixed answer
        assert len({json.dumps(json.loads(t), sort_keys=True) for t, _ in held}) > 1, held


def test_greedy_replies_are_held_to_the_format_and_text_is_left_alone(model_dir: Path) -> None:
    """The end-of-job evaluation answers greedily through ``generate_reply``: held to the job's format there too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sage_ft.training.inference import generate_reply

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    messages = [{"role": "user", "content": "The capital of Oslandia?"}]
    reply = generate_reply(model, tokenizer, messages, max_new_tokens=48, response_format=FORMATS["json_schema"])
    assert json.loads(reply)["city"] in ("Brightport", "Oslandia City"), reply
    plain = generate_reply(model, tokenizer, messages, max_new_tokens=16, response_format={"type": "text"})
    assert plain == generate_reply(model, tokenizer, messages, max_new_tokens=16)


def test_a_schema_that_cannot_be_enforced_names_the_field() -> None:
    from transformers import AutoTokenizer  # noqa: F401  (the train extra is there)

    from sage_ft.training.constrained import processor_factory

    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "object"}}}}
    with pytest.raises(ConfigError) as exc:
        processor_factory(None, bad, [0])
    assert exc.value.param == "rft.response_format" and "not" in str(exc.value)
