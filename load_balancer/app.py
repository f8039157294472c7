"""The FastAPI app: thin routes over one ``Balancer`` built in the lifespan.

    app = build_app(BalancerConfig(instances=["http://127.0.0.1:8001"]))
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from load_balancer.config import BalancerConfig
from load_balancer.dashboard import router as dashboard_router
from load_balancer.errors import error_response
from load_balancer.policy import make_policy
from load_balancer.registry import StoreUnavailable
from load_balancer.service import Balancer  # imports the policies, registering their names
from load_balancer.types import CompletionHead, GenerateHead, InstanceRegistration, InstanceView, PauseRequest
from load_balancer.upstream import bounded

logger = logging.getLogger(__name__)


def balancer(request: Request) -> Balancer:
    return request.app.state.balancer


async def require_api_key(request: Request) -> None:  # async: FastAPI runs a sync dependency in a thread pool
    """OpenAI-style ``Authorization: Bearer KEY``; ``X-API-Key`` or ``?api_key=`` for tools and the dashboard page."""
    expected = request.app.state.balancer.cfg.api_key
    if expected is None:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else None
    given = given or request.headers.get("x-api-key") or request.query_params.get("api_key") or ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API key")


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from None


def validation_message(e: ValidationError | RequestValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())


api = APIRouter(dependencies=[Depends(require_api_key)])


async def proxied(endpoint: str, request: Request) -> Response:
    lb = balancer(request)
    body = await read_json(request, lb.cfg.max_body_bytes)
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    try:
        head = CompletionHead.model_validate(body)
    except ValidationError as e:
        raise HTTPException(400, validation_message(e)) from None
    if endpoint == "/v1/completions" and head.prompt is None:
        raise HTTPException(400, "prompt is required")
    if endpoint == "/v1/chat/completions" and head.messages is None:
        raise HTTPException(400, "messages is required")
    return await lb.proxy.handle(endpoint, body, head, request)


@api.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await proxied("/v1/completions", request)


@api.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await proxied("/v1/chat/completions", request)


@api.post("/inference/v1/generate")
async def generate(request: Request) -> Response:
    """vLLM's token-in/token-out endpoint: routed and failed over like the others, relayed as is (not migrated)."""
    lb = balancer(request)
    body = await read_json(request, lb.cfg.max_body_bytes)
    try:
        gen = GenerateHead.model_validate(body)
    except ValidationError as e:
        raise HTTPException(400, validation_message(e)) from None
    cap = (gen.sampling_params or {}).get("max_tokens")
    cap = cap if isinstance(cap, int) and cap >= 0 else None
    head = CompletionHead(prompt=gen.token_ids, stream=bool(gen.stream), max_tokens=cap)
    return await lb.proxy.handle("/inference/v1/generate", body, head, request)


@api.get("/v1/models")
async def models(request: Request) -> Response:
    """The first healthy instance's answer (all instances serve the same model)."""
    lb = balancer(request)
    for inst in list(lb.registry.instances.values()):
        if not inst.routable():
            continue
        try:
            timeout = bounded(lb.cfg.scrape_timeout_s * 5)
            async with lb.session.get(f"{inst.url}/v1/models", timeout=timeout) as resp:
                return Response(await resp.read(), resp.status, media_type=resp.content_type)
        except Exception as e:  # try the next instance; which error it was is in the log
            logger.warning("GET /v1/models from %s failed: %r", inst.url, e)
    return error_response(503, "no healthy instance available", "ServiceUnavailableError")


@api.get("/instances", response_model=list[InstanceView])
async def list_instances(request: Request) -> list[InstanceView]:
    return balancer(request).instance_views()


@api.post("/instances", response_model=InstanceView)
async def register_instance(request: Request) -> InstanceView:
    lb = balancer(request)
    reg = parse_registration(await read_json(request, 64 * 1024))
    await lb.registry.add(reg.url)
    await lb.scraper.scrape(lb.registry.instances[reg.url])
    return next(v for v in lb.instance_views() if v.url == reg.url)


@api.delete("/instances")
async def deregister_instance(request: Request) -> dict[str, Any]:
    lb = balancer(request)
    reg = parse_registration(await read_json(request, 64 * 1024))
    if not await lb.registry.remove(reg.url):
        raise HTTPException(404, f"instance {reg.url} is not registered")
    return {"url": reg.url, "removed": True}


async def set_paused(request: Request, paused: bool) -> dict[str, Any]:
    lb = balancer(request)
    body = await read_json(request, 64 * 1024) if request.headers.get("content-length") not in (None, "0") else {}
    try:
        urls = PauseRequest.model_validate(body).urls
    except ValidationError as e:
        raise HTTPException(400, validation_message(e)) from None
    try:
        changed = lb.registry.set_paused(urls, paused)
    except KeyError as e:
        raise HTTPException(404, f"instance {e.args[0]} is not registered") from None
    if paused:
        lb.timeline.on_pause(time.monotonic())
    return {"urls": changed, "paused": paused}


@api.post("/instances/pause")
async def pause_instances(request: Request) -> dict[str, Any]:
    """Stop routing new requests to the instances (all when no ``urls``); in-flight ones finish. For the trainer's
    weight sync: an engine that sleeps or loads new weights must get nothing new."""
    return await set_paused(request, True)


@api.post("/instances/resume")
async def resume_instances(request: Request) -> dict[str, Any]:
    return await set_paused(request, False)


def parse_registration(body: Any) -> InstanceRegistration:
    try:
        return InstanceRegistration.model_validate(body)
    except ValidationError as e:
        raise HTTPException(400, validation_message(e)) from None


@api.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(balancer(request).metrics.prometheus), media_type=CONTENT_TYPE_LATEST)


open_router = APIRouter()


@open_router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    lb = balancer(request)
    healthy = sum(inst.routable() for inst in lb.registry.instances.values())
    return {"status": "ok", "instances": len(lb.registry.instances), "healthy_instances": healthy}


def build_app(cfg: BalancerConfig) -> FastAPI:
    make_policy(cfg.policy, **cfg.policy_options)  # an unknown name fails here, not later inside the server's startup

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lb = Balancer(cfg)
        app.state.balancer = lb
        await lb.start()
        try:
            yield
        finally:
            await lb.stop()

    app = FastAPI(title="am_rl load balancer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(open_router)
    app.include_router(api)
    app.include_router(dashboard_router, dependencies=[Depends(require_api_key)])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {401: "AuthenticationError", 404: "NotFoundError", 413: "RequestTooLargeError"}.get(
            e.status_code, "BadRequestError"
        )
        return error_response(e.status_code, str(e.detail), kind)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(e))

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, e: StoreUnavailable) -> JSONResponse:
        logger.warning("%s %s: %s", request.method, request.url.path, e)
        return error_response(503, str(e), "ServiceUnavailableError")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {e!r}", "InternalServerError")

    return app
