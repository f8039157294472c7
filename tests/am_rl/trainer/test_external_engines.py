"""External engines as verl replicas: how engines are shared among replicas (any number of engines per trainer
rank), what the checkpoint manager registers, and the replicas' wait for the engines' health."""

import asyncio

import pytest

from am_rl.trainer.checkpoint_manager import replica_urls
from am_rl.trainer.external_engines import ENGINE_URLS_ENV, engine_urls_from_env, engines_of_replica, wait_healthy


@pytest.mark.parametrize("engines, replicas", [(2, 1), (5, 2), (3, 3), (2, 4), (16, 8)])
def test_every_engine_belongs_to_exactly_one_replica(engines, replicas):
    urls = [f"http://e{i}:1" for i in range(engines)]
    shares = [engines_of_replica(urls, r, replicas) for r in range(replicas)]
    assert sorted(u for share in shares for u in share) == sorted(urls)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1, "engines are spread evenly"


def test_the_checkpoint_manager_registers_every_engine_of_every_replica():
    class External:
        server_urls = ["http://e0:1", "http://e2:1"]

    class Hybrid:
        server_address = "10.0.0.1:8000"

    assert replica_urls([External(), Hybrid()]) == ["http://e0:1", "http://e2:1", "http://10.0.0.1:8000"]


def test_engine_urls_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENGINE_URLS_ENV, "http://a:1/, http://b:2")
    assert engine_urls_from_env() == ["http://a:1", "http://b:2"]
    monkeypatch.setenv(ENGINE_URLS_ENV, "")
    with pytest.raises(RuntimeError, match=ENGINE_URLS_ENV):
        engine_urls_from_env()


def test_an_engine_that_never_comes_up_is_named():
    with pytest.raises(RuntimeError, match=r"http://127\.0\.0\.1:9.*not healthy after 1s"):
        asyncio.run(wait_healthy(["http://127.0.0.1:9"], timeout_s=1.0))
