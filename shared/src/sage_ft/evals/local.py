"""``sage_ft.evaluate``: the comparison run in-process, on a model directory or an adapter, with no server.

The job's automatic evaluation uses ``answer_all`` on the model it just trained (the base's answers come from the
same weights with the adapter switched off), so library users, jobs and the CLI grade alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sage_ft.errors import ConfigError
from sage_ft.evals.compare import DEFAULT_SCORES, Case, cases_from, check_scores, compare


def answer_all(
    model: Any,
    tokenizer: Any,
    cases: list[Case],
    max_new_tokens: int = 64,
    response_format: dict[str, Any] | None = None,
) -> list[str]:
    """Greedy answers to every case's prompt (held to ``response_format``, an RFT job's, where it is JSON)."""
    from sage_ft.training.inference import generate_reply

    return [
        generate_reply(model, tokenizer, c.prompt, max_new_tokens=max_new_tokens, response_format=response_format)
        for c in cases
    ]


@contextlib.contextmanager
def adapter_off(model: Any) -> Iterator[Any]:
    """The base model's view of a PEFT model (its adapter disabled) for the duration."""
    if not hasattr(model, "disable_adapter"):
        raise ConfigError("against='base' needs an adapter (a directory with adapter_config.json)", param="against")
    with model.disable_adapter():
        yield model


def _label(path: Path, taken: set[str]) -> str:
    name = path.name or str(path)
    return name if name not in taken else f"{name} ({path})"


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    against: str | Path | None = "base",
    metrics: tuple[str, ...] | list[str] = DEFAULT_SCORES,
    max_items: int | None = 100,
    max_new_tokens: int = 64,
) -> dict[str, Any]:
    """Answer the held-out records of ``data`` (any training format) with ``model`` and with ``against`` (``"base"``:
    the adapter's base model; a path: another model or adapter; None: no comparison), and score both.

    Returns ``sage_ft.evals.compare``'s report: ``models`` (mean per metric per model), ``delta`` and ``items``.
    """
    from sage_ft.data.validate import load_conversations
    from sage_ft.training.inference import load_for_inference

    names = check_scores(list(metrics))
    cases = cases_from(load_conversations(data), max_items)
    if not cases:
        raise ConfigError(f"{data}: no record has an assistant answer to compare with", param="data")
    path = Path(model).expanduser()
    tuned, tokenizer = load_for_inference(path)
    label = _label(path, set())
    answers = {label: answer_all(tuned, tokenizer, cases, max_new_tokens)}
    if against == "base":
        with adapter_off(tuned):
            answers["base"] = answer_all(tuned, tokenizer, cases, max_new_tokens)
    elif against is not None:
        other_path = Path(against).expanduser()
        other, other_tokenizer = load_for_inference(other_path)
        answers[_label(other_path, {label})] = answer_all(other, other_tokenizer, cases, max_new_tokens)
    return compare(cases, answers, names)
