"""Code: run the last fenced program in the sandbox, each test from a clean state, and judge in the parent."""

import json
import logging
import math
import re
from pathlib import Path

from reward_server import sandbox
from reward_server.config import WorkerSettings
from reward_server.sandbox import Limits, RunResult
from reward_server.types import CallCodeTruth, CodeItem, StdioCodeTruth, Verdict
from reward_server.verifiers import register

logger = logging.getLogger(__name__)

PYTHON = "/usr/bin/python3"  # the system interpreter: all of it lives under the read-only /usr
GXX = [
    "/usr/bin/g++",
    "-O2",
    "-std=gnu++17",
    "-pipe",
    "-o",
    f"{sandbox.BUILD_MOUNT}/prog",
    f"{sandbox.CODE_MOUNT}/solution.cpp",
]
HARNESS = Path(__file__).with_name("call_harness.py").read_text()
_FENCE = re.compile(r"```[ \t]*(python3?|py|cpp|c\+\+)[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
_LANG = {"python": "python", "python3": "python", "py": "python", "cpp": "cpp", "c++": "cpp"}


def last_program(response: str) -> tuple[str, str] | None:
    """(language, code) of the last ```python / ```cpp block."""
    blocks = _FENCE.findall(response)
    if not blocks:
        return None
    lang, code = blocks[-1]
    return _LANG[lang.lower()], code


def normalize_stdout(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).rstrip("\n")


def same_value(got, want) -> bool:
    """Equality of JSON values that keeps bool apart from int and lets floats differ by rounding."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same_value(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same_value(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def _run_record(run: RunResult) -> dict:
    return {
        "status": run.status,
        "exit_code": run.exit_code,
        "wall_s": round(run.wall_s, 3),
        "stderr": run.stderr.decode(errors="replace")[-500:],
    }


@register("code")
class CodeVerifier:
    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        common = dict(
            max_procs=settings.code_max_procs, max_file_mb=settings.code_max_file_mb, tmpfs_mb=settings.code_tmpfs_mb
        )
        self.run_limits = Limits(wall_s=settings.code_test_timeout_s, memory_mb=settings.code_memory_mb, **common)
        self.compile_limits = Limits(
            wall_s=settings.code_compile_timeout_s, memory_mb=settings.code_compile_memory_mb, **common
        )
        # Python items all run in this one sandbox (started on first use, in the verifier's own process); a C++
        # item needs its binary mounted and gets sandboxes of its own.
        self._box = sandbox.Sandbox(self.run_limits)

    def hard_timeout_s(self, item: CodeItem) -> float:
        per_test = self.settings.code_test_timeout_s + 2
        compile_s = self.settings.code_compile_timeout_s if item.ground_truth.language == "cpp" else 0
        return compile_s + per_test * len(item.ground_truth.tests) + 10

    def close(self) -> None:
        """End the shared sandbox (the verifier's process exiting ends it too)."""
        self._box.close()

    def verify(self, item: CodeItem) -> Verdict:
        truth = item.ground_truth
        program = last_program(item.response)
        if program is None:
            return Verdict(score=0.0, details={"reason": "no_code_block"})
        lang, code = program
        if lang != truth.language:
            return Verdict(score=0.0, details={"reason": "wrong_language", "language": lang})
        if lang == "python":
            files = {"solution.py": code}
            if isinstance(truth, CallCodeTruth):
                files["harness.py"] = HARNESS
                argv = [PYTHON, "-I", f"{sandbox.CODE_MOUNT}/harness.py", truth.fn_name]
            else:
                argv = [PYTHON, "-I", f"{sandbox.CODE_MOUNT}/solution.py"]
            return self._run_tests(truth, self._box, argv, files)
        build_dir = sandbox.make_build_dir()
        try:
            files = {"solution.cpp": code}
            built = sandbox.run(GXX, self.compile_limits, files, build_dir=build_dir, build_writable=True)
            if built.status != "finished" or built.exit_code != 0:
                kills = [built.status] if built.status != "finished" else []
                details = {"reason": "compile_error", "compile": _run_record(built), "sandbox_kills": kills}
                return Verdict(score=0.0, details=details, cacheable=built.status != "wall_timeout")
            with sandbox.Sandbox(self.run_limits, build_dir=build_dir) as box:
                return self._run_tests(truth, box, [f"{sandbox.BUILD_MOUNT}/prog"], {})
        finally:
            sandbox.remove_dir(build_dir)

    def _run_tests(self, truth, box: sandbox.Sandbox, argv: list[str], files: dict[str, str]) -> Verdict:
        kills: list[str] = []
        for i, test in enumerate(truth.tests):
            stdin = json.dumps(test.input).encode() if isinstance(truth, CallCodeTruth) else test.input.encode()
            run = box.run(argv, files, stdin)
            if run.status != "finished":
                kills.append(run.status)
            passed, why = self._check(truth, test, run)
            if not passed:
                details = {
                    "reason": why,
                    "passed": i,
                    "total": len(truth.tests),
                    "failed_test": i,
                    "run": _run_record(run),
                    "sandbox_kills": kills,
                }
                # a wall-clock kill can be the machine's overload as much as the program's fault
                return Verdict(score=0.0, details=details, cacheable="wall_timeout" not in kills)
        return Verdict(
            score=1.0, details={"reason": "all_passed", "passed": len(truth.tests), "total": len(truth.tests)}
        )

    @staticmethod
    def _check(truth, test, run: RunResult) -> tuple[bool, str]:
        if run.status != "finished":
            return False, run.status
        if run.exit_code != 0:
            return False, "runtime_error"
        stdout = run.stdout.decode("utf-8", errors="replace")
        if isinstance(truth, StdioCodeTruth):
            ok = normalize_stdout(stdout) == normalize_stdout(test.output)
            return ok, "passed" if ok else "wrong_output"
        lines = stdout.splitlines()
        if len(lines) != 1:
            return False, "no_result"
        try:
            got = json.loads(lines[0])
        except json.JSONDecodeError:
            return False, "no_result"
        ok = same_value(got, test.output)
        return ok, "passed" if ok else "wrong_output"
