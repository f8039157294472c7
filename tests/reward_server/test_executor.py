"""The hard-kill executor: overruns are killed and replaced, infra failures are errors, never a 0."""

import time
from pathlib import Path

from reward_server.config import WorkerSettings
from reward_server.executor import Executor
from reward_server.types import CodeItem, MathItem
from reward_server.verifiers import build_verifiers

SLOW = CodeItem.model_validate(
    {
        "reward_type": "code",
        "response": "```python\nimport time\ntime.sleep(60)\n```",
        "ground_truth": {"language": "python", "test_type": "stdin_stdout", "tests": [{"input": "", "output": ""}]},
    }
)


def test_overrun_is_killed_and_the_child_replaced():
    settings = WorkerSettings(code_test_timeout_s=30.0)
    verifiers = build_verifiers(settings)
    verifiers["code"].hard_timeout_s = lambda item: 1.0  # the backstop fires before the sandbox's own timeout
    executor = Executor(verifiers)
    ticks = []
    roots = [Path(executor.tmp_root)]
    try:
        t0 = time.monotonic()
        result = executor.run(SLOW, lambda: ticks.append(1))
        roots.append(Path(executor.tmp_root))
        assert result.status == "timeout" and result.score == 0.0
        assert time.monotonic() - t0 < 5 and ticks and executor.restarts == 1
        ok = executor.run(MathItem(reward_type="math", response=r"\boxed{2}", ground_truth="2"), lambda: None)
        assert ok.status == "ok" and ok.score == 1.0
    finally:
        executor.close()
    assert roots[0] != roots[1] and not any(r.exists() for r in roots), "a killed verifier's temp files were left"


def test_sandbox_failure_is_reported_as_error_not_zero():
    executor = Executor(build_verifiers(WorkerSettings(code_tmpfs_mb=0)))  # bwrap refuses this sandbox
    try:
        item = SLOW.model_copy(update={"response": "```python\nprint()\n```"})
        result = executor.run(item, lambda: None)
        assert result.status == "error" and result.score is None
        assert "infra" in result.error and "bwrap" in result.error
    finally:
        executor.close()
