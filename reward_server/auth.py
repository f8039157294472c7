"""Who may use the reward service: one shared API key, the balancer's conventions (`--api-key`, an environment
variable, `Authorization: Bearer KEY` or `X-API-Key: KEY`, every route but /healthz).

The key reaches the service and its clients through the environment (or `--api-key`, which `ps` shows: for hand
runs only); the Slurm scripts make one per job (recipes/slurm/lib.sh). The trainer, `am_rl.data` and the benchmarks
send it with `headers`.
"""

import hmac
import os

from fastapi.responses import JSONResponse

from reward_server.types import ErrorBody

API_KEY_ENV = "AM_RL_REWARD_API_KEY"


def api_key_from_env() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def headers(api_key: str | None) -> dict[str, str]:
    """What a client sends: nothing without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class ApiKeyGuard:
    """Pure ASGI middleware answering 401 on every path but /healthz unless the request carries the key, the
    balancer's convention (load_balancer.app.require_api_key) minus its `?api_key=` form: a key in a URL lands in
    access logs, and this service has no browser page that would need it."""

    OPEN_PATHS = ("/healthz",)

    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"")
        given = auth[7:] if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        body = JSONResponse(
            status_code=401,
            content=ErrorBody(error="missing or wrong API key").model_dump(),
            headers={"www-authenticate": "Bearer"},
        )
        await send({"type": "http.response.start", "status": 401, "headers": body.raw_headers})
        await send({"type": "http.response.body", "body": body.body})
