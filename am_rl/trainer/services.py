"""The services a run talks to, each started on demand and always stopped: the load balancer (in this process,
reachable from every node), the reward service, and the policy's vLLM servers (from the vLLM virtualenv). Used by the
trainer's launch (``am_rl.trainer.run``) and by the data pipeline's example, which samples from the same stack."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from am_rl.config.schema import balancer_config
from am_rl.config.validate import ConfigError

logger = logging.getLogger(__name__)

SERVED_MODEL_NAME = "am_rl-policy"  # what external engines serve the policy as; stays as pushed weights change


def run_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.trainer.default_local_dir)
    (path / "logs").mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def started_balancer(cfg: DictConfig, engine_urls: list[str] = ()) -> Iterator[str]:
    """A balancer in this process (the driver, on the head node), reachable from the other nodes; ``engine_urls``
    registered from the start (the trainer registers its engines itself, through verl's checkpoint manager). With
    ``am_rl.balancer.processes`` K > 1, K balancer processes instead; the URL is then their comma-separated list."""
    import ray

    from load_balancer.server import BalancerServer

    section = cfg.am_rl.balancer
    if section.processes > 1:
        from am_rl.trainer.balancer_shards import started_shards

        host = "127.0.0.1" if section.host == "127.0.0.1" else ray.util.get_node_ip_address()
        with started_shards(section, host, list(engine_urls), run_dir(cfg) / "logs") as urls:
            yield ",".join(urls)
        return
    server = BalancerServer(balancer_config(section, host=section.host, port=section.port, instances=list(engine_urls)))
    with server:
        host = "127.0.0.1" if section.host == "127.0.0.1" else ray.util.get_node_ip_address()
        url = f"http://{host}:{server.port}"
        logger.info("load balancer at %s (dashboard: %s/dashboard)", url, url)
        try:
            yield url
        finally:
            snapshot = server.balancer.snapshot()
            totals = snapshot.totals
            per_engine = {view.url: view.tokens_relayed for view in snapshot.instances}
            # One line that says the samples really went through the balancer, and where (tests and
            # scripts/gpu_smoke.sh read it).
            print(
                f"balancer totals: requests={totals.requests} tokens_relayed={totals.tokens_relayed} "
                f"failovers={totals.failovers} migrations={totals.migrations} per_engine_tokens={per_engine}",
                flush=True,
            )


@contextlib.contextmanager
def started_reward_service(cfg: DictConfig) -> Iterator[str]:
    """A reward service on loopback with a key of its own: other users of the machine cannot submit code to it.
    The key goes into this process's environment, where the scorer reads it and which the processes of a Ray
    cluster started here inherit (not into Ray's runtime_env: verl prints that); the previous value comes back on
    exit."""
    import os
    import secrets

    from am_rl.ports import PortReservation
    from reward_server.auth import API_KEY_ENV
    from reward_server.launcher import reward_service

    if cfg.trainer.nnodes > 1:
        raise ConfigError(
            "am_rl.reward.url is null on a multi-node run: start the reward service (recipes/slurm/reward.sbatch) "
            "and pass its URL; a service started here listens on 127.0.0.1 only"
        )
    key = secrets.token_urlsafe(32)
    before = os.environ.get(API_KEY_ENV)
    os.environ[API_KEY_ENV] = key
    log = run_dir(cfg) / "logs" / "reward_service.log"
    try:
        with PortReservation() as port, reward_service(log, workers=cfg.am_rl.reward.workers, api_key=key,
                                                      port=port.port) as (url, _):  # fmt: skip
            logger.info("reward service at %s", url)
            yield url
    finally:
        if before is None:
            os.environ.pop(API_KEY_ENV, None)
        else:
            os.environ[API_KEY_ENV] = before


@contextlib.contextmanager
def launched_engines(cfg: DictConfig) -> Iterator[list[str]]:
    """``am_rl.vllm.num_servers`` vLLM servers of the policy, launched (not yet healthy: the replicas wait)."""
    from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup, default_vllm_python
    from am_rl.weight_sync import SERVER_ARGS as WEIGHT_SYNC_ARGS

    section = cfg.am_rl.vllm
    group = VLLMServerGroup(
        VLLMServerConfig(
            model=str(cfg.actor_rollout_ref.model.path),
            python=section.python or default_vllm_python(),
            max_model_len=cfg.actor_rollout_ref.rollout.max_model_len,
            kv_cache_memory_bytes=section.kv_cache_memory_bytes,
            startup_timeout_s=section.startup_timeout_s,
            stream_interval=section.stream_interval,
            extra_args=[*WEIGHT_SYNC_ARGS, "--served-model-name", SERVED_MODEL_NAME],
            log_dir=str(run_dir(cfg) / "logs"),
        ),
        section.num_servers,
    )
    watch = StartupWatch(group)
    try:
        for server in group.servers:
            server.start()
        logger.info("vLLM servers starting: %s (logs in %s)", " ".join(group.urls), group.log_dir)
        watch.start()
        yield group.urls
    except KeyboardInterrupt:
        if watch.error is not None:
            raise watch.error from None
        raise
    finally:
        watch.cancel()
        group.stop()


class StartupWatch(threading.Thread):
    """Watches the launched servers until all are healthy. The replicas in the Ray workers wait for them too, but they
    cannot see a server's process: a server that exits during startup (bad model path, out of memory) would leave the
    run waiting for the replicas' whole timeout. On such an exit (or the startup timeout) the watch interrupts the main
    thread as Ctrl-C would, so the run unwinds and stops everything, and ``launched_engines`` raises the startup error
    with the server's log tail instead of the interrupt."""

    def __init__(self, group) -> None:
        super().__init__(name="vllm-startup-watch", daemon=True)
        self.group = group
        self.error: Exception | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop watching before the servers are stopped (their processes go away under the watch otherwise)."""
        self._cancelled.set()
        if self.is_alive():
            self.join()

    def run(self) -> None:
        from am_rl.vllm_servers import VLLMStartupError

        try:
            self.group.start_wait(self._cancelled)
        except VLLMStartupError as e:
            self.error = e
            logger.error("%s", e)
            os.kill(os.getpid(), signal.SIGINT)


@contextlib.contextmanager
def policy_stack(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    """(balancer URL, reward URL): the policy served by ``am_rl.vllm.num_servers`` healthy engines behind a balancer,
    and a reward service. For sampling outside training (the data pipeline's difficulty selection)."""
    import asyncio

    from am_rl.trainer.external_engines import wait_healthy

    with contextlib.ExitStack() as stack:
        engine_urls = stack.enter_context(launched_engines(cfg))
        reward_url = stack.enter_context(started_reward_service(cfg))
        asyncio.run(wait_healthy(engine_urls, cfg.am_rl.vllm.startup_timeout_s))
        yield stack.enter_context(started_balancer(cfg, engine_urls)), reward_url
