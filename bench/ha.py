"""The cost of `synchronous_mode` in the `ha` profile: OTLP/HTTP ingest through the compose stack
with Patroni's synchronous replication on, off, and on again, in the same run on the same stack.

    eval "$(scripts/offline-images)"      # the images, on machines with no registry
    .venv/bin/python bench/ha.py [--seconds 20] [--threads 4] [--batch 100]

Creates a throwaway compose project (`llmobs up --profile ha`) on free ports and removes it, with
its volumes, afterwards. Each phase sends batches of new spans from THREADS clients for SECONDS
and reports acknowledged spans per second; "off" (asynchronous replication) is the baseline.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from benchlib import init_project

from llmobs.config import Settings, update_env_file
from llmobs.stack import ha
from llmobs.stack.compose import ComposeStack


def otlp_body(worker: int, n: int, batch: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    now = time.time_ns()
    for i in range(batch):
        scope.spans.add(
            trace_id=bytes.fromhex(f"{worker + 1:08x}{n:024x}"),
            span_id=bytes.fromhex(f"{worker + 1:04x}{n:08x}{i:04x}"),
            name="bench",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1_000_000,
        )
    return req.SerializeToString()


def ingest(url: str, token: str, *, seconds: float, threads: int, batch: int, offset: int) -> float:
    """Acknowledged spans per second over ``seconds`` from ``threads`` clients."""
    acked = [0] * threads
    stop = time.monotonic() + seconds
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {token}"}

    def run(worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = offset
            while time.monotonic() < stop:
                n += 1
                response = client.post(f"{url}/v1/traces", content=otlp_body(worker, n, batch), headers=headers)
                if response.status_code == 200:
                    acked[worker] += batch

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sum(acked) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    images = {k: v for k, v in os.environ.items() if k.startswith("LLMOBS_IMAGE_") or k == "LLMOBS_COMPOSE_FILES"}
    root = Path(tempfile.mkdtemp(prefix="llmobs-bench-ha-"))
    root.chmod(0o755)
    project = init_project(root)
    name = f"llmobs-bench-ha-{secrets.token_hex(4)}"
    update_env_file(project / ".env", {**images, "COMPOSE_PROJECT_NAME": name, "LLMOBS_RUNTIME": "compose"})
    cli = [sys.executable, "-m", "llmobs", "--project-dir", str(project)]
    try:
        subprocess.run([*cli, "up", "--profile", "ha"], check=True, capture_output=True)
        settings = Settings.load(project)
        stack = ComposeStack(settings, profiles=(ha.PROFILE,))
        url = f"http://127.0.0.1:{settings.get_int('COLLECTOR_HTTP_PORT')}"
        token = settings.secret("LLMOBS_INGEST_API_KEY")
        ingest(url, token, seconds=3, threads=args.threads, batch=args.batch, offset=0)  # warm-up
        rows = []
        for phase, on in (
            ("synchronous_mode on", True),
            ("synchronous_mode off (baseline)", False),
            ("synchronous_mode on", True),
        ):
            ha.set_synchronous_mode(stack, on)
            offset = (len(rows) + 1) * 10_000_000
            rows.append(
                (phase, ingest(url, token, seconds=args.seconds, threads=args.threads, batch=args.batch, offset=offset))
            )
    finally:
        subprocess.run([*cli, "down", "--volumes", "--yes"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'phase':34} {'spans/s':>9}   ({args.threads} clients, batches of {args.batch}, {args.seconds:g} s each)")
    for phase, rate in rows:
        print(f"{phase:34} {rate:9.0f}")
    on = (rows[0][1] + rows[2][1]) / 2
    print(f"\ncost of synchronous_mode: {100 * (1 - on / rows[1][1]):.1f} % fewer spans/s than asynchronous")


if __name__ == "__main__":
    main()
