"""Errors as the balancer's clients read them: OpenAI-shaped bodies, as vLLM writes its own."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from load_balancer.sse_codec import sse_event


def error_response(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def error_event(message: str) -> bytes:
    """The same error inside a stream whose headers (200) are already sent."""
    return sse_event({"error": {"message": message, "type": "ServiceUnavailableError", "code": 503}})
