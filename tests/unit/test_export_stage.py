"""The parquet export's Arrow stage: cut at a checkpoint and appended to, it still reads as one
stream, and a stage of other columns (a migration between two runs) is told apart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llmobs.backup.export import Column, _ArrowStageWriter, _parquet_from_stage, stage_fits

COLUMNS = [
    Column("span_id", "text", True, False),
    Column("start_time", "timestamp with time zone", True, False),
    Column("attributes", "jsonb", False, True),
    Column("tags", "text[]", False, False),
]


def batch(first: int, count: int) -> list[dict]:
    return [
        {
            "span_id": f"{i:016x}",
            "start_time": datetime(2026, 1, 1, tzinfo=UTC),
            "attributes": {"n": i, "s": "é"},
            "tags": ["a"] if i % 2 else None,
        }
        for i in range(first, first + count)
    ]


def test_a_stage_cut_back_to_its_checkpoint_and_continued_gives_the_same_parquet(tmp_path: Path) -> None:
    whole = _ArrowStageWriter(tmp_path / "whole.stage", COLUMNS, 0)
    for first in (0, 3, 6):
        whole.write(batch(first, 3))
        whole.flush()
    whole.close()
    cut = _ArrowStageWriter(tmp_path / "cut.stage", COLUMNS, 0)
    cut.write(batch(0, 3))
    checkpoint = cut.flush()
    cut.write(batch(3, 3))  # written, then "killed" before its checkpoint
    cut.flush()
    cut.close()
    resumed = _ArrowStageWriter(tmp_path / "cut.stage", COLUMNS, checkpoint)
    for first in (3, 6):
        resumed.write(batch(first, 3))
        resumed.flush()
    resumed.close()
    assert (tmp_path / "cut.stage").read_bytes() == (tmp_path / "whole.stage").read_bytes()
    _parquet_from_stage(tmp_path / "cut.stage", tmp_path / "out.parquet", COLUMNS)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("span_id").to_pylist() == [f"{i:016x}" for i in range(9)]
    assert table.column("attributes")[4].as_py() == '{"n":4,"s":"\u00e9"}'
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 3  # one per batch


def test_a_stage_of_other_columns_or_garbage_does_not_fit(tmp_path: Path) -> None:
    writer = _ArrowStageWriter(tmp_path / "s.stage", COLUMNS, 0)
    writer.write(batch(0, 2))
    writer.close()
    assert stage_fits(tmp_path / "s.stage", COLUMNS)
    assert not stage_fits(tmp_path / "s.stage", [*COLUMNS, Column("added", "text", False, False)])
    (tmp_path / "g.stage").write_bytes(b"not arrow at all")
    assert not stage_fits(tmp_path / "g.stage", COLUMNS)


def test_a_stage_begun_uncompressed_by_an_earlier_version_resumes_compressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmobs.backup import export

    monkeypatch.setattr(export, "STAGE_COMPRESSION", None)  # the stage as an earlier version wrote it
    old = _ArrowStageWriter(tmp_path / "s.stage", COLUMNS, 0)
    old.write(batch(0, 200))
    checkpoint = old.flush()
    old.close()
    monkeypatch.setattr(export, "STAGE_COMPRESSION", "zstd")
    resumed = _ArrowStageWriter(tmp_path / "s.stage", COLUMNS, checkpoint)
    resumed.write(batch(200, 200))
    end = resumed.flush()
    resumed.close()
    assert end - checkpoint < checkpoint / 2  # the same number of rows, compressed
    _parquet_from_stage(tmp_path / "s.stage", tmp_path / "out.parquet", COLUMNS)
    assert pq.read_table(tmp_path / "out.parquet").column("span_id").to_pylist() == [f"{i:016x}" for i in range(400)]
