"""Python graders: checks a grader's source and runs its grade() in a bubblewrap sandbox process."""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import logging
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graders.python_sandbox import (
    SandboxLimits,
    bwrap_args,
    bwrap_path,
    pick_cpus,
    python_roots,
    roots_problem,
    runner_text,
    seccomp_filter,
)

logger = logging.getLogger(__name__)

MAX_SOURCE_BYTES = 256 * 1024  # OpenAI: the source must be under 256 kB
SANDBOX_UID = SANDBOX_GID = 65534  # nobody/nogroup: who runs the sandbox when the service is root
STARTUP_S = 15.0  # bubblewrap and Python start (on a busy machine) before the source runs
CALL_GRACE_S = 2.0  # the runner reports a timeout itself; this long later the service kills it
KEEP_BYTES = 4096  # the stderr kept for diagnostics

_PROBE_SOURCE = "def grade(sample, item):\n    return 1.0\n"


@dataclass(frozen=True)
class PythonOutcome:
    reward: float  # 0.0 on any error
    # The user's failure: traceback text, "timed out after N s", "grade() returned 'abc', not a
    # number".
    runtime_error: str | None
    # Our failure (the sandbox could not start, crashed): a short type such as
    # "sandbox_unavailable" or "sandbox_crashed".
    server_error: str | None
    execution_time: float  # seconds spent on this call


def check_source(source: str) -> str | None:
    """A user-facing error message when the source cannot be a python grader, else None.

    Static: the source is parsed, never run. It must be under 256 kB and define a top-level
    ``def grade(sample, item)`` taking exactly two positional parameters.
    """
    try:
        size = len(source.encode("utf-8"))
    except UnicodeEncodeError:
        return "the source is not valid UTF-8 text"
    if size >= MAX_SOURCE_BYTES:
        return f"the source is {size} bytes; a python grader's source must be under 256 kB"
    try:
        tree = ast.parse(source, filename="grader.py")
    except SyntaxError as error:
        return f"the source does not parse: {error.msg} (line {error.lineno})"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"the source does not parse: {error}"
    defs = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "grade"
    ]
    if not defs:
        return "the source must define a top-level function grade(sample, item)"
    grade = defs[-1]  # the last definition is the one that counts
    if isinstance(grade, ast.AsyncFunctionDef):
        return "grade must be a plain function (def), not async def"
    arguments = grade.args
    positional = len(arguments.posonlyargs) + len(arguments.args)
    if (
        positional != 2
        or arguments.vararg is not None
        or arguments.kwarg is not None
        or arguments.kwonlyargs
    ):
        return (
            f"grade must take exactly two parameters, grade(sample, item); it takes "
            f"({ast.unparse(arguments)})"
        )
    return None


@functools.cache
def sandbox_unavailable() -> str | None:
    """None when python graders can run here, else a sentence saying what is missing.

    Probed once per process: a real sandbox runs a trivial grader.
    """
    if not sys.platform.startswith("linux"):
        return "python graders need Linux: they run in a bubblewrap sandbox"
    if bwrap_path() is None:
        return "python graders need bubblewrap (bwrap) on the server: apt-get install bubblewrap"
    problem = roots_problem()
    if problem is not None:
        return problem
    session = _Session(_PROBE_SOURCE, [{"sample": {}, "item": {}}], SandboxLimits(timeout_s=10))
    outcome = session.run()[0]
    if outcome.reward == 1.0:
        return None
    output = session.diagnostic().strip() or outcome.runtime_error or outcome.server_error
    detail = (output or "").strip().splitlines()[-1:] or ["no output"]
    return (
        f"the python grader sandbox (bubblewrap) does not start here: {detail[0]}. bubblewrap "
        "needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; in a "
        "container, a seccomp/AppArmor profile that allows them and an unmasked /proc)"
    )


def run_python_grader(
    source: str,
    calls: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    limits: SandboxLimits = SandboxLimits(),
) -> list[PythonOutcome]:
    """One outcome per (sample, item), in order, from grade(sample, item) run in a sandbox.

    One sandbox process runs the whole batch. A call that hangs past its timeout (or kills its
    process) gets its error and the calls after it continue in a fresh sandbox.
    """
    if not calls:
        return []
    problem = check_source(source)
    if problem is not None:
        return [PythonOutcome(0.0, problem, None, 0.0) for _ in calls]
    unavailable = sandbox_unavailable()
    if unavailable is not None:
        _warn_once(unavailable)
        return [PythonOutcome(0.0, None, "sandbox_unavailable", 0.0) for _ in calls]
    requests = [{"sample": sample, "item": item} for sample, item in calls]
    outcomes: list[PythonOutcome] = []
    while len(outcomes) < len(requests):
        outcomes += _Session(source, requests[len(outcomes) :], limits).run()
    return outcomes


@functools.cache
def _warn_once(problem: str) -> None:
    logger.warning("python graders cannot run: %s", problem)


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a python grader's sample or item holds {type(value).__name__}, not JSON")


class _Session:
    """One sandbox process grading a list of calls; run() answers a prefix of them (at least one).

    It stops early when a call times out or its process dies: that call gets its error, and the
    caller starts a fresh session for the rest.
    """

    def __init__(self, source: str, calls: list[dict[str, Any]], limits: SandboxLimits) -> None:
        self.calls, self.limits = calls, limits
        payload = {"source": source, "calls": calls, "timeout_s": limits.timeout_s}
        self.stdin = memoryview(json.dumps(payload, default=_json_default).encode())
        self.outcomes: list[PythonOutcome] = []
        self.phase = "starting"  # then "loading" (the source's top level), "grading", "done"
        self.results = bytearray()
        self.stderr = bytearray()
        self.info = bytearray()
        self.inner: int | None = None  # a pidfd of the sandbox's pid 1
        self.proc: subprocess.Popen[bytes] | None = None
        self.hung = False  # it must be killed, not waited for
        self.info_fd: int | None = None  # bubblewrap's --info-fd: the sandbox's pid 1
        self.since = time.monotonic()  # when the current phase or call began
        self.deadline = self.since + STARTUP_S

    # -- lifecycle

    def run(self) -> list[PythonOutcome]:
        try:
            try:
                self._spawn()
            except OSError as error:
                logger.warning("python grader sandbox did not start: %s", error)
                return self._fill(server_error="sandbox_unavailable")
            self._loop()
        finally:
            self._stop()
        if not self.outcomes:  # never: every ending answers at least one call
            self._fill(server_error="sandbox_crashed")
        return self.outcomes

    def diagnostic(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def _spawn(self) -> None:
        bwrap = bwrap_path()
        if bwrap is None:
            raise OSError("bwrap is not installed")
        passed: list[int] = []  # the sandbox's ends of our pipes: closed here once it has them
        try:
            self.info_fd, info_write = os.pipe()
            passed.append(info_write)
            seccomp = seccomp_filter()
            seccomp_read = None
            if seccomp is not None:
                seccomp_read, seccomp_write = os.pipe()
                passed.append(seccomp_read)
                try:
                    os.write(seccomp_write, seccomp)  # far below a pipe's buffer
                finally:
                    os.close(seccomp_write)
            command = self._command(bwrap, info_write, seccomp_read)
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=passed,
                start_new_session=True,
                cwd="/",
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        finally:
            for fd in passed:
                os.close(fd)
        self.since = time.monotonic()
        self.deadline = self.since + STARTUP_S

    def _command(self, bwrap: str, info_fd: int, seccomp_fd: int | None) -> list[str]:
        """The launcher's command line: it confines itself as configured, then execs bwrap.

        No preexec_fn (unsafe in a threaded service): a fresh single-threaded Python sets the
        limits, drops the user and execs bubblewrap.
        """
        budget = STARTUP_S + (len(self.calls) + 1) * (self.limits.timeout_s + CALL_GRACE_S)
        root = os.geteuid() == 0
        config = {
            "bwrap": bwrap,
            "args": bwrap_args(self.limits, info_fd, seccomp_fd),
            # RLIMIT_NPROC counts per real uid and root is exempt: as root the sandbox runs as
            # nobody, with the interpreter's folders made reachable for it (the launcher).
            "uid": SANDBOX_UID if root else None,
            "gid": SANDBOX_GID if root else None,
            "expose": python_roots(),
            "rlimits": {
                "AS": self.limits.memory_bytes,
                # CPU seconds: a backstop above what the wall-clock deadlines allow.
                "CPU": math.ceil(budget * self.limits.cpu_cores) + 1,
                "FSIZE": self.limits.disk_bytes,
                "CORE": 0,
                "NPROC": self.limits.max_processes,  # on top of what the uid runs already
            },
            "cpus": pick_cpus(self.limits.cpu_cores),
        }
        return [sys.executable, "-I", "-S", "-c", runner_text(), "launch", json.dumps(config)]

    def _loop(self) -> None:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout and self.proc.stderr
        assert self.info_fd is not None
        with selectors.DefaultSelector() as selector:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                os.set_blocking(stream.fileno(), False)
            selector.register(self.proc.stdin, selectors.EVENT_WRITE, self._write_stdin)
            selector.register(self.proc.stdout, selectors.EVENT_READ, self._read_results)
            selector.register(self.proc.stderr, selectors.EVENT_READ, self._read_stderr)
            selector.register(self.info_fd, selectors.EVENT_READ, self._read_info)
            while self.phase != "done":
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self._time_out()
                    return
                for key, _ in selector.select(left):
                    if not key.data(key.fileobj):
                        selector.unregister(key.fileobj)
                        if key.fileobj is self.proc.stdin:
                            self.proc.stdin.close()  # all written (or the reader is gone)
                if not any(k.data == self._read_results for k in selector.get_map().values()):
                    self._died()
                    return

    def _stop(self) -> None:
        """Make sure nothing of the sandbox runs on, and reap it (no zombies)."""
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(timeout=0 if self.hung else 2)  # the runner exits after its last answer
            except subprocess.TimeoutExpired:
                self._kill()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.inner is not None:
            os.close(self.inner)
            self.inner = None
        if self.info_fd is not None:
            os.close(self.info_fd)
            self.info_fd = None

    def _kill(self) -> None:
        """SIGKILL the sandbox's pid 1, which takes every process of its namespace with it; its
        bubblewrap parent then exits too. The whole process group as a fallback."""
        assert self.proc is not None
        if self.inner is not None:
            try:
                signal.pidfd_send_signal(self.inner, signal.SIGKILL)
                self.proc.wait(timeout=5)
                return
            except (OSError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    # -- events (each returns False when its stream is finished)

    def _write_stdin(self, stream: Any) -> bool:
        try:
            written = os.write(stream.fileno(), self.stdin[:65536])
        except BlockingIOError:
            return True
        except OSError:  # the sandbox ended before reading everything
            return False
        self.stdin = self.stdin[written:]
        return bool(self.stdin)

    def _read_stderr(self, stream: Any) -> bool:
        chunk = self._read(stream.fileno())
        if chunk is None:
            return True
        self.stderr += chunk
        del self.stderr[:-KEEP_BYTES]
        return bool(chunk)

    def _read_info(self, fd: Any) -> bool:
        chunk = self._read(int(fd))
        if chunk is None:
            return True
        self.info += chunk
        try:
            info = json.loads(self.info)
        except ValueError:
            return bool(chunk)  # not all of it yet
        self._watch(int(info["child-pid"]))
        return False

    def _watch(self, pid: int) -> None:
        """A pidfd of the sandbox's pid 1 (a child of our bubblewrap: no pid reuse can fool it)."""
        assert self.proc is not None
        try:
            pidfd = os.pidfd_open(pid)
            with open(f"/proc/{pid}/stat", encoding="utf-8") as stat_file:
                parent = int(stat_file.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return  # it is gone already
        if parent == self.proc.pid:
            self.inner = pidfd
        else:
            os.close(pidfd)

    def _read_results(self, stream: Any) -> bool:
        chunk = self._read(stream.fileno())
        if chunk is None:
            return True
        self.results += chunk
        *lines, rest = self.results.split(b"\n")
        self.results = bytearray(rest[-(1 << 20) :])  # no endless line without a newline
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self._on_message(message)
        return bool(chunk)

    @staticmethod
    def _read(fd: int) -> bytes | None:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _on_message(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.phase == "starting" and message.get("started") is True:
            self._next_phase("loading", now)
        elif self.phase == "loading" and "fatal" in message:
            self._fill(runtime_error=str(message["fatal"]))
        elif self.phase == "loading" and message.get("ready") is True:
            self._next_phase("grading", now)
        elif self.phase == "grading" and message.get("i") == len(self.outcomes):
            error = message.get("error")
            reward = message.get("reward")
            seconds = float(message.get("t", now - self.since))
            if error is None and isinstance(reward, int | float) and math.isfinite(reward):
                self.outcomes.append(PythonOutcome(float(reward), None, None, seconds))
            else:
                self.outcomes.append(PythonOutcome(0.0, str(error), None, seconds))
            self._next_phase("done" if len(self.outcomes) == len(self.calls) else "grading", now)

    def _next_phase(self, phase: str, now: float) -> None:
        self.phase, self.since = phase, now
        self.deadline = now + self.limits.timeout_s + CALL_GRACE_S

    # -- endings

    def _fill(
        self, runtime_error: str | None = None, server_error: str | None = None
    ) -> list[PythonOutcome]:
        """Every call not answered yet gets this error."""
        seconds = time.monotonic() - self.since
        missing = len(self.calls) - len(self.outcomes)
        self.outcomes += [PythonOutcome(0.0, runtime_error, server_error, seconds)] * missing
        self.phase = "done"
        return self.outcomes

    def _time_out(self) -> None:
        self.hung = True
        timeout = f"timed out after {self.limits.timeout_s:g} s"
        if self.phase == "starting":
            logger.warning("python grader sandbox did not start in %g s", STARTUP_S)
            self._fill(server_error="sandbox_crashed")
        elif self.phase == "loading":
            self._fill(runtime_error=timeout + " while running the source's top-level code")
        else:  # this call hung past its timeout (and past the runner's own alarm)
            seconds = time.monotonic() - self.since
            self.outcomes.append(PythonOutcome(0.0, timeout, None, seconds))
            self.phase = "done"

    def _died(self) -> None:
        """The result channel closed before every call was answered."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self.proc.returncode
        how = f"killed by signal {code - 128}" if code > 128 else f"exit status {code}"
        stderr = self.diagnostic().strip()
        if self.phase == "starting":  # before any of the user's code: ours
            logger.warning("python grader sandbox crashed (%s): %s", how, stderr[-1000:])
            self._fill(server_error="sandbox_crashed")
            return
        where = "grade()" if self.phase == "grading" else "the source's top-level code"
        error = f"the grader's process ended ({how}) while running {where}"
        if stderr:
            error += ":\n" + stderr[-1000:]
        if self.phase == "loading":
            self._fill(runtime_error=error)
        else:
            seconds = time.monotonic() - self.since
            self.outcomes.append(PythonOutcome(0.0, error, None, seconds))
            self.phase = "done"
