"""The LM head only at trained positions: the same loss and gradients as the full computation, and no logits for
prompt or padding tokens, on two shapes (vocabulary, hidden size, chunking) and on a real model's hidden states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from sage_ft.training.selective_head import trained_token_loss  # noqa: E402


def full_loss(hidden: Any, head: Any, labels: Any, num_items: Any) -> Any:
    logits = head(hidden).float()[:, :-1]
    return (
        F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )
        / num_items
    )


def batch(rows: int, seq: int, vocab: int, seed: int) -> Any:
    """Labels as SFT makes them: a prompt of -100 of varying length, the answer, then padding (-100)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((rows, seq), -100, dtype=torch.long)
    for r in range(rows):
        start = int(torch.randint(1, seq // 2, (1,), generator=g))
        end = int(torch.randint(start + 1, seq + 1, (1,), generator=g))
        labels[r, start:end] = torch.randint(0, vocab, (end - start,), generator=g)
    return labels


class CountingHead(torch.nn.Module):
    """An LM head that records how many rows it was asked for, call by call."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden, vocab, bias=False)
        self.calls: list[int] = []

    def forward(self, h: Any) -> Any:
        self.calls.append(h.shape[0] if h.dim() == 2 else h.shape[0] * h.shape[1])
        return self.linear(h)


@pytest.mark.parametrize(("rows", "seq", "hidden", "vocab", "chunk"), [(3, 17, 32, 97, 5), (2, 40, 16, 1031, 1024)])
def test_loss_and_gradients_match_the_full_head(rows: int, seq: int, hidden: int, vocab: int, chunk: int) -> None:
    torch.manual_seed(0)
    labels = batch(rows, seq, vocab, seed=rows)
    n_items = int((labels[:, 1:] != -100).sum())
    grads = []
    for fn in (full_loss, lambda h, hd, lb, n: trained_token_loss(h, hd, lb, n, chunk_size=chunk)):
        torch.manual_seed(1)
        head = CountingHead(hidden, vocab).double()
        h = torch.randn(rows, seq, hidden, dtype=torch.float64, requires_grad=True)
        loss = fn(h, head, labels, n_items)
        loss.backward()
        grads.append((loss.detach(), h.grad.clone(), head.linear.weight.grad.clone(), head.calls))
    (ref, ref_h, ref_w, _), (ours, our_h, our_w, calls) = grads
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_h, ref_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_w, ref_w, atol=1e-5, rtol=1e-5)
    several = n_items > chunk
    forward_calls = calls[: len(calls) // 2] if several else calls  # checkpointed chunks run again in backward
    assert len(calls) == (2 * len(forward_calls) if several else 1)
    assert sum(forward_calls) == n_items < rows * (seq - 1)  # logits for trained tokens only
    assert max(forward_calls) <= chunk  # one chunk of logits at a time


def test_nothing_to_train_on_is_a_zero_loss_with_a_graph() -> None:
    h = torch.randn(2, 6, 8, requires_grad=True)
    loss = trained_token_loss(h, torch.nn.Linear(8, 11), torch.full((2, 6), -100), num_items=1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and h.grad is not None and not h.grad.any()


def test_a_real_model_gets_its_own_loss(tiny_model: Path) -> None:
    """On the tiny Qwen2: the decoder's hidden states through the model's lm_head give the model's own loss."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    labels = batch(2, 24, model.config.vocab_size, seed=7)
    ids = torch.where(labels == -100, 5, labels)
    n_items = (labels[:, 1:] != -100).sum()
    own = model(input_ids=ids, labels=labels, num_items_in_batch=n_items).loss
    hidden = model.model(input_ids=ids).last_hidden_state
    ours = trained_token_loss(hidden, model.lm_head, labels, n_items, chunk_size=7)
    torch.testing.assert_close(ours, own, atol=1e-5, rtol=1e-5)
