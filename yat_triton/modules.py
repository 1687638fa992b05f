"""nn.Modules over the ⵟ ops, parameter-compatible with the `nmn` package's layers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yat_triton._checks import FLOAT_DTYPES, check_index, check_precision
from yat_triton._launch import acc_dtype
from yat_triton.dense import yat_linear

__all__ = ["YatLinear"]

SQRT2 = math.sqrt(2.0)


def _inverse_softplus(y: float) -> float:
    """softplus^-1(y) = log(expm1(y)), in a form exact for tiny and huge y."""
    return y + math.log(-math.expm1(-y))


def _check_epsilon(epsilon: float) -> float:
    return _constant("epsilon", epsilon, positive=True)


def _constant(name: str, value: object, *, positive: bool = False) -> float:
    """A constant option (epsilon, constant_alpha, constant_bias) as a finite float
    (> 0 where `positive`)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(v) or (positive and v <= 0.0):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}, got {v}")
    return v


def _check_sizes(**sizes: object) -> None:
    """Feature / channel counts: whole numbers >= 0."""
    for name, value in sizes.items():
        if check_index(name, value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _check_dtypes(**dtypes: object) -> None:
    """The dtype / param_dtype options: None or a floating dtype the ops take."""
    for name, value in dtypes.items():
        if value is not None and value not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be None or a floating dtype (float16, bfloat16, float32 or float64), "
                f"got {value!r}"
            )


def _check_input(module: nn.Module, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(module).__name__}: input must be a torch.Tensor, got {type(x).__name__}")


def _epsilon_parameter(
    epsilon: float, storage: torch.dtype | None, device: torch.device | str | None
) -> nn.Parameter:
    """nmn's learnable epsilon, softplus^-1(epsilon), stored in fp32 for half-precision (or
    no) parameters, else in their dtype; ValueError outside that dtype's normal range,
    where the stored value could not give epsilon back (or its gradient would vanish)."""
    dtype = torch.float32 if storage is None or storage in (torch.float16, torch.bfloat16) else storage
    info = torch.finfo(dtype)
    if not info.tiny <= epsilon <= info.max:
        raise ValueError(
            f"epsilon={epsilon} is outside the normal range of the {dtype} "
            f"learnable epsilon ([{info.tiny:.3g}, {info.max:.3g}])"
        )
    return nn.Parameter(torch.full((1,), _inverse_softplus(epsilon), dtype=dtype, device=device))


def _apply_keeping_epsilon_dtype(
    module: nn.Module, fn: Callable[[Tensor], Tensor], super_apply: Callable[..., nn.Module], recurse: bool
) -> nn.Module:
    """Module._apply that keeps a learnable epsilon_param's storage dtype (softplus of a tiny
    eps underflows in half precision), as nmn does: a cast (.half(), .to(dtype)) moves it to
    the new device only; anything else that keeps its dtype (.to(device), .share_memory(),
    .to_empty(), meta tensors) applies to it as to every parameter."""
    eps = module._parameters.get("epsilon_param")
    if eps is None:
        return super_apply(fn, recurse=recurse)
    probe = fn(torch.empty(0, device=eps.device, dtype=eps.dtype))
    if probe.dtype == eps.dtype:
        return super_apply(fn, recurse=recurse)
    # a cast: epsilon_param (and its grad) only follow it to its device; nn.Module._apply
    # hands each parameter and grad itself to the function
    grad = eps.grad

    def keeping(t: Tensor) -> Tensor:
        return t.to(device=probe.device) if t is eps or (grad is not None and t is grad) else fn(t)

    return super_apply(keeping, recurse=recurse)


class YatLinear(nn.Module):
    """ⵟ-dense layer: y = alpha * (x W^T + b)^2 / (||x - W||^2 + eps), rows against rows.

    Parameters and options mirror `nmn.torch.nmn.YatNMN`, so its state_dict loads unchanged:
        weight (out_features, in_features), xavier-normal initialised;
        bias (out_features,) [or (1,) with scalar_bias], U(-1/sqrt(in), 1/sqrt(in));
        alpha (1,), initialised to 1, when alpha=True and constant_alpha is None;
        epsilon_param (1,), softplus^-1(epsilon), when learnable_epsilon (kept in fp32 or
        fp64 even when the module is cast to half precision).

    Options:
        bias / constant_bias / softplus_bias / scalar_bias: learnable bias per neuron, a
            fixed float, softplus(bias), or one learnable scalar shared by all neurons.
        alpha / constant_alpha: learnable scale, constant_alpha=True for sqrt(2), a float
            for that constant, alpha=False for none.
        epsilon, learnable_epsilon: eps > 0, or eps = softplus(epsilon_param).
        positive_init: |weight| after init. lazy / freeze_kernel: weight.requires_grad=False.
        dtype: computation dtype (default: the input's); param_dtype: parameter storage.
        precision: fp32 dot precision on the GPU ("ieee" / "tf32"; None follows torch);
            the one argument nmn does not have, last.
    The forward casts the parameters to the computation dtype, as nmn does. The arguments
    come in nmn's order, so positional calls carry over; nmn's spherical, weight_normalized
    and tie_kernel_bank options are accepted at their defaults (kernel_bank_size and
    kernel_bank_id are kept, unused) and raise NotImplementedError when enabled.
    """

    DEFAULT_CONSTANT_ALPHA = SQRT2  # as nmn's YatNMN: the constant_alpha=True value

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        constant_bias: float | None = None,
        softplus_bias: bool = False,
        scalar_bias: bool = False,
        alpha: bool = True,
        constant_alpha: bool | float | None = None,
        dtype: torch.dtype | None = None,
        param_dtype: torch.dtype = torch.float32,
        epsilon: float = 1e-5,
        learnable_epsilon: bool = False,
        spherical: bool = False,
        positive_init: bool = False,
        weight_normalized: bool = False,
        lazy: bool = False,
        freeze_kernel: bool = False,
        tie_kernel_bank: bool = False,
        kernel_bank_size: int | None = None,
        kernel_bank_id: str = "default",
        kernel_init: Callable[[Tensor], object] | None = None,
        bias_init: Callable[[Tensor], object] | None = None,
        alpha_init: Callable[[Tensor], object] | None = None,
        device: torch.device | str | None = None,
        precision: str | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(in_features=in_features, out_features=out_features)
        in_features, out_features = int(in_features), int(out_features)
        _check_dtypes(dtype=dtype, param_dtype=param_dtype)
        check_precision(precision)
        for name, value, what in (
            ("spherical", spherical, "spherical=True"),
            ("weight_normalized", weight_normalized, "weight_normalized=True"),
            ("tie_kernel_bank", tie_kernel_bank, "tie_kernel_bank=True (shared kernel banks)"),
        ):
            if value:
                raise NotImplementedError(f"YatLinear: {what} is not supported")
            setattr(self, name, False)
        self.kernel_bank_size = kernel_bank_size
        self.kernel_bank_id = kernel_bank_id
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.epsilon = _check_epsilon(epsilon)
        self.learnable_epsilon = learnable_epsilon
        self.positive_init = positive_init
        self.lazy = bool(lazy or freeze_kernel)
        factory = {"device": device, "dtype": param_dtype}

        # Registration order as in nmn (epsilon_param, weight, alpha, bias): optimizer state
        # is stored by parameter position, so the order must match for it to carry over.
        if learnable_epsilon:
            self.epsilon_param = _epsilon_parameter(self.epsilon, param_dtype, device)
        else:
            self.register_parameter("epsilon_param", None)
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))

        self._constant_alpha_value: float | None = None
        if constant_alpha is not None and constant_alpha is not False:
            self._constant_alpha_value = (
                self.DEFAULT_CONSTANT_ALPHA
                if constant_alpha is True
                else _constant("constant_alpha", constant_alpha)
            )
            self.register_parameter("alpha", None)
        elif alpha:
            self.alpha = nn.Parameter(torch.ones((1,), **factory))
        else:
            self.register_parameter("alpha", None)
        self.constant_alpha = constant_alpha
        self.use_alpha = self._constant_alpha_value is not None or self.alpha is not None

        self._constant_bias_value: float | None = None
        if constant_bias is not None and constant_bias is not False:
            self._constant_bias_value = _constant("constant_bias", constant_bias)
            self.register_parameter("bias", None)
        elif bias:
            self.bias = nn.Parameter(torch.empty((1,) if scalar_bias else (out_features,), **factory))
        else:
            self.register_parameter("bias", None)
        self.constant_bias = constant_bias
        self.use_bias = self._constant_bias_value is not None or self.bias is not None
        self.softplus_bias = softplus_bias and self.bias is not None
        self.scalar_bias = scalar_bias and self.bias is not None

        self.reset_parameters(kernel_init, bias_init, alpha_init)
        if self.lazy:
            self.weight.requires_grad_(False)

    def reset_parameters(
        self,
        kernel_init: Callable[[Tensor], object] | None = None,
        bias_init: Callable[[Tensor], object] | None = None,
        alpha_init: Callable[[Tensor], object] | None = None,
        *,
        initialize_kernel: bool = True,
    ) -> None:
        """Xavier-normal weight, uniform(+-1/sqrt(fan_in)) bias, alpha = 1 (nmn's defaults);
        initialize_kernel=False leaves the weight as it is (nmn's keyword)."""
        with torch.no_grad():
            if initialize_kernel:
                (kernel_init or nn.init.xavier_normal_)(self.weight)
                if self.positive_init:
                    self.weight.abs_()
            if self.bias is not None:
                if bias_init is None:
                    bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
                    nn.init.uniform_(self.bias, -bound, bound)
                else:
                    bias_init(self.bias)
            if self.alpha is not None:
                if alpha_init is None:
                    self.alpha.fill_(1.0)
                else:
                    alpha_init(self.alpha)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        return _apply_keeping_epsilon_dtype(self, fn, super()._apply, recurse)

    def effective_bias(self, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        if self._constant_bias_value is not None:  # stored like a parameter, as nmn does
            b = torch.full(
                (self.out_features,), self._constant_bias_value, dtype=self.param_dtype, device=device
            )
            return b.to(dtype)
        if self.bias is None:
            return None
        b = F.softplus(self.bias) if self.softplus_bias else self.bias
        if self.scalar_bias:
            b = b.expand(self.out_features)
        return b.to(dtype)

    def effective_eps(self, dtype: torch.dtype) -> Tensor | float:
        if self.epsilon_param is None:
            return self.epsilon
        p = self.epsilon_param
        return F.softplus(p.to(torch.promote_types(acc_dtype(dtype), p.dtype)))

    def forward(self, x: Tensor) -> Tensor:
        _refuse_set_later(self, _refusals_linear(self))
        _check_input(self, x)
        dtype = self.dtype or x.dtype
        x = x.to(dtype)
        alpha = self.alpha.to(dtype) if self.alpha is not None else self._constant_alpha_value
        return yat_linear(
            x,
            self.weight.to(dtype),
            self.effective_bias(dtype, x.device),
            alpha=alpha,
            eps=self.effective_eps(dtype),
            precision=self.precision,
        )

    def extra_repr(self) -> str:
        s = (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None or self._constant_bias_value is not None}, "
            f"alpha={self.alpha is not None}, constant_alpha={self.constant_alpha}, "
            f"epsilon={self.epsilon}, learnable_epsilon={self.learnable_epsilon}"
        )
        if self._constant_bias_value is not None:
            s += f", constant_bias={self._constant_bias_value}"
        for flag in ("softplus_bias", "scalar_bias", "lazy"):
            if getattr(self, flag):
                s += f", {flag}=True"
        for name in ("dtype", "param_dtype", "precision"):
            if getattr(self, name) is not None:
                s += f", {name}={getattr(self, name)}"
        return s


def _refuse_set_later(m: nn.Module, refused: list[str]) -> None:
    """NotImplementedError for nmn options switched on after construction (nmn reads them
    at every call: computing without them would silently differ)."""
    if refused:
        raise NotImplementedError(
            f"{type(m).__name__}: {', '.join(refused)} is not supported (set on the layer after "
            "construction; nmn's layer computes with it)"
        )


def _refusals_linear(m: nn.Module) -> list[str]:
    return [
        opt
        for opt, on in (
            ("spherical=True", getattr(m, "spherical", False)),
            ("weight_normalized=True", getattr(m, "weight_normalized", False)),
            ("tie_kernel_bank=True", getattr(m, "tie_kernel_bank", False)),
        )
        if on
    ]
