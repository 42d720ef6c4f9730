#!/usr/bin/env bash
# Go2 walking recipes side by side: several ppo training runs at once, each on its own CPU
# threads (sampling) and the same device (the learner), for the same wall-clock budget; then
# every checkpoint they kept evaluated on held-out tasks (tracking error, falls, return).
#
#   bash benchmarks/go2_recipes.sh [OUT_DIR] [SECONDS] [THREADS_PER_RUN]
#
# DEVICE (default cuda) is the learner's device. Each run writes OUT_DIR/NAME (checkpoints,
# progress.csv), its log OUT_DIR/NAME.log and OUT_DIR/NAME/eval_ITERATION.json per checkpoint.
set -uo pipefail
out=${1:-go2-recipes}
budget=${2:-270}
threads=${3:-4}
device=${DEVICE:-cuda}
mkdir -p "$out"
metarobot() { python3 -P -c 'import sys, metarobot.cli; sys.exit(metarobot.cli.main(sys.argv[1:]))' "$@"; }
common=(--algo ppo --meta-batch-size 20 --trajectories-per-task 10 --gae-lambda 0.95
        --iterations 100000 --time-budget "$budget" --threads "$threads" --device "$device"
        --checkpoint-every 40 --quiet)
recipe() {  # recipe NAME TRAIN-FLAGS...
  local name=$1; shift
  metarobot train "${common[@]}" --out "$out/$name" "$@" > "$out/$name.log" 2>&1 &
}
# the robot's variations from the start (Go2Walk) or close to the nominal robot
# (Go2WalkNominal); the policy's size and activation
recipe dr-big --family Go2Walk --hidden-sizes 512 256 128 --activation tanh
recipe nominal-small --family Go2WalkNominal --hidden-sizes 128 128 --activation tanh
recipe nominal-big --family Go2WalkNominal --hidden-sizes 512 256 128 --activation tanh
recipe nominal-big-relu --family Go2WalkNominal --hidden-sizes 512 256 128 --activation relu
wait
for run in "$out"/*/; do
  for ckpt in "$run"checkpoints/*.safetensors; do
    name=$(basename "$ckpt" .safetensors)
    metarobot evaluate "$ckpt" --tasks 8 --steps 0 --trajectories 4 --threads "$threads" \
      --json "$run/eval_$name.json" > "$run/eval_$name.log" 2>&1 &
  done
  wait
done
for run in "$out"/*/; do
  tail -n 2 "$run"progress.csv
  for j in "$run"eval_*.json; do echo "$j"; head -c 400 "$j"; echo; done
done
