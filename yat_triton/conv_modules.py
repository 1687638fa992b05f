"""ⵟ-convolution nn.Modules, parameter-compatible with nmn's YatConv2D / YatConv1D, and
`convert`, which swaps the nmn layers of a model for this package's.

    y[b, f] = alpha * (conv(x, w_f) + b_f)^2 / (||x_patch - w_f||^2 + eps)
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from yat_triton._checks import check_index, check_precision
from yat_triton._launch import acc_dtype
from yat_triton.conv import yat_conv1d, yat_conv2d
from yat_triton.modules import (
    YatLinear,
    _apply_keeping_epsilon_dtype,
    _check_dtypes,
    _check_epsilon,
    _check_input,
    _check_sizes,
    _constant,
    _epsilon_parameter,
    _refusals_linear,
    _refuse_set_later,
)

__all__ = ["YatConv1d", "YatConv2d", "convert"]

SQRT2 = math.sqrt(2.0)


class _YatConvMixin:
    """The ⵟ options and forward shared by YatConv2d and YatConv1d (which also subclass
    torch's Conv2d / Conv1d, so weight, bias, geometry and padding_mode come from there)."""

    _spatial: int
    _functional: Callable[..., Tensor]

    def _construct(
        self,
        conv_base: Any,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        groups: int,
        bias: bool,
        constant_bias: float | None,
        softplus_bias: bool,
        scalar_bias: bool,
        padding_mode: str,
        use_alpha: bool,
        constant_alpha: bool | float | None,
        use_dropconnect: bool,
        mask: Tensor | None,
        epsilon: float,
        learnable_epsilon: bool,
        drop_rate: float,
        weight_normalized: bool,
        tie_kernel_bank: bool,
        kernel_bank_size: int | None,
        kernel_bank_id: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        param_dtype: torch.dtype | None,
        precision: str | None,
    ) -> None:
        """The shared body of the 1-D and 2-D constructors (their signatures stay explicit,
        as nmn's, for positional callers); conv_base is the torch Conv base to initialise."""
        self._check_unsupported(
            use_dropconnect, drop_rate, mask, weight_normalized, tie_kernel_bank, precision
        )
        _check_sizes(in_channels=in_channels, out_channels=out_channels)
        in_channels, out_channels = int(in_channels), int(out_channels)
        _check_dtypes(dtype=dtype, param_dtype=param_dtype)
        sizes = (kernel_size,) if not isinstance(kernel_size, (tuple, list)) else tuple(kernel_size)
        if any(check_index("kernel_size", k) < 1 for k in sizes):
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size!r}")
        storage_dtype = param_dtype if param_dtype is not None else dtype
        parent_bias = bias and not (constant_bias is not None or scalar_bias)
        conv_base.__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, parent_bias,
            padding_mode, device, storage_dtype,
        )  # fmt: skip
        self._setup_yat(
            bias=bias, constant_bias=constant_bias, softplus_bias=softplus_bias,
            scalar_bias=scalar_bias, use_alpha=use_alpha, constant_alpha=constant_alpha,
            use_dropconnect=use_dropconnect, drop_rate=drop_rate, epsilon=epsilon,
            learnable_epsilon=learnable_epsilon, weight_normalized=weight_normalized,
            tie_kernel_bank=tie_kernel_bank, kernel_bank_size=kernel_bank_size,
            kernel_bank_id=kernel_bank_id, storage_dtype=storage_dtype, compute_dtype=dtype,
            device=device, precision=precision,
        )  # fmt: skip

    def _check_unsupported(
        self,
        use_dropconnect: bool,
        drop_rate: float,
        mask: Tensor | None,
        weight_normalized: bool,
        tie_kernel_bank: bool,
        precision: str | None,
    ) -> None:
        name = type(self).__name__
        if use_dropconnect and drop_rate > 0.0:
            raise NotImplementedError(
                f"{name}: use_dropconnect with drop_rate={drop_rate} > 0 is not supported "
                "(use nmn's layer, or drop_rate=0)"
            )
        if mask is not None:
            raise NotImplementedError(f"{name}: a weight mask is not supported (got mask={mask!r:.40})")
        if weight_normalized:
            raise NotImplementedError(f"{name}: weight_normalized=True is not supported")
        if tie_kernel_bank:
            raise NotImplementedError(f"{name}: tie_kernel_bank=True (shared kernel banks) is not supported")
        check_precision(precision)

    def _setup_yat(
        self,
        *,
        bias: bool,
        constant_bias: float | None,
        softplus_bias: bool,
        scalar_bias: bool,
        use_alpha: bool,
        constant_alpha: bool | float | None,
        use_dropconnect: bool,
        drop_rate: float,
        epsilon: float,
        learnable_epsilon: bool,
        weight_normalized: bool,
        tie_kernel_bank: bool,
        kernel_bank_size: int | None,
        kernel_bank_id: str,
        storage_dtype: torch.dtype | None,
        compute_dtype: torch.dtype | None,
        device: torch.device | str | None,
        precision: str | None,
    ) -> None:
        """After Conv*d.__init__ (weight, then bias or None): the ⵟ attributes and the
        parameters nmn registers after those, in nmn's order (bias replaced in place by a
        scalar bias, then epsilon_param, then alpha), so that optimizer state carries over."""
        self.weight_normalized = weight_normalized
        self.tie_kernel_bank = tie_kernel_bank
        self.kernel_bank_size = kernel_bank_size
        self.kernel_bank_id = kernel_bank_id
        self.precision = precision

        self._constant_bias_value: float | None = None
        if constant_bias is not None and constant_bias is not False:
            self._constant_bias_value = _constant("constant_bias", constant_bias)
            bias = True
        self.constant_bias = constant_bias
        if scalar_bias and constant_bias is None and bias:
            self.bias = nn.Parameter(torch.zeros((1,), dtype=storage_dtype or torch.float32, device=device))
        self.softplus_bias = softplus_bias and self.bias is not None
        self.scalar_bias = scalar_bias and self.bias is not None

        self.compute_dtype = compute_dtype
        self.param_dtype = storage_dtype
        self.use_dropconnect = use_dropconnect
        self.drop_rate = drop_rate
        self.register_buffer("mask", None)  # as nmn's layers without a mask (a mask is refused)

        self.epsilon = _check_epsilon(epsilon)
        self.learnable_epsilon = learnable_epsilon
        if learnable_epsilon:
            self.epsilon_param = _epsilon_parameter(self.epsilon, storage_dtype, device)
        else:
            self.register_parameter("epsilon_param", None)

        self._constant_alpha_value: float | None = None
        if constant_alpha is not None and constant_alpha is not False:
            self._constant_alpha_value = (
                SQRT2 if constant_alpha is True else _constant("constant_alpha", constant_alpha)
            )
            self.register_parameter("alpha", None)
            use_alpha = True
        elif use_alpha:
            self.alpha = nn.Parameter(torch.ones(1, device=device, dtype=storage_dtype))
        else:
            self.register_parameter("alpha", None)
        self.use_alpha = use_alpha
        self.constant_alpha = constant_alpha

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        return _apply_keeping_epsilon_dtype(self, fn, super()._apply, recurse)

    def effective_bias(self, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        """(C_out,) in the computation dtype: constant, softplus'd, or broadcast scalar."""
        if self._constant_bias_value is not None:
            # nmn rounds the constant to the parameter storage dtype before the compute cast
            store = self.param_dtype if self.param_dtype is not None else self.weight.dtype
            b = torch.full((self.out_channels,), self._constant_bias_value, dtype=store, device=device)
            return b.to(dtype)
        if self.bias is None:
            return None
        b = F.softplus(self.bias) if self.softplus_bias else self.bias
        return b.to(dtype).expand(self.out_channels)

    def effective_eps(self, dtype: torch.dtype) -> Tensor | float:
        if self.epsilon_param is None:
            return self.epsilon
        p = self.epsilon_param
        return F.softplus(p.to(torch.promote_types(acc_dtype(dtype), p.dtype)))

    def forward(self, input: Tensor, *, deterministic: bool = False) -> Tensor:  # noqa: A002 (torch's name)
        """input (B, C_in, *spatial) or unbatched (C_in, *spatial). `deterministic`, as in
        nmn, turns dropconnect off (dropconnect at a rate > 0, which is not supported here, is
        refused only on a call where nmn would drop: in training, not deterministic)."""
        # nmn drops connections only in training and not deterministic: elsewhere it computes this
        _refuse_set_later(self, _refusals_conv(self, dropping=self.training and not deterministic))
        _check_input(self, input)
        unbatched = input.dim() == self._spatial + 1
        x = input.unsqueeze(0) if unbatched else input
        dtype = self.compute_dtype or x.dtype
        x = x.to(dtype)
        padding: Any = self.padding
        if self.padding_mode != "zeros":
            cl = self._spatial == 2 and x.is_contiguous(memory_format=torch.channels_last)
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            if cl and not x.is_contiguous(memory_format=torch.channels_last):  # circular loses it
                x = x.contiguous(memory_format=torch.channels_last)
            padding = 0
        alpha = self.alpha.to(dtype) if self.alpha is not None else self._constant_alpha_value
        y = self._functional(
            x,
            self.weight.to(dtype),
            self.effective_bias(dtype, x.device),
            self.stride,
            padding,
            self.dilation,
            self.groups,
            alpha=alpha,
            eps=self.effective_eps(dtype),
            precision=self.precision,
        )
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self._constant_bias_value is not None:
            s += f", constant_bias={self._constant_bias_value}"
        if self.softplus_bias:
            s += ", softplus_bias=True"
        if self.scalar_bias:
            s += ", scalar_bias=True"
        if self._constant_alpha_value is not None:
            s += f", constant_alpha={self._constant_alpha_value:.6g}"
        elif self.alpha is None:
            s += ", use_alpha=False"
        s += f", epsilon={self.epsilon}"
        if self.learnable_epsilon:
            s += ", learnable_epsilon=True"
        return s


class YatConv2d(_YatConvMixin, nn.Conv2d):
    """2-D ⵟ-convolution: y = alpha * (conv(x, w_f) + b_f)^2 / (||x_patch - w_f||^2 + eps).

    Signature, parameters and options mirror `nmn.torch.layers.YatConv2D` (nmn 0.3.5), so
    its state_dict loads unchanged (strict) and gives the same outputs:
        weight (out_channels, in_channels / groups, kH, kW) and bias (out_channels,),
            initialised by torch.nn.Conv2d;
        bias (1,), zero-initialised, with scalar_bias;
        epsilon_param (1,) = softplus^-1(epsilon) with learnable_epsilon (kept in fp32
            when the module is cast to half precision);
        alpha (1,) = 1 with use_alpha and no constant_alpha.

    Options:
        stride, padding (int, pair, 'same', 'valid'), dilation, groups, padding_mode
            ('zeros', 'reflect', 'replicate', 'circular'): as torch.nn.Conv2d.
        bias / constant_bias / softplus_bias / scalar_bias: learnable bias per filter, a
            fixed float, softplus(bias), or one learnable scalar shared by every filter.
        use_alpha / constant_alpha: learnable scale, True for sqrt(2) or a float constant.
        epsilon, learnable_epsilon: eps > 0, or eps = softplus(epsilon_param).
        dtype: computation dtype (default: the input's) and, without param_dtype, the
            parameter dtype; param_dtype: parameter storage dtype.
        precision: fp32 dot precision on the GPU ("ieee" / "tf32"; None follows torch).
    nmn options that are not supported (use_dropconnect with drop_rate > 0, mask,
    weight_normalized, tie_kernel_bank) raise NotImplementedError when enabled.
    """

    _spatial = 2
    _functional = staticmethod(yat_conv2d)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        constant_bias: float | None = None,
        softplus_bias: bool = False,
        scalar_bias: bool = False,
        padding_mode: str = "zeros",
        use_alpha: bool = True,
        constant_alpha: bool | float | None = None,
        use_dropconnect: bool = False,
        mask: Tensor | None = None,
        epsilon: float = 1e-5,
        learnable_epsilon: bool = False,
        drop_rate: float = 0.0,
        weight_normalized: bool = False,
        tie_kernel_bank: bool = False,
        kernel_bank_size: int | None = None,
        kernel_bank_id: str = "default",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        param_dtype: torch.dtype | None = None,
        precision: str | None = None,
    ) -> None:
        _YatConvMixin._construct(
            self, super(), **{k: v for k, v in locals().items() if k not in ("self", "__class__")}
        )


class YatConv1d(_YatConvMixin, nn.Conv1d):
    """1-D ⵟ-convolution over (B, C_in, L): `YatConv2d` for sequences, mirroring
    `nmn.torch.layers.YatConv1D` (nmn 0.3.5); parameters and options as there, with
    weight (out_channels, in_channels / groups, k) initialised by torch.nn.Conv1d."""

    _spatial = 1
    _functional = staticmethod(yat_conv1d)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: str | int | tuple[int] = 0,
        dilation: int | tuple[int] = 1,
        groups: int = 1,
        bias: bool = True,
        constant_bias: float | None = None,
        softplus_bias: bool = False,
        scalar_bias: bool = False,
        padding_mode: str = "zeros",
        use_alpha: bool = True,
        constant_alpha: bool | float | None = None,
        use_dropconnect: bool = False,
        mask: Tensor | None = None,
        epsilon: float = 1e-5,
        learnable_epsilon: bool = False,
        drop_rate: float = 0.0,
        weight_normalized: bool = False,
        tie_kernel_bank: bool = False,
        kernel_bank_size: int | None = None,
        kernel_bank_id: str = "default",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        param_dtype: torch.dtype | None = None,
        precision: str | None = None,
    ) -> None:
        _YatConvMixin._construct(
            self, super(), **{k: v for k, v in locals().items() if k not in ("self", "__class__")}
        )


# ---------------------------------------------------------------------------------------
# convert: nmn layers -> this package's layers


def _refusals_conv(m: nn.Module, dropping: bool = True) -> list[str]:
    """The nmn options a conv layer has on that this package cannot compute; `dropping`: count
    dropconnect (with a rate), which nmn applies only to calls in training, not deterministic."""
    out = []
    if dropping and getattr(m, "use_dropconnect", False) and getattr(m, "drop_rate", 0.0) > 0.0:
        out.append(f"use_dropconnect=True with drop_rate={m.drop_rate}")
    if getattr(m, "mask", None) is not None:
        out.append("mask (a weight mask buffer)")
    if getattr(m, "weight_normalized", False):
        out.append("weight_normalized=True")
    if getattr(m, "tie_kernel_bank", False):
        out.append("tie_kernel_bank=True")
    return out


def _new_linear(m: nn.Module, precision: str | None) -> YatLinear:
    return YatLinear(
        m.in_features, m.out_features,
        bias=m.bias is not None, constant_bias=m._constant_bias_value,
        softplus_bias=m.softplus_bias, scalar_bias=m.scalar_bias,
        alpha=m.alpha is not None, constant_alpha=m.constant_alpha,
        dtype=m.dtype, param_dtype=m.param_dtype, epsilon=m.epsilon,
        learnable_epsilon=m.epsilon_param is not None, positive_init=m.positive_init,
        lazy=m.lazy, device="meta", precision=precision,
    )  # fmt: skip


def _new_conv(cls: type[_YatConvMixin], m: nn.Module, precision: str | None) -> nn.Module:
    scalar = m.scalar_bias
    return cls(
        m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
        bias=m.bias is not None, constant_bias=m._constant_bias_value,
        softplus_bias=m.softplus_bias, scalar_bias=scalar, padding_mode=m.padding_mode,
        use_alpha=m.alpha is not None, constant_alpha=m.constant_alpha, epsilon=m.epsilon,
        learnable_epsilon=m.epsilon_param is not None, device="meta", dtype=m.compute_dtype,
        param_dtype=m.param_dtype, precision=precision,
        use_dropconnect=bool(getattr(m, "use_dropconnect", False)), drop_rate=getattr(m, "drop_rate", 0.0),
    )  # fmt: skip


# Forward, backward and state_dict hooks move to the new layer (shared dicts: their handles
# still work). nmn's layers register none of their own.
_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
    "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)  # fmt: skip


def _adopt(new: nn.Module, old: nn.Module, path: str) -> nn.Module:
    """Give `new` the very Parameter objects (and buffers, hooks, mode) of `old`, and the
    public attributes a user set on it (those `new` does not have: nmn's own are private)."""
    if set(new._parameters) != set(old._parameters) or any(
        (new._parameters[k] is None) != (old._parameters[k] is None) for k in new._parameters
    ):
        found = sorted(k for k, v in old._parameters.items() if v is not None)
        hooked = [k for k in found if k.endswith("_orig")]  # torch.nn.utils.spectral_norm / weight_norm
        why = (
            f": {hooked} come from torch.nn.utils' spectral_norm / weight_norm hooks, which convert "
            "cannot carry (remove them first, or use torch.nn.utils.parametrize)"
            if hooked
            else ""
        )
        raise ValueError(  # otherwise a bug in this module, or an unknown nmn version
            f"convert: cannot map the parameters of {path} ({type(old).__name__}: {found}) onto "
            f"{type(new).__name__}{why}"
        )
    for k in new._parameters:
        new._parameters[k] = old._parameters[k]
    for k, v in old._buffers.items():
        if v is not None:
            new._buffers[k] = v
            if k in old._non_persistent_buffers_set:
                new._non_persistent_buffers_set.add(k)
    for name in _HOOK_DICTS:
        if hasattr(old, name):
            setattr(new, name, getattr(old, name))
    # register_load_state_dict_pre_hook binds its hook to the module by a weak reference:
    # bound to `old`, it would run on the old layer, or fail once that one is gone
    for hook in getattr(old, "_load_state_dict_pre_hooks", {}).values():
        bound = getattr(hook, "module", None)
        if getattr(hook, "with_module", False) and isinstance(bound, weakref.ref) and bound() is old:
            hook.module = weakref.ref(new)
    if getattr(old, "_is_full_backward_hook", None) is not None:
        new._is_full_backward_hook = old._is_full_backward_hook
    if old._modules and not new._modules:  # children a user attached (nmn's layers have none)
        new._modules = old._modules  # shared: a converted grandchild lands in both
    for k, v in vars(old).items():
        if not k.startswith("_") and not hasattr(new, k):
            setattr(new, k, v)
    new.training = old.training  # not .train(): the children keep their own modes
    return new


def convert(model: nn.Module, *, precision: str | None = None) -> nn.Module:
    """Replace every nmn ⵟ-layer in `model` by this package's equivalent, in place.

    nmn.torch.nmn.YatNMN -> YatLinear, nmn.torch.layers.YatConv2D -> YatConv2d,
    nmn.torch.layers.YatConv1D -> YatConv1d, found recursively (any container or custom
    module; the root itself may be an nmn layer). Each new layer carries the very same
    Parameter objects (so dtype, device, requires_grad and optimizer references are kept),
    the same options, buffers (non-persistent ones stay so), hooks (forward, backward,
    state_dict and load_state_dict), child modules, public attributes and train/eval mode,
    and gives the same outputs. A layer used
    at several places becomes one new layer used at the same places. Other modules,
    including nmn layers without a counterpart here (YatConv3D, transposed convolutions,
    attention), are left as they are.

    Args:
        model: any nn.Module.
        precision: fp32 dot precision of the new layers ("ieee" / "tf32"; None follows
            torch.backends.cuda.matmul.allow_tf32).

    Returns the model (or, when the root is an nmn layer, its replacement). Without nmn
    installed there is nothing to convert and the model comes back unchanged.

    Raises:
        ValueError: naming the layer's path and option, for a layer whose options have no
            equivalent here (YatNMN spherical / weight_normalized / tie_kernel_bank; conv
            use_dropconnect with drop_rate > 0, mask, weight_normalized, tie_kernel_bank),
            for subclasses of the nmn layers (their forward may differ), and for layers
            with parametrized weights. Nothing is replaced when anything is refused.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    check_precision(precision)
    try:
        from nmn.torch.layers import YatConv1D, YatConv2D
        from nmn.torch.nmn import YatNMN
    except ImportError:
        return model
    kinds: dict[type, tuple[Callable[[nn.Module], list[str]], Callable[[nn.Module], nn.Module]]] = {
        YatNMN: (_refusals_linear, lambda m: _new_linear(m, precision)),
        YatConv2D: (_refusals_conv, lambda m: _new_conv(YatConv2d, m, precision)),
        YatConv1D: (_refusals_conv, lambda m: _new_conv(YatConv1d, m, precision)),
    }

    # Pass 1: find and check every nmn layer, so that a refusal leaves the model untouched.
    found: dict[int, tuple[nn.Module, str]] = {}
    for path, m in model.named_modules(remove_duplicate=True):
        where = path or "<root>"
        base = next((k for k in kinds if isinstance(m, k)), None)
        if base is None:
            continue
        if parametrize.is_parametrized(m):
            raise ValueError(
                f"convert: {where} ({base.__name__}) has parametrized parameters "
                "(torch.nn.utils.parametrize), which are not carried over; remove the "
                "parametrization first"
            )
        if type(m) is not base:
            raise ValueError(
                f"convert: {where} is a {type(m).__qualname__}, a subclass of nmn's "
                f"{base.__name__}; its forward may differ, so it is not converted"
            )
        problems = kinds[base][0](m)
        if problems:
            raise ValueError(
                f"convert: {where} ({base.__name__}) uses {', '.join(problems)}, which "
                "yat_triton does not implement; remove the option or keep nmn's layer"
            )
        found[id(m)] = (m, where)

    # Pass 2: build the replacements and splice them in wherever the old layers sit.
    new = {i: _adopt(kinds[type(m)][1](m), m, where) for i, (m, where) in found.items()}
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in new:
                parent._modules[name] = new[id(child)]
    return new.get(id(model), model)
