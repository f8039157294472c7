"""The Redis URL: where the service and its workers take it from, and how it appears in logs and errors.

A URL may carry a password (`redis://:PASSWORD@host:6379/0`, `rediss://...` for TLS, `?password=...`; redis-py reads
all of them), so it travels in the environment, never on a command line (`ps` shows those to every user), and is
shown with the password masked.
"""

import os
import re

REDIS_URL_ENV = "AM_RL_REWARD_REDIS_URL"

_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")


def redis_url_from_env() -> str | None:
    return os.environ.get(REDIS_URL_ENV) or None


def redacted(url: str) -> str:
    """`url` with every password in it replaced by `***`."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", url))
