"""The sandbox's PID 1: runs programs one after another, each from a clean state (the tests of an item, and
the items a verifier process scores, one sandbox serving them all). Not imported by the host: `sandbox.py`
hands this file's text to the system python3 (`python3 -I -S -c`) inside bubblewrap.

Why it can be trusted while it shares a uid with the programs it runs:
- it is PID 1 of the sandbox's pid namespace, and the kernel drops every signal sent to a namespace's init from
  inside it unless init installed a handler (it installs none): a program cannot kill or stop it;
- it makes itself non-dumpable, so a program cannot open /proc/1/mem or /proc/1/fd (ptrace access checks);
  the seccomp filter forbids ptrace and process_vm_* as well;
- after every run it SIGKILLs every other process in the namespace (kill(-1) from init reaches them all,
  background daemons included, since orphans are re-parented to init), reaps them, and only then wipes every
  writable place (/tmp, /dev/shm, /sandbox) and reports, so a run's output is final before the next run
  starts and nothing of a run survives into the next one; the program's files are written afresh into
  /sandbox before each run. SysV IPC and POSIX queues, the other state that outlives processes, are refused
  by the seccomp filter.
The expected outputs never enter the sandbox; the host compares.

Protocol (fds given on the command line): per run the host writes three sections, each an 8-byte big-endian
length and that many bytes: argv (NUL-separated), files (repeated: name length, name, data length, data, with
4-byte lengths) and stdin. This process answers b"up\\n" once, then per run the line
b"<timed_out> <exit_code> <wall_us> <stdout_len> <stderr_len> <clean>\\n" followed by stdout and stderr;
clean=0 means the state could not be wiped and this sandbox ends after the record. EOF on the control fd ends
the sandbox. Import-light on purpose (no `signal`, `json`, `shutil`): this start-up is paid
once per item.
"""

import _signal
import ctypes
import os
import resource
import select
import sys
import time

PR_SET_DUMPABLE = 4
STDERR_KEEP = 4096
CODE_DIR = "/sandbox"  # the program's files, rewritten before every run
WRITABLE = ("/tmp", "/dev/shm", CODE_DIR)
FORK_RETRIES = 20  # a previous sandbox of this uid may still be dying (RLIMIT_NPROC counts its processes)


def read_exactly(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_section(fd):
    return read_exactly(fd, int.from_bytes(read_exactly(fd, 8), "big"))


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def memfd(name, data=b""):
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def exec_program(argv, limits, fds):
    """In the forked child: limits (soft = hard, so they cannot be raised), stdio, a clean cwd, exec."""
    try:
        os.setsid()
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)  # python ignores these; exec keeps an ignored disposition
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
        for which, value in limits:
            resource.setrlimit(which, (value, value))
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 65536)
        os.chdir("/tmp")
        os.execv(argv[0], argv)
    except BaseException as e:  # noqa: BLE001 - nothing may escape into the supervisor's loop
        os.write(2, f"sandbox: cannot start {argv[0]}: {e}\n".encode())
    os._exit(127)


def fork_with_retry():
    for attempt in range(FORK_RETRIES):
        try:
            return os.fork()
        except BlockingIOError:
            time.sleep(0.01 * (attempt + 1))
    return os.fork()


def kill_all_but_me(main_pid):
    """SIGKILL and reap every process of the namespace; return the main child's wait status."""
    main_status = None
    while True:
        try:
            os.kill(-1, 9)
        except ProcessLookupError:
            pass
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return main_status
        if pid == main_pid:
            main_status = status


def wipe(path, mode):
    """Empty a directory without following symlinks; iterative, so deep nesting cannot exhaust the stack."""
    os.chmod(path, mode)  # a program may have locked us out of it
    stack = [os.open(path, os.O_RDONLY | os.O_DIRECTORY)]
    while stack:
        dir_fd = stack[-1]
        entries = list(os.scandir(dir_fd))
        if not entries:
            os.close(stack.pop())
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.rmdir(entry.name, dir_fd=dir_fd)
                except OSError:  # not empty (or unreadable: make it ours again) - descend
                    os.chmod(entry.name, 0o700, dir_fd=dir_fd, follow_symlinks=False)
                    stack.append(os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd))
                    break
            else:
                os.unlink(entry.name, dir_fd=dir_fd)


def write_files(blob):
    at = 0
    while at < len(blob):
        name_len = int.from_bytes(blob[at : at + 4], "big")
        name = blob[at + 4 : at + 4 + name_len].decode()
        at += 4 + name_len
        data_len = int.from_bytes(blob[at : at + 4], "big")
        fd = os.open(f"{CODE_DIR}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        write_all(fd, blob[at + 4 : at + 4 + data_len])
        os.close(fd)
        at += 4 + data_len


def run_test(argv, limits, wall_s, modes, stdin):
    fds = (memfd("stdin", stdin), memfd("stdout"), memfd("stderr"))
    t0 = time.monotonic()
    pid = fork_with_retry()
    if pid == 0:
        exec_program(argv, limits, fds)
    pidfd = os.pidfd_open(pid)
    timed_out = not select.select([pidfd], [], [], wall_s)[0]
    wall = time.monotonic() - t0
    os.close(pidfd)
    status = kill_all_but_me(pid)
    try:
        for path, mode in modes.items():
            wipe(path, mode)
        clean = 1
    except OSError as e:  # cannot vouch for a clean state: report, then end this sandbox (the host starts anew)
        os.write(2, f"sandbox: cannot wipe: {e}\n".encode())
        clean = 0
    stdout_fd, stderr_fd = fds[1], fds[2]
    stdout = os.pread(stdout_fd, os.fstat(stdout_fd).st_size, 0)
    err_size = os.fstat(stderr_fd).st_size
    stderr = os.pread(stderr_fd, STDERR_KEEP, max(0, err_size - STDERR_KEEP))
    for fd in fds:
        os.close(fd)
    exit_code = os.waitstatus_to_exitcode(status)
    head = b"%d %d %d %d %d %d\n" % (timed_out, exit_code, int(wall * 1e6), len(stdout), len(stderr), clean)
    return head + stdout + stderr, clean


def main():
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # as init, default-action signals from inside are dropped
    ctl_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    cpu, address_space, nproc, fsize, nofile, wall_us = map(int, sys.argv[3].split(","))
    limits = (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, address_space),
        (resource.RLIMIT_NPROC, nproc),
        (resource.RLIMIT_FSIZE, fsize),
        (resource.RLIMIT_NOFILE, nofile),
        (resource.RLIMIT_CORE, 0),
    )
    modes = {path: os.stat(path).st_mode & 0o7777 for path in WRITABLE}
    write_all(result_fd, b"up\n")
    while True:
        try:
            argv, files, stdin = read_section(ctl_fd), read_section(ctl_fd), read_section(ctl_fd)
        except EOFError:
            return
        write_files(files)
        argv = [arg.decode() for arg in argv.split(b"\0")]
        record, clean = run_test(argv, limits, wall_us / 1e6, modes, stdin)
        write_all(result_fd, record)
        if not clean:
            return


main()
