#!/usr/bin/env bash
# GPU check (issue 17): NVML telemetry, GPU synthetic load, GPU training and the overhead figures
# on one real GPU, in one script (< 8 minutes on one H100/H200).
#
#   bash benchmarks/gpu_check.sh             # on a machine with an NVIDIA GPU
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: every step that does not need CUDA, on CPU
#
# Run it from a copy of the working tree (any directory: it moves to the repository root).
# Steps, each bounded by `timeout`, each logged to $OUT/logs/<step>.log:
#   setup       an interpreter with every dependency: one that already has them (a CUDA torch in
#               GPU mode: .venv, then python3/python on PATH); else a venv that sees the system's
#               CUDA torch (--system-site-packages, outputs/.venv-gpu if .venv has a CPU torch);
#               else `make setup TORCH_SPEC=...` (GPU default below; needs the network:
#               download.pytorch.org may not be reachable from an offline GPU machine).
#               Wheels in ./.whl are used as find-links. $PWD/src always comes first on PYTHONPATH.
#   start       the session run in MLflow (GPU model, driver, CUDA, torch as tags; env.json)
#   gpu-tests   pytest -m gpu (JUnit XML in $OUT; counts logged to the session run)
#   nvml-cost   one NvmlGpuSource.sample() of all fields on cuda:0, timed (goal < 1 ms)
#   distil-*    200-step DistilGPT-2 fine-tune, bf16-mixed, telemetry off / 1 Hz / 10 Hz,
#               GPU_CHECK_ROUNDS rounds (default 2, the second in reverse order; skipped when the
#               first took too long); dry run: distilgpt2_tiny on CPU, 30 steps, 1 round
#   sweep       synthetic_gpu multirun, workload.intensity=0.25,0.5,0.75,1.0 (telemetry at 10 Hz);
#               dry run: synthetic_cpu
#   fake        dry run only: distilgpt2_tiny with telemetry=fake, to exercise the report's GPU
#               paths (fields, energy) on FakeGpuSource; its numbers are not hardware
#   report      reads every run back with mlflow.MlflowClient and prints the summary
#
# Everything lands under $OUT (default ./outputs/gpu_check): the MLflow store (mlflow.db +
# artifacts/, experiment gpu_check), logs/, env.json, nvml_cost.json, pytest_gpu.xml,
# summary.txt and summary.json. Hydra outputs, spools and caches go to $OUT/project.
#
# Environment knobs: OUT, GPU_CHECK_ROUNDS, GPU_CHECK_PYTHON (interpreter to try first),
# TORCH_SPEC (for the make setup fallback; GPU default
# "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"), GPU_CHECK_DISTIL_ARGS
# (extra overrides for the DistilGPT-2 runs; GPU default "data.batch_size=8 data.block_size=256"),
# HF_HUB_OFFLINE (default 1: offline, DistilGPT-2 trains from random initialisation).
#
# Exit status: 0 when every step ran (goals met or not: the summary says which); 1 when a step
# failed or timed out; 2 on bad arguments.

set -euo pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *)
      echo "gpu_check.sh: unknown argument '$arg' (use --dry-run or --help)" >&2
      exit 2
      ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/outputs/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
STEPS="$OUT/steps.tsv"
: >"$STEPS"
rm -f "$OUT/session_run_id" "$OUT/nvml_cost.json" "$OUT/pytest_gpu.xml" "$OUT/env.json"
SESSION="$(date -u +%Y%m%dT%H%M%SZ)"
EXPERIMENT="gpu_check"
URI="sqlite:///$OUT/mlflow.db" # $OUT is absolute: sqlite:////...
MODE=gpu
[ "$DRY_RUN" = 1 ] && MODE=dry
FAILED=0

export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1
if [ -d "$ROOT/.whl" ]; then
  export PIP_FIND_LINKS="$ROOT/.whl"
fi

echo "gpu_check: mode=$MODE session=$SESSION root=$ROOT"
if [ "$DRY_RUN" = 0 ] && ! { nvidia-smi -L >/dev/null 2>&1 || [ -e /dev/nvidia0 ]; }; then
  # before setup, which may replace a CPU torch in .venv: never on a machine without a GPU
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L fails, no /dev/nvidia0); use --dry-run" >&2
  exit 1
fi
if [ "$DRY_RUN" = 0 ]; then
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi
echo "gpu_check: OUT=$OUT (MLflow $URI, experiment $EXPERIMENT)"

record() { # record NAME RC SECONDS LOG
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"
}

step() { # step NAME TIMEOUT_S CMD... : run CMD bounded, log it, record its status; never exits
  local name="$1" limit="$2"
  shift 2
  local log="$LOGS/$name.log" t0=$SECONDS rc=0
  echo "== [$name] timeout ${limit}s, log $log"
  timeout --kill-after=20 "$limit" "$@" >"$log" 2>&1 || rc=$?
  local dt=$((SECONDS - t0))
  record "$name" "$rc" "$dt" "$log"
  if [ "$rc" -eq 0 ]; then
    echo "   ok (${dt} s)"
  else
    FAILED=$((FAILED + 1))
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "   TIMED OUT after ${dt} s (limit ${limit} s)" \
      || echo "   FAILED rc=$rc (${dt} s)"
    tail -n 30 "$log" | sed 's/^/   | /'
  fi
  return 0
}

# ------------------------------------------------------------------------------------- setup

has_deps() {
  "$1" -c "import torch, lightning, mlflow, hydra, omegaconf, transformers, tokenizers, pandas, \
pyarrow, scipy, matplotlib, psutil, pynvml, pytest, hypothesis, rle.train" >/dev/null 2>&1
}
has_cuda() {
  "$1" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1
}
usable() { [ -x "$1" ] && has_deps "$1" && { [ "$DRY_RUN" = 1 ] || has_cuda "$1"; }; }

setup() {
  local venv=.venv c sys_py=""
  local cands=()
  [ -n "${GPU_CHECK_PYTHON:-}" ] && cands+=("$GPU_CHECK_PYTHON")
  cands+=("$ROOT/.venv/bin/python" "$ROOT/outputs/.venv-gpu/bin/python")
  for c in python3 python; do
    command -v "$c" >/dev/null 2>&1 && cands+=("$(command -v "$c")")
  done
  for c in "${cands[@]}"; do
    if usable "$c"; then
      PY="$c"
      echo "using $c: every dependency importable$([ "$DRY_RUN" = 1 ] || echo ', CUDA available')"
      return 0
    fi
    [ -x "$c" ] && echo "not usable as is: $c"
  done
  if [ "$DRY_RUN" = 0 ]; then
    for c in python3 python; do
      if command -v "$c" >/dev/null 2>&1 && has_cuda "$(command -v "$c")"; then
        sys_py="$(command -v "$c")"
        break
      fi
    done
  fi
  if [ -n "$sys_py" ]; then
    # a CUDA torch outside any venv: a venv that sees it, then the project into it
    if [ -x "$ROOT/.venv/bin/python" ] && ! has_cuda "$ROOT/.venv/bin/python"; then
      venv=outputs/.venv-gpu # keep the existing CPU .venv as it is
    fi
    echo "CUDA torch found in $sys_py; venv $venv with --system-site-packages"
    timeout 120 "$sys_py" -m venv --system-site-packages "$venv"
    timeout 420 "$venv/bin/python" -m pip install -e ".[test]" ||
      timeout 120 "$venv/bin/python" -m pip install --no-build-isolation --no-deps -e . ||
      echo "pip install failed (offline?); relying on PYTHONPATH=$ROOT/src"
    [ "$venv" = .venv ] && touch .venv/.rle-installed
  else
    # No CUDA torch anywhere: `make setup` installs TORCH_SPEC when the venv has no torch.
    local spec="${TORCH_SPEC:-}"
    if [ "$DRY_RUN" = 0 ]; then
      spec="${spec:-torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128}"
      if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" >/dev/null 2>&1 &&
        ! has_cuda .venv/bin/python; then
        echo "the .venv torch has no CUDA: replacing it with $spec"
        timeout 120 .venv/bin/python -m pip uninstall -y torch
        rm -f .venv/.rle-installed
      fi
    fi
    echo "make setup${spec:+ TORCH_SPEC=\"$spec\"} (needs the network unless ./.whl has the wheels)"
    if [ -n "$spec" ]; then
      timeout 420 make setup TORCH_SPEC="$spec"
    else
      timeout 420 make setup
    fi
    venv=.venv
  fi
  if usable "$ROOT/$venv/bin/python"; then
    PY="$ROOT/$venv/bin/python"
    return 0
  fi
  echo "setup failed: $ROOT/$venv/bin/python lacks a dependency$([ "$DRY_RUN" = 1 ] || echo ' or CUDA')"
  "$ROOT/$venv/bin/python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || true
  return 1
}

PY=""
echo "== [setup] log $LOGS/setup.log"
t0=$SECONDS
rc=0
setup >"$LOGS/setup.log" 2>&1 || rc=$?
record setup "$rc" "$((SECONDS - t0))" "$LOGS/setup.log"
sed 's/^/   | /' "$LOGS/setup.log" | tail -n 15
if [ "$rc" -ne 0 ] || [ -z "$PY" ]; then
  echo "gpu_check: setup failed (rc=$rc); nothing else can run. See $LOGS/setup.log"
  exit 1
fi
echo "   python: $PY ($("$PY" -c 'import rle, torch; print("rle from", rle.__file__, "| torch", torch.__version__, "| cuda", torch.cuda.is_available())'))"

# ------------------------------------------------------------------------------------- start

HELPER=("$PY" "$ROOT/benchmarks/gpu_check.py")
SESSION_RUN=""
step start 120 "${HELPER[@]}" start --uri "$URI" --out "$OUT" --experiment "$EXPERIMENT" \
  --session "$SESSION" --mode "$MODE"
SESSION_RUN="$(cat "$OUT/session_run_id" 2>/dev/null || true)"
if ! [[ "$SESSION_RUN" =~ ^[0-9a-f]{32}$ ]]; then
  echo "gpu_check: no session run (see $LOGS/start.log); the report needs the store, stopping"
  exit 1
fi
grep '^  ' "$LOGS/start.log" | sed 's/^/   /' || true

# ---------------------------------------------------------------------------------- gpu tests

# the suite's own temporary stores: none of this run's tracking variables
step gpu-tests 300 env -u MLFLOW_TRACKING_URI -u MLFLOW_EXPERIMENT_NAME -u RLE_PROJECT_ROOT \
  "$PY" -m pytest -m gpu -ra -q -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml"
step gpu-tests-log 60 "${HELPER[@]}" tests --uri "$URI" --out "$OUT" \
  --session-run "$SESSION_RUN" --junit "$OUT/pytest_gpu.xml"
sed 's/^/   /' "$LOGS/gpu-tests-log.log" | head -n 8

# ---------------------------------------------------------------------------------- NVML cost

step nvml-cost 120 "${HELPER[@]}" nvml-cost --uri "$URI" --out "$OUT" \
  --session-run "$SESSION_RUN" --n 1000
grep -v '^\[\|WARNING\|INFO' "$LOGS/nvml-cost.log" | sed 's/^/   /' | tail -n 8

# ---------------------------------------------------------------------------------- training

# Hydra flags (-m) go before the overrides, hence no override in TRAIN itself
TRAIN=(env "MLFLOW_TRACKING_URI=$URI" "MLFLOW_EXPERIMENT_NAME=$EXPERIMENT"
  "RLE_PROJECT_ROOT=$OUT/project" "$PY" -m rle.train)

if [ "$DRY_RUN" = 1 ]; then
  ROUNDS="${GPU_CHECK_ROUNDS:-1}"
  read -r -a DISTIL <<<"trainer.enable_progress_bar=false workload=distilgpt2_tiny trainer.accelerator=cpu trainer.max_steps=30 ${GPU_CHECK_DISTIL_ARGS:-}"
  SWEEP=(workload=synthetic_cpu trainer.accelerator=cpu trainer.max_steps=20)
  DISTIL_LIMIT=150
  SWEEP_LIMIT=240
else
  ROUNDS="${GPU_CHECK_ROUNDS:-2}"
  read -r -a DISTIL <<<"trainer.enable_progress_bar=false workload=distilgpt2 trainer=gpu trainer.precision=bf16-mixed trainer.max_steps=200 ${GPU_CHECK_DISTIL_ARGS:-data.batch_size=8 data.block_size=256}"
  SWEEP=(workload=synthetic_gpu trainer=gpu trainer.max_steps=150)
  DISTIL_LIMIT=180
  SWEEP_LIMIT=300
fi

telemetry_args() {
  case "$1" in
    off) echo "telemetry=none" ;;
    1Hz) echo "telemetry.sample_hz=1" ;;
    10Hz) echo "telemetry.sample_hz=10" ;;
  esac
}

distil_round() { # distil_round ROUND VARIANT...
  local r="$1" v
  shift
  for v in "$@"; do
    step "distil-$v-r$r" "$DISTIL_LIMIT" "${TRAIN[@]}" "${DISTIL[@]}" "$(telemetry_args "$v")" \
      "run_name=gc-$SESSION-distil-$v-r$r"
  done
}

ROUND1_START=$SECONDS
distil_round 1 off 1Hz 10Hz
ROUND_S=$((SECONDS - ROUND1_START))
for ((r = 2; r <= ROUNDS; r++)); do
  # keep the whole check under ~8 minutes: another round only if it fits before the sweep
  if [ "$DRY_RUN" = 0 ] && [ $((SECONDS + ROUND_S + 150)) -gt 420 ]; then
    echo "== distil round $r skipped: round 1 took ${ROUND_S} s (budget ~8 min)"
    break
  fi
  if ((r % 2 == 0)); then distil_round "$r" 10Hz 1Hz off; else distil_round "$r" off 1Hz 10Hz; fi
done

step sweep "$SWEEP_LIMIT" "${TRAIN[@]}" -m trainer.enable_progress_bar=false "${SWEEP[@]}" telemetry.sample_hz=10 \
  'workload.intensity=0.25,0.5,0.75,1.0' "run_name=gc-$SESSION-sweep"

if [ "$DRY_RUN" = 1 ]; then
  step fake 150 "${TRAIN[@]}" "${DISTIL[@]}" telemetry=fake telemetry.sample_hz=10 \
    "run_name=gc-$SESSION-fake"
fi

# ------------------------------------------------------------------------------------- report

echo "== [report]"
rc=0
timeout 180 "${HELPER[@]}" report --uri "$URI" --out "$OUT" --experiment "$EXPERIMENT" \
  --session "$SESSION" --mode "$MODE" --steps-file "$STEPS" 2>"$LOGS/report.log" || rc=$?
if [ "$rc" -ne 0 ]; then
  FAILED=$((FAILED + 1))
  echo "report FAILED rc=$rc:"
  tail -n 30 "$LOGS/report.log"
fi
echo
echo "gpu_check: $SECONDS s in all; summary in $OUT/summary.txt and $OUT/summary.json;"
echo "gpu_check: runs in $URI (experiment $EXPERIMENT; .venv/bin/mlflow ui --backend-store-uri $URI)"
if [ "$FAILED" -ne 0 ]; then
  echo "gpu_check: $FAILED step(s) failed"
  exit 1
fi
exit 0
