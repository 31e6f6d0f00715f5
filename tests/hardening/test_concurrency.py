"""Concurrency (issue 8, item 4): the nightly ledger step and the inbox at once,
two runs of the same date at once, returned files arriving during a run —
threads calling the stage functions against the SAME warehouse, on SQLite and
on PostgreSQL (a fresh schema per test, dropped afterwards).

The ledger must stay consistent: one row per key, every logged move allowed
and chained (each move starts where the previous one ended, the last one is
the row's status), nothing scheduled or paid twice, one item per scheduled
row, one batch number per date and batch.
"""
from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from tests.conftest import postgres_schema
from tests.hardening import pipeline_state as ps


@pytest.fixture(scope="session")
def ref(tmp_path_factory):
    return ps.reference(tmp_path_factory.getbasetemp() / "hardening_reference")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request):
    from pipelines import warehouse

    if request.param == "sqlite":
        yield None
        warehouse.dispose_all()
        return
    with postgres_schema("cc") as url:
        yield url


def before_night_2_ledger(ref, url):
    """The installation just before night 2's ledger step; on PostgreSQL the
    warehouse is rebuilt there from night 1's files (same stages as the reference)."""
    i = ref.index("ledger_and_outputs", ps.N2)
    settings = ref.checkout(i, url)
    if url:
        ps.run_stages(settings, [ref.order[ref.index("ledger_and_outputs", ps.N1)],
                                 ref.order[ref.index("run_report", ps.N1)]])
        ps.returned_files_moves(settings, ps.N2)
    return settings, i


def at_once(*calls, timeout: float = 120) -> list:
    """Run the calls in threads released together; their results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(n, fn):
        barrier.wait()
        try:
            results[n] = fn()
        except BaseException as exc:   # reported by the test
            results[n] = exc

    threads = [threading.Thread(target=worker, args=(n, fn)) for n, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a concurrent call hung (deadlock?)"
    return results


def assert_consistent(url: str) -> dict:
    """The ledger's invariants; returns the warehouse's tables for further checks."""
    from pipelines import warehouse as wh

    allowed = set(wh.TRANSITIONS) | {(None, "eligible"), ("eligible", "eligible")}
    with wh.connect(url).connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(wh.ledger))}
        moves = conn.execute(sa.select(wh.ledger_transitions).order_by(wh.ledger_transitions.c.id)).all()
        items = conn.execute(sa.select(wh.payout_items)).all()
        batches = conn.execute(sa.select(wh.payout_batches)).all()
        conn.rollback()
    keys = Counter((r.policy_id, r.period, r.uscc) for r in rows.values())
    assert max(keys.values(), default=1) == 1, "a key has two ledger rows"
    chains: dict[int, list] = {}
    for m in moves:
        assert (m.from_status, m.to_status) in allowed, f"move {m.from_status} -> {m.to_status} not allowed"
        chain = chains.setdefault(m.ledger_id, [])
        assert m.from_status == (chain[-1] if chain else None), f"ledger row {m.ledger_id}: broken chain"
        chain.append(m.to_status)
    for ledger_id, row in rows.items():
        assert chains.get(ledger_id, [None])[-1] == row.status, f"row {ledger_id}: status not its last move"
        chain = chains[ledger_id]
        assert chain.count("scheduled") <= 1 and chain.count("paid") <= 1, f"row {ledger_id} scheduled/paid twice"
    on_batch = Counter(i.ledger_id for i in items)
    assert max(on_batch.values(), default=1) == 1
    assert set(on_batch) == {i for i, r in rows.items() if r.status in ("scheduled", "paid")}
    assert len({b.batch_id for b in batches}) == len(batches)
    for b in batches:
        mine = [i for i in items if i.batch_id == b.batch_id]
        assert b.items == len(mine) and b.total == sum(i.amount for i in mine), b.batch_id
        assert b.batch_id.startswith(f"PB-{b.as_of:%Y%m%d}-")
    per_date = Counter(b.as_of for b in batches)
    assert all(n == 1 for n in per_date.values()), f"more than one batch for a date: {per_date}"
    return {"rows": rows, "moves": moves, "items": items, "batches": batches}


# ---------------------------------------------------------------- two runs of the same date

def test_two_runs_of_the_same_date_at_once(ref, backend):
    from pipelines import handoff, warehouse

    settings, i = before_night_2_ledger(ref, backend)
    run = lambda: handoff.ledger_and_outputs(settings, ps.N2, ps.run_id(ps.N2))  # noqa: E731
    first, second = at_once(run, run, run)[:2]
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    assert first["payout_batches"] == second["payout_batches"] == ["PB-20261127-01"]
    assert assert_consistent(settings.warehouse_url)
    # the same files and ledger as one clean run of the date
    expected = ref.picture_before(i + 1)
    got = ps.picture(settings)
    assert not ps.diff(expected["files"], got["files"])
    for table in ("ledger", "transitions", "batches", "items", "matches"):
        assert not ps.diff(expected["warehouse"][table], got["warehouse"][table]), table
    warehouse.dispose_all()


# ---------------------------------------------------------------- the nightly and the inbox at once

def _drop_returns(settings, state) -> dict:
    """A confirmation file for two notified results and an objection against the
    result night 2 is about to put on the payout list."""
    notified = [k for k, r in sorted(state["ledger"].items()) if r["status"] == "notified"][:2]
    payable = [k for k, r in sorted(state["ledger"].items())
               if r["status"] == "approved" and r["publicity_to"] and r["publicity_to"] < ps.N2]
    assert notified and payable
    folder = settings.inbox / "_confirmations"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["统一社会信用代码,政策编号,期次,确认结果,信用承诺,收款户名,开户银行,银行账号"] + [
        f"{k[2]},{k[0]},{k[1]},确认申领,已承诺,{state['ledger'][k]['name']},工行,6222020000001234" for k in notified]
    (folder / "确认结果.csv").write_text("\ufeff" + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    folder = settings.inbox / "_objections"
    folder.mkdir(parents=True, exist_ok=True)
    k = payable[0]
    (folder / "公示异议.csv").write_text(
        "\ufeff统一社会信用代码,政策编号,期次,异议内容\r\n" + f"{k[2]},{k[0]},{k[1]},该企业实际参保人数不足\r\n",
        encoding="utf-8")
    return {"notified": notified, "contested": k}


def test_nightly_and_inbox_at_once_with_files_arriving_during_the_run(ref, backend):
    from pipelines import inbox, nightly, warehouse

    settings, i = before_night_2_ledger(ref, backend)
    settings.inbox.mkdir(parents=True, exist_ok=True)
    dropped = _drop_returns(settings, ps.warehouse_state(settings.warehouse_url))
    passes = lambda: [inbox.process(settings, settle_seconds=0) for _ in range(3)]  # noqa: E731
    night = lambda: nightly.downstream(settings, ps.N2, ps.run_id(ps.N2))  # noqa: E731
    result_night, result_inbox, result_inbox2 = at_once(night, passes, passes)
    assert isinstance(result_night, dict), result_night
    assert isinstance(result_inbox, list) and isinstance(result_inbox2, list), (result_inbox, result_inbox2)
    taken = [r for rs in result_inbox + result_inbox2 for r in rs if r["status"] in ("accepted", "rejected")]
    assert sorted(r["folder"] for r in taken) == ["_confirmations", "_objections"]   # each file exactly once

    # the next night's retry of the step changes nothing that was decided
    state = assert_consistent(settings.warehouse_url)
    nightly.downstream(settings, ps.N2, ps.run_id(ps.N2))
    again = assert_consistent(settings.warehouse_url)
    assert [(m.ledger_id, m.to_status) for m in again["moves"]] == [(m.ledger_id, m.to_status) for m in state["moves"]]

    by_key = {(r.policy_id, r.period, r.uscc): r for r in state["rows"].values()}
    assert {by_key[k].status for k in dropped["notified"]} == {"confirmed"}
    contested = by_key[dropped["contested"]]
    # either the objection came first (no payout for it) or the batch did (objection refused)
    if contested.status == "objected":
        assert contested.id not in {it.ledger_id for it in state["items"]}
    else:
        assert contested.status == "scheduled"
    moved = Counter((m.ledger_id, m.to_status) for m in state["moves"])
    assert max(moved.values()) == 1
    warehouse.dispose_all()


def test_two_inbox_passes_and_a_payment_during_the_payout_run(ref, backend):
    """A payment file for the batch arrives while night 2 is still writing it:
    it is either applied after the batch is committed or refused (not on a
    batch yet), never paid twice, and a resend after the night pays it once."""
    from pipelines import handoff, inbox, warehouse

    settings, i = before_night_2_ledger(ref, backend)
    state = ps.warehouse_state(settings.warehouse_url)
    payable = [k for k, r in sorted(state["ledger"].items())
               if r["status"] == "approved" and r["publicity_to"] and r["publicity_to"] < ps.N2]
    k = payable[0]
    amount = state["ledger"][k]["amount"]
    folder = settings.inbox / "_payments"
    folder.mkdir(parents=True, exist_ok=True)
    body = ("\ufeff批次号,统一社会信用代码,政策编号,期次,实付金额,支付日期\r\n"
            f"PB-20261127-01,{k[2]},{k[0]},{k[1]},{amount},2026-11-28\r\n")
    (folder / "回单.csv").write_text(body, encoding="utf-8")
    run = lambda: handoff.ledger_and_outputs(settings, ps.N2, ps.run_id(ps.N2))  # noqa: E731
    passes = lambda: [inbox.process(settings, settle_seconds=0) for _ in range(2)]  # noqa: E731
    out = at_once(run, passes, passes)
    assert isinstance(out[0], dict), out[0]
    (folder / "回单（重发）.csv").write_text(body + "\r\n", encoding="utf-8")   # other bytes: a new file
    inbox.process(settings, settle_seconds=0)
    final = assert_consistent(settings.warehouse_url)
    row = next(r for r in final["rows"].values() if (r.policy_id, r.period, r.uscc) == k)
    assert row.status == "paid"
    assert sum(1 for m in final["moves"] if m.ledger_id == row.id and m.to_status == "paid") == 1
    warehouse.dispose_all()
