"""The python grader's sandbox: bubblewrap's arguments, the folders it binds, its limits and the
seccomp filter that narrows the kernel it can reach."""

from __future__ import annotations

import functools
import itertools
import math
import os
import platform
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

SANDBOX_DIR = "/sandbox"  # the sandbox's writable folder (a tmpfs) and working directory
SHM_BYTES = 64 * 1024**2  # the size of its /dev/shm (a tmpfs too)

_RUNNER = Path(__file__).with_name("python_sandbox_main.py")
_REPOSITORY = Path(__file__).resolve().parents[1]  # the checkout, when run from one
_cpu_turns = itertools.count()  # spreads concurrent sandboxes over the CPUs


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 120.0  # wall-clock per grade() call
    memory_bytes: int = 2 * 1024**3  # RLIMIT_AS
    disk_bytes: int = 1024**3  # the size of its writable folder (tmpfs) and RLIMIT_FSIZE
    cpu_cores: int = 2  # sched_setaffinity to at most this many cores
    max_processes: int = 64

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ValueError("timeout_s must be a positive number of seconds")
        if min(self.memory_bytes, self.disk_bytes, self.cpu_cores, self.max_processes) < 1:
            raise ValueError("sandbox limits must be positive")


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")


def python_roots() -> list[str]:
    """The folders the interpreter needs besides /usr: its installation and the venv's."""
    roots: set[str] = set()
    for prefix in (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix):
        roots.update({os.path.abspath(prefix), os.path.realpath(prefix)})
    roots = {root for root in roots if root != "/usr" and not root.startswith("/usr/")}
    # A folder inside another one comes with it.
    return sorted(r for r in roots if not any(r.startswith(o + "/") for o in roots if o != r))


def roots_problem() -> str | None:
    """Why binding the interpreter's folders would be unsafe or not enough, if it would."""
    checkout = (_REPOSITORY / "pyproject.toml").is_file()  # not an install in site-packages
    for root in python_roots():
        if root == "/" or (checkout and _REPOSITORY.is_relative_to(root)):
            return (
                f"python graders are off: the interpreter's folder {root} holds the service's "
                "code, which the sandbox must not see (use a virtual environment outside it)"
            )
    roots = [*python_roots(), "/usr"]
    for executable in (os.path.abspath(sys.executable), os.path.realpath(sys.executable)):
        if not any(executable.startswith(root + "/") for root in roots):
            return f"python graders are off: the interpreter {executable} is outside its prefixes"
    return None


def _root_links() -> list[str]:
    """/bin, /lib... as the host has them: symlinks into /usr (merged /usr) or folders."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def bwrap_args(limits: SandboxLimits, info_fd: int, seccomp_fd: int | None) -> list[str]:
    threads = str(limits.cpu_cores)
    args = [
        "--unshare-all",  # user, pid, network (no interface but its own loopback), ipc, uts
        "--unshare-user",
        "--disable-userns",  # no nested user namespaces: less kernel to attack
        "--die-with-parent",
        # The runner is the namespace's pid 1: its exit ends every process it leaves, and our
        # bubblewrap reaps it before exiting (its own pid-1 reaper would outlive bubblewrap and be
        # left for the host's init to reap).
        "--as-pid-1",
        "--new-session",
        "--clearenv",
        *("--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"),
        *("--setenv", "HOME", SANDBOX_DIR),
        *("--setenv", "TMPDIR", SANDBOX_DIR),
        *("--setenv", "LANG", "C.UTF-8"),
        # numpy's BLAS and friends start a thread per CPU of the host unless told otherwise.
        *("--setenv", "OMP_NUM_THREADS", threads),
        *("--setenv", "OPENBLAS_NUM_THREADS", threads),
        *("--setenv", "MKL_NUM_THREADS", threads),
        *("--setenv", "MPLCONFIGDIR", SANDBOX_DIR),
        *("--ro-bind", "/usr", "/usr"),
        *_root_links(),
    ]
    for root in python_roots():  # read-only: the interpreter and the venv, nothing beside them
        args += ["--ro-bind", root, root]
    args += [
        *("--proc", "/proc"),
        *("--dev", "/dev"),
        # Writable, each of a bounded size (tmpfs lives in memory): SANDBOX_DIR, and /dev/shm for
        # multiprocessing's semaphores. Nothing else: / and /dev read-only.
        *("--size", str(limits.disk_bytes), "--tmpfs", SANDBOX_DIR),
        *("--size", str(min(limits.disk_bytes, SHM_BYTES)), "--tmpfs", "/dev/shm"),
        *("--symlink", SANDBOX_DIR, "/tmp"),
        *("--remount-ro", "/dev"),
        *("--remount-ro", "/"),
        *("--chdir", SANDBOX_DIR),
        *("--info-fd", str(info_fd)),
    ]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    # -I: no PYTHON* variables, no user site, no script folder or cwd on sys.path. Not -S: site is
    # what puts the venv's site-packages (numpy, scipy...) on sys.path, as OpenAI's grader image
    # offers them; the .pth files it runs are the venv's own, and the repository they may point
    # to (an editable install) is not mounted. -B: nothing to write bytecode to anyway.
    runner = ["--", sys.executable, "-I", "-B", "-c", runner_text(), "run"]
    return args + runner


@functools.cache
def runner_text() -> str:
    return _RUNNER.read_text(encoding="utf-8")


def pick_cpus(count: int) -> list[int]:
    available = sorted(os.sched_getaffinity(0))
    count = min(count, len(available))
    start = next(_cpu_turns) * count
    return [available[(start + k) % len(available)] for k in range(count)]


# Syscalls the sandbox never needs that widen its reach into the kernel (or would undo its CPU
# affinity), refused with EPERM by a seccomp filter. Numbers: x86_64 and the generic table (arm64).
_DENIED_SYSCALLS = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "sched_setaffinity": (203, 122),
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "acct": (163, 89),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "syslog": (103, 116),
    "quotactl": (179, 60),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """A classic BPF seccomp program (struct sock_filter[]) refusing _DENIED_SYSCALLS with EPERM.

    None for a CPU other than x86_64 and arm64 (the sandbox then runs without it). Calls of
    another ABI (i386 or x32 on x86_64) get ENOSYS.
    """
    machine = machine or platform.machine()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    if machine not in _AUDIT_ARCH:
        return None
    column = 0 if machine == "x86_64" else 1
    numbers = sorted({pair[column] for pair in _DENIED_SYSCALLS.values()})
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, JGE|K, BPF_RET|K
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    program = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, _AUDIT_ARCH[machine]),
        (ret, 0, 0, enosys),
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, 0, 1, 0x40000000),  # the x32 ABI's numbers
        (ret, 0, 0, enosys),
    ]
    for index, number in enumerate(numbers):
        program.append((jeq, len(numbers) - index, 0, number))  # to the final "deny"
    program += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
