"""`llmobs export` of one project: seconds, spans/s and file size per format, against the way
parquet was written before it became resumable (a ParquetWriter fed batch by batch, no stage).

    .venv/bin/python bench/export.py [--spans 200000]

The resumable parquet export stages its batches as an Arrow IPC stream under the checkpoint and
writes the parquet file from it at the end; the baseline line shows what that extra pass costs.
The stage's batches are compressed (zstd, ``export.STAGE_COMPRESSION``); the uncompressed line
is the stage as it was before, and "stage MB" the stage's size when the last batch is in it.
Every export reads the same rows in the same order from the same database (a throwaway
local-runtime project on free ports under /tmp, removed afterwards).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import local_stack

from llmobs.backup import export as transfer
from llmobs.config import Settings
from llmobs.store.apikeys import ensure_project
from llmobs.store.db import connect

FILL_SQL = """
INSERT INTO spans (project_id, trace_id, span_id, service_name, name, kind, start_time, end_time, duration_ms,
                   status_code, provider, request_model, response_model, input_tokens, output_tokens, cost_usd,
                   user_id, attributes)
SELECT %(project)s, md5(g::text), left(md5((g * 7)::text), 16), 'bench', 'chat gpt-4o', 'client', ts,
       ts + interval '800 ms', 800, 'ok', 'openai', 'gpt-4o', 'gpt-4o', g %% 1000, g %% 300, (g %% 1300) * 0.00001,
       'user-' || (g %% 5000), jsonb_build_object('gen_ai.prompt', repeat(md5(g::text) || ' ', 4))
FROM generate_series(1, %(total)s) g,
     LATERAL (SELECT %(now)s::timestamptz - (g::double precision / %(total)s) * interval '5 days' AS ts) t"""


def direct_parquet(settings: Settings, project_id: int, req: transfer.ExportRequest) -> None:
    """The previous parquet export: batches straight into a ParquetWriter (not resumable)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with connect(settings, "admin", autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        columns = transfer.span_columns(conn)
        schema = transfer._arrow_schema(pa, columns)
        with pq.ParquetWriter(req.output, schema) as writer:
            for batch in transfer._rows(conn, project_id, columns, req, None):
                data = {
                    c.name: [
                        transfer.orjson.dumps(r[c.name]).decode() if c.is_json and r[c.name] is not None else r[c.name]
                        for r in batch
                    ]
                    for c in columns
                }
                writer.write_table(pa.table(data, schema=schema))


def timed(work: Callable[[], object]) -> float:
    started = time.monotonic()
    work()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    args = parser.parse_args()
    with local_stack("llmobs-bench-export-", "timescaledb") as project:
        root = project.parent
        settings = Settings.load(project)
        now = datetime.now(UTC)
        with connect(settings, "admin", autocommit=True) as conn:
            project_id, _ = ensure_project(conn, "bench")
            for day in range(7):
                conn.execute("SELECT llmobs_ensure_span_partition(%s)", ((now - timedelta(days=day)).date(),))
            conn.execute(FILL_SQL, {"project": project_id, "total": args.spans, "now": now})
        print(f"filled {args.spans:,} spans", flush=True)
        start, end = now - timedelta(days=6), now + timedelta(days=1)
        rows: list[tuple[str, float, int, int | None]] = []
        runs: list[tuple[str, transfer.Format, str | None]] = [
            ("jsonl", "jsonl", None),
            ("otlp", "otlp", None),
            ("parquet (stage zstd)", "parquet", "zstd"),
            ("parquet (stage uncompressed)", "parquet", None),
        ]
        for label, fmt, compression in runs:
            out = root / f"out-{len(rows)}.{fmt}"
            req = transfer.ExportRequest("bench", start, end, fmt, str(out))
            stage = out.with_name(out.name + ".stage")
            stage_size: list[int] = []

            def progress(done: int, total: int | None, stage: Path = stage, sizes: list[int] = stage_size) -> None:
                if done == total and stage.exists():
                    sizes.append(stage.stat().st_size)

            def run(req: transfer.ExportRequest = req, progress: transfer.Progress = progress) -> None:
                with connect(settings, "admin", autocommit=True) as conn:
                    transfer.export_spans(
                        conn, settings, project_id, req, staging_dir=root, progress=progress, overwrite=True
                    )

            transfer.STAGE_COMPRESSION = compression
            rows.append((label, timed(run), out.stat().st_size, stage_size[-1] if stage_size else None))
        direct = root / "direct.parquet"
        req = transfer.ExportRequest("bench", start, end, "parquet", str(direct))
        rows.append(
            (
                "parquet direct (baseline)",
                timed(lambda: direct_parquet(settings, project_id, req)),
                direct.stat().st_size,
                None,
            )
        )
        print(f"\n{'':30}{'seconds':>9}{'spans/s':>10}{'MB':>8}{'stage MB':>10}")
        for label, seconds, size, stage_bytes in rows:
            staged = f"{stage_bytes / 1e6:10.1f}" if stage_bytes is not None else f"{'':10}"
            print(f"{label:30}{seconds:9.1f}{args.spans / seconds:10.0f}{size / 1e6:8.1f}{staged}")


if __name__ == "__main__":
    main()
