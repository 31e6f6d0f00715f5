"""Defects and normalisable spellings: sparse per-row changes planned for a delivery."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Callable

import numpy as np

from pipelines.demo_data.dates import _month_index, _period_text
from pipelines.demo_data.feeds import Frame
from pipelines.uscc import CHARSET

CREDIT_MAX_SHARE = 0.005        # credit tolerates 1 % bad rows

Row = dict[str, "str | None"]
DUPLICATE = "duplicate_key"


def _bad_check(row: Row, rng: np.random.Generator, d: date) -> None:
    code = row["uscc"]
    right = CHARSET.index(code[17])
    row["uscc"] = code[:17] + CHARSET[(right + 1 + int(rng.integers(0, 30))) % 31]


def _set(column: str, *values: str | None) -> Callable[[Row, np.random.Generator, date], None]:
    def apply(row: Row, rng: np.random.Generator, d: date) -> None:
        row[column] = values[int(rng.integers(0, len(values)))]
    return apply


def _negate(*columns: str) -> Callable[[Row, np.random.Generator, date], None]:
    def apply(row: Row, rng: np.random.Generator, d: date) -> None:
        col = columns[int(rng.integers(0, len(columns)))]
        value = row[col]
        positive = value is not None and Decimal(value) > 0
        row[col] = "-" + value if positive else "-" + str(int(rng.integers(1, 50)))
    return apply


def _future_established(row: Row, rng: np.random.Generator, d: date) -> None:
    row["established_on"] = (d + timedelta(days=int(rng.integers(1, 400)))).isoformat()


def _updated_late(row: Row, rng: np.random.Generator, d: date) -> None:
    moment = datetime.combine(d, datetime.min.time()) + timedelta(days=int(rng.integers(1, 30)),
                                                                  seconds=int(rng.integers(0, 86400)))
    row["updated_at"] = moment.isoformat(sep=" ")


def _rd_over_revenue(row: Row, rng: np.random.Generator, d: date) -> None:
    revenue = Decimal(row["revenue_10k"])
    row["rd_expense_10k"] = str(revenue + Decimal(int(rng.integers(1, 500))))


def _tax_year_out_of_range(row: Row, rng: np.random.Generator, d: date) -> None:
    row["tax_year"] = str(d.year + 1) if rng.random() < 0.5 else "1999"


def _period_late(row: Row, rng: np.random.Generator, d: date) -> None:
    row["period"] = _period_text(_month_index(d) + int(rng.integers(1, 4)))


def _graduates_over_hires(row: Row, rng: np.random.Generator, d: date) -> None:
    row["graduates_hired"] = str(int(row["new_hires"]) + int(rng.integers(1, 4)))


def _expires_before_issued(row: Row, rng: np.random.Generator, d: date) -> None:
    issued = date.fromisoformat(row["issued_on"])
    row["expires_on"] = (issued - timedelta(days=int(rng.integers(1, 400)))).isoformat()


def _removed_before_listed(row: Row, rng: np.random.Generator, d: date) -> None:
    listed = date.fromisoformat(row["listed_on"])
    row["removed_on"] = (listed - timedelta(days=int(rng.integers(1, 300)))).isoformat()


BAD_DATES = ("2019-02-30", "2021-13-01", "2020-06-31", "二〇一九年五月", "待核实")

# The defect kinds of feeds.md, per feed. Each breaks one rule of a clean row: a
# bad row when the rule is on a key or required column, else a field defect
# (FIELD_DEFECTS: the value is nulled and the row kept).
DEFECTS: dict[str, dict[str, Callable[[Row, np.random.Generator, date], None] | None]] = {
    "registry": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("name", None),
        "unparsable_date": _set("established_on", *BAD_DATES),
        "future_established_on": _future_established,
        "negative_amount": _negate("registered_capital_10k"),
        "status_not_in_list": _set("status", "存续（在营、开业、在册）", "正常", "撤销", "开业"),
        "bad_industry_code": _set("industry_code", "3311", "C33111", "U9000", "制造业"),
        "bad_division_code": _set("division_code", "41130", "4113030", "卧龙区"),
        "bad_phone": _set("phone", "0377-63125678", "1371234567", "12345678901", "138O0001111"),
        "updated_after_delivery": _updated_late,
        DUPLICATE: None,
    },
    "tax": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("tax_year", None),
        "negative_amount": _negate("revenue_10k", "tax_paid"),
        "rd_expense_over_revenue": _rd_over_revenue,
        "credit_rating_not_in_list": _set("credit_rating", "AA", "E", "优秀", "B+"),
        "tax_year_out_of_range": _tax_year_out_of_range,
        DUPLICATE: None,
    },
    "social_insurance": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("period", None),
        "unparsable_period": _set("period", "2025-13", "2025年13月", "待核实"),
        "period_after_delivery": _period_late,
        "negative_amount": _negate("insured_count"),
        "graduates_over_new_hires": _graduates_over_hires,
        DUPLICATE: None,
    },
    "tech": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("cert_no", None),
        "certification_not_in_list": _set("certification", "瞪羚企业", "高新技术企业（复审）", "省级专精特新"),
        "unparsable_date": _set("issued_on", *BAD_DATES),
        "expires_before_issued": _expires_before_issued,
        DUPLICATE: None,
    },
    "credit": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("listed_on", None),
        "list_type_not_in_list": _set("list_type", "经营异常名录", "黑名单", "失信企业"),
        "unparsable_date": _set("listed_on", *BAD_DATES),
        "removed_before_listed": _removed_before_listed,
        DUPLICATE: None,
    },
}

# The kinds that break a value outside the key and required columns (feeds.md, Row-level outcome).
FIELD_DEFECTS: dict[str, frozenset[str]] = {
    "registry": frozenset({"negative_amount", "status_not_in_list", "bad_industry_code", "bad_division_code",
                           "bad_phone", "updated_after_delivery"}),
    "tax": frozenset({"negative_amount", "rd_expense_over_revenue", "credit_rating_not_in_list"}),
    "social_insurance": frozenset({"negative_amount", "graduates_over_new_hires"}),
    "tech": frozenset({"unparsable_date", "expires_before_issued"}),
    "credit": frozenset({"removed_before_listed"}),
}

_FULL_WIDTH = str.maketrans("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                            "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ")


def _messy(code: str, how: int) -> str:
    """A spelling the contract tells the pipeline to normalise (not a defect)."""
    if how == 0:
        return code.translate(_FULL_WIDTH)
    if how == 1:
        return code.lower()
    if how == 2:
        return " " + code + "  "
    return code[:6].translate(_FULL_WIDTH) + code[6:].lower() + " "


@dataclass
class Plan:
    """Sparse changes to a frame's rows: whole-row overrides and rows written twice."""
    rows: np.ndarray                       # sorted row numbers that are overridden
    values: dict[str, list]                # column -> new values, in `rows` order
    duplicates: np.ndarray                 # sorted row numbers written twice
    defects: dict[str, int] = field(default_factory=dict)
    normalisable: int = 0


def plan_changes(frame: Frame, share: float, rng: np.random.Generator) -> Plan:
    """Pick defect rows (each kind at least once when the feed has >= 200 rows and the threshold allows)."""
    kinds = list(DEFECTS[frame.feed.name])
    n_rows = frame.n
    if frame.feed.name == "credit":
        share = min(share, CREDIT_MAX_SHARE)
    base = int(n_rows * share + 0.5) if share > 0 else 0
    count = max(base, len(kinds)) if share > 0 and n_rows >= 200 else base
    # the every-kind minimum must not push a small feed over its rejection threshold; a duplicated key
    # may quarantine both copies, so count duplicates twice and stay under 80 % of the threshold
    limit = float(frame.feed.bad_row_threshold) * 0.8 * n_rows
    dup_at = kinds.index(DUPLICATE)

    def worst(c: int) -> int:
        return c + c // len(kinds) + (1 if c % len(kinds) > dup_at else 0)

    while count > base and worst(count) > limit:
        count -= 1
    order = [kinds[i % len(kinds)] for i in range(count)]
    free = np.flatnonzero(~frame.protected)
    count = min(len(order), len(free))
    picked = rng.choice(free, size=count, replace=False) if count else np.zeros(0, dtype=np.int64)
    assigned = dict(zip(picked.tolist(), order[:count]))
    duplicates = np.sort(np.asarray([r for r, k in assigned.items() if k == DUPLICATE], dtype=np.int64))
    broken = {r: k for r, k in assigned.items() if k != DUPLICATE}

    # ~0.5 % of the remaining rows spell a code the way departments do: full-width, lower case, spaces
    taken = np.zeros(n_rows, dtype=bool)
    taken[picked] = True
    rest = np.flatnonzero(~taken)
    n_messy = min(len(rest), int(n_rows * 0.005 + 0.5))
    messy = rng.choice(rest, size=n_messy, replace=False) if n_messy else np.zeros(0, dtype=np.int64)

    rows = np.sort(np.concatenate([np.asarray(list(broken), dtype=np.int64), messy]))
    columns = list(frame.render(np.zeros(0, dtype=np.int64)))
    values: dict[str, list] = {c: [] for c in columns}
    if len(rows):
        rendered = frame.render(rows)
        table = {c: rendered[c].to_pylist() for c in columns}
        messy_set = set(messy.tolist())
        key_columns = frame.feed.unique
        changed_keys: set[tuple] = set()
        defects: dict[str, int] = {DUPLICATE: len(duplicates)} if len(duplicates) else {}
        for pos, r in enumerate(rows.tolist()):
            row = {c: table[c][pos] for c in columns}
            if r in messy_set:
                col = frame.code_columns[int(rng.integers(0, len(frame.code_columns)))]
                if row[col]:
                    row[col] = _messy(row[col], int(rng.integers(0, 4)))
            else:
                kind = broken[r]
                original = dict(row)
                DEFECTS[frame.feed.name][kind](row, rng, frame.delivery)
                key = tuple(row[c] for c in key_columns)
                if key != tuple(original[c] for c in key_columns) and key in changed_keys:
                    # two planted rows of one enterprise met on the same key: that would be an
                    # unplanned duplicate, so this row gets a wrong check character instead
                    row = original
                    kind = "invalid_check_character"
                    _bad_check(row, rng, frame.delivery)
                    key = tuple(row[c] for c in key_columns)
                changed_keys.add(key)
                defects[kind] = defects.get(kind, 0) + 1
            for c in columns:
                values[c].append(row[c])
    else:
        defects = {DUPLICATE: len(duplicates)} if len(duplicates) else {}
    return Plan(rows, values, duplicates, defects, n_messy)
