"""Input limits of the reward service: what one request may carry, checked before anything is queued.

A body over `max_body_bytes` is refused with 413 while it streams in (app.BodyLimit), before it is held whole. In a
parsed request, an item over a limit is refused alone: /score answers 413, /score_batch answers that item with status
"rejected" (score 0, never cached) and scores the rest. A size is a property of the sample (a runaway response, a
dataset row with huge tests), not a bug of the caller, so one such sample must not cost a step the other rewards.
Every refusal names the field, the limit and, where it was measured, the size.
"""

import json

from pydantic import BaseModel, ConfigDict, PositiveInt

from reward_server.types import CodeItem, LimitExceeded, ScoreItem, ScoreResult

KIB = 1024
MIB = 1024 * KIB


class InputLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: PositiveInt = 64 * MIB  # one request body as sent (a whole batch); 413 before it is read whole
    max_batch_items: PositiveInt = 4096  # items in one /score_batch request; more: the whole request gets 413
    # One response, UTF-8. AM-Thinking's longest generations (49,152 tokens) are ~200 KB of text.
    max_response_bytes: PositiveInt = 1 * MIB
    max_prompt_bytes: PositiveInt = 1 * MIB  # one prompt (IFEval, RM), UTF-8
    # One ground truth as JSON: a math answer, an IFEval instruction list, an RM reference; of a code item everything
    # but its tests, which have the two limits below (test data is legitimately large).
    max_ground_truth_bytes: PositiveInt = 64 * KIB
    max_tests_per_item: PositiveInt = 256  # tests of one code item: all run in one sandbox, one after another
    # One code test: stdin plus expected stdout (UTF-8), or the call's arguments plus expected value (JSON). Judges'
    # largest inputs (a few 10^5 numbers) are a few MB.
    max_test_case_bytes: PositiveInt = 8 * MIB


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _json(value) -> int:
    return _utf8(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def check_item(item: ScoreItem, limits: InputLimits) -> LimitExceeded | None:
    """The first limit `item` exceeds, or None. Cheap next to parsing: one pass over the item's text."""
    size = _utf8(item.response)
    if size > limits.max_response_bytes:
        return LimitExceeded(field="response", limit=limits.max_response_bytes, actual=size, unit="bytes")
    if item.prompt is not None and (size := _utf8(item.prompt)) > limits.max_prompt_bytes:
        return LimitExceeded(field="prompt", limit=limits.max_prompt_bytes, actual=size, unit="bytes")
    if isinstance(item, CodeItem):
        return _check_code_truth(item, limits)
    truth = item.model_dump(mode="json", include={"ground_truth"})["ground_truth"]
    size = _utf8(truth) if isinstance(truth, str) else _json(truth)
    if size > limits.max_ground_truth_bytes:
        return LimitExceeded(field="ground_truth", limit=limits.max_ground_truth_bytes, actual=size, unit="bytes")
    return None


def _check_code_truth(item: CodeItem, limits: InputLimits) -> LimitExceeded | None:
    truth = item.ground_truth
    if len(truth.tests) > limits.max_tests_per_item:
        return LimitExceeded(
            field="ground_truth.tests", limit=limits.max_tests_per_item, actual=len(truth.tests), unit="tests"
        )
    size = _utf8(truth.model_dump_json(exclude={"tests"}))
    if size > limits.max_ground_truth_bytes:
        return LimitExceeded(field="ground_truth", limit=limits.max_ground_truth_bytes, actual=size, unit="bytes")
    for i, test in enumerate(truth.tests):
        if truth.test_type == "stdin_stdout":
            size = _utf8(test.input) + _utf8(test.output)
        else:
            size = _json(test.input) + _json(test.output)
        if size > limits.max_test_case_bytes:
            return LimitExceeded(
                field=f"ground_truth.tests[{i}]", limit=limits.max_test_case_bytes, actual=size, unit="bytes"
            )
    return None


def rejected(exceeded: LimitExceeded) -> ScoreResult:
    """The batch result of an item over a limit: scored 0 (like a killed verification), never cached."""
    return ScoreResult(status="rejected", score=0.0, error=exceeded.message(), details=exceeded.model_dump())
