"""What a relayed stream has said so far, and the bytes its client gets: vLLM's SSE chunks in, one generation out.

A codec reads vLLM's SSE chunks (always requested with ``return_token_ids``), records prompt and generated token
ids, and turns them into the bytes the client gets. While a request runs on its first instance those bytes are
vLLM's own (token-id fields nulled when the client did not ask for them, exactly as vLLM writes them then). After a
move or a failover the continuation's chunks are rewritten so the client sees one generation: the first
``id``/``created``, ``text_offset`` counted from the start, and usage over the original prompt and all generated
tokens. Where the request runs and when it moves is ``load_balancer.relay``'s business, not this one's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from load_balancer.types import CompletionHead

# vLLM writes these keys as null when the client did not ask for token ids; the balancer always asks, so it puts
# the nulls back. A byte-level substitution keeps every other byte of vLLM's JSON untouched (no re-serialisation).
_TOKEN_IDS = re.compile(rb'"(prompt_token_ids|token_ids)":\[[0-9,]*\]')


def null_token_ids(blob: bytes) -> bytes:
    return _TOKEN_IDS.sub(rb'"\1":null', blob)


def sse_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


@dataclass
class StreamCodec:
    head: CompletionHead
    body: dict[str, Any]  # the client's body, less the balancer's own field (load_balancer.hints)
    tracks_token_ids: bool  # the OpenAI endpoints get ``return_token_ids``; vLLM's generate endpoint is relayed as is
    single_sequence: bool  # one prompt, n=1: the generated ids form one sequence that a continuation can extend
    prompt_ids: list[int] | None = None
    generated: list[int] = field(default_factory=list)
    tokens_seen: int = 0  # all choices together (equals len(generated) for a single-sequence request)
    # vLLM's logprobs text_offset advances by the length of each token's string (not of the text); a continuation
    # starts again at 0, so its offsets are shifted by where the relayed ones had reached when it began.
    next_offset: int = 0
    offset_base: int = 0
    first_id: str | None = None
    created: int | None = None
    continued: bool = False  # some tokens came from an earlier attempt
    finish_seen: bool = False
    # True while the relayed text ends on a character boundary. vLLM's detokenizer holds back (sends "") or
    # replaces (U+FFFD) the bytes of an unfinished multi-byte character; cutting there would make the continuation
    # decode those bytes again, so moves wait for a clean boundary (token ids are exact either way).
    clean: bool = True
    done: bool = False  # [DONE] relayed

    @property
    def wants_ids(self) -> bool:
        return bool(self.head.return_token_ids)

    def begin_attempt(self) -> None:
        """A new upstream attempt starts: what it sends continues what was relayed."""
        if self.generated:
            self.continued = True
        self.offset_base = self.next_offset

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
            if self.single_sequence:
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
