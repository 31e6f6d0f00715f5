"""Validate a staged delivery with Great Expectations; the quality gate.

The rules live in the suites `expectations/<feed>.json` (GX suite JSON, each
expectation carrying `meta.reason_zh`, a template formatted with the failing
row's values and the run-time parameters). Rules that depend on dates (not in
the future, plausible for the delivery date) read suite parameters supplied
here at run time: `as_of`, `delivery_date`, `delivery_day_end`,
`delivery_year`, `delivery_month`, `delivery_month_start`.

GX Core runs directly (no Airflow provider) on one pandas frame built once
from the typed staged table (only the columns the suite reads, in dtypes GX
compares vectorised where that changes no outcome: see `gx_frame`), with
result_format COMPLETE: GX lists each failing row by the frame's index, which
is the staged row position, so every failure maps back to its row. A row
failing any rule goes to quarantine with all its reasons. Timeliness, row-count drift, the
bad-row threshold and referential integrity against the registry are decided
here, outside the suites, because they compare deliveries rather than rows.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import string
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.files import atomic_write_text, read_json
from pipelines.outputs.workbook import neutralise
from pipelines.contracts import FEED_ORDER, FEEDS, Feed
from pipelines.ingest import HELPER_COLUMNS, staged_schema, write_json, write_parquet
from pipelines.received import cell_text, hidden_sheets_notice

ACCEPTED = "accepted"


class GateClosed(Exception):
    """A feed is not fit for matching; the message (Chinese) names each one and why."""

    def __init__(self, message: str, verdict: dict | None = None):
        super().__init__(message)
        self.message = message
        self.verdict = verdict or {}


# --------------------------------------------------------------------------
# paths




# --------------------------------------------------------------------------
# suites and GX


def load_suite(settings: Settings, feed: str) -> dict:
    return json.loads(settings.suite_path(feed).read_text(encoding="utf-8"))


def suite_parameters(as_of: dt.date, delivery: dt.date) -> dict:
    return {
        "as_of": as_of.isoformat(),
        "delivery_date": delivery.isoformat(),
        "delivery_day_end": f"{delivery.isoformat()}T23:59:59",
        "delivery_year": delivery.year,
        "delivery_month": f"{delivery:%Y-%m}",
        "delivery_month_start": delivery.replace(day=1).isoformat(),
    }


def _gx():
    """Import GX once per process (≈7 s) and register the custom expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    import great_expectations.util as gx_util

    import pipelines.gx_uscc  # noqa: F401  registers expect_column_values_to_be_valid_uscc

    # GX turns each Decimal in a stored result (the unexpected values shown in
    # Data Docs) into a float through a helper that walks inspect.stack() per
    # value: ~5 ms each, 20 s for a tax delivery with a few thousand bad rows.
    # Those floats only feed the Data Docs display; our verdicts and the
    # quarantine use the exact values. Same conversion, without the stack walk.
    gx_util.convert_decimal_to_float = _decimal_for_display
    return gx


def _decimal_for_display(d) -> float:
    return float(d)


def gx_context(quality_dir: Path):
    """An ephemeral context whose results store and Data Docs site live in the run's quality folder.

    The context itself costs milliseconds (the import is the expensive part and
    happens once per process); a fresh one per call means no suite or
    checkpoint state leaks between feeds or runs, while the file-backed
    results store lets the Data Docs index list every feed validated for this
    run, even when each feed is validated in its own Airflow task process.
    """
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "quality": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(quality_dir / "data_docs")},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    config.stores["validation_results_store"] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(quality_dir / "gx_results")},
    }
    return gx.get_context(project_config=config, mode="ephemeral")


def suite_columns(suite: dict, table: pa.Table) -> list[str]:
    """The staged columns the suite's rules read (all of them if a rule is table-wide), in table order."""
    named: set[str] = set()
    for e in suite["expectations"]:
        kwargs = e["kwargs"]
        columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs] + list(kwargs.get("column_list", []))
        if not columns:
            named = set(table.column_names)
            break
        named.update(columns)
    return [n for n in table.column_names if n in named and n not in HELPER_COLUMNS]


def _vectorisable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """`column` in a type GX compares vectorised, when that cannot change any rule's outcome."""
    if pa.types.is_timestamp(column.type) and column.type.tz is None and column.type.unit != "ns":
        # GX compares datetime64[ns] vectorised, other units one Timestamp at a time;
        # a value outside the nanosecond range (years 1678-2261) keeps the column as it is.
        try:
            return pc.cast(column, pa.timestamp("ns"), safe=True)
        except pa.ArrowInvalid:
            return column
    return _as_float(column) or column


def _as_float(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """The numbers as float64 when that cannot change any rule's outcome, else None.

    GX compares numpy int64/float64 columns vectorised and every other dtype
    (nullable Int64, Decimal objects) one Python value at a time. float64 keeps
    each rule's answer when the conversion is exact for integers (|n| <= 2**53)
    and, for decimals, correctly rounded (via the decimal text) with fewer than
    2**52 units of the last place, so distinct values stay distinct and in
    order and the sign never changes; larger values keep their exact dtype.
    """
    if pa.types.is_integer(column.type):
        try:
            return pc.cast(column, pa.float64(), safe=True)
        except pa.ArrowInvalid:
            return None
    if pa.types.is_decimal(column.type):
        largest = pc.max(pc.abs(column)).as_py()
        if largest is not None and largest >= Decimal(2**52).scaleb(-column.type.scale):
            return None
        return pc.cast(pc.cast(column, pa.string()), pa.float64())
    return None


def gx_frame(table: pa.Table, columns: list[str] | None = None):
    """The one pandas frame GX sees: the columns the suite reads, typed, periods as the first day of their month.

    Its default RangeIndex is the staged row position: GX reports failing rows by it.
    Integer, decimal and timestamp columns become float64 / datetime64[ns] where
    that decides every rule the same way (`_vectorisable`), so GX compares them
    vectorised rather than one Python object at a time. Dates become midnight
    datetime64[ns] too, all of them or (a date outside years 1678-2261) none, so
    that two date columns always compare; returns (frame, dates_as_datetimes) and
    the caller gives GX its date parameters as midnight datetimes accordingly.
    """
    import pandas as pd

    cols = {}
    for name in columns if columns is not None else table.column_names:
        if name in HELPER_COLUMNS:
            continue
        column = table[name]
        if name == "period":
            column = pc.strptime(pc.binary_join_element_wise(column, "-01", ""), format="%Y-%m-%d", unit="s").cast(pa.date32())
        cols[name] = _vectorisable(column)
    dates = [n for n, c in cols.items() if pa.types.is_date(c.type)]
    try:
        cols.update({n: pc.cast(cols[n], pa.timestamp("ns"), safe=True) for n in dates})
        dates_as_datetimes = True
    except pa.ArrowInvalid:
        dates_as_datetimes = not dates
    if not cols:
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows)), dates_as_datetimes
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return pa.table(cols).to_pandas(types_mapper=mapping.get), dates_as_datetimes


def gx_parameters(params: dict, dates_as_datetimes: bool) -> dict:
    """The suite parameters as GX gets them: an ISO date as its midnight when the frame's dates are datetimes.

    (GX reads "2026-11-26" as a date and "2026-11-26T00:00:00" as a datetime; each compares only with its own kind.)
    """
    if not dates_as_datetimes:
        return params
    return {k: f"{v}T00:00:00" if isinstance(v, str) and _is_iso_date(v) else v for k, v in params.items()}


def _is_iso_date(text: str) -> bool:
    try:
        return len(text) == 10 and dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def run_suite(settings: Settings, feed: str, suite: dict, table: pa.Table, params: dict, as_of: dt.date) -> list[dict]:
    """Validate `table` against `suite`; per expectation: config, success and the failing staged row positions.

    Also stores the result and rebuilds this run's Data Docs.
    """
    gx = _gx()
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    qdir = settings.quality_dir(as_of)
    # A rerun replaces this feed's earlier result for the same run date.
    shutil.rmtree(qdir / "gx_results" / feed, ignore_errors=True)
    shutil.rmtree(qdir / "data_docs" / "validations" / feed, ignore_errors=True)
    ctx = gx_context(qdir)
    expectations = [
        ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta=e.get("meta", {})).to_domain_obj()
        for e in suite["expectations"]
    ]
    gx_suite = ctx.suites.add(gx.ExpectationSuite(name=feed, expectations=expectations, meta=suite.get("meta", {})))
    batch_def = ctx.data_sources.add_pandas("staged").add_dataframe_asset(feed).add_batch_definition_whole_dataframe("delivery")
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=feed, data=batch_def, suite=gx_suite))
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=feed,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            # every failing row's index (the staged row position); no pandas query text
            result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
        )
    )
    frame, dates_as_datetimes = gx_frame(table, suite_columns(suite, table))
    run = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=gx_parameters(params, dates_as_datetimes))
    del frame
    (result,) = run.run_results.values()
    out = []
    for er in result.results:
        info = er.exception_info or {}
        if info.get("raised_exception"):
            # A rule that could not be evaluated must not pass silently.
            raise RuntimeError(f"GX expectation {er.expectation_config.type} failed: {info.get('exception_message')}")
        indices = er.result.get("unexpected_index_list") or []
        out.append(
            {
                "type": er.expectation_config.type,
                "kwargs": dict(er.expectation_config.kwargs),
                "meta": dict(er.expectation_config.meta or {}),
                "success": bool(er.success),
                "unexpected": [int(i) for i in indices],
            }
        )
    return out


class _Blank(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def display(value) -> str:
    return "空" if value is None else cell_text(value)


def _template_columns(template: str, table: pa.Table) -> list[str]:
    """The table columns a reason template names (format_map looks up nothing else)."""
    fields = {re.split(r"[.\[]", f, maxsplit=1)[0] for _, f, _, _ in string.Formatter().parse(template) if f}
    return [c for c in table.column_names if c in fields]


def row_failures(results: list[dict], table: pa.Table, params: dict) -> dict[int, list[str]]:
    """Staged row position -> Chinese reasons (`第12行 …`), from the suite's reason templates."""
    failures: dict[int, list[str]] = {}
    base = {k: str(v) for k, v in params.items()}
    for res in results:
        template = res["meta"].get("reason_zh") or res["type"]
        if not res["unexpected"]:
            continue
        positions = pa.array(res["unexpected"], pa.int64())
        named = _template_columns(template, table)
        # (a table with no columns lists no rows: a template naming none formats from the parameters alone)
        subset = table.select(named).take(positions).to_pylist() if named else [{}] * len(positions)
        rows = table["_row"].take(positions).to_pylist()
        for idx, row, record in zip(res["unexpected"], rows, subset):
            values = _Blank(base)
            values.update({k: display(v) for k, v in record.items()})
            failures.setdefault(idx, []).append(f"第{row}行 {template.format_map(values)}")
    return failures


# --------------------------------------------------------------------------
# verdict


def _label(spec: Feed) -> str:
    return f"{spec.department}「{spec.title}」"


def _share(bad: int, total: int) -> Decimal:
    return (Decimal(bad) / Decimal(total)).quantize(Decimal("0.000001")) if total else Decimal(0)


def _percent(value: Decimal) -> str:
    text = format((value * 100).quantize(Decimal("0.01")), "f")
    return text.rstrip("0").rstrip(".")


def previous_accepted(settings: Settings, feed: str, delivery: dt.date) -> dict | None:
    """The newest accepted delivery of `feed` dated before `delivery` (its sidecar record)."""
    folder = settings.validated_dir(feed)
    best = None
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            day = dt.date.fromisoformat(path.stem)
        except ValueError:
            continue
        if day < delivery and (best is None or day > best[0]):
            best = (day, path)
    return read_json(best[1]) if best else None


def registry_codes(settings: Settings, as_of: dt.date) -> tuple[pa.Array | None, str | None]:
    """USCCs of the registry delivery accepted for this run, else the newest accepted one."""
    verdict = settings.verdict_path("registry", as_of)
    path = None
    data = read_json(verdict)
    if data:
        if data.get("status") == ACCEPTED and data.get("validated_path"):
            path = Path(data["validated_path"])
    if path is None:
        folder = settings.validated_dir("registry")
        dated = sorted(p for p in folder.glob("*.parquet") if p.stem <= as_of.isoformat()) if folder.is_dir() else []
        path = dated[-1] if dated else None
    if path is None or not path.exists():
        return None, None
    return pq.read_table(path, columns=["uscc"])["uscc"].combine_chunks(), path.stem


def write_quarantine_csv(spec: Feed, records: list[dict], path: Path) -> None:
    """UTF-8 with BOM so Excel opens it; 行号, 文件, 原因, then the department's own headers."""
    fh = io.StringIO(newline="")
    writer = csv.writer(fh)
    writer.writerow(["行号", "文件", "原因"] + [c.header for c in spec.columns])
    for rec in sorted(records, key=lambda r: (r["_file"] or "", r["_row"] or 0)):
        # the department's own cells: text a spreadsheet would run as a formula is neutralised
        writer.writerow([rec["_row"], neutralise(rec["_file"]), neutralise(rec["reason"])]
                        + [neutralise(rec.get(c.name) or "") for c in spec.columns])
    atomic_write_text(path, fh.getvalue(), encoding="utf-8-sig")


def validate_feed(settings: Settings, feed: str, as_of: dt.date, accept_drift: bool = False) -> dict:
    """Validate the delivery ingested for `as_of`; write the verdict, quarantine list, validated rows and Data Docs.

    status: accepted | rejected | stale | missing | drift. Validate `registry`
    first: the other feeds check their codes against its accepted delivery.
    """
    spec = FEEDS[feed]
    label = _label(spec)
    qdir = settings.quality_dir(as_of)
    verdict: dict = {
        "feed": feed,
        "title": spec.title,
        "department": spec.department,
        "as_of": as_of.isoformat(),
        "delivery_date": None,
        "status": None,
        "reason": None,
        "rows": 0,
        "good_rows": 0,
        "bad_rows": 0,
        "ingest_bad_rows": 0,
        "rule_bad_rows": 0,
        "bad_share": "0",
        "bad_row_threshold": str(spec.bad_row_threshold),
        "max_age_days": spec.max_age_days,
        "age_days": None,
        "failed_rules": [],
        "warnings": [],
        "not_in_registry": None,
        "previous_accepted": None,
        "drift": None,
        "drift_accepted": False,
        "validated_path": None,
        "quarantine_csv": None,
        "data_docs": None,
    }
    ingested = read_json(settings.ingest_summary_path(feed, as_of))
    if ingested is None:
        verdict.update(status="missing", reason=f"{label}本次运行（{as_of.isoformat()}）尚未导入，没有可校验的交付。")
        return _finish(settings, as_of, verdict)
    verdict["delivery_date"] = ingested.get("delivery_date")
    if ingested["status"] != "ingested":
        verdict.update(status=ingested["status"], reason=ingested["reason"], rows=ingested.get("rows", 0))
        return _finish(settings, as_of, verdict)

    delivery = dt.date.fromisoformat(ingested["delivery_date"])
    # Parquet stores timestamp[s] as ms: cast back to the contract's types.
    staged = pq.read_table(ingested["staged_path"]).cast(staged_schema(spec))
    ingest_bad = pq.read_table(ingested["quarantine_path"])
    params = suite_parameters(as_of, delivery)

    results = run_suite(settings, feed, load_suite(settings, feed), staged, params, as_of)
    failures = row_failures(results, staged, params)
    verdict["failed_rules"] = [
        {
            "expectation": r["type"],
            "columns": [r["kwargs"][k] for k in ("column", "column_A", "column_B") if k in r["kwargs"]]
            + list(r["kwargs"].get("column_list", [])),
            "rule_zh": r["meta"].get("reason_zh", ""),
            "rows": len(r["unexpected"]),
        }
        for r in results
        if r["unexpected"]
    ]
    keep = np.ones(staged.num_rows, dtype=bool)
    keep[list(failures)] = False
    good = staged.filter(pa.array(keep)) if failures else staged
    rule_bad = staged.take(pa.array(sorted(failures), pa.int64())).to_pylist() if failures else []

    quarantine = ingest_bad.to_pylist()
    for idx, rec in zip(sorted(failures), rule_bad):
        text = {k: (None if v is None else cell_text(v)) for k, v in rec.items() if k not in HELPER_COLUMNS}
        quarantine.append({**text, "_row": rec["_row"], "_file": rec["_file"], "reason": "；".join(failures[idx])})
    quarantine_csv = qdir / f"{feed}_quarantine.csv"
    write_quarantine_csv(spec, quarantine, quarantine_csv)

    total = int(ingested["rows"])
    bad = ingest_bad.num_rows + len(failures)
    share = _share(bad, total)
    age = (as_of - delivery).days
    verdict.update(
        rows=total,
        good_rows=good.num_rows,
        bad_rows=bad,
        ingest_bad_rows=ingest_bad.num_rows,
        rule_bad_rows=len(failures),
        bad_share=str(share),
        age_days=age,
        quarantine_csv=str(quarantine_csv),
        data_docs=str(settings.data_docs_dir(as_of) / "index.html"),
    )

    warnings: list[str] = []
    if ingested.get("extra_columns"):
        warnings.append("交付中有合同以外的列（已忽略）：" + "、".join(ingested["extra_columns"]))
    if ingested.get("missing_optional_columns"):
        warnings.append("交付缺少非必需列（按空值处理）：" + "、".join(ingested["missing_optional_columns"]))
    for file, sheets in ingested.get("hidden_sheets", {}).items():
        warnings.append(f"文件「{file}」中{hidden_sheets_notice(sheets)}")
    if ingested.get("incomplete_deliveries"):
        warnings.append("有未完成的交付（缺少 _SUCCESS，未使用）：" + "、".join(ingested["incomplete_deliveries"]))
    if spec.references_registry:
        codes, registry_delivery = registry_codes(settings, as_of)
        if codes is None:
            warnings.append("没有已通过校验的企业登记信息，无法核对统一社会信用代码是否已登记")
        else:
            missing = good.num_rows - int(pc.sum(pc.is_in(good["uscc"], value_set=codes)).as_py() or 0)
            verdict["not_in_registry"] = missing
            if missing:
                # Not quarantined: the row is true department data; the portrait marks
                # such enterprises registered = false and the `registered` guard stops them.
                warnings.append(
                    f"{missing} 行的统一社会信用代码不在企业登记信息（{registry_delivery}）中，已保留，画像中按未登记处理"
                )

    problems: list[tuple[str, str]] = []
    if Decimal(bad) > spec.bad_row_threshold * Decimal(total):
        problems.append(
            (
                "rejected",
                f"{label}交付（{delivery.isoformat()}）共 {total} 行，不合格 {bad} 行，占 {_percent(share)}%，"
                f"超过允许的 {_percent(spec.bad_row_threshold)}%，整批拒收；不合格行及原因见 {quarantine_csv.name}。",
            )
        )
    if age > spec.max_age_days:
        problems.append(
            (
                "stale",
                f"{label}数据已过期：最新交付为 {delivery.isoformat()}，距运行日 {age} 天，"
                f"超过时效（{spec.max_age_days} 天）{age - spec.max_age_days} 天。",
            )
        )
    previous = previous_accepted(settings, feed, delivery)
    if previous:
        verdict["previous_accepted"] = {"delivery_date": previous["delivery_date"], "rows": previous["rows"]}
        prev_rows = int(previous["rows"])
        change = (Decimal(total - prev_rows) / Decimal(prev_rows)) if prev_rows else Decimal(0)
        verdict["drift"] = str(change.quantize(Decimal("0.000001")))
        if abs(change) > spec.drift_threshold:
            text = (
                f"{label}交付（{delivery.isoformat()}）共 {total} 行，较上次通过校验的交付"
                f"（{previous['delivery_date']}，{prev_rows} 行）变化 {_percent(change)}%，"
                f"超过 ±{_percent(spec.drift_threshold)}%"
            )
            if accept_drift:
                verdict["drift_accepted"] = True
                warnings.append(text + "，已由操作员确认接受。")
            else:
                problems.append(("drift", text + "，需操作员确认（accept_drift）后才能继续。"))
    verdict["warnings"] = warnings

    if problems:
        verdict.update(status=problems[0][0], reason="".join(p[1] for p in problems))
    else:
        verdict.update(status=ACCEPTED, reason=f"{label}交付（{delivery.isoformat()}）校验通过。")
        path = settings.validated_path(feed, delivery)
        write_parquet(good.drop_columns(list(HELPER_COLUMNS)), path)
        write_json(
            {"feed": feed, "delivery_date": delivery.isoformat(), "rows": total, "good_rows": good.num_rows,
             "accepted_on": _first_accepted_on(path.with_suffix(".json"), as_of),
             "drift_accepted": verdict["drift_accepted"]},
            path.with_suffix(".json"),
        )
        verdict["validated_path"] = str(path)
    return _finish(settings, as_of, verdict)


def _first_accepted_on(meta: Path, as_of: dt.date) -> str:
    """The run date that first accepted the delivery: a backfill of an earlier
    date may lower it, a rerun of a later one never moves it."""
    earlier = (read_json(meta) or {}).get("accepted_on")
    return min(filter(None, [earlier, as_of.isoformat()]))


def _finish(settings: Settings, as_of: dt.date, verdict: dict) -> dict:
    write_json(verdict, settings.verdict_path(verdict["feed"], as_of))
    return verdict


# --------------------------------------------------------------------------
# the gate


def gate(settings: Settings, as_of: dt.date) -> dict:
    """Open only when every feed's verdict for `as_of` is accepted; else raise GateClosed.

    Writes `<quality_dir>/gate.json` either way.
    """
    feeds: dict[str, dict] = {}
    failing: list[str] = []
    for feed in FEED_ORDER:
        spec = FEEDS[feed]
        v = read_json(settings.verdict_path(feed, as_of))
        if v is not None:
            status, reason = v["status"], v["reason"]
        else:
            v, status = {}, "missing"
            reason = f"{_label(spec)}本次运行（{as_of.isoformat()}）没有校验结论。"
        feeds[feed] = {
            "title": spec.title,
            "department": spec.department,
            "status": status,
            "reason": reason,
            "delivery_date": v.get("delivery_date"),
            "drift_accepted": v.get("drift_accepted", False),
            "validated_path": v.get("validated_path"),
        }
        if status != ACCEPTED:
            failing.append(reason)
    message = (
        "数据质量闸门关闭，本次运行停止，不进行匹配和发放：\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(failing, 1))
        if failing
        else f"数据质量闸门开启：{len(FEED_ORDER)} 项数据均校验通过。"
    )
    result = {"as_of": as_of.isoformat(), "open": not failing, "message": message, "feeds": feeds}
    write_json(result, settings.gate_path(as_of))
    if failing:
        raise GateClosed(message, result)
    return result
