"""yat-triton: fused Triton kernels for ⵟ-product (Yat) layers, as PyTorch ops and modules.

    y = alpha * (<w, x> + b)^2 / (||w - x||^2 + eps)

Set TRITON_INTERPRET=1 before importing to run the Triton kernels on CPU tensors through the
interpreter; without it, CPU tensors use a plain-PyTorch implementation of the same math.
"""

from __future__ import annotations

from yat_triton._autograd import registered_ops_only
from yat_triton.conv import yat_conv1d, yat_conv2d
from yat_triton.conv_modules import YatConv1d, YatConv2d, convert
from yat_triton.dense import yat_linear
from yat_triton.modules import YatLinear
from yat_triton.tuning import TunedConfigWarning, tuned_config, use_tuned_configs

__all__ = [
    "TunedConfigWarning",
    "YatConv1d",
    "YatConv2d",
    "YatLinear",
    "convert",
    "registered_ops_only",
    "tuned_config",
    "use_tuned_configs",
    "yat_conv1d",
    "yat_conv2d",
    "yat_linear",
]
__version__ = "0.1.0"
