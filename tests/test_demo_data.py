"""The demo-data generator: layout, formats, headers, defects and realism, checked from the files it writes."""
from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pytest
from python_calamine import CalamineWorkbook

from pipelines import demo_data
from pipelines.contracts import (
    CERTIFICATIONS,
    CREDIT_LISTS,
    CREDIT_RATINGS,
    DIVISION_CODE,
    FEEDS,
    INDUSTRY_CODE,
    MOBILE,
    STATUSES,
)
from pipelines.uscc import CHARSET, complete, is_valid, normalise_code

AS_OF = date(2026, 11, 26)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    summary = demo_data.generate(out / "landing", AS_OF, 500, seed=7, inbox=out / "inbox",
                                 policies=out / "no-policies")
    return out, summary


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    out = tmp_path_factory.mktemp("medium")
    summary = demo_data.generate(out / "landing", AS_OF, 2000, seed=3, fmt="csv")
    return out / "landing", summary


# ---------------------------------------------------------------- reading back

def read_rows(path: Path) -> tuple[list[str], list[list[object]]]:
    if path.suffix == ".xlsx":
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
        return [str(h) for h in rows[0]], [[None if v == "" else v for v in r] for r in rows[1:]]
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig") if raw.startswith(b"\xef\xbb\xbf") else raw.decode("gb18030")
    reader = list(csv.reader(io.StringIO(text)))
    return reader[0], [[v if v != "" else None for v in r] for r in reader[1:]]


def delivery(landing: Path, feed: str, day: str) -> list[dict[str, object]]:
    folder = landing / feed / day
    names = FEEDS[feed].headers
    rows: list[dict[str, object]] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".csv", ".xlsx")):
        header, body = read_rows(path)
        rows.extend({names[h]: v for h, v in zip(header, r)} for r in body)
    return rows


def text(v: object) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def as_date(v: object) -> date | None:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v)[:10]) if v is not None and len(str(v)) >= 10 else None
    except ValueError:
        return None


def number(v: object) -> Decimal | None:
    try:
        return None if v is None else Decimal(str(v))
    except InvalidOperation:
        return None


def problems(feed: str, row: dict[str, object], delivered: date) -> set[str]:
    """An independent reading of feeds.md's row rules, named like demo_data.DEFECTS."""
    found: set[str] = set()
    code = normalise_code(row["uscc"])
    if not is_valid(code):
        found.add("invalid_check_character")
    if feed == "registry":
        if not text(row["name"]) or row["established_on"] is None:
            found.add("missing_required")
        est = as_date(row["established_on"])
        if row["established_on"] is not None and (est is None or len(str(row["established_on"])) > 19):
            found.add("unparsable_date")
        elif est and est > delivered:
            found.add("future_established_on")
        cap = number(row["registered_capital_10k"])
        if cap is not None and cap < 0:
            found.add("negative_amount")
        if row["status"] not in STATUSES:
            found.add("status_not_in_list")
        if not re.fullmatch(INDUSTRY_CODE, normalise_code(row["industry_code"])):
            found.add("bad_industry_code")
        if not re.fullmatch(DIVISION_CODE, normalise_code(row["division_code"])):
            found.add("bad_division_code")
        if row["phone"] is not None and not re.fullmatch(MOBILE, text(row["phone"])):
            found.add("bad_phone")
        updated = row["updated_at"]
        updated = updated if isinstance(updated, datetime) else datetime.fromisoformat(str(updated))
        if updated.date() >= delivered:
            found.add("updated_after_delivery")
    elif feed == "tax":
        year = row["tax_year"]
        if year is None:
            found.add("missing_required")
        elif not 2000 <= int(year) <= delivered.year:
            found.add("tax_year_out_of_range")
        revenue, tax, rd = (number(row[c]) for c in ("revenue_10k", "tax_paid", "rd_expense_10k"))
        if (revenue is not None and revenue < 0) or (tax is not None and tax < 0):
            found.add("negative_amount")
        elif rd is not None and revenue is not None and rd > revenue:
            found.add("rd_expense_over_revenue")
        if row["credit_rating"] not in CREDIT_RATINGS:
            found.add("credit_rating_not_in_list")
    elif feed == "social_insurance":
        period = row["period"]
        if period is None:
            found.add("missing_required")
        elif not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
            found.add("unparsable_period")
        elif period > f"{delivered:%Y-%m}":
            found.add("period_after_delivery")
        if int(row["insured_count"]) < 0:
            found.add("negative_amount")
        if int(row["graduates_hired"]) > int(row["new_hires"]):
            found.add("graduates_over_new_hires")
    elif feed == "tech":
        if row["cert_no"] is None:
            found.add("missing_required")
        if row["certification"] not in CERTIFICATIONS:
            found.add("certification_not_in_list")
        issued, expires = as_date(row["issued_on"]), as_date(row["expires_on"])
        if issued is None:
            found.add("unparsable_date")
        elif expires < issued:
            found.add("expires_before_issued")
    elif feed == "credit":
        listed, removed = as_date(row["listed_on"]), as_date(row["removed_on"])
        if row["listed_on"] is None:
            found.add("missing_required")
        elif listed is None:
            found.add("unparsable_date")
        elif removed is not None and removed < listed:
            found.add("removed_before_listed")
        if row["list_type"] not in CREDIT_LISTS:
            found.add("list_type_not_in_list")
    return found


def audit(rows: list[dict[str, object]], feed: str, delivered: date) -> Counter:
    seen: set[tuple] = set()
    kinds: Counter = Counter()
    for row in rows:
        found = problems(feed, row, delivered)
        key = tuple(normalise_code(row[k]) if k == "uscc" else text(row[k]) for k in FEEDS[feed].unique)
        if key in seen:
            found.add("duplicate_key")
        seen.add(key)
        kinds.update(found)
    return kinds


# ---------------------------------------------------------------- tests

def test_vectorised_check_character_agrees_with_the_scalar_one():
    rng = np.random.default_rng(0)
    body = rng.integers(0, 31, size=(500, 17))
    codes = demo_data.uscc_text(body).to_pylist()
    assert codes == [complete("".join(CHARSET[i] for i in row)) for row in body]


def test_every_feed_has_a_fresh_and_an_earlier_complete_delivery(small):
    landing, summary = small[0] / "landing", small[1]
    for name, feed in FEEDS.items():
        info = summary["feeds"][name]
        current, previous = date.fromisoformat(info["delivery"]), date.fromisoformat(info["previous"]["delivery"])
        assert previous < current <= AS_OF
        assert (AS_OF - current).days <= feed.max_age_days
        for day in (current, previous):
            folder = landing / name / day.isoformat()
            assert (folder / "_SUCCESS").read_bytes() == b""
            assert any(p.suffix in (".csv", ".xlsx") for p in folder.iterdir())
        # same population give or take a couple of per cent: the drift check has something to compare
        assert abs(info["rows"] - info["previous"]["rows"]) <= max(3, 0.03 * info["rows"])


def test_one_incomplete_folder_is_newer_than_its_feeds_complete_delivery(small):
    landing, summary = small[0] / "landing", small[1]
    folder = Path(summary["incomplete"])
    feed = folder.parent.name
    assert not (folder / "_SUCCESS").exists() and any(folder.iterdir())
    assert date.fromisoformat(summary["feeds"][feed]["delivery"]) < date.fromisoformat(folder.name) <= AS_OF
    incomplete = [d for f in FEEDS for d in (landing / f).iterdir() if not (d / "_SUCCESS").exists()]
    assert incomplete == [folder]


def test_headers_are_exactly_the_contracts(small, medium):
    for landing in (small[0] / "landing", medium[0]):
        for name, feed in FEEDS.items():
            for folder in (landing / name).iterdir():
                if not (folder / "_SUCCESS").exists():
                    continue
                for path in folder.glob("*.*"):
                    assert read_rows(path)[0] == [c.header for c in feed.columns], path


def test_file_formats_and_encodings(small, medium):
    landing = small[0] / "landing"
    day = {f: small[1]["feeds"][f]["delivery"] for f in FEEDS}
    assert [p.suffix for p in (landing / "registry" / day["registry"]).glob("*.*")] == [".xlsx"]
    assert [p.suffix for p in (landing / "tech" / day["tech"]).glob("*.*")] == [".xlsx"]
    for feed, bom in (("tax", False), ("credit", False), ("social_insurance", True)):
        (path,) = (landing / feed / day[feed]).glob("*.csv")
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf") is bom
        if not bom:
            raw.decode("gb18030")
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")                       # really GB18030, not UTF-8 in disguise
    (path,) = (medium[0] / "registry" / medium[1]["feeds"]["registry"]["delivery"]).glob("*.csv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")


def test_every_defect_kind_is_present_and_nothing_else_is_wrong(small):
    landing, summary = small[0] / "landing", small[1]
    for name in FEEDS:
        info = summary["feeds"][name]
        found = audit(delivery(landing, name, info["delivery"]), name, date.fromisoformat(info["delivery"]))
        assert found == Counter(info["defects"]), name
        if info["rows"] >= 200:
            assert set(found) == set(demo_data.DEFECTS[name]), name


def test_defects_stay_under_each_feeds_rejection_threshold(small, medium):
    for summary in (small[1], medium[1]):
        for name, feed in FEEDS.items():
            for info in (summary["feeds"][name], summary["feeds"][name]["previous"]):
                bad = sum(info["defects"].values()) + info["defects"].get("duplicate_key", 0)
                assert bad <= float(feed.bad_row_threshold) * 0.8 * info["rows"]


def test_the_pipeline_quarantines_the_planted_bad_rows_and_nulls_the_planted_field_defects(small):
    from pipelines.ingest import ingest_feed
    from pipelines.validate import validate_feed
    from tests.ingest_helpers import settings_for

    out, summary = small
    settings = settings_for(out)
    for name in FEEDS:                                    # registry first: the others are checked against it
        planted = summary["feeds"][name]["defects"]
        fields = {k: n for k, n in planted.items() if k in demo_data.FIELD_DEFECTS[name]}
        bad = sum(planted.values()) - sum(fields.values()) + planted.get("duplicate_key", 0)
        ingest_feed(settings, name, AS_OF)
        verdict = validate_feed(settings, name, AS_OF)
        assert verdict["status"] == "accepted", verdict["reason"]
        assert (verdict["bad_rows"], verdict["field_defect_values"]) == (bad, sum(fields.values())), name


def test_uscc_valid_apart_from_the_planted_ones_and_some_need_normalising(medium):
    landing, summary = medium
    messy = 0
    for name in FEEDS:
        info = summary["feeds"][name]
        rows = delivery(landing, name, info["delivery"])
        invalid = sum(not is_valid(normalise_code(r["uscc"])) for r in rows)
        assert invalid == info["defects"].get("invalid_check_character", 0)
        messy += sum(r["uscc"] != normalise_code(r["uscc"]) for r in rows)
    assert messy > 0


def test_same_arguments_same_bytes(tmp_path):
    def run(where: Path, seed: int) -> dict[str, bytes]:
        demo_data.generate(where / "landing", AS_OF, 150, seed=seed, inbox=where / "inbox",
                           policies=where / "none")
        return {str(p.relative_to(where)): p.read_bytes() for p in sorted(where.rglob("*")) if p.is_file()}

    first, second, other = run(tmp_path / "a", 5), run(tmp_path / "b", 5), run(tmp_path / "c", 6)
    assert first == second
    assert any(p.endswith(".xlsx") for p in first)
    assert first.keys() == other.keys() and first != other


def test_every_size_class_and_the_exact_boundaries_occur(medium):
    landing, summary = medium
    registry = {normalise_code(r["uscc"]): r for r in delivery(landing, "registry", summary["feeds"]["registry"]["delivery"])}
    tax: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in delivery(landing, "tax", summary["feeds"]["tax"]["delivery"]):
        if r["tax_year"] and number(r["tax_paid"]) is not None:
            tax[normalise_code(r["uscc"])][int(r["tax_year"])] = r
    insured: dict[str, dict[str, int]] = defaultdict(dict)
    for r in delivery(landing, "social_insurance", summary["feeds"]["social_insurance"]["delivery"]):
        if r["period"]:
            insured[normalise_code(r["uscc"])][r["period"]] = int(r["insured_count"])

    def size(code: str, e: int, r: Decimal) -> str:
        rules = {"industry": ((1000, 40000), (300, 2000), (20, 300)), "wholesale": ((200, 40000), (20, 5000), (5, 1000)),
                 "retail": ((300, 20000), (50, 500), (10, 100)), "software": ((300, 10000), (100, 1000), (10, 50)),
                 "other": ((300, 0), (100, 0), (10, 0))}[demo_data.size_category(code)]
        for label, (emp, rev) in zip(("大型", "中型", "小型"), rules):
            if e >= emp and r >= rev:
                return label
        return "微型"

    classes = Counter()
    growth_20 = ten_all_year = 0
    for code, reg in registry.items():
        if code in tax and code in insured:
            newest = tax[code][max(tax[code])]
            e = insured[code][max(insured[code])]
            classes[size(normalise_code(reg["industry_code"]), e, number(newest["revenue_10k"]))] += 1
        years = tax.get(code, {})
        if len(years) == 2:
            old, new = (number(years[y]["tax_paid"]) for y in sorted(years))
            growth_20 += bool(old) and new / old - 1 == Decimal("0.2")
        months = insured.get(code, {})
        ten_all_year += len(months) >= 12 and all(v == 10 for v in months.values())
    assert set(classes) == {"大型", "中型", "小型", "微型"}
    assert classes["微型"] > classes["小型"] > classes["中型"]
    assert growth_20 and ten_all_year


def test_names_and_contacts_look_like_wolong(medium):
    landing, summary = medium
    rows = delivery(landing, "registry", summary["feeds"]["registry"]["delivery"])
    wolong = [r for r in rows if r["division_code"] == "411303"]
    assert len(wolong) > 0.8 * len(rows)
    assert sum(str(r["name"]).startswith("南阳市卧龙区") for r in rows) > 0.3 * len(rows)
    assert any(str(r["name"]).endswith("有限公司") for r in rows)
    assert any(r["enterprise_type"] == "个体工商户" for r in rows)
    assert sum(normalise_code(r["uscc"])[2:8] == "411303" for r in rows) > 0.8 * len(rows)
    assert {r["status"] for r in rows} >= {"存续", "在业", "注销", "吊销"}
    # the registry does not hold everyone: other feeds name a few enterprises it lacks
    known = {normalise_code(r["uscc"]) for r in rows}
    tax = delivery(landing, "tax", summary["feeds"]["tax"]["delivery"])
    outsiders = {normalise_code(r["uscc"]) for r in tax} - known
    assert any(is_valid(c) for c in outsiders)


def test_name_list_workbooks_look_hand_made(small):
    out, summary = small
    files = [Path(p) for p in summary["inbox"]]
    assert {p.parent.name for p in files} == set(demo_data.DEFAULT_NAME_LISTS)
    registry = {normalise_code(r["uscc"]): r["name"]
                for r in delivery(out / "landing", "registry", summary["feeds"]["registry"]["delivery"])}
    lists = [p for p in files if "名单" in p.name]
    assert len(lists) == 2 and len(files) == 3
    for path in lists:
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
        assert "名单" in rows[0][0] and rows[0][1] == ""
        header_at = next(i for i, r in enumerate(rows) if "统一社会信用代码" in r)
        assert header_at >= 1 and rows[header_at][0] == "序号"
        header = rows[header_at]
        body = [dict(zip(header, r)) for r in rows[header_at + 1:]]
        assert any(r["序号"] == "合计" for r in body)
        assert any(all(v == "" for v in r.values()) for r in body)          # a blank row
        entries = [r for r in body if isinstance(r["序号"], (int, float)) and r["序号"]]
        codes = [normalise_code(r["统一社会信用代码"]) for r in entries]
        assert sum(c in registry and registry[c] == r["企业名称"] for c, r in zip(codes, entries)) >= 0.7 * len(entries)
        assert any(not is_valid(c) for c in codes)                           # a row error to report
    first = CalamineWorkbook.from_path(str(lists[1] if "稳岗" in lists[1].name else lists[0])).get_sheet_by_index(0)
    amounts = [r[3] for r in first.to_python()]
    assert any(isinstance(a, str) and a.endswith("万") for a in amounts)
    assert any(isinstance(a, str) and re.fullmatch(r"\d{1,3}(,\d{3})+\.\d\d", a) for a in amounts)


def test_name_list_ids_come_from_the_policy_folder(tmp_path):
    (tmp_path / "a.yaml").write_text("id: WL-XX-2026-09\nname: 就业见习补贴\nkind: name_list\nperiod: '2026'\n",
                                     encoding="utf-8")
    (tmp_path / "b.yaml").write_text("id: WL-XX-2026-01\nkind: condition\n", encoding="utf-8")
    assert [p[0] for p in demo_data.name_list_policies(tmp_path)] == ["WL-XX-2026-09"]
    assert [p[0] for p in demo_data.name_list_policies(tmp_path / "missing")] == list(demo_data.DEFAULT_NAME_LISTS)


def test_no_defects_when_asked_for_none(tmp_path):
    summary = demo_data.generate(tmp_path, AS_OF, 300, seed=2, defect_share=0.0, fmt="csv")
    for name in FEEDS:
        info = summary["feeds"][name]
        assert info["defects"] == {}
        assert not audit(delivery(tmp_path, name, info["delivery"]), name, date.fromisoformat(info["delivery"]))


@pytest.mark.parametrize("as_of", [date(2026, 1, 3), date(2026, 3, 1), date(2026, 3, 4), date(2026, 7, 31),
                                   date(2026, 12, 10)])
def test_delivery_dates_are_fresh_on_any_day(as_of):
    for feed, (current, previous) in demo_data.delivery_dates(as_of).items():
        assert previous < current <= as_of
        assert (as_of - current).days <= FEEDS[feed].max_age_days


def test_command_line(tmp_path, capsys):
    assert demo_data.main(["--out", str(tmp_path), "--as-of", "2026-03-02", "--enterprises", "120",
                           "--seed", "4", "--format", "csv", "--defects", "0.05"]) == 0
    assert "企业登记信息" in capsys.readouterr().out
    assert (tmp_path / "registry" / "2026-03-02" / "_SUCCESS").exists()
    assert (tmp_path / "social_insurance" / "2026-02-10" / "_SUCCESS").exists()


def test_demo_answers_confirm_the_nights_sms_with_a_few_wrong_rows_and_approve_the_reviews(tmp_path):
    from openpyxl import load_workbook

    from pipelines import returns
    from pipelines.outputs import review
    from pipelines.outputs.workbook import Col, write_csv

    run_dir = tmp_path / "output" / "2026-11-26"
    write_csv(run_dir / "sms" / "短信待发清单.csv",
              [Col(h, h) for h in ("统一社会信用代码", "政策编号", "期次", "企业名称")],
              [{"统一社会信用代码": f"91411303MA{n:08d}", "政策编号": "P", "期次": "2026", "企业名称": f"企业{n}"}
               for n in range(40)])
    review.write(run_dir, date(2026, 11, 26), [{
        "department": "区人社局", "policy_id": "P", "policy_name": "政策", "period": "2026", "uscc": "X" * 18,
        "name": "企业", "amount": None, "evidence": "[]"}], "平台")
    written = demo_data.write_answers(tmp_path / "inbox", run_dir, seed=1)
    rows = returns.read_table(Path(written["confirmations"][0]), returns.KEY + ("确认结果",)).rows
    answers = [v for _, v in rows if str(v.get("统一社会信用代码") or "").startswith("9")]
    assert len(answers) == 40 and sum(v["确认结果"] == "放弃" for v in answers) == 3
    refused = [v for v in answers if v["确认结果"] == "确认申领" and returns.payee_refusals(v, v["收款户名"])[0]]
    assert [v["统一社会信用代码"][-2:] for v in refused] == ["01", "03"]       # no commitment, bad account
    assert answers[2]["收款户名"] != "企业2"                                   # another payee: refused by name
    again = demo_data.write_answers(tmp_path / "inbox", run_dir, seed=1)
    assert Path(again["confirmations"][0]).read_bytes() == Path(written["confirmations"][0]).read_bytes()
    ws = load_workbook(written["reviews"][0]).active
    header = [c.value for c in ws[3]]
    assert ws.cell(4, header.index("审核结果") + 1).value == "通过"
