"""One sandbox runs all tests of an item: nothing one test's program does may reach the next test or forge a
result. Each cross-test attack is an item whose second test passes only if information from the first test
(a random secret in its input) reaches it; every attack is first shown to work on programs run bare on the
host, one subprocess per test, so a green sandbox test means the sandbox stopped it."""

import errno
import json
import signal
import subprocess
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
from sandbox_checks import assert_no_sandbox_processes, rs_temp_dirs

from reward_server import sandbox
from reward_server.config import WorkerSettings
from reward_server.types import CodeItem
from reward_server.verifiers.code import PYTHON, CodeVerifier

SETTINGS = WorkerSettings(code_test_timeout_s=3.0)
TOKEN = uuid.uuid4().hex
ARGV = [PYTHON, "-I", f"{sandbox.CODE_MOUNT}/solution.py"]

TEMPLATE = """
import os, sys, time
words = sys.stdin.read().split()
if words[0] == "store":
    secret = words[1]
{store}
    print("stored")
else:
{recall}
"""

def daemon(body: str) -> str:
    """Code that leaves a detached background process running `body` (its stdio on /dev/null)."""
    head = "if os.fork() == 0:\n    os.setsid()\n    fd = os.open(os.devnull, os.O_RDWR)\n"
    head += "    for std in (0, 1, 2):\n        os.dup2(fd, std)\n"
    return head + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n    os._exit(0)\n"


LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
QUEUE_KEY = int(TOKEN[:6], 16)

CHANNELS = {  # name -> (code storing `secret` in test 1, code printing it in test 2)
    "file_in_tmp": (
        f"open('/tmp/carry-{TOKEN}', 'w').write(secret)",
        f"print(open('/tmp/carry-{TOKEN}').read())",
    ),
    "file_in_cwd": ("open('carry', 'w').write(secret)", "print(open('carry').read())"),
    "rewrite_own_program": ("open(__file__, 'w').write(f'print({secret!r})')", "print('')"),
    "file_in_dev_shm": (
        f"open('/dev/shm/carry-{TOKEN}', 'w').write(secret)",
        f"print(open('/dev/shm/carry-{TOKEN}').read())",
    ),
    "daemon_writes_file_later": (
        daemon(f"time.sleep(0.5)\nopen('/tmp/late-{TOKEN}', 'w').write(secret)"),
        f"time.sleep(2)\nprint(open('/tmp/late-{TOKEN}').read())",
    ),
    "daemon_serves_on_abstract_socket": (
        daemon(
            f"""
            import socket
            srv = socket.socket(socket.AF_UNIX)
            srv.bind('\\0carry-{TOKEN}')
            srv.listen()
            srv.settimeout(10)
            conn, _ = srv.accept()
            conn.sendall(secret.encode())
            """
        ),
        f"import socket\ntime.sleep(1)\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0carry-{TOKEN}')\n"
        "print(s.recv(100).decode())",
    ),
    "daemon_prints_into_next_tests_stdout": (
        daemon(
            """
            me, parent, deadline = os.getpid(), os.getppid(), time.time() + 10
            while time.time() < deadline:
                for pid in os.listdir('/proc'):
                    if not pid.isdigit() or int(pid) in (me, parent):
                        continue
                    try:
                        if b'solution.py' in open(f'/proc/{pid}/cmdline', 'rb').read():
                            with open(f'/proc/{pid}/fd/1', 'w') as out:
                                out.write(secret + '\\n')
                            os._exit(0)
                    except OSError:
                        pass
                time.sleep(0.02)
            """
        ),
        "time.sleep(2)",
    ),
    "sysv_message_queue": (
        f"{LIBC}q = libc.msgget({QUEUE_KEY}, 0o1600)\nmsg = ctypes.create_string_buffer(8 + 64)\n"
        "ctypes.memmove(msg, (1).to_bytes(8, 'little') + secret.encode(), 8 + len(secret))\n"
        "libc.msgsnd(q, msg, 64, 0)",
        f"{LIBC}q = libc.msgget({QUEUE_KEY}, 0)\nmsg = ctypes.create_string_buffer(8 + 64)\n"
        "n = libc.msgrcv(q, msg, 64, 0, 0o4000)\nlibc.msgctl(q, 0, None)\n"
        "print(msg.raw[8 : 8 + n].rstrip(b'\\0').decode())",
    ),
}


def program(channel: str) -> str:
    store, recall = CHANNELS[channel]
    return TEMPLATE.format(store=textwrap.indent(store, "    "), recall=textwrap.indent(recall, "    "))


def carry_item(code: str, secret: str, tests: list[dict] | None = None) -> CodeItem:
    tests = tests or [{"input": f"store {secret}", "output": "stored"}, {"input": "recall", "output": secret}]
    return CodeItem.model_validate(
        {
            "reward_type": "code",
            "response": f"```python\n{code}\n```",
            "ground_truth": {"language": "python", "test_type": "stdin_stdout", "tests": tests},
        }
    )


def run_bare(code: str, inputs: list[str]) -> list[str]:
    """The same program, one bare subprocess per test in a shared working directory: no isolation at all."""
    with tempfile.TemporaryDirectory() as cwd:
        path = Path(cwd) / "solution.py"
        path.write_text(code)
        outs = [
            subprocess.run(
                [PYTHON, "-I", str(path)], input=text.encode(), capture_output=True, cwd=cwd, timeout=30
            ).stdout.decode()
            for text in inputs
        ]
    for leftover in Path("/tmp").glob(f"*-{TOKEN}"):
        leftover.unlink()
    for leftover in Path("/dev/shm").glob(f"*-{TOKEN}"):
        leftover.unlink()
    return [out.strip() for out in outs]


@pytest.fixture(scope="module")
def verifier():
    v = CodeVerifier(SETTINGS)
    yield v
    v.close()


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_cross_test_channel_works_bare_and_is_cut_in_the_sandbox(verifier, channel, private_tempdir):
    code = program(channel)
    secret = uuid.uuid4().hex
    assert run_bare(code, [f"store {secret}", "recall"]) == ["stored", secret], "the attack must work bare"
    dirs_before = rs_temp_dirs()
    verdict = verifier.verify(carry_item(code, uuid.uuid4().hex))
    assert verdict.score == 0.0, verdict.details
    assert verdict.details["failed_test"] == 1 and verdict.details["run"]["status"] == "finished", verdict.details
    assert_no_sandbox_processes()
    assert rs_temp_dirs() <= dirs_before


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_cross_item_channel_is_cut_in_the_shared_sandbox(verifier, channel):
    """The verifier's one Python sandbox serves item after item: the same channels between two items."""
    code, secret = program(channel), uuid.uuid4().hex
    first = verifier.verify(carry_item(code, secret, [{"input": f"store {secret}", "output": "stored"}]))
    assert first.score == 1.0, first.details
    second = verifier.verify(carry_item(code, secret, [{"input": "recall", "output": secret}]))
    assert second.score == 0.0 and second.details["run"]["status"] == "finished", second.details
    assert_no_sandbox_processes()


def test_call_harness_tampering_does_not_carry_over(verifier):
    """Test 1's function rewrites the in-sandbox harness to print test 2's expected value (a secret only test 1
    saw); test 2 must run the real harness."""
    code = textwrap.dedent(
        """
        def solve(cmd):
            if cmd.startswith("store "):
                with open("/sandbox/harness.py", "w") as f:
                    f.write("import json, os\\nos.write(1, (json.dumps(%r) + '\\\\n').encode())\\n" % cmd[6:])
                return "stored"
            return None
        """
    )
    secret = uuid.uuid4().hex
    item = CodeItem.model_validate(
        {
            "reward_type": "code",
            "response": f"```python\n{code}\n```",
            "ground_truth": {
                "language": "python",
                "test_type": "call",
                "fn_name": "solve",
                "tests": [{"input": [f"store {secret}"], "output": "stored"}, {"input": ["recall"], "output": secret}],
            },
        }
    )
    verdict = verifier.verify(item)
    assert verdict.score == 0.0 and verdict.details["failed_test"] == 1, verdict.details


def test_program_cannot_stop_trace_or_speak_for_its_supervisor(verifier):
    """Test 1 attacks PID 1 (the supervisor): signals, ptrace, its memory, and forged result records written
    into every fd of it that it can open, claiming that test 1 printed "stored" and test 2 the secret. The
    supervisor must survive, test 2 must run for real (and print nothing), and the item must score 0."""
    store = textwrap.dedent(
        """
        import ctypes, signal
        libc = ctypes.CDLL(None, use_errno=True)
        forged = b"0 0 1000 7 0 1\\nstored\\n" + b"0 0 1000 %d 0 1\\n%s\\n" % (len(secret) + 1, secret.encode())
        for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            for target in (1, -1, 0):
                try:
                    os.kill(target, sig) if target != 0 else None
                except OSError:
                    pass
        libc.ptrace(16, 1, None, None)  # PTRACE_ATTACH
        for path in ["/proc/1/mem", "/proc/1/environ"]:
            try:
                open(path, "rb").read(1)
            except OSError:
                pass
        try:
            fds = os.listdir("/proc/1/fd")
        except OSError:
            fds = [str(n) for n in range(3, 64)]
        for fd in fds:
            try:
                with open(f"/proc/1/fd/{fd}", "wb") as f:
                    f.write(forged)
            except OSError:
                pass
        """
    )
    code = TEMPLATE.format(store=textwrap.indent(store, "    "), recall="    print('')")
    verdict = verifier.verify(carry_item(code, uuid.uuid4().hex))
    assert verdict.score == 0.0, verdict.details
    assert verdict.details["failed_test"] == 1 and verdict.details["reason"] == "wrong_output", verdict.details
    assert_no_sandbox_processes()


def test_tests_of_one_item_share_no_state_even_when_the_first_times_out(verifier):
    """A test killed at its wall limit leaves a daemon and files behind; the next test still starts clean."""
    code = TEMPLATE.format(
        store=textwrap.indent(
            daemon("time.sleep(1)\nopen('/tmp/late', 'w').write(secret)")
            + "open('/tmp/now', 'w').write(secret)\ntime.sleep(3600)",
            "    ",
        ),
        recall="    time.sleep(2)\n    print(sorted(os.listdir('/tmp')))",
    )
    with sandbox.Sandbox(verifier.run_limits) as box:
        first = box.run(ARGV, {"solution.py": code}, b"store s")
        second = box.run(ARGV, {"solution.py": code}, b"recall")
    assert_no_sandbox_processes()
    assert first.status == "wall_timeout"
    assert second.status == "finished" and second.stdout.decode().strip() == "[]", second


PROBE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
nr = {"ptrace": 101, "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248, "bpf": 321,
      "perf_event_open": 298, "msgget": 68, "shmget": 29, "io_uring_setup": 425, "userfaultfd": 323,
      "clone3": 435, "mount": 165, "process_vm_readv": 310, "kcmp": 312}
calls = {
    "ptrace": (0, 0, 0, 0),                   # PTRACE_TRACEME
    "unshare": (0x10000000,),                 # CLONE_NEWUSER
    "setns": (-1, 0),
    "keyctl": (0, -4, 0),                     # KEYCTL_GET_KEYRING_ID of the user keyring
    "add_key": (b"user", b"probe", b"x", 1, -4),
    "bpf": (0, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0),
    "msgget": (0, 0o1600),                    # IPC_PRIVATE
    "shmget": (0, 4096, 0o1600),
    "io_uring_setup": (1, 0),
    "userfaultfd": (0,),
    "clone3": (0, 0),
    "mount": (b"none", b"/tmp", b"tmpfs", 0, 0),
    "process_vm_readv": (1, 0, 0, 0, 0, 0),
    "kcmp": (1, 1, 0, 0, 0),
}
wanted = sys.argv[1:] or list(calls)
out = {}
for name in wanted:
    ctypes.set_errno(0)
    rc = libc.syscall(nr[name], *calls[name])
    out[name] = 0 if rc >= 0 else ctypes.get_errno()
print(json.dumps(out))
"""
REFUSED = {"clone3": errno.ENOSYS}  # the rest: EPERM


def test_seccomp_filter_refuses_dangerous_syscalls():
    result = sandbox.run(ARGV, CodeVerifier(SETTINGS).run_limits, {"solution.py": PROBE})
    assert result.status == "finished" and result.exit_code == 0, result
    errnos = json.loads(result.stdout)
    assert errnos == {name: REFUSED.get(name, errno.EPERM) for name in errnos}, errnos


def test_the_probe_tells_refused_from_allowed_on_the_host():
    """Guards the seccomp test: outside the sandbox the harmless probes get other answers than EPERM."""
    harmless = ["setns", "keyctl", "bpf", "io_uring_setup", "perf_event_open", "clone3"]
    out = subprocess.run([PYTHON, "-I", "-c", PROBE, *harmless], capture_output=True, timeout=30)
    errnos = json.loads(out.stdout)
    assert all(errnos[name] != REFUSED.get(name, errno.EPERM) for name in harmless), errnos


def test_dev_is_read_only_and_dev_shm_is_capped():
    code = textwrap.dedent(
        """
        import errno
        out = []
        for path, size in [("/dev/pwned", 1), ("/dev/shm/big", 64 << 20)]:
            try:
                with open(path, "wb") as f:
                    f.write(b"x" * size)
                out.append("wrote")
            except OSError as e:
                out.append(errno.errorcode[e.errno])
        print(" ".join(out))
        """
    )
    limits = sandbox.Limits(wall_s=5, memory_mb=512, max_procs=16, max_file_mb=128, tmpfs_mb=8)
    result = sandbox.run(ARGV, limits, {"solution.py": code})
    assert result.stdout.decode().split() == ["EROFS", "ENOSPC"], result


def test_one_sandbox_runs_many_tests_with_fresh_limits_each():
    """RLIMIT_CPU is per test, not per sandbox: eight tests of 0.6 s CPU each (4.8 s in all) under a 4 s CPU
    limit all finish."""
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\nprint(1)"
    limits = sandbox.Limits(wall_s=3.0, memory_mb=256, max_procs=16, max_file_mb=1, tmpfs_mb=1)
    with sandbox.Sandbox(limits) as box:
        runs = [box.run(ARGV, {"solution.py": code}) for _ in range(8)]
    assert [(r.status, r.stdout) for r in runs] == [("finished", b"1\n")] * 8, runs


def test_ordinary_programs_work_under_the_filter(verifier):
    """Threads (glibc falls back from the refused clone3), a multiprocessing pool (fork plus semaphores in
    /dev/shm) and a subprocess all still work."""
    code = textwrap.dedent(
        """
        import multiprocessing, subprocess, threading
        out = []
        threads = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        with multiprocessing.Pool(2) as pool:
            squares = pool.map(abs, [-1, -2, -3])
        echo = subprocess.run(["/bin/echo", "hi"], capture_output=True, text=True).stdout.strip()
        print(sorted(out), squares, echo)
        """
    )
    item = carry_item(code, "", [{"input": "", "output": "[0, 1, 2, 3] [1, 2, 3] hi"}])
    verdict = verifier.verify(item)
    assert verdict.score == 1.0, verdict.details


FOREIGN_ABI = """
#include <cstdio>
int main() {
    long ret;  // ptrace(PTRACE_TRACEME) through the 32-bit entry point, where x86-64 syscall numbers do not apply
    asm volatile("int $0x80" : "=a"(ret) : "a"(26L), "b"(0L), "c"(0L), "d"(0L) : "memory");
    printf("%ld\\n", ret);
}
"""


def test_syscalls_through_the_32_bit_abi_are_killed(verifier, tmp_path):
    """The filter's deny list names x86-64 syscalls; the i386 entry point (int 0x80) would bypass it if the
    filter did not kill every foreign-ABI syscall. Bare, the same binary's ptrace succeeds."""
    binary = tmp_path / "abi"
    subprocess.run(["/usr/bin/g++", "-O2", "-x", "c++", "-", "-o", str(binary)], input=FOREIGN_ABI.encode(), check=True)
    assert subprocess.run([str(binary)], capture_output=True, timeout=30).stdout.strip() == b"0"
    item = CodeItem.model_validate(
        {
            "reward_type": "code",
            "response": f"```cpp\n{FOREIGN_ABI}\n```",
            "ground_truth": {"language": "cpp", "test_type": "stdin_stdout", "tests": [{"input": "", "output": "0"}]},
        }
    )
    verdict = verifier.verify(item)
    assert verdict.score == 0.0 and verdict.details["run"]["exit_code"] == -signal.SIGSYS, verdict.details
