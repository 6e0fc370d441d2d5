#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md, each part time-boxed, results under $OUT.
#
#   OUT=/tmp/zoo-gpu bash benchmarks/gpu_suite.sh [PART ...]
#
# PARTs (default: all, in this order): tests variants gpt rnn bert compile depths. Made for
# one NVIDIA GPU host with jax[cuda] and torch (see README, "On a GPU"); nothing here downloads
# anything. The tests part runs in one process (`-o addopts=""`: no pytest-xdist needed).
set -u
OUT=${OUT:-/tmp/zoo-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
# torch shares the process (and the GPU) with JAX in the side-by-side benchmarks.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
PY=${PY:-python3}
PARTS=${*:-tests variants gpt rnn bert compile depths}

part() {  # part NAME SECONDS COMMAND...: runs COMMAND into $OUT/NAME.log, at most SECONDS
  local name=$1 secs=$2 t0=$SECONDS
  shift 2
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: rc=$? in $((SECONDS - t0)) s" | tee -a "$OUT/parts.txt"
  tail -n 25 "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import sys, jax, flax, optax, torch; print(sys.version.split()[0], 'jax', jax.__version__,
'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())" \
  > "$OUT/versions.txt" 2>&1
cat "$OUT/gpu.txt" "$OUT/versions.txt"

TS="$PY -m benchmarks.train_step --steps 10 --repeats 3"
for p in $PARTS; do
  case $p in
    tests) part tests 150 $PY -m pytest -q -p no:cacheprovider -o addopts="" -x \
             tests/test_attention_gpu.py tests/test_cudnn_lstm.py ;;
    variants) part variants 230 $TS --workload gpt2_small --batch 32 --dtype bfloat16 --torch \
             --trace unrolled --json "$OUT/variants.json" --variant unrolled:scan_layers=False \
             scan:scan_layers=True "scan_unroll2:scan_layers=True,scan_unroll=2" ;;
    gpt) part gpt 240 $TS --workload gpt2_small --batch 32 8 --dtype bfloat16 \
             --torch eager compile --time-budget 220 --json "$OUT/gpt.json" ;;
    rnn) part rnn_lstm 100 $TS --workload lstm --batch 128 --seq-len 256 --torch eager \
             --override emb_dim=1024 hidden_size=1024 \
             --variant zoo: cudnn:rnn_implementation=cudnn --time-budget 60 \
             --json "$OUT/rnn_lstm.json"
         part rnn_gru 80 $TS --workload gru --batch 128 --seq-len 256 --torch eager \
             --override emb_dim=1024 hidden_size=1024 --time-budget 40 --json "$OUT/rnn_gru.json" ;;
    bert) part bert 200 $TS --workload bert_base --batch 32 --dtype bfloat16 \
             --torch eager compile --time-budget 180 --json "$OUT/bert.json" ;;
    compile) part compile 200 $PY -m benchmarks.compile_time --workload gpt2_small bert_base \
             --time-budget 180 --json "$OUT/compile.json" ;;
    depths) part depths 200 $PY -m benchmarks.train_step --workload gpt2_small --dtype bfloat16 \
             --torch --steps 1 --repeats 1 --time-budget 180 --json "$OUT/depths.json" \
             --variant warmup:num_layers=1,scan_layers=False \
             $(for d in 6 12 24; do echo "d$d:num_layers=$d,scan_layers=False" \
               "d${d}s:num_layers=$d,scan_layers=True"; done) ;;
    *) echo "unknown part $p" ;;
  esac
done
