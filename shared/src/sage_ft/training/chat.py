"""Turning conversations into token ids and a loss mask, through the model's own chat template.

The assistant spans are found by rendering prefixes of the conversation with the same template serving uses:
``render(messages[:i], add_generation_prompt=True)`` ends where assistant message ``i`` begins and
``render(messages[:i + 1])`` ends where it stops (its end-of-turn token included). Characters map to tokens
through the fast tokenizer's offsets, so the ids are exactly what the full rendered text tokenizes to.
The result feeds TRL's ``SFTTrainer`` as a pre-tokenized dataset with an ``assistant_masks`` column; TRL builds
the labels, truncates and packs.
"""

from __future__ import annotations

from typing import Any

from sage_ft.errors import DataError

# ChatML, as used by Qwen2/2.5. Installed only when a tokenizer has no template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer: Any) -> None:
    """Give the tokenizer a pad token and a chat template if it lacks them (base models often do)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
        specials = [t for t in ("<|im_start|>", "<|im_end|>") if t not in tokenizer.get_vocab()]
        if specials:
            tokenizer.add_special_tokens({"additional_special_tokens": specials})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    text: str = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation_prompt)
    return text


def _find(text: str, content: str) -> int:
    pos = text.rfind(content.strip())
    return max(pos, 0)


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The text a model continues to answer ``messages``: used for generation and by serving."""
    return _render(tokenizer, messages, True)


def encode_conversation(
    tokenizer: Any, messages: list[dict[str, Any]], *, train_on_prompt: bool = False
) -> dict[str, list[int]]:
    """Token ids and ``assistant_masks`` (1 = in the loss) for one conversation, ending with EOS."""
    full = _render(tokenizer, messages, False).rstrip()
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant" or msg.get("weight", 1) == 0:
            continue
        end_text = _render(tokenizer, messages[: i + 1], False).rstrip()
        # transformers refuses to render an empty conversation, so an opening assistant turn starts where its
        # content does in its own rendering
        start_text = _render(tokenizer, messages[:i], True) if i else end_text[: _find(end_text, msg["content"])]
        if not full.startswith(end_text) or not end_text.startswith(start_text):
            raise DataError(
                "the model's chat template renders conversation prefixes inconsistently; "
                "cannot locate assistant turns for loss masking"
            )
        spans.append((len(start_text), len(end_text)))
    eos = tokenizer.eos_token
    append_eos = bool(eos) and not full.endswith(eos)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = list(enc["offset_mapping"])
    if train_on_prompt:
        mask = [1] * len(ids)
    else:
        mask = [1 if any(s <= begin < e for s, e in spans) else 0 for begin, _ in offsets]
    if append_eos:
        ids.append(tokenizer.eos_token_id)
        # EOS closes the final turn: it is trained when that turn is a trained assistant message.
        last = messages[-1]
        mask.append(1 if train_on_prompt or (last["role"] == "assistant" and last.get("weight", 1)) else 0)
    return {"input_ids": ids, "assistant_masks": mask}


def token_counter(tokenizer: Any) -> Any:
    """A ``TokenCounter`` for the validation report: exact lengths through the chat template."""

    def count(messages: list[dict[str, Any]]) -> int:
        return len(encode_conversation(tokenizer, messages, train_on_prompt=True)["input_ids"])

    return count


def prompt_token_counter(tokenizer: Any) -> Any:
    """A prompt's length in tokens as the model reads it before answering: through the chat template, with the
    generation prompt (an RFT prompt, a DPO prompt)."""

    def count(messages: list[dict[str, Any]]) -> int:
        return len(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])

    return count
