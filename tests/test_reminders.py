"""The three reminder lists over generated portraits: the 差一项 list holds only actionable
near misses, largest benefit first; no cell a person reads has more than 4 decimals; the
数据缺口 counts add up to the night's missing-data results per department."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from decimal import Decimal as D

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from openpyxl import load_workbook

from pipelines import contracts, engine
from pipelines.evidence import json_actual, value_column, value_text
from pipelines.outputs import reminders
from pipelines.policies import load_text

AS_OF = dt.date(2026, 11, 26)

def policy_yaml(pid: str, department: str, body: str, kind: str = "condition") -> str:
    return (f'id: {pid}\nname: 政策{pid}\ndepartment: {department}\nkind: {kind}\nperiod: "2026"\n'
            f"valid_from: 2026-01-01\nvalid_to: 2026-12-31\n{body}")


POLICIES_YAML = [
    policy_yaml("T-RD", "区科学技术局", """conditions:
  - {field: division_code, op: eq, value: "411303"}
  - {field: rd_ratio, op: ge, value: 0.03}
  - {field: revenue_10k, op: ge, value: 100}
benefit: {type: rate, base: revenue_10k, rate: 10, cap: 100000}
guards: [registered]
"""),
    policy_yaml("T-JOBS", "区人力资源和社会保障局", """conditions:
  - {field: division_code, op: in, value: ["411303"]}
  - any:
      - {field: insured_avg_12m, op: ge, value: 10}
      - {field: graduates_12m, op: ge, value: 3}
  - none:
      - {field: arrears, op: is_true}
benefit: {type: per_head, base: insured_count, amount_each: 500, cap: 50000}
"""),
    policy_yaml("T-CERT", "区科学技术局", """conditions:
  - {field: high_tech, op: is_true}
  - {field: tax_growth, op: ge, value: 0.1}
benefit: {type: fixed, amount: 50000}
"""),
    policy_yaml("T-MAN", "区人力资源和社会保障局", """conditions:
  - {field: size_class, op: in, value: [小型, 微型]}
""", kind="manual"),
]
POLICIES = [load_text(text)[0] for text in POLICIES_YAML]

ratios = st.one_of(st.none(), st.decimals(min_value=D(-1), max_value=D(1), places=18, allow_nan=False))
amounts = st.one_of(st.none(), st.decimals(min_value=D(0), max_value=D(100000), places=6, allow_nan=False))


def mostly(value: bool):
    return st.sampled_from([value, value, value, not value])


@st.composite
def enterprises(draw, n):
    rows = []
    for i in range(n):
        rows.append({
            "uscc": f"91411303MA{i:07d}X", "name": draw(st.sampled_from([None, f"企业{i}"])),
            "phone": "13800000000", "registered": draw(mostly(True)), "active": draw(mostly(True)),
            "dishonest": draw(mostly(False)), "division_code": draw(st.sampled_from(["411303", "411303", "411302", None])),
            "rd_ratio": draw(ratios), "revenue_10k": draw(amounts), "tax_growth": draw(ratios),
            "insured_avg_12m": draw(st.one_of(st.none(), st.decimals(min_value=D(0), max_value=D(30), places=18,
                                                                    allow_nan=False))),
            "insured_count": draw(st.one_of(st.none(), st.integers(0, 200))),
            "graduates_12m": draw(st.one_of(st.none(), st.integers(0, 5))),
            "arrears": draw(st.one_of(st.none(), st.booleans())), "high_tech": draw(st.booleans()),
            "size_class": draw(st.sampled_from([None, "小型", "中型"])),
        })
    return rows


def portrait(rows):
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in contracts.PORTRAIT_SCHEMA},
                    schema=contracts.PORTRAIT_SCHEMA)


TOO_PRECISE = re.compile(r"\d\.\d{5,}")


def cells(folder):
    """Every value of every list written (workbooks and CSVs)."""
    for path in sorted(folder.iterdir()):
        if path.suffix == ".xlsx":
            for row in load_workbook(path).active.iter_rows(values_only=True):
                yield path.name, row
        elif path.suffix == ".csv":
            for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))):
                yield path.name, row


def near_miss_rows(folder, department):
    """The 差一项 list of a department as (code, amount) in list order: the workbook, then the CSV beside it."""
    stem = folder / f"{department}_{reminders.NEAR_MISS}"
    out = []
    path = stem.with_suffix(".xlsx")
    if path.exists():
        rows = list(load_workbook(path).active.iter_rows(min_row=4, values_only=True))
        out += [(r[2], r[7]) for r in rows if isinstance(r[0], int)]
    rest = folder / f"{department}_{reminders.NEAR_MISS}_其余.csv"
    if rest.exists():
        out += [(r[2], float(r[7]) if r[7] else None)
                for r in list(csv.reader(io.StringIO(rest.read_text(encoding="utf-8-sig"))))[1:]]
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 25).flatmap(enterprises))
def test_lists_hold_what_a_department_can_act_on(rows, tmp_path_factory, monkeypatch):
    monkeypatch.setattr(reminders, "NEAR_MISS_XLSX_ROWS", 3)   # the spill to CSV is exercised too
    run_dir = tmp_path_factory.mktemp("run")
    table = portrait(rows)
    path = tmp_path_factory.mktemp("p") / "portrait.parquet"
    pq.write_table(table, path)
    matches = engine.evaluate(table, POLICIES, AS_OF)
    folder = run_dir / "reminders"
    written = reminders.write(folder, AS_OF, matches, path, [], POLICIES, "单位")
    by_code = {r["uscc"]: r for r in rows}
    district = {"T-RD": {0}, "T-JOBS": {0}, "T-CERT": set(), "T-MAN": set()}

    for name, row in cells(folder):
        for value in row:
            if isinstance(value, float):
                assert D(str(value)).as_tuple().exponent >= -4, (name, value)
            assert not TOO_PRECISE.search(str(value or "")), (name, value)

    near = matches.filter(pc.equal(matches.column("outcome"), "near_miss")).to_pylist()
    for department in {p.department for p in POLICIES}:
        listed = near_miss_rows(folder, department)
        for code, _ in listed:
            e = by_code[code]
            assert e["registered"] and e["active"] and not e["dishonest"] and e["division_code"] == "411303"
        amounts = [a for _, a in listed]
        known = [a for a in amounts if a is not None]
        assert known == sorted(known, reverse=True)
        assert amounts[:len(known)] == known            # unknown amounts last
        # exactly the actionable ones: none failing on the district, none outside it, none failing a guard
        expected = [r for r in near if r["department"] == department and r["failed_item"] not in district[r["policy_id"]]
                    and by_code[r["uscc"]]["registered"] and by_code[r["uscc"]]["active"]
                    and not by_code[r["uscc"]]["dishonest"] and by_code[r["uscc"]]["division_code"] == "411303"]
        assert sorted(c for c, _ in listed) == sorted(r["uscc"] for r in expected)
        assert written.summary.get(department, {}).get(reminders.NEAR_MISS, 0) == len(expected)

        # 数据缺口: the counts add up to the department's missing-data results
        missing = sum(1 for r in matches.to_pylist() if r["department"] == department and r["outcome"] == "missing_data")
        assert written.summary.get(department, {}).get(reminders.DATA_GAPS, 0) == missing
        gap_book = folder / f"{department}_{reminders.DATA_GAPS}.xlsx"
        if missing:
            counted = [r[3] for r in load_workbook(gap_book).active.iter_rows(min_row=4, values_only=True)
                       if isinstance(r[0], int)]
            assert sum(counted) == missing
        else:
            assert not gap_book.exists()


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["rd_ratio", "insured_avg_12m", "revenue_10k", "insured_count", "division_code",
                              "established_on", "high_tech", "industry_code"]),
       data=st.data())
def test_a_value_reads_the_same_column_wise_and_row_wise(field, data):
    t = contracts.PORTRAIT_SCHEMA.field(field).type
    if pa.types.is_decimal(t):
        values = st.decimals(min_value=D("-1E6"), max_value=D("1E6"), places=t.scale, allow_nan=False)
    elif pa.types.is_integer(t):
        values = st.integers(-10**6, 10**6)
    elif pa.types.is_boolean(t):
        values = st.booleans()
    elif pa.types.is_date(t):
        values = st.dates()
    else:
        values = st.sampled_from(["411303", "411302", "419001", "999999", "C3311"])
    got = data.draw(st.lists(st.one_of(st.none(), values), min_size=1, max_size=8))
    arr = pa.array(got, t)
    texts = json_actual(arr)
    assert value_column(field, texts).to_pylist() == [value_text(field, json.loads(x)) for x in texts.to_pylist()]


def test_clerks_values():
    assert value_text("rd_ratio", "0.028700000000000000") == "2.87%"
    assert value_text("division_code", "411324") == "镇平县"
    assert value_text("insured_avg_12m", "8.083333333333333333") == "8.08人"
    assert value_text("established_on", "2023-06-30") == "2023年06月30日"
    assert value_text("tax_paid", "-0.001") == "0元"


@pytest.mark.parametrize("confirm_from,as_of,left", [
    (dt.date(2026, 11, 26), dt.date(2026, 11, 26), 15),    # 15 working days from the SMS
    (dt.date(2026, 11, 26), dt.date(2026, 12, 18), 0),
])
def test_days_left_count_working_days(confirm_from, as_of, left):
    from pipelines import deadlines
    from pipelines.workdays import WorkCalendar

    calendar = WorkCalendar()
    deadline = deadlines.confirm_by(calendar, confirm_from, deadlines.Days())
    assert deadline == dt.date(2026, 12, 17)
    assert calendar.working_days_between(as_of, deadline) == left


def fixture_night(tmp_path):
    """The evidence fixture's night: its results written as the match stage writes them, its
    portrait beside them; (matches path, portrait path, policies)."""
    from pathlib import Path

    from pipelines import match
    from pipelines.policies import load_dir

    here = Path(__file__).resolve().parent / "fixtures" / "evidence_before"
    portrait = pq.read_table(here / "portrait.parquet")
    policies, _ = load_dir(here / "policies")
    lists = {f.stem.removeprefix("name_list-"): pq.read_table(f) for f in here.glob("name_list-*.parquet")}
    matches = tmp_path / "matches.parquet"
    stream = ((p.id, part) for p, part in engine.evaluate_stream(portrait, policies, AS_OF, lists))
    match.write_results(matches, stream, engine.evidence_templates(policies), {})
    pq.write_table(portrait, tmp_path / "portrait.parquet")
    return matches, tmp_path / "portrait.parquet", policies


def test_the_unclaimed_lists_are_written_before_the_lists_made_beside_are_waited_for(tmp_path):
    """The nightly stage hands `write` what waits for the 差一项 and 数据缺口 lists of its second
    process (`ListsJob.result`): by the time it is asked, every 应享未享 list is written, and
    the folder ends as one `write` that makes all the lists itself leaves it, paths in the
    same order."""
    matches, portrait, policies = fixture_night(tmp_path)
    inline = reminders.write(tmp_path / "inline", AS_OF, matches, portrait, [], policies, "单位",
                             scratch=tmp_path / "scratch")
    folder = tmp_path / "beside"
    made = reminders.write_near_miss_and_gaps(folder, AS_OF, matches, portrait, policies, "单位", tmp_path / "scratch")
    unclaimed_then = []

    def wait():
        unclaimed_then.extend(sorted(p.name for p in folder.iterdir() if reminders.UNCLAIMED in p.name))
        return made

    beside = reminders.write(folder, AS_OF, matches, portrait, [], policies, "单位", near_miss_and_gaps=wait)
    unclaimed = sorted(p.name for p in (tmp_path / "inline").iterdir() if reminders.UNCLAIMED in p.name)
    assert unclaimed and unclaimed_then == unclaimed
    assert [p.name for p in beside.paths] == [p.name for p in inline.paths]
    assert beside.summary == inline.summary
    assert ({p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".xlsx"}
            == {p.name: p.read_bytes() for p in (tmp_path / "inline").iterdir() if p.suffix != ".xlsx"})


def test_the_lists_do_not_depend_on_the_sorts_memory_or_the_lookup_batches(tmp_path, monkeypatch):
    """The near-miss and data-gap lists are staged and sorted by DuckDB, spilling past
    SORT_MEMORY, with the portrait looked up LOOKUP_ROWS results at a time: a tight memory
    limit and small batches write the same bytes, and the scratch folder is left empty."""
    from pathlib import Path

    matches, _, policies = fixture_night(tmp_path)
    monkeypatch.setattr(reminders, "NEAR_MISS_XLSX_ROWS", 40)   # so every department has a CSV of the rest

    def written(folder: Path) -> dict[str, bytes]:
        reminders.write(folder, AS_OF, matches, tmp_path / "portrait.parquet", [], policies, "单位",
                        scratch=tmp_path / "scratch")
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    roomy = written(tmp_path / "roomy")
    monkeypatch.setattr(reminders, "SORT_MEMORY", "32MB")
    monkeypatch.setattr(reminders, "LOOKUP_ROWS", 300)
    tight = written(tmp_path / "tight")
    assert tight == roomy
    assert any(name.endswith("_其余.csv") for name in roomy) and any(name.endswith("_企业明细.csv") for name in roomy)
    assert not list((tmp_path / "scratch").iterdir())
