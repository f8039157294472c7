"""One client request in flight: where it runs, which attempts it made, and whether it must leave its instance.

The relay owns the request's lifecycle (the instance serving it, the instances that failed it, a pending move or
failure); what its stream has said so far and the bytes its client gets belong to its ``StreamCodec``
(``load_balancer.sse_codec``), from which a continuation is built.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from load_balancer.policy import RequestInfo, RunningRequest
from load_balancer.sse_codec import StreamCodec
from load_balancer.types import CompletionHead


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
    move_to: str | None = None  # set by the migration loop; the relay's own task executes the move
    interrupt_reason: str | None = None
    read_scope: asyncio.Timeout | None = None  # the pending upstream read, cancelled to interrupt it
    codec: StreamCodec = field(init=False)

    def __post_init__(self) -> None:
        self.codec = StreamCodec(
            self.head,
            self.body,
            tracks_token_ids=self.endpoint in ("/v1/completions", "/v1/chat/completions"),
            single_sequence=self.num_prompts == 1 and self.head.n == 1,
        )

    @property
    def upstream_id(self) -> str:
        return f"{self.request_id}-{self.attempt}"

    def internal_ids(self) -> list[str]:
        """vLLM's engine-side ids for the current attempt (DESIGN.md §6), the only form /abort_requests honours."""
        if self.endpoint == "/v1/chat/completions" and not self.codec.continued:
            return [f"chatcmpl-{self.upstream_id}"]
        if not self.codec.tracks_token_ids:
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

    def can_continue(self) -> bool:
        """A continuation can be built: a migratable stream with its prompt ids known and tokens left to generate."""
        cap, generated = self.head.max_tokens, len(self.codec.generated)
        return self.migratable and self.codec.prompt_ids is not None and (cap is None or cap > generated)

    def interrupt(self, reason: str, move_to: str | None = None) -> bool:
        """Ask the relay's task to leave its instance at the next chunk boundary (or now, if it is waiting)."""
        if self.codec.finish_seen or self.codec.done or self.interrupt_reason is not None:
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
        return self.interrupt_reason is not None and (self.move_to is None or self.codec.clean)

    def running_request(self) -> RunningRequest:
        return RunningRequest(
            request=self.progress_info(), url=self.url or "", generated_tokens=self.codec.tokens_seen,
            started_at=self.started_at,
        )  # fmt: skip

    def progress_info(self) -> RequestInfo:
        return replace(self.info, generated_tokens=self.codec.tokens_seen)

    def begin_attempt(self, url: str) -> None:
        self.codec.begin_attempt()
        self.attempt += 1
        self.url = url
        self.move_to = None
        self.interrupt_reason = None
