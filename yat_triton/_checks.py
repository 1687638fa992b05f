"""Validation at the public boundary: every message names the argument, what was expected
and what was given. Inside the package, arguments are trusted. Also the one change the
public functions make to their operands before checking them: autocast's casts."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
PRECISIONS = ("ieee", "tf32")
# The device types the ops run on (CUDA: the kernels; CPU: the interpreter or plain PyTorch).
AUTOCAST_DEVICES = ("cuda", "cpu")


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype torch.autocast casts to on this device type, None outside autocast."""
    # torch.amp.is_autocast_available is not traceable by torch.compile (torch 2.11)
    if device_type not in AUTOCAST_DEVICES or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast_operands(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """The operands as torch.autocast casts those of F.linear / F.conv2d: inside an autocast
    region of x's device type, float16 / bfloat16 / float32 operands are cast to the
    autocast dtype (float64 stays, as autocast leaves it). The cast is differentiable:
    fp32 parameters get fp32 gradients. Outside autocast, and for anything that is not a
    floating tensor (left to the checks), the operands come back unchanged.
    """
    dtype = autocast_dtype(x.device.type) if isinstance(x, Tensor) else None
    if dtype is None:
        return x, weight, bias

    def cast(t: Tensor | None) -> Tensor | None:
        eligible = isinstance(t, Tensor) and t.dtype in FLOAT_DTYPES and t.dtype != torch.float64
        return t.to(dtype) if eligible else t

    return cast(x), cast(weight), cast(bias)


def check_float_tensor(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_nested or t.layout != torch.strided:
        kind = "a nested tensor" if t.is_nested else f"layout {t.layout}"
        raise TypeError(f"{name} must be a dense (strided) tensor, got {kind}; convert it with .to_dense()")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {t.dtype}"
        )
    return t


def check_same(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    """Same device and dtype as the reference tensor."""
    if t.device != ref.device:
        raise ValueError(
            f"{name} is on {t.device} but {ref_name} is on {ref.device}; move them to the same device"
        )
    if t.dtype != ref.dtype:
        cast = autocast_dtype(ref.device.type) is not None
        raise TypeError(
            f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}"
            f"{' (after torch.autocast cast the float16/bfloat16/float32 ones)' if cast else ''}; "
            "mixed dtypes are not supported, cast them to one dtype"
        )


def check_scalar_arg(name: str, value: object, ref: Tensor, *, positive: bool) -> None:
    """A Python number or a one-element floating tensor on ref's device. `positive`: the
    value must be finite and > 0, checked for a number and for a CPU tensor; a GPU tensor's
    value is not read (a host sync each call), the kernels make it NaN if it is not."""
    if isinstance(value, Tensor):
        check_float_tensor(name, value)
        if value.numel() != 1:
            raise ValueError(f"{name} must be a one-element tensor, got shape {tuple(value.shape)}")
        if value.device != ref.device:
            raise ValueError(f"{name} is on {value.device} but x is on {ref.device}")
        # a value vmap or torch.compile hands over cannot be read (nor can a GPU one, cheaply)
        readable = value.device.type == "cpu" and not torch.compiler.is_compiling()
        if positive and readable and not torch._C._functorch.is_functorch_wrapped_tensor(value):
            v = float(value.detach().reshape(()))
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"{name} must hold a finite value > 0, got tensor({v})")
            _check_float32_range(f"{name}=tensor({v!r}, dtype={value.dtype})", v, ref, positive)
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float or a one-element tensor, got {value!r}")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got {value} (too large for a float)") from None
    # comparisons, not math.isfinite: under torch.compile(dynamic=True) v is a SymFloat
    if not -math.inf < v < math.inf:
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0.0:
        raise ValueError(f"{name} must be > 0, got {v}")
    _check_float32_range(f"{name}={v}", v, ref, positive)


def _check_float32_range(shown: str, v: float, ref: Tensor, positive: bool) -> None:
    """The kernels take scalars as float32 for every io dtype but float64: a value past
    float32's range (or, `positive`, below its normal range) would become inf (or 0).
    `shown`: the argument as the message names it ("eps=1e-50")."""
    if ref.dtype == torch.float64:
        return
    f32 = torch.finfo(torch.float32)
    if abs(v) > f32.max:
        raise ValueError(f"{shown} overflows float32, the kernels' scalar type for {ref.dtype}")
    if positive and v < f32.tiny:
        raise ValueError(
            f"{shown} is below float32's normal range, the kernels' scalar type for "
            f"{ref.dtype} (smallest: {f32.tiny})"
        )


def is_whole(value: object) -> bool:
    """A whole number: a Python or NumPy integer, not a bool or a tensor."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, Tensor))


def check_index(name: str, value: object) -> int:
    """A whole number argument (`is_whole`) as an int."""
    if not is_whole(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


def check_precision(precision: object) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None, 'ieee' or 'tf32', got {precision!r}")


def resolve_precision(precision: str | None, dtype: torch.dtype) -> str:
    """The tl.dot input precision: 'tf32' only for fp32 operands that allow it."""
    if dtype != torch.float32:
        return "ieee"
    if precision is None:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return precision
