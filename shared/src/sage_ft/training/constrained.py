"""Sampling held to a ``response_format``, as OpenAI's structured outputs are: at each step a row may only take a
token that keeps its answer a prefix of some JSON the schema accepts, and it may stop only where the answer is
complete. llguidance's matcher (one per row) computes the allowed tokens as a bitmask; it is applied to the logits in
plain eager torch (llguidance's own helper is ``torch.compile``d, which would cost the first call tens of seconds on a
CPU). Used by RFT's transformers rollouts and by the end-of-job evaluation; vLLM serving takes ``response_format``
itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

from transformers import LogitsProcessor

from sage_ft.errors import ConfigError
from sage_ft.response_format import grammar_of, schema_of

log = logging.getLogger(__name__)


class ResponseFormatProcessor(LogitsProcessor):
    """A transformers logits processor for one ``generate`` call (it keeps each row's place in the grammar).

    A row whose answer is whole may only end; once it has, the tokens generation pads it with are not fed to its
    matcher.
    """

    def __init__(self, tokenizer: Any, grammar: str, eos_token_ids: list[int]) -> None:
        self.tokenizer, self.grammar, self.eos = tokenizer, grammar, eos_token_ids
        self.matchers: list[Any] = []
        self.free: list[bool] = []  # a row whose token the grammar refused (never, short of a bug): left unconstrained

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance
        import llguidance.hf
        import torch

        rows, vocab = scores.shape
        if not self.matchers:  # the first step: the prompts alone
            lltok = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=vocab, eos_token=self.eos)
            self.matchers = [llguidance.LLMatcher(lltok, self.grammar) for _ in range(rows)]
            self.free = [False] * rows
        else:
            for i, matcher in enumerate(self.matchers):
                if not (self.free[i] or matcher.is_stopped()) and not matcher.consume_token(int(input_ids[i, -1])):
                    log.warning("response_format: row %d left its grammar (%s); unconstrained", i, matcher.get_error())
                    self.free[i] = True
        words = (vocab + 31) // 32
        bitmask = torch.full((rows, words), -1, dtype=torch.int32)
        # a stopped matcher (a whole answer) allows the end-of-sequence tokens alone; the rows' masks are computed
        # in parallel by llguidance's thread pool, straight into the tensor
        work = [(matcher, i) for i, matcher in enumerate(self.matchers) if not self.free[i]]
        if work:
            _executor().unsafe_compute_mask_ptr(work, bitmask.data_ptr(), words * 4, rows)
        bits = bitmask.to(scores.device)  # unpacked where the logits are: 32 x fewer bytes cross to a GPU
        shifts = torch.arange(32, dtype=torch.int32, device=scores.device)
        allowed = ((bits.unsqueeze(-1) >> shifts) & 1).reshape(rows, words * 32)[:, :vocab].bool()
        return scores.masked_fill(~allowed, float("-inf"))


@cache
def _executor() -> Any:
    import llguidance

    return llguidance.LLExecutor()


def processor_factory(
    tokenizer: Any, response_format: dict[str, Any] | None, eos_token_ids: list[int]
) -> Callable[[], ResponseFormatProcessor] | None:
    """A maker of fresh processors (one per ``generate`` call) for ``response_format``, or None where it constrains
    nothing (``text``, or none). A schema that cannot be enforced is a ``ConfigError`` naming
    ``rft.response_format``."""
    schema = schema_of(response_format)
    if schema is None:
        return None
    try:
        grammar = grammar_of(schema)
    except ValueError as err:
        raise ConfigError(f"rft.response_format: {err}", param="rft.response_format") from None
    eos = [int(t) for t in eos_token_ids]
    return lambda: ResponseFormatProcessor(tokenizer, grammar, eos)


def constrain_generate(model: Any, make: Callable[[], ResponseFormatProcessor]) -> None:
    """Make every ``model.generate`` call hold its samples to the grammar: the callers are TRL's (GRPO's rollouts),
    which take no logits processor, so the instance's ``generate`` adds one, fresh for each call."""
    from transformers import LogitsProcessorList

    generate = model.generate

    def constrained(*args: Any, **kwargs: Any) -> Any:
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        if not any(isinstance(p, ResponseFormatProcessor) for p in processors):  # a caller's own comes first
            processors.append(make())
        return generate(*args, logits_processor=processors, **kwargs)

    model.generate = constrained
