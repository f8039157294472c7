"""Real reward servers (`python -m reward_server` subprocesses) on loopback, with real Redis and workers."""

import os
import shutil
import tempfile

import httpx
import pytest

from reward_server.launcher import reward_service

FAST_SETTINGS = {"math_timeout_s": 4.0, "code_test_timeout_s": 3.0, "heartbeat_ttl_s": 3.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with reward_service(tmp_path_factory.mktemp("rs") / "server.log", settings=FAST_SETTINGS) as (url, _):
        yield url


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


@pytest.fixture
def private_tempdir(monkeypatch):
    """A temp root of this test's own, so that counting the service's rs-* dirs sees only what this test made (another
    reward service on the box makes its own in /tmp). Mode 0711 like the executor's root: sandbox uids traverse it."""
    root = tempfile.mkdtemp(prefix="sandbox-test-")
    os.chmod(root, 0o711)
    monkeypatch.setattr(tempfile, "tempdir", root)
    yield root
    shutil.rmtree(root, ignore_errors=True)
