"""Every file is written atomically (issue 8, item 3): no reader ever sees half
a payout list — not while the list is being (re)written, and not after the
worker is killed outright in the middle of writing it."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.hardening import pipeline_state as ps

PAYOUT = "output/2026-11-27/payout"


@pytest.fixture(scope="session")
def ref(tmp_path_factory):
    return ps.reference(tmp_path_factory.getbasetemp() / "hardening_reference")


def test_a_reader_sees_the_payout_list_absent_or_whole_while_it_is_rewritten(ref):
    from pipelines import handoff

    settings = ref.checkout(ref.index("ledger_and_outputs", ps.N2))
    folder = ps.Path(settings.work).parent / PAYOUT
    whole = {name: ref.final["files"][f"{PAYOUT}/{name}"] for name in ("payout.csv", "payout.parquet")}
    seen: list[tuple[str, str]] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            for name in whole:
                try:
                    data = (folder / name).read_bytes()
                except FileNotFoundError:
                    continue
                seen.append((name, hashlib.sha256(data).hexdigest()))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):   # the first run and two reruns of the date rewrite the lists
            handoff.ledger_and_outputs(settings, ps.N2, ps.run_id(ps.N2))
    finally:
        stop.set()
        thread.join()
    assert seen, "the reader never saw the list"
    torn = [(name, digest) for name, digest in seen if digest != whole[name]]
    assert not torn, f"{len(torn)} of {len(seen)} reads saw a partial payout file"


KILL_MID_WRITE = """
import os, sys
sys.path.insert(0, {root!r})
import tests.conftest  # noqa: F401  (Airflow/GX environment defaults)
from pipelines import files, handoff
from tests.hardening import pipeline_state as ps

real = files.atomic_write

def dying(path, write):
    if path.name == "payout.csv":
        def half(fh):
            import io
            buf = io.BytesIO()
            write(buf)
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            os._exit(9)          # the worker is killed: no cleanup, no exception handler
        return real(path, half)
    return real(path, write)

files.atomic_write = dying
handoff.ledger_and_outputs(ps.settings_for(ps.Path({live!r})), ps.N2, ps.run_id(ps.N2))
"""


def test_a_worker_killed_while_writing_the_payout_list_leaves_no_half_list(ref):
    from pipelines import files, warehouse

    i = ref.index("ledger_and_outputs", ps.N2)
    settings = ref.checkout(i)
    warehouse.dispose_all()
    code = KILL_MID_WRITE.format(root=str(ROOT), live=str(ref.live))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr[-2000:]
    folder = ref.live / PAYOUT
    # the batch is committed (the lists are built after the commit), the list is not there:
    # only a dot-named temporary that no reader of *.csv / *.parquet / *.xlsx picks up
    assert [b[0] for b in ps.warehouse_state(settings.warehouse_url)["batches"]] == ["PB-20261127-01"]
    left = sorted(p.name for p in folder.iterdir())
    assert not list(folder.glob("*.csv")) and not list(folder.glob("*.parquet")), left
    assert left and all(files.is_temporary(folder / name) for name in left), left
    # the rerun (Airflow's retry) writes the whole list and sweeps the remnant
    ref.finish(settings, i, i + 1)
    problems = ps.diff(ref.picture_before(i + 1), ps.picture(settings))
    assert not problems, "\n".join(problems[:25])
    assert not ps.temporaries(settings)


# the writes that are not atomic on purpose, each for a stated reason
ALLOWED_WRITERS = {
    ("pipelines/files.py", None),                 # the one atomic writer
    ("pipelines/demo_data/", None),               # sample data for tests and `make run`, not pipeline output
    ("pipelines/outputs/workbook.py", "wb.save(buf)"),          # into memory
    ("pipelines/outputs/oversight.py", "wb.save(buf)"),         # into memory (the chart sheet added)
    ("pipelines/inbox.py", "wb.save(path)"),                    # into the temporary of inbox._atomic_write
    ("pipelines/inbox.py", "tmp.write_text("),                  # the same
    ("pipelines/ingest.py", 'open(out, "w"'),                   # a pulled snapshot in a private temp folder
    ("pipelines/ingest.py", '(tmp / "manifest.json").write_text('),  # a temp folder renamed into place whole
    ("pipelines/outputs/reminders.py", "self._writers[path].write_table("),  # staged in a private temp folder
}
WRITER = re.compile(r"""write_bytes\(|write_text\(|to_parquet\(|write_table\(|open\([^)]*["'][wa]b?["']|\.save\(""")


def test_every_file_writer_in_the_package_goes_through_pipelines_files():
    offenders = []
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if (rel, None) in ALLOWED_WRITERS or (f"{path.parent.relative_to(ROOT)}/", None) in ALLOWED_WRITERS:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if not WRITER.search(code) or "atomic_write" in code:
                continue
            if any(rel == f and snippet and snippet in code for f, snippet in ALLOWED_WRITERS):
                continue
            offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "write through pipelines.files instead:\n" + "\n".join(offenders)
