"""The fused training ops' hand-written backward passes against autograd's: ``gradcheck`` in float64 (finite
differences), every input that can carry a gradient, at two shapes each; and the forward values against the plain
formulas they replace."""

from __future__ import annotations

import pytest

from sage_ft.training.fused import LoRALinearFunction, RMSNormFunction, RotaryFunction, _rotate

torch = pytest.importorskip("torch")


def _t(*shape: int, grad: bool = True) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("shape", [((2, 5, 6), 4, 3, True), ((7, 3), 5, 2, False)])
def test_lora_linear_gradients_and_values(shape: tuple) -> None:
    (x_shape, out, rank, bias) = shape
    torch.manual_seed(0)
    x, w = _t(*x_shape), _t(out, x_shape[-1])
    b = _t(out) if bias else None
    a, up = _t(rank, x_shape[-1]), _t(out, rank)
    expected = x @ w.t() + (b if b is not None else 0) + 0.5 * (x @ a.t()) @ up.t()
    torch.testing.assert_close(LoRALinearFunction.apply(x, w, b, a, up, 0.5), expected)
    assert torch.autograd.gradcheck(lambda *t: LoRALinearFunction.apply(*t, 0.5), (x, w, b, a, up))


def test_lora_linear_skips_gradients_nobody_asked_for() -> None:
    x, w, a, up = _t(4, 6, grad=False), _t(3, 6, grad=False), _t(2, 6), _t(3, 2)
    LoRALinearFunction.apply(x, w, None, a, up, 2.0).sum().backward()
    assert x.grad is None and w.grad is None and a.grad is not None and up.grad is not None


@pytest.mark.parametrize("shape", [(2, 3, 8), (5, 16)])
def test_rms_norm_gradients_and_values(shape: tuple) -> None:
    torch.manual_seed(1)
    x, w = _t(*shape), _t(shape[-1])
    expected = w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(RMSNormFunction.apply(x, w, 1e-6), expected)
    assert torch.autograd.gradcheck(lambda x, w: RMSNormFunction.apply(x, w, 1e-6), (x, w))


def test_rotate_and_its_transpose() -> None:
    x = torch.arange(6.0)
    assert _rotate(x, -1).tolist() == [-3.0, -4.0, -5.0, 0.0, 1.0, 2.0]  # cat(-x2, x1), as rotate_half
    y = torch.randn(6)
    assert torch.dot(_rotate(x, -1), y) == pytest.approx(torch.dot(x, _rotate(y, 1)).item())  # <Rx, y> = <x, R^T y>


@pytest.mark.parametrize("heads", [(2, 2), (4, 1)])  # multi-head and grouped-query: q and k differ in heads
def test_rotary_gradients_and_values(heads: tuple[int, int]) -> None:
    from transformers.models.llama.modeling_llama import rotate_half

    torch.manual_seed(2)
    q, k = _t(2, heads[0], 5, 8), _t(2, heads[1], 5, 8)
    cos, sin = torch.randn(2, 1, 5, 8, dtype=torch.float64), torch.randn(2, 1, 5, 8, dtype=torch.float64)
    got_q, got_k = RotaryFunction.apply(q, k, cos, sin)
    torch.testing.assert_close(got_q, q * cos + rotate_half(q) * sin)
    torch.testing.assert_close(got_k, k * cos + rotate_half(k) * sin)
    assert torch.autograd.gradcheck(lambda q, k: RotaryFunction.apply(q, k, cos, sin), (q, k))
