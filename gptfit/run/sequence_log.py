"""`<run>/sequences.parquet`: the per-sequence table of every memorization evaluation (gptfit.metrics.sequences),
one row per sequence per evaluated step, rewritten atomically after each (a temporary file, then a rename),
so a kill never leaves a torn file. A resumed run keeps the rows up to its checkpoint's step."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gptfit.files import SEQUENCES, atomic


class SequenceLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = run_dir / SEQUENCES
        self.tables: list[pa.Table] = []
        if resume_step is not None and self.path.exists():
            kept = pq.read_table(self.path)
            self.tables = [kept.filter(pc.less_equal(kept["step"], resume_step))]
            self._write()
        elif self.path.exists():
            self.path.unlink()  # a new run into an old folder starts a new table

    def append(self, table: pa.Table) -> None:
        self.tables.append(table)
        self._write()

    def _write(self) -> None:
        # promote: a resumed run with other decoding settings adds columns (null in the older rows)
        with atomic(self.path) as tmp:
            pq.write_table(pa.concat_tables(self.tables, promote_options="default"), tmp)
