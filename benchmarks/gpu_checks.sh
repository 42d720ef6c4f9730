#!/usr/bin/env bash
# Everything GPU-related in one call, on a machine with an NVIDIA GPU: build with CUDA, run the
# GPU tests, then the CUDA advantage benchmark and the meta-iteration on CPU threads vs CUDA.
# Logs go to OUT_DIR (default ./gpu-results), each step's as soon as it ends.
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
#
# Wheels in ./.whl (an offline machine's MuJoCo and Gymnasium) are installed first when present.
set -uo pipefail
out=${1:-gpu-results}
mkdir -p "$out"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
step() {  # step NAME COMMAND...: run, log, note the exit status, go on
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
  tail -n 25 "$out/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
step build python3 -m pip install -q --no-build-isolation --no-deps --no-index .
# -P: not the source tree's metarobot/ (it has no compiled core)
step tests python3 -P -m pytest -q -rs tests/test_gpu.py tests/test_returns.py
step gae python3 -P benchmarks/gae.py --device cuda --repeats 200
step host_copies python3 -P benchmarks/host_to_device.py
step outer python3 -P benchmarks/outer_step.py --compare device --repeats 2 \
  --families HalfCheetahDir AntDir
# the Go2 controller's learner (ppo, the committed run's settings): sampling on every core
step outer_go2 python3 -P benchmarks/outer_step.py --compare device --repeats 1 --no-profile \
  --families Go2Walk --set algo=ppo meta_batch_size=20 trajectories_per_task=10 \
  'hidden_sizes=[128,128]' activation=tanh gae_lambda=0.95
cat "$out/summary.txt"
