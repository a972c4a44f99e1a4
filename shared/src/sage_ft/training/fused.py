"""Training ops with hand-written backward passes that do fewer memory passes than autograd's (issue 17, speed).

These are the CPU (and any-device fp32) counterpart of Liger's fused kernels, in plain PyTorch: the same
arithmetic, so loss and gradients equal the unfused model's to float rounding, with fewer intermediate tensors.
``fuse_training_ops`` patches module instances (never classes), so another model in the process is untouched.

**LoRA linear.**
PEFT computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as separate ops. Each of its linear layers then
writes three extra (rows x out) tensors forward (``lora_B``'s output, its scaled copy, the sum) and two backward
(the scaled gradient, the summed input gradient), all memory-bound passes that cost as much as a small GEMM on a
CPU. Here the adapter's up-projection is accumulated into the base output by the GEMM itself
(``out.addmm_(x A^T, B^T, alpha=scaling)``), and backward likewise adds the adapter's input gradient into the base
one (``(g W).addmm_(g_down, A)``). The arithmetic is the same, so loss and gradients equal PEFT's to float
rounding; the parameters, their names and the saved adapter are PEFT's own.

``fuse_training_ops`` routes a PEFT ``lora.Linear``'s forward here only for the plain case: one active adapter,
not merged, no dropout, no DoRA or other variant, no bias on the adapter, a plain ``nn.Linear`` base (so never
a quantized one), no autocast and one dtype throughout. Anything else, checked at every call, is PEFT's forward
unchanged; so is ``disable_adapter()`` (DPO's reference model).

**RMSNorm** (Llama, Qwen2/3, Mistral: ``weight * x / sqrt(mean(x^2) + eps)``). Autograd keeps the chain
``pow, mean, add, rsqrt, mul, mul`` and differentiates each link; here backward is the closed form
``dx = r * (w g - x r^2 mean(w g x))`` with ``r = 1 / rms(x)`` saved from forward. fp32 only (the model's own
forward upcasts lower precisions to fp32 and back, which this does not reproduce).

**Rotary embedding** (the half-split ``apply_rotary_pos_emb`` of the same families). Forward is
``q cos + rot(q) sin`` as before, backward ``g cos + rot^T(g sin)``, which needs only ``cos`` and ``sin``: autograd
saves and differentiates each product, slice and concatenation. The families' modeling modules look the function
up as a module global, so this one is swapped there (as Liger does); the wrapper calls the original for anything
but fp32 with gradients on and no autocast.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
from torch import nn


class LoRALinearFunction(torch.autograd.Function):
    """``x W^T + b + scaling * (x A^T) B^T``, with A the adapter's down and B its up projection."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        down = flat @ lora_a.t()
        out = torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()
        out.addmm_(down, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(flat, weight, lora_a, lora_b, down)
        ctx.scaling, ctx.in_shape = scaling, x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        flat, weight, lora_a, lora_b, down = ctx.saved_tensors
        need_x, need_w, need_bias, need_a, need_b = ctx.needs_input_grad[:5]
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        if need_x or need_a:
            g_down = (g @ lora_b).mul_(ctx.scaling)
            if need_a:
                grad_a = g_down.t() @ flat
            if need_x:
                grad_x = (g @ weight).addmm_(g_down, lora_a).view(ctx.in_shape)
        if need_b:
            grad_b = (g.t() @ down).mul_(ctx.scaling)
        if need_w:
            grad_w = g.t() @ flat
        if need_bias:
            grad_bias = g.sum(0)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None


def _plain_adapter(layer: Any, x: torch.Tensor) -> tuple[Any, Any, float] | None:
    """``(lora_A, lora_B, scaling)`` when this call can take the fused path, else None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant:
        return None
    dropout = layer.lora_dropout[name]
    if not isinstance(dropout, nn.Identity) and dropout.training and dropout.p > 0:
        return None
    lora_a, lora_b, base = layer.lora_A[name], layer.lora_B[name], layer.base_layer
    if lora_a.bias is not None or lora_b.bias is not None or torch.is_autocast_enabled(x.device.type):
        return None
    if not x.dtype == base.weight.dtype == lora_a.weight.dtype == lora_b.weight.dtype:
        return None
    return lora_a, lora_b, float(layer.scaling[name])


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    plain = None if args or kwargs else _plain_adapter(self, x)
    if plain is None:
        return type(self).forward(self, x, *args, **kwargs)
    lora_a, lora_b, scaling = plain
    base = self.base_layer
    return LoRALinearFunction.apply(x, base.weight, base.bias, lora_a.weight, lora_b.weight, scaling)


class RMSNormFunction(torch.autograd.Function):
    """``weight * x * rsqrt(mean(x^2, -1) + eps)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        inv = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, weight, inv)
        return (x * inv).mul_(weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, inv = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            wg = grad * weight
            dot = torch.linalg.vecdot(wg, x).unsqueeze(-1)
            grad_x = (wg - x * (dot * inv.square() / x.shape[-1])).mul_(inv)
        if ctx.needs_input_grad[1]:
            grad_w = (grad * x * inv).reshape(-1, x.shape[-1]).sum(0)
        return grad_x, grad_w, None


RMS_NORMS = frozenset({"LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm"})


def _rms_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or self.weight.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
        return type(self).forward(self, x)
    return RMSNormFunction.apply(x, self.weight, float(self.variance_epsilon))


def _rotate(x: torch.Tensor, sign: float) -> torch.Tensor:
    """``rot(x) = cat(-x2, x1)`` for sign -1 and its transpose ``cat(x2, -x1)`` for +1."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x2, -x1) if sign > 0 else (-x2, x1), dim=-1)


class RotaryFunction(torch.autograd.Function):
    """``(q cos + rot(q) sin, k cos + rot(k) sin)`` with ``cos``/``sin`` already broadcastable to ``q``/``k``."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Any:
        ctx.save_for_backward(cos, sin)
        return torch.addcmul(q * cos, _rotate(q, -1), sin), torch.addcmul(k * cos, _rotate(k, -1), sin)

    @staticmethod
    def backward(ctx: Any, grad_q: torch.Tensor, grad_k: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        cos, sin = ctx.saved_tensors
        out = [None if g is None else (g * cos).add_(_rotate(g * sin, 1)) for g in (grad_q, grad_k)]
        return out[0], out[1], None, None


ROTARY_MODULES = ("llama", "mistral", "qwen2", "qwen3")


def _fused_rotary(original: Any) -> Any:
    def apply_rotary_pos_emb(
        q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
    ) -> Any:
        tensors = (q, k, cos, sin)
        if (
            not torch.is_grad_enabled()
            or torch.is_autocast_enabled(q.device.type)
            or any(t.dtype != torch.float32 for t in tensors)
        ):
            return original(q, k, cos, sin, unsqueeze_dim)
        return RotaryFunction.apply(q, k, cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim))

    apply_rotary_pos_emb.sage_fused = True  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def fuse_rotary() -> int:
    """Swap the fused rotary embedding into the families' modeling modules (once); returns how many hold it."""
    import importlib

    swapped = 0
    for family in ROTARY_MODULES:
        module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        current = getattr(module, "apply_rotary_pos_emb", None)
        if current is not None and not getattr(current, "sage_fused", False):
            module.apply_rotary_pos_emb = _fused_rotary(current)  # type: ignore[attr-defined]
        swapped += current is not None
    return swapped


def fuse_training_ops(model: nn.Module, elementwise: bool = True) -> dict[str, int]:
    """Route eligible parts of ``model`` through the functions above; returns how many of each. LoRA: a PEFT
    ``lora.Linear`` on a plain ``nn.Linear`` not stored transposed (``fan_in_fan_out``). Unless ``elementwise`` is
    false (Liger replaces these on CUDA): the RMSNorm classes in ``RMS_NORMS`` and the rotary embedding."""
    from peft.tuners.lora import Linear as LoraLinear

    fused = {"lora": 0, "rms_norm": 0, "rotary": fuse_rotary() if elementwise else 0}
    for module in model.modules():
        if (
            isinstance(module, LoraLinear)
            and type(module.base_layer) is nn.Linear
            and not getattr(module, "fan_in_fan_out", False)
        ):
            module.forward = MethodType(_fused_forward, module)
            fused["lora"] += 1
        elif elementwise and type(module).__name__ in RMS_NORMS and hasattr(module, "variance_epsilon"):
            module.forward = MethodType(_rms_forward, module)
            fused["rms_norm"] += 1
    return fused
