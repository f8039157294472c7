"""verl's LLM server client, replaced: every sample goes to the load balancer's one URL (DESIGN.md §3.2).

verl's ``LLMServerClient`` picks a vLLM replica per request through its own Ray router actor and calls the replica's
``generate`` over Ray. This subclass keeps verl's contract (``generate(request_id, prompt_ids=..., sampling_params=...)
-> TokenOutput``) and sends the request as one streaming ``/v1/completions`` call with a token-id prompt to the
balancer, which picks the engine that will finish it soonest (and can move it mid-stream).

A sample cut by an abort (a pause for a weight sync, an engine that died where the balancer could not continue it)
is never returned as complete: it is resent as a continuation (prompt + the tokens so far, the rest of the budget),
which the engines generate token-exact, up to ``MAX_ABORT_RESENDS`` times; then the step fails with the reason.

What verl's own client loses and this one keeps: the engine's finish reason. It is returned in
``TokenOutput.extra_fields`` (``finish_reason``, ``truncated``), which verl's agent loop copies into the batch's
``non_tensor_batch``; ``am_rl.trainer.agent_loop`` checks it against the response lengths that ``am_grpo`` reads.

The client is pickled into every agent-loop worker (a Ray actor); the HTTP client is made there, on first use, in
the worker's event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Optional
from uuid import uuid4

import httpx
from omegaconf import DictConfig
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

from am_rl.rollout.client import RolloutClient, RolloutError
from am_rl.rollout.priors import LengthPriors
from am_rl.rollout.types import RolloutRequest

MAX_ABORT_RESENDS = 3

# verl's TokenOutput.stop_reason vocabulary: "completed" for stop and length alike, "aborted" for aborts.
_STOP_REASON = {"stop": "completed", "length": "completed", "abort": "aborted"}


def response_budget(rollout: Any, prompt_len: int, requested: Optional[int]) -> int:
    """max_tokens of one sample, as verl's vLLM server computes it: the request's (or ``response_length``), capped
    by what fits in ``max_model_len`` (None: prompt_length + response_length)."""
    max_model_len = rollout.max_model_len or rollout.prompt_length + rollout.response_length
    budget = min(requested if requested is not None else rollout.response_length, max_model_len - prompt_len)
    if budget < 1:
        raise RolloutError(
            f"a {prompt_len}-token prompt leaves no room to generate within max_model_len={max_model_len}"
        )
    return budget


class BalancerServerClient(LLMServerClient):
    """An ``LLMServerClient`` that sends every sample to the am_rl load balancer at ``balancer_url``."""

    def __init__(
        self,
        config: DictConfig,
        load_balancer_handle: Any = None,  # verl's router actor: unused, the balancer routes
        *,
        balancer_url: str,
        max_concurrency: int = 256,  # in flight from this worker; the balancer queues per engine
        request_timeout_s: float = 7200.0,  # per sample, whole generation
        api_key: Optional[str] = None,
        length_hints: bool = True,  # send each sample's expected length (am_rl.rollout.priors) to the balancer
        **kwargs: Any,
    ):
        super().__init__(config=config, load_balancer_handle=None, **kwargs)
        self.balancer_url = balancer_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.request_timeout_s = request_timeout_s
        self.api_key = api_key
        self._rollout: Optional[RolloutClient] = None
        self._priors: Optional[LengthPriors] = LengthPriors() if length_hints else None
        self._model_lock: Optional[asyncio.Lock] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_rollout"] = None  # an HTTP session belongs to one process and event loop
        state["_model_lock"] = None
        return state

    async def _client(self) -> RolloutClient:
        if self._rollout is None:
            self._model_lock = self._model_lock or asyncio.Lock()
            async with self._model_lock:
                if self._rollout is None:
                    model = await self._served_model()
                    self._rollout = RolloutClient(
                        self.balancer_url,
                        model,
                        max_concurrency=self.max_concurrency,
                        timeout_s=self.request_timeout_s,
                        api_key=self.api_key,
                    )
        return self._rollout

    async def _served_model(self) -> str:
        """The model name the engines serve (verl names it after the checkpoint path), asked of the balancer."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(timeout=30.0, headers=headers) as http:
            resp = await http.get(f"{self.balancer_url}/v1/models")
        if resp.status_code != 200:
            raise RolloutError(f"balancer {self.balancer_url}: GET /v1/models -> HTTP {resp.status_code}: {resp.text}")
        return resp.json()["data"][0]["id"]

    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        **kwargs: Any,  # verl's priority / mm_processor_output: engine-local scheduling hints, not routed
    ) -> TokenOutput:
        if image_data or video_data or audio_data:
            raise NotImplementedError("the balancer path sends token-id prompts only; multimodal inputs are not routed")
        prompt_ids = [int(t) for t in prompt_ids]
        rollout = self.config.actor_rollout_ref.rollout
        budget = response_budget(rollout, len(prompt_ids), sampling_params.get("max_tokens"))
        request = RolloutRequest(
            request_id=f"{request_id}-{uuid4().hex[:8]}",  # unique per call: a multi-turn loop reuses request_id
            prompt_ids=prompt_ids,
            max_tokens=budget,
            temperature=float(sampling_params.get("temperature", rollout.temperature)),
            top_p=float(sampling_params.get("top_p", rollout.top_p)),
            top_k=int(sampling_params.get("top_k", -1)),
            expected_tokens=self._priors.expected(prompt_ids, budget) if self._priors is not None else None,
        )
        hint = request.expected_tokens
        client = await self._client()
        tokens: list[int] = []
        logprobs: list[float] = []
        for resend in range(MAX_ABORT_RESENDS + 1):
            result = await client.generate(request)
            tokens += result.response_ids
            logprobs += result.logprobs
            if result.finish_reason != "abort":
                break
            remaining = request.max_tokens - len(result.response_ids)
            if remaining <= 0:  # cut exactly at its budget: the sample is as long as max_tokens allows
                result = dataclasses.replace(result, finish_reason="length")
                break
            request = dataclasses.replace(
                request,
                request_id=f"{request.request_id.split('~')[0]}~r{resend + 1}",
                prompt_ids=prompt_ids + tokens,
                max_tokens=remaining,
                # the continuation's own output: what the hint expects beyond the tokens already generated
                expected_tokens=hint - len(tokens) if hint is not None and len(tokens) < hint <= budget else None,
            )
        else:
            raise RolloutError(
                f"request {request_id}: aborted {MAX_ABORT_RESENDS + 1} times after {len(tokens)} tokens; "
                "a cut sample is never trained as complete"
            )
        if self._priors is not None:
            self._priors.record(prompt_ids, len(tokens))
        return TokenOutput(
            token_ids=tokens,
            log_probs=logprobs,
            stop_reason=_STOP_REASON.get(result.finish_reason, result.finish_reason),
            extra_fields={"finish_reason": result.finish_reason, "truncated": result.truncated, "resends": resend},
        )
