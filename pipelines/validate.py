"""Validate a staged delivery: its checks, the verdict and quarantine; the quality gate.

The row rules are the GX suites run by `pipelines.gx_suites` (which also
builds the Data Docs), their reasons formatted from each rule's
`meta.reason_zh`. A row failing a rule on a key or required column goes to
quarantine with all its reasons; a rule on any other column names it in
`meta.field_defect`, and its failure only nulls that value, which the verdict
counts as a field defect (as it does the values ingest could not type,
carried in `_defects`): feeds.md, Row-level outcome. Timeliness, row-count
drift, the bad-row threshold and referential integrity against the registry
are decided here, outside the suites, because they compare deliveries rather
than rows. `check_delivery` decides all of it without I/O; `validate_feed`
reads the staged delivery and what it is compared with, and writes the
verdict, the quarantine list and the validated rows. A delivery GX already
validated under the same suite is not validated by GX again: its rule results
come from `pipelines.gx_reuse`, and everything else is decided as always.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import string
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.files import atomic_write_text, read_json
from pipelines import gx_reuse
from pipelines.gx_suites import rule_columns, run_suite, suite_parameters
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
# the checks, without I/O: GX results -> reasons, the delivery -> a verdict


class _Blank(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def display(value) -> str:
    return "空" if value is None else cell_text(value)


def _template_columns(template: str, table: pa.Table) -> list[str]:
    """The table columns a reason template names (format_map looks up nothing else)."""
    fields = {re.split(r"[.\[]", f, maxsplit=1)[0] for _, f, _, _ in string.Formatter().parse(template) if f}
    return [c for c in table.column_names if c in fields]


def rule_reasons(res: dict, table: pa.Table, params: dict) -> list[tuple[int, int, str]]:
    """(staged position, row number, Chinese reason) for each row one rule's result fails, from its reason template."""
    if not res["unexpected"]:
        return []
    template = res["meta"].get("reason_zh") or res["type"]
    base = {k: str(v) for k, v in params.items()}
    positions = pa.array(res["unexpected"], pa.int64())
    named = _template_columns(template, table)
    # (a table with no columns lists no rows: a template naming none formats from the parameters alone)
    subset = table.select(named).take(positions).to_pylist() if named else [{}] * len(positions)
    rows = table["_row"].take(positions).to_pylist()
    out = []
    for idx, row, record in zip(res["unexpected"], rows, subset):
        values = _Blank(base)
        values.update({k: display(v) for k, v in record.items()})
        out.append((idx, row, template.format_map(values)))
    return out


def row_failures(results: list[dict], table: pa.Table, params: dict) -> dict[int, list[str]]:
    """Staged row position -> Chinese reasons (`第12行 …`), from the suite's reason templates."""
    failures: dict[int, list[str]] = {}
    for res in results:
        for idx, row, reason in rule_reasons(res, table, params):
            failures.setdefault(idx, []).append(f"第{row}行 {reason}")
    return failures


def field_failures(results: list[dict], table: pa.Table, params: dict) -> dict[str, dict[int, list[str]]]:
    """Column -> staged position -> Chinese reasons, for the rules whose failure nulls one value.

    Such a rule names the column it nulls in `meta.field_defect` (feeds.md,
    Row-level outcome: a bad value outside the key and required columns costs
    the value, not the row). A rule comparing two columns is not held against
    a row where another rule already nulls one of the two: its suite rule
    ignores a row with a missing value, and the value is missing now.
    """
    defects: dict[str, dict[int, list[str]]] = {}
    rules = [r for r in results if r["meta"].get("field_defect")]
    for pairs in (False, True):
        nulled = {column: set(at) for column, at in defects.items()}
        for res in rules:
            columns = rule_columns(res["kwargs"])
            if (len(columns) > 1) != pairs:
                continue
            skip = set().union(*(nulled.get(c, set()) for c in columns)) if pairs else set()
            at = defects.setdefault(res["meta"]["field_defect"], {})
            for idx, _row, reason in rule_reasons(res, table, params):
                if idx not in skip:
                    at.setdefault(idx, []).append(reason)
    return {column: at for column, at in defects.items() if at}


def _label(spec: Feed) -> str:
    return f"{spec.department}「{spec.title}」"


def _share(bad: int, total: int) -> Decimal:
    return (Decimal(bad) / Decimal(total)).quantize(Decimal("0.000001")) if total else Decimal(0)


def _percent(value: Decimal) -> str:
    text = format((value * 100).quantize(Decimal("0.01")), "f")
    return text.rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Checked:
    """What the checks decided about one delivery."""
    verdict: dict                 # the verdict's fields: status, reason, counts, field defects, failed rules, warnings, drift
    good: pa.Table                # the staged rows that pass every row rule, field defects nulled (helper columns kept)
    quarantine: list[dict]        # ingest's bad rows, then the rule failures, each with its reasons


FIELD_DEFECT_EXAMPLES = 5


@dataclass(frozen=True)
class FieldDefect:
    """One nulled value: where it was and why."""
    value: str | None             # as received (after the normalisation feeds.md describes)
    reasons: list[str]


def ingest_defects(staged: pa.Table) -> dict[str, dict[int, FieldDefect]]:
    """Column -> staged position -> the field defect ingest found there (a value it could not type)."""
    if "_defects" not in staged.column_names:
        return {}
    column = staged["_defects"]
    out: dict[str, dict[int, FieldDefect]] = {}
    for idx in pc.indices_nonzero(pc.is_valid(column)).to_pylist():
        for cell in column[idx].as_py():
            out.setdefault(cell["column"], {})[idx] = FieldDefect(cell["value"], [cell["reason"]])
    return out


def field_defects(results: list[dict], staged: pa.Table, params: dict) -> dict[str, dict[int, FieldDefect]]:
    """Every field defect of the delivery: ingest's untypable values and the failures of `field_defect` rules."""
    defects = ingest_defects(staged)
    for column, at in field_failures(results, staged, params).items():
        values = staged[column].take(pa.array(list(at), pa.int64())).to_pylist()
        found = defects.setdefault(column, {})
        for (idx, reasons), value in zip(at.items(), values):
            found[idx] = FieldDefect(display(value), reasons)
    return defects


def null_defects(table: pa.Table, defects: dict[str, dict[int, FieldDefect]]) -> pa.Table:
    """`table` with the value at every field defect set to null."""
    for column, at in defects.items():
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[list(at)] = True
        i = table.schema.get_field_index(column)
        values = table[column]
        table = table.set_column(i, column, pc.if_else(pa.array(mask), pa.scalar(None, values.type), values))
    return table


def field_defect_report(spec: Feed, defects: dict[str, dict[int, FieldDefect]], table: pa.Table) -> dict:
    """The quality report's field defects: per column (contract order) its count and the first few examples."""
    rows, files = table["_row"], table["_file"]
    report = {}
    for col in spec.columns:
        at = defects.get(col.name)
        if not at:
            continue
        report[col.name] = {
            "header": col.header,
            "count": len(at),
            "examples": [
                {"row": rows[i].as_py(), "file": files[i].as_py(), "value": at[i].value, "reason": "；".join(at[i].reasons)}
                for i in sorted(at)[:FIELD_DEFECT_EXAMPLES]
            ],
        }
    return report


def failed_rules(results: list[dict]) -> list[dict]:
    """The verdict's list of the suite's rules that some row failed."""
    return [
        {
            "expectation": r["type"],
            "columns": rule_columns(r["kwargs"]),
            "rule_zh": r["meta"].get("reason_zh", ""),
            "rows": len(r["unexpected"]),
        }
        for r in results
        if r["unexpected"]
    ]


def check_delivery(
    spec: Feed,
    ingested: dict,
    staged: pa.Table,
    ingest_bad: pa.Table,
    results: list[dict],
    params: dict,
    as_of: dt.date,
    previous: dict | None,
    registry: tuple[pa.Array | None, str | None] | None,
    accept_drift: bool = False,
    quarantine_name: str = "",
) -> Checked:
    """The checks on one ingested delivery, without I/O.

    `ingested` is ingest's summary, `staged`/`ingest_bad` its staged and
    quarantined rows, `results` the suite's (`gx_suites.run_suite`) with its
    `params`; `previous` the sidecar of the newest accepted earlier delivery
    (drift), `registry` the accepted registry codes and their delivery date
    (for feeds that reference the registry), `quarantine_name` the file the
    rejection reason points to.
    """
    label = _label(spec)
    delivery = dt.date.fromisoformat(ingested["delivery_date"])
    failures = row_failures([r for r in results if not r["meta"].get("field_defect")], staged, params)
    defects = field_defects(results, staged, params)
    # A quarantined row carries every reason it has; a kept row's field defects are nulled and counted.
    rows = staged["_row"]
    for at in defects.values():
        for idx in [i for i in at if i in failures]:
            failures[idx] += [f"第{rows[idx].as_py()}行 {r}" for r in at.pop(idx).reasons]
    defects = {column: at for column, at in defects.items() if at}
    keep = np.ones(staged.num_rows, dtype=bool)
    keep[list(failures)] = False
    rule_bad = staged.take(pa.array(sorted(failures), pa.int64())).to_pylist() if failures else []
    field_report = field_defect_report(spec, defects, staged)
    staged = null_defects(staged, defects)
    good = staged.filter(pa.array(keep)) if failures else staged

    quarantine = ingest_bad.to_pylist()
    for idx, rec in zip(sorted(failures), rule_bad):
        text = {k: (None if v is None else cell_text(v)) for k, v in rec.items() if k not in HELPER_COLUMNS}
        quarantine.append({**text, "_row": rec["_row"], "_file": rec["_file"], "reason": "；".join(failures[idx])})

    total = int(ingested["rows"])
    bad = ingest_bad.num_rows + len(failures)
    share = _share(bad, total)
    age = (as_of - delivery).days
    verdict: dict = {
        "rows": total,
        "good_rows": good.num_rows,
        "bad_rows": bad,
        "ingest_bad_rows": ingest_bad.num_rows,
        "rule_bad_rows": len(failures),
        "field_defect_values": sum(f["count"] for f in field_report.values()),
        "field_defects": field_report,
        "bad_share": str(share),
        "age_days": age,
        "failed_rules": failed_rules(results),
    }

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
        codes, registry_delivery = registry or (None, None)
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
                f"超过允许的 {_percent(spec.bad_row_threshold)}%，整批拒收；不合格行及原因见 {quarantine_name}。",
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
    return Checked(verdict, good, quarantine)


# --------------------------------------------------------------------------
# reading and writing


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
        "field_defect_values": 0,
        "field_defects": {},
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
    # Read once, hashed and parsed from the same bytes: the reuse key names exactly what GX would see.
    staged_bytes = Path(ingested["staged_path"]).read_bytes()
    # Parquet stores timestamp[s] as ms: cast back to the contract's types.
    staged = pq.read_table(pa.BufferReader(staged_bytes)).cast(staged_schema(spec))
    staged_sha256 = hashlib.sha256(staged_bytes).hexdigest()
    del staged_bytes
    ingest_bad = pq.read_table(ingested["quarantine_path"])
    params = suite_parameters(as_of, delivery)
    suite = gx_reuse.read_suite(settings, feed)
    key = gx_reuse.cache_key(feed, ingested, staged_sha256, suite, params)
    entry = gx_reuse.lookup(settings, key, suite, staged.num_rows)
    if entry is not None:
        # The same delivery under the same suite was validated before: its rule results, not a new GX run.
        results = gx_reuse.reuse(settings, entry, qdir, suite)
    else:
        results = run_suite(qdir, feed, suite.suite, staged, params)
        gx_reuse.store(settings, key, results, qdir, as_of)
    quarantine_csv = qdir / f"{feed}_quarantine.csv"
    checked = check_delivery(
        spec, ingested, staged, ingest_bad, results, params, as_of,
        previous=previous_accepted(settings, feed, delivery),
        registry=registry_codes(settings, as_of) if spec.references_registry else None,
        accept_drift=accept_drift,
        quarantine_name=quarantine_csv.name,
    )
    write_quarantine_csv(spec, checked.quarantine, quarantine_csv)
    verdict.update(checked.verdict, quarantine_csv=str(quarantine_csv),
                   data_docs=str(settings.data_docs_dir(as_of) / "index.html"))
    if verdict["status"] == ACCEPTED:
        path = settings.validated_path(feed, delivery)
        write_parquet(checked.good.drop_columns(list(HELPER_COLUMNS)), path)
        write_json(
            {"feed": feed, "delivery_date": delivery.isoformat(), "rows": verdict["rows"],
             "good_rows": checked.good.num_rows,
             "accepted_on": _first_accepted_on(path.with_suffix(".json"), as_of),
             "drift_accepted": verdict["drift_accepted"]},
            path.with_suffix(".json"),
        )
        verdict["validated_path"] = str(path)
    if entry is not None:
        verdict["gx_reused"] = gx_reuse.reuse_note(entry)
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
