"""Upload throughput of a large JSONL file, against copying the same file on the same disk.

Starts `openft serve --workers 0 --no-vllm` in a scratch folder (local blob store on the same disk),
writes a fine-tune JSONL file of the given size, and times: the baseline `shutil.copyfile` of that
file next to it; `files.create` with the openai SDK (one streamed multipart request, checked line by
line as it arrives); and `uploads.upload_file_chunked` (64 MiB parts, then `complete` joins them).
For each upload it reports MB/s, the ratio to the copy, and the server's peak RSS growth
(VmHWM after, minus VmRSS before, with the high-water mark reset in between).
Run: `.venv/bin/python bench/upload.py [--mb 500]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from openai import OpenAI
from results import write_result
from serving import start_openft

from service.blobstore import LocalBlobStore
from service.files.upload import MultipartUpload, UploadLimits

MIB = 1024 * 1024


def write_jsonl(path: Path, megabytes: int) -> int:
    line = (
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You answer questions about the harbour."},
                    {"role": "user", "content": "When does the ferry leave? " * 4},
                    {"role": "assistant", "content": "It leaves at nine, weather permitting. " * 6},
                ]
            }
        ).encode()
        + b"\n"
    )
    block = line * (MIB // len(line))
    with path.open("wb") as out:
        written = 0
        while written < megabytes * 1_000_000:
            out.write(block)
            written += len(block)
    return written


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measured(pid: int, action: Callable[[], object]) -> tuple[float, float]:
    """Seconds the action took and the server's peak RSS growth in MiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = rss_kib(pid, "VmRSS")
    start_time = time.perf_counter()
    action()
    seconds = time.perf_counter() - start_time
    return seconds, (rss_kib(pid, "VmHWM") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openft-upload-bench-") as scratch:
        workdir = Path(scratch)
        source = workdir / "train.jsonl"
        size = write_jsonl(source, args.mb)
        server, base, key = start_openft(
            workdir,
            "--workers",
            "0",
            "--no-vllm",
            "--log-level",
            "warning",
            wait_for_models=False,
            timeout_s=120,
        )
        try:
            client = OpenAI(base_url=base + "/v1", api_key=key, timeout=1800, max_retries=0)
            copy_s = min(
                timed_copy(source, workdir / f"copy-{i}.jsonl") for i in range(2)
            )  # the better of two, like the uploads get a warm page cache
            results = {
                "files.create": measured(
                    server.pid, lambda: client.files.create(file=source, purpose="fine-tune")
                ),
                "uploads (64 MiB parts)": measured(
                    server.pid,
                    lambda: client.uploads.upload_file_chunked(
                        file=source, mime_type="text/jsonl", purpose="fine-tune", part_size=64 * MIB
                    ),
                ),
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
        breakdown = server_breakdown(source, workdir)
    megabytes = size / 1e6
    print(f"file: {megabytes:.0f} MB of chat JSONL; local blob store on the same disk")
    print(f"{'copy (baseline)':24s} {copy_s:6.2f} s {megabytes / copy_s:8.1f} MB/s")
    for name, (seconds, growth) in results.items():
        rate = megabytes / seconds
        print(
            f"{name:24s} {seconds:6.2f} s {rate:8.1f} MB/s  {copy_s / seconds:5.2f}x of the copy  "
            f"server peak RSS +{growth:.0f} MiB"
        )
    print("where files.create's server time goes (same bytes, in process, no HTTP):")
    for name, seconds in breakdown.items():
        print(f"  {name:26s} {seconds:6.2f} s {megabytes / seconds:8.1f} MB/s")
    write_result(
        "upload",
        {
            "megabytes": round(megabytes),
            "copy_mb_per_s": round(megabytes / copy_s, 1),
            "paths": {
                name: {"mb_per_s": round(megabytes / s, 1), "vs_copy": round(copy_s / s, 3),
                       "peak_rss_growth_mib": round(growth)}
                for name, (s, growth) in results.items()
            },
            "server_stages_mb_per_s": {n: round(megabytes / s, 1) for n, s in breakdown.items()},
        },
    )  # fmt: skip


def server_breakdown(source: Path, workdir: Path) -> dict[str, float]:
    """Seconds the API spends per stage on the same bytes, in this process, without HTTP.

    The multipart parser alone; plus writing the blob; plus the fine-tune JSONL check: what
    each stage adds is where ``files.create`` spends its time beyond the socket.
    """
    boundary = b"openft-bench"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        b"fine-tune\r\n--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="t.jsonl"\r\n\r\n' + source.read_bytes() + b"\r\n--" + boundary + b"--\r\n"
    )
    stages = {
        "multipart parsing": (NullBlobs(), False),
        "+ blob write (fsync)": (LocalBlobStore(workdir / "blobs"), False),
        "+ fine-tune JSONL check": (LocalBlobStore(workdir / "blobs"), True),
    }
    seconds = {}
    for name, (blobs, check) in stages.items():
        limits = UploadLimits(1 << 40, 64 * MIB, check_fine_tune=check)
        parser = MultipartUpload(boundary, blobs, limits)  # type: ignore[arg-type]
        start_time = time.perf_counter()
        for offset in range(0, len(body), MIB):
            parser.feed(body[offset : offset + MIB])
        received = parser.finish()
        assert received.blob is not None
        received.blob.commit("files/bench")
        seconds[name] = time.perf_counter() - start_time
    return seconds


class NullBlobs:
    """A blob store that keeps nothing: the parser's own cost."""

    class Writer:
        size = 0

        def write(self, data: bytes) -> None:
            self.size += len(data)

        def commit(self, key: str) -> None:
            pass

        def abort(self) -> None:
            pass

    def stage(self) -> NullBlobs.Writer:
        return NullBlobs.Writer()


def timed_copy(source: Path, target: Path) -> float:
    start_time = time.perf_counter()
    shutil.copyfile(source, target)
    with target.open("rb") as handle:
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - start_time
    target.unlink()
    return seconds


if __name__ == "__main__":
    main()
