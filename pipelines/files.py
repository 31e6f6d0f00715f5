"""Every file the pipeline writes goes through here: written whole or not at all.

A writer puts the bytes into a temporary file in the *same folder* (so the
rename cannot cross file systems), flushes and fsyncs it, renames it over the
target with `os.replace` (atomic on POSIX), then fsyncs the folder so the
rename itself survives a power cut. A reader, or a task that runs after a
crash, therefore sees either the previous file or the complete new one, never
a half-written payout list. The temporary name starts with a dot and ends in
`.tmp`, so nothing that lists a folder for its data (`*.csv`, `*.parquet`,
`*.xlsx`) ever picks it up; an exception removes it, and a process killed
outright leaves only such a dot-file behind, which the next run of that step
removes (`outputs.workbook.clear_stale`) or ignores.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

TMP_SUFFIX = ".tmp"


def is_temporary(path: Path) -> bool:
    """A file this module is still writing (or one a killed writer left behind)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


UMASK = 0o027


def restrict_umask() -> int:
    """Make the process umask at least 027 (never looser than it was); returns the new umask.
    Files and folders the pipeline creates are then not world-readable (folders 0750, files 0640)."""
    old = os.umask(UMASK)
    new = old | UMASK
    os.umask(new)
    return new


def atomic_write(path: Path, write: Callable[[Any], None], before_publish: Callable[[], Any] | None = None) -> Path:
    """Call write(binary file object) on a temporary file beside `path`, then publish it
    (after `before_publish()`, when given: what must be on disk before the file is)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_publish is not None:
            before_publish()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path, data: Any, **dumps) -> Path:
    dumps.setdefault("ensure_ascii", False)
    dumps.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(data, **dumps))


def atomic_write_parquet(path: Path, table, row_group_size: int | None = None) -> Path:
    """A pyarrow table as Parquet (streamed into the temporary file, not held twice in memory)."""
    import pyarrow.parquet as pq

    return atomic_write(path, lambda fh: pq.write_table(table, fh, row_group_size=row_group_size))


def atomic_write_parquet_stream(path: Path, schema, tables, before_publish: Callable[[], Any] | None = None,
                                **options) -> Path:
    """Parquet written table by table (each its own row groups), so nothing holds them all.

    The tables are encoded and written by a thread of their own while the next one is made
    (Parquet encoding releases the GIL, so on two cores the writing mostly overlaps the
    making); at most two wait in between. `options`: the ParquetWriter's."""
    import queue
    import threading

    import pyarrow.parquet as pq

    def write(fh):
        with pq.ParquetWriter(fh, schema, **options) as writer:
            waiting: queue.Queue = queue.Queue(maxsize=2)
            failed: list[BaseException] = []

            def drain():
                while (table := waiting.get()) is not None:
                    if not failed:
                        try:
                            writer.write_table(table)
                        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                            failed.append(exc)

            worker = threading.Thread(target=drain, name="parquet-writer", daemon=True)
            worker.start()
            try:
                for table in tables:
                    if failed:
                        break
                    waiting.put(table)
            finally:
                waiting.put(None)
                worker.join()
            if failed:
                raise failed[0]

    return atomic_write(path, write, before_publish)


def read_json(path: Path) -> Any:
    """A JSON file the pipeline wrote (a verdict, a summary, a report's figures), or None
    when it is absent or not JSON: a stage that has not run yet reads as not run."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def sha256_file(path: Path) -> str:
    """The content hash recorded for every delivery, policy file and portrait."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
