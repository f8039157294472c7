"""Upstream connection handling: stale keep-alive connections, and the scraper stopping before the server drains."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import threading
import time

import httpx
import orjson
import lb_test_policies  # noqa: F401  (registers the scripted test policies)
from lb_helpers import loadgen_process, metric_value, sse_chunks, stop_loop_thread

BODY = {"model": "loadgen", "prompt": [1, 2, 3], "max_tokens": 2, "stream": True}


class RawServer:
    """A minimal vLLM-shaped HTTP/1.1 server (not an engine) on its own event loop thread, for wire-level scenarios
    no real server produces on demand. Subclasses answer connections in ``_serve``."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        listening = asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(listening, self._loop).result(10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    @staticmethod
    async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
        """(request line, body) of the next request on the connection."""
        lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        fields = (h.partition(": ") for h in lines)
        length = next((int(v) for k, _, v in fields if k.lower() == "content-length"), 0)
        return lines[0], await reader.readexactly(length)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        stop_loop_thread(self._loop, self._thread)


COMPLETION_CHUNK = {"id": "cmpl-x", "object": "text_completion", "created": 0, "model": "loadgen",
                    "choices": [{"index": 0, "text": "a", "finish_reason": "length", "prompt_token_ids": [1, 2, 3],
                                 "token_ids": [7]}]}  # fmt: skip
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
COMPLETION_EVENTS = b"data: " + orjson.dumps(COMPLETION_CHUNK) + b"\n\ndata: [DONE]\n\n"


class ResettingServer(RawServer):
    """Answers the first request of every connection and resets the connection when a completion arrives on it later
    (not twice in a row) — what the balancer meets when a server closes an idle keep-alive connection just as it is
    reused. GETs (scrapes, health checks) are always answered: the race hits completions, which may reuse a
    connection idle for seconds; scrapes come every 250 ms."""

    def __init__(self) -> None:
        self.resets = 0
        self.completions = 0
        self._just_reset = False
        super().__init__()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                request_line, _ = await self.read_request(reader)
                # never twice in a row: the balancer resends once, and a resend that met another reused connection
                # would fail again here, which real servers do not do to a connection they have not closed yet
                if request_line.startswith("POST") and served and not self._just_reset:
                    self.resets += 1
                    self._just_reset = True
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
                    writer.transport.abort()
                    return
                served += 1
                self._just_reset = self._just_reset and not request_line.startswith("POST")
                writer.write(self._answer(request_line))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _answer(self, request_line: str) -> bytes:
        if request_line.startswith("POST"):
            self.completions += 1
            body, kind = COMPLETION_EVENTS, b"text/event-stream"
        else:
            body, kind = b"", b"text/plain"
        return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (kind, len(body), body)


class CompletionServer(RawServer):
    """Answers every request but a completion with an empty 200, counting ``/abort_requests``; subclasses stream
    completions in ``_complete``."""

    def __init__(self) -> None:
        self.aborts = 0
        super().__init__()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line, _ = await self.read_request(reader)
                if request_line.startswith("POST /abort_requests"):
                    self.aborts += 1
                if request_line.startswith("POST /v1/completions"):
                    await self._complete(reader, writer)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _complete(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class SlowTrailerServer(CompletionServer):
    """Streams a whole completion, [DONE] included, then holds back the end of the chunked body for a while — so a
    client that leaves at [DONE] closes its connection before the balancer has seen the upstream stream end."""

    def __init__(self, trailer_delay_s: float) -> None:
        self.trailer_delay_s = trailer_delay_s
        super().__init__()

    async def _complete(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(STREAM_HEAD + b"%x\r\n%s\r\n" % (len(COMPLETION_EVENTS), COMPLETION_EVENTS))
        await writer.drain()
        await asyncio.sleep(self.trailer_delay_s)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


class SlowHeadersServer(CompletionServer):
    """Answers a completion's headers only after ``head_delay_s``, then streams one event every 0.1 s for 10 s,
    recording when the balancer's connection to it went away — a client may give up while the balancer still waits
    for an instance's answer (vLLM's API server busy tokenizing, a failover in progress)."""

    def __init__(self, head_delay_s: float) -> None:
        self.head_delay_s = head_delay_s
        self.headers_sent_at: float | None = None
        self.closed_at: float | None = None
        super().__init__()

    async def _complete(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.head_delay_s)
        writer.write(STREAM_HEAD)
        self.headers_sent_at = time.monotonic()
        choice = COMPLETION_CHUNK["choices"][0] | {"finish_reason": None}  # a stream that goes on
        event = b"data: " + orjson.dumps(COMPLETION_CHUNK | {"choices": [choice]}) + b"\n\n"
        try:
            for _ in range(100):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.1)
                if reader.at_eof():
                    break
        finally:
            self.closed_at = time.monotonic()


def test_a_client_that_leaves_before_the_instance_answers_leaves_nothing_behind(balancer):
    """Once the instance answers, the balancer finds the client gone: the upstream request is closed within a second
    and the instance's in-flight count released (a relay left behind would skew routing for good)."""
    server = SlowHeadersServer(head_delay_s=1.0)
    try:
        lb = balancer([server.url], policy="round_robin")
        with httpx.Client(timeout=httpx.Timeout(10, read=0.3)) as client:
            try:
                with client.stream("POST", f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 100}) as r:
                    r.read()
            except httpx.ReadTimeout:
                pass
        deadline = time.monotonic() + 10
        while server.closed_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.headers_sent_at is not None, "the instance never answered"
        assert server.closed_at is not None, "the upstream request outlived its client"
        assert server.closed_at - server.headers_sent_at < 1.0
        (view,) = httpx.get(f"{lb.url}/instances", timeout=10).json()
        assert view["in_flight"] == 0 and lb.balancer.proxy.relays == {}
        assert metric_value(lb.url, "lb_client_disconnects_total") == 1
    finally:
        server.close()


def test_a_client_that_leaves_at_done_completed_its_request(balancer):
    server = SlowTrailerServer(trailer_delay_s=5.0)  # far longer than the client takes, even on a loaded box
    try:
        lb = balancer([server.url], policy="round_robin")
        with httpx.Client(timeout=10) as client:
            with client.stream("POST", f"{lb.url}/v1/completions", json=BODY) as r:
                started = time.monotonic()
                for line in r.iter_lines():
                    if line == "data: [DONE]":
                        break
            # leaving the `with` closed the connection while the balancer still waits for the upstream's end
            assert time.monotonic() - started < server.trailer_delay_s, "the client did not leave before the end"
        time.sleep(0.5)
        assert metric_value(lb.url, "lb_client_disconnects_total") == 0
        assert server.aborts == 0
        (view,) = httpx.get(f"{lb.url}/instances", timeout=10).json()
        assert view["in_flight"] == 0 and view["consecutive_failures"] == 0
    finally:
        server.close()


def test_a_reused_connection_closed_by_the_server_is_resent_without_counting_a_failure(balancer):
    server = ResettingServer()
    try:
        lb = balancer([server.url], policy="round_robin")
        for _ in range(6):
            r = httpx.post(f"{lb.url}/v1/completions", json=BODY, timeout=10)
            assert r.status_code == 200 and sse_chunks(r.text)[0]["choices"][0]["token_ids"] is None
        assert server.resets >= 1, "the scenario did not happen: no completion came on a reused connection"
        assert server.completions == 6  # each request generated once, on a fresh connection after a reset
        assert metric_value(lb.url, "lb_stale_connections_total") == server.resets
        assert metric_value(lb.url, "lb_retries_total") == 0 and metric_value(lb.url, "lb_ejections_total") == 0
        (view,) = httpx.get(f"{lb.url}/instances", timeout=10).json()
        assert view["healthy"] and view["consecutive_failures"] == 0
    finally:
        server.close()


def test_the_scraper_stops_before_the_server_drains_its_connections(loadgens, balancer, caplog):
    """stop() waits up to uvicorn's graceful timeout for open streams; an instance torn down meanwhile must not be
    scraped, failed and ejected by a balancer that is itself going away."""
    (live,) = loadgens(1, tokens_per_s=20)
    with loadgen_process(tokens_per_s=20) as (proc, victim):
        lb = balancer([live.url, victim], policy="test_first", eject_after_failures=2)
        client = httpx.Client(timeout=30)
        stream = client.stream("POST", f"{lb.url}/v1/completions", json=BODY | {"max_tokens": 2000})
        stream.__enter__()  # an open stream (on `live`) keeps the server draining at stop() for its graceful timeout
        stopping = threading.Thread(target=lb.stop)
        with caplog.at_level(logging.WARNING, logger="load_balancer"):
            stopping.start()
            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(1.5)  # six scrape intervals: two failed scrapes would eject it, were the scraper still running
            stopping.join(30)
        client.close()
    assert not stopping.is_alive()
    assert lb.balancer._tasks == []
    assert not [r for r in caplog.records if "ejected" in r.getMessage()], [r.getMessage() for r in caplog.records]
