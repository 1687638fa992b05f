"""The comparison helper itself: per-row scales and condition numbers hold each row to its
own size, where one global scale would let a small row's error through."""

from __future__ import annotations

import pytest
import torch
from tolerances import abs_max, assert_close


def _rows() -> tuple[torch.Tensor, torch.Tensor]:
    """A large row and a small one, with a 5% error in the small row (and a NaN in both)."""
    expected = torch.tensor([[1000.0, 500.0, float("nan")], [1.0, 2.0, float("nan")]], dtype=torch.float64)
    actual = expected.clone()
    actual[1, 0] *= 1.05
    return actual, expected


def test_a_small_rows_error_passes_a_global_scale_and_fails_its_own():
    actual, expected = _rows()
    assert_close(actual, expected, torch.bfloat16)  # 0.05 against 1000 * 8e-3
    scale = abs_max(expected, (1,))
    assert scale.flatten().tolist() == [1000.0, 2.0]  # NaN left out
    with pytest.raises(AssertionError, match=r"1/4 elements .* first bad index \[1, 0\]"):
        assert_close(actual, expected, torch.bfloat16, scale=scale)


def test_per_row_amplification_loosens_only_its_row():
    actual, expected = _rows()
    scale = abs_max(expected, (1,))
    # bound of element [1, 0]: 2 * 8e-3 + 1.6e-2 * 1 = 0.032, plus 2 * 2e-7 * 4 * 3e4 = 0.048
    assert_close(actual, expected, torch.bfloat16, reduction=16, scale=scale,
                 amplification=torch.tensor([[1.0], [3e4]]))  # fmt: skip
    with pytest.raises(AssertionError, match=r"amplification=1\b"):
        assert_close(actual, expected, torch.bfloat16, reduction=16, scale=scale,
                     amplification=torch.tensor([[3e4], [1.0]]))  # fmt: skip


def test_an_all_zero_row_takes_the_whole_tensors_scale():
    """A row whose expectation is all zero has no scale of its own: it takes the tensor's
    (here 1e-3), not an absolute 1, which would let a 1e-4 error through."""
    expected = torch.tensor([[1e-3, 5e-4], [0.0, 0.0]], dtype=torch.float64)
    actual = expected.clone()
    actual[1, 1] = 1e-4
    with pytest.raises(AssertionError, match=r"first bad index \[1, 1\]"):
        assert_close(actual, expected, torch.bfloat16, scale=abs_max(expected, (1,)))
