"""pipelines/files.py: the streamed Parquet writer publishes all of it or nothing."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import files


def _tables(n: int, fail_at: int | None = None):
    for k in range(n):
        if k == fail_at:
            raise RuntimeError("the engine failed")
        yield pa.table({"k": pa.array([k] * 1000, pa.int64())})


def test_every_table_is_written_in_order_each_its_own_row_group(tmp_path):
    path = tmp_path / "out.parquet"
    files.atomic_write_parquet_stream(path, pa.schema([("k", pa.int64())]), _tables(7))
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 7
    assert pq.read_table(path).column("k").to_pylist() == [k for k in range(7) for _ in range(1000)]


def test_a_failure_while_making_the_tables_publishes_nothing(tmp_path):
    path = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="the engine failed"):
        files.atomic_write_parquet_stream(path, pa.schema([("k", pa.int64())]), _tables(7, fail_at=4))
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_publishes_nothing(tmp_path):
    path = tmp_path / "out.parquet"
    wrong = (pa.table({"k": pa.array(["not an int"])}) if k == 3 else t for k, t in enumerate(_tables(7)))
    with pytest.raises(Exception):
        files.atomic_write_parquet_stream(path, pa.schema([("k", pa.int64())]), wrong)
    assert list(tmp_path.iterdir()) == []
