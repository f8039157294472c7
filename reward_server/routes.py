"""HTTP routes: thin handlers over the broker and the input limits, built once in the lifespan (app.state)."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reward_server import metrics
from reward_server.broker import RedisUnavailable
from reward_server.limits import check_item, rejected
from reward_server.types import (
    ErrorBody,
    LimitExceeded,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreItem,
    ScoreResult,
)

router = APIRouter()


def _too_large(exceeded: LimitExceeded) -> JSONResponse:
    metrics.REJECTED.labels(exceeded.field.split("[")[0]).inc()
    body = ErrorBody(error=exceeded.message(), detail=exceeded.model_dump())
    return JSONResponse(status_code=413, content=body.model_dump())


@router.post("/score", response_model=ScoreResult, responses={413: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def score(item: ScoreItem, request: Request):
    exceeded = check_item(item, request.app.state.limits)
    if exceeded is not None:
        return _too_large(exceeded)
    (result,) = await request.app.state.broker.score([item])
    if result.status == "error":  # we failed: never let a client read this as a 0 reward
        body = ErrorBody(error=result.error or "infra error", detail=result.model_dump())
        return JSONResponse(status_code=503, content=body.model_dump())
    return result


@router.post("/score_batch", response_model=ScoreBatchResponse, responses={413: {"model": ErrorBody}})
async def score_batch(batch: ScoreBatchRequest, request: Request):
    """Items over a size limit come back "rejected" in their place; the others are scored."""
    limits = request.app.state.limits
    if len(batch.items) > limits.max_batch_items:
        return _too_large(
            LimitExceeded(field="items", limit=limits.max_batch_items, actual=len(batch.items), unit="items")
        )
    exceeded = [check_item(item, limits) for item in batch.items]
    for e in exceeded:
        if e is not None:
            metrics.REJECTED.labels(e.field.split("[")[0]).inc()
    accepted = [item for item, e in zip(batch.items, exceeded) if e is None]
    scored = iter(await request.app.state.broker.score(accepted))
    return ScoreBatchResponse(results=[next(scored) if e is None else rejected(e) for e in exceeded])


@router.get("/healthz")
async def healthz(request: Request):
    broker = request.app.state.broker
    try:
        await broker.ping()
        workers = await broker.live_workers()
        depth = await broker.queue_depth()
    except RedisUnavailable as e:
        return JSONResponse(status_code=503, content={"status": "unavailable", "error": str(e)})
    except Exception as e:  # a Redis error surfacing from a pooled connection
        return JSONResponse(status_code=503, content={"status": "unavailable", "error": f"redis: {e}"})
    status = "ok" if workers else "no_workers"
    body = {"status": status, "workers": workers, "queue_depth": depth}
    return JSONResponse(status_code=200 if workers else 503, content=body)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    broker = request.app.state.broker
    try:
        metrics.QUEUE_DEPTH.set(await broker.queue_depth())
        metrics.LIVE_WORKERS.set(len(await broker.live_workers()))
    except Exception:  # metrics must still be served while Redis is down; the gauges keep their last value
        pass
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
