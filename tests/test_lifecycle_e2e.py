"""The whole lifecycle over five nightly DAG runs (dag.test) on generated data,
with the returned files dropped into the inbox between the nights, on SQLite
and on PostgreSQL (slow).

    night 1 (11-26)  matches → SMS outbox, every eligible result `notified`, except
                     the policy held over budget (H): no SMS, its results wait `eligible`
    inbox            _confirmations/ with 信用承诺 and payee accounts: 确认申领 ×n,
                     放弃 ×1, and three rows refused (no commitment, another 户名, a bad account);
                     _applications/: an online application of the manual policy MP (`confirmed`)
    night 2 (11-27)  the hold on H is released (release_holds): H's SMS go out tonight;
                     review workbooks (with the accounts) for the confirmed
    inbox            _reviews/: 通过, one 不通过 with 审核意见; H's confirmations
    night 3 (11-28)  publicity lists open (5 and 7 working days, from Monday 11-30); H's review workbook
    inbox            _reviews/ for H and for MP's application
    night 4 (12-07)  再确认: A's second enterprise was listed as 失信 and C's is 注销
                     since approval: both `suspended`, on the 复核表 with the reason, not
                     paid; payout list PB-20261207-01: A's first, H and MP (no publicity);
                     B is still in its window (to 12-08)
    inbox            _payments/ → `paid` (the same bytes again pay nothing); the 复核表
                     of C returned 通过 with 审核意见 (an override); _recoveries/ and
                     _recovery_receipts/ take A's first back: `recovered`
    night 5 (12-09)  the listing is gone: A's second is approved again and paid; C is paid
                     by the override although still 注销; B's window has passed;
                     the recovered and paid rows are never listed again

The run uses a copy of the sample policies with test edits (see `_policies`),
so that the held policy, the 7-day window, the 5-day window and the results
walked (no exclusive groups) do not depend on which demo enterprises happen to
qualify.
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
                      date(2026, 12, 7), date(2026, 12, 9))
ENTERPRISES, SEED, DEFECTS = 200, 5, 0.005
RS = "区人力资源和社会保障局"
A = "WL-RS-2026-01"        # publicity 5 days (sample value)
B = "WL-RS-2026-02"        # publicity 7 days (test edit)
H = "WL-RS-2026-03"        # no publicity, budget 100: over budget, held (test edits)
MP = "WL-FG-2026-02"       # manual: paid only through an online application (max_amount: test edit)
PERIOD = "2026"
CONFIRM_HEADER = ["统一社会信用代码", "政策编号", "期次", "确认结果", "确认时间", "信用承诺", "收款户名", "开户银行",
                  "银行账号"]
PAY_HEADER = ["批次号", "统一社会信用代码", "政策编号", "期次", "实付金额", "支付日期"]


# ---------------------------------------------------------------- set-up

def _policies(folder: Path) -> Path:
    shutil.copytree(ROOT / "data" / "policies", folder)

    def edit(policy_id: str, old: str, new: str) -> None:
        path = folder / f"{policy_id}.yaml"
        text = path.read_text(encoding="utf-8")
        assert old in text, (policy_id, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    # Exclusive groups re-decide their winner every night as the demo data drifts; a result
    # excluded on the payout night would (rightly) be suspended by the re-check, so the
    # results this test walks must not depend on it.
    for path in folder.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        path.write_text("".join(l for l in text.splitlines(keepends=True) if not l.startswith("exclusive_group:")),
                        encoding="utf-8")
    edit(B, "publicity_days: 5", "publicity_days: 7")
    edit(H, "budget: 500000\n", "budget: 100\n")
    edit(H, "publicity_days: 5\n", "")
    path = folder / f"{MP}.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "max_amount: 80000\n", encoding="utf-8")
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
        self.before_night: dict[date, object] = {}   # as_of -> edits of that night's deliveries

    def night(self, as_of: date, **conf) -> dict:
        from pipelines import demo_data

        started = time.perf_counter()
        # fresh deliveries for this date, into the same landing folder
        demo_data.generate(self.settings.landing, as_of, ENTERPRISES, SEED, DEFECTS)
        if as_of in self.before_night:
            self.before_night[as_of]()
        logical = datetime(as_of.year, as_of.month, as_of.day, tzinfo=timezone.utc)
        # Every parameter explicitly, every night: in one process, the task SDK's
        # process_params resolves dag_run.conf into the DAG's own Param objects,
        # so a run_conf would otherwise stick to every later dag.test of this DAG.
        run = self.dag.test(logical_date=logical, run_conf={"release_holds": [], "accept_drift": False, **conf})
        self.timings.append((str(as_of), round(time.perf_counter() - started, 1)))
        assert str(run.state) == "success", f"nightly run {as_of} failed"
        return json.loads((self.run_dir(as_of) / "ledger.json").read_text(encoding="utf-8"))

    def delivery(self, feed: str, as_of: date) -> Path:
        [path] = [p for p in (self.settings.landing / feed / str(as_of)).iterdir() if p.name != "_SUCCESS"]
        return path

    def list_as_dishonest(self, as_of: date, uscc: str, listed_on: date) -> None:
        """Add a 失信被执行人 listing to the credit delivery of as_of (as the credit office would)."""
        path = self.delivery("credit", as_of)
        data = path.read_bytes()
        encoding = "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "gb18030"
        text = data.decode(encoding).rstrip("\r\n") + f"\r\n{uscc},失信被执行人,{listed_on},\r\n"
        path.write_bytes(text.encode(encoding))

    def deregister(self, as_of: date, uscc: str) -> None:
        """Make the registry delivery of as_of say 注销 for one enterprise."""
        path = self.delivery("registry", as_of)
        wb = load_workbook(path)
        ws = wb.worksheets[0]
        for row in ws.iter_rows():
            values = [c.value for c in row]
            if "登记状态" in values:
                status = values.index("登记状态")
            elif uscc in values:
                row[status].value = "注销"
                wb.save(path)
                return
        raise AssertionError(f"{uscc} not in {path}")

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
    from pipelines.warehouse import budget_releases, ledger_transitions, match_counts, match_files, payout_batches, payout_items

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

    # ------------------------------------------------------------ night 1: matches and SMS; H held, told nothing
    s1 = w.night(N1)
    # the night's results are registered (file, hash, counts), not copied into the warehouse
    registered = w.query(sa.select(match_files.c.rows).where(match_files.c.as_of == N1))[0][0]
    counted = w.query(sa.select(sa.func.sum(match_counts.c.rows)).where(match_counts.c.as_of == N1))[0][0]
    assert registered == counted == pq.ParquetFile(w.run_dir(N1) / "matches.parquet").metadata.num_rows > 0
    ledger1 = w.ledger()
    h_all = sorted(k for k in ledger1 if k[0] == H)
    assert len(h_all) >= 2 and all(ledger1[k]["over_budget"] for k in h_all)
    assert {ledger1[k]["status"] for k in h_all} == {"eligible"}
    assert {r["status"] for k, r in ledger1.items() if k[0] != H} == {"notified"}
    assert {r["notified_as_of"] for k, r in ledger1.items() if k[0] != H} == {N1}
    sms = read_csv(w.run_dir(N1) / "sms" / "短信待发清单.csv")
    assert {key_of(r) for r in sms} == set(ledger1) - set(h_all) and len(sms) == len(ledger1) - len(h_all)
    assert s1["短信待发（转为已通知）"] == len(sms) == s1["新增台账（新符合条件）"] - len(h_all)
    assert all(r["短信内容"].startswith("【卧龙区惠企政策】") and "登录平台确认申领意愿并签署信用承诺" in r["短信内容"]
               and "咨询：" in r["短信内容"] for r in sms)
    assert {r["确认截止日期"] for r in sms} == {"2026-12-17"}          # 15 working days after 11-26
    assert all(money(r["预计金额（元）"]) == ledger1[key_of(r)]["amount"] for r in sms)
    for folder in ("review", "publicity", "payout"):
        assert not any((w.run_dir(N1) / folder).rglob("*.*")), folder
    assert s1["应享未享提醒"] > 0 and any((w.run_dir(N1) / "reminders").rglob("*.xlsx"))
    assert not any(r["over_budget"] for k, r in ledger1.items() if k[0] in (A, B))
    assert H in over_budget_alerts()

    # pick the results this test walks through the lifecycle
    by_policy: dict[str, list[dict]] = {}
    for r in sms:
        by_policy.setdefault(r["政策编号"], []).append(r)
    days = {p.stem: p.read_text(encoding="utf-8") for p in Path(env["MIANSHEN_POLICIES"]).glob("*.yaml")}
    other = [p for p, rows in sorted(by_policy.items())
             if "publicity_days: 5" in days[p] and rows[0]["政策名称"] and
             ledger1[key_of(rows[0])]["department"] != RS and not ledger1[key_of(rows[0])]["over_budget"]]
    assert other, f"no eligible result of another department's 5-day policy: {sorted(by_policy)}"
    C = other[0]
    assert len(by_policy.get(A, [])) >= 4 and by_policy.get(B), {p: len(r) for p, r in by_policy.items()}
    a_rows, b_row, c_row = by_policy[A][:4], by_policy[B][0], by_policy[C][0]
    a_ok, a_no, a_decl = [key_of(r) for r in a_rows[:2]], key_of(a_rows[2]), key_of(a_rows[3])
    a_pay, a_listed = a_ok
    b, c, h = key_of(b_row), key_of(c_row), h_all[:2]
    confirmed = [*a_ok, a_no, b, c]
    walked = set(confirmed) | {a_decl} | set(h)
    refused = sorted(set(ledger1) - walked - set(h_all))[:3]
    assert len(refused) == 3
    untouched = set(ledger1) - walked - set(h_all)
    # the applicant: an enterprise of the registry that none of the walked results is about
    app = (MP, PERIOD, max(k[2] for k in untouched if k[2] not in {w[2] for w in walked | set(h_all)}))
    names = {k[2]: r["name"] for k, r in ledger1.items()}
    walked.add(app)

    def payee(key) -> list[str]:
        n = sorted([*ledger1, app]).index(key)
        return ["已承诺", names[key[2]], "中国工商银行南阳卧龙支行", f"6222 0214 {n:04d} 5678 901"]

    def account(key) -> str:
        return payee(key)[3].replace(" ", "")

    # ------------------------------------------------------------ confirmations: good rows taken, bad rows refused
    answers = [[k[2], k[0], k[1], "确认申领", "2026-11-26 10:00:00", *payee(k)] for k in confirmed]
    answers.insert(2, [a_decl[2], a_decl[0], a_decl[1], "放弃", "2026-11-26 11:00:00", "", "", "", ""])
    bad = [payee(k) for k in refused]
    bad[0][0] = ""                                   # no 信用承诺
    bad[1][1] = "南阳市卧龙区代收服务有限公司"           # not the registered name
    bad[2][3] = "6222-02"                            # too short
    answers += [[k[2], k[0], k[1], "确认申领", "2026-11-26 12:00:00", *p] for k, p in zip(refused, bad)]
    w.drop("_confirmations", "意愿确认结果_20261126.xlsx", xlsx_bytes("企业申领意愿确认结果", CONFIRM_HEADER, answers,
                                                                tmp_path / "confirm.xlsx"))
    done = w.process()
    assert [(d["folder"], d["status"], d["errors"]) for d in done] == [("_confirmations", "accepted", 3)]
    assert w.statuses(confirmed) == dict.fromkeys(confirmed, "confirmed")
    assert w.statuses([a_decl]) == {a_decl: "declined"}
    assert set(w.statuses(untouched).values()) == {"notified"}
    answer = [list(r) for r in load_workbook(settings.inbox / done[0]["answer"]).active.iter_rows(values_only=True)]
    reasons = {r[1]: r[-1] for r in answer[2:]}
    assert "未签署信用承诺" in reasons[refused[0][2]]
    assert "与企业登记名称" in reasons[refused[1][2]] and reasons[refused[2][2]] == "银行账号应为8至32位数字（尾号2202）"
    assert not any(account(k) in str(cell) for k in confirmed for row in answer for cell in row)   # masked

    # ------------------------------------------------------------ an online application of the manual policy
    w.drop("_applications", "在线申请_20261126.csv", csv_bytes(
        ["统一社会信用代码", "政策编号", "期次", "申请金额", "申请时间", *CONFIRM_HEADER[5:]],
        [[app[2], app[0], app[1], "60000", "2026-11-26 15:00", *payee(app)]]))
    assert [(d["folder"], d["status"], d["errors"]) for d in w.process()] == [("_applications", "accepted", 0)]
    assert (w.ledger()[app]["status"], w.ledger()[app]["amount"]) == ("confirmed", Decimal("60000.00"))

    # ------------------------------------------------------------ night 2: H released, its SMS go out; review workbooks
    s2 = w.night(N2, release_holds=[f"{H}:{PERIOD}"])
    assert s2["本次解除超预算暂停"] == 1 and H not in over_budget_alerts()
    assert w.query(sa.select(budget_releases.c.policy_id, budget_releases.c.period)) == [(H, PERIOD)]
    sms2 = read_csv(w.run_dir(N2) / "sms" / "短信待发清单.csv")
    assert {key_of(r) for r in sms2} == set(h_all)            # the night of the release
    assert s2["待部门审核"] == len(confirmed) + 1                 # and the application
    books = sorted((w.run_dir(N2) / "review").rglob("*_部门审核表.xlsx"))
    app_book = [b for b in books if b.name.startswith(MP)]
    books = [b for b in books if not b.name.startswith(MP)]      # reviewed after night 3
    assert len(books) == len({(w.ledger()[k]["department"], k[0]) for k in confirmed}) == 3 and len(app_book) == 1
    on_review = set()
    for book in books:
        header, body, total = sheet_rows(book)
        col = {name: i for i, name in enumerate(header)}
        on_review |= {(r[col["policy_id"]], r[col["period"]], r[col["uscc"]]) for r in body}
        assert total is not None and money(total[col["兑现金额（元）"]]) == sum(
            money(r[col["兑现金额（元）"]]) for r in body)
        for r in body:   # the department sees the commitment and the whole account
            key = (r[col["policy_id"]], r[col["period"]], r[col["uscc"]])
            assert (r[col["信用承诺"]], r[col["银行账号"]]) == ("已承诺", account(key))
    assert on_review == set(confirmed)              # not the declined one, not the unanswered
    assert sheet_rows(app_book[0])[1][0][sheet_rows(app_book[0])[0].index("uscc")] == app[2]
    assert not {key_of(r) for r in sms2} & set(ledger1) - set(h_all)   # nobody is told twice

    def review(books, decide, stem):
        for n, book in enumerate(books):
            wb = load_workbook(book)
            ws = wb.worksheets[0]
            header = [c.value for c in ws[3]]
            col = {name: i + 1 for i, name in enumerate(header)}
            for r in range(4, ws.max_row + 1):
                key = tuple(ws.cell(r, col[k]).value for k in ("policy_id", "period", "uscc"))
                if key in walked:
                    result, opinion = decide(key)
                    ws.cell(r, col["审核结果"], result)
                    ws.cell(r, col["审核意见"], opinion)
            out = tmp_path / f"{stem}_{n}.xlsx"
            wb.save(out)
            w.drop("_reviews", f"{stem}_{n}_{book.name}", out.read_bytes())
        return w.process()

    done = review(books, lambda k: ("不通过", "经核实该企业参保人数不符，不予兑现") if k == a_no else ("通过", None),
                  "审核结果")
    assert sorted((d["folder"], d["status"], d["errors"]) for d in done) == [("_reviews", "accepted", 0)] * 3
    approved = [k for k in confirmed if k != a_no]
    assert w.statuses(approved) == dict.fromkeys(approved, "approved")
    assert w.statuses([a_no]) == {a_no: "rejected"}
    w.drop("_confirmations", "意愿确认结果_H.xlsx", xlsx_bytes("企业申领意愿确认结果", CONFIRM_HEADER, [
        [k[2], k[0], k[1], "确认申领", "2026-11-27 10:00:00", *payee(k)] for k in h], tmp_path / "confirm_h.xlsx"))
    assert [(d["status"], d["errors"]) for d in w.process()] == [("accepted", 0)]

    # ------------------------------------------------------------ night 3: publicity opens; H's review
    s3 = w.night(N3)
    assert s3["列入拨付清单"] == 0 and not list((w.run_dir(N3) / "payout").glob("*"))
    assert s3["超预算暂停的政策"] == [] and H not in over_budget_alerts()
    public = sorted((w.run_dir(N3) / "publicity").glob("*.xlsx"))
    assert {p.name.split("_")[0] for p in public} == {A, B, C}
    listed = {}
    for p in public:
        header, body, _ = sheet_rows(p)
        assert "手机号码" not in header and "法定代表人" not in header and "银行账号" not in header
        col = {name: i for i, name in enumerate(header)}
        for r in body:
            listed[(r[col["统一社会信用代码"]], p.name.split("_")[0])] = (
                r[col["公示开始日期"]], r[col["公示截止日期"]])
    # five (seven) working days from Saturday 11-28: 11-30 .. 12-04 (12-08)
    assert listed == {(k[2], k[0]): ("2026-11-28", "2026-12-08" if k[0] == B else "2026-12-04") for k in approved}
    h_books = sorted((w.run_dir(N3) / "review").rglob(f"{H}_部门审核表.xlsx"))
    app_books = sorted((w.run_dir(N3) / "review").rglob(f"{MP}_部门审核表.xlsx"))
    assert len(h_books) == len(app_books) == 1
    assert [d["errors"] for d in review(h_books + app_books, lambda k: ("通过", None), "审核结果H")] == [0, 0]
    assert w.statuses([*h, app]) == dict.fromkeys([*h, app], "approved")

    # ------------------------------------------------------------ night 4: 再确认 suspends two; first payout
    w.before_night[N4] = lambda: (w.list_as_dishonest(N4, a_listed[2], date(2026, 12, 1)),
                                  w.deregister(N4, c[2]))
    s4 = w.night(N4, accept_drift=True)     # the credit list grew by a quarter (4 → 5 rows)
    batch1 = f"PB-{N4:%Y%m%d}-01"
    suspended = {k: r["recheck_reason"] for k, r in w.ledger().items() if r["status"] == "suspended"}
    assert suspended == {a_listed: "列入失信被执行人名单（2026-12-01）", c: "登记状态为注销"}
    assert s4["拨付批次"] == [batch1] and s4["再确认未通过（本次暂缓拨付）"] == 2
    assert w.statuses([a_listed, c]) == {a_listed: "suspended", c: "suspended"}
    first_wave = [a_pay, *h, app]
    payout_dir = w.run_dir(N4) / "payout"
    pay_csv = read_csv(payout_dir / "payout.csv")
    assert sorted(key_of(r) for r in pay_csv) == sorted(first_wave)     # not the suspended, not B
    assert {r["批次号"] for r in pay_csv} == {batch1}
    assert all((r["银行账号"], r["收款户名"]) == (account(key_of(r)), names[key_of(r)[2]]) for r in pay_csv)
    parquet = pq.read_table(payout_dir / "payout.parquet").to_pylist()
    assert sorted((r["policy_id"], r["period"], r["uscc"], r["amount"], r["batch_id"]) for r in parquet) == \
        sorted((*key_of(r), money(r["金额（元）"]), r["批次号"]) for r in pay_csv)
    ledger4 = w.ledger()
    departments = {ledger4[k]["department"] for k in first_wave}
    for d in departments:
        header, body, total = sheet_rows(payout_dir / f"{d}_拨付清单.xlsx")
        col = {name: i for i, name in enumerate(header)}
        mine = [k for k in first_wave if ledger4[k]["department"] == d]
        assert sorted((r[col["政策编号"]], r[col["期次"]], r[col["统一社会信用代码"]]) for r in body) == sorted(mine)
        assert money(total[col["金额（元）"]]) == sum(ledger4[k]["amount"] for k in mine)
        assert total[col["金额（大写）"]].startswith("人民币")
    for key, why in ((a_listed, "列入失信被执行人名单（2026-12-01）"), (c, "登记状态为注销")):
        book = w.run_dir(N4) / "review" / ledger4[key]["department"] / f"{key[0]}_复核表.xlsx"
        header, body, _ = sheet_rows(book)
        col = {name: i for i, name in enumerate(header)}
        assert [(r[col["uscc"]], r[col["暂缓拨付原因"]]) for r in body] == [(key[2], why)]
    assert w.statuses([b]) == {b: "approved"}
    assert w.query(sa.select(payout_batches.c.batch_id, payout_batches.c.status, payout_batches.c.total)) == [
        (batch1, "scheduled", sum(ledger4[k]["amount"] for k in first_wave))]

    # ------------------------------------------------------------ payments (once), the override, a recovery
    payments = csv_bytes(PAY_HEADER, [[r["批次号"], r["统一社会信用代码"], r["政策编号"], r["期次"],
                                       r["金额（元）"], "2026-12-04"] for r in pay_csv])
    w.drop("_payments", f"拨付回单_{batch1}.csv", payments)
    assert [(d["status"], d["rows"], d["errors"]) for d in w.process()] == [("accepted", len(first_wave), 0)]
    assert w.statuses(first_wave) == dict.fromkeys(first_wave, "paid")
    w.drop("_payments", "拨付回单（重发）.csv", payments)        # same bytes, another name
    assert [d["status"] for d in w.process()] == ["duplicate"]
    assert w.moves("paid") == Counter(first_wave)
    # before anything else comes back, a rerun of night 4's ledger step finds the committed
    # batch: the same payout files, no new batch, no ledger move
    before = {p.name: p.read_bytes() for p in payout_dir.iterdir()}
    moves = w.query(sa.select(sa.func.count()).select_from(ledger_transitions))
    rerun = handoff.ledger_and_outputs(settings, N4, "rerun-of-night-4")
    assert rerun["payout_new_batch"] is None and rerun["payout_batches"] == [batch1]
    assert {p.name: p.read_bytes() for p in payout_dir.iterdir()} == before
    assert w.query(sa.select(sa.func.count()).select_from(ledger_transitions)) == moves
    c_book = w.run_dir(N4) / "review" / ledger4[c]["department"] / f"{C}_复核表.xlsx"
    done = review([c_book], lambda k: ("通过", "注销前已完成招用并足额参保，经复核同意拨付"), "复核结果")
    assert [d["errors"] for d in done] == [0] and w.statuses([c]) == {c: "approved"}
    w.drop("_recoveries", "追回通知.csv", csv_bytes(["统一社会信用代码", "政策编号", "期次", "追回金额", "追回原因"], [
        [a_pay[2], a_pay[0], a_pay[1], str(ledger4[a_pay]["amount"]), "事后核查发现虚报参保人数"]]))
    assert [(d["status"], d["errors"]) for d in w.process()] == [("accepted", 0)]
    w.drop("_recovery_receipts", "追回到账.csv", csv_bytes(["统一社会信用代码", "政策编号", "期次", "实收金额", "到账日期"], [
        [a_pay[2], a_pay[0], a_pay[1], str(ledger4[a_pay]["amount"]), "2026-12-04"]]))
    assert [(d["status"], d["errors"]) for d in w.process()] == [("accepted", 0)]
    assert w.statuses([a_pay]) == {a_pay: "recovered"}

    # ------------------------------------------------------------ night 5: listing gone, override, B's window over
    w.before_night[N5] = lambda: w.deregister(N5, c[2])           # C still 注销; A's listing removed
    s5 = w.night(N5)
    batch2 = f"PB-{N5:%Y%m%d}-01"
    assert s5["拨付批次"] == [batch2] and s5["再确认恢复（暂缓转审核通过）"] == 1
    pay_csv5 = read_csv(w.run_dir(N5) / "payout" / "payout.csv")
    assert sorted(key_of(r) for r in pay_csv5) == sorted([a_listed, b, c])
    assert w.statuses([a_listed, b, c]) == dict.fromkeys([a_listed, b, c], "scheduled")
    w.drop("_payments", f"拨付回单_{batch2}.csv", csv_bytes(PAY_HEADER, [
        [r["批次号"], r["统一社会信用代码"], r["政策编号"], r["期次"], r["金额（元）"], "2026-12-06"]
        for r in pay_csv5]))
    assert [d["status"] for d in w.process()] == ["accepted"]

    # ------------------------------------------------------------ the end state
    final = w.ledger()
    assert w.statuses(walked) == {**dict.fromkeys([a_listed, b, c, *h, app], "paid"), a_pay: "recovered",
                                  a_no: "rejected", a_decl: "declined"}
    assert all(final[k]["status"] == "notified" for k in untouched)
    assert w.moves("paid") == Counter([*first_wave, a_listed, b, c])      # each exactly once
    assert w.moves("scheduled") == Counter([*first_wave, a_listed, b, c])
    assert sorted(w.query(sa.select(payout_batches.c.batch_id, payout_batches.c.status))) == [
        (batch1, "paid"), (batch2, "paid")]
    assert all(final[k]["amount"] == ledger1[k]["amount"] for k in walked - {app})
    assert len(w.query(sa.select(payout_items))) == len(first_wave) + 3
    print(f"\nlifecycle on {warehouse_url.split(':')[0]}: {round(time.perf_counter() - began, 1)} s; "
          f"nights: {w.timings}")
