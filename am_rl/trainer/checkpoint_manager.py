"""verl's weight-sync manager, with the balancer kept out of engines that sleep or take new weights. Selected by
``actor_rollout_ref.rollout.checkpoint_manager_class`` (a verl config hook).

Weight sync stays verl's own: hybrid replicas load the actor's weights in-process; external engines
(``rollout.name=am_external``) get them pushed by ``am_rl.trainer.external_engines`` inside the same call. Around it,
routing to the engines is paused: a request routed to an engine that is asleep or half-loaded would fail or, worse,
mix two policies in one sample. Routing resumes in a ``finally``, so a failed sync never leaves the balancer paused
for the next run to trip over. verl builds this manager after its replicas are up, so the constructor is also where
their endpoints are registered with the balancer.
"""

from __future__ import annotations

from typing import Any

from verl.checkpoint_engine import CheckpointEngineManager
from verl.utils.ray_utils import auto_await

from am_rl.trainer.balancer_control import BALANCER_URL_ENV, control_from_env


def replica_urls(replicas: list[Any]) -> list[str]:
    """Base URLs of the engines behind verl rollout replicas: an external replica's own list, else the replica's
    OpenAI server (``server_address`` is ``host:port``)."""
    urls: list[str] = []
    for r in replicas:
        urls += r.server_urls if hasattr(r, "server_urls") else [f"http://{r.server_address}"]
    return urls


class BalancerPausingCheckpointManager(CheckpointEngineManager):
    def __init__(self, config: Any, actor_wg: Any, replicas: list[Any]) -> None:
        super().__init__(config, actor_wg, replicas)
        balancer = control_from_env()
        if balancer is None:
            raise RuntimeError(f"{BALANCER_URL_ENV} is not set in the trainer process (am_rl.trainer.run sets it)")
        self.balancer = balancer
        self.balancer.register(replica_urls(self.replicas))

    def add_replicas(self, replicas: list[Any]) -> None:
        super().add_replicas(replicas)
        self.balancer.register(replica_urls(replicas))

    def remove_replicas(self, replicas: list[Any]) -> None:
        self.balancer.deregister(replica_urls(replicas), missing_ok=True)
        super().remove_replicas(replicas)

    def _routed_urls(self) -> list[str]:
        """The replicas' engines the balancer still routes to (an engine that failed a push has been removed)."""
        registered = self.balancer.registered()
        return [url for url in replica_urls(self.replicas) if url in registered]

    @auto_await
    async def sleep_replicas(self) -> None:
        self.balancer.set_paused(self._routed_urls(), True)
        await super().sleep_replicas()

    @auto_await
    async def update_weights(self, global_steps: int = None):
        self.balancer.set_paused(self._routed_urls(), True)
        try:
            return await super().update_weights(global_steps)
        finally:
            self.balancer.set_paused(self._routed_urls(), False)  # after every engine holds the new weights
