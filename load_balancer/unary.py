"""Relay a non-streaming request: the whole answer at once, retried elsewhere from scratch when an instance fails
before it answers. Streams, which can be continued mid-way, are ``Proxy.stream``'s."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp
import orjson
from fastapi import Request
from fastapi.responses import Response

from load_balancer.errors import error_response
from load_balancer.relay import Relay
from load_balancer.upstream import RETRY_STATUSES

if TYPE_CHECKING:
    from load_balancer.proxy import Proxy


async def relay_whole(proxy: Proxy, relay: Relay, request: Request) -> Response:
    """Route, send, and return the instance's answer; a client that leaves cancels and aborts the request."""
    payload = orjson.dumps(relay.body)
    for _ in range(proxy.cfg.max_attempts):
        url = await proxy.choose(relay, relay.tried)
        proxy.place(relay, url)
        call = asyncio.ensure_future(post_whole(proxy, url + relay.endpoint, payload, proxy.upstream_headers(relay)))
        try:
            answer = await until_disconnect(call, request)
        except aiohttp.ClientError as e:
            proxy.leave(relay)
            relay.tried.add(url)
            proxy.upstream_failed(url, repr(e))
            proxy.metrics.retries.inc()
            continue
        if answer is None:  # the client left: the request is cancelled and aborted by id
            proxy.metrics.client_aborts.inc()
            proxy.abort_in_background(relay, None)
            proxy.finish(relay, ok=False)
            return Response(status_code=499)
        status, content, content_type = answer
        if status in RETRY_STATUSES:
            proxy.leave(relay)
            relay.tried.add(url)
            proxy.metrics.retries.inc()
            continue
        ok = status == 200
        if ok:
            count_tokens(proxy, relay, content)
        proxy.finish(relay, ok)
        return Response(content, status, media_type=content_type)
    proxy.finish(relay, ok=False)
    message = f"request {relay.request_id} failed on {proxy.cfg.max_attempts} attempts"
    return error_response(503, message, "ServiceUnavailableError")


async def post_whole(proxy: Proxy, url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
    """(status, body, content type) of a non-streaming request."""
    resp = await proxy.send(url, payload, headers)
    return resp.status, await proxy.read_whole(resp), resp.content_type


async def until_disconnect(call: asyncio.Future, request: Request) -> tuple[int, bytes, str] | None:
    """Await ``call`` while polling the client's connection; cancel it and return None if the client left."""
    while True:
        done, _ = await asyncio.wait({call}, timeout=0.25)
        if done:
            return call.result()
        if await request.is_disconnected():
            call.cancel()
            return None


def count_tokens(proxy: Proxy, relay: Relay, content: bytes) -> None:
    """The answer's completion tokens, counted as relayed (from its usage block; nothing when it has none)."""
    try:
        tokens = int(orjson.loads(content)["usage"]["completion_tokens"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return
    relay.codec.tokens_seen = tokens
    proxy.metrics.tokens.inc(tokens)
    proxy.registry.relayed(relay.url, tokens, time.monotonic())
