"""Returned files (confirmations, reviews, objections, payments): any file is
applied row by row or refused whole with a Chinese reason; never an
exception; a refused row changes nothing; nothing is paid twice."""
from __future__ import annotations

import sys
import tempfile
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import event, given, settings, strategies as st

from pipelines import handoff, intake, returns, warehouse
from pipelines.config import Settings
from tests.hardening.conftest import budget
from tests.hardening.strategies import CJK, NASTY, received_file, valid_file, xlsx_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from h5_support import code, match, write_matches  # noqa: E402

pytestmark = pytest.mark.fuzz
D1 = date(2026, 11, 26)
P = "WL-RS-2026-01"
HEADERS = {
    "_confirmations": ["统一社会信用代码", "政策编号", "期次", "确认结果", "确认时间", "信用承诺", "收款户名", "开户银行",
                       "银行账号"],
    "_reviews": ["统一社会信用代码", "政策编号", "期次", "审核结果", "审核意见", "兑现金额（元）"],
    "_objections": ["统一社会信用代码", "政策编号", "期次", "异议内容", "处理结果"],
    "_payments": ["批次号", "统一社会信用代码", "政策编号", "期次", "实付金额", "支付日期"],
    "_recoveries": ["统一社会信用代码", "政策编号", "期次", "追回金额", "追回原因"],
    "_recovery_receipts": ["统一社会信用代码", "政策编号", "期次", "实收金额", "到账日期"],
}
ANSWERS = ["确认申领", "放弃", "通过", "不通过", "维持", "撤销", "5000.00", "5,000元", "2026-11-28", "PAY-2026-001"]


def good_rows(folder: str) -> list[list[object]]:
    out = []
    for n in (1, 2, 3):
        base = {"统一社会信用代码": code(n), "政策编号": P, "期次": "2026", "确认结果": "确认申领",
                "确认时间": "2026-11-27 09:00", "审核结果": "通过", "审核意见": "", "兑现金额（元）": "5000.00",
                "异议内容": "金额有误", "处理结果": "", "批次号": "PAY-2026-001", "实付金额": "5000.00",
                "支付日期": "2026-11-28", "信用承诺": "已承诺", "收款户名": f"南阳市卧龙区示范{n}有限公司",
                "开户银行": "工行", "银行账号": "6222 0200 0000 1234", "追回金额": "5000.00",
                "追回原因": "虚报", "实收金额": "5000.00", "到账日期": "2026-12-10"}
        out.append([base[h] for h in HEADERS[folder]])
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("returns")
    s = Settings(landing=base / "landing", inbox=base / "inbox", policies=base / "policies",
                 output=base / "output", work=base / "work", warehouse_url=f"sqlite:///{base / 'w.db'}",
                 expectations=base / "gx")
    s.policies.mkdir(parents=True)
    write_matches(s, D1, [match(n=i) for i in range(1, 4)])
    handoff.ledger_and_outputs(s, D1, "r1")
    yield s
    warehouse.dispose_all()


def paid_twice(s) -> list:
    engine = warehouse.connect(s.warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select ledger_id, count(*) from ledger_transitions where to_status = 'paid' "
            "group by ledger_id having count(*) > 1")).all()
    return rows


def files(folder: str):
    cells = st.sampled_from(NASTY + ANSWERS)
    return st.one_of(received_file(HEADERS[folder]), valid_file(good_rows(folder), HEADERS[folder]),
                     st.lists(st.lists(cells, min_size=len(HEADERS[folder]), max_size=len(HEADERS[folder])), max_size=5)
                     .map(lambda rows: ("rows.xlsx", xlsx_bytes([HEADERS[folder]] + rows))))


@settings(max_examples=budget(60))
@given(data=st.data(), folder=st.sampled_from(sorted(HEADERS)))
def test_any_returned_file_is_applied_or_refused(env, data, folder):
    name, payload = data.draw(files(folder))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(payload)
        result = intake.HANDLERS[folder](env, path, "0" * 64, folder)
    assert isinstance(result, intake.IntakeResult)
    if not result.accepted:
        assert CJK.search(result.reason or ""), result.reason
    for row in result.rows:
        assert row.error is None or CJK.search(row.error), row.error
    assert paid_twice(env) == []
    event(f"{folder} {name}: {'applied' if result.accepted else 'refused'}")
