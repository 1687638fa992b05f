"""Child processes for the tests that compile kernels for a GPU target (static sm_90
compiles need compiled, not interpreted, kernels, and the test process may have
TRITON_INTERPRET=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compiled_child(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """The stdout of `python ARGS` run from the repository's root without TRITON_INTERPRET
    (`env`: more variables for it), which must exit with status 0 (the failure shows the
    tail of its stderr)."""
    child_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env={**child_env, **(env or {})},
        cwd=ROOT, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
