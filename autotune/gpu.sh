#!/usr/bin/env bash
# The one GPU script: everything a GPU session should run, in one call of ~8.5 min (caps below).
#   bash autotune/gpu.sh OUTPUT_DIR
# Leaves in OUTPUT_DIR: env.txt (GPU, driver, CUDA, torch, Triton, commit), tests.log (the
# tests only a GPU runs (marker gpu: torch.compile, CUDA graphs, occupancy), then the rest of
# the suite on the GPU as far as its cap goes: bf16, fp64 gradcheck, full opcheck),
# inspect_bfloat16.txt (registers / spills / shared memory / wgmma / TMA of every kernel, as
# compiled by this machine's Triton), breakdown.txt / .jsonl (every kernel of the dense
# 4096^3 and ResNet-50 3x3 ops timed on its own as a CUDA graph, each whole call also
# eagerly, the TMA, prep-block and register-cap variants, cuBLAS / cuDNN references, each
# forward's GEMM alone (GEMM_ONLY: the ⵟ epilogue's cost, the GEMM against cuBLAS's), the
# 14x14x256 layer's forward and backward (its target's missing layer), and a 16-row batch's
# inference forward; rendered into the report too),
# results.db + sweep.log + show.txt (the core suite swept in bf16 against the baselines),
# the exported winners (tuned/*.json) and the rendered report (reports/); `import-run`
# (below) files them in the repository.
# canary.log: whether the warp-specialized forward and backward GEMMs (Triton's Hopper pass,
# the newest compiler path the sweep tries) compiled, ran and matched the oracle; if not,
# their tiles are left out of this run (on the first H200 run, Triton 3.6, the forward hung:
# its first sync never returned; a hang now dumps where it waits into canary.log).
# The PDL canary next: the forwards whose GEMM overlaps its norm pass (programmatic dependent
# launch); if they fail it, the rest of the run goes without the overlap (YAT_TRITON_PDL=0).
# Time caps (canaries 30 + 35 s, GPU-only tests 60 s, the other tests 25 s, breakdown 85 s,
# sweep 250 s: 485 s, and about 30 s of start-up, show, export and report; inspect, 55 s,
# compiles on the CPU beside the canaries and tests, the Triton cache it fills the launches'
# own) keep it near 8.5 min; --deadline SECONDS (default 545, for a run under a 560 s limit) cuts every
# step's cap, kill grace included, so that the sweep's rows are packed by then whatever the
# steps before it took (a step with no time left is skipped); a capped sweep resumes on the
# next run:
#   bash autotune/gpu.sh OUTPUT_DIR --resume PATH/results.db --sweep-only
# copies the database a previous run brought back and spends the whole budget (~7.5 min)
# on the canary, the sweep, export and report. That database must be where git does not
# ignore it, so that it travels with the working tree: `import-run` (below) keeps each run's
# own as reports/<gpu>/runs/<UTC start>/results.db (a top-level /results.db* is ignored).
# Resume only with the code that measured it: a sweep does not measure a key again.
# A sweep whose process cannot go on (a kernel that faulted and lost the CUDA context, or a
# row hung past the sweep's watchdog, `--hang-after`) records that row as an error and exits
# with status 3: the script restarts it in a fresh process, which resumes after that row.
# --sweep-cap SECONDS sets the sweep's cap (default 250, or 400 with --sweep-only, 360 with
# --full-sweep), so that a shorter second run fits the time that is left.
# --full-sweep spends the budget (after the canary) on what SPEC's 5-minute target times:
# `sweep --suite core` with its default options (every mode, bf16 and fp32, the guided
# search, compiled_ref in max-autotune), into a fresh database (no --resume: rows measured
# before would shorten it), then export and report. Cut at its cap, past the 5 minutes, the
# report marks the target "not met"; finished, it gives the time. A failed canary leaves the
# warp-specialized tiles out (warp_specialize=off): a restricted sweep, the target not judged.
# --pack ARCHIVE (a .tar.gz outside OUTPUT_DIR) rewrites ARCHIVE with all of OUTPUT_DIR after
# every step: one file to bring back from a remote machine that returns only a few files (keep
# it under 16 MiB), holding whatever finished even if the run is cut short. A remote run:
#   YAT_TRITON_COMMIT=<commit> bash autotune/gpu.sh /tmp/gpu --pack "$OUT/gpu_run.tar.gz"
# (YAT_TRITON_COMMIT names the commit where the copied checkout has no git history.)
# Back home, `python -m autotune import-run gpu_run.tar.gz` merges its rows into
# reports/<gpu>/results.db, keeps its logs there, exports the winners and renders the report.
# The GPU machine cannot download: the project runs from the checkout (PYTHONPATH).
set -uo pipefail
USAGE="usage: bash autotune/gpu.sh OUTPUT_DIR [--resume RESULTS_DB] [--sweep-only | --full-sweep]
       [--sweep-cap SECONDS] [--deadline SECONDS] [--pack ARCHIVE.tar.gz]"
OUT=${1:?$USAGE}
shift
RESUME="" SWEEP_ONLY=0 FULL_SWEEP=0 PACK="" SWEEP_CAP="" DEADLINE=545
# the value of an option, or exit 2 naming it
value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "$1 needs a value ($USAGE)" >&2; exit 2; }; }
seconds() {
  case "$2" in
    '' | *[!0-9]* | 0*) echo "$1: $2 is not a whole number of seconds >= 1" >&2; exit 2 ;;
  esac
}
while [ $# -gt 0 ]; do
  case "$1" in
    --resume) value "$@"; RESUME=$2; shift 2 ;;
    --sweep-only) SWEEP_ONLY=1; shift ;;
    --full-sweep) SWEEP_ONLY=1 FULL_SWEEP=1; shift ;;
    --sweep-cap) value "$@"; seconds "$1" "$2"; SWEEP_CAP=$2; shift 2 ;;
    --deadline) value "$@"; seconds "$1" "$2"; DEADLINE=$2; shift 2 ;;
    --pack) value "$@"; PACK=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
if [ "$FULL_SWEEP" = 1 ] && [ -n "$RESUME" ]; then
  echo "--full-sweep times a whole sweep from an empty database: it takes no --resume" >&2; exit 2
fi
if [ "$FULL_SWEEP" = 1 ] && [ -e "$OUT/results.db" ]; then
  echo "--full-sweep times a whole sweep from an empty database: $OUT/results.db exists (choose another OUTPUT_DIR)" >&2
  exit 2
fi
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2  # absolute: the script changes directory
if [ -n "$PACK" ]; then
  mkdir -p "$(dirname "$PACK")" && PACK="$(cd "$(dirname "$PACK")" && pwd)/$(basename "$PACK")" || exit 2
  case "$PACK" in
    "$OUT" | "$OUT"/*) echo "--pack: the archive must lie outside OUTPUT_DIR ($OUT)" >&2; exit 2 ;;
  esac
  if [ -d "$PACK" ]; then echo "--pack: $PACK is a folder, not an archive path" >&2; exit 2; fi
fi
if [ -n "$RESUME" ]; then
  [ -f "$RESUME" ] || { echo "--resume: $RESUME is not a results database file" >&2; exit 2; }
  if ! [ "$RESUME" -ef "$OUT/results.db" ]; then  # not the same file (a path or link to it)
    rm -f "$OUT/results.db-wal" "$OUT/results.db-shm"  # an earlier run's journal would corrupt the copy
    cp "$RESUME" "$OUT/results.db" || exit 2
  fi
fi
# Rewrite the archive (written aside, then renamed: a cut never leaves half an archive).
pack() {
  [ -n "$PACK" ] || return 0
  # (status 1: a file changed as tar read it, the background inspect's log: packed as it was)
  tar --warning=no-file-changed -czf "$PACK.part" -C "$OUT" .
  [ $? -le 1 ] && mv -f "$PACK.part" "$PACK" || return 1
  local bytes
  bytes=$(wc -c < "$PACK")
  echo "packed $OUT into $PACK ($bytes bytes)"
  [ "$bytes" -le 16777216 ] || echo "warning: $PACK is over 16 MiB" >&2
}
# A TERM (or HUP, INT) to the script packs what it has and stops. Bash takes it when the step
# running then returns: every step is capped by `timeout` (which runs its command in a process
# group of its own, so a signal to the script's group does not reach it), and the caps end
# them all by DEADLINE (below), inside the run's limit. The sweep (timeout --foreground) is in
# the script's group: a TERM to the group stops it between rows, every finished row saved.
# The test steps stop at their cap with a SIGINT, on which pytest still prints its summary
# (-ra: each failure's name and reason); a TERM would end it before that, leaving dots.
trap 'pack; exit 143' TERM HUP INT
# --deadline (default 545 s, for a run under a 560 s limit): every step's cap is cut so that,
# kill grace included, it ends by then, leaving the sweep's rows time to be packed; a step
# with no time left is skipped (show, export and report too: import-run redoes them).
# fit CAP GRACE RESERVE: CAP, or less so that the step, its grace and RESERVE s after it end
# by the deadline (<= 0: no time for it).
fit() {
  local room=$(( DEADLINE - SECONDS - $2 - $3 ))
  if [ "$room" -lt "$1" ]; then echo "$room"; else echo "$1"; fi
}
# A step's exit status: 124 (stopped at its cap, as the test steps usually are), 137 (killed
# after its grace) or a skip is no failure, what it did is in its log; anything else is one. The
# script's own status stays 0 or 1 (a device tool would take a 124 for its own time limit).
note_rc() {
  case "$1" in
    0 | 124 | 137 | skipped) ;;
    *) status=1 ;;
  esac
}
# skipped WHAT LOG: say that a step had no time left
skipped() { echo "$1: skipped, no time left before the ${DEADLINE} s deadline" | tee -a "$2"; }
# step WHAT LOG CAP GRACE RESERVE SIGNAL COMMAND...: COMMAND under `timeout` (SIGNAL at CAP
# fitted to the deadline, KILL GRACE s later), its output shown and appended to LOG; step_rc
# is its status, or "skipped" (said in LOG) where the deadline leaves it no time. A step
# stopped at its cap says so in LOG (a killed one may have printed nothing at all).
step() {
  local what=$1 log=$2 grace=$4 signal=$6 cap
  cap=$(fit "$3" "$4" "$5")
  shift 6
  if [ "$cap" -gt 0 ]; then
    timeout -s "$signal" -k "$grace" "$cap" "$@" 2>&1 | tee -a "$log"
    step_rc=${PIPESTATUS[0]}
    case "$step_rc" in
      124) echo "$what: stopped at its $cap s cap" | tee -a "$log" ;;
      137) echo "$what: killed $grace s after its $cap s cap (it did not stop on SIG$signal)" | tee -a "$log" ;;
    esac
  else
    skipped "$what" "$log"
    step_rc=skipped
  fi
}
# Pre-sweep steps leave the sweep at least this long, with its grace and the final pack
SWEEP_RESERVE=100
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

{
  date -u
  if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ]; then git rev-parse HEAD
  else echo "commit: ${YAT_TRITON_COMMIT:-unknown} (no git history here)"; fi
  timeout -k 5 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  timeout -k 5 60 python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
pack

# inspect: sm_90 compiles of every kernel on the host's CPU (no GPU), beside the steps that
# follow from the start, so that it costs the run no time; the breakdown waits for it (its
# eager lines time the host too). Its compiles are the launches' own, under their keys in
# Triton's cache (`autotune.inspect.static_compile_args`): the tests and the breakdown load
# the shipped tiles' kernels from there. fp16 / fp32 compile the same way: bf16 is enough.
INSPECT_PID=""
if [ "$FULL_SWEEP" != 1 ] && [ "$SWEEP_ONLY" != 1 ]; then
  : > "$OUT/inspect_bfloat16.txt"
  (
    step "inspect" "$OUT/inspect_bfloat16.txt" 55 5 $SWEEP_RESERVE TERM python -m autotune.inspect --all --dtype bfloat16
    status=0
    note_rc "$step_rc"
    exit $status
  ) > /dev/null 2>&1 &  # (its output is in its log; nothing of it holds the script's streams)
  INSPECT_PID=$!
fi

# Canary first, on its own and under a short cap: a warp-specialized kernel that fails to
# compile, computes wrong or hangs costs a minute at most, and its tiles (and its test) are
# then left out of the tests, the breakdown and the sweep instead of stalling them.
WS_FLAG=() WS_TEST=""
# bf16 only: fp16 shares the forward's path, its backward GEMMs are not warp-specialized,
# and fp32 gets no such tiles. On failure every warp-specialization test is left out.
CANARY="(warp_specialized_forward_matches or warp_specialized_backward_matches) and bfloat16"
: > "$OUT/canary.log"
# (without the norm pass's overlap: the PDL canary below checks that on its own)
step "the canary" "$OUT/canary.log" 30 5 $SWEEP_RESERVE INT \
  env YAT_TRITON_PDL=0 python -m pytest -q -ra -x -o faulthandler_timeout=20 tests/test_configs.py \
  tests/test_dense.py -k "$CANARY"
case "$step_rc" in
  0) WS_LEFT_OUT="" ;;
  skipped) WS_LEFT_OUT="untried" ;;  # left out as well
  *) WS_LEFT_OUT="failed its canary" ;;
esac
if [ -n "$WS_LEFT_OUT" ]; then
  WS_FLAG=(--no-warp-specialize) WS_TEST=" or warp_speciali"
  echo "warp specialization $WS_LEFT_OUT: its tiles are left out of this run (see above)" | tee -a "$OUT/canary.log"
fi
# The PDL canary: the forwards whose GEMM overlaps its norm pass (programmatic dependent
# launch, `overlap_norm_pass`) against the oracle, eagerly and replayed from a CUDA graph.
# On failure every later step runs without the overlap (YAT_TRITON_PDL=0, said in env.txt).
pdl_start=$(wc -l < "$OUT/canary.log")
step "the PDL canary" "$OUT/canary.log" 35 5 $SWEEP_RESERVE INT \
  python -m pytest -q -ra -x -o faulthandler_timeout=25 tests/test_configs.py \
  -k overlapped_forward_matches_oracle_eagerly_and_in_a_cuda_graph
case "$step_rc" in
  0) PDL_STATE="on (its canary passed)" ;;
  skipped) PDL_STATE="off (its canary had no time)" ;;
  *) PDL_STATE="off (its canary failed)" ;;
esac
# a pass of skips only (pre-Hopper, no PDL in this Triton) checked nothing: off
if [ "$step_rc" = 0 ] && tail -n +"$((pdl_start + 1))" "$OUT/canary.log" | grep -q "^SKIPPED"; then
  PDL_STATE="off (its canary skipped: this GPU or Triton has no PDL)" step_rc=skipped
fi
[ "$step_rc" = 0 ] || export YAT_TRITON_PDL=0
echo "forwards overlapping their norm pass (PDL): $PDL_STATE" | tee -a "$OUT/canary.log" "$OUT/env.txt"
pack

# Kernel tests first, files named one by one (pytest keeps that order; a directory argument
# would sort them): a fresh machine compiles every kernel, and the cap may stop the harness
# tests at the end, the sweep tests last (the sweep step below runs the harness for real).
# The static sm_90 compile checks (in-process and in child processes) ran on the CPU
# already and the inspect step below repeats them with this machine's Triton.
# The sweep gets the larger share: its rows are the report's numbers, and it checks every
# config against the float64 reference itself; a device session rarely has time for a
# second (--sweep-only) run after machine start-up.
if [ "$FULL_SWEEP" = 1 ]; then
  SWEEP_CAP=${SWEEP_CAP:-360}
elif [ "$SWEEP_ONLY" = 1 ]; then
  SWEEP_CAP=${SWEEP_CAP:-400}
else
  SWEEP_CAP=${SWEEP_CAP:-250}
  STATIC="compiles_for_sm90 or uses_wgmma_without_spills or inspect_dumps_every_stage or inspect_caps_registers or bare_reciprocal or wait_for_the_norm_pass_on_sm90 or static_compiles_are_the_launches or backward_tma_tiles_fit_as_the_model_says"
  # First what only a GPU checks (marker gpu: torch.compile, CUDA graphs, occupancy), under
  # its own cap, so that the rest cannot crowd it out; the fast ones first (conftest's
  # GPU_FIRST), the sweep's test last.
  : > "$OUT/tests.log"
  step "the GPU-only tests" "$OUT/tests.log" 60 10 $SWEEP_RESERVE INT \
    python -m pytest -q -ra -m gpu -k "not overlapped_forward_matches_oracle" tests  # (the PDL canary's)
  note_rc "$step_rc"
  # With pytest-xdist installed, 8 workers: a test's time here is mostly compiling its
  # kernels, one CPU core each, so the cap covers several times more of the suite. Their
  # wind-down after the SIGINT takes longer than one process's: a 20 s grace.
  XDIST=() WORKERS="one process (no pytest-xdist here)"
  if python -c "import xdist" > /dev/null 2>&1; then XDIST=(-n 8) WORKERS="8 workers (pytest-xdist)"; fi
  echo "the rest of the suite: $WORKERS" | tee -a "$OUT/tests.log"
  step "the rest of the suite" "$OUT/tests.log" 25 20 $SWEEP_RESERVE INT \
    python -m pytest -q -ra ${XDIST[@]+"${XDIST[@]}"} -m "not gpu" \
    -k "not ($STATIC or static_prune_flags_spilling_tiles$WS_TEST)" \
    $(for t in dense conv configs modules conv_modules errors; do echo "tests/test_$t.py"; done) \
    $(ls tests/test_*.py | grep -v -E 'test_(dense|conv|configs|modules|conv_modules|errors|autotune)\.py$') \
    tests/test_autotune.py
  note_rc "$step_rc"
  pack

  [ -z "$INSPECT_PID" ] || wait "$INSPECT_PID" || status=1  # (inspect, begun with the canaries)
  pack

  : > "$OUT/breakdown.txt"
  # (and the ResNet-50 layer whose conv forward was furthest from its target, 14x14x256)
  step "the breakdown" "$OUT/breakdown.txt" 85 5 $SWEEP_RESERVE TERM \
    python -m autotune.breakdown --tma ${WS_FLAG[@]+"${WS_FLAG[@]}"} --more-conv 64 256 14 256 3 \
    --json-out "$OUT/breakdown.jsonl"
  note_rc "$step_rc"
  pack
fi

# The sweep resumes where a timeout stopped it (SIGINT to the sweep process alone,
# --foreground, so compiler subprocesses are not killed mid-row: it stops cleanly between
# rows, every finished row saved): rerunning this script finishes the work. The 30 s grace
# covers the compiles already running when the SIGINT lands (Python waits for them).
sweep_start=$SECONDS
# gpu.sh's own sweep is restricted to fit beside the tests: bf16, two modes, 12 tiles a
# problem, compiled_ref in the default compile mode. --full-sweep: the defaults.
SWEEP_OPTIONS=(--dtype bfloat16 --mode fwd,fwd+bwd --max-configs 12 --compile-mode default)
[ "$FULL_SWEEP" = 1 ] && SWEEP_OPTIONS=()
# Exit status 3: the sweep's process could not go on (a row lost the CUDA context, or hung
# past the sweep's watchdog) and recorded that row: a fresh process resumes after it, in the
# time left under the cap (at most RESTARTS times).
: > "$OUT/sweep.log"
RESTARTS=10 restarts=0 proc_start=$SECONDS proc_left=0 STOP="its ${SWEEP_CAP} s cap"
# What is left of the cap, cut so that the sweep, its 30 s grace and the pack after it end by
# the deadline
sweep_left() {
  local left=$(( SWEEP_CAP - (SECONDS - sweep_start) )) room
  room=$(fit "$left" 30 10)
  echo "$room"
}
while :; do
  left=$(sweep_left)
  if [ "$left" -lt 1 ]; then
    skipped "the sweep" "$OUT/sweep.log"
    sweep_rc=124 STOP="the ${DEADLINE} s deadline"
    break
  fi
  proc_start=$SECONDS proc_left=$left
  STOP="its ${SWEEP_CAP} s cap"
  [ "$left" -lt $(( SWEEP_CAP - (SECONDS - sweep_start) )) ] && STOP="the ${DEADLINE} s deadline"
  timeout --foreground -s INT -k 30 "$left" python -m autotune sweep --suite core \
    ${SWEEP_OPTIONS[@]+"${SWEEP_OPTIONS[@]}"} ${WS_FLAG[@]+"${WS_FLAG[@]}"} --db "$OUT/results.db" 2>&1 \
    | tee -a "$OUT/sweep.log"
  sweep_rc=${PIPESTATUS[0]}
  [ "$sweep_rc" = 3 ] || break
  pack
  left=$(sweep_left)
  if [ "$restarts" -ge "$RESTARTS" ]; then
    echo "the sweep's process could not go on $((restarts + 1)) times: not restarted again (see above)" \
      | tee -a "$OUT/sweep.log"
    break
  fi
  if [ "$left" -lt 20 ]; then sweep_rc=124; break; fi  # the cap, as good as reached
  restarts=$((restarts + 1))
  echo "the sweep's process could not go on (above); restart $restarts: a fresh process resumes it, $left s of its cap left" \
    | tee -a "$OUT/sweep.log"
done
# its cap (a kill after the grace counts too, once the cap has passed; earlier, a 137 is an
# out-of-memory kill): not a failure, the rows so far are saved
if [ "$sweep_rc" = 124 ] || { [ "$sweep_rc" = 137 ] && [ $((SECONDS - proc_start)) -ge "$proc_left" ]; }; then
  HINT="to finish it: python -m autotune import-run on this run's archive, then bash autotune/gpu.sh OUT --resume reports/<gpu>/runs/<UTC start>/results.db --sweep-only"
  [ "$FULL_SWEEP" = 1 ] && HINT="the full sweep took longer than that"
  echo "the sweep stopped at $STOP$([ "$sweep_rc" = 137 ] && echo ', killed after its grace (its run record stops at its last finished problem)'); $HINT" \
    | tee -a "$OUT/sweep.log"
elif [ "$sweep_rc" != 0 ]; then
  status=1
fi
pack
# What import-run redoes at home, each in the time left before the deadline (a few seconds
# kept for the last pack); a step cut short or skipped is no failure, nor is a sweep that
# measured nothing (skipped, or cut before its first row: nothing to show, export or report).
: > "$OUT/show.txt"
measured=$(timeout -k 2 20 python -c 'import sqlite3, sys
print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute("SELECT count(*) FROM results").fetchone()[0])' \
  "$OUT/results.db" 2> /dev/null || echo 0)
if [ "${measured:-0}" = 0 ]; then
  echo "the sweep measured nothing: show, export and report skipped" | tee -a "$OUT/show.txt"
else
  step "show" "$OUT/show.txt" 30 2 5 TERM python -m autotune show --db "$OUT/results.db"
  step "export" "$OUT/show.txt" 30 2 5 TERM python -m autotune export --db "$OUT/results.db" --out "$OUT/tuned"
  note_rc "$step_rc"
  BREAKDOWN=()
  [ -s "$OUT/breakdown.jsonl" ] && BREAKDOWN=(--breakdown "$OUT/breakdown.jsonl")
  step "report" "$OUT/show.txt" 60 2 5 TERM \
    python -m autotune report --db "$OUT/results.db" --out "$OUT/reports" ${BREAKDOWN[@]+"${BREAKDOWN[@]}"}
  note_rc "$step_rc"
fi
pack || status=1
exit "$status"
