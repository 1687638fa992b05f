"""Test set-up: without a GPU, run the Triton kernels through the interpreter.

TRITON_INTERPRET must be set before triton is imported anywhere, so it happens here, at
conftest import. On a machine with CUDA the kernels compile for the GPU and the same tests
run there on CUDA tensors.
"""

from __future__ import annotations

import os

try:  # a CUDA device decides the mode; torch import does not pull triton in
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def device() -> str:
    """The device the kernels under test run on."""
    return "cuda" if _HAS_CUDA else "cpu"
