"""python -m reward_server --host 127.0.0.1 --port PORT [--redis-url URL] [--workers N] [--limits-json '{...}']

Secrets come from the environment: the API key from $AM_RL_REWARD_API_KEY (or --api-key), a Redis URL that carries a
password from $AM_RL_REWARD_REDIS_URL (or --redis-url); a command line is visible to every user of the machine.
"""

import argparse
import logging
import os

import uvicorn

from reward_server.app import ServerConfig, create_app
from reward_server.auth import API_KEY_ENV, api_key_from_env
from reward_server.config import WorkerSettings
from reward_server.limits import InputLimits
from reward_server.redis_url import REDIS_URL_ENV, redis_url_from_env


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m reward_server", description="am_rl reward service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--redis-url",
        default=redis_url_from_env(),
        help=f"Redis to use (default: ${REDIS_URL_ENV}); neither: start an embedded one",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local worker processes")
    p.add_argument("--settings-json", default="{}", help="WorkerSettings fields as JSON (timeouts, limits, rm)")
    p.add_argument("--limits-json", default="{}", help="InputLimits fields as JSON (reward_server/limits.py)")
    p.add_argument(
        "--api-key",
        default=api_key_from_env(),
        help=f"required on every route but /healthz (default: ${API_KEY_ENV}; prefer it: ps shows this flag)",
    )
    p.add_argument("--request-timeout", type=float, default=900.0)
    p.add_argument(
        "--no-worker-grace",
        type=float,
        default=30.0,
        help="seconds with jobs waiting and no live worker before they are answered with errors",
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        redis_url=args.redis_url,
        num_workers=args.workers,
        limits=InputLimits.model_validate_json(args.limits_json),
        api_key=args.api_key,
        request_timeout_s=args.request_timeout,
        no_worker_grace_s=args.no_worker_grace,
        worker=WorkerSettings.model_validate_json(args.settings_json),
        log_level=args.log_level,
    )
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
