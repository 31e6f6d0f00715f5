"""Crash safety of mianshen_inbox's one task, process_inbox (issue 8, item 3):
the pass dies midway — inside a returned file after some of its rows were
committed, after the answer but before the journal line, after the journal
line but before the file is moved — and the next pass ends with the ledger
(rows, statuses, the transition log), the journal and the archive exactly as
after a clean pass, and an answer with the same content."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from openpyxl import load_workbook

from tests.hardening import pipeline_state as ps

NOW = datetime.now(timezone.utc)   # one pass time for the clean and the crashed passes (files are dropped just before)


class Killed(BaseException):
    """The worker process dies (not an error a handler would catch)."""


@pytest.fixture(scope="session")
def ref(tmp_path_factory):
    return ps.reference(tmp_path_factory.getbasetemp() / "hardening_reference")


def _drop(settings) -> None:
    state = ps.warehouse_state(settings.warehouse_url)
    notified = [k for k, r in sorted(state["ledger"].items()) if r["status"] == "notified"][:4]
    assert len(notified) == 4
    rows = [f"{k[2]},{k[0]},{k[1]},{'放弃' if n == 3 else '确认申领'},已承诺,{state['ledger'][k]['name']},工行,"
            f"622202000000{n:04d}" for n, k in enumerate(notified)]
    folder = settings.inbox / "_confirmations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "意愿确认.csv").write_text(
        "\ufeff统一社会信用代码,政策编号,期次,确认结果,信用承诺,收款户名,开户银行,银行账号\r\n" + "\r\n".join(rows)
        + "\r\n", encoding="utf-8")


def _outcome(settings) -> dict:
    """The ledger, the journal (without clock times), what is archived, and the answers' cells."""
    import json

    root = settings.inbox
    journal = [{k: v for k, v in json.loads(line).items() if k != "processed_at"}
               for line in (root / "_state" / "processed.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = sorted(root.glob("_outbox/**/*.xlsx"))
    cells = [[list(r) for r in load_workbook(a).worksheets[0].iter_rows(values_only=True)] for a in answers]
    warehouse = ps.warehouse_state(settings.warehouse_url)
    return {"ledger": warehouse["ledger"], "transitions": warehouse["transitions"], "journal": journal,
            "archived": sorted(str(p.relative_to(root)) for p in root.glob("_archive/**/*") if p.is_file()),
            "left": sorted(p.name for p in (root / "_confirmations").iterdir()),
            "answers": cells}


@pytest.fixture
def clean(ref):
    from pipelines import inbox

    settings = ref.checkout(ref.index("ledger_and_outputs", ps.N2))
    _drop(settings)
    [result] = inbox.process(settings, now=max(NOW, datetime.now(timezone.utc)), settle_seconds=0)
    assert (result["status"], result.get("errors")) == ("accepted", 0), result
    return _outcome(settings)


def _kill_on(monkeypatch, module, name: str, call: int) -> None:
    real = getattr(module, name)
    seen = {"n": 0}

    def fake(*a, **k):
        seen["n"] += 1
        if seen["n"] == call:
            raise Killed(name)
        return real(*a, **k)

    monkeypatch.setattr(module, name, fake)


@pytest.mark.parametrize("where", ["third_row", "before_journal", "before_move"])
def test_process_inbox_dies_midway_and_the_next_pass_ends_as_a_clean_one(ref, clean, monkeypatch, where):
    from pipelines import inbox, ledger

    settings = ref.checkout(ref.index("ledger_and_outputs", ps.N2))
    _drop(settings)
    with monkeypatch.context() as m:
        if where == "third_row":          # rows 1 and 2 are committed, row 3 dies
            _kill_on(m, ledger, "transition", 3)
        elif where == "before_journal":   # handled and answered, not journaled
            _kill_on(m, inbox, "_append_journal", 1)
        else:                             # journaled, not moved out of the drop folder
            _kill_on(m, inbox, "_move", 1)
        with pytest.raises(Killed):
            inbox.process(settings, now=max(NOW, datetime.now(timezone.utc)), settle_seconds=0)
    if where == "third_row":
        moved = ps.warehouse_state(settings.warehouse_url)["transitions"]
        assert sum(1 for chain in moved.values() for m in chain if m[4] is not None and m[3] == "意愿确认.csv") == 2

    [result] = inbox.process(settings, now=max(NOW, datetime.now(timezone.utc)), settle_seconds=0)
    assert result["status"] == ("recovered" if where == "before_move" else "accepted")
    assert result.get("errors", 0) == 0          # rows applied before the crash read as applied
    got = _outcome(settings)
    if where == "before_journal":
        # the dead pass had already answered: the sender finds the same answer twice
        # (never overwritten: the journal names the second one)
        assert got["answers"] == clean["answers"] * 2
        assert got["journal"][0]["answer"] == clean["journal"][0]["answer"].replace(".xlsx", "_2.xlsx")
        got["answers"], got["journal"][0]["answer"] = clean["answers"], clean["journal"][0]["answer"]
    problems = ps.diff(clean, got)
    assert not problems, "\n".join(problems[:20])
