"""The client's expected-length hint: one optional request field, read and checked by the balancer, never sent on.

A client that knows roughly how long a request will run (the trainer: how long this prompt's samples ran in earlier
epochs, ``am_rl.rollout.priors``) sends ``am_rl_expected_tokens``: a top-level number in the JSON body of
``/v1/completions``, ``/v1/chat/completions`` or ``/inference/v1/generate``, the output tokens it expects the request
to generate in all. The balancer removes it from the body before the request reaches an engine and hands it to the
routing policy as ``RequestInfo.expected_tokens``.

Why a body field and not a header: the hint is a property of the request like ``max_tokens``, which it is checked
against; it travels with the body through every client, log and replay that keeps the body, where headers are
often dropped or rewritten by HTTP client libraries and proxies; and the balancer parses the body anyway.

Optional, never required, never an error: a hint that is not a number, is below 1, or exceeds the request's
``max_tokens`` is dropped (the request routes as if it had none) and counted in ``lb_length_hints_total`` by
``outcome``, so a client that sends garbage shows up on the balancer's /metrics rather than in its users' errors.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

HINT_FIELD = "am_rl_expected_tokens"


class HintOutcome(str, Enum):
    """What the balancer did with a request's hint (the ``outcome`` label of ``lb_length_hints_total``)."""

    ACCEPTED = "accepted"
    NOT_A_NUMBER = "not_a_number"  # a string, bool, list, null, ...
    NOT_POSITIVE = "not_positive"  # below 1 token
    OVER_MAX_TOKENS = "over_max_tokens"  # longer than the request may generate


def take_hint(body: dict[str, Any], max_tokens: int | None) -> tuple[int | None, HintOutcome | None]:
    """Remove the hint from ``body``; return it (None unless accepted) and the outcome (None when there was none).

    ``max_tokens``: the request's own output cap, or None when it sets none (then any positive hint is accepted).
    """
    if HINT_FIELD not in body:
        return None, None
    value = body.pop(HINT_FIELD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, HintOutcome.NOT_A_NUMBER
    if value < 1:
        return None, HintOutcome.NOT_POSITIVE
    if max_tokens is not None and value > max_tokens:
        return None, HintOutcome.OVER_MAX_TOKENS
    return int(round(value)), HintOutcome.ACCEPTED
