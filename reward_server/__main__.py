"""python -m reward_server --host 127.0.0.1 --port PORT [--redis-url URL] [--workers N]"""

import argparse
import logging
import os

import uvicorn

from reward_server.app import ServerConfig, create_app
from reward_server.config import WorkerSettings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m reward_server", description="am_rl reward service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--redis-url", default=None, help="Redis to use; omitted: start an embedded one")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local worker processes")
    p.add_argument("--settings-json", default="{}", help="WorkerSettings fields as JSON (timeouts, limits, rm)")
    p.add_argument("--max-body-mb", type=float, default=64.0)
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
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        request_timeout_s=args.request_timeout,
        no_worker_grace_s=args.no_worker_grace,
        worker=WorkerSettings.model_validate_json(args.settings_json),
        log_level=args.log_level,
    )
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
