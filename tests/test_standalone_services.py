"""Each service's tests run without the trainer stack: the reward service's and the balancer's images install only
their own package, so collecting tests/reward_server or tests/load_balancer must import neither am_rl nor verl (the
shared fixtures in tests/conftest.py import am_rl only when a test asks for them). Collected in a fresh process:
this one has long imported the trainer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINER_STACK = ("am_rl", "verl")

COLLECT = """
import json, sys, pytest
rc = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", sys.argv[1]])
print(json.dumps({"rc": int(rc), "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.mark.parametrize("service", ["reward_server", "load_balancer"])
def test_service_tests_collect_without_the_trainer_stack(service):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    run = subprocess.run([sys.executable, "-c", COLLECT, f"tests/{service}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, run.stdout[-3000:]
    assert service in report["loaded"]  # the collection did import the service's tests
    leaked = [m for m in TRAINER_STACK if m in report["loaded"]]
    assert not leaked, f"collecting tests/{service} imported {leaked}"
