"""An upstream simulator for relay benchmarks: streams pre-built vLLM-shaped SSE chunks as fast as it can.

Not an engine and not the load generator of the tests (``load_balancer.loadgen`` computes every token and paces
them): here every chunk of a stream is the same pre-serialised bytes, so the simulator spends almost no CPU per
token and the balancer in front of it is what a benchmark measures. It answers what the balancer needs:
``POST /v1/completions`` (streaming only; the first chunk carries ``prompt_token_ids``, every chunk ``token_ids``,
a usage chunk when asked, then ``[DONE]``), ``GET /metrics`` (vLLM's metric names, all zero), ``GET /health`` and
``GET /v1/models``.

    python -m bench.sim.sse_upstream --port 9001
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web

MODEL = "sse-upstream"
TOKEN = 42  # every generated token; its text is "x "


def chunk(tokens: int, prompt: list[int] | None, finish: str | None) -> bytes:
    choice = {"index": 0, "text": "x " * tokens, "logprobs": None, "finish_reason": finish, "stop_reason": None,
              "token_ids": [TOKEN] * tokens, "prompt_token_ids": prompt}  # fmt: skip
    body = {"id": "cmpl-sim", "object": "text_completion", "created": 0, "model": MODEL, "choices": [choice]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    max_tokens = int(body.get("max_tokens") or 16)
    interval = max(1, int(body.get("stream_interval") or 1))
    prompt = body.get("prompt")
    prompt_ids = prompt if isinstance(prompt, list) else [1] * max(1, len(str(prompt)) // 4)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    middle = chunk(interval, None, None)
    sent = 0
    while sent < max_tokens:
        n = min(interval, max_tokens - sent)
        last = sent + n >= max_tokens
        if sent == 0 or last or n != interval:
            await response.write(chunk(n, prompt_ids if sent == 0 else None, "length" if last else None))
        else:
            await response.write(middle)
        sent += n
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": sent, "total_tokens": len(prompt_ids) + sent}
        tail = {"id": "cmpl-sim", "object": "text_completion", "created": 0, "model": MODEL, "choices": [],
                "usage": usage}  # fmt: skip
        await response.write(b"data: " + orjson.dumps(tail) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


METRICS = "".join(
    f"# TYPE {name} {kind}\n{name}{{model_name=\"{MODEL}\"}} 0.0\n"
    for name, kind in (("vllm:num_requests_running", "gauge"), ("vllm:num_requests_waiting", "gauge"),
                       ("vllm:kv_cache_usage_perc", "gauge"), ("vllm:generation_tokens_total", "counter"))
)  # fmt: skip


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=METRICS)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


def build_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.post("/v1/completions", completions), web.get("/metrics", metrics),
                    web.get("/health", health), web.get("/v1/models", models)])  # fmt: skip
    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sim.sse_upstream", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    web.run_app(build_app(), host=a.host, port=a.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
