"""How long a new user waits: `make run` on a fresh clone until README's quickstart has answered.

Clones this repository's committed HEAD into a scratch folder and runs `make run` there with a new
`OPENFT_CACHE_DIR`, so the clock covers what a first start does: the virtual environment's install,
the demo model's wheel download and conversion, vLLM's start, then README's quickstart block (the
job, `openft ask --compare`, `openft eval`), run by bash in the clone as written, with the printed
key in place of `sk-openft-...`. Prints when each stage ended, in seconds from `make run`.
pip's own download cache (`~/.cache/pip`) is used unless `--no-pip-cache` is given.
Run: `.venv/bin/python bench/fresh_clone_quickstart.py [--keep] [--no-pip-cache] [--port P]`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = re.compile(r"^(sk-openft-\S+)$", re.MULTILINE)
PLACEHOLDER_KEY = "sk-openft-..."


def quickstart_block(readme: str) -> str:
    """The ``sh`` block right after README's quickstart marker (as the quickstart test reads it)."""
    found = re.search(r"<!-- quickstart[^>]*-->\n```sh\n(.*?)\n```", readme, re.DOTALL)
    if not found:
        raise SystemExit("README has no <!-- quickstart --> sh block")
    return found.group(1)


class Clock:
    """Seconds since `make run`, printed as each stage ends."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.stages: list[str] = []

    def mark(self, stage: str) -> None:
        self.stages.append(stage)
        print(f"{time.monotonic() - self.start:7.0f} s  {stage}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone")
    parser.add_argument("--no-pip-cache", action="store_true", help="pip downloads every wheel")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="openft-fresh-clone-"))
    clone = scratch / "openft"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENFT_", "VIRTUAL_ENV"))}
    env["OPENFT_CACHE_DIR"] = str(scratch / "cache")
    if args.no_pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    log_path = scratch / "make-run.log"
    base = f"http://127.0.0.1:{args.port}"
    clock = Clock()
    with log_path.open("w") as log:
        server = subprocess.Popen(
            ["make", "run", f"PORT={args.port}"], cwd=clone, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        key = wait_until_served(server, clone, log_path, base, clock)
        user_env = {k: v for k, v in env.items() if not k.startswith("OPENFT_")}
        run_quickstart(clone, key, user_env | {"OPENFT_BASE_URL": base + "/v1"}, clock)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def wait_until_served(
    server: subprocess.Popen[bytes], clone: Path, log: Path, base: str, clock: Clock
) -> str:
    """The printed API key, once vLLM serves the demo model (the venv and model built first)."""
    installed = clone / ".venv" / ".installed-ml"
    key = None
    while key is None or not ready(base):
        if server.poll() is not None:
            raise SystemExit(f"make run exited {server.returncode}: see {log}")
        if installed.exists() and "venv installed" not in clock.stages:
            clock.mark("venv installed")
        if key is None and (found := KEY.search(log.read_text())):
            key = found.group(1)
            clock.mark("API up, key printed (the demo model is built next)")
        time.sleep(1)
    clock.mark("vLLM ready")
    return key


def run_quickstart(clone: Path, key: str, env: dict[str, str], clock: Clock) -> None:
    """README's quickstart block, line by line (to time each), as a user in the clone runs it."""
    script = quickstart_block((clone / "README.md").read_text()).replace(PLACEHOLDER_KEY, key)
    model = ""
    for line in script.splitlines():
        if not line.strip() or line.startswith("export "):
            continue
        sets_model = line.startswith("MODEL=")
        command = "\n".join([*exports(script), line, 'echo "$MODEL"' if sets_model else ""])
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command], cwd=clone,
            env=env | {"MODEL": model}, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{line}\n{done.stdout}\n{done.stderr}")
        if sets_model:
            model = done.stdout.strip().splitlines()[-1]
            clock.mark(f"quickstart job succeeded: {model}")
        else:
            clock.mark(line.split("#")[0].strip()[:72])
            print("         " + done.stdout.strip().replace("\n", "\n         "))


def ready(base: str) -> bool:
    try:
        models = httpx.get(base + "/readyz", timeout=5).json().get("models", {})
    except (httpx.HTTPError, ValueError):
        return False
    return bool(models) and all(state == "ready" for state in models.values())


def exports(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("export ")]


if __name__ == "__main__":
    main()
