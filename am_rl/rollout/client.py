"""Async rollout client: every sample is one streaming ``/v1/completions`` request with a token-id prompt.

It talks to one base URL: the load balancer in every real deployment, which picks the engine per request. Token
ids and logprobs come back in the stream (vLLM's ``return_token_ids``), so the trainer never re-tokenises and knows
exactly which samples hit ``max_tokens`` (finish reason ``length``).

Retries: a request that fails before any token arrived (connection refused, 5xx) is retried with backoff; the
balancer itself continues streams that break mid-way, so a mid-stream failure here is an error, never a silent
partial sample.

The HTTP client is aiohttp, like the balancer's upstream side (see load_balancer/upstream.py): with hundreds of
streams in flight httpx's connection pool cost this process more CPU than the tokens themselves, CPU the engines
beside it need on a small host.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import AsyncIterator, Callable, Sequence

import aiohttp
import orjson

from am_rl.rollout.admission import AdmissionOrder, LongestFirstGate
from am_rl.rollout.priors import prompt_key
from am_rl.rollout.types import RolloutRequest, RolloutResult, RolloutStats
from load_balancer.hints import HINT_FIELD

logger = logging.getLogger(__name__)


class RolloutError(RuntimeError):
    """A sample could not be generated; carries the request id and which side failed."""


class RolloutRejected(RolloutError):
    """The endpoint refused this request (HTTP 4xx, e.g. a prompt over the model's length): the request's fault,
    not the endpoint's, so other requests may go on."""


class StreamBroken(RolloutError):
    """The connection to the endpoint broke after some tokens had arrived; they are kept here, so a client with
    another endpoint to go to (``am_rl.rollout.shards``) can continue the sample from them."""

    def __init__(self, message: str, response_ids: list[int], logprobs: list[float]) -> None:
        super().__init__(message)
        self.response_ids = response_ids  # the tokens received before the break, in order
        self.logprobs = logprobs  # one per token of response_ids


class _Retryable(Exception):
    pass


async def sse_payloads(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of an SSE stream, whole events only. Split by hand rather than with aiohttp's readline,
    whose line limit (512 KiB) the first event exceeds when it echoes a prompt of more than ~80k token ids."""
    buffer = b""
    async for data in stream.iter_any():
        buffer += data
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: "):
                yield event[len(b"data: ") :]


class RolloutClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        max_concurrency: int = 256,  # in-flight requests; the rest wait here, longest expected first (admission.py)
        timeout_s: float = 600.0,  # per request, whole generation
        max_retries: int = 3,  # attempts after the first, only for failures before the first token
        backoff_s: float = 0.5,  # first retry delay; doubles each time
        api_key: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._gate = LongestFirstGate(max_concurrency)
        self._http: aiohttp.ClientSession | None = None

    @property
    def admission(self) -> AdmissionOrder:
        """The order in which samples waiting at ``max_concurrency`` start (am_rl.rollout.admission)."""
        return self._gate.order

    def _session(self) -> aiohttp.ClientSession:
        """Made on first use, because an aiohttp session belongs to the event loop that is running when it is made."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                # idle connections dropped after 2 s, before the balancer's (uvicorn's) 5 s keep-alive timeout
                # closes them: reusing one the server is closing fails the request (then retried after a backoff)
                connector=aiohttp.TCPConnector(limit=self.max_concurrency, keepalive_timeout=2.0),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=10.0),
                headers=self.headers,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> RolloutClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _body(self, req: RolloutRequest) -> dict:
        body = {
            "model": self.model,
            "prompt": req.prompt_ids,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "stream": True,
            "return_token_ids": True,
            "logprobs": 0,  # the sampled token's logprob only
            "skip_special_tokens": False,
        }
        if req.top_k != -1:
            body["top_k"] = req.top_k
        if req.seed is not None:
            body["seed"] = req.seed
        if req.expected_tokens is not None:
            body[HINT_FIELD] = req.expected_tokens
        return body

    async def _stream_once(self, req: RolloutRequest, on_tokens: Callable[[int], None]) -> RolloutResult:
        """One attempt; ``on_tokens(n)`` each time the stream has brought ``n`` output tokens in all."""
        start = time.monotonic()
        response_ids: list[int] = []
        logprobs: list[float] = []
        finish_reason = None
        headers = {"X-Request-Id": req.request_id, "Content-Type": "application/json"}
        try:
            async with self._session().post(
                f"{self.base_url}/v1/completions", data=orjson.dumps(self._body(req)), headers=headers
            ) as resp:
                if resp.status >= 500 or resp.status == 429:
                    text = (await resp.read()).decode(errors="replace")[:500]
                    raise _Retryable(f"HTTP {resp.status}: {text}")
                if resp.status >= 400:
                    text = (await resp.read()).decode(errors="replace")[:500]
                    raise RolloutRejected(f"request {req.request_id} rejected: HTTP {resp.status}: {text}")
                # Read to the end of the body, past [DONE]: leaving earlier closes the connection, which the
                # balancer cannot tell from a client that gave up, and loses it for keep-alive reuse.
                async for payload in sse_payloads(resp.content):
                    if payload == b"[DONE]":
                        continue
                    chunk = orjson.loads(payload)
                    if "error" in chunk:
                        raise RolloutError(f"request {req.request_id}: engine error mid-stream: {chunk['error']}")
                    for choice in chunk["choices"]:
                        response_ids.extend(choice.get("token_ids") or [])
                        if choice.get("logprobs"):
                            logprobs.extend(choice["logprobs"]["token_logprobs"])
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                    on_tokens(len(response_ids))
        except (aiohttp.ClientError, TimeoutError) as e:
            if not response_ids:
                raise _Retryable(f"{type(e).__name__}: {e}") from e
            raise StreamBroken(
                f"request {req.request_id}: stream broke after {len(response_ids)} tokens: {e}",
                response_ids,
                logprobs[: len(response_ids)],
            ) from e
        if finish_reason is None:
            raise StreamBroken(
                f"request {req.request_id}: stream ended without a finish reason after {len(response_ids)} tokens",
                response_ids,
                logprobs[: len(response_ids)],
            )
        if len(logprobs) != len(response_ids):
            raise RolloutError(
                f"request {req.request_id}: {len(response_ids)} tokens but {len(logprobs)} logprobs in the stream"
            )
        return RolloutResult(
            request_id=req.request_id,
            prompt_ids=list(req.prompt_ids),
            response_ids=response_ids,
            logprobs=logprobs,
            finish_reason=finish_reason,
            latency_s=time.monotonic() - start,
        )

    async def generate(
        self, req: RolloutRequest, stats: RolloutStats | None = None, on_tokens: Callable[[int], None] | None = None
    ) -> RolloutResult:
        """One sample. ``on_tokens``: told the tokens generated so far as they stream (default: this client's
        admission order, which starts the waiting siblings of long-running samples first)."""
        group = prompt_key(req.prompt_ids)
        async with self._gate.slot(req.expected_tokens, group, req.request_id):
            if on_tokens is None:
                on_tokens = functools.partial(self.admission.progress, group, req.request_id)
            return await self.generate_admitted(req, on_tokens, stats)

    async def generate_admitted(
        self, req: RolloutRequest, on_tokens: Callable[[int], None], stats: RolloutStats | None = None
    ) -> RolloutResult:
        """One sample that the caller's own gate has already admitted (the sharded client's, which orders the samples
        of all shards): no slot of this client's gate, so no second ranking and no second settle delay."""
        for attempt in range(self.max_retries + 1):
            try:
                return await self._stream_once(req, on_tokens)
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise RolloutError(
                        f"request {req.request_id}: endpoint {self.base_url} failed "
                        f"{attempt + 1} times before the first token; last error: {e}"
                    ) from None
                if stats is not None:
                    stats.retries += 1
                delay = self.backoff_s * 2**attempt
                logger.warning("request %s failed (%s); retry in %.1fs", req.request_id, e, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def prompt_logprobs(self, request_id: str, prompts: list[list[int]]) -> list[list[float | None]]:
        """Per prompt, the model's logprob of each of its tokens given the tokens before it (None for the first),
        from one non-streaming completion of the whole batch with vLLM's ``prompt_logprobs`` (measured ~20% cheaper
        on the engine than OpenAI's ``echo`` + ``logprobs``; one token per prompt is generated and discarded).
        Retried like ``generate``; a batch the endpoint refuses (a prompt over its context) raises RolloutRejected."""
        body = {"model": self.model, "prompt": prompts, "max_tokens": 1, "prompt_logprobs": 0}
        headers = {"X-Request-Id": request_id, "Content-Type": "application/json"}
        async with self._gate.slot(None):
            for attempt in range(self.max_retries + 1):
                try:
                    async with self._session().post(
                        f"{self.base_url}/v1/completions", data=orjson.dumps(body), headers=headers
                    ) as resp:
                        payload = await resp.read()
                    if resp.status >= 500 or resp.status == 429:
                        raise _Retryable(f"HTTP {resp.status}: {payload.decode(errors='replace')[:500]}")
                except (aiohttp.ClientError, TimeoutError, _Retryable) as e:
                    if attempt == self.max_retries:
                        raise RolloutError(f"request {request_id}: endpoint {self.base_url} failed "
                                           f"{attempt + 1} times; last error: {e}") from None
                    await asyncio.sleep(self.backoff_s * 2**attempt)
                    continue
                if resp.status >= 400:
                    raise RolloutRejected(
                        f"request {request_id} rejected: HTTP {resp.status}: {payload.decode(errors='replace')[:500]}"
                    )
                choices = sorted(orjson.loads(payload)["choices"], key=lambda c: c["index"])
                try:  # per position {token id: {"logprob": ...}}: the prompt's own token (and, ranked, no others)
                    out = [[None] + [entry[str(t)]["logprob"] for entry, t in zip(c["prompt_logprobs"][1:], p[1:])]
                           for c, p in zip(choices, prompts, strict=True)]  # fmt: skip
                except (KeyError, TypeError, ValueError) as e:
                    raise RolloutError(f"request {request_id}: prompt logprobs missing or malformed ({e!r})") from None
                if any(len(o) != len(p) for o, p in zip(out, prompts)):
                    raise RolloutError(f"request {request_id}: prompt logprobs do not cover the {len(prompts)} prompts")
                return out
        raise AssertionError("unreachable")

    async def generate_all(self, requests: Sequence[RolloutRequest]) -> tuple[list[RolloutResult], RolloutStats]:
        """Generate every request concurrently; results in the order of ``requests``. Fails if any sample fails."""
        stats = RolloutStats(requests=len(requests))
        start = time.monotonic()
        tasks = [asyncio.create_task(self.generate(r, stats)) for r in requests]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # One lost sample breaks its GRPO group: stop the others instead of generating for nothing.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        stats.wall_s = time.monotonic() - start
        stats.generated_tokens = sum(len(r.response_ids) for r in results)
        stats.latencies_s = [r.latency_s for r in results]
        return list(results), stats
