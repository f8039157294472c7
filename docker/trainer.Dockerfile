# The trainer (DESIGN.md §5, GPU shape): verl's vLLM application image -- CUDA, torch, vLLM, flash-attn and
# Megatron already built for verl -- plus am_rl with its `gpu` extra (verl[vllm,mcore] 0.9.1, megatron-core).
# Build from the repository root:  docker build -f docker/trainer.Dockerfile -t am_rl/trainer .
ARG BASE_IMAGE=verlai/verl:vllm024.latest
FROM ${BASE_IMAGE}

WORKDIR /opt/am_rl
COPY setup.py ./
COPY am_rl am_rl
COPY load_balancer load_balancer
COPY reward_server reward_server
COPY recipes recipes
# Editable: the Hydra entry point finds recipes/ next to the am_rl package (am_rl.config.load.RECIPES_DIR).
RUN pip install --no-cache-dir -e ".[gpu]"

ENTRYPOINT ["python", "-m", "am_rl.main_grpo"]
CMD ["--help"]
