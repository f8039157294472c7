"""The adversarial suite: every known reward hack (and more) scores 0.0 and leaves no trace on the host;
correct programs score 1.0. Expected outputs are fresh random tokens, so only a program that reads them from
somewhere can print them, and nothing in the sandbox holds them."""

import socket
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from sandbox_checks import assert_no_sandbox_processes, rs_temp_dirs

from reward_server import sandbox
from reward_server.config import WorkerSettings
from reward_server.types import CodeItem
from reward_server.verifiers.code import CodeVerifier

SETTINGS = WorkerSettings(code_test_timeout_s=1.0, code_compile_timeout_s=60.0)
TOKEN = uuid.uuid4().hex  # the expected output of the attacked tests
HOST_MARK = Path(tempfile.gettempdir()) / f"pwned-{TOKEN}"


@pytest.fixture(scope="module")
def verifier():
    v = CodeVerifier(SETTINGS)
    yield v
    v.close()


def stdio(code: str, lang: str = "python", tests=None) -> CodeItem:
    return CodeItem.model_validate(
        {
            "reward_type": "code",
            "response": f"Here:\n```{lang}\n{textwrap.dedent(code)}\n```\n",
            "ground_truth": {
                "language": lang,
                "test_type": "stdin_stdout",
                "tests": tests or [{"input": "", "output": TOKEN}],
            },
        }
    )


def call(code: str, fn_name: str = "solve", tests=None) -> CodeItem:
    return CodeItem.model_validate(
        {
            "reward_type": "code",
            "response": f"```python\n{textwrap.dedent(code)}\n```",
            "ground_truth": {
                "language": "python",
                "test_type": "call",
                "fn_name": fn_name,
                "tests": tests or [{"input": [1], "output": TOKEN}],
            },
        }
    )


@pytest.fixture(scope="module")
def leak_server():
    """A host TCP service that hands out the expected token: reachable only with network access."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.5)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(TOKEN.encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(timeout=5)
    srv.close()


ATTACKS = {
    "atexit_os_exit": stdio("""
        import atexit, os
        atexit.register(lambda: print("ok"))
        os._exit(0)
    """),
    "sys_exit_before_output": stdio("import sys\nsys.exit(0)"),
    "call_sys_exit_at_import": call("import sys\nsys.exit(0)\ndef solve(x):\n    return 0"),
    "call_os_exit_in_function": call("import os\ndef solve(x):\n    os._exit(0)"),
    "call_atexit_prints_fake_result": call("""
        import atexit, os, json
        atexit.register(lambda: os.write(3, b'"anything"\\n'))
        def solve(x):
            raise SystemExit(0)
    """),
    "call_always_true_eq": call("""
        class Any:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
        def solve(x):
            return Any()
    """),
    "call_str_subclass_eq": call("""
        class S(str):
            def __eq__(self, other): return True
            __hash__ = str.__hash__
        def solve(x):
            return S("nope")
    """),
    "call_patched_json_dumps": call("""
        import json, builtins
        json.dumps = lambda *a, **k: '"patched"'
        builtins.isinstance = lambda *a: True
        def solve(x):
            return None
    """),
    "call_writes_many_result_lines": call("""
        import os
        def solve(x):
            for fd in range(3, 20):
                try:
                    os.write(fd, b'1\\n"x"\\n')
                except OSError:
                    pass
            return 1
    """),
    "patched_builtins_print": stdio("""
        import builtins
        real = builtins.print
        builtins.print = lambda *a, **k: real("ok", **k)
        print("whatever")
    """),
    "read_expected_from_disk": stdio(f"""
        import os
        for root, dirs, files in os.walk("/"):
            if root.startswith(("/proc", "/sys", "/dev")):
                continue
            for name in files:
                try:
                    data = open(os.path.join(root, name), "rb").read(1 << 20)
                except Exception:
                    continue
                if b"{TOKEN[:8]}" in data:
                    print(data.decode(errors="ignore"))
    """),
    "read_host_secrets": stdio("""
        for path in ["/etc/passwd", "/etc/shadow", "/root/.bashrc", "/work/shared/DESIGN.md", "/proc/1/environ"]:
            try:
                print(open(path).read()[:100])
            except Exception as e:
                print(type(e).__name__)
    """),
    "network_leak": None,  # filled by the leak_server fixture
    "kill_parent_and_everyone": stdio("""
        import os, signal
        for pid in [os.getppid(), 1, -1]:
            try:
                os.kill(pid, signal.SIGKILL)
            except Exception:
                pass
        print("ok")
    """),
    "fork_bomb": stdio("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """),
    "memory_bomb": stdio("""
        a = []
        while True:
            a.append(bytearray(50 * 1024 * 1024))
    """),
    "output_bomb": stdio("""
        import sys
        while True:
            sys.stdout.write("x" * 65536)
    """),
    "disk_bomb_in_tmp": stdio("""
        with open("/tmp/big", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
    """),
    "write_to_host": stdio(f"""
        import os
        for path in ["{HOST_MARK}", "/usr/pwned-{TOKEN}", "/pwned-{TOKEN}", "/sandbox/pwned"]:
            try:
                open(path, "w").write("x")
            except Exception:
                pass
        print("ok")
    """),
    "background_daemon": stdio(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(30)
            open("{HOST_MARK}", "w").write("late")
            os._exit(0)
        print("ok")
    """),
    "infinite_loop": stdio("while True:\n    pass"),
    "sleep_forever": stdio("import time\ntime.sleep(3600)"),
    "raise_rlimits": stdio("""
        import resource
        resource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))
        print("ok")
    """),
    "exit_code_zero_wrong_output": stdio("print('definitely not it')"),
    "cpp_infinite_loop": stdio("int main(){ volatile long x = 0; for(;;) x++; }", lang="cpp"),
    "cpp_fork_bomb": stdio("#include <unistd.h>\nint main(){ for(;;) fork(); }", lang="cpp"),
    "cpp_reads_disk": stdio(
        """
        #include <cstdio>
        int main(){ FILE* f = fopen("/etc/shadow", "r"); char b[100] = {0}; if (f) fread(b, 1, 99, f); puts(b); }
    """,
        lang="cpp",
    ),
    "cpp_compile_bomb": stdio("#include </dev/zero>\nint main(){}", lang="cpp"),
    "language_mismatch": stdio("print(1)", lang="cpp"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_scores_zero_and_leaves_no_trace(verifier, leak_server, name, private_tempdir):
    item = ATTACKS[name]
    if name == "network_leak":
        item = stdio(f"""
            import socket
            for host in ["127.0.0.1", "10.0.2.2", "8.8.8.8"]:
                try:
                    s = socket.create_connection((host, {leak_server}), timeout=1)
                    print(s.recv(100).decode())
                except Exception:
                    pass
        """)
    dirs_before = rs_temp_dirs()
    verdict = verifier.verify(item)
    assert verdict.score == 0.0, verdict.details
    assert not HOST_MARK.exists()
    assert not Path(f"/usr/pwned-{TOKEN}").exists() and not Path(f"/pwned-{TOKEN}").exists()
    assert_no_sandbox_processes()
    assert rs_temp_dirs() <= dirs_before


def test_leak_server_really_leaks_outside_the_sandbox(leak_server):
    """Guards the network attack: the token is reachable to anything with network access."""
    with socket.create_connection(("127.0.0.1", leak_server), timeout=2) as s:
        assert s.recv(100).decode() == TOKEN


CORRECT = {
    "python_stdio": stdio(
        """
        import sys
        n = int(sys.stdin.readline())
        xs = list(map(int, sys.stdin.readline().split()))
        print(sum(xs[:n]))
        print("tail   ")
    """,
        tests=[{"input": "3\n1 2 3 4\n", "output": "6\ntail\n\n"}, {"input": "1\n-5\n", "output": "-5\ntail"}],
    ),
    "python_call_class_solution": call(
        """
        class Solution:
            def twoSum(self, nums: List[int], target: int) -> List[int]:
                seen = {}
                for i, x in enumerate(nums):
                    if target - x in seen:
                        return [seen[target - x], i]
                    seen[x] = i
    """,
        fn_name="twoSum",
        tests=[{"input": [[2, 7, 11, 15], 9], "output": [0, 1]}, {"input": [[3, 2, 4], 6], "output": [1, 2]}],
    ),
    "python_call_top_level": call(
        """
        def solve(s, k):
            return {"len": len(s) * k, "ok": True, "ratio": 1 / 3}
    """,
        tests=[{"input": ["abc", 2], "output": {"len": 6, "ok": True, "ratio": 0.3333333333333333}}],
    ),
    "cpp_stdio": stdio(
        """
        #include <bits/stdc++.h>
        using namespace std;
        int main(){ long long a, b; cin >> a >> b; cout << a * b << "\\n"; }
    """,
        lang="cpp",
        tests=[{"input": "6 7\n", "output": "42"}, {"input": "100000 100000", "output": "10000000000\n"}],
    ),
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_solutions_score_one(verifier, name):
    verdict = verifier.verify(CORRECT[name])
    assert verdict.score == 1.0, verdict.details


def test_one_failing_test_fails_the_item(verifier):
    item = stdio("print(int(input()) + 1)", tests=[{"input": "1", "output": "2"}, {"input": "2", "output": "4"}])
    verdict = verifier.verify(item)
    assert verdict.score == 0.0 and verdict.details["passed"] == 1 and verdict.details["reason"] == "wrong_output"


def test_call_style_bool_is_not_int(verifier):
    assert verifier.verify(call("def solve(x):\n    return True", tests=[{"input": [1], "output": 1}])).score == 0.0


def test_each_test_starts_from_a_clean_tmp(verifier):
    code = """
        import os
        print(len(os.listdir("/tmp")))
        open("/tmp/state", "w").write("x")
    """
    assert verifier.verify(stdio(code, tests=[{"input": "", "output": "0"}] * 3)).score == 1.0


def test_sandbox_setup_failure_is_an_infra_error():
    limits = sandbox.Limits(wall_s=2, memory_mb=256, max_procs=16, max_file_mb=1, tmpfs_mb=1)
    with pytest.raises(sandbox.SandboxError):
        sandbox.run(["/usr/bin/true"], limits, {}, build_dir=Path("/nonexistent-build-dir"))
