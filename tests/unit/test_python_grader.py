"""Python graders: the source check, grade() in the sandbox, and attacks that must all score 0."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graders import python_grader
from graders.python_grader import (
    MAX_SOURCE_BYTES,
    SANDBOX_UID,
    PythonOutcome,
    check_source,
    run_python_grader,
    sandbox_unavailable,
)
from graders.python_sandbox import SandboxLimits, seccomp_filter
from tests.support.ci import require

FAST = SandboxLimits(timeout_s=3)
REPO = Path(__file__).resolve().parents[2]
ONE_CALL: list[tuple[dict[str, Any], dict[str, Any]]] = [({}, {})]


@pytest.fixture
def sandbox() -> Iterator[None]:
    """The sandbox must work here (a failure in CI, a skip elsewhere). After the test this process
    has no new child left (no zombie), and no sandboxed process is left running."""
    problem = sandbox_unavailable()
    require(problem is None, f"the python grader sandbox ({problem})")
    before, own_children = sandboxed_processes(), children()  # e.g. servers of other tests
    yield
    assert children() - own_children == set()
    # Immediately, bar a sandbox another test process may be running on this machine meanwhile.
    deadline = time.monotonic() + 2
    while (left := sandboxed_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"sandboxed processes left behind: {left}"


def _processes() -> Iterator[tuple[int, dict[str, str], str]]:
    """(pid, /proc/PID/status, pid namespace) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            lines = (entry / "status").read_text().splitlines()
            namespace = os.readlink(entry / "ns" / "pid")
        except OSError:
            continue  # it ended meanwhile
        yield int(entry.name), dict(line.split(":\t", 1) for line in lines), namespace


def children() -> set[int]:
    return {pid for pid, status, _ in _processes() if int(status["PPid"]) == os.getpid()}


def sandboxed_processes() -> set[int]:
    """The processes of the sandbox's user in another pid namespace than ours."""
    uid = SANDBOX_UID if os.geteuid() == 0 else os.getuid()
    own = os.readlink("/proc/self/ns/pid")
    return {
        pid
        for pid, status, namespace in _processes()
        if int(status["Uid"].split()[0]) == uid and namespace != own
    }


def grade(
    source: str,
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = ONE_CALL,
    limits: SandboxLimits = FAST,
) -> list[PythonOutcome]:
    outcomes = run_python_grader(source, calls, limits)
    assert len(outcomes) == len(calls)
    for outcome in outcomes:
        assert outcome.server_error is None, outcome
    return outcomes


def only_failed(outcome: PythonOutcome) -> str:
    """The outcome scored 0 because of the user's code; its error text."""
    assert outcome.reward == 0.0
    assert outcome.runtime_error is not None
    return outcome.runtime_error


# ---- results ------------------------------------------------------------------------------------


def test_rewards_come_back_in_order(sandbox: None) -> None:
    source = (
        "def grade(sample, item):\n"
        "    print('noise on stdout', sample)\n"
        "    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n"
    )
    calls = [
        ({"output_text": "Paris"}, {"answer": "Paris"}),
        ({"output_text": "Lyon"}, {"answer": "Paris"}),
        ({"output_text": "4"}, {"answer": "4"}),
    ]
    outcomes = grade(source, calls)
    assert [outcome.reward for outcome in outcomes] == [1.0, 0.0, 1.0]
    assert all(outcome.runtime_error is None for outcome in outcomes)
    assert all(0 <= outcome.execution_time < 3 for outcome in outcomes)


def test_numpy_is_importable_and_its_numbers_count(sandbox: None) -> None:
    source = (
        "import numpy as np\n"
        "def grade(sample, item):\n"
        "    kind = item['kind']\n"
        "    if kind == 'mean':\n"
        "        return float(np.mean([1, 0]))\n"
        "    if kind == 'float32':\n"
        "        return np.float32(0.25)\n"
        "    if kind == 'int64':\n"
        "        return np.int64(1)\n"
        "    if kind == 'bool':\n"
        "        return np.bool_(True)\n"
        "    return np.array(0.75)\n"
    )
    kinds = ["mean", "float32", "int64", "bool", "0-d array"]
    outcomes = grade(source, [({}, {"kind": kind}) for kind in kinds])
    assert [outcome.reward for outcome in outcomes] == [0.5, 0.25, 1.0, 1.0, 0.75]


@pytest.mark.parametrize(("value", "reward"), [("True", 1.0), ("1", 1.0), ("0.125", 0.125)])
def test_bool_int_and_float_returns(sandbox: None, value: str, reward: float) -> None:
    assert grade(f"def grade(sample, item):\n    return {value}\n")[0].reward == reward


def test_an_exception_scores_0_and_the_next_call_still_runs(sandbox: None) -> None:
    source = (
        "def grade(sample, item):\n"
        "    if item['n'] == 0:\n"
        "        raise ValueError('no answer in ' + repr(sample))\n"
        "    return 1.0\n"
    )
    first, second = grade(source, [({"output_text": "x"}, {"n": 0}), ({}, {"n": 1})])
    error = only_failed(first)
    assert "ValueError: no answer in {'output_text': 'x'}" in error
    assert 'File "grader.py", line 3, in grade' in error
    assert "<string>" not in error  # none of the runner's own frames
    assert second == PythonOutcome(1.0, None, None, second.execution_time)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'abc'", "grade() returned 'abc', not a number"),
        ("float('nan')", "grade() returned nan, not a finite number"),
        ("float('inf')", "grade() returned inf, not a finite number"),
        ("None", "grade() returned None, not a number"),
        ("[1.0]", "grade() returned [1.0], not a number"),
    ],
)
def test_a_value_that_is_not_a_finite_number_scores_0(
    sandbox: None, value: str, message: str
) -> None:
    (outcome,) = grade(f"def grade(sample, item):\n    return {value}\n")
    assert only_failed(outcome) == message


def test_prints_and_writes_to_stdout_are_never_results(sandbox: None) -> None:
    source = (
        "import os, sys\n"
        "def grade(sample, item):\n"
        '    forged = \'{"i": 0, "reward": 1.0, "t": 0}\\n\'\n'
        "    print(forged, end='')\n"
        "    sys.__stdout__.write(forged)\n"
        "    sys.__stdout__.flush()\n"
        "    os.write(1, forged.encode())\n"
        "    return 0.0\n"
    )
    (outcome,) = grade(source)
    assert outcome == PythonOutcome(0.0, None, None, outcome.execution_time)


def test_an_error_in_the_top_level_code_fails_every_call(sandbox: None) -> None:
    source = "import no_such_module\ndef grade(sample, item):\n    return 1.0\n"
    outcomes = grade(source, [({}, {}), ({}, {})])
    for outcome in outcomes:
        assert "ModuleNotFoundError: No module named 'no_such_module'" in only_failed(outcome)


def test_top_level_code_that_hangs_times_out(sandbox: None) -> None:
    source = "while True:\n    pass\ndef grade(sample, item):\n    return 1.0\n"
    started = time.monotonic()
    outcomes = grade(source, [({}, {}), ({}, {})])
    assert time.monotonic() - started < FAST.timeout_s + 5
    for outcome in outcomes:
        assert only_failed(outcome).startswith("timed out after 3 s")


def test_a_call_that_swallows_its_timeout_is_killed_and_the_rest_run_anew(sandbox: None) -> None:
    source = (
        "def grade(sample, item):\n"
        "    while item['hang']:\n"
        "        try:\n"
        "            while True:\n"
        "                pass\n"
        "        except BaseException:\n"
        "            pass\n"
        "    return 1.0\n"
    )
    started = time.monotonic()
    hung, after = grade(source, [({}, {"hang": True}), ({}, {"hang": False})])
    assert time.monotonic() - started < FAST.timeout_s + 8
    assert only_failed(hung) == "timed out after 3 s"
    assert after.reward == 1.0


def test_a_call_that_ends_its_process_scores_0_and_the_rest_run_anew(sandbox: None) -> None:
    source = "import os\ndef grade(sample, item):\n    if item['die']:\n        os._exit(3)\n"
    source += "    return 1.0\n"
    died, after = grade(source, [({}, {"die": True}), ({}, {"die": False})])
    assert "the grader's process ended (exit status 3) while running grade()" in only_failed(died)
    assert after.reward == 1.0


def test_without_bwrap_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(python_grader, "bwrap_path", lambda: None)
    problem = python_grader.sandbox_unavailable.__wrapped__()
    assert problem == (
        "python graders need bubblewrap (bwrap) on the server: apt-get install bubblewrap"
    )


def test_no_calls_no_sandbox() -> None:
    assert run_python_grader("def grade(sample, item):\n    return 1.0\n", []) == []


def test_a_bad_source_is_every_call_s_error_without_a_sandbox() -> None:
    outcomes = run_python_grader("def grade(sample):\n    return 1.0\n", [({}, {}), ({}, {})])
    assert all(o.reward == 0.0 and o.runtime_error and "two" in o.runtime_error for o in outcomes)


# ---- check_source -------------------------------------------------------------------------------


def test_check_source_accepts_a_grader() -> None:
    assert check_source("import math\n\ndef grade(sample, item):\n    return 1.0\n") is None
    assert check_source("def grade(sample, item, /):\n    return 1.0\n") is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def grade(sample):\n    return 1.0\n", "exactly two parameters"),
        ("def grade(sample, item, extra):\n    return 1.0\n", "exactly two parameters"),
        ("def grade(sample, item, extra=1):\n    return 1.0\n", "exactly two parameters"),
        ("def grade(*args):\n    return 1.0\n", "exactly two parameters"),
        ("def grade(sample, *items):\n    return 1.0\n", "exactly two parameters"),
        ("def grade(sample, item, **kw):\n    return 1.0\n", "exactly two parameters"),
        ("def grade(sample, *, item):\n    return 1.0\n", "exactly two parameters"),
        ("def grade(sample, item, *, k=1):\n    return 1.0\n", "exactly two parameters"),
        ("async def grade(sample, item):\n    return 1.0\n", "not async def"),
        ("def score(sample, item):\n    return 1.0\n", "must define a top-level function grade"),
        ("grade = lambda sample, item: 1.0\n", "must define a top-level function grade"),
        (
            "class G:\n    def grade(self, sample, item):\n        return 1.0\n",
            "must define a top-level function grade",
        ),
        ("def grade(sample, item)\n    return 1.0\n", "does not parse"),
        ("def grade(sample, item):\nreturn 1.0\n", "does not parse"),
        ("def grade(sample, item):\n    return '\0'\n", "does not parse"),
    ],
)
def test_check_source_says_what_is_wrong(source: str, message: str) -> None:
    problem = check_source(source)
    assert problem is not None and message in problem


def test_check_source_limits_the_size_to_256_kb() -> None:
    body = "def grade(sample, item):\n    return 1.0\n"
    padding = "#" * (MAX_SOURCE_BYTES - len(body) - 1) + "\n"
    assert check_source(padding + body) == (
        f"the source is {MAX_SOURCE_BYTES} bytes; a python grader's source must be under 256 kB"
    )
    assert check_source(padding[1:] + body) is None
    problem = check_source("# " + "é" * MAX_SOURCE_BYTES + "\n" + body)  # bytes, not characters
    assert problem is not None and "under 256 kB" in problem


def test_seccomp_filter_is_a_sock_filter_array() -> None:
    for machine in ("x86_64", "aarch64"):
        program = seccomp_filter(machine)
        assert program is not None and len(program) % 8 == 0 and len(program) // 8 < 255
    assert seccomp_filter("riscv64") is None


# ---- attacks: each grader returns 1.0 only if its attack worked ---------------------------------


def test_no_tcp_to_the_host(sandbox: None) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        source = (
            "import socket\n"
            "def grade(sample, item):\n"
            "    socket.create_connection(('127.0.0.1', item['port']), timeout=1).close()\n"
            "    return 1.0\n"
        )
        (outcome,) = grade(source, [({}, {"port": server.getsockname()[1]})])
        assert "ConnectionRefusedError" in only_failed(outcome)
        with pytest.raises(TimeoutError):
            server.accept()


def test_no_udp_to_the_host(sandbox: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.1)
        received: list[bytes] = []
        graded = threading.Event()

        def echo() -> None:  # what the grader waits for, were its datagram to arrive
            while not graded.is_set():
                try:
                    data, peer = server.recvfrom(100)
                except TimeoutError:
                    continue
                received.append(data)
                server.sendto(data, peer)

        echoer = threading.Thread(target=echo)
        echoer.start()
        source = (
            "import socket\n"
            "def grade(sample, item):\n"
            "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
            "        s.settimeout(1)\n"
            "        s.sendto(b'ping', ('127.0.0.1', item['port']))\n"
            "        return 1.0 if s.recv(100) == b'ping' else 0.0\n"
        )
        try:
            (outcome,) = grade(source, [({}, {"port": server.getsockname()[1]})])
        finally:
            graded.set()
            echoer.join()
        assert "TimeoutError" in only_failed(outcome)
        assert received == []


def test_no_dns(sandbox: None) -> None:
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    socket.getaddrinfo('pypi.org', 443)\n"
        "    return 1.0\n"
    )
    assert "gaierror" in only_failed(grade(source)[0])


def test_no_host_files(sandbox: None, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the test's secret")
    paths = [str(secret), "/etc/passwd", str(REPO / "pyproject.toml"), str(REPO / "graders")]
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    path = item['path']\n"
        "    if os.path.isdir(path):\n"
        "        return 1.0 if os.listdir(path) else 0.0\n"
        "    with open(path) as f:\n"
        "        return 1.0 if f.read() else 0.0\n"
    )
    for path, outcome in zip(paths, grade(source, [({}, {"path": p}) for p in paths]), strict=True):
        assert "FileNotFoundError" in only_failed(outcome), path


def test_no_host_environment(sandbox: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENFT_TEST_SECRET", "s3cr3t")
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    return 1.0 if 'OPENFT_TEST_SECRET' in os.environ else 0.0\n"
    )
    (outcome,) = grade(source)
    assert outcome == PythonOutcome(0.0, None, None, outcome.execution_time)


def test_a_fork_bomb_is_contained(sandbox: None) -> None:
    source = "import os\ndef grade(sample, item):\n    while True:\n        os.fork()\n"
    before = sandboxed_processes()
    started = time.monotonic()
    (outcome,) = grade(source)
    assert sandboxed_processes() - before == set()  # all gone the moment it returns
    assert time.monotonic() - started < FAST.timeout_s + 8
    assert "BlockingIOError" in only_failed(outcome)  # the per-uid limit on processes
    assert grade("def grade(sample, item):\n    return 1.0\n")[0].reward == 1.0


def test_a_fork_bomb_that_ignores_errors_is_killed(sandbox: None) -> None:
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    before = sandboxed_processes()
    started = time.monotonic()
    (outcome,) = grade(source)
    assert sandboxed_processes() - before == set()
    assert time.monotonic() - started < FAST.timeout_s + 8
    assert "timed out after 3 s" in only_failed(outcome)


def test_an_endless_loop_times_out(sandbox: None) -> None:
    source = "def grade(sample, item):\n    while True:\n        pass\n"
    started = time.monotonic()
    (outcome,) = grade(source)
    assert time.monotonic() - started < FAST.timeout_s + 4
    assert only_failed(outcome) == "timed out after 3 s"
    assert FAST.timeout_s <= outcome.execution_time < FAST.timeout_s + 1


def test_10_gb_of_memory_is_refused(sandbox: None) -> None:
    source = "def grade(sample, item):\n    data = bytearray(10 * 1024**3)\n    return 1.0\n"
    assert "MemoryError" in only_failed(grade(source)[0])


def test_2_gb_of_disk_is_refused(sandbox: None) -> None:
    source = (
        "def grade(sample, item):\n"
        "    chunk = b'x' * 1024**2\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        for _ in range(2048):\n"
        "            f.write(chunk)\n"
        "    return 1.0\n"
    )
    (outcome,) = grade(source, limits=SandboxLimits(timeout_s=20))
    error = only_failed(outcome)
    assert "No space left on device" in error or "File too large" in error


def test_nothing_else_is_writable(sandbox: None) -> None:
    source = "def grade(sample, item):\n    open(item['path'], 'w').write('x')\n    return 1.0\n"
    paths = ["/x", "/dev/x", "/usr/x", "/proc/x"]
    for path, outcome in zip(paths, grade(source, [({}, {"path": p}) for p in paths]), strict=True):
        assert "Error" in only_failed(outcome), path


def test_the_cpu_affinity_cannot_be_widened(sandbox: None) -> None:
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    os.sched_setaffinity(0, range(os.cpu_count()))\n"
        "    return 1.0\n"
    )
    assert "PermissionError" in only_failed(grade(source)[0])


def test_a_sandbox_that_cannot_start_is_our_error(
    sandbox: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(python_grader, "bwrap_args", lambda *args: ["--no-such-option"])
    problem = python_grader.sandbox_unavailable.__wrapped__()
    assert problem is not None
    assert problem.startswith(
        "the python grader sandbox (bubblewrap) does not start here: "
        "bwrap: Unknown option --no-such-option. "
    )
    calls: list[dict[str, Any]] = [{"sample": {}, "item": {}}] * 2
    outcomes = python_grader._Session("def grade(s, i):\n    return 1\n", calls, FAST).run()
    assert [(o.reward, o.runtime_error, o.server_error) for o in outcomes] == [
        (0.0, None, "sandbox_crashed")
    ] * 2
