#!/bin/bash
# Submit the reward service (CPU nodes) and a training run (GPU nodes) that starts once the reward job runs; the
# reward job ends when the training job does.
#   recipes/slurm/launch.sh stage1_32b [hydra overrides...]
# Env: AM_RL_REWARD_SBATCH_ARGS / AM_RL_TRAIN_SBATCH_ARGS (extra sbatch flags, e.g. "--partition=cpu"), and
# those of reward.sbatch and train.sbatch (recipes/slurm/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
recipe=${1:?usage: launch.sh RECIPE [hydra overrides...]}
shift
log_dir=${AM_RL_LOG_DIR:-$PWD/logs/am_rl-$recipe-$(date +%Y%m%d-%H%M%S)}
AM_RL_LOG_DIR=$log_dir source "$here/lib.sh"
url_file=$log_dir/reward_url
key_file=$log_dir/reward_api_key
train_job_file=$log_dir/train_job_id
rm -f "$url_file" "$train_job_file"
# One API key for both jobs, in a 0600 file both read. Made in a subshell: the key stays out of this script's
# environment, which sbatch (--export=ALL) would copy into both jobs' records.
(AM_RL_REWARD_API_KEY_FILE=$key_file am_reward_api_key)
export_both="ALL,AM_RL_LOG_DIR=$log_dir,AM_RL_REWARD_URL_FILE=$url_file,AM_RL_REWARD_API_KEY_FILE=$key_file"
export_both+=",AM_RL_SLURM_DIR=$here"
# shellcheck disable=SC2086  # the extra flags are meant to split
reward_job=$(sbatch --parsable ${AM_RL_REWARD_SBATCH_ARGS:-} --output="$log_dir/reward_job.out" \
    --export="$export_both,AM_RL_TRAIN_JOB_FILE=$train_job_file" "$here/reward.sbatch")
# shellcheck disable=SC2086
if ! train_job=$(sbatch --parsable ${AM_RL_TRAIN_SBATCH_ARGS:-} --dependency="after:$reward_job" \
    --output="$log_dir/train_job.out" \
    --export="$export_both,AM_RL_RECIPE=$recipe,AM_RL_REWARD_JOB_ID=$reward_job" \
    "$here/train.sbatch" "$@"); then
    scancel "$reward_job"
    echo "the training job was not submitted (above); reward job $reward_job cancelled" >&2
    exit 1
fi
echo "$train_job" >"$train_job_file"  # the reward job serves until this job ends
echo "reward job $reward_job, train job $train_job; logs in $log_dir"
