"""The seccomp filter every sandboxed process runs under (handed to bubblewrap's `--seccomp FD`).

A deny list on top of what namespaces and the unprivileged uid already refuse: it removes kernel surface that
tests never need and that would let one program reach another or its supervisor. Built with libseccomp (via
`pyseccomp`, ctypes bindings to the distribution's libseccomp2) rather than hand-assembled BPF: libseccomp
resolves syscall numbers per architecture and kills any syscall made through a foreign ABI (32-bit `int 0x80`
on x86-64), which hand-written filters commonly get wrong.
"""

import errno
import functools
import os
import tempfile

import pyseccomp as seccomp

# Refused with EPERM. Grouped by why.
DENIED = (
    # reaching other processes: the supervisor, or a later test's processes
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # state that outlives processes and would carry over from one test to the next
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop",
    "semtimedop", "semctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
    "mq_getsetattr", "add_key", "keyctl", "request_key",
    # new namespaces and mounts (the sandbox's own are set up before the filter applies)
    "unshare", "setns", "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    # large kernel attack surface that no test needs
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "syslog", "acct", "quotactl", "lookup_dcookie", "fanotify_init", "iopl", "ioperm", "modify_ldt",
    "uselib", "personality", "vhangup",
)  # fmt: skip
# clone() flags that create namespaces; plain fork/thread creation stays allowed. (CLONE_NEWTIME exists only
# for unshare/clone3, both refused: in clone()'s flags its bit is part of the exit signal.)
NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


@functools.cache
def filter_bpf() -> bytes:
    """The compiled filter (built once per process)."""
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    for flag in NAMESPACE_FLAGS:
        f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, which seccomp cannot inspect: ENOSYS makes glibc fall back to clone().
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def filter_fd() -> int:
    """A fresh readable fd holding the filter (bwrap reads it to EOF), for one sandbox."""
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)  # Popen(pass_fds=...) hands it on
    os.write(fd, filter_bpf())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
