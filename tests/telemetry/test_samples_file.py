"""SampleFileWriter: bounded buffer, row groups, parts on roll and on a new column."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rle.telemetry.samples_file import SampleFileWriter, read_sample_files


def _rows(n: int, start: int = 0, **extra: float) -> list[dict[str, object]]:
    return [
        {
            "wall_time_s": 1.7e9 + i,
            "global_step": i,
            "device": "cpu",
            "cpu_x_percentage": i * 1.0,
            **extra,
        }
        for i in range(start, start + n)
    ]


def test_rows_are_written_a_row_group_at_a_time(tmp_path: Path) -> None:
    w = SampleFileWriter(tmp_path, row_group_rows=10)
    for i in range(0, 35, 5):
        w.append(_rows(5, i))
        assert w.buffered_rows < 10  # never more than one row group in memory
    closed = w.roll()
    assert [p.name for p in closed] == ["part-00000.parquet"]
    meta = pq.ParquetFile(closed[0]).metadata
    assert meta.num_rows == 35
    assert meta.num_row_groups == 4  # 10 + 10 + 10 + the 5 written by roll()
    frame = read_sample_files(closed)
    assert frame["global_step"].tolist() == list(range(35))
    assert w.rows_written == 35


def test_roll_starts_a_new_part_and_both_read_as_one_table(tmp_path: Path) -> None:
    w = SampleFileWriter(tmp_path, row_group_rows=100)
    w.append(_rows(3))
    first = w.roll()
    assert w.roll() == []  # nothing new: no empty part
    w.append(_rows(2, 3))
    second = w.roll()
    assert [p.name for p in first + second] == ["part-00000.parquet", "part-00001.parquet"]
    frame = read_sample_files(w.closed_parts)
    assert frame["global_step"].tolist() == [0, 1, 2, 3, 4]


def test_a_new_column_opens_a_part_with_the_wider_schema(tmp_path: Path) -> None:
    w = SampleFileWriter(tmp_path, row_group_rows=2)
    w.append(_rows(2))
    closed = w.append(_rows(2, 2, gpu_0_power_usage_watts=100.0))
    assert [p.name for p in closed] == ["part-00000.parquet"]
    w.roll()
    frame = read_sample_files(w.closed_parts)
    assert len(frame) == 4
    assert frame["gpu_0_power_usage_watts"].isna().tolist() == [True, True, False, False]


def test_nan_is_stored_as_null_and_types_are_kept(tmp_path: Path) -> None:
    w = SampleFileWriter(tmp_path, row_group_rows=1)
    w.append([{"device": "gpu_0", "global_step": 3, "power_w": math.nan, "rank": 0}])
    (part,) = w.roll()
    schema = pq.read_schema(part)
    assert str(schema.field("device").type) == "string"
    assert str(schema.field("global_step").type) == "int64"
    assert pq.read_table(part).column("power_w").null_count == 1


def test_read_only_some_columns(tmp_path: Path) -> None:
    w = SampleFileWriter(tmp_path)
    w.append(_rows(3))
    frame = read_sample_files(w.roll(), columns=["global_step", "absent_column"])
    assert list(frame.columns) == ["global_step"]


def test_bad_row_group_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="row_group_rows"):
        SampleFileWriter(tmp_path, row_group_rows=0)
