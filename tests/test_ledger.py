"""The ledger state machine and the nightly moves, on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from h5_support import code, db_url, engine, match, table  # noqa: F401  (fixtures)
from pipelines import ledger, warehouse
from pipelines.warehouse import ledger as ledger_t, ledger_transitions
from pipelines.workdays import WorkCalendar

D1 = date(2026, 11, 26)
KEY = ("WL-RS-2026-01", "2026", code(1))


def sync(engine, rows, as_of=D1, run="r1", days=None):
    with engine.begin() as conn:
        return ledger.sync_from_matches(conn, as_of, table(rows), run, days)


def move(engine, key, to, amount=None, source="test"):
    with engine.begin() as conn:
        return ledger.transition(conn, key, to, source, "区人力资源和社会保障局", amount=amount)


def snapshot(engine):
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ledger_t.c.policy_id, ledger_t.c.period, ledger_t.c.uscc,
                                      ledger_t.c.status, ledger_t.c.amount)
                            .order_by(ledger_t.c.id)).all()
        log = conn.execute(sa.select(sa.func.count()).select_from(ledger_transitions)).scalar()
    return rows, log


def test_rerun_of_the_same_date_adds_nothing_and_keeps_later_states(engine):
    rows = [match(n=1), match(n=2), match(n=3, outcome="near_miss", amount=None),
            match(n=4, kind="manual", amount=None, policy_id="WL-M-01")]
    assert sync(engine, rows)["new"] == 2
    assert move(engine, KEY, "notified") is None
    before = snapshot(engine)
    assert sync(engine, rows, run="r1-retry") == {"new": 0, "amount_changed": 0, "seen": 2}
    assert snapshot(engine) == before
    assert [r.status for r in before[0]] == ["notified", "eligible"]  # manual never enters


def test_new_rows_told_by_the_sync_end_as_a_sync_then_notify_leaves_them(engine, tmp_path):
    """The nightly run's sync inserts tonight's new rows told (notify=True) instead of moving
    them afterwards: over two nights (a held policy, its hold released, a row found the second
    night, a row already told), the ledger and each row's logged moves are what the plain sync
    followed by `notify` leaves; only the order of different rows' moves in the log differs."""
    d2 = D1 + timedelta(days=1)
    nights = [(D1, [match(n=1), match(n=2, amount="1.00"), match(n=3, policy_id="WL-B-01", over_budget=True),
                    match(n=4, kind="manual", amount=None, policy_id="WL-M-01")]),
              (d2, [match(n=1), match(n=2, amount="1.00"), match(n=3, policy_id="WL-B-01", over_budget=True),
                    match(n=5), match(n=6, policy_id="WL-B-01", over_budget=True)])]
    ends = []
    for told, into in ((False, warehouse.connect(f"sqlite:///{tmp_path / 'moved.db'}")), (True, engine)):
        notified = []
        for as_of, rows in nights:
            with into.begin() as conn:
                if as_of == d2:
                    ledger.release_budget_hold(conn, "WL-B-01", "2026", "张科长")
                ledger.sync_from_matches(conn, as_of, table(rows), f"run-{as_of}", {"WL-B-01": 5}, notify=told)
            with into.begin() as conn:
                notified.append(ledger.notify(conn, as_of, f"run-{as_of}"))
        with into.connect() as conn:   # (by key: the reference is a SQLite file, the engine may not be)
            stored = {(r.policy_id, r.period, r.uscc): {k: v for k, v in r._mapping.items()
                                                         if k not in ("id", "updated_at")}
                      for r in conn.execute(sa.select(ledger_t).order_by(ledger_t.c.id))}
            t = ledger_transitions.c
            log = [(r.policy_id, r.period, r.uscc, *r[3:]) for r in conn.execute(
                sa.select(ledger_t.c.policy_id, ledger_t.c.period, ledger_t.c.uscc, t.from_status, t.to_status,
                          t.run_id, t.source_file, t.department, t.amount, t.note, t.as_of)
                .join_from(ledger_transitions, ledger_t, ledger_t.c.id == t.ledger_id).order_by(t.ledger_id, t.id))]
        ends.append((notified, stored, log))
    assert ends[1] == ends[0]
    notified, stored, log = ends[1]
    assert notified == [2, 3]   # n=1, n=2; then n=3 and n=6 (released) and n=5
    assert [(key[2], r["status"], r["notified_as_of"]) for key, r in stored.items()] == [
        (code(1), "notified", D1), (code(2), "notified", D1), (code(3), "notified", d2),
        (code(5), "notified", d2), (code(6), "notified", d2)]
    assert [m[3:5] for m in log if m[2] == code(1)] == [(None, "eligible"), ("eligible", "notified")]


def test_a_sync_refuses_results_of_one_policy_that_disagree_on_its_name(engine):
    """What is the same for every result of a policy is loaded once per policy: results that
    say otherwise are a broken file, not something to pick one of (and nothing is stored)."""
    rows = [match(n=1), match(n=2, policy_name="另一个名称")]
    with pytest.raises(ValueError, match="WL-RS-2026-01"):
        sync(engine, rows)
    assert snapshot(engine) == ([], 0)


def test_a_sync_fed_a_stream_of_batches_stores_what_the_whole_table_stores(engine, tmp_path):
    """The nightly stage streams the night's results into the sync a batch at a time (a
    province's first night is millions of rows with evidence): batches of one row, a table,
    rows that are not eligible and an empty batch end as the whole table does (on SQLite)."""
    rows = [match(n=3, amount="1.00"), match(n=1), match(n=5, outcome="near_miss", amount=None),
            match(n=2, policy_id="WL-KJ-01", amount="12345.67"),
            match(n=4, kind="manual", amount=None, policy_id="WL-M-01"), match(n=6, over_budget=True)]
    results = table(rows)
    streamed = [*results.slice(0, 2).to_batches(max_chunksize=1), results.slice(2, 0), results.slice(2)]
    states = []
    for source, into in ((results, warehouse.connect(f"sqlite:///{tmp_path / 'whole.db'}")), (streamed, engine)):
        with into.begin() as conn:
            counts = ledger.sync_from_matches(conn, D1, source, "r1", {"WL-KJ-01": 5})
        with into.connect() as conn:
            stored = [tuple(r) for r in conn.execute(sa.select(*(c for c in ledger_t.c if c.name != "updated_at"))
                                                       .order_by(ledger_t.c.id))]
            log = [tuple(r) for r in conn.execute(
                sa.select(ledger_transitions.c.ledger_id, ledger_transitions.c.to_status,
                          ledger_transitions.c.amount, ledger_transitions.c.note).order_by(ledger_transitions.c.id))]
        states.append((counts, stored, log))
    assert states[1] == states[0]
    assert states[0][0] == {"new": 4, "amount_changed": 0, "seen": 4}
    assert [r[3] for r in states[0][1]] == [code(3), code(1), code(2), code(6)]


def test_a_streamed_read_gives_the_values_an_ordinary_read_gives(engine):
    """`ledger.stream` reads SQLite's money, dates and times as text and casts them in Arrow;
    the values must be those SQLAlchemy's types give, also for text Arrow cannot read
    (written by hand: a padded amount falls back to the type's own conversion)."""
    sync(engine, [match(n=n, amount=f"{n}.5") for n in range(1, 6)])
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":   # (while eligible: later the amount is fixed)
            conn.exec_driver_sql("UPDATE ledger SET amount = '1E+2' WHERE id = 1")
            conn.exec_driver_sql("UPDATE ledger SET last_match_amount = ' 5.00' WHERE id = 2")
        ledger.notify(conn, D1, "r1")
    query = sa.select(*ledger.listed_columns()).order_by(ledger_t.c.id)
    with engine.connect() as conn:
        expected = [tuple(r) for r in conn.execute(query)]
        streamed = [tuple(r.values()) for t in ledger.stream(conn, query, rows=2) for r in t.to_pylist()]
        # a connection that streams already (its result reads a row ahead): no row is skipped
        ahead = conn.execution_options(stream_results=True, yield_per=2)
        streamed_ahead = [tuple(r.values()) for t in ledger.stream(ahead, query, rows=2) for r in t.to_pylist()]
    at = {c.name: i for i, c in enumerate(ledger.listed_columns())}
    assert streamed == expected
    assert streamed_ahead == expected
    assert [r[at["notified_as_of"]] for r in streamed] == [D1] * 5
    if engine.dialect.name == "sqlite":
        assert streamed[0][at["amount"]] == Decimal("100.00") and streamed[1][at["last_match_amount"]] == Decimal("5.00")


def test_a_sync_logs_each_new_row_once_in_the_ledger_order(engine):
    """The same run and date again with more rows (a rerun after the night's results grew):
    only the rows not logged yet get their first transition, in the order of the ledger's ids."""
    assert sync(engine, [match(n=2), match(n=1)])["new"] == 2
    assert sync(engine, [match(n=n) for n in (4, 1, 3, 2)])["new"] == 2
    with engine.connect() as conn:
        created = conn.execute(sa.select(ledger_transitions.c.ledger_id)
                               .where(ledger_transitions.c.from_status.is_(None))
                               .order_by(ledger_transitions.c.id)).scalars().all()
        ids = conn.execute(sa.select(ledger_t.c.id).order_by(ledger_t.c.id)).scalars().all()
    assert created == ids and len(ids) == 4


def test_amount_follows_the_newest_run_only_while_eligible(engine):
    sync(engine, [match(n=1), match(n=2)])
    move(engine, KEY, "notified")
    d2 = D1 + timedelta(days=1)
    out = sync(engine, [match(n=1, amount="6000.00"), match(n=2, amount="7000.00")], d2, "r2")
    assert out["amount_changed"] == 1
    with engine.connect() as conn:
        got = {r.uscc: (r.amount, r.last_match_amount, r.last_run)
               for r in conn.execute(sa.select(ledger_t))}
        notes = conn.execute(sa.select(ledger_transitions.c.note)
                             .where(ledger_transitions.c.from_status == "eligible",
                                    ledger_transitions.c.to_status == "eligible")).scalars().all()
    assert got[code(1)] == (Decimal("5000.00"), Decimal("6000.00"), "r2")  # told 5000: fixed
    assert got[code(2)] == (Decimal("7000.00"), Decimal("7000.00"), "r2")
    assert notes == ["金额调整：5000.00 → 7000.00"]


def _rows_written(conn) -> int:
    """How many ledger rows were written since `_count_writes` (SQLite: a temporary trigger;
    PostgreSQL: rows whose version (xmin) is not the one recorded)."""
    if conn.dialect.name == "sqlite":
        return conn.exec_driver_sql("SELECT count(DISTINCT id) FROM temp.written").scalar_one()
    return conn.exec_driver_sql("SELECT count(*) FROM ledger JOIN xmins USING (id) "
                                "WHERE ledger.xmin::text <> xmins.version").scalar_one()


def _count_writes(conn) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("CREATE TEMP TABLE written (id INTEGER)")
        conn.exec_driver_sql("CREATE TEMP TRIGGER count_writes AFTER UPDATE ON main.ledger "
                             "BEGIN INSERT INTO written VALUES (NEW.id); END")
    else:
        conn.exec_driver_sql("CREATE TEMP TABLE xmins AS SELECT id, xmin::text AS version FROM ledger")


def test_a_rerun_of_the_date_rewrites_no_ledger_row_and_a_later_run_each_it_found(engine):
    """The sync writes the newest run's figures only where they differ: a rerun of the date
    (a province's ledger after a crash) leaves every row untouched; the next night's run, a
    changed budget flag or a changed amount are still written."""
    rows = [match(n=1), match(n=2), match(n=3, policy_id="WL-B-01")]
    sync(engine, rows, days={"WL-B-01": 5})
    with engine.connect() as conn:
        _count_writes(conn)
        ledger.sync_from_matches(conn, D1, table(rows), "r1", {"WL-B-01": 5})
        assert _rows_written(conn) == 0
        ledger.sync_from_matches(conn, D1, table([match(n=1), match(n=2, amount="5100.00"),
                                                  match(n=3, policy_id="WL-B-01", over_budget=True)]),
                                 "r1", {"WL-B-01": 5})
        assert _rows_written(conn) == 2
        d2 = D1 + timedelta(days=1)
        ledger.sync_from_matches(conn, d2, table(rows), "r2", {"WL-B-01": 5})
        got = conn.execute(sa.select(ledger_t.c.uscc, ledger_t.c.last_run, ledger_t.c.last_as_of,
                                     ledger_t.c.amount, ledger_t.c.over_budget).order_by(ledger_t.c.id)).all()
        assert [tuple(r) for r in got] == [(code(n), "r2", d2, Decimal("5000.00"), False) for n in (1, 2, 3)]
        assert _rows_written(conn) == 3
        conn.rollback()


def test_two_syncs_at_once_leave_one_set_of_rows(db_url, engine):
    rows = [match(n=i) for i in range(1, 41)]
    errors, barrier = [], threading.Barrier(2)

    def worker(run):
        try:
            barrier.wait()
            with warehouse.engine_for(db_url).begin() as conn:
                ledger.sync_from_matches(conn, D1, table(rows), run)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"r{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ledger_rows, log = snapshot(engine)
    assert len(ledger_rows) == 40 and log == 40   # one creation entry per row


@pytest.mark.parametrize("key,to,amount,reason", [
    (("WL-RS-2026-01", "2026", code(9)), "confirmed", None, "无此匹配结果"),
    (KEY, "approved", None, "当前状态为“已通知”，不能变更为“审核通过”"),
    (KEY, "confirmed", Decimal("4999.99"), "金额 4,999.99 元与台账金额 5,000.00 元不一致"),
])
def test_each_refusal_changes_nothing(engine, key, to, amount, reason):
    sync(engine, [match(n=1)])
    move(engine, KEY, "notified")
    before = snapshot(engine)
    refused = move(engine, key, to, amount)
    assert refused is not None and reason in refused
    assert snapshot(engine) == before


def test_compare_and_set_lets_only_one_of_two_racing_moves_through(engine):
    sync(engine, [match(n=1)])
    with engine.begin() as conn:
        row = ledger.get(conn, KEY)
    # Another worker moves the row after we read it: our UPDATE ... WHERE status = 'eligible' misses.
    move(engine, KEY, "notified")
    with engine.begin() as conn:
        done = conn.execute(ledger_t.update().where(ledger_t.c.id == row["id"],
                                                    ledger_t.c.status == row["status"])
                            .values(status="notified"))
    assert done.rowcount == 0


def walk_to_approved(engine, key, source="test"):
    for to in ("notified", "confirmed", "approved"):
        assert move(engine, key, to, source=source) is None


def test_payout_respects_publicity_objections_and_budget_holds(engine):
    sync(engine, [match(n=1), match(n=2),
                  match(n=3, policy_id="WL-B-01", over_budget=True)],
         days={"WL-RS-2026-01": 5})
    for n in (1, 2):
        walk_to_approved(engine, ("WL-RS-2026-01", "2026", code(n)))
    walk_to_approved(engine, ("WL-B-01", "2026", code(3)))
    with engine.begin() as conn:
        listed = ledger.start_publicity(conn, D1, WorkCalendar())
    last = date(2026, 12, 2)   # five working days from Thursday 11-26, the weekend not counted
    assert [(r["publicity_from"], r["publicity_to"]) for r in listed] == [(D1, last)] * 2
    with engine.begin() as conn:  # objection on one during the window
        assert ledger.transition(conn, ("WL-RS-2026-01", "2026", code(2)), "objected", "f", None) is None
        pay, held = ledger.payable(conn, last)
    assert pay == [] and [r["uscc"] for r in held] == [code(3)]
    with engine.begin() as conn:
        pay, held = ledger.payable(conn, last + timedelta(days=1))
        assert [r["uscc"] for r in pay] == [code(1)]
        assert ledger.release_budget_hold(conn, "WL-B-01", "2026", "张科长") is True
        assert ledger.release_budget_hold(conn, "WL-B-01", "2026", "张科长") is False
        pay, held = ledger.payable(conn, last + timedelta(days=1))
    assert sorted(r["uscc"] for r in pay) == [code(1), code(3)] and held == []


def test_a_paid_result_is_never_listed_again(engine):
    sync(engine, [match(n=1)])
    walk_to_approved(engine, KEY)
    with engine.begin() as conn:
        batch = ledger.schedule_payout(conn, D1, "r1")
    assert batch == "PB-20261126-01"
    with engine.begin() as conn:
        assert ledger.record_payment(conn, KEY, batch, Decimal("5000"), D1, "pay.csv") is None
    for i, day in enumerate((D1 + timedelta(days=1), D1 + timedelta(days=30)), start=2):
        out = sync(engine, [match(n=1, amount="8000.00")], day, f"r{i}")
        assert out["new"] == 0
        with engine.begin() as conn:
            assert ledger.schedule_payout(conn, day, f"r{i}") is None
            assert ledger.batch_rows(conn, day) == []
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(ledger_t.c.status)).scalars().all()
        batches = conn.execute(sa.select(warehouse.payout_batches.c.status)).scalars().all()
    assert statuses == ["paid"] and batches == ["paid"]


def test_history_records_every_move_with_its_source(engine):
    sync(engine, [match(n=1)])
    with engine.begin() as conn:
        ledger.transition(conn, KEY, "notified", ledger.Source(run_id="r1"), "区人社局")
        ledger.transition(conn, KEY, "declined", ledger.Source(file="c.csv", sha256="f" * 64), "区人社局")
        hist = ledger.history(conn, KEY)
    assert [(h["from_status"], h["to_status"]) for h in hist] == [
        (None, "eligible"), ("eligible", "notified"), ("notified", "declined")]
    assert hist[2]["source_file"] == "c.csv" and hist[2]["source_sha256"] == "f" * 64
    assert move(engine, KEY, "confirmed") is not None   # declined is final


def test_ledger_status_for_scripts_and_for_people(db_url, engine, monkeypatch, capsys):
    import json

    from pipelines import cli

    sync(engine, [match(n=1), match(n=2, amount="1234.50"), match(n=3, policy_id="WL-KJ-01")])
    walk_to_approved(engine, KEY)
    with engine.begin() as conn:
        batch = ledger.schedule_payout(conn, D1, "r1")
        ledger.transition(conn, ("WL-RS-2026-01", "2026", code(2)), "notified", "r1", None, note="短信待发清单已生成")
    monkeypatch.setenv("MIANSHEN_WAREHOUSE_URL", db_url)
    assert cli.main(["ledger", "status", "--policy", "WL-RS-2026-01", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [list(r) for r in rows] == [list(ledger.STATUS_KEYS)] * 2
    assert [(r["uscc"], r["status"], r["amount"], r["batch"], r["reason"]) for r in rows] == [
        (code(1), "scheduled", "5000.00", batch, f"列入拨付批次 {batch}"),
        (code(2), "notified", "1234.50", None, "短信待发清单已生成")]
    assert all(len(r["changed_on"]) == 10 for r in rows)
    assert cli.main(["ledger", "status", "--uscc", code(1).lower()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["政策编号", "期次", "统一社会信用代码", "状态", "金额（元）", "拨付批次", "变更日期", "说明"]
    assert out[1].split()[:6] == ["WL-RS-2026-01", "2026", code(1), "已列入拨付清单", "5,000.00", batch]
    assert out[-1] == "共 1 条"
