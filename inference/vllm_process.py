"""One vLLM OpenAI server as a child process: its command, start, stop, and cleanup after a crash.

The child runs in its own process group (so its engine workers go with it), receives SIGTERM if
the API process dies, and is recorded in a pidfile so a later start can remove a stale group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from service.settings import BaseModelConfig, Settings
from service.supervisor import die_with_parent

log = logging.getLogger(__name__)
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# xgrammar, not llguidance: vLLM builds the grammar of tool calls (strict tools, tool_choice
# "required" or named, parallel_tool_calls false) as xgrammar structural tags, which its
# guidance backend cannot compile ("Invalid grammar specification: 'triggers'").
STRUCTURED_OUTPUTS = '{"backend": "xgrammar", "disable_any_whitespace": true}'


def _on_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


class VLLMProcess:
    """A managed vLLM server for one base model, bound to a free loopback port."""

    def __init__(self, model: BaseModelConfig, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        run_dir = settings.data_dir / "run"
        self.pidfile = run_dir / f"vllm-{model.name}.pid"
        self.chat_template_file = run_dir / f"vllm-{model.name}.chat-template.jinja"
        self.logfile = settings.data_dir / "logs" / f"vllm-{model.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def write_chat_template(self) -> None:
        """The ``chat_template`` setting as a file: vLLM would unescape a template given inline."""
        template = self.model.chat_template_text()
        if template is not None:
            self.chat_template_file.parent.mkdir(parents=True, exist_ok=True)
            self.chat_template_file.write_text(template)

    def command(self) -> list[str]:
        s, m = self.settings, self.model
        command = [
            sys.executable, "-m", VLLM_MODULE,
            "--model", m.path, "--served-model-name", m.name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", m.serve_dtype, "--max-model-len", str(s.vllm_max_model_len),
            "--enable-lora", "--max-loras", str(s.vllm_max_loras),
            "--max-lora-rank", str(s.vllm_max_lora_rank),
            "--max-cpu-loras", str(s.vllm_max_cpu_loras),
            # Compact JSON under a schema, as OpenAI's structured outputs: with whitespace free
            # between tokens a small model can spend max_tokens on it and never close the JSON.
            "--structured-outputs-config", STRUCTURED_OUTPUTS,
        ]  # fmt: skip
        if s.vllm_priority_scheduling:  # batch lines go after interactive requests
            command += ["--scheduling-policy", "priority"]
        if _on_gpu():
            command += ["--gpu-memory-utilization", str(s.vllm_gpu_memory_utilization)]
        if s.vllm_api_key:
            command += ["--api-key", s.vllm_api_key]
        if m.tool_call_parser:
            command += ["--enable-auto-tool-choice", "--tool-call-parser", m.tool_call_parser]
        if m.chat_template:
            command += ["--chat-template", str(self.chat_template_file)]
        return command

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": str(self.settings.vllm_kvcache_gib),
        }
        if not _on_gpu():
            env["VLLM_TARGET_DEVICE"] = "cpu"
        # The API processes' metric files are theirs; vLLM keeps its own multiprocess folder.
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def start(self) -> None:
        """Start the child; a restart keeps the first start's port, so its URL stays valid."""
        self.clean_stale()
        self.port = self.port or free_port()
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.write_chat_template()
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log_handle:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), stdout=log_handle,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        self.pidfile.write_text(str(self.process.pid))
        log.info("started vLLM for %s (pid %d, port %d)", self.model.name, self.pid, self.port)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.pidfile.unlink(missing_ok=True)

    def clean_stale(self) -> None:
        """Kill the process group a crashed earlier run left behind, if it is still vLLM."""
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and VLLM_MODULE.encode() in cmdline.read_bytes():
            log.warning("killing stale vLLM process group %d", pid)
            _signal_group(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
