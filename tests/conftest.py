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

GPU_REASON = ("CUDA", "GPU")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (the GPU script runs these first)")


# `-m gpu` runs these first, in this order, and the sweep's test last: the GPU script caps
# the step, and the fast checks (occupancy, CUDA graph replay, one torch.compile per op)
# must not wait behind the slow ones.
GPU_FIRST = (
    "test_persistent_kernels_fill_every_resident_slot",
    "test_forward_and_backward_replay_from_a_cuda_graph",
    "test_dense.py::test_torch_compile[tma-tile-bf16]",
    "test_conv.py::test_torch_compile[k3-s2-g2-bf16]",
    "test_split_tail_parts_racing_on_a_gpu",
)
GPU_LAST = ("test_sweep_rows_are_timed_from_cuda_graphs",)


def _end_worker(message: str) -> None:
    """End this pytest-xdist worker at once: the controller reports the test it was running
    as crashed, names it, and runs the worker's other tests on a fresh one."""
    os.write(2, message.encode(errors="replace"))
    os._exit(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """On a GPU, a failed test that lost the CUDA context (a kernel that faulted) ends its
    process, naming the test: every later test there would fail with the same error,
    burying it. A pytest-xdist worker ends at once, its failure written to stderr (the
    controller replaces it and runs the rest); a single process stops its session."""
    outcome = yield
    report = outcome.get_result()
    if not (report.failed and _HAS_CUDA and torch.cuda.is_initialized()) or item.session.shouldstop:
        return
    from autotune.timing import context_lost

    lost = context_lost("cuda")
    if not lost:
        return
    why = (
        f"{item.nodeid} lost the CUDA context (a probe then: {lost[:300]}); "
        "every later test of this process would fail"
    )
    if hasattr(item.config, "workerinput"):
        _end_worker(f"\n{why}\n{report.longreprtext}\n")
    item.session.shouldstop = why


def gpu_order(nodeid: str) -> int:
    """Where a `gpu` test runs among them: GPU_FIRST's place, then the rest, then GPU_LAST."""
    for i, name in enumerate(GPU_FIRST):
        if name in nodeid:
            return i
    return len(GPU_FIRST) + (1 if any(name in nodeid for name in GPU_LAST) else 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `gpu` every test skipped off a GPU (a skipif whose reason names CUDA or a GPU), so
    that `-m gpu` picks out what only a GPU machine can check (torch.compile, CUDA graphs,
    occupancy, two devices): the GPU script runs those before the rest, in `gpu_order`."""
    for item in items:
        reasons = (m.kwargs.get("reason", "") for m in item.iter_markers("skipif"))
        if any(word in reason for reason in reasons for word in GPU_REASON):
            item.add_marker(pytest.mark.gpu)
    if config.getoption("markexpr", "") == "gpu":
        items.sort(key=lambda item: gpu_order(item.nodeid))  # stable: file order otherwise


@pytest.fixture(scope="session")
def device() -> str:
    """The device the kernels under test run on."""
    return "cuda" if _HAS_CUDA else "cpu"


@pytest.fixture
def no_tf32() -> object:
    """cuBLAS and cuDNN in IEEE fp32 for the test (nmn's layers call F.linear / F.conv2d,
    which on a GPU would otherwise round fp32 operands to TF32: errors ~1e-3 against fp32
    tolerances); the flags are restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def launched() -> object:
    """Every KernelCall the launchers run during the test, in order (each still runs)."""
    from yat_triton._launch import recording

    with recording() as calls:
        yield calls


@pytest.fixture
def autocast_state(monkeypatch) -> object:
    """watch(module, *names): each named function of `module` records, when called,
    (name, whether CPU autocast is on); returns the shared list of records."""
    seen: list[tuple[str, bool]] = []

    def watch(module: object, *names: str) -> list[tuple[str, bool]]:
        for name in names:
            impl = getattr(module, name)

            def run(*args, _impl=impl, _name=name):  # noqa: ANN002, ANN202
                seen.append((_name, torch.is_autocast_enabled("cpu")))
                return _impl(*args)

            monkeypatch.setattr(module, name, run)
        return seen

    return watch
