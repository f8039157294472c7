"""One client request in flight: what has been relayed so far, where it runs, and how to continue it elsewhere.

A relay reads vLLM's SSE chunks (always requested with ``return_token_ids``), records prompt and generated token ids,
and turns them into the bytes the client gets. While a request runs on its first instance those bytes are vLLM's own
(token-id fields nulled when the client did not ask for them, exactly as vLLM writes them then). After a move or a
failover the continuation's chunks are rewritten so the client sees one generation: the first ``id``/``created``,
``text_offset`` counted from the start, and usage over the original prompt and all generated tokens.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from load_balancer.policy import RequestInfo, RunningRequest
from load_balancer.types import CompletionHead

# vLLM writes these keys as null when the client did not ask for token ids; the balancer always asks, so it puts
# the nulls back. A byte-level substitution keeps every other byte of vLLM's JSON untouched (no re-serialisation).
_TOKEN_IDS = re.compile(rb'"(prompt_token_ids|token_ids)":\[[0-9,]*\]')


def null_token_ids(blob: bytes) -> bytes:
    return _TOKEN_IDS.sub(rb'"\1":null', blob)


def sse_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class Interrupted(Exception):
    """The upstream stream of a relay stopped before its end (moved, or the instance failed)."""


@dataclass
class Relay:
    request_id: str  # the balancer's id; upstream attempt k runs under X-Request-Id "<request_id>-<k>"
    endpoint: str  # "/v1/completions" or "/v1/chat/completions"
    body: dict[str, Any]  # the client's body, less the balancer's own field (load_balancer.hints)
    head: CompletionHead
    info: RequestInfo
    started_at: float
    num_prompts: int  # prompts in the body (vLLM's internal ids are per prompt index)
    url: str | None = None  # instance serving it now
    attempt: int = -1
    tried: set[str] = field(default_factory=set)  # instances that failed this request
    prompt_ids: list[int] | None = None
    generated: list[int] = field(default_factory=list)
    tokens_seen: int = 0  # all choices together (equals len(generated) for a single-choice request)
    # vLLM's logprobs text_offset advances by the length of each token's string (not of the text); a continuation
    # starts again at 0, so its offsets are shifted by where the relayed ones had reached when it began.
    next_offset: int = 0
    offset_base: int = 0
    first_id: str | None = None
    created: int | None = None
    continued: bool = False  # some tokens came from an earlier instance
    finish_seen: bool = False
    # True while the relayed text ends on a character boundary. vLLM's detokenizer holds back (sends "") or
    # replaces (U+FFFD) the bytes of an unfinished multi-byte character; cutting there would make the continuation
    # decode those bytes again, so moves wait for a clean boundary (token ids are exact either way).
    clean: bool = True
    done: bool = False  # [DONE] relayed
    move_to: str | None = None  # set by the migration loop; the relay's own task executes the move
    interrupt_reason: str | None = None
    read_scope: asyncio.Timeout | None = None  # the pending upstream read, cancelled to interrupt it

    @property
    def wants_ids(self) -> bool:
        return bool(self.head.return_token_ids)

    @property
    def tracks_token_ids(self) -> bool:
        """The OpenAI endpoints get ``return_token_ids`` added (and nulled again on the way back); vLLM's generate
        endpoint is relayed untouched."""
        return self.endpoint in ("/v1/completions", "/v1/chat/completions")

    @property
    def upstream_id(self) -> str:
        return f"{self.request_id}-{self.attempt}"

    def internal_ids(self) -> list[str]:
        """vLLM's engine-side ids for the current attempt (DESIGN.md §6), the only form /abort_requests honours."""
        if self.endpoint == "/v1/chat/completions" and not self.continued:
            return [f"chatcmpl-{self.upstream_id}"]
        if not self.tracks_token_ids:
            return [self.upstream_id]
        return [f"cmpl-{self.upstream_id}-{i}" for i in range(self.num_prompts)]

    @property
    def migratable(self) -> bool:
        """Continuation rebuilds one sequence from token ids, so only single-sequence completion streams qualify."""
        h = self.head
        return (
            self.endpoint == "/v1/completions"
            and h.stream
            and self.num_prompts == 1
            and h.n == 1
            and not h.echo
            and not h.best_of
            and not h.prompt_logprobs
        )

    def remaining_max_tokens(self) -> int | None:
        return None if self.head.max_tokens is None else self.head.max_tokens - len(self.generated)

    def can_continue(self) -> bool:
        remaining = self.remaining_max_tokens()
        return self.migratable and self.prompt_ids is not None and (remaining is None or remaining > 0)

    def interrupt(self, reason: str, move_to: str | None = None) -> bool:
        """Ask the relay's task to leave its instance at the next chunk boundary (or now, if it is waiting)."""
        if self.finish_seen or self.done or self.interrupt_reason is not None:
            return False
        self.interrupt_reason = reason
        self.move_to = move_to
        if self.read_scope is not None and self.may_leave():
            try:
                self.read_scope.reschedule(asyncio.get_running_loop().time())
            except RuntimeError:  # that read is already over; the flag stops the relay at its next chunk
                pass
        return True

    def may_leave(self) -> bool:
        """An interrupt takes effect now: failures at once, moves only at a clean text boundary."""
        return self.interrupt_reason is not None and (self.move_to is None or self.clean)

    def running_request(self) -> RunningRequest:
        return RunningRequest(
            request=self.progress_info(), url=self.url or "", generated_tokens=self.tokens_seen,
            started_at=self.started_at,
        )  # fmt: skip

    def progress_info(self) -> RequestInfo:
        return replace(self.info, generated_tokens=self.tokens_seen)

    def upstream_body(self) -> dict[str, Any]:
        """The first attempt sends the client's body; later ones, prompt + generated ids with the cap reduced."""
        if not self.tracks_token_ids:
            return self.body
        if not self.generated and not self.continued:
            return self.body | {"return_token_ids": True}
        body = self.body | {"prompt": self.prompt_ids + self.generated, "return_token_ids": True}
        if self.head.max_tokens is not None:
            body["max_tokens"] = self.head.max_tokens - len(self.generated)
        if self.head.min_tokens:
            body["min_tokens"] = max(0, self.head.min_tokens - len(self.generated))
        return body

    def begin_attempt(self, url: str) -> None:
        if self.generated:
            self.continued = True
        self.attempt += 1
        self.offset_base = self.next_offset
        self.url = url
        self.move_to = None
        self.interrupt_reason = None

    def absorb(self, events: bytes) -> bytes:
        """Record what a batch of complete SSE events says; return the bytes to send to the client."""
        out: list[bytes] = []
        plain = not self.continued
        for event in events.split(b"\n\n"):
            if not event:
                continue
            payload = event[6:] if event.startswith(b"data: ") else None
            if payload is None:
                out.append(event + b"\n\n")
                continue
            if payload == b"[DONE]":
                self.done = True
                out.append(DONE)
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                out.append(event + b"\n\n")
                continue
            self._record(chunk)
            if plain:
                out.append(event + b"\n\n")
            else:
                out.append(sse_event(self._rewrite(chunk)))
        blob = b"".join(out)
        return null_token_ids(blob) if plain and self.tracks_token_ids and not self.wants_ids else blob

    def _record(self, chunk: dict[str, Any]) -> None:
        if self.first_id is None and "id" in chunk:
            self.first_id, self.created = chunk["id"], chunk.get("created")
        if self.prompt_ids is None and chunk.get("prompt_token_ids"):  # chat puts it at the top level
            self.prompt_ids = chunk["prompt_token_ids"]
        for choice in chunk.get("choices") or ():
            if self.prompt_ids is None and choice.get("prompt_token_ids"):
                self.prompt_ids = choice["prompt_token_ids"]
            ids = choice.get("token_ids") or ()
            self.tokens_seen += len(ids)
            if self.num_prompts == 1 and self.head.n == 1:
                self.generated.extend(ids)
                if ids:
                    text = choice.get("text") or ""
                    self.clean = bool(text) and not text.endswith("\ufffd")
                lp = choice.get("logprobs")
                if lp and lp.get("tokens"):
                    self.next_offset = self.offset_base + lp["text_offset"][-1] + len(lp["tokens"][-1])
            if choice.get("finish_reason") is not None:
                self.finish_seen = True

    def _rewrite(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """A continuation chunk, made to read as part of the first generation."""
        if "id" in chunk:
            chunk["id"], chunk["created"] = self.first_id, self.created
        for choice in chunk.get("choices") or ():
            choice["prompt_token_ids"] = None
            if not self.wants_ids:
                choice["token_ids"] = None
            lp = choice.get("logprobs")
            if lp and lp.get("text_offset"):
                lp["text_offset"] = [o + self.offset_base for o in lp["text_offset"]]
        usage = chunk.get("usage")
        if usage:
            prompt = len(self.prompt_ids or ())
            usage |= {"prompt_tokens": prompt, "completion_tokens": len(self.generated)}
            usage["total_tokens"] = prompt + len(self.generated)
        return chunk

    def closing_events(self) -> bytes:
        """What vLLM would still have sent after the final token, when the stream broke just after it."""
        out = b""
        options = self.head.stream_options
        if options is not None and options.include_usage:
            prompt = len(self.prompt_ids or ())
            usage = {"prompt_tokens": prompt, "total_tokens": prompt + self.tokens_seen, "completion_tokens": self.tokens_seen}
            chunk = {"id": self.first_id, "object": "text_completion", "created": self.created,
                     "model": self.body.get("model"), "choices": [], "usage": usage}  # fmt: skip
            out += sse_event(chunk)
        return out + DONE
