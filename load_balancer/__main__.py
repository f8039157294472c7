"""python -m load_balancer --host 127.0.0.1 --port 8000 [--instance URL ...] [--policy NAME] [--redis-url URL]
[--api-key KEY] [--no-migrate] [--shard I/K] [--peer URL ...]"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import uvicorn

from load_balancer.app import build_app
from load_balancer.config import BalancerConfig
from load_balancer.server import BalancerUvicorn


def policy_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers and true/false typed; anything else stays a string
    except json.JSONDecodeError:
        return key, value


def shard_of(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        return int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/K (shard I of K, 1-based), got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> tuple[BalancerConfig, str]:
    defaults = BalancerConfig()
    p = argparse.ArgumentParser(prog="python -m load_balancer", description=__doc__.split("\n")[0])
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--port", type=int, default=defaults.port)
    p.add_argument("--instance", action="append", default=[], metavar="URL", help="vLLM server URL (repeatable)")
    p.add_argument("--policy", default=defaults.policy)
    p.add_argument("--policy-option", action="append", default=[], metavar="KEY=VALUE", type=policy_option,
                   help="policy constructor argument, e.g. min_gain_s=2 (repeatable)")  # fmt: skip
    p.add_argument("--redis-url", default=None, help="keep the instance registry in Redis")
    p.add_argument("--api-key", default=os.environ.get("AM_RL_BALANCER_API_KEY"), help="default: $AM_RL_BALANCER_API_KEY")
    p.add_argument("--scrape-interval", type=float, default=defaults.scrape_interval_s, metavar="S")
    p.add_argument("--migrate", action=argparse.BooleanOptionalAction, default=defaults.migrate,
                   help="move sequences between instances (BalancerConfig.migrate)")  # fmt: skip
    p.add_argument("--migration-interval", type=float, default=defaults.migration_interval_s, metavar="S",
                   help="with --migrate, how often the policy is asked for moves (> 0)")  # fmt: skip
    p.add_argument("--shard", type=shard_of, default=(defaults.shard, defaults.shards), metavar="I/K",
                   help="shard I of a run's K balancer processes (shown on the dashboard)")  # fmt: skip
    p.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="another shard of the run (repeatable): /dashboard?view=all merges their views")  # fmt: skip
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    try:
        config = BalancerConfig(
            host=a.host, port=a.port, instances=a.instance, policy=a.policy, policy_options=dict(a.policy_option), redis_url=a.redis_url, api_key=a.api_key,
            scrape_interval_s=a.scrape_interval, migrate=a.migrate, migration_interval_s=a.migration_interval,
            shard=a.shard[0], shards=a.shard[1], peers=a.peer,
        )  # fmt: skip
    except ValueError as e:
        p.error(str(e))
    return config, a.log_level


def main(argv: list[str] | None = None) -> None:
    cfg, log_level = parse_args(argv)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(build_app(cfg), host=cfg.host, port=cfg.port, log_level=log_level, access_log=False)
    BalancerUvicorn(config).run()


if __name__ == "__main__":
    main()
