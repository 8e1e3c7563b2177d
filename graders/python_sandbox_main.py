"""The python grader's two helper programs: the launcher that confines a sandbox, the runner in it.

Standard library only, and never imported by the service: graders.python_grader passes this file's
text to ``python -c`` twice. ``launch CONFIG`` runs on the host as the service's user: it makes the
interpreter's folders reachable (as root), drops to the sandbox user, sets the resource limits and
CPU affinity, and execs bubblewrap. ``run`` runs inside the sandbox: it reads one JSON document from
stdin, runs the user's source once and its ``grade(sample, item)`` per call, and writes one JSON
line per event to its result channel (the original stdout; the user's prints go to stderr).
"""

from __future__ import annotations

import builtins
import ctypes
import faulthandler
import json
import linecache
import math
import numbers
import os
import reprlib
import resource
import signal
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

FILENAME = "grader.py"  # the user's source, as tracebacks name it
KEEP_CHARS = 4000  # an error message keeps its last this many characters
REPEAT_ALARM_S = 0.5  # a timed-out call is interrupted again this often while it swallows them

# Linux mount(2) and unshare(2) flags.
_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000

_RLIMITS = {
    "AS": resource.RLIMIT_AS,
    "CPU": resource.RLIMIT_CPU,
    "FSIZE": resource.RLIMIT_FSIZE,
    "CORE": resource.RLIMIT_CORE,
    "NPROC": resource.RLIMIT_NPROC,
}


# ---- launcher (host side, before bubblewrap) ---------------------------------------------------


def launch(config: dict[str, Any]) -> None:
    """Confine this process, then become bubblewrap. Never returns."""
    uid, gid = config["uid"], config["gid"]
    if uid is not None:  # root: become the sandbox user, keeping the interpreter reachable
        _expose(list(config["expose"]), int(uid), int(gid))
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SystemExit("sandbox launcher: could not drop to the sandbox user")
    for name, value in config["rlimits"].items():
        if name == "NPROC":
            # RLIMIT_NPROC caps the tasks of this real uid on the whole machine, not those of this
            # sandbox: allow the ones it has now plus the sandbox's share. Approximate: others of
            # this uid that start or end meanwhile move the sandbox's share up or down.
            value = _tasks_of_uid(os.getuid()) + int(value)
        _set_limit(_RLIMITS[name], int(value))
    os.sched_setaffinity(0, [int(cpu) for cpu in config["cpus"]])
    bwrap = str(config["bwrap"])
    os.execv(bwrap, [bwrap, *config["args"]])


def _set_limit(which: int, value: int) -> None:
    """Soft and hard limit both at value (never above the hard limit this process already has)."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _tasks_of_uid(uid: int) -> int:
    """How many tasks (threads count: RLIMIT_NPROC counts them) this real uid runs now."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="utf-8") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue  # it ended meanwhile
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total


def _expose(paths: list[str], uid: int, gid: int) -> None:
    """In a private mount namespace, make each path reachable by uid/gid at its own path.

    Root's interpreter often lives where the sandbox user cannot pass (pyenv under /root, mode
    0700), and bubblewrap, run as that user, cannot bind what it cannot reach. So, in a mount
    namespace of this process alone (nothing leaks to the host): cover the first folder of each
    path that the user cannot pass with a small tmpfs, recreate the path in it and bind the real
    folder there. Everything else in that folder stays hidden.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    blocked = {path: _first_blocked(path, uid, gid) for path in paths}
    wanted = [path for path, cover in blocked.items() if cover is not None]
    # Opened before any tmpfs hides them; a path inside another one is reachable through it.
    wanted = [p for p in wanted if not any(_inside(p, other) for other in wanted if other != p)]
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in wanted}
    covered: set[str] = set()
    for path in sorted(wanted):
        cover = blocked[path]
        assert cover is not None
        if not any(_inside(cover, done) or cover == done for done in covered):
            options = b"mode=0755,size=1m"
            _check(
                libc.mount(b"tmpfs", cover.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options),
                f"tmpfs on {cover}",
            )
            covered.add(cover)
        os.makedirs(path, mode=0o755, exist_ok=True)
        source = f"/proc/self/fd/{handles[path]}".encode()
        _check(libc.mount(source, path.encode(), None, _MS_BIND | _MS_REC, None), f"bind {path}")
        os.close(handles[path])


def _first_blocked(path: str, uid: int, gid: int) -> str | None:
    """The outermost folder above path that uid/gid may not pass (search permission), if any."""
    parts = path.strip("/").split("/")
    for depth in range(len(parts)):
        folder = "/" + "/".join(parts[:depth])
        info = os.stat(folder)
        mode = info.st_mode
        if mode & stat.S_IXOTH:
            continue
        if info.st_uid == uid and mode & stat.S_IXUSR:
            continue
        if info.st_gid == gid and mode & stat.S_IXGRP:
            continue
        return folder
    return None


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"sandbox launcher: {what}: {os.strerror(errno)}")


# ---- runner (inside the sandbox) ---------------------------------------------------------------


class _Timeout(BaseException):
    """A grade() call ran past its time (BaseException: a user's `except Exception` lets it by)."""


class _BadReturn(Exception):
    """grade() returned something that is not a finite number."""


class _Channel:
    """The result channel: a private duplicate of the original stdout, one JSON document a line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.owner = os.getpid()

    def send(self, message: dict[str, Any]) -> None:
        if os.getpid() != self.owner:  # a process the user's code forked: never speaks for us
            os._exit(0)
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:
            os._exit(1)  # the service stopped listening


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT_ALARM_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


_REPR = reprlib.Repr()
_REPR.maxstring = 100
_REPR.maxother = 100


def _to_reward(value: object) -> float:
    """A finite float from grade()'s value: bool, int, float, numpy numbers (0-d arrays too)."""
    numeric = isinstance(value, numbers.Real)
    if not numeric and type(value).__module__ == "numpy":
        dtype = getattr(value, "dtype", None)
        numeric = getattr(value, "shape", None) == () and getattr(dtype, "kind", "") in "biuf"
    if not numeric:
        raise _BadReturn(f"grade() returned {_REPR.repr(value)}, not a number")
    try:
        reward = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        reward = math.nan
    if not math.isfinite(reward):
        raise _BadReturn(f"grade() returned {_REPR.repr(value)}, not a finite number")
    return reward


def _describe(error: BaseException) -> str:
    """The user's traceback (without the runner's frame), its last KEEP_CHARS characters."""
    if isinstance(error, _BadReturn):
        return str(error)
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next  # the runner's own frames
    try:
        lines = traceback.format_exception(type(error), error, tb or error.__traceback__)
        text = "".join(lines).rstrip()
    except Exception:  # a user's exception whose message itself fails
        text = f"{type(error).__name__} (its message could not be shown)"
    return text if len(text) <= KEEP_CHARS else "..." + text[-KEEP_CHARS:]


def _guarded(action: Callable[[], float], seconds: float) -> dict[str, Any]:
    """{"reward": ...} or {"error": ...}: action under a deadline, whatever it raises."""
    try:
        with _deadline(seconds):
            try:
                return {"reward": action()}
            except _Timeout:
                raise
            except BaseException as error:  # SystemExit and KeyboardInterrupt are users' too
                return {"error": _describe(error)}
    except _Timeout:
        return {"error": f"timed out after {seconds:g} s"}


def _load(source: str, seconds: float) -> tuple[Callable[..., object] | None, str | None]:
    """Run the source's top level once: (grade, None) or (None, the user's error)."""
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    namespace: dict[str, Any] = {"__name__": "grader", "__builtins__": builtins}

    def load() -> float:
        exec(compile(source, FILENAME, "exec", dont_inherit=True), namespace)
        return 0.0

    loaded = _guarded(load, seconds)
    if "error" in loaded:
        error = str(loaded["error"])
        if error.startswith("timed out"):
            error += " while running the source's top-level code"
        return None, error
    grade = namespace.get("grade")
    if not callable(grade):
        return None, "the source does not define a function grade(sample, item)"
    return grade, None


def run() -> None:
    """Grade every call of the JSON document on stdin; results on the original stdout. Exits."""
    request = json.loads(sys.stdin.buffer.read())
    channel = _Channel(os.dup(1))  # private: not inheritable, and a fork closes it (below)
    os.register_at_fork(after_in_child=lambda: os.close(channel.fd))
    os.dup2(2, 1)  # the user's prints (and anything writing to fd 1) go to stderr
    sys.stdout = sys.stderr
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    faulthandler.enable()  # a crash in C code leaves a Python traceback on stderr
    signal.signal(signal.SIGALRM, _on_alarm)
    seconds = float(request["timeout_s"])
    channel.send({"started": True})
    grade, error = _load(str(request["source"]), seconds)
    if grade is None:
        channel.send({"fatal": error})
        _exit(0)
    channel.send({"ready": True})
    for index, call in enumerate(request["calls"]):
        sample, item = call["sample"], call["item"]
        started = time.perf_counter()
        outcome = _guarded(lambda: _to_reward(grade(sample, item)), seconds)  # noqa: B023
        outcome.update(i=index, t=time.perf_counter() - started)
        channel.send(outcome)
    _exit(0)


def _exit(code: int) -> NoReturn:
    """Leave now: no waiting for threads the user started, no atexit hooks the user registered."""
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


def main(argv: list[str]) -> None:
    if argv[:1] == ["launch"] and len(argv) == 2:
        launch(json.loads(argv[1]))
    elif argv == ["run"]:
        run()
    else:
        raise SystemExit("usage: python_sandbox_main.py launch CONFIG_JSON | run")


if __name__ == "__main__":
    main(sys.argv[1:])
