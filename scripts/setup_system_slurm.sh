#!/usr/bin/env bash
# System packages the Slurm launch tests need: Debian's slurm-wlm (slurmctld, slurmd, sbatch, srun, ...) and munge,
# for the two-node cluster of scripts/local_slurm.sh. Idempotent: installs only what is missing. Run as root (CI
# images) or with sudo. The packages' own services are not used (local_slurm.sh runs private daemons).
set -euo pipefail

missing=()
command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup_system_slurm: nothing to install ($(slurmd -V))"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
slurmd -V
