"""Feed deliveries (CSV / xlsx / anything with those names): every input is
either ingested or rejected whole with a Chinese reason; never an exception,
never a half-written staged or quarantine file, and the landing folder is
never touched."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import event, given, settings, strategies as st

from pipelines import ingest
from pipelines.contracts import FEEDS
from tests.hardening.conftest import budget
from tests.hardening.strategies import (CJK, code, csv_text, encode, no_partial_files, parquet_ok, received_file,
                                       valid_file, xlsx_bytes)
from tests.ingest_helpers import AS_OF, delivery_dir, row, settings_for

FEED_NAMES = ["registry", "tax", "social_insurance"]
pytestmark = pytest.mark.fuzz


def deliver_bytes(root: Path, feed: str, name: str, data: bytes):
    s = settings_for(root)
    folder = delivery_dir(s, feed, AS_OF)
    folder.mkdir(parents=True)
    (folder / name).write_bytes(data)
    (folder / "_SUCCESS").write_bytes(b"")
    return s, folder / name


def check_outcome(s, feed: str, sent: Path, data: bytes) -> dict:
    summary = ingest.ingest_feed(s, feed, AS_OF)
    assert summary["status"] in ("ingested", "rejected"), summary
    staged = s.staged / feed / f"{AS_OF.isoformat()}.parquet"
    quarantine = s.quarantine / feed / f"{AS_OF.isoformat()}.parquet"
    if summary["status"] == "rejected":
        assert CJK.search(summary["reason"] or ""), summary["reason"]
        assert not staged.exists() and not quarantine.exists()
    else:
        assert summary["reason"] is None
        assert pq.read_table(staged).num_rows == summary["good_rows"]
        assert pq.read_table(quarantine).num_rows == summary["bad_rows"]
        assert summary["good_rows"] + summary["bad_rows"] == summary["rows"] > 0
    assert no_partial_files(s.work) == [] and parquet_ok(s.work) == []
    assert sent.read_bytes() == data                      # landing is never touched
    assert (s.quality_dir(AS_OF) / f"{feed}.ingest.json").exists()
    return summary


@settings(max_examples=budget(100))
@given(feed=st.sampled_from(FEED_NAMES), data=st.data())
def test_any_delivery_is_ingested_or_rejected(feed, data):
    headers = [c.header for c in FEEDS[feed].columns]
    good = good_rows(feed, 6)
    name, payload = data.draw(st.one_of(received_file(headers), valid_file(good[1:], good[0])))
    with tempfile.TemporaryDirectory() as d:
        s, sent = deliver_bytes(Path(d), feed, name, payload)
        event(f"{name}: {check_outcome(s, feed, sent, payload)['status']}")


def good_rows(feed: str, n: int, **overrides) -> list[list[object]]:
    recs = [row(feed, i, **overrides) for i in range(1, n + 1)]
    return [list(recs[0])] + [list(r.values()) for r in recs]


def test_gbk_file_and_utf8_file_give_the_same_rows(tmp_path):
    """GBK bytes where UTF-8 is assumed (no BOM) are read as GB18030; the same
    rows in UTF-8 give the same staged table."""
    grid = good_rows("registry", 5, address="卧龙区工业路１号")
    out = {}
    for enc in ("utf-8", "gbk"):
        s, sent = deliver_bytes(tmp_path / enc, "registry", "r.csv", encode(csv_text(grid), enc))
        out[enc] = check_outcome(s, "registry", sent, sent.read_bytes())
        assert out[enc]["status"] == "ingested" and out[enc]["good_rows"] == 5
    a = pq.read_table(out["utf-8"]["staged_path"]).drop_columns(["_file"])
    b = pq.read_table(out["gbk"]["staged_path"]).drop_columns(["_file"])
    assert a.equals(b)


def test_utf8_bom_with_gbk_body_is_rejected_not_garbled(tmp_path):
    """A BOM declares UTF-8; a GBK body after it is refused with a reason, not read as mojibake."""
    data = b"\xef\xbb\xbf" + encode(csv_text(good_rows("registry", 3)), "gbk")
    s, sent = deliver_bytes(tmp_path, "registry", "r.csv", data)
    summary = check_outcome(s, "registry", sent, data)
    assert summary["status"] == "rejected" and "编码" in summary["reason"]


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_one_megabyte_cell_is_kept_whole(tmp_path, kind):
    huge = "卧龙" * 500_000                                   # 1,000,000 characters, 3 MB in UTF-8
    grid = good_rows("registry", 3)
    grid[2][grid[0].index("注册地址")] = huge
    data = encode(csv_text(grid), "utf-8") if kind == "csv" else xlsx_bytes(grid)
    s, sent = deliver_bytes(tmp_path, "registry", f"r.{kind}", data)
    started = time.monotonic()
    summary = check_outcome(s, "registry", sent, data)
    assert time.monotonic() - started < 20
    assert summary["status"] == "ingested" and summary["good_rows"] == 3
    staged = pq.read_table(summary["staged_path"]).to_pylist()
    assert staged[1]["address"] == huge


def test_formulas_are_read_as_their_values_or_text(tmp_path):
    """A live formula yields its cached value; formula text in a CSV stays text
    (and would be neutralised on any export)."""
    grid = good_rows("registry", 2)
    col = grid[0].index("注册地址")
    grid[1][col] = "=1+1"                                     # a live formula (cached value 2)
    grid[2][col] = '=HYPERLINK("http://evil.example","点此")'
    s, sent = deliver_bytes(tmp_path / "x", "registry", "r.xlsx", data := xlsx_bytes(grid))
    summary = check_outcome(s, "registry", sent, data)
    assert summary["status"] == "ingested"
    addresses = [r["address"] for r in pq.read_table(summary["staged_path"]).to_pylist()]
    assert addresses == ["2", "2"]                            # cached values, never evaluated by us
    s, sent = deliver_bytes(tmp_path / "c", "registry", "r.csv", data := encode(csv_text(grid), "utf-8"))
    summary = check_outcome(s, "registry", sent, data)
    addresses = [r["address"] for r in pq.read_table(summary["staged_path"]).to_pylist()]
    assert addresses == ["=1+1", '=HYPERLINK("http://evil.example","点此")']


def test_excel_serial_dates(tmp_path):
    from tests.hardening.xlsx_builder import DATE

    grid = good_rows("registry", 3)
    col = grid[0].index("成立日期")
    grid[1][col] = (DATE, 42064)           # a date cell (date style): 2015-03-01
    grid[2][col] = 42064                   # the bare serial number in a general cell
    grid[3][col] = "42064"                 # the serial typed as text
    s, sent = deliver_bytes(tmp_path, "registry", "r.xlsx", data := xlsx_bytes(grid))
    summary = check_outcome(s, "registry", sent, data)
    days = [r["established_on"].isoformat() for r in pq.read_table(summary["staged_path"]).to_pylist()]
    assert days == ["2015-03-01"] * 3


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_xlsx_is_rejected(tmp_path, cut):
    data = xlsx_bytes(good_rows("registry", 50))
    data = data[: int(len(data) * cut)]
    s, sent = deliver_bytes(tmp_path, "registry", "r.xlsx", data)
    summary = check_outcome(s, "registry", sent, data)
    assert summary["status"] == "rejected" and "损坏" in summary["reason"]


@pytest.mark.slow
def test_a_sheet_of_1048576_rows(tmp_path):
    """Excel's last row: 1 header + 1,048,575 data rows, written straight as XML."""
    from tests.hardening.xlsx_builder import write_xlsx, sheet

    header = ["统一社会信用代码", "企业名称", "成立日期"]
    body = ([code(1 + i % 1000), "南阳卧龙测试企业有限公司", "2015-03-01"] for i in range(1_048_575))
    folder = delivery_dir(settings_for(tmp_path), "registry", AS_OF)
    folder.mkdir(parents=True)
    write_xlsx(folder / "r.xlsx", sheet(__import__("itertools").chain([header], body), "A1:C1048576"))
    (folder / "_SUCCESS").write_bytes(b"")
    s = settings_for(tmp_path)
    started = time.monotonic()
    summary = check_outcome(s, "registry", folder / "r.xlsx", (folder / "r.xlsx").read_bytes())
    assert summary["status"] == "ingested" and summary["rows"] == 1_048_575
    assert time.monotonic() - started < 300


def test_a_number_too_long_for_decimal_is_a_field_defect_not_a_crash(tmp_path):
    """Found by the fuzz run: 60 nines in a money column raised decimal.InvalidOperation."""
    grid = good_rows("tax", 3)
    grid[2][grid[0].index("纳税总额（元）")] = "9" * 60
    s, sent = deliver_bytes(tmp_path, "tax", "t.csv", data := encode(csv_text(grid), "utf-8"))
    summary = check_outcome(s, "tax", sent, data)
    # an optional column: the value is nulled and the row kept (feeds.md, Row-level outcome)
    assert summary["status"] == "ingested" and summary["bad_rows"] == 0
    kept = pq.read_table(summary["staged_path"]).to_pylist()[1]
    assert kept["tax_paid"] is None and "数值超出范围" in kept["_defects"][0]["reason"]


def test_a_lone_carriage_return_in_the_header_is_read_not_a_crash(tmp_path):
    """Found by the long fuzz run: a lone CR in the first line made csv raise (an uncaught csv.Error)."""
    data = b"\r\xc4\xcf\xd1\xf4\xca\xd0\xce\xd4\xc1\xfa\xc7\xf8\n"
    s, sent = deliver_bytes(tmp_path, "registry", "r.csv", data)
    summary = check_outcome(s, "registry", sent, data)
    assert summary["status"] == "rejected"
