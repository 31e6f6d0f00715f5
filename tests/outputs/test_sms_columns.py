"""The SMS outbox made column-wise (`sms.outbox`) holds the very rows `sms.rows` makes one by one:
numbering across first notices and 催办, phones, deadlines per policy and night, the text."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from pipelines.outputs import sms
from pipelines.workdays import WorkCalendar

POLICIES = {
    "P1": SimpleNamespace(confirm_days=5, review_days=10, pay_days=10, guide_dict={"contact": "区人社局，0377-1"}),
    "P2": SimpleNamespace(confirm_days=15, review_days=10, pay_days=10, guide_dict={}),
}
SCHEMA = pa.schema([("name", pa.string()), ("uscc", pa.string()), ("policy_id", pa.string()),
                    ("policy_name", pa.string()), ("period", pa.string()), ("amount", pa.decimal128(20, 2)),
                    ("notified_as_of", pa.date32())])
ROW = st.fixed_dictionaries({
    "name": st.none() | st.sampled_from(["", "甲公司", "=乙\"公司\"", "a,b"]),
    "uscc": st.sampled_from(["U1", "U2", "U3", "U4"]),
    "policy_id": st.sampled_from(["P1", "P2", "P3"]),          # P3: no policy file tonight
    "policy_name": st.none() | st.sampled_from(["稳岗奖励", "研发补助"]),
    "period": st.just("2026"),
    "amount": st.none() | st.decimals(min_value=0, max_value=Decimal("1e9"), places=2),
    "notified_as_of": st.dates(min_value=date(2026, 9, 25), max_value=date(2026, 10, 12)),
})
PHONES = pa.table({"uscc": ["U1", "U3"], "phone": ["13800000001", "13800000003"]})


@settings(max_examples=150, deadline=None)
@given(st.lists(ROW, max_size=12), st.lists(ROW, max_size=6), st.integers(1, 5))
def test_columnwise_outbox_equals_the_row_by_row_one(first, reminded, cut):
    calendar = WorkCalendar()
    expected = sms.rows(first, {"U1": "13800000001", "U3": "13800000003"}, POLICIES, calendar, reminded)
    batches = [(kind, pa.Table.from_pylist(rows[i:i + cut], schema=SCHEMA))
               for kind, rows in ((sms.FIRST, first), (sms.REMINDER, reminded)) for i in range(0, len(rows), cut)]
    got = [r for t in sms.outbox(batches, PHONES, POLICIES, calendar) for r in t.to_pylist()]
    keys = [c.key for c in sms.COLUMNS]
    assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in expected]
