#!/usr/bin/env bash
# gptfit on a GPU in one call: install the carried wheels, run the CUDA tests, measure training throughput
# and MFU against transformers' GPT-2 and greedy decoding against `generate`, run +experiment=tiny_corpus
# end to end, and write one JSON document, $OUT/gpu_<date>.json, with the whole log beside it ($OUT/gpu.log).
#
#   bash bench/gpu.sh                       the device call: carry [".whl"], timeout_s=330
#   bash bench/gpu.sh --cpu                 the same steps on this machine's CPU at toy sizes
#   bash bench/gpu.sh --only train,decode   a rerun of the steps that failed (--skip STEP,... leaves steps out;
#                                           install and env always run, and warmup with train, unless skipped)
#   bash bench/gpu.sh --deadline 318        seconds from the start by which every step has ended
#
# Steps, in order: install (the wheels of .whl into /tmp/site), env (what the machine has), warmup (in the
# background: the compiled models' first steps, which fill torch.compile's cache, so that `train` times warm
# compiles), tests (tests/test_devices.py -m cuda), tiny_corpus, train (after warmup has ended), decode.
# tests and tiny_corpus run beside warmup, on the other half of the cores; the report says for how long.
# Each step has a time limit (its own cap, and what is left before the deadline); a step that fails or runs
# out of time is recorded, and the steps after it still run. Every step's output is merged into the JSON
# after each step, so a call cut short still returns the figures so far.
#
# Environment: PY (python3; with --cpu, .venv/bin/python where it exists), OUT (default: a new /tmp folder),
# TRAIN_ARGS (more arguments for bench/gpu_train.py, e.g. "--shapes gpt2_124m --modes eager" for a rerun).
# Merging a rerun into the first call's document: python bench/gpu_report.py --merge FIRST RERUN --out FILE
set -uo pipefail

START_UNIX="$(date +%s)"  # with SECONDS, which counts from here
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ARGS="$*"
MODE=gpu
STEPS="install,env,warmup,tests,tiny_corpus,train,decode"
SKIP=""
DEADLINE=""
while (($#)); do
  case "$1" in
    --cpu) MODE=cpu ;;
    --only) STEPS="$2"; shift ;;
    --skip) SKIP="$2"; shift ;;
    --deadline) DEADLINE="$2"; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench/gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $MODE == cpu ]]; then
  [[ -x .venv/bin/python ]] && PY="${PY:-$ROOT/.venv/bin/python}"
  DEADLINE="${DEADLINE:-900}"
  DEVICE=cpu
  TOY=(--toy)
  BACKEND=aot_eager  # torch.compile's plumbing without the minutes of C++ compiles of a cold CPU cache
  export OMP_NUM_THREADS=1  # a shared 2-core machine: one thread a process
else
  DEADLINE="${DEADLINE:-318}"
  DEVICE=cuda
  TOY=()
  BACKEND=inductor
fi
PY="${PY:-python3}"
OUT="${OUT:-$(mktemp -d /tmp/gpu_bench_out.XXXXXX)}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/gpu_bench_parts.XXXXXX)"
DATE="$(date +%F)"
REPORT="$OUT/gpu_$DATE.json"
COMMAND="bash bench/gpu.sh $ARGS"
exec 2> >(tee -a "$OUT/gpu.log" >&2)

export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
[[ -d /tmp/site ]] && export PYTHONPATH="/tmp/site:$PYTHONPATH"  # wheels installed by an earlier call

# tests and tiny_corpus on the lower half of the cores, warmup on the upper half (where there are enough).
NCPU="$(nproc)"
LOW=() HIGH=()
if command -v taskset >/dev/null && ((NCPU >= 8)) && taskset -c "0-$((NCPU / 2 - 1))" true 2>/dev/null &&
  taskset -c "$((NCPU / 2))-$((NCPU - 1))" true 2>/dev/null; then
  LOW=(taskset -c "0-$((NCPU / 2 - 1))") HIGH=(taskset -c "$((NCPU / 2))-$((NCPU - 1))")
fi

say() { echo "[gpu.sh $(printf '%4d' "$SECONDS") s] $*" >&2; }
# install and env always run (a fresh machine has no wheels), and warmup with train, unless --skip names them.
wanted() {
  local steps=",install,env,$STEPS,"
  [[ $steps == *",train,"* ]] && steps+="warmup,"
  [[ $steps == *",$1,"* && ",$SKIP," != *",$1,"* ]]
}
left() { echo $((DEADLINE - SECONDS)); }
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/steps.tsv"; }  # name status rc s limit start end
report() { "$PY" bench/gpu_report.py --parts "$WORK" --out "$REPORT" --mode "$MODE" --command "$COMMAND" ||
  say "the report failed: the parts are in $WORK"; }

# step NAME CAP COMMAND...: runs COMMAND (its stdout into the NAME part) within min(CAP, time left), then
# merges the report. A command given the literal argument @BUDGET gets its limit less 8 seconds there.
step() {
  local name=$1 cap=$2 limit start rc status
  shift 2
  wanted "$name" || return 0
  limit=$(($(left) - 3 < cap ? $(left) - 3 : cap))
  if ((limit < 10)); then
    say "$name: not run, ${limit}s left before the deadline"
    record "$name" "no time" - 0 "$limit" "$SECONDS" "$SECONDS"
    return 0
  fi
  local args=("${@//@BUDGET/$((limit - 8))}")
  say "$name: starting (limit ${limit}s)"
  start=$SECONDS
  timeout -k 5 "$limit" "${args[@]}" >"$WORK/$name.json"
  rc=$?
  case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
  record "$name" "$status" "$rc" $((SECONDS - start)) "$limit" "$start" "$SECONDS"
  say "$name: $status (exit $rc) after $((SECONDS - start))s"
  report
}

install() {
  say "wheels carried in .whl: $(ls .whl/*.whl 2>/dev/null | xargs -n1 basename 2>/dev/null | tr '\n' ' ')"
  "$PY" - <<'EOF' >&2
from importlib import metadata
names = "torch transformers huggingface-hub tokenizers accelerate peft pyarrow scikit-learn hydra-core omegaconf "
names += "antlr4-python3-runtime datasets dill multiprocess pydivsufsort opacus wandb"
for name in names.split():
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = "MISSING"
    print(f"  before install: {name:24} {version}")
EOF
  if [[ $MODE == cpu ]]; then  # cp312 wheels on this Python: unpack them for Python 3.12 to check the set
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --only-binary=:all: .whl/*.whl >&2
  else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl >&2 && export PYTHONPATH="/tmp/site:$PYTHONPATH"
  fi
  local rc=$?
  echo "{\"wheels\": $(ls .whl/*.whl | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))'), \"rc\": $rc}"
  return $rc
}

say "mode $MODE, python $PY, out $OUT, deadline ${DEADLINE}s, steps $STEPS${SKIP:+ except $SKIP}"
if wanted install; then  # in this shell, so that PYTHONPATH carries to the steps after it
  start=$SECONDS
  install >"$WORK/install.json"
  rc=$?
  record install "$([[ $rc == 0 ]] && echo ok || echo failed)" "$rc" $((SECONDS - start)) - "$start" "$SECONDS"
  say "install: exit $rc after $((SECONDS - start))s"
fi
step env 60 "$PY" bench/gpu_env.py

WARMUP_PID=""
if wanted warmup && wanted train && (($(left) > 150)); then
  say "warmup: compiling in the background"
  WARMUP_START=$SECONDS
  # Its budget ends it before the wait below would: it starts no compile that would not end by then.
  timeout -k 5 $(($(left) - 125)) "${HIGH[@]}" "$PY" bench/gpu_train.py --warm-only --device "$DEVICE" "${TOY[@]}" \
    --backend "$BACKEND" --budget-s $(($(left) - 135)) >"$WORK/warmup.json" 2>"$WORK/warmup.log" &
  WARMUP_PID=$!
fi
step tests 90 "${LOW[@]}" "$PY" bench/gpu_tests.py --budget-s @BUDGET $([[ $MODE == gpu ]] && echo --cuda-only)
step tiny_corpus 120 "${LOW[@]}" "$PY" bench/gpu_e2e.py --device "$DEVICE" --budget-s @BUDGET "${TOY[@]}"
if [[ -n $WARMUP_PID ]]; then
  # Wait for the compile cache, but leave train and decode their time: past that, train compiles cold.
  while kill -0 "$WARMUP_PID" 2>/dev/null && (($(left) > 130)); do sleep 1; done
  kill -0 "$WARMUP_PID" 2>/dev/null && { say "warmup: still running, stopped"; kill "$WARMUP_PID"; }
  wait "$WARMUP_PID"
  rc=$?
  cat "$WORK/warmup.log" >&2
  # When it ended: the time its JSON says (the loop above looks only once tests and tiny_corpus are done).
  ended=$("$PY" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["ended_unix"]))' "$WORK/warmup.json" \
    2>/dev/null) && WARMUP_END=$((ended - START_UNIX)) || WARMUP_END=$SECONDS
  record warmup "$([[ $rc == 0 ]] && echo ok || echo failed)" "$rc" $((WARMUP_END - WARMUP_START)) - \
    "$WARMUP_START" "$WARMUP_END"
  say "warmup: exit $rc after $((WARMUP_END - WARMUP_START))s"
fi
step train 170 "$PY" bench/gpu_train.py --device "$DEVICE" --backend "$BACKEND" --budget-s @BUDGET "${TOY[@]}" \
  --warmup-json "$WORK/warmup.json" ${TRAIN_ARGS:-}
step decode 90 "$PY" bench/gpu_decode.py --device "$DEVICE" --budget-s @BUDGET "${TOY[@]}"

report
say "done in ${SECONDS}s: $REPORT"
"$PY" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["summary"], indent=1))' "$REPORT"
