"""Name-list workbooks: any file is read into a list or refused with a
Chinese reason (never an exception); through the inbox, any file ends in
_archive or _rejected with an answer, and the stored name list is whole."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import event, given, settings, strategies as st

from pipelines import inbox, namelist
from tests.conftest import make_settings
from tests.hardening.conftest import budget
from tests.hardening.strategies import CJK, code, no_partial_files, parquet_ok, received_file, valid_file, xlsx_bytes
from tests.namelist_workbooks import name_list_policy, xls_bytes

pytestmark = pytest.mark.fuzz
HEADER = ["序号", "统一社会信用代码", "企业名称", "奖补金额（元）", "备注"]
NAMES = {code(i): f"南阳市卧龙区测试企业{i}有限公司" for i in range(1, 31)}
REGISTRY = pa.table({"uscc": list(NAMES), "name": list(NAMES.values())})
POLICIES = [SimpleNamespace(benefit=SimpleNamespace(type="from_list")),
            SimpleNamespace(benefit=SimpleNamespace(type="fixed", amount=5000)),
            SimpleNamespace(benefit=SimpleNamespace(type="per_head"))]
POLICY = "WL-RS-2026-09"
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)


def named_files():
    xls = st.lists(st.lists(st.one_of(st.text(max_size=12), st.floats(allow_nan=False, allow_infinity=False),
                                      st.sampled_from(HEADER + list(NAMES)[:3])), max_size=5), max_size=6)
    good = [[i, c, n, 5000, None] for i, (c, n) in enumerate(NAMES.items(), start=1)]
    return st.one_of(received_file(HEADER), valid_file(good, HEADER), valid_file(good, HEADER),
                     xls.map(lambda rows: ("list.xls", xls_bytes([HEADER] + rows))))


def check(result: namelist.CheckResult, parsed: namelist.ParsedList) -> None:
    if result.accepted:
        assert result.reason is None and result.rows and len(result.rows) + result.bad_rows == result.data_rows
    else:
        assert CJK.search(result.reason or ""), result.reason
        assert result.rows == []
    for e in result.errors:
        assert e.category in namelist.CATEGORIES and CJK.search(e.message)


@settings(max_examples=budget(150))
@given(file=named_files(), policy=st.sampled_from(POLICIES))
def test_any_file_is_read_or_refused(file, policy):
    name, data = file
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        parsed = namelist.read_name_list(path, make_settings(Path(d)))
        assert parsed.error is None or CJK.search(parsed.error)
        result = namelist.check_name_list(parsed, REGISTRY, policy)
        check(result, parsed)
        event(f"{name}: {'accepted' if result.accepted else 'refused'}")


def make_env(base: Path):
    policies = base / "policies"
    policies.mkdir(parents=True)
    (policies / "rs.yaml").write_text(name_list_policy(POLICY), encoding="utf-8")
    s = make_settings(base, policies=policies)
    folder = s.work / "validated" / "registry"
    folder.mkdir(parents=True)
    pq.write_table(REGISTRY, folder / "2026-11-25.parquet")
    (s.inbox / POLICY).mkdir(parents=True)
    return s


def assert_taken_once(s, name: str, data: bytes, results: list[dict]) -> dict:
    assert len(results) == 1, results
    r = results[0]
    assert r["status"] in ("accepted", "rejected"), r          # never "error": no uncaught exception
    assert not (s.inbox / POLICY / name).exists()               # moved out of the drop folder
    where = s.inbox / r["archived_to"]
    assert where.read_bytes() == data                            # moved whole, to the right place
    assert r["archived_to"].startswith("_archive/" if r["status"] == "accepted" else "_rejected/")
    assert (s.inbox / r["answer"]).stat().st_size > 0
    stored = list((s.work / "namelists").rglob("*.parquet"))
    assert len(stored) == (1 if r["status"] == "accepted" else 0)
    assert no_partial_files(s.work) == [] and no_partial_files(s.inbox) == [] and parquet_ok(s.work) == []
    journal = [json.loads(line) for line in (s.inbox / "_state" / "processed.jsonl").read_text("utf-8").splitlines()]
    assert [j["status"] for j in journal] == [r["status"]]
    return r


@settings(max_examples=budget(40))
@given(file=named_files())
def test_any_file_dropped_in_the_inbox_is_taken_once(file):
    name, data = file
    with tempfile.TemporaryDirectory() as d:
        s = make_env(Path(d))
        dropped = s.inbox / POLICY / name
        dropped.write_bytes(data)
        old = (NOW - timedelta(hours=1)).timestamp()
        os.utime(dropped, (old, old))
        r = assert_taken_once(s, name, data, inbox.process(s, now=NOW, settle_seconds=60))
        event(f"{name}: {r['status']}")


def test_one_megabyte_cell_and_formulas_in_a_name_list(tmp_path):
    rows = [HEADER, [1, list(NAMES)[0], NAMES[list(NAMES)[0]], 1000, "注" * 1_000_000],
            [2, list(NAMES)[1], NAMES[list(NAMES)[1]], 2000, '=HYPERLINK("http://evil.example","点此")'],
            [3, list(NAMES)[2], NAMES[list(NAMES)[2]], "=1+1", None]]
    path = tmp_path / "list.xlsx"
    path.write_bytes(xlsx_bytes(rows))
    parsed = namelist.read_name_list(path, make_settings(tmp_path))
    result = namelist.check_name_list(parsed, REGISTRY, POLICIES[0])
    # a live formula gives its cached value (2 here), never evaluated by us
    assert result.accepted and [r.note for r in result.rows] == ["注" * 1_000_000, "2", ""]
    assert [r.amount for r in result.rows] == [1000, 2000, 2]


def test_an_amount_too_long_for_decimal_is_a_bad_amount(tmp_path):
    """Found by the fuzz run: 60 nines as an amount raised decimal.InvalidOperation,
    which left the file in the inbox as a handler error on every pass."""
    with pytest.raises(namelist.AmountError, match="超出范围"):
        namelist.parse_amount("9" * 60)
    with pytest.raises(namelist.AmountError, match="超出范围"):
        namelist.parse_amount("9" * 27, namelist.TEN_THOUSAND)


def test_a_damaged_xls_does_not_abort_the_process(tmp_path):
    """Found by the long fuzz run: three bytes changed in a valid BIFF8 workbook
    (tests/hardening/data/calamine_oom.xls) make calamine try to allocate 343 GB;
    Rust aborts, which no `except` can catch: the inbox pass (or the DAG task) dies."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code_ = ("import sys; from pipelines import namelist; "
             "p = namelist.read_name_list(sys.argv[1]); print(p.error)")
    done = subprocess.run([sys.executable, "-c", code_, str(Path(__file__).parent / "data" / "calamine_oom.xls")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and CJK.search(done.stdout), done.stderr[-500:]


def test_a_lone_carriage_return_in_a_csv_list(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("统一社会信用代码,企业名称\r某,\n".encode("utf-8"))
    parsed = namelist.read_name_list(path, make_settings(tmp_path))
    assert parsed.error is None or CJK.search(parsed.error)
