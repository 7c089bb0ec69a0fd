"""Raw telemetry rows streamed to local Parquet part files, with flat memory.

Every rank of a job writes its own raw sample rows (one row per sample and device, the columns of
``telemetry/samples``) through a :class:`SampleFileWriter`. Rows are buffered only up to
``row_group_rows`` and then written as one Parquet row group with pyarrow's ``ParquetWriter``, so a
rank holds at most one row group in memory whatever the run length. A Parquet file is readable only
once its footer is written, so :meth:`SampleFileWriter.roll` closes the current *part* and starts
the next: the telemetry callback rolls every ``telemetry.upload_every_s`` and uploads each closed
part (``telemetry/samples/rank_<r>/part-<k>.parquet``), so a long run's samples can be read while it
runs and a crashed run keeps them up to the last upload.

A part's schema is fixed by its first row group; a later row that brings a new column (a source
that started reporting late) closes the part and opens the next with the wider schema. Readers
concatenate the parts (:func:`read_sample_files`), so parts with different columns read as one
table with missing values where a column did not exist yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SampleFileWriter", "iter_sample_parts", "read_sample_files"]

log = logging.getLogger(__name__)

_STRING_COLUMNS = frozenset({"device", "host"})
_INT_COLUMNS = frozenset({"global_step", "rank", "node_rank"})


def _schema(columns: Iterable[str]) -> Any:
    import pyarrow as pa

    fields = []
    for c in columns:
        if c in _STRING_COLUMNS:
            fields.append(pa.field(c, pa.string()))
        elif c in _INT_COLUMNS:
            fields.append(pa.field(c, pa.int64()))
        else:
            fields.append(pa.field(c, pa.float64()))
    return pa.schema(fields)


class SampleFileWriter:
    """Append raw sample rows to Parquet part files in ``directory``, a row group at a time.

    Args:
        directory: Local folder for the parts (created); parts are ``part-00000.parquet``, ...
        row_group_rows: Rows buffered before a row group is written (memory bound, rows).

    Raises:
        ValueError: If ``row_group_rows`` < 1.
    """

    def __init__(self, directory: str | Path, row_group_rows: int = 256) -> None:
        if row_group_rows < 1:
            raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}.")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.row_group_rows = int(row_group_rows)
        self._buffer: list[Mapping[str, Any]] = []
        self._writer: Any = None
        self._schema: Any = None
        self._path: Path | None = None
        self._part = 0
        self._rows_in_part = 0
        self.rows_written = 0
        self.closed_parts: list[Path] = []

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory, not yet in a row group."""
        return len(self._buffer)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
        """Add rows; write a row group when the buffer is full.

        Args:
            rows: Sample rows (column name to value; ``None``/NaN where a quantity is absent).

        Returns:
            Parts closed by this call (a new column closes the current one), ready to upload.

        Raises:
            OSError: If the part cannot be written.
        """
        self._buffer.extend(rows)
        if len(self._buffer) >= self.row_group_rows:
            return self._write_buffer()
        return []

    def roll(self) -> list[Path]:
        """Write what is buffered and close the current part (the next rows open a new one).

        Returns:
            The parts closed (empty when nothing was written since the last roll).

        Raises:
            OSError: If the part cannot be written.
        """
        closed = self._write_buffer()
        if self._writer is not None:
            closed.append(self._close_part())
        return closed

    close = roll

    def _write_buffer(self) -> list[Path]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buffer:
            return []
        rows, self._buffer = self._buffer, []
        columns: dict[str, None] = {}
        for r in rows:
            columns.update(dict.fromkeys(r))
        closed: list[Path] = []
        if self._writer is not None and not set(columns) <= set(self._schema.names):
            closed.append(self._close_part())  # a new column: the next part has the wider schema
        if self._writer is None:
            names = list(self._schema.names) if self._schema is not None else []
            names += [c for c in columns if c not in names]
            self._schema = _schema(names)
            self._path = self.directory / f"part-{self._part:05d}.parquet"
            self._part += 1
            self._writer = pq.ParquetWriter(self._path, self._schema)
        table = pa.Table.from_pylist([_clean(r) for r in rows], schema=self._schema)
        self._writer.write_table(table)
        self._rows_in_part += len(rows)
        self.rows_written += len(rows)
        return closed

    def _close_part(self) -> Path:
        if self._writer is None or self._path is None:
            raise RuntimeError("no open sample part to close")
        self._writer.close()
        self._writer = None
        path = self._path
        self.closed_parts.append(path)
        self._rows_in_part = 0
        return path


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    """``None`` for NaN floats (Parquet null: absent, not a number)."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def iter_sample_parts(
    paths: Iterable[str | Path], columns: Sequence[str] | None = None
) -> Iterator[Any]:
    """Yield Parquet sample parts one at a time, each as a pandas DataFrame, in name order.

    The parts are read on the calling thread (``use_threads=False``): they are small, and Arrow's
    thread pools would keep per-thread allocator caches alive after the read (measured ~2 MB
    resident per part read at the end of a 40 s, 50 Hz run, ~13 MB in all; see
    ``benchmarks/RESULTS.md``, "Telemetry at scale").

    Args:
        paths: Part files in any order; they are read in name order within each folder.
        columns: Read only these columns (those absent from a part are left out of it).

    Raises:
        OSError, pyarrow.ArrowInvalid: If a part cannot be read.
    """
    import pyarrow.parquet as pq

    for path in sorted(Path(p) for p in paths):
        with pq.ParquetFile(path) as part:
            wanted = None
            if columns is not None:
                names = set(part.schema_arrow.names)
                wanted = [c for c in columns if c in names]
            table = part.read(columns=wanted, use_threads=False)
        yield table.to_pandas(use_threads=False)


def read_sample_files(paths: Iterable[str | Path], columns: Sequence[str] | None = None) -> Any:
    """Read Parquet sample parts (or one ``samples.parquet``) as one pandas DataFrame.

    Args:
        paths: Part files in any order; they are read in name order within each folder
            (:func:`iter_sample_parts`).
        columns: Read only these columns (those absent from a part are left out of it).

    Returns:
        The rows of every part, concatenated (columns missing in a part are NaN/None there);
        an empty DataFrame for no paths.

    Raises:
        OSError, pyarrow.ArrowInvalid: If a part cannot be read.
    """
    import pandas as pd

    frames = [f for f in iter_sample_parts(paths, columns) if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)
