"""OpenAI's ``response_format`` as a JSON Schema and as a grammar that sampling can be held to.

``json_object`` is any JSON object; ``json_schema`` is its ``schema``; ``text`` (or none) constrains nothing. The
grammar comes from llguidance (the Guidance project's Rust engine, which vLLM also uses for structured outputs): it
compiles the schema and, while a model samples, says which tokens keep the answer inside it
(``sage_ft.training.constrained``). A schema it cannot enforce (``not``, ``if``/``then``, look-around in a
``pattern``) is refused when the job is created, naming the field, rather than sampled unconstrained.
"""

from __future__ import annotations

from typing import Any


def schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema an answer must match under ``response_format``, or None where any text will do."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema: dict[str, Any] = ((response_format or {}).get("json_schema") or {}).get("schema") or {}
        return schema
    return None


def grammar_of(schema: dict[str, Any]) -> str:
    """llguidance's grammar for ``schema``; ``ValueError`` (llguidance's reason) when it cannot be enforced."""
    import llguidance

    try:
        # compact separators: a flexible-whitespace grammar lets a model that has not learned the format yet pad
        # its answer with whitespace until the token cap, where the reward can only score it 0
        grammar: str = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
    except (ValueError, TypeError) as err:
        raise ValueError(f"cannot be enforced while sampling: {err}") from None
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise ValueError(f"cannot be enforced while sampling: {' '.join(problem.split())[:300]}")
    return grammar
