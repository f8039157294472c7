"""Small verl-schema rows for the data-pipeline tests, and the real stack they sample from."""

import asyncio
import json

import pytest
import torch
from demo_task import SMALL_TASK

from am_rl.config.load import compose
from am_rl.data.ingest import IngestOptions, ingest
from am_rl.demo.inputs import demo_model
from am_rl.weight_sync import WeightPusher


@pytest.fixture
def make_rows(tmp_path):
    """``make_rows(records, source="arithmetic")`` -> verl rows ingested from flat records (ids "<source>:<n>")."""

    def make(records, source="arithmetic"):
        path = tmp_path / f"{source}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        rows, report = ingest([path], IngestOptions())
        assert report.dropped == [], report.dropped
        return rows

    return make


def load_weights(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()


@pytest.fixture(scope="module")
def demo_cfg():
    return compose("demo_cpu", SMALL_TASK)


@pytest.fixture(scope="module")
def stack(vllm_servers, tiny_model, demo_cfg, tmp_path_factory):
    """(balancer URL, reward URL, warm model dir) with the session's servers running the warm model."""
    from load_balancer.config import BalancerConfig
    from load_balancer.server import BalancerServer
    from reward_server.launcher import reward_service

    warm_dir = demo_model(demo_cfg)
    pusher = WeightPusher(vllm_servers.urls)
    asyncio.run(pusher.push(load_weights(warm_dir), version="warm"))
    try:
        log = tmp_path_factory.mktemp("rs") / "reward_server.log"
        with reward_service(log, workers=1) as (reward_url, _), BalancerServer(
            BalancerConfig(port=0, instances=list(vllm_servers.urls))
        ) as balancer:
            yield balancer.url, reward_url, warm_dir
    finally:
        asyncio.run(pusher.push(load_weights(tiny_model), version="restored"))
        pusher.close()
