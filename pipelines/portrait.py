"""The enterprise portrait (企业画像库): validated feeds -> one row per enterprise.

The contract is the portrait section of ../shared/spec/policies.md. The pure
core `compute` aggregates the feeds with DuckDB straight from the arrow tables
and does the divisions (ratios, the 12-month average) in exact integer
arithmetic, so no binary float ever touches a value; `build` is the I/O edge
that reads the validation stage's verdicts and writes the Parquet file.

Decisions where the spec is silent (also in the lead's report for the README):
- Universe: every uscc in any feed; `registered` says whether the registry has it.
- age_years: birthday logic; an enterprise established on 29 February has its
  anniversary on 1 March in common years (the anniversary has not come on 28 Feb).
- insured_avg_12m / new_hires_12m / graduates_12m: a month present with a null
  value does not count for that field (SQL AVG/SUM semantics): the average
  divides by the months whose insured_count is known; a field is null when no
  month of the window has a known value for it.
- Certificates with a null issued_on or expires_on are not valid (the
  condition issued_on <= as_of <= expires_on cannot be shown to hold).
- A credit row counts whatever its list_type (null included).
- size_class is null when industry_code is missing as well: the thresholds
  depend on the industry, and an unknown industry is not "any other industry".
- Ratios and the average are rounded half to even at the 18th decimal place
  (decimal128(38,18)); everything before the one rounding is exact.
- Duplicate keys that would change a field (registry uscc, tax (uscc, year) in
  the newest or previous year, insurance (uscc, period) inside the window) make
  `compute` raise instead of picking a row; validation rules them out anyway.
- `build` reads a feed only when its verdict is `accepted` and names a
  `validated_path` (relative paths are under settings.work); anything else is
  an absent feed, and the gate is what stops a run on a bad feed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import contracts
from pipelines.config import Settings
from pipelines.files import atomic_write_parquet, read_json

log = logging.getLogger(__name__)

RATIO_SCALE = 18
_RATIO_UNIT = 10**RATIO_SCALE
_UNSCALED = pa.decimal128(38, 0)   # same layout as contracts.RATIO: built as integers, then viewed


# --- size_class: 中小企业划型标准规定 (工信部联企业〔2011〕300号) as policies.md tabulates it

@dataclass(frozen=True)
class SizeRule:
    industry: str                          # the standard's industry name
    prefixes: tuple[str, ...]              # industry_code prefixes; () = any other industry
    large: tuple[int, int | None]          # (employees, revenue 万元 or None when not used)
    medium: tuple[int, int | None]
    small: tuple[int, int | None]


SIZE_RULES: tuple[SizeRule, ...] = (
    SizeRule("工业", ("B", "C", "D"), large=(1000, 40000), medium=(300, 2000), small=(20, 300)),
    SizeRule("批发业", ("F51",), large=(200, 40000), medium=(20, 5000), small=(5, 1000)),
    SizeRule("零售业", ("F52",), large=(300, 20000), medium=(50, 500), small=(10, 100)),
    SizeRule("软件和信息技术服务业", ("I65",), large=(300, 10000), medium=(100, 1000), small=(10, 50)),
    SizeRule("其他未列明行业", (), large=(300, None), medium=(100, None), small=(10, None)),
)
LARGE, MEDIUM, SMALL, MICRO = contracts.SIZE_CLASSES


def _threshold_sql(threshold: tuple[int, int | None]) -> str:
    employees, revenue = threshold
    test = f"insured_count >= {employees}"
    return test if revenue is None else f"{test} AND revenue_10k >= {revenue}"


def _size_class_sql() -> str:
    """The standard as one SQL CASE; generated from SIZE_RULES so the table lives in one place."""
    branches = []
    for rule in SIZE_RULES:
        ladder = " ".join(
            f"WHEN {_threshold_sql(t)} THEN '{label}'"
            for t, label in ((rule.large, LARGE), (rule.medium, MEDIUM), (rule.small, SMALL))
        )
        inner = f"CASE {ladder} ELSE '{MICRO}' END"
        if rule.prefixes:
            test = " OR ".join(f"starts_with(industry_code, '{p}')" for p in rule.prefixes)
            branches.append(f"WHEN {test} THEN {inner}")
        else:
            branches.append(f"ELSE {inner}")
    return (
        # policies.md: null when employees or revenue is missing. An enterprise
        # with no industry code falls under "any other industry".
        "CASE WHEN insured_count IS NULL OR revenue_10k IS NULL THEN NULL "
        f"ELSE CASE {' '.join(branches)} END END"
    )


# --- inputs

def conform(feed: str, table: pa.Table | None) -> pa.Table:
    """A feed's table with exactly its contract columns and types; absent -> empty.

    Extra columns (helper columns of earlier stages) are dropped. A missing
    column is tolerated only in an empty table: a non-empty table without a
    contract column is a broken upstream stage, not absent data.
    """
    schema = contracts.FEEDS[feed].arrow_schema()
    if table is None or table.num_columns == 0:
        return schema.empty_table()
    columns = []
    for fld in schema:
        if fld.name in table.column_names:
            columns.append(table.column(fld.name).cast(fld.type))
        elif table.num_rows == 0:
            columns.append(pa.nulls(0, fld.type))
        else:
            raise ValueError(f"feed {feed}: column {fld.name!r} missing from a non-empty table")
    return pa.Table.from_arrays(columns, schema=schema)


# --- exact division

def _ratio_array(unscaled: list[int | None]) -> pa.Array:
    # Built from integers and viewed as decimal(38,18): exact, and much faster
    # than constructing a Decimal per row.
    return pa.array(unscaled, type=_UNSCALED).view(contracts.RATIO)


def _integers(values: pa.ChunkedArray) -> tuple[list[int | None], int]:
    """(unscaled integers, scale) of an integer or decimal column, without Decimal objects."""
    array = values.combine_chunks()
    if not pa.types.is_decimal(array.type):
        return array.to_pylist(), 0
    unscaled = array.view(pa.decimal128(array.type.precision, 0))
    try:
        return unscaled.cast(pa.int64()).to_pylist(), array.type.scale
    except pa.ArrowInvalid:   # a value beyond int64: rare, take the slow exact path
        return [None if d is None else int(d) for d in unscaled.to_pylist()], array.type.scale


def _ratios(num: pa.ChunkedArray, den: pa.ChunkedArray, minus_one: bool = False) -> pa.Array:
    """num/den (- 1) per row, exact to 18 places; null where either is null or den is 0."""
    nums, num_scale = _integers(num)
    dens, den_scale = _integers(den)
    # num/10^a ÷ den/10^b = num·10^b ÷ den·10^a
    num_factor, den_factor = 10**den_scale, 10**num_scale
    unit = _RATIO_UNIT
    out: list[int | None] = []
    append = out.append
    # Exact: floor division, then round half to even on the remainder.
    for n, d in zip(nums, dens):
        if n is None or not d:
            append(None)
            continue
        bottom = d * den_factor
        top = n * num_factor - bottom if minus_one else n * num_factor
        if bottom < 0:
            top, bottom = -top, -bottom
        q, r = divmod(top * unit, bottom)
        r2 = 2 * r
        if r2 > bottom or (r2 == bottom and q & 1):
            q += 1
        append(q)
    return _ratio_array(out)


# --- the core

# Every feed is scanned once where it can be: the social insurance feed (12M
# rows in production) is one GROUP BY. arg_max_null, not arg_max: the newest
# period's value must stay null when it is null (arg_max would fill it in from
# an older period). Periods are validated 'YYYY-MM', so text order is time order.
_SQL = """
WITH tax_newest AS (
    SELECT uscc, max(tax_year) AS tax_year FROM tax GROUP BY uscc
),
tax_now AS (
    SELECT t.uscc, t.tax_year, t.revenue_10k, t.tax_paid, t.rd_expense_10k, t.credit_rating,
           t.general_taxpayer
    FROM tax t JOIN tax_newest n ON t.uscc = n.uscc AND t.tax_year = n.tax_year
),
tax_prev AS (
    SELECT t.uscc, t.tax_paid AS prev_tax_paid
    FROM tax t JOIN tax_newest n ON t.uscc = n.uscc AND t.tax_year = n.tax_year - 1
),
si AS (
    SELECT uscc,
           arg_max_null(insured_count, period) AS insured_count,
           arg_max_null(arrears, period) AS arrears,
           CAST(sum(insured_count) FILTER (WHERE period >= $window_start) AS BIGINT) AS insured_sum,
           count(insured_count) FILTER (WHERE period >= $window_start) AS insured_months,
           CAST(sum(new_hires) FILTER (WHERE period >= $window_start) AS BIGINT) AS new_hires_12m,
           CAST(sum(graduates_hired) FILTER (WHERE period >= $window_start) AS BIGINT) AS graduates_12m,
           -- rows in the window minus distinct months in it (a 12-bit mask): > 0 on a duplicate period
           count(*) FILTER (WHERE period >= $window_start)
             - bit_count(bit_or(CAST(1 AS INTEGER) << greatest(
                   CAST(substr(period, 1, 4) AS INTEGER) * 12 + CAST(substr(period, 6, 2) AS INTEGER)
                   - $window_no, 0)) FILTER (WHERE period >= $window_start)) AS duplicate_periods
    FROM social_insurance
    GROUP BY uscc
),
certs AS (
    SELECT uscc, {cert_flags}
    FROM tech
    WHERE issued_on <= $as_of AND expires_on >= $as_of
    GROUP BY uscc
),
listed AS (
    SELECT DISTINCT uscc FROM credit
    WHERE listed_on <= $as_of AND (removed_on IS NULL OR removed_on > $as_of)
),
universe AS (
    SELECT uscc FROM registry UNION SELECT uscc FROM tax_newest UNION SELECT uscc FROM si
    UNION SELECT uscc FROM tech UNION SELECT uscc FROM credit
),
joined AS (
    SELECT u.uscc, r.name, r.legal_rep, r.address, r.phone, r.division_code, r.industry_code,
           r.enterprise_type, r.status, r.uscc IS NOT NULL AS registered, r.abnormal, r.established_on,
           r.registered_capital_10k,
           tn.tax_year, tn.revenue_10k, tn.tax_paid, tn.rd_expense_10k, tn.credit_rating,
           tn.general_taxpayer, tp.prev_tax_paid,
           si.insured_count, si.insured_sum, si.insured_months, si.new_hires_12m, si.graduates_12m,
           si.arrears, si.duplicate_periods,
           {cert_coalesce},
           l.uscc IS NOT NULL AS dishonest
    FROM universe u
    LEFT JOIN registry r ON r.uscc = u.uscc
    LEFT JOIN tax_now tn ON tn.uscc = u.uscc
    LEFT JOIN tax_prev tp ON tp.uscc = u.uscc
    LEFT JOIN si ON si.uscc = u.uscc
    LEFT JOIN certs c ON c.uscc = u.uscc
    LEFT JOIN listed l ON l.uscc = u.uscc
)
SELECT *,
       CASE WHEN industry_code IS NULL OR industry_code = '' THEN NULL
            ELSE left(industry_code, 1) END AS industry_section,
       coalesce(status IN ('存续', '在业'), false) AS active,
       year($as_of) - year(established_on)
           - CASE WHEN month(established_on) * 100 + day(established_on) > $as_of_md THEN 1 ELSE 0 END
           AS age_years,
       {size_class} AS size_class
FROM joined
ORDER BY uscc
"""


def _sql() -> str:
    flags = contracts.CERT_FIELDS.items()
    return (
        _SQL.replace("{size_class}", _size_class_sql())
        .replace("{cert_flags}", ", ".join(f"bool_or(certification = '{c}') AS {f}" for c, f in flags))
        .replace("{cert_coalesce}", ", ".join(f"coalesce(c.{f}, false) AS {f}" for _, f in flags))
    )


def _month_no(period: str) -> int:
    return int(period[:4]) * 12 + int(period[5:7])


def window(social_insurance: pa.Table) -> tuple[str | None, int | None]:
    """(first period, its month number) of the 12 months ending at the whole feed's newest period."""
    newest = pc.max(social_insurance["period"]).as_py() if social_insurance.num_rows else None
    if newest is None:
        return None, None
    first = _month_no(newest) - 11
    year, month = divmod(first - 1, 12)
    return f"{year:04d}-{month + 1:02d}", first


def _refuse_duplicates(con: duckdb.DuckDBPyConnection, feeds: tuple[str, ...]) -> None:
    """Name the feed that broke its uniqueness contract (validation guarantees it)."""
    for feed in feeds:
        keys = ", ".join(contracts.FEEDS[feed].unique)
        dup = con.sql(f"SELECT {keys} FROM {feed} GROUP BY ALL HAVING count(*) > 1 LIMIT 1").fetchall()
        if dup:
            raise ValueError(f"feed {feed}: duplicate key ({keys}) = {dup[0]}")


def compute(tables: dict[str, pa.Table], as_of: date) -> pa.Table:
    """The portrait as of `as_of` from the validated good rows of each feed.

    `tables` maps feed name -> arrow table with the contract's canonical columns;
    a feed may be missing or empty. Returns exactly contracts.PORTRAIT_SCHEMA,
    one row per uscc found in any feed, ordered by uscc.

    Duplicate keys (which validation rules out) are refused, not resolved by
    guessing: a duplicated registry or tax row would duplicate a portrait row,
    a duplicated insurance period would inflate the 12-month sums.
    """
    unknown = set(tables) - set(contracts.FEEDS)
    if unknown:
        raise ValueError(f"unknown feeds: {sorted(unknown)}")
    feeds = {feed: conform(feed, tables.get(feed)) for feed in contracts.FEED_ORDER}
    window_start, window_no = window(feeds["social_insurance"])
    params = {"as_of": as_of, "as_of_md": as_of.month * 100 + as_of.day,
              "window_start": window_start, "window_no": window_no}
    con = duckdb.connect()
    try:
        for feed, table in feeds.items():
            con.register(feed, table)
        raw = con.sql(_sql(), params=params).to_arrow_table()
        if pc.count_distinct(raw["uscc"]).as_py() != raw.num_rows:
            _refuse_duplicates(con, ("registry", "tax"))
        if raw.num_rows and pc.max(raw["duplicate_periods"]).as_py():
            _refuse_duplicates(con, ("social_insurance",))
    finally:
        con.close()

    derived = {
        "tax_growth": _ratios(raw["tax_paid"], raw["prev_tax_paid"], minus_one=True),
        "rd_ratio": _ratios(raw["rd_expense_10k"], raw["revenue_10k"]),
        "insured_avg_12m": _ratios(raw["insured_sum"], raw["insured_months"]),
    }
    columns = [
        derived[f.name] if f.name in derived else raw[f.name].cast(f.type)
        for f in contracts.PORTRAIT_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=contracts.PORTRAIT_SCHEMA)


# --- the I/O edge

def read_feeds(settings: Settings, as_of: date) -> dict[str, pa.Table]:
    """The validated table of every feed whose verdict for `as_of` is accepted.

    A missing verdict, a verdict without `validated_path`, or one that is not
    accepted counts as an absent feed (the gate, not the portrait, stops a
    run on a bad feed). A path that is named but missing is an error.
    """
    tables = {feed: read_feed(settings, as_of, feed) for feed in contracts.FEED_ORDER}
    return {feed: table for feed, table in tables.items() if table is not None}


def read_feed(settings: Settings, as_of: date, feed: str, columns: list[str] | None = None) -> pa.Table | None:
    """One feed's validated table for `as_of` (what the portrait was built from), or None."""
    verdict = read_json(settings.verdict_path(feed, as_of))
    if verdict is None:
        log.warning("portrait %s: no verdict for %s, feed treated as absent", as_of, feed)
        return None
    status = verdict.get("status", "accepted")
    path = verdict.get("validated_path")
    if status != "accepted" or not path:
        log.warning("portrait %s: %s is %s without usable rows, feed treated as absent",
                    as_of, feed, status)
        return None
    path = Path(path)
    if not path.is_absolute():
        path = settings.work / path
    return pq.read_table(path, columns=columns)


ROW_GROUP_ROWS = 50_000


def build(settings: Settings, as_of: date) -> Path:
    """Compute the portrait for `as_of` and write work/portrait/<as_of>.parquet atomically."""
    table = compute(read_feeds(settings, as_of), as_of)
    target = settings.portrait_path(as_of)
    # Sorted by code (the SQL's ORDER BY) in row groups: a match shard reads only its code range.
    atomic_write_parquet(target, table, row_group_size=ROW_GROUP_ROWS)
    log.info("portrait %s: %d enterprises -> %s", as_of, table.num_rows, target)
    return target

