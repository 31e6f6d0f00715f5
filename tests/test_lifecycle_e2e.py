"""The whole lifecycle over five nightly DAG runs (dag.test) on generated data,
with the returned files dropped into the inbox between the nights, on SQLite
and on PostgreSQL (slow).

    night 1 (11-26)  matches → SMS outbox, every eligible result `notified`
    inbox            _confirmations/ (xlsx from the SMS list): 确认申领 ×n, 放弃 ×1
    night 2 (11-27)  review workbooks for the confirmed
    inbox            _reviews/ (the workbooks filled in): 通过, one 不通过 with 审核意见
    night 3 (11-28)  publicity lists open (5 and 7 days); the policy without
                     publicity is payable at once but held over budget
    night 4 (12-03)  the hold is released (release_holds); payout list PB-20261203-01:
                     5-day policies + the released policy, `scheduled`;
                     the 7-day policy is still in its window
    inbox            _payments/ from payout.csv → `paid`; the same bytes again under
                     another name pay nothing
    night 5 (12-05)  the 7-day policy on PB-20261205-01; the paid rows never again

The run uses a copy of the sample policies with three test edits (see
`_policies`), so that the held policy, the 7-day window and the 5-day window
do not depend on which demo enterprises happen to qualify.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from collections import Counter
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from openpyxl import Workbook, load_workbook

from tests.conftest import ROOT, make_settings, postgres_schema

pytestmark = pytest.mark.slow

N1, N2, N3, N4, N5 = (date(2026, 11, 26), date(2026, 11, 27), date(2026, 11, 28),
                      date(2026, 12, 3), date(2026, 12, 5))
ENTERPRISES, SEED, DEFECTS = 200, 5, 0.005
RS = "区人力资源和社会保障局"
A = "WL-RS-2026-01"        # publicity 5 days (sample value)
B = "WL-RS-2026-02"        # publicity 7 days (test edit)
H = "WL-RS-2026-03"        # no publicity, budget 100: over budget, held (test edits)
PERIOD = "2026"
PAY_HEADER = ["批次号", "统一社会信用代码", "政策编号", "期次", "实付金额", "支付日期"]


# ---------------------------------------------------------------- set-up

def _policies(folder: Path) -> Path:
    shutil.copytree(ROOT / "data" / "policies", folder)

    def edit(policy_id: str, old: str, new: str) -> None:
        path = folder / f"{policy_id}.yaml"
        text = path.read_text(encoding="utf-8")
        assert old in text, (policy_id, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    edit(B, "publicity_days: 5", "publicity_days: 7")
    edit(H, "budget: 500000\n", "budget: 100\n")
    edit(H, "publicity_days: 5\n", "")
    return folder


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path):
    from pipelines import warehouse

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        warehouse.dispose_all()
        return
    with postgres_schema("lc") as url:
        yield url


@pytest.fixture
def alert_hook(monkeypatch, webhook):
    """The loopback webhook (conftest) as the runs' alert channel: the alerts they send."""
    url, received = webhook
    monkeypatch.setenv("MIANSHEN_ALERT_WEBHOOK", url)
    return received


@pytest.fixture(scope="module")
def nightly_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "mianshen_nightly.py"))
    assert bag.import_errors == {}
    return bag.get_dag("mianshen_nightly")


# ---------------------------------------------------------------- helpers

class World:
    """The test's view of one pipeline installation under tmp_path."""

    def __init__(self, dag, settings, url):
        self.dag, self.settings, self.url = dag, settings, url
        self.timings: list[tuple[str, float]] = []

    def night(self, as_of: date, **conf) -> dict:
        from pipelines import demo_data

        started = time.perf_counter()
        # fresh deliveries for this date, into the same landing folder
        demo_data.generate(self.settings.landing, as_of, ENTERPRISES, SEED, DEFECTS)
        logical = datetime(as_of.year, as_of.month, as_of.day, tzinfo=timezone.utc)
        # Every parameter explicitly, every night: in one process, the task SDK's
        # process_params resolves dag_run.conf into the DAG's own Param objects,
        # so a run_conf would otherwise stick to every later dag.test of this DAG.
        run = self.dag.test(logical_date=logical, run_conf={"release_holds": [], **conf})
        self.timings.append((str(as_of), round(time.perf_counter() - started, 1)))
        assert str(run.state) == "success", f"nightly run {as_of} failed"
        return json.loads((self.run_dir(as_of) / "ledger.json").read_text(encoding="utf-8"))

    def run_dir(self, as_of: date) -> Path:
        return self.settings.run_dir(as_of)

    def drop(self, folder: str, name: str, data: bytes) -> Path:
        path = self.settings.inbox / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def process(self) -> list[dict]:
        from pipelines import inbox

        return inbox.process(self.settings, settle_seconds=0)

    # -- warehouse queries
    def query(self, stmt) -> list:
        from pipelines import warehouse

        with warehouse.connect(self.url).connect() as conn:
            return conn.execute(stmt).all()

    def ledger(self) -> dict[tuple, dict]:
        from pipelines.warehouse import ledger

        return {(r.policy_id, r.period, r.uscc): dict(r._mapping) for r in self.query(sa.select(ledger))}

    def statuses(self, keys) -> dict[tuple, str]:
        rows = self.ledger()
        return {k: rows[k]["status"] for k in keys}

    def moves(self, to_status: str) -> Counter:
        """How often each ledger row made the move to `to_status`."""
        from pipelines.warehouse import ledger, ledger_transitions as lt

        q = (sa.select(ledger.c.policy_id, ledger.c.period, ledger.c.uscc)
             .join(lt, lt.c.ledger_id == ledger.c.id).where(lt.c.to_status == to_status))
        return Counter(tuple(r) for r in self.query(q))


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def key_of(row: dict) -> tuple[str, str, str]:
    return (row["政策编号"], row["期次"], row["统一社会信用代码"])


def sheet_rows(path: Path) -> tuple[list[str], list[list], list]:
    """(header, data rows, the 合计 row) of one of our workbooks (header on row 3)."""
    ws = load_workbook(path, data_only=True).worksheets[0]
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    header = rows[2]
    body, total = [], None
    for r in rows[3:]:
        if r[0] == "合计":
            total = r
            break
        body.append(r)
    return header, body, total


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    lines = [",".join(header)] + [",".join(str(c) for c in r) for r in rows]
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")


def xlsx_bytes(title: str, header: list[str], rows: list[list], path: Path) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append([title])
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path.read_bytes()


def money(value) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


# ---------------------------------------------------------------- the test

def test_lifecycle_over_five_nights(nightly_dag, warehouse_url, alert_hook, tmp_path, monkeypatch):
    from pipelines import handoff
    from pipelines.warehouse import budget_releases, ledger_transitions, matches, payout_batches, payout_items

    base = tmp_path / "data"
    env = {"MIANSHEN_DATA": base, "MIANSHEN_LANDING": base / "landing",
           "MIANSHEN_POLICIES": _policies(tmp_path / "policies"),
           "MIANSHEN_WAREHOUSE_URL": warehouse_url}
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    settings = make_settings(base, policies=env["MIANSHEN_POLICIES"], MIANSHEN_WAREHOUSE_URL=warehouse_url)
    assert settings.warehouse_url == warehouse_url
    w = World(nightly_dag, settings, warehouse_url)
    began = time.perf_counter()

    def over_budget_alerts() -> set[str]:
        """Policies named by the over-budget alerts sent since the last call."""
        names = {a["title"].split()[1] for a in alert_hook if a["kind"] == "over_budget"}
        alert_hook.clear()
        return names

    # ------------------------------------------------------------ night 1: matches and SMS
    s1 = w.night(N1)
    assert w.query(sa.select(sa.func.count()).select_from(matches).where(matches.c.as_of == N1))[0][0] > 0
    ledger1 = w.ledger()
    assert ledger1 and {r["status"] for r in ledger1.values()} == {"notified"}
    assert {r["notified_as_of"] for r in ledger1.values()} == {N1}
    sms = read_csv(w.run_dir(N1) / "sms" / "短信待发清单.csv")
    assert {key_of(r) for r in sms} == set(ledger1) and len(sms) == len(ledger1)
    assert s1["短信待发（转为已通知）"] == len(sms) == s1["新增台账（新符合条件）"]
    assert all(r["短信内容"].startswith("【卧龙区惠企政策】") for r in sms)
    assert all(money(r["预计金额（元）"]) == ledger1[key_of(r)]["amount"] for r in sms)
    for folder in ("review", "publicity", "payout"):
        assert not any((w.run_dir(N1) / folder).rglob("*.*")), folder
    assert s1["应享未享提醒"] > 0 and any((w.run_dir(N1) / "reminders").rglob("*.xlsx"))
    assert all(r["over_budget"] for k, r in ledger1.items() if k[0] == H)
    assert not any(r["over_budget"] for k, r in ledger1.items() if k[0] in (A, B))
    assert H in over_budget_alerts()

    # pick the results this test walks through the lifecycle
    by_policy: dict[str, list[dict]] = {}
    for r in sms:
        by_policy.setdefault(r["政策编号"], []).append(r)
    # a second department's 5-day policy that is within its budget
    days = {p.stem: p.read_text(encoding="utf-8") for p in Path(env["MIANSHEN_POLICIES"]).glob("*.yaml")}
    other = [p for p, rows in sorted(by_policy.items())
             if "publicity_days: 5" in days[p] and rows[0]["政策名称"] and
             ledger1[key_of(rows[0])]["department"] != RS and not ledger1[key_of(rows[0])]["over_budget"]]
    assert other, f"no eligible result of another department's 5-day policy: {sorted(by_policy)}"
    C = other[0]
    assert len(by_policy.get(A, [])) >= 4 and by_policy.get(B) and len(by_policy.get(H, [])) >= 2, \
        {p: len(r) for p, r in by_policy.items()}
    a_rows, b_row, h_rows, c_row = by_policy[A][:4], by_policy[B][0], by_policy[H][:2], by_policy[C][0]
    a_ok, a_no, a_decl = [key_of(r) for r in a_rows[:2]], key_of(a_rows[2]), key_of(a_rows[3])
    b, c, h = key_of(b_row), key_of(c_row), [key_of(r) for r in h_rows]
    confirmed = [*a_ok, a_no, b, c, *h]
    walked = set(confirmed) | {a_decl}
    untouched = set(ledger1) - walked

    # ------------------------------------------------------------ confirmations
    answers = [[k[2], k[0], k[1], "确认申领", "2026-11-26 10:00:00"] for k in confirmed]
    answers.insert(2, [a_decl[2], a_decl[0], a_decl[1], "放弃", "2026-11-26 11:00:00"])
    w.drop("_confirmations", "意愿确认结果_20261126.xlsx", xlsx_bytes(
        "企业申领意愿确认结果", ["统一社会信用代码", "政策编号", "期次", "确认结果", "确认时间"], answers,
        tmp_path / "confirm.xlsx"))
    done = w.process()
    assert [(d["folder"], d["status"], d["errors"]) for d in done] == [("_confirmations", "accepted", 0)]
    assert w.statuses(confirmed) == dict.fromkeys(confirmed, "confirmed")
    assert w.statuses([a_decl]) == {a_decl: "declined"}
    assert set(w.statuses(untouched).values()) == {"notified"}

    # ------------------------------------------------------------ night 2: review workbooks
    s2 = w.night(N2)
    assert s2["待部门审核"] == len(confirmed)
    books = sorted((w.run_dir(N2) / "review").rglob("*.xlsx"))
    assert len(books) == len({(w.ledger()[k]["department"], k[0]) for k in confirmed}) == 4
    on_review = set()
    for book in books:
        header, body, total = sheet_rows(book)
        col = {name: i for i, name in enumerate(header)}
        on_review |= {(r[col["policy_id"]], r[col["period"]], r[col["uscc"]]) for r in body}
        assert total is not None and money(total[col["兑现金额（元）"]]) == sum(
            money(r[col["兑现金额（元）"]]) for r in body)
    assert on_review == set(confirmed)              # not the declined one, not the unanswered
    # nobody is told twice: the night's SMS lists only results new that night
    for path in (w.run_dir(N2) / "sms").glob("*.csv"):
        assert not {key_of(r) for r in read_csv(path)} & set(ledger1)

    # the departments fill in 审核结果 (通过; one 不通过 with 审核意见) and return the workbooks
    for n, book in enumerate(books):
        wb = load_workbook(book)
        ws = wb.worksheets[0]
        header = [c.value for c in ws[3]]
        col = {name: i + 1 for i, name in enumerate(header)}
        for r in range(4, ws.max_row + 1):
            key = tuple(ws.cell(r, col[k]).value for k in ("policy_id", "period", "uscc"))
            if key not in walked:
                continue
            if key == a_no:
                ws.cell(r, col["审核结果"], "不通过")
                ws.cell(r, col["审核意见"], "经核实该企业参保人数不符，不予兑现")
            else:
                ws.cell(r, col["审核结果"], "通过")
        out = tmp_path / f"review_{n}.xlsx"
        wb.save(out)
        w.drop("_reviews", f"审核结果_{n}_{book.name}", out.read_bytes())
    done = w.process()
    assert sorted((d["folder"], d["status"], d["errors"]) for d in done) == [("_reviews", "accepted", 0)] * 4
    approved = [k for k in confirmed if k != a_no]
    assert w.statuses(approved) == dict.fromkeys(approved, "approved")
    assert w.statuses([a_no]) == {a_no: "rejected"}

    # ------------------------------------------------------------ night 3: publicity opens; H is held
    s3 = w.night(N3)
    assert s3["列入拨付清单"] == 0 and not list((w.run_dir(N3) / "payout").glob("*"))
    assert s3["超预算暂停的政策"] == [f"{H}:{PERIOD}"] and s3["超预算暂停拨付"] == len(h)
    assert w.statuses(h) == dict.fromkeys(h, "approved")
    assert H in over_budget_alerts()
    public = sorted((w.run_dir(N3) / "publicity").glob("*.xlsx"))
    assert {p.name.split("_")[0] for p in public} == {A, B, C}        # H has no publicity
    listed = {}
    for p in public:
        header, body, _ = sheet_rows(p)
        assert "手机号码" not in header and "法定代表人" not in header
        col = {name: i for i, name in enumerate(header)}
        for r in body:
            listed[(r[col["统一社会信用代码"]], p.name.split("_")[0])] = (
                r[col["公示开始日期"]], r[col["公示截止日期"]])
    assert listed == {(k[2], k[0]): ("2026-11-28", "2026-12-04" if k[0] == B else "2026-12-02")
                      for k in approved if k[0] != H}
    ledger3 = w.ledger()
    assert {k: (ledger3[k]["publicity_from"], ledger3[k]["publicity_to"]) for k in (a_ok[0], b)} == {
        a_ok[0]: (N3, date(2026, 12, 2)), b: (N3, date(2026, 12, 4))}
    assert set(w.statuses(approved).values()) == {"approved"}

    # ------------------------------------------------------------ night 4: hold released; first payout
    s4 = w.night(N4, release_holds=[f"{H}:{PERIOD}"])
    batch1 = f"PB-{N4:%Y%m%d}-01"
    assert s4["拨付批次"] == [batch1] and s4["本次解除超预算暂停"] == 1
    assert w.query(sa.select(budget_releases.c.policy_id, budget_releases.c.period)) == [(H, PERIOD)]
    assert H not in over_budget_alerts()          # released: the payout is no longer paused
    first_wave = [*a_ok, c, *h]
    payout_dir = w.run_dir(N4) / "payout"
    pay_csv = read_csv(payout_dir / "payout.csv")
    assert sorted(key_of(r) for r in pay_csv) == sorted(first_wave)     # B still in its window
    assert {r["批次号"] for r in pay_csv} == {batch1}
    parquet = pq.read_table(payout_dir / "payout.parquet").to_pylist()
    assert sorted((r["policy_id"], r["period"], r["uscc"], r["amount"], r["batch_id"]) for r in parquet) == \
        sorted((*key_of(r), money(r["金额（元）"]), r["批次号"]) for r in pay_csv)
    ledger4 = w.ledger()
    assert all(money(r["金额（元）"]) == ledger4[key_of(r)]["amount"] for r in pay_csv)
    departments = {ledger4[k]["department"] for k in first_wave}
    assert len(departments) == 2
    assert sorted(p.name for p in payout_dir.glob("*_拨付清单.xlsx")) == sorted(
        f"{d}_拨付清单.xlsx" for d in departments)
    for d in departments:
        header, body, total = sheet_rows(payout_dir / f"{d}_拨付清单.xlsx")
        col = {name: i for i, name in enumerate(header)}
        mine = [k for k in first_wave if ledger4[k]["department"] == d]
        assert sorted((r[col["政策编号"]], r[col["期次"]], r[col["统一社会信用代码"]]) for r in body) == sorted(mine)
        assert {r[col["批次号"]] for r in body} == {batch1}
        assert money(total[col["金额（元）"]]) == sum(ledger4[k]["amount"] for k in mine)
    assert w.statuses(first_wave) == dict.fromkeys(first_wave, "scheduled")
    assert w.statuses([b]) == {b: "approved"}
    assert {p.name.split("_")[0] for p in (w.run_dir(N4) / "publicity").glob("*.xlsx")} == {B}
    items = w.query(sa.select(payout_items.c.batch_id, payout_items.c.amount))
    assert len(items) == len(first_wave) and {i[0] for i in items} == {batch1}
    assert w.query(sa.select(payout_batches.c.batch_id, payout_batches.c.status, payout_batches.c.total)) == [
        (batch1, "scheduled", sum(ledger4[k]["amount"] for k in first_wave))]

    # ------------------------------------------------------------ payments, and the same file again
    payments = csv_bytes(PAY_HEADER, [[r["批次号"], r["统一社会信用代码"], r["政策编号"], r["期次"],
                                       r["金额（元）"], "2026-12-04"] for r in pay_csv])
    w.drop("_payments", "拨付回单_PB-20261203-01.csv", payments)
    done = w.process()
    assert [(d["status"], d["rows"], d["errors"]) for d in done] == [("accepted", len(first_wave), 0)]
    assert w.statuses(first_wave) == dict.fromkeys(first_wave, "paid")
    w.drop("_payments", "拨付回单（重发）.csv", payments)        # same bytes, another name
    done = w.process()
    assert [d["status"] for d in done] == ["duplicate"]
    paid = w.moves("paid")
    assert paid == Counter(first_wave)                         # every row paid exactly once
    assert w.query(sa.select(payout_batches.c.status)) == [("paid",)]

    # a rerun of night 4's ledger step after the payment finds the committed batch:
    # the same payout files, no new batch, no ledger move
    before = {p.name: p.read_bytes() for p in payout_dir.iterdir()}
    moves = w.query(sa.select(sa.func.count()).select_from(ledger_transitions))
    rerun = handoff.ledger_and_outputs(settings, N4, "rerun-of-night-4")
    assert rerun["payout_new_batch"] is None and rerun["payout_batches"] == [batch1]
    assert {p.name: p.read_bytes() for p in payout_dir.iterdir()} == before
    assert w.query(sa.select(sa.func.count()).select_from(ledger_transitions)) == moves
    assert w.statuses(first_wave) == dict.fromkeys(first_wave, "paid")

    # ------------------------------------------------------------ night 5: B's window has passed
    s5 = w.night(N5)
    batch2 = f"PB-{N5:%Y%m%d}-01"
    assert s5["拨付批次"] == [batch2] and s5["列入拨付清单"] == 1
    pay_csv5 = read_csv(w.run_dir(N5) / "payout" / "payout.csv")
    assert [key_of(r) for r in pay_csv5] == [b]                # the paid rows are never listed again
    assert not (set(first_wave) & {key_of(r) for r in pay_csv5})
    assert w.statuses([b]) == {b: "scheduled"}
    assert s5["超预算暂停拨付"] == 0 and H not in over_budget_alerts()
    w.drop("_payments", "拨付回单_PB-20261205-01.csv", csv_bytes(PAY_HEADER, [
        [r["批次号"], r["统一社会信用代码"], r["政策编号"], r["期次"], r["金额（元）"], "2026-12-06"]
        for r in pay_csv5]))
    assert [d["status"] for d in w.process()] == ["accepted"]

    # ------------------------------------------------------------ the end state
    final = w.ledger()
    assert w.statuses(walked) == {**dict.fromkeys([*a_ok, b, c, *h], "paid"),
                                  a_no: "rejected", a_decl: "declined"}
    assert all(final[k]["status"] == "notified" for k in untouched)
    assert w.moves("paid") == Counter([*first_wave, b])
    assert w.moves("scheduled") == Counter([*first_wave, b])
    assert sorted(w.query(sa.select(payout_batches.c.batch_id, payout_batches.c.status))) == [
        (batch1, "paid"), (batch2, "paid")]
    # only the amounts fixed at notification were ever listed and paid
    assert all(final[k]["amount"] == ledger1[k]["amount"] for k in walked)
    print(f"\nlifecycle on {warehouse_url.split(':')[0]}: {round(time.perf_counter() - began, 1)} s; "
          f"nights: {w.timings}")
