"""`llmobs export` and `llmobs import`: one project's spans out of a stack and into another.

Formats, one span per record, every column of ``spans`` but ``project_id`` (so columns added by
later migrations, such as the LLM messages, travel without a change here):

* ``jsonl`` — one span per line, the API's span JSON (JSON columns as JSON, times ISO 8601);
* ``otlp`` — OTLP/JSON ``ExportTraceServiceRequest`` documents, one per line (up to
  :data:`BATCH_SPANS` spans each), for any OTLP tool; importing them runs the collector's pipeline
  again (normalization, prices, redaction): what the file carries (kind, status, attributes,
  events, links, resource, scope) comes back as exported, so export -> import -> export gives the
  same file, while derived columns follow the target's prices and redaction rules and
  ``ingested_at`` is the import's time (only ``jsonl`` and ``parquet`` restore rows exactly);
* ``parquet`` — columns as in the database (JSON columns as JSON text), when pyarrow is installed
  (``pip install 'llm-observatory[parquet]'``).

Export streams spans in (start time, span id, trace id) order from a server-side cursor to a file
or ``s3://bucket/key`` (the backup settings' S3 endpoint and credentials; the file is staged
locally and uploaded at the end). After each batch it saves a checkpoint beside the output (the
last key exported and the length of the file written so far): run the same command again after an
interruption, even a kill, and it cuts off what was written after the checkpoint and continues, to
a file equal to that of an uninterrupted export. A parquet file is unreadable until its footer is
written, so a parquet export appends its batches to an Arrow IPC stream (``OUTPUT.stage``: a
schema message, then one message per batch, which is readable up to any message boundary) under
the same checkpoint, and at the end writes the parquet file from it (one row group per batch, to a
temporary name renamed into place) and removes the stage.

Import is idempotent on span ids: a span whose (trace id, span id) the project already holds is
skipped, so an interrupted import is simply run again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import orjson
from psycopg import sql

from llmobs.errors import LlmobsError, UsageError

if TYPE_CHECKING:
    import psycopg

    from llmobs.backup.storage import S3Store
    from llmobs.config import Settings

Format = Literal["jsonl", "otlp", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "otlp", "parquet")
#: Spans per fetch, per checkpoint, per OTLP document and per import transaction.
BATCH_SPANS = 1000
#: Codec of the record batches in a parquet export's Arrow stage (pyarrow's wheels all have it;
#: a build without it, or None, stages uncompressed).
STAGE_COMPRESSION: str | None = "zstd"
_HEX = {"trace_id": re.compile(r"^[0-9a-f]{32}$"), "span_id": re.compile(r"^[0-9a-f]{16}$")}
Progress = Callable[[int, "int | None"], None]


# ---------------------------------------------------------------------------------------------
# columns


@dataclass(frozen=True)
class Column:
    name: str
    #: format_type(): text, jsonb, timestamp with time zone, double precision, bigint, text[], ...
    type: str
    not_null: bool
    has_default: bool

    @property
    def is_json(self) -> bool:
        return self.type in ("jsonb", "json")

    @property
    def is_time(self) -> bool:
        return self.type.startswith("timestamp")


def span_columns(conn: psycopg.Connection) -> list[Column]:
    """The columns of ``spans`` but ``project_id``, in table order."""
    rows = conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod), attnotnull, atthasdef FROM pg_attribute
           WHERE attrelid = 'spans'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'project_id'
           ORDER BY attnum"""
    ).fetchall()
    return [Column(*r) for r in rows]


# ---------------------------------------------------------------------------------------------
# export


@dataclass(frozen=True)
class ExportRequest:
    project: str
    start: datetime
    end: datetime
    format: Format
    output: str
    #: No --to given: ``end`` is "now" of this run, and a checkpoint of any earlier run's open-ended
    #: export of the same project, start and format is resumed (with that run's end).
    open_end: bool = False

    def check(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"unknown format {self.format!r}; choose one of: {', '.join(FORMATS)}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise UsageError("--from and --to need a time zone (for example 2025-01-01T00:00:00Z)")
        if self.start >= self.end:
            raise UsageError("--from must be before --to")


@dataclass
class Checkpoint:
    """Where an interrupted export stopped: the last key written and the file's length then."""

    project: str
    start: str
    end: str
    format: str
    last: list[str] | None = None
    spans: int = 0
    offset: int = 0
    open_end: bool = False

    @classmethod
    def path_for(cls, staged: Path) -> Path:
        return staged.with_name(staged.name + ".checkpoint")

    def matches(self, req: ExportRequest) -> bool:
        same = (self.project, self.start, self.format) == (req.project, req.start.isoformat(), req.format)
        return same and (self.end == req.end.isoformat() or (self.open_end and req.open_end))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)


@dataclass
class ExportResult:
    output: str
    spans: int
    resumed_from: int = 0


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); UsageError when either is missing."""
    match = re.match(r"^s3://([^/]+)/(.+)$", url)
    if not match or match.group(2).endswith("/"):
        raise UsageError(f"{url!r} is not s3://BUCKET/KEY")
    return match.group(1), match.group(2)


def _s3_store(settings: Settings, bucket: str) -> S3Store:
    from llmobs.backup.storage import S3Store

    store = S3Store.from_settings(settings, bucket=bucket, prefix="")
    assert store is not None
    return store


def _staged_path(req: ExportRequest, staging_dir: Path) -> Path:
    if req.output.startswith("s3://"):
        bucket, key = parse_s3_url(req.output)
        staging_dir.mkdir(parents=True, exist_ok=True)
        return staging_dir / f"{bucket}-{key.replace('/', '_')}.part"
    return Path(req.output)


def _key(record: dict[str, Any]) -> tuple[datetime, str, str]:
    return record["start_time"], record["span_id"], record["trace_id"]


def _rows(
    conn: psycopg.Connection, project_id: int, columns: list[Column], req: ExportRequest, after: list[str] | None
) -> Iterator[list[dict[str, Any]]]:
    """The project's spans in the range after ``after``, in key order, in batches (server-side cursor)."""
    from psycopg.rows import dict_row

    where: sql.Composable = sql.SQL("project_id = %s AND start_time >= %s AND start_time < %s")
    params: list[Any] = [project_id, req.start, req.end]
    if after is not None:
        where = sql.SQL("{} AND (start_time, span_id, trace_id) > (%s, %s, %s)").format(where)
        params += [datetime.fromisoformat(after[0]), after[1], after[2]]
    query = sql.SQL("SELECT {cols} FROM spans WHERE {where} ORDER BY start_time, span_id, trace_id").format(
        cols=sql.SQL(", ").join(sql.Identifier(c.name) for c in columns), where=where
    )
    with conn.transaction(), conn.cursor(name="llmobs_export", row_factory=dict_row) as cur:
        cur.itersize = BATCH_SPANS
        cur.execute(query, params)
        while batch := cur.fetchmany(BATCH_SPANS):
            yield batch


def _count(conn: psycopg.Connection, project_id: int, req: ExportRequest) -> int:
    row = conn.execute(
        "SELECT count(*) FROM spans WHERE project_id = %s AND start_time >= %s AND start_time < %s",
        (project_id, req.start, req.end),
    ).fetchone()
    return int(row[0]) if row else 0


def export_spans(
    conn: psycopg.Connection,
    settings: Settings,
    project_id: int,
    req: ExportRequest,
    *,
    staging_dir: Path,
    progress: Progress,
    overwrite: bool = False,
) -> ExportResult:
    """Write project ``project_id``'s spans of ``req`` to ``req.output``, resuming from a matching
    checkpoint. UsageError when the output exists without one (unless ``overwrite``)."""
    req.check()
    conn.execute("SET TIME ZONE 'UTC'")
    staged = _staged_path(req, staging_dir)
    written = _stage_path(staged) if req.format == "parquet" else staged
    ckpt_path = Checkpoint.path_for(staged)
    ckpt = Checkpoint(req.project, req.start.isoformat(), req.end.isoformat(), req.format, open_end=req.open_end)
    if ckpt_path.exists():
        saved = Checkpoint(**json.loads(ckpt_path.read_text()))
        # A checkpoint whose file is gone or shorter than it says cannot be continued: start over.
        intact = written.exists() and written.stat().st_size >= saved.offset
        if saved.matches(req) and saved.last is not None and intact:
            ckpt = saved
            req = replace(req, end=datetime.fromisoformat(saved.end))
    if ckpt.last is None and staged.exists() and not overwrite and not req.output.startswith("s3://"):
        raise UsageError(f"{staged} exists; remove it or pass --overwrite")
    columns = span_columns(conn)
    if ckpt.last is not None and req.format == "parquet" and not stage_fits(written, columns):
        # Staged before a migration changed the columns: its batches cannot go in one parquet file.
        ckpt = Checkpoint(req.project, req.start.isoformat(), req.end.isoformat(), req.format, open_end=req.open_end)
    total = _count(conn, project_id, req)
    result = ExportResult(req.output, ckpt.spans, resumed_from=ckpt.spans)
    writer = _writer(req.format, written, columns, ckpt.offset if ckpt.last else 0)
    try:
        progress(ckpt.spans, total)
        for batch in _rows(conn, project_id, columns, req, ckpt.last):
            writer.write(batch)
            ckpt.offset = writer.flush()
            ckpt.spans += len(batch)
            last = _key(batch[-1])
            ckpt.last = [last[0].isoformat(), last[1], last[2]]
            ckpt.save(ckpt_path)
            progress(ckpt.spans, total)
    finally:
        writer.close()
    result.spans = ckpt.spans
    if req.format == "parquet":
        # Until the checkpoint is gone, a rerun finds every batch staged and only redoes this.
        _parquet_from_stage(written, staged, columns)
    if req.output.startswith("s3://"):
        bucket, key = parse_s3_url(req.output)
        _s3_store(settings, bucket).put_file(key, staged)
        staged.unlink()
    ckpt_path.unlink(missing_ok=True)
    if req.format == "parquet":
        written.unlink(missing_ok=True)
    return result


class _Writer:
    """Appends batches of span records to a file; ``flush`` returns the file's length."""

    def __init__(self, path: Path, columns: list[Column], offset: int) -> None:
        self.columns = columns
        self.file: BinaryIO = open(path, "r+b" if offset else "wb")  # noqa: SIM115 (closed by close())
        if offset:
            self.file.truncate(offset)  # drop what was written after the last checkpoint
            self.file.seek(offset)

    def write(self, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def flush(self) -> int:
        self.file.flush()
        os.fsync(self.file.fileno())
        return self.file.tell()

    def close(self) -> None:
        self.file.close()


class _JsonlWriter(_Writer):
    def write(self, batch: list[dict[str, Any]]) -> None:
        self.file.write(b"".join(orjson.dumps(r) + b"\n" for r in batch))


class _OtlpWriter(_Writer):
    def write(self, batch: list[dict[str, Any]]) -> None:
        self.file.write(orjson.dumps(otlp_request(batch)) + b"\n")


class _ArrowStageWriter(_Writer):
    """Parquet's stage: an Arrow IPC stream written message by message (the schema first, then
    one record batch per span batch, its buffers compressed with :data:`STAGE_COMPRESSION`), so
    that it can be cut at any checkpoint and appended to. Each batch message says whether and how
    its body is compressed, so a stage begun uncompressed (by an earlier version) still resumes."""

    def __init__(self, path: Path, columns: list[Column], offset: int) -> None:
        self.pa, _ = _pyarrow()  # before the file: without pyarrow, nothing is left behind
        super().__init__(path, columns, offset)
        self.schema = _arrow_schema(self.pa, columns)
        available = STAGE_COMPRESSION is not None and self.pa.Codec.is_available(STAGE_COMPRESSION)
        compression = STAGE_COMPRESSION if available else None
        self.options = self.pa.ipc.IpcWriteOptions(compression=compression)
        if not offset:
            self.file.write(self.schema.serialize().to_pybytes())

    def write(self, batch: list[dict[str, Any]]) -> None:
        data = [
            [orjson.dumps(r[c.name]).decode() if c.is_json and r[c.name] is not None else r[c.name] for r in batch]
            for c in self.columns
        ]
        self.file.write(self._message(self.pa.record_batch(data, schema=self.schema)))

    def _message(self, record_batch: Any) -> bytes:
        """The IPC message of ``record_batch`` alone, compressed (``RecordBatch.serialize`` takes no
        write options: a stream writer writes schema, batch and end marker to memory, and the batch
        is the second message)."""
        pa = self.pa
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.schema, options=self.options) as writer:
            writer.write_batch(record_batch)
        written = sink.getvalue()
        stream = pa.BufferReader(written)
        pa.ipc.read_message(stream)  # the schema
        start = stream.tell()
        pa.ipc.read_message(stream)
        return bytes(written[start : stream.tell()].to_pybytes())


def _stage_path(staged: Path) -> Path:
    return staged.with_name(staged.name + ".stage")


def stage_fits(stage: Path, columns: list[Column]) -> bool:
    """Whether the Arrow stage ``stage`` starts with the schema of ``columns`` (False when it is
    not a readable stream)."""
    pa, _ = _pyarrow()
    try:
        with pa.memory_map(str(stage)) as source, pa.ipc.open_stream(source) as reader:
            return bool(reader.schema.equals(_arrow_schema(pa, columns)))
    except (OSError, pa.ArrowInvalid):
        return False


def _parquet_from_stage(stage: Path, target: Path, columns: list[Column]) -> None:
    """Write ``target`` as parquet from the complete Arrow stage (one row group per staged batch,
    read batch by batch from a memory map), through a temporary file renamed into place."""
    pa, pq = _pyarrow()
    schema = _arrow_schema(pa, columns)
    tmp = target.with_name(target.name + ".tmp")
    with (
        pa.memory_map(str(stage)) as source,
        pa.ipc.open_stream(source) as reader,
        pq.ParquetWriter(tmp, schema) as writer,
    ):
        if not reader.schema.equals(schema):
            raise LlmobsError(f"{stage} was staged with other columns; remove it and its checkpoint and export again")
        for record_batch in reader:
            writer.write_batch(record_batch)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


def _writer(fmt: Format, path: Path, columns: list[Column], offset: int) -> _Writer:
    if fmt == "parquet":
        return _ArrowStageWriter(path, columns, offset)
    return (_JsonlWriter if fmt == "jsonl" else _OtlpWriter)(path, columns, offset)


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError(
            "the parquet format needs pyarrow, which is not installed",
            hint="pip install 'llm-observatory[parquet]' (or use --format jsonl)",
        ) from None
    return pa, pq


def _arrow_schema(pa: Any, columns: list[Column]) -> Any:
    return pa.schema([(c.name, _arrow_type(pa, c)) for c in columns])


def _arrow_type(pa: Any, column: Column) -> Any:
    if column.is_time:
        return pa.timestamp("us", tz="UTC")
    return {
        "double precision": pa.float64(),
        "bigint": pa.int64(),
        "integer": pa.int32(),
        "text[]": pa.list_(pa.string()),
    }.get(column.type, pa.string())


# ---------------------------------------------------------------------------------------------
# OTLP/JSON

_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS = {"unset": 0, "ok": 1, "error": 2}


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": _attributes(value)}}
    return {}


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in values.items()]


def _nanos(value: datetime | str | None) -> str:
    if value is None:
        return "0"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    whole = int(when.timestamp())
    return str(whole * 1_000_000_000 + when.microsecond * 1000)


def _otlp_span(r: dict[str, Any]) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": r["trace_id"],
        "spanId": r["span_id"],
        "name": r["name"],
        "kind": _KINDS.get(r["kind"], 0),
        "startTimeUnixNano": _nanos(r["start_time"]),
        "endTimeUnixNano": _nanos(r["end_time"]),
        "attributes": _attributes(r.get("attributes") or {}),
        "events": [
            {
                "timeUnixNano": _nanos(e.get("time")),
                "name": e.get("name", ""),
                "attributes": _attributes(e.get("attributes") or {}),
            }
            for e in r.get("events") or []
        ],
        "links": [
            {
                "traceId": link["trace_id"],
                "spanId": link["span_id"],
                **({"traceState": link["trace_state"]} if link.get("trace_state") else {}),
                "attributes": _attributes(link.get("attributes") or {}),
            }
            for link in r.get("links") or []
        ],
        "status": {
            "code": _STATUS.get(r["status_code"], 0),
            **({"message": r["status_message"]} if r["status_message"] else {}),
        },
    }
    if r["parent_span_id"]:
        span["parentSpanId"] = r["parent_span_id"]
    return span


def otlp_request(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """An OTLP/JSON ExportTraceServiceRequest of span records, grouped by resource and scope."""
    groups: dict[str, dict[str | None, list[dict[str, Any]]]] = {}
    resources: dict[str, dict[str, Any]] = {}
    for r in batch:
        resource = r.get("resource") or {}
        key = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS).decode()
        resources[key] = resource
        groups.setdefault(key, {}).setdefault(r.get("scope_name"), []).append(_otlp_span(r))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resources[key])},
                "scopeSpans": [
                    {"scope": {"name": scope} if scope else {}, "spans": spans} for scope, spans in scopes.items()
                ],
            }
            for key, scopes in groups.items()
        ]
    }


# ---------------------------------------------------------------------------------------------
# import


class ImportFailed(LlmobsError):
    """Input that cannot be imported; the message names the line (or record) and the field."""

    exit_code = 2


@dataclass
class ImportResult:
    read: int = 0
    inserted: int = 0
    skipped: int = 0
    expired: int = 0


def detect_format(path: Path) -> Format:
    """By content: parquet's magic bytes, an OTLP document (``resourceSpans``), else jsonl."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"PAR1":
            return "parquet"
        f.seek(0)
        first = f.readline(1_000_000)
    if b'"resourceSpans"' in first or b'"resource_spans"' in first:
        return "otlp"
    return "jsonl"


def _value(column: Column, value: Any, where: str, *, json_text: bool = False) -> Any:
    """A record's value as COPY takes it (text for JSON and times); ImportFailed when its type is
    wrong. ``json_text``: JSON columns hold JSON text (parquet, pipeline rows), else JSON values."""
    if value is None:
        if column.not_null and not column.has_default:
            raise ImportFailed(f"{where}: {column.name} must not be null")
        return None
    if column.is_json:
        if json_text:
            if not isinstance(value, str):
                raise ImportFailed(f"{where}: {column.name} must be JSON text")
            return value
        return orjson.dumps(value).decode()
    if column.is_time:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise ImportFailed(f"{where}: {column.name} is not an ISO 8601 time with a time zone: {value!r}")
        return parsed
    if column.type in ("double precision", "bigint", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ImportFailed(f"{where}: {column.name} must be a number, not {value!r}")
        return value
    if column.type == "text[]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ImportFailed(f"{where}: {column.name} must be a list of strings")
        return value
    if not isinstance(value, str):
        raise ImportFailed(f"{where}: {column.name} must be a string, not {value!r}")
    if column.name in _HEX and not _HEX[column.name].match(value):
        raise ImportFailed(f"{where}: {column.name} {value!r} is not lowercase hex of the right length")
    return value


def record_row(columns: list[Column], record: Any, where: str, *, json_text: bool = False) -> tuple[Any, ...]:
    """One span record as a row in the order of ``columns``; ImportFailed for unknown or missing
    fields and wrong types."""
    if not isinstance(record, dict):
        raise ImportFailed(f"{where}: expected a JSON object (one span per line)")
    names = {c.name for c in columns}
    unknown = sorted(set(record) - names)
    if unknown:
        raise ImportFailed(f"{where}: unknown field(s) {', '.join(unknown)} (exported by a newer version?)")
    missing = [c.name for c in columns if c.not_null and not c.has_default and c.name not in record]
    if missing:
        raise ImportFailed(f"{where}: missing field(s) {', '.join(missing)}")
    return tuple(
        _value(c, record.get(c.name), where, json_text=json_text)
        for c in columns
        if c.name in record or not c.has_default
    )


def _jsonl_batches(path: Path, columns: list[Column]) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    batch: list[tuple[Any, ...]] = []
    names: list[str] | None = None
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ImportFailed(f"{where}: not JSON ({exc})") from None
            present = [c.name for c in columns if c.name in record or not c.has_default]
            if names is not None and present != names and batch:
                yield names, batch
                batch = []
            names = present
            batch.append(record_row(columns, record, where))
            if len(batch) >= BATCH_SPANS:
                yield names, batch
                batch = []
    if batch and names:
        yield names, batch


def _parquet_batches(path: Path, columns: list[Column]) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    _, pq = _pyarrow()
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise ImportFailed(f"{path.name}: not a readable parquet file ({exc})") from None
    number = 0
    for chunk in parquet.iter_batches(batch_size=BATCH_SPANS):
        records = chunk.to_pylist()
        rows = []
        for record in records:
            number += 1
            rows.append(record_row(columns, record, f"{path.name} record {number}", json_text=True))
        if records:
            yield [c.name for c in columns if c.name in records[0] or not c.has_default], rows


def _otlp_batches(
    path: Path, columns: list[Column], settings: Settings, conn: psycopg.Connection, project_id: int
) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    from llmobs.collector.otlp import InvalidRequest, JsonRequest
    from llmobs.collector.pipeline import SpanPipeline

    pipeline = SpanPipeline.from_settings(settings)
    pipeline.load_prices(conn)
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = list(JsonRequest(line).raw_spans())
            except InvalidRequest as exc:
                raise ImportFailed(f"{path.name} line {number}: {exc}") from None
            processed = pipeline.process(raw, project_id=project_id)
            if processed.rejected:
                raise ImportFailed(
                    f"{path.name} line {number}: {processed.rejected} invalid span(s): {processed.errors}"
                )
            records = [dict(zip(r._fields, r, strict=True)) for r in processed.rows]
            names = [c.name for c in columns if c.name in records[0]] if records else []
            yield (
                names,
                [
                    tuple(
                        _value(c, rec[c.name], f"{path.name} line {number}", json_text=True)
                        for c in columns
                        if c.name in names
                    )
                    for rec in records
                ],
            )


def fetch_input(settings: Settings, source: str, staging_dir: Path) -> Path:
    """The local file to import: ``source`` itself, or an ``s3://`` object downloaded into
    ``staging_dir``. UsageError when it does not exist."""
    if source.startswith("s3://"):
        bucket, key = parse_s3_url(source)
        staging_dir.mkdir(parents=True, exist_ok=True)
        local = staging_dir / f"import-{bucket}-{key.replace('/', '_')}"
        _s3_store(settings, bucket).get_file(key, local)
        return local
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"{source} does not exist or is not a file")
    return path


def import_spans(
    conn: psycopg.Connection,
    settings: Settings,
    path: Path,
    project_id: int,
    *,
    retention_cutoff: datetime,
    progress: Progress,
) -> ImportResult:
    """Import the spans of ``path`` (any of :data:`FORMATS`, detected by content) into project
    ``project_id``, one transaction per batch; spans the project already holds are skipped."""
    from llmobs.store.maintain import ensure_partitions

    fmt = detect_format(path)
    columns = span_columns(conn)
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS llmobs_import (LIKE spans INCLUDING DEFAULTS)")
    conn.execute("ALTER TABLE llmobs_import ALTER COLUMN project_id DROP NOT NULL")  # set on the way out
    batches = {
        "jsonl": lambda: _jsonl_batches(path, columns),
        "parquet": lambda: _parquet_batches(path, columns),
        "otlp": lambda: _otlp_batches(path, columns, settings, conn, project_id),
    }[fmt]()
    result = ImportResult()
    for names, rows in batches:
        with conn.transaction():
            conn.execute("TRUNCATE llmobs_import")
            target = sql.SQL("COPY llmobs_import ({}) FROM STDIN").format(
                sql.SQL(", ").join(sql.Identifier(n) for n in names)
            )
            with conn.cursor().copy(target) as copy:
                for row in rows:
                    copy.write_row(row)
            days = [
                r[0] for r in conn.execute("SELECT DISTINCT (start_time AT TIME ZONE 'UTC')::date FROM llmobs_import")
            ]
            ensure_partitions(conn, days)
            every = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
            inserted = conn.execute(
                sql.SQL(
                    """INSERT INTO spans (project_id, {every})
                       SELECT DISTINCT ON (i.trace_id, i.span_id) %s, {picked} FROM llmobs_import i
                       WHERE NOT EXISTS (SELECT 1 FROM spans s WHERE s.project_id = %s
                                         AND s.span_id = i.span_id AND s.trace_id = i.trace_id)
                       ORDER BY i.trace_id, i.span_id"""
                ).format(every=every, picked=sql.SQL(", ").join(sql.Identifier("i", c.name) for c in columns)),
                (project_id, project_id),
            ).rowcount
            old = conn.execute(
                "SELECT count(*) FROM llmobs_import WHERE start_time < %s", (retention_cutoff,)
            ).fetchone()
        result.read += len(rows)
        result.inserted += inserted
        result.skipped += len(rows) - inserted
        result.expired += int(old[0]) if old else 0
        progress(result.read, None)
    return result
