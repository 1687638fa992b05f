#!/usr/bin/env bash
# The one GPU script: everything a GPU session should run, in one call of at most ~8 min.
#   bash autotune/gpu.sh OUTPUT_DIR
# Leaves in OUTPUT_DIR: env.txt (GPU, driver, CUDA, torch, Triton, commit), tests.log (the
# whole test suite on the GPU: bf16, fp64 gradcheck, full opcheck, torch.compile) and
# inspect_*.txt (registers / spills / shared memory / wgmma of every kernel, as compiled by
# this machine's Triton). The sweep and the report join it with the autotune harness.
# The GPU machine cannot download: the project runs from the checkout (PYTHONPATH).
set -uo pipefail
OUT=${1:?usage: bash autotune/gpu.sh OUTPUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

{
  date -u
  git rev-parse HEAD 2>/dev/null || echo "commit: unknown"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

timeout 360 python -m pytest -q -ra tests 2>&1 | tee "$OUT/tests.log"
status=$(( status | PIPESTATUS[0] ))

for dtype in bfloat16 float16 float32; do
  timeout 90 python -m autotune.inspect --all --dtype "$dtype" > "$OUT/inspect_$dtype.txt" 2>&1 || status=1
done
tail -n 3 "$OUT"/inspect_*.txt
exit "$status"
