#!/bin/bash
# GPU smoke test: 2 real GRPO steps of the tiny test model on one GPU through the GPU path (verl's Ray trainer with
# am_rl's task runner, trainer-side shuffle, every sample through the load balancer, rewards from the reward
# service, overlong -> advantage 0). No downloads: the model is built locally (am_rl.models.tiny), the data generated.
#
#   scripts/gpu_smoke.sh [hydra overrides...]
#
# Env: PYTHON (default: python), AM_RL_SMOKE_DIR (default: outputs/gpu_smoke), AM_RL_SMOKE_INSTALL=1 (pip install
# -e ".[gpu]" when verl's GPU dependencies are missing), AM_RL_SMOKE_DRY_RUN=1 (stop after the dry run: no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${AM_RL_SMOKE_DIR:-outputs/gpu_smoke}
DRY_RUN=${AM_RL_SMOKE_DRY_RUN:-0}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # Ray's workers import am_rl from here too
mkdir -p "$OUT"

say() { echo "[gpu_smoke] $*" >&2; }

if [[ $DRY_RUN != 1 ]]; then
    nvidia-smi -L >/dev/null 2>&1 || { say "no NVIDIA GPU visible (nvidia-smi -L failed)"; exit 1; }
    if ! "$PY" -c "import vllm, torch; assert torch.cuda.is_available()" 2>/dev/null; then
        if [[ ${AM_RL_SMOKE_INSTALL:-0} == 1 ]]; then
            say "installing the gpu extra (verl's vLLM and Megatron stack)"
            "$PY" -m pip install -e ".[gpu]"
        else
            say "vLLM or CUDA torch missing: pip install -e '.[gpu]' (or set AM_RL_SMOKE_INSTALL=1)"
            exit 1
        fi
    fi
fi

MODEL=$("$PY" -m am_rl.models.tiny | tail -n 1)
say "model: $MODEL"
"$PY" -m am_rl.demo.data "$OUT/data" >/dev/null
OVERRIDES=(
    "actor_rollout_ref.model.path=$MODEL"
    "data.train_files=$OUT/data/train.parquet"
    "data.val_files=$OUT/data/val.parquet"
    "trainer.default_local_dir=$OUT"
)

"$PY" -m am_rl.main_grpo --config-name gpu_smoke trainer.dry_run=true "${OVERRIDES[@]}" "$@" | tee "$OUT/plan.txt"
if [[ $DRY_RUN == 1 ]]; then
    say "dry run only: plan in $OUT/plan.txt"
    exit 0
fi

say "training 2 steps; log: $OUT/train.log"
"$PY" -m am_rl.main_grpo --config-name gpu_smoke "${OVERRIDES[@]}" "$@" 2>&1 | tee "$OUT/train.log"

# verl's console logger prints one "step:N - key:value - ..." line per training step.
for step in 1 2; do
    grep -q "step:$step - " "$OUT/train.log" || { say "FAILED: no metrics line for step $step"; exit 1; }
done
# 2 steps x 4 prompts x 4 samples went through the balancer the trainer started (it prints its totals at exit).
requests=$(grep -o "balancer totals: requests=[0-9]*" "$OUT/train.log" | tail -n 1 | grep -o "[0-9]*$" || echo 0)
((requests >= 32)) || { say "FAILED: the balancer relayed $requests requests, expected >= 32"; exit 1; }
# The trainer and vLLM hold one policy: both compute in fp32 here, so their token probabilities agree to ~1e-6.
gap=$(grep -o "training/rollout_probs_diff_max:[0-9.e+-]*" "$OUT/train.log" | tail -n 1 | cut -d: -f2)
"$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 1e-3 else 1)" "${gap:-inf}" \
    || { say "FAILED: trainer-vs-engine probability gap ${gap:-missing} > 1e-3"; exit 1; }
grep -o "step:2 - .*" "$OUT/train.log" | tr ' ' '\n' | grep -E "^(actor/pg_loss|critic/score/mean|response_length/mean|timing_s/gen):" >&2 || true
say "OK: 2 GRPO steps, $requests samples through the balancer"
