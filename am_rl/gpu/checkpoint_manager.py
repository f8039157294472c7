"""verl's weight-sync manager, with the balancer kept out of sleeping engines. Selected by
``actor_rollout_ref.rollout.checkpoint_manager_class`` (a verl config hook).

Weight sync stays verl's own (the hybrid engine loads the actor's weights in-process, no copy over HTTP). Around
it, routing to the engines is paused: a request routed to an engine that is asleep or half-loaded would fail or,
worse, mix two policies in one sample. verl builds this manager after its vLLM replicas are up, so the constructor
is also where their HTTP endpoints are registered with the balancer.

The balancer's URL comes from ``AM_RL_BALANCER_URL``, which ``am_rl.gpu.task_runner`` sets in the trainer process
from ``am_rl.balancer.url`` (verl passes this class only the ``checkpoint_engine`` section).
"""

from __future__ import annotations

import os
from typing import Any

from verl.checkpoint_engine import CheckpointEngineManager
from verl.utils.ray_utils import auto_await

from am_rl.gpu.balancer_control import BalancerControl

BALANCER_URL_ENV = "AM_RL_BALANCER_URL"
CONTROL_TIMEOUT_ENV = "AM_RL_BALANCER_CONTROL_TIMEOUT_S"


def replica_urls(replicas: list[Any]) -> list[str]:
    """Base URLs of verl rollout replicas' OpenAI servers (``server_address`` is ``host:port``)."""
    return [f"http://{r.server_address}" for r in replicas]


class BalancerPausingCheckpointManager(CheckpointEngineManager):
    def __init__(self, config: Any, actor_wg: Any, replicas: list[Any]) -> None:
        super().__init__(config, actor_wg, replicas)
        url = os.environ.get(BALANCER_URL_ENV)
        if not url:
            raise RuntimeError(f"{BALANCER_URL_ENV} is not set in the trainer process (am_rl.gpu.task_runner sets it)")
        self.balancer = BalancerControl(url, float(os.environ.get(CONTROL_TIMEOUT_ENV, "30")))
        self.balancer.register(replica_urls(self.replicas))

    def add_replicas(self, replicas: list[Any]) -> None:
        super().add_replicas(replicas)
        self.balancer.register(replica_urls(replicas))

    def remove_replicas(self, replicas: list[Any]) -> None:
        self.balancer.deregister(replica_urls(replicas))
        super().remove_replicas(replicas)

    @auto_await
    async def sleep_replicas(self) -> None:
        await self.balancer.set_paused(replica_urls(self.replicas), True)
        await super().sleep_replicas()

    @auto_await
    async def update_weights(self, global_steps: int = None):
        urls = replica_urls(self.replicas)
        await self.balancer.set_paused(urls, True)
        result = await super().update_weights(global_steps)
        await self.balancer.set_paused(urls, False)  # only after every replica holds the new weights
        return result
