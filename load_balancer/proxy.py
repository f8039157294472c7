"""Route a completion request, relay its upstream stream, and continue it elsewhere when moved or failed.

Request → route (policy) → upstream stream → client. Failover: a connection error before the response headers is
retried on another instance; a stream that breaks mid-way, or is moved by the migration loop, is aborted at its
instance and continued at another from prompt + generated token ids (``Relay``). A client that goes away has its
upstream request closed and aborted by id at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from typing import Any, AsyncIterator

import aiohttp
import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from load_balancer.config import BalancerConfig
from load_balancer.errors import error_event, error_response
from load_balancer.hints import take_hint
from load_balancer.metrics import BalancerMetrics
from load_balancer.policy import RequestInfo, RoutingPolicy
from load_balancer.registry import Registry
from load_balancer.relay import Interrupted, Relay
from load_balancer.sse_codec import DONE
from load_balancer.timeline import Timeline
from load_balancer.types import CompletionHead
from load_balancer.unary import relay_whole
from load_balancer.upstream import RETRY_STATUSES, bounded, is_stale_connection

logger = logging.getLogger(__name__)


class NoInstance(Exception):
    """Every instance is down, ejected or has already failed this request."""


class UpstreamStatus(Exception):
    """The chosen instance answered with a non-200 status that is the request's own answer."""

    def __init__(self, response: Response) -> None:
        self.response = response


def describe_prompt(head: CompletionHead, default_max_tokens: int) -> tuple[str, int, int]:
    """(prompt key, prompt length in tokens, output cap) for routing; text length is estimated at ~4 chars/token."""
    prompt = head.messages if head.messages is not None else head.prompt
    key = hashlib.blake2b(orjson.dumps(prompt), digest_size=8).hexdigest()
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        length = len(prompt)
    else:
        length = len(orjson.dumps(prompt)) // 4
    cap = head.max_tokens if head.max_tokens is not None else head.max_completion_tokens
    return key, length, cap if cap is not None else default_max_tokens


def count_prompts(head: CompletionHead) -> int:
    """A batch prompt is a list of strings or of token-id lists; vLLM numbers its engine requests per prompt."""
    p = head.prompt
    return len(p) if isinstance(p, list) and p and not isinstance(p[0], int) else 1


class Proxy:
    def __init__(
        self,
        cfg: BalancerConfig,
        registry: Registry,
        session: aiohttp.ClientSession,
        policy: RoutingPolicy,
        metrics: BalancerMetrics,
        timeline: Timeline,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.session = session
        self.policy = policy
        self.metrics = metrics
        self.timeline = timeline
        self.relays: dict[str, Relay] = {}
        self._background: set[asyncio.Task] = set()
        self.requests_total = 0

    # ---- entry -------------------------------------------------------------------------------------------------

    async def handle(self, endpoint: str, body: dict[str, Any], head: CompletionHead, request: Request) -> Response:
        self.requests_total += 1
        key, prompt_tokens, cap = describe_prompt(head, self.cfg.default_max_tokens)
        hint, outcome = take_hint(body, head.max_tokens if head.max_tokens is not None else head.max_completion_tokens)
        if outcome is not None:
            self.metrics.length_hints.labels(outcome.value).inc()
        request_id = uuid.uuid4().hex[:16]
        relay = Relay(
            request_id=request_id,
            endpoint=endpoint,
            body=body,
            head=head,
            info=RequestInfo(request_id, key, prompt_tokens, cap, expected_tokens=hint),
            started_at=time.monotonic(),
            num_prompts=count_prompts(head),
        )
        self.relays[request_id] = relay
        resp: aiohttp.ClientResponse | None = None
        try:
            if head.stream:
                resp = await self.open_upstream(relay)
            else:
                response = await relay_whole(self, relay, request)
        except NoInstance as e:
            self.finish(relay, ok=False)
            response = error_response(503, str(e), "ServiceUnavailableError")
        except UpstreamStatus as e:
            self.finish(relay, ok=False)
            response = e.response
        except BaseException:
            self.finish(relay, ok=False)
            raise
        if resp is not None:
            response = StreamingResponse(
                self.stream(relay, resp), media_type=resp.content_type or "text/event-stream"
            )
        self.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    # ---- routing and upstream attempts -------------------------------------------------------------------------

    async def choose(self, relay: Relay, exclude: set[str]) -> str:
        """Pick an instance for the relay's next attempt.

        When every registered instance is ejected, wait up to ``no_instance_wait_s`` for one to be re-admitted
        (``paused_wait_s`` while some are only paused for a weight sync)
        instead of failing at once: on an overloaded host, engines that are slow, not dead, miss scrape and connect
        timeouts, get ejected and come back a moment later; failing the request then would fail a whole GRPO step.
        """
        started = time.monotonic()
        deadline = started + self.cfg.no_instance_wait_s
        while True:
            now = time.monotonic()
            # Instances that failed this request are skipped while others exist; when none does, they get another
            # try (a stale keep-alive connection fails once without the instance being down; max_attempts bounds it).
            candidates = self.registry.routable_states(now, exclude) or self.registry.routable_states(now)
            if candidates:
                break
            if self.registry.any_paused():  # a weight sync in progress: wait for the resume, longer
                deadline = max(deadline, started + self.cfg.paused_wait_s)
            if now >= deadline or not self.registry.instances:
                raise NoInstance(
                    "no healthy instance available" + (f" (failed: {sorted(exclude)})" if exclude else "")
                )
            await asyncio.sleep(0.05)
        url = self.policy.choose(relay.progress_info(), candidates, now)
        self.metrics.routed.labels(url).inc()
        return url

    def place(self, relay: Relay, url: str) -> None:
        relay.begin_attempt(url)
        now = time.monotonic()
        self.registry.placed(url, now)
        self.timeline.observe(url, now)
        self.policy.on_routed(relay.progress_info(), url, now)

    def leave(self, relay: Relay) -> None:
        if relay.url is not None:
            self.registry.left(relay.url)
            self.timeline.observe(relay.url, time.monotonic())
        relay.url = None

    def upstream_failed(self, url: str | None, why: str) -> None:
        self.registry.failed(url, why, time.monotonic())

    def interrupt_streams_on(self, url: str, why: str) -> None:
        """``url`` is hung: every stream on it continues elsewhere (listener of ``Registry.on_hung``)."""
        for relay in list(self.relays.values()):
            if relay.url == url:
                relay.interrupt(f"instance hung ({why})")

    @staticmethod
    def upstream_headers(relay: Relay) -> dict[str, str]:
        # X-Request-Id fixes vLLM's internal id (cmpl-<id>-<i>), which /abort_requests needs.
        return {"X-Request-Id": relay.upstream_id, "Content-Type": "application/json"}

    async def open_upstream(self, relay: Relay, target: str | None = None) -> aiohttp.ClientResponse:
        """Send the relay's next attempt; retry connection failures and busy answers elsewhere, up to max_attempts."""
        payload = orjson.dumps(relay.codec.upstream_body())  # several times faster than stdlib json for id lists
        endpoint = "/v1/completions" if relay.codec.continued else relay.endpoint
        for n in range(self.cfg.max_attempts):
            url = target if target is not None and n == 0 else await self.choose(relay, relay.tried)
            self.place(relay, url)
            try:
                resp = await self.send(url + endpoint, payload, self.upstream_headers(relay))
            except aiohttp.ClientError as e:  # unreachable, or an answer that is not HTTP: fail over
                logger.warning("request %s: %s unreachable (%r); retrying elsewhere", relay.request_id, url, e)
                self.leave(relay)
                relay.tried.add(url)
                self.upstream_failed(url, repr(e))
                self.metrics.retries.inc()
                continue
            if resp.status == 200:
                return resp
            content = await self.read_whole(resp)
            self.leave(relay)
            if resp.status in RETRY_STATUSES:
                relay.tried.add(url)
                self.metrics.retries.inc()
                logger.warning("request %s: %s answered %d; retrying elsewhere", relay.request_id, url, resp.status)
                continue
            raise UpstreamStatus(Response(content, resp.status, media_type=resp.content_type))
        raise NoInstance(f"request {relay.request_id} failed on {self.cfg.max_attempts} attempts")

    async def send(self, url: str, payload: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """POST to an instance and return once its response headers are in, resending once on a new connection when
        a reused one was already closed.

        A server closes an idle keep-alive connection on its own clock; when that crosses the balancer reusing it,
        the request fails before any response byte (seen as "... ejected after 3 failures" against live vLLM servers
        under load). The instance is fine, so the request is resent to it and no failure is counted. aiohttp resends
        on its own only for idempotent methods, and completions are POSTs, hence this. A second failure is the
        instance's own and goes to the caller's failover.
        """
        try:
            return await self.session.post(url, data=payload, headers=headers)
        except aiohttp.ClientConnectionError as e:
            if not is_stale_connection(e):
                raise
            self.metrics.stale_connections.inc()
            logger.info("POST %s: connection closed before any byte (%r); resending once", url, e)
            return await self.session.post(url, data=payload, headers=headers)

    @staticmethod
    async def read_whole(resp: aiohttp.ClientResponse) -> bytes:
        try:
            return await resp.read()
        finally:
            resp.release()

    # ---- streaming ---------------------------------------------------------------------------------------------

    async def stream(self, relay: Relay, resp: aiohttp.ClientResponse | None) -> AsyncIterator[bytes]:
        ok = False
        try:
            while resp is not None:
                try:
                    async for blob in self.pump(relay, resp):
                        yield blob
                except Interrupted as e:
                    broken, resp = resp, None
                    resp = await self.continue_elsewhere(relay, broken, str(e))
                    continue
                ok = True
                return
            if relay.codec.finish_seen:  # it broke after its last token: only the trailer was missing
                ok = True
                yield relay.codec.closing_events()
            else:
                yield error_event(f"request {relay.request_id} lost its instance and cannot be continued") + DONE
        except (asyncio.CancelledError, GeneratorExit):
            # A client may close as soon as it reads [DONE], before the upstream's end of body reaches the balancer:
            # that request is complete, not abandoned.
            if not relay.codec.done:
                self.metrics.client_aborts.inc()
                logger.info("request %s: client went away; aborting upstream", relay.request_id)
            raise
        finally:
            ok = ok or relay.codec.done
            if resp is not None:
                if ok:
                    resp.release()
                else:
                    self.abort_in_background(relay, resp)
            self.finish(relay, ok)

    async def pump(self, relay: Relay, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Relay one upstream stream until [DONE]; raise Interrupted when it breaks or the relay is moved."""
        chunks = resp.content.iter_any()
        buffer = b""
        while True:
            if relay.may_leave():
                raise Interrupted(relay.interrupt_reason)
            try:
                async with asyncio.timeout(None) as scope:
                    relay.read_scope = scope
                    data = await anext(chunks)
            except StopAsyncIteration:
                if relay.codec.done:
                    return
                raise Interrupted("upstream stream ended early") from None
            except TimeoutError:
                raise Interrupted(relay.interrupt_reason or "interrupted") from None
            except aiohttp.ClientError as e:
                if relay.url is not None:
                    self.upstream_failed(relay.url, repr(e))
                relay.tried.add(relay.url)
                raise Interrupted(f"upstream failed: {e!r}") from None
            finally:
                relay.read_scope = None
            buffer += data
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue
            before = relay.codec.tokens_seen
            out = relay.codec.absorb(buffer[: cut + 2])
            buffer = buffer[cut + 2 :]
            new = relay.codec.tokens_seen - before
            if new:
                now = time.monotonic()
                self.metrics.tokens.inc(new)
                self.registry.relayed(relay.url, new, now)
                self.policy.on_progress(relay.request_id, relay.codec.tokens_seen, now)
            if out:
                yield out

    async def continue_elsewhere(
        self, relay: Relay, resp: aiohttp.ClientResponse, why: str
    ) -> aiohttp.ClientResponse | None:
        """Abort the current attempt and open the continuation; None when the request cannot go on."""
        source, target, left_at = relay.url, relay.move_to, time.monotonic()
        self.abort_in_background(relay, resp)
        self.leave(relay)
        moved = target is not None
        nothing_relayed = relay.codec.first_id is None  # then it can start over anywhere, whatever kind of request
        if relay.codec.finish_seen or not (relay.can_continue() or nothing_relayed):
            logger.warning("request %s on %s: %s; cannot continue it", relay.request_id, source, why)
            return None
        if moved:
            self.metrics.migrations.inc()
            self.registry.moved(source, target)
        else:
            self.metrics.failovers.inc()
        logger.info(
            "request %s: %s after %d tokens on %s (%s)", relay.request_id, "moving" if moved else "failing over",
            len(relay.codec.generated), source, why,
        )  # fmt: skip
        try:
            resumed = await self.open_upstream(relay, target if moved and self.registry.instances.get(target) else None)
        except (NoInstance, UpstreamStatus) as e:
            logger.warning("request %s: continuation failed: %s", relay.request_id, e)
            return None
        self.timeline.on_move(left_at, source, relay.url, moved, len(relay.codec.generated))
        return resumed

    # ---- endings -----------------------------------------------------------------------------------------------

    def finish(self, relay: Relay, ok: bool) -> None:
        if self.relays.pop(relay.request_id, None) is None:
            return
        if relay.url is not None:
            if ok:
                self.registry.succeeded(relay.url)
            self.leave(relay)
        now = time.monotonic()
        self.timeline.on_finished()
        if ok:
            self.policy.on_finished(relay.request_id, relay.codec.tokens_seen, now)
        else:
            self.policy.on_failed(relay.request_id, now)

    def abort_in_background(self, relay: Relay, resp: aiohttp.ClientResponse | None) -> None:
        """Close the upstream stream and abort by id; runs as its own task because the caller may be cancelled."""
        url, ids = relay.url, relay.internal_ids()
        task = asyncio.get_running_loop().create_task(self.abort(url, ids, resp))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def abort(self, url: str | None, ids: list[str], resp: aiohttp.ClientResponse | None) -> None:
        if resp is not None:
            resp.close()  # drops the connection: vLLM aborts a request whose client went away
        if url is None:
            return
        try:
            async with self.session.post(f"{url}/abort_requests", json={"request_ids": ids}, timeout=bounded(1.0)):
                pass
        except (aiohttp.ClientError, TimeoutError) as e:
            # closing the connection already makes vLLM abort; this is the fast path
            logger.debug("abort of %s on %s failed: %r", ids, url, e)

    async def drain_background(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)
