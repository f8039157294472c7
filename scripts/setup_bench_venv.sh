#!/usr/bin/env bash
# The peer routers for bench/peers.py (issue 9), in a virtualenv of their own: .venv-bench (gitignored).
# They are benchmark subjects, never dependencies of am_rl: both wheels ship a prebuilt Rust binary that
# bench/peers.py starts as a subprocess.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench  # bench/peers_routers.py looks for the binaries here
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet vllm-router==0.1.17 smg==1.13.0
"$VENV/bin/vllm-router" --help >/dev/null  # it has no --version
"$VENV/bin/smg" --version
