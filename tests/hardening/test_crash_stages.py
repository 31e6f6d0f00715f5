"""Crash safety (issue 8, item 3): every task of mianshen_nightly fails midway,
after it has written part of its output, and is rerun; the files under
output/<as_of>/ and work/ and the whole warehouse (ledger rows, statuses, the
transition log, matches, batches, audit rows) end exactly as after a clean run.

The stage functions are called directly (the DAG tasks call exactly these);
tests/hardening/test_crash_dag.py does one clear-and-rerun through dag.test().
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from tests.hardening import pipeline_state as ps


class Crash(RuntimeError):
    """The injected fault: the worker dies here."""


@pytest.fixture(scope="session")
def ref(tmp_path_factory):
    return ps.reference(tmp_path_factory.getbasetemp() / "hardening_reference")


class WriteFault:
    """Make the n-th file written (through pipelines.files) whose path matches
    `pattern` fail before it is published; record what was published before."""

    def __init__(self, monkeypatch, n: int, pattern: str = "*", exclude: str = "*/validation_cache/*"):
        from pipelines import files

        self.n, self.pattern, self.seen, self.published = n, pattern, 0, []
        real = files.atomic_write

        def fake(path, write, before_publish=None):
            # (the validation cache is a cache of GX's results, written beside the stage's files)
            if fnmatch.fnmatch(str(path), self.pattern) and not fnmatch.fnmatch(str(path), exclude):
                self.seen += 1
                if self.seen == self.n:
                    raise Crash(f"worker killed before {Path(path).name} was published")
            out = real(path, write, before_publish)
            if not fnmatch.fnmatch(str(path), exclude):
                self.published.append(Path(path))
            return out

        monkeypatch.setattr(files, "atomic_write", fake)


def _fail_call(monkeypatch, module, name: str, after: int = 0):
    """module.name raises on its (after+1)-th call."""
    real = getattr(module, name)
    calls = {"n": 0}

    def fake(*a, **k):
        calls["n"] += 1
        if calls["n"] > after:
            raise Crash(f"worker killed in {name}")
        return real(*a, **k)

    monkeypatch.setattr(module, name, fake)


def _fail_move_to(monkeypatch, status: str):
    """ledger.move_all raises when it would move rows to `status`."""
    from pipelines import ledger

    real = ledger.move_all

    def fake(conn, current, to, *a, **k):
        if to == status:
            raise Crash(f"worker killed moving rows to {to}")
        return real(conn, current, to, *a, **k)

    monkeypatch.setattr(ledger, "move_all", fake)


def _assert_same(ref, settings, index: int) -> None:
    expected = ref.final if index >= len(ref.order) else ref.picture_before(index)
    got = ps.picture(settings)
    problems = ps.diff(expected, got)
    assert not problems, "\n".join(problems[:25])


def _crash_and_rerun(ref, monkeypatch, name, as_of, inject, follow: int = 1):
    """Check out the installation before the stage, run it with the fault, check
    that it failed midway, undo the fault, rerun it and `follow` stages after it,
    and compare with the reference at that point."""
    i = ref.index(name, as_of)
    settings = ref.checkout(i)
    before = ps.picture(settings)["files"]
    with monkeypatch.context() as m:
        fault = inject(m)
        with pytest.raises(Crash):
            ref.order[i].call(settings)
    after_crash = ps.picture(settings)["files"]
    ref.finish(settings, i, min(i + 1 + follow, len(ref.order)))
    _assert_same(ref, settings, min(i + 1 + follow, len(ref.order)))
    assert not ps.temporaries(settings)
    return fault, before, after_crash, settings


# ---------------------------------------------------------------- ingest_<feed>, validate_<feed>

@pytest.mark.parametrize("feed", ps.FEEDS)
def test_ingest_dies_after_the_staged_file(ref, monkeypatch, feed):
    # ingest writes staged, quarantine, then <feed>.ingest.json: die at the quarantine file
    fault, before, after, _ = _crash_and_rerun(
        ref, monkeypatch, f"ingest_{feed}", ps.N1, lambda m: WriteFault(m, 2, "*.parquet"), follow=1)
    assert [p.parent.parent.name for p in fault.published] == ["staged"], fault.published
    assert not any(k.endswith(f"{feed}.ingest.json") for k in after), "the task did not die midway"


@pytest.mark.parametrize("feed", ps.FEEDS)
def test_validate_dies_after_the_quarantine_list(ref, monkeypatch, feed):
    # validate writes the quarantine CSV, the validated Parquet, its JSON, the verdict:
    # die at the validated Parquet
    fault, before, after, _ = _crash_and_rerun(
        ref, monkeypatch, f"validate_{feed}", ps.N1, lambda m: WriteFault(m, 2), follow=0)
    assert [p.name for p in fault.published] == [f"{feed}_quarantine.csv"]
    assert not any(k.endswith(f"quality/{feed}.json") for k in after)


# ---------------------------------------------------------------- gate, portrait, match

def test_quality_gate_dies_before_its_verdict(ref, monkeypatch):
    _, _, after, _ = _crash_and_rerun(ref, monkeypatch, "quality_gate", ps.N1, lambda m: WriteFault(m, 1))
    assert not any(k.endswith("gate.json") for k in after)


def test_portrait_dies_while_writing(ref, monkeypatch):
    from pipelines import files

    def torn(m):
        # the Parquet writer dies half-way through the file: nothing is published
        real = files.atomic_write

        def half(path, write):
            def partial(fh):
                import io
                buf = io.BytesIO()
                write(buf)
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                raise Crash("killed mid-write")
            return real(path, partial)
        m.setattr(files, "atomic_write", half)

    _, before, after, _ = _crash_and_rerun(ref, monkeypatch, "build_portrait", ps.N1, torn)
    assert after == before    # not a byte of a half portrait is visible


def test_match_dies_after_the_policy_errors_file_before_the_results(ref, monkeypatch):
    # matches.parquet is streamed to a temporary file, the errors file is published when its
    # last row is written, and the results are published last: die between the two
    from pipelines import match

    def inject(m):
        real = match.write_json_atomic

        def then_die(data, path):
            real(data, path)
            raise Crash(f"worker killed after {Path(path).name} was published")
        m.setattr(match, "write_json_atomic", then_die)

    _, _, after, _ = _crash_and_rerun(ref, monkeypatch, "match_policies", ps.N1, inject)
    assert any(k.endswith("policy_errors.json") and "2026-11-26" in k for k in after)
    assert not any(k.endswith("matches.parquet") and "2026-11-26" in k for k in after)


# ---------------------------------------------------------------- ledger_and_outputs (night 2: every list)

LEDGER_FAULTS = {
    # after the first commit (matches stored, ledger synced), before the notification move
    "after_sync_commit": lambda m: _fail_call(m, __import__("pipelines.ledger", fromlist=["x"]), "notify"),
    # the SMS CSV is out, its workbook is not
    "second_sms_file": lambda m: WriteFault(m, 2, "*/sms/*"),
    # the review workbook stage dies (notification committed; the SMS outbox is written after
    # the night's last move, so no list of tonight's is out yet)
    "review": lambda m: _fail_call(m, __import__("pipelines.outputs.review", fromlist=["x"]), "write"),
    # inside the payout transaction, after the batch row and its items were inserted
    # (the batch's rows move to scheduled in one set-based move_all)
    "inside_payout_transaction": lambda m: _fail_move_to(m, "scheduled"),
    # the batch is committed, its lists are not written yet
    "after_payout_commit": lambda m: _fail_call(m, __import__("pipelines.ledger", fromlist=["x"]), "batch_rows"),
    # payout.csv is out, payout.parquet is not
    "second_payout_file": lambda m: WriteFault(m, 2, "*/payout/*"),
    # every list is out, ledger.json is not
    "ledger_json": lambda m: WriteFault(m, 1, "*/ledger.json"),
}


@pytest.mark.parametrize("where", sorted(LEDGER_FAULTS))
def test_ledger_and_outputs_dies_midway(ref, monkeypatch, where):
    fault, before, after, settings = _crash_and_rerun(
        ref, monkeypatch, "ledger_and_outputs", ps.N2, LEDGER_FAULTS[where], follow=1)
    assert after != before or where in ("after_sync_commit", "review")
    # the rerun made exactly one batch for the date, with the reference's rows
    state = ps.warehouse_state(settings.warehouse_url)
    assert [b[0] for b in state["batches"]] == ["PB-20261127-01"]
    assert state["items"] == ref.final["warehouse"]["items"]


def test_run_report_dies_after_the_html(ref, monkeypatch):
    fault, _, after, _ = _crash_and_rerun(ref, monkeypatch, "run_report", ps.N2, lambda m: WriteFault(m, 2),
                                          follow=0)
    assert [p.name for p in fault.published] == ["report.html"]


# ---------------------------------------------------------------- a crash, then the whole rest of the chain

def test_a_crash_in_validate_then_everything_after_it_ends_as_a_clean_run(ref, monkeypatch):
    i = ref.index("validate_tax", ps.N2)
    settings = ref.checkout(i)
    with monkeypatch.context() as m:
        WriteFault(m, 2)
        with pytest.raises(Crash):
            ref.order[i].call(settings)
    ref.finish(settings, i)
    _assert_same(ref, settings, len(ref.order))
