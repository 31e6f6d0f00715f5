"""The frame GX validates and the vectorised USCC check: faster, never a different verdict."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.gx_uscc import valid_codes
from pipelines.uscc import CHARSET, complete, is_valid
from pipelines.gx_suites import gx_frame, gx_parameters, suite_columns
from pipelines.validate import row_failures, validate_feed
from pipelines.ingest import ingest_feed
from tests.ingest_helpers import AS_OF, deliver, row, settings_for

DELIVERED = AS_OF - dt.timedelta(days=1)


# --- the USCC check, column-wise ---------------------------------------------------------


def _codes() -> list:
    rnd = random.Random(7)
    out: list = [None, "", 1, 3.5, "91411303MA1234567", "Ｘ" * 18]
    for _ in range(3000):
        good = complete("".join(rnd.choice(CHARSET) for _ in range(17)))
        out += [
            good,
            good[:17] + rnd.choice(CHARSET),        # check character right or wrong
            good.lower(),                           # lower case is not normalised here
            good[: rnd.randint(0, 19)],             # too short
            good + "0",                             # too long
            good[:5] + rnd.choice("IOSVZ") + good[6:],  # letters outside the charset
            good[:16] + "测" + good[17],            # 18 characters, not 18 bytes
            good[:10] + "０" + good[11:],           # full-width digit
            good[:17] + "\x00",
            "".join(chr(rnd.randint(32, 0x2FF)) for _ in range(18)),
        ]
    return out


def test_valid_codes_agrees_with_is_valid_on_every_kind_of_value():
    values = _codes()
    expected = np.array([is_valid(v) for v in values])
    assert expected.sum() > 2000  # the sample has plenty of valid codes
    objects = np.array(values, dtype=object)
    np.testing.assert_array_equal(valid_codes(objects), expected)  # mixed types: the per-value path
    text = [v for v in values if isinstance(v, str)]
    want = np.array([is_valid(v) for v in text])
    np.testing.assert_array_equal(valid_codes(pd.array(text, dtype="str")), want)
    np.testing.assert_array_equal(valid_codes(pa.array(text).slice(3)), want[3:])
    np.testing.assert_array_equal(valid_codes(pa.chunked_array([text[:100], text[100:]], pa.large_string())), want)
    assert valid_codes(pa.array([], pa.string())).shape == (0,)


# --- the frame ------------------------------------------------------------------------------


def _table(**columns) -> pa.Table:
    n = len(next(iter(columns.values())))
    columns["_row"] = pa.array(range(2, n + 2), pa.int64())
    columns["_file"] = pa.array(["f.csv"] * n)
    return pa.table(columns)


MONEY = pa.decimal128(38, 6)


def test_frame_numbers_become_float64_only_when_exact():
    table = _table(
        small=pa.array([1, None, -3], pa.int64()),
        huge=pa.array([2**53 + 1, None, 0], pa.int64()),
        money=pa.array([Decimal("0.1"), None, Decimal("-0.000001")], MONEY),
        fortune=pa.array([Decimal("4503599627.370496"), Decimal("0"), None], MONEY),
    )
    frame, _ = gx_frame(table, ["small", "huge", "money", "fortune"])
    assert frame["small"].dtype == np.float64 and frame["small"].isna().tolist() == [False, True, False]
    assert str(frame["huge"].dtype) == "Int64" and frame["huge"][0] == 2**53 + 1
    # correctly rounded, as float(Decimal) (the value Data Docs showed before)
    assert frame["money"].dtype == np.float64 and frame["money"][0] == 0.1 and frame["money"][2] == -1e-6
    # 2**52 units of 1e-6 or more: distinct values might round together, so it stays exact
    assert frame["fortune"].dtype == object and frame["fortune"][0] == Decimal("4503599627.370496")
    assert isinstance(frame.index, pd.RangeIndex) and list(frame.columns) == ["small", "huge", "money", "fortune"]


def test_frame_dates_and_timestamps_become_datetime64_ns_when_in_range():
    table = _table(
        day=pa.array([dt.date(2026, 1, 1), None], pa.date32()),
        other=pa.array([dt.date(1990, 5, 6), dt.date(2261, 12, 31)], pa.date32()),
        at=pa.array([dt.datetime(2026, 11, 25, 8), None], pa.timestamp("s")),
        period=pa.array(["2026-10", None]),
    )
    frame, dates_as_datetimes = gx_frame(table)
    assert dates_as_datetimes
    assert all(str(frame[c].dtype) == "datetime64[ns]" for c in ("day", "other", "at", "period"))
    assert frame["period"][0] == pd.Timestamp("2026-10-01") and pd.isna(frame["day"][1])

    far = _table(
        day=pa.array([dt.date(2026, 1, 1), None], pa.date32()),
        other=pa.array([dt.date(9999, 12, 31), None], pa.date32()),
        at=pa.array([dt.datetime(2300, 1, 1), None], pa.timestamp("s")),
    )
    frame, dates_as_datetimes = gx_frame(far)
    # one date outside the nanosecond range: every date stays a date (two date columns must compare)
    assert not dates_as_datetimes
    assert frame["day"][0] == dt.date(2026, 1, 1) and frame["other"][0] == dt.date(9999, 12, 31)
    assert str(frame["at"].dtype) == "datetime64[s]"


def test_gx_parameters_give_dates_as_midnight_only_for_datetime_frames():
    params = {"as_of": "2026-11-26", "delivery_day_end": "2026-11-25T23:59:59", "delivery_year": 2026,
              "delivery_month": "2026-11"}
    assert gx_parameters(params, False) == params
    assert gx_parameters(params, True) == {**params, "as_of": "2026-11-26T00:00:00"}


def test_frame_holds_only_the_columns_the_suite_reads():
    table = _table(a=pa.array([1]), b=pa.array(["x"]), c=pa.array([True]))
    pair = {"expectations": [{"type": "expect_column_pair_values_a_to_be_greater_than_b",
                              "kwargs": {"column_A": "c", "column_B": "a"}}]}
    assert suite_columns(pair, table) == ["a", "c"]
    table_wide = {"expectations": pair["expectations"] + [{"type": "expect_table_row_count_to_be_between",
                                                            "kwargs": {"min_value": 1}}]}
    assert suite_columns(table_wide, table) == ["a", "b", "c"]
    frame, _ = gx_frame(table, [])
    assert frame.shape == (1, 0)


def test_row_failures_format_templates_with_and_without_columns():
    table = _table(uscc=pa.array(["A", "B", None]), n=pa.array([1, -2, 3], pa.int64()))
    results = [
        {"type": "t1", "meta": {"reason_zh": "为空"}, "unexpected": [2]},
        {"type": "t2", "meta": {"reason_zh": "数 \"{n}\" 小于 0，代码 {uscc}，{as_of}，{unknown}"}, "unexpected": [1, 2]},
    ]
    assert row_failures(results, table, {"as_of": "2026-11-26"}) == {
        2: ["第4行 为空", "第4行 数 \"3\" 小于 0，代码 空，2026-11-26，{unknown}"],
        1: ["第3行 数 \"-2\" 小于 0，代码 B，2026-11-26，{unknown}"],
    }


# --- end to end: values the fast frame must leave to the exact path -------------------------


def _run(tmp_path, feed, records):
    settings = settings_for(tmp_path)
    deliver(settings, feed, DELIVERED, records)
    ingest_feed(settings, feed, AS_OF)
    return validate_feed(settings, feed, AS_OF)


def _reasons(verdict) -> dict[int, str]:
    """Row -> reason of every row a rule failed: quarantined, or kept with a field defect."""
    import csv

    with open(verdict["quarantine_csv"], encoding="utf-8-sig", newline="") as fh:
        reasons = {int(r["行号"]): r["原因"] for r in csv.DictReader(fh)}
    for defects in verdict["field_defects"].values():
        reasons.update({e["row"]: e["reason"] for e in defects["examples"]})
    return reasons


def test_huge_amounts_are_compared_exactly(tmp_path):
    # a millionth apart at 9e9: as float64 both would be the same number
    records = [row("tax", n) for n in range(1, 40)]
    records.append(row("tax", 50, revenue_10k="9000000000.000001", rd_expense_10k="9000000000.000002"))
    records.append(row("tax", 51, revenue_10k="9000000000.000002", rd_expense_10k="9000000000.000002"))
    verdict = _run(tmp_path, "tax", records)
    reasons = _reasons(verdict)
    assert set(reasons) == {41}
    assert "研发费用（万元）9000000000.000002 大于营业收入（万元）9000000000.000001" in reasons[41]


@pytest.mark.parametrize("far", ["2300-01-01", "1600-01-01"])
def test_dates_outside_the_nanosecond_range_are_still_checked(tmp_path, far):
    records = [row("registry", n) for n in range(1, 40)]
    records.append(row("registry", 50, established_on=far))
    records.append(row("registry", 51, updated_at=f"{far} 00:00:00"))
    records.append(row("registry", 52, established_on="2026-11-27"))
    verdict = _run(tmp_path, "registry", records)
    reasons = _reasons(verdict)
    future = far > "2026"
    assert set(reasons) == ({41, 42, 43} if future else {43})
    assert "晚于运行日期 2026-11-26" in reasons[43]
    if future:
        assert f'成立日期 "{far}" 晚于运行日期 2026-11-26' in reasons[41]
        assert "晚于交付日期 2026-11-25" in reasons[42]
