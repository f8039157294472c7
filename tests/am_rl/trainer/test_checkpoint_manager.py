"""The weight-sync hook: verl's replicas get registered with a real balancer, and routing to them is paused while
they sleep or take new weights, resumed after. Replicas and the actor worker group are simulated (they need GPUs);
the engines behind the balancer are the balancer's load generators (vLLM-shaped streaming servers)."""

import httpx
import pytest
import ray
from verl.workers.config import CheckpointEngineConfig

from am_rl.trainer.checkpoint_manager import BALANCER_URL_ENV, BalancerPausingCheckpointManager
from load_balancer.config import BalancerConfig
from load_balancer.loadgen import LoadGenSettings, build_loadgen_app
from load_balancer.server import BalancerServer, ThreadedServer


def paused_flags(lb_url: str) -> dict[str, bool]:
    return {v["url"]: v["paused"] for v in httpx.get(f"{lb_url}/instances", timeout=10).json()}


class SimulatedReplica:
    """verl's RolloutReplica as the manager sees it: an OpenAI server address, sleep()."""

    def __init__(self, address: str, lb_url: str, log: list) -> None:
        self.server_address = address
        self.lb_url, self.log = lb_url, log

    async def sleep(self) -> None:
        async with httpx.AsyncClient() as http:
            views = (await http.get(f"{self.lb_url}/instances", timeout=10)).json()
        self.log.append(("sleep", {v["url"]: v["paused"] for v in views}))


class SimulatedActorGroup:
    """verl's actor worker group: ``update_weights`` (hybrid engine, backend naive) returns Ray object refs."""

    def __init__(self, lb_url: str, log: list) -> None:
        self.lb_url, self.log = lb_url, log

    def update_weights(self, global_steps=None, mode=None):
        self.log.append(("update_weights", paused_flags(self.lb_url)))
        return [ray.put(None)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def engines():
    servers = [ThreadedServer(build_loadgen_app(LoadGenSettings())).start() for _ in range(2)]
    yield servers
    for s in servers:
        s.stop()


def test_registers_replicas_and_pauses_around_sleep_and_weight_sync(local_ray, engines, monkeypatch):
    with BalancerServer(BalancerConfig(port=0)) as lb:
        monkeypatch.setenv(BALANCER_URL_ENV, lb.url)
        log: list = []
        replicas = [SimulatedReplica(f"127.0.0.1:{e.port}", lb.url, log) for e in engines]
        urls = {f"http://127.0.0.1:{e.port}" for e in engines}
        manager = BalancerPausingCheckpointManager(
            CheckpointEngineConfig(backend="naive"), SimulatedActorGroup(lb.url, log), replicas
        )
        assert set(paused_flags(lb.url)) == urls  # registered, routable
        assert not any(paused_flags(lb.url).values())

        manager.sleep_replicas()  # sync call, as verl's trainer makes it
        assert [entry[0] for entry in log] == ["sleep", "sleep"]
        assert all(all(flags.values()) for _, flags in log), "routing paused before any replica sleeps"
        assert all(paused_flags(lb.url).values())

        manager.update_weights(global_steps=1)
        assert log[-1][0] == "update_weights" and all(log[-1][1].values()), "paused during the weight load"
        assert not any(paused_flags(lb.url).values()), "resumed once the new weights are in"
        body = {"model": "loadgen", "prompt": "x", "max_tokens": 2}
        r = httpx.post(f"{lb.url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 200


def test_without_balancer_url_fails_clearly(monkeypatch):
    monkeypatch.delenv(BALANCER_URL_ENV, raising=False)
    with pytest.raises(RuntimeError, match=BALANCER_URL_ENV):
        BalancerPausingCheckpointManager(CheckpointEngineConfig(backend="naive"), None, [])
