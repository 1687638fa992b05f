#!/usr/bin/env bash
# ad hoc GPU diagnostics; every part capped, output under $OUT
set -o pipefail
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
S=$SECONDS
timeout -k 5 55 python reports/nvidia_h200/diagnostics/20261130/diag.py conv 2>&1 | tee $OUT/conv.txt
echo "conv part: $((SECONDS-S)) s"
timeout -k 5 40 python reports/nvidia_h200/diagnostics/20261130/diag.py nil 2>&1 | tee $OUT/nil.txt
echo "nil part: $((SECONDS-S)) s"
python reports/nvidia_h200/diagnostics/20261130/variant.py . /tmp/v_direct direct && (cd /tmp/v_direct && PYTHONPATH=/tmp/v_direct timeout -k 5 30 python reports/nvidia_h200/diagnostics/20261130/diag.py nil 2>&1 | tee $OUT/nil_direct.txt)
echo "direct part: $((SECONDS-S)) s"
timeout -s INT -k 5 50 python -m pytest -q -ra -p no:cacheprovider tests/test_conv.py -m gpu -k torch_compile 2>&1 | tee $OUT/compile.txt | tail -40
echo "compile part: $((SECONDS-S)) s"
python reports/nvidia_h200/diagnostics/20261130/variant.py . /tmp/v_noasm noasm && (cd /tmp/v_noasm && PYTHONPATH=/tmp/v_noasm timeout -k 5 25 python reports/nvidia_h200/diagnostics/20261130/diag.py nil 2>&1 | tee $OUT/nil_noasm.txt)
echo "noasm part: $((SECONDS-S)) s"
CANARY="(warp_specialized_forward_matches or warp_specialized_backward_matches) and bfloat16"
timeout -s INT -k 5 35 python -m pytest -q -ra -x -p no:cacheprovider -o faulthandler_timeout=25 tests/test_configs.py tests/test_dense.py -k "$CANARY" 2>&1 | tee $OUT/canary.txt | tail -60
echo "canary part: $((SECONDS-S)) s"
