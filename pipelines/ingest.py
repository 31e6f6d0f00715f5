"""Ingest one feed for one run date: delivery -> raw archive, staged, quarantine.

A delivery comes from the file drop (`<landing>/<feed>/<YYYY-MM-DD>/`, complete
when `_SUCCESS` is present) or from a department's exchange database
(`Settings.sources`). Either way it is first kept exactly as received under
`<work>/raw/`, then read from that copy, so what was staged is provably what
was archived. Every cell is read as text; headers are mapped to canonical
names, codes and numbers normalised (and the normalisations counted), and each
column typed exactly (decimals never pass through a binary float). A key or
required cell that cannot be typed puts its row in quarantine with a Chinese
reason; any other such cell becomes null and is carried with its row as a
field defect (`_defects`, counted by validation); a delivery that cannot be
read at all is rejected whole, with a Chinese reason, and is still archived.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import unicodedata
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines import files, received
from pipelines.files import sha256_file
from pipelines.config import Settings
from pipelines.contracts import ARROW_TYPES, FEEDS, Column, Feed
from pipelines.received import cell_text

SUCCESS_MARKER = "_SUCCESS"
DATA_SUFFIXES = (".csv", ".xlsx", ".xls")  # calamine reads legacy .xls too
HELPER_COLUMNS = ("_row", "_file", "_defects")
# A staged row's field defects found at ingest: a value that could not be typed
# in a column that is neither key nor required, nulled (feeds.md, Row-level outcome).
FIELD_DEFECT = pa.struct([("column", pa.string()), ("value", pa.string()), ("reason", pa.string())])
MAX_FRACTION_DIGITS = 6          # contracts.MONEY = decimal128(38, 6)
MAX_INTEGER_DIGITS = 32
EXCEL_EPOCH = dt.date(1899, 12, 30)
# Columns whose values are codes (upper-cased, inner spaces removed) besides
# uscc-typed ones and those with a pattern or an all-ASCII code list.
EXTRA_CODE_COLUMNS = frozenset({"cert_no"})
# Types whose text is a number / period / flag: NFKC and inner spaces removed.
COMPACT_TYPES = frozenset({"int", "year", "decimal", "bool", "period"})


class DeliveryError(Exception):
    """The delivery cannot be read as a whole; the message is Chinese."""


# --------------------------------------------------------------------------
# entry point


def ingest_feed(settings: Settings, feed: str, as_of: dt.date) -> dict:
    """Ingest the newest complete delivery of `feed` dated on or before `as_of`.

    Returns a JSON-able summary (also written to
    `<quality_dir(as_of)>/<feed>.ingest.json`) whose `status` is `ingested`,
    `missing` or `rejected`.
    """
    spec = FEEDS[feed]
    summary: dict = {
        "feed": feed,
        "title": spec.title,
        "department": spec.department,
        "as_of": as_of.isoformat(),
        "source": "database" if feed in settings.sources else "file",
        "delivery_date": None,
        "status": None,
        "reason": None,
        "files": [],
        "raw_dir": None,
        "rows": 0,
        "good_rows": 0,
        "bad_rows": 0,
        "normalised": {},
        "extra_columns": [],
        "missing_optional_columns": [],
        "hidden_sheets": {},
        "ignored_files": [],
        "incomplete_deliveries": [],
        "undated_folders": [],
        "staged_path": None,
        "quarantine_path": None,
    }
    label = f"{spec.department}「{spec.title}」"
    try:
        if feed in settings.sources:
            url, query = settings.sources[feed]
            delivery = as_of
            with tempfile.TemporaryDirectory(dir=_tmp_root(settings)) as tmp:
                try:
                    snapshot = pull_database(url, query, Path(tmp) / f"{feed}.csv")
                except Exception as exc:  # any driver error: nothing was received
                    summary["status"] = "missing"
                    summary["reason"] = f"{label}无法从前置库读取数据：{type(exc).__name__}: {exc}"
                    return _finish(settings, as_of, summary)
                summary["delivery_date"] = delivery.isoformat()
                raw_dir, infos = archive_delivery(settings, feed, delivery.isoformat(), [snapshot])
        else:
            found = find_delivery(settings.landing / feed, as_of)
            summary["incomplete_deliveries"] = found.incomplete
            summary["undated_folders"] = found.undated
            if found.folder is None:
                summary["status"] = "missing"
                summary["reason"] = label + found.reason
                return _finish(settings, as_of, summary)
            delivery = found.date
            summary["delivery_date"] = delivery.isoformat()
            data_files, ignored = _delivery_files(found.folder)
            summary["ignored_files"] = ignored
            raw_dir, infos = archive_delivery(settings, feed, delivery.isoformat(), data_files)
            if not data_files:
                summary["raw_dir"] = str(raw_dir)
                raise DeliveryError(f"交付目录 {delivery.isoformat()} 中没有 CSV 或 Excel（.xlsx/.xls）数据文件")
        summary["raw_dir"] = str(raw_dir)
        summary["files"] = infos
        result = read_delivery(spec, [raw_dir / i["name"] for i in infos], settings)
    except DeliveryError as exc:
        summary["status"] = "rejected"
        summary["reason"] = f"{label}交付被拒收：{exc}"
        return _finish(settings, as_of, summary)

    for info in summary["files"]:
        info["rows"] = result.rows_per_file.get(info["name"], 0)
    summary.update(
        rows=result.rows,
        good_rows=result.staged.num_rows,
        bad_rows=result.quarantine.num_rows,
        normalised=result.normalised,
        extra_columns=result.extra_columns,
        missing_optional_columns=result.missing_optional,
        hidden_sheets=result.hidden_sheets,
    )
    if result.rows == 0:
        summary["status"] = "rejected"
        summary["reason"] = f"{label}交付被拒收：文件中没有数据行"
        return _finish(settings, as_of, summary)

    staged_path = settings.staged_path(feed, delivery)
    quarantine_path = settings.quarantine_path(feed, delivery)
    write_parquet(result.staged, staged_path)
    write_parquet(result.quarantine, quarantine_path)
    summary.update(status="ingested", staged_path=str(staged_path), quarantine_path=str(quarantine_path))
    return _finish(settings, as_of, summary)


def _finish(settings: Settings, as_of: dt.date, summary: dict) -> dict:
    write_json(summary, settings.ingest_summary_path(summary['feed'], as_of))
    return summary


def _tmp_root(settings: Settings) -> Path:
    root = settings.work / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


# --------------------------------------------------------------------------
# finding a delivery


@dataclass
class Found:
    folder: Path | None
    date: dt.date | None
    reason: str = ""
    incomplete: list[str] = field(default_factory=list)
    undated: list[str] = field(default_factory=list)


def find_delivery(feed_dir: Path, as_of: dt.date) -> Found:
    """The newest complete delivery folder dated on or before `as_of`.

    Incomplete folders (no `_SUCCESS`) and folders not named YYYY-MM-DD are
    left alone and listed, so the report can say why they were not used.
    """
    if not feed_dir.is_dir():
        return Found(None, None, f"的交付目录不存在：{feed_dir}")
    dated: list[tuple[dt.date, Path]] = []
    undated: list[str] = []
    for child in sorted(feed_dir.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            day = dt.date.fromisoformat(child.name)
            if len(child.name) != 10:
                raise ValueError
        except ValueError:
            undated.append(child.name)
            continue
        if day <= as_of:
            dated.append((day, child))
    incomplete = [p.name for d, p in sorted(dated) if not (p / SUCCESS_MARKER).exists()]
    complete = [(d, p) for d, p in sorted(dated) if (p / SUCCESS_MARKER).exists()]
    if not complete:
        if incomplete:
            reason = f"没有完整的交付：目录 {'、'.join(incomplete)} 缺少完成标记 _SUCCESS（数据可能尚未传完）"
        else:
            reason = f"在 {as_of.isoformat()} 及之前没有任何交付（目录 {feed_dir}）"
        return Found(None, None, reason, incomplete, undated)
    day, folder = complete[-1]
    newer_incomplete = [name for name in incomplete if name > day.isoformat()]
    return Found(folder, day, "", newer_incomplete, undated)


def _delivery_files(folder: Path) -> tuple[list[Path], list[str]]:
    data, ignored = [], []
    for path in sorted(folder.iterdir()):
        if path.name == SUCCESS_MARKER or path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in DATA_SUFFIXES:
            data.append(path)
        else:
            ignored.append(path.name)
    return data, ignored


# --------------------------------------------------------------------------
# exchange database


def resolve_url(url: str) -> str:
    """A SQLAlchemy URL, or `airflow://<conn_id>` resolved through Airflow's connections."""
    if url.startswith("airflow://"):
        from airflow.sdk import BaseHook  # lazy: Airflow is heavy and absent from most tests

        return BaseHook.get_connection(url[len("airflow://"):]).get_uri()
    return url


_SELECT = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
_TABLE = re.compile(r"^[A-Za-z_\u4e00-\u9fff][\w\u4e00-\u9fff]*(\.[A-Za-z_\u4e00-\u9fff][\w\u4e00-\u9fff]*)?$")


def pull_database(url: str, query: str, out: Path, batch: int = 50_000) -> Path:
    """Snapshot a table or SELECT to a UTF-8 CSV (every value as text), streaming."""
    import sqlalchemy as sa

    if _SELECT.match(query):
        stmt = sa.text(query)
    elif _TABLE.match(query.strip()):
        schema, _, name = query.strip().rpartition(".")
        stmt = sa.select(sa.text("*")).select_from(sa.table(name, schema=schema or None))
    else:
        raise ValueError(f"not a table name or SELECT: {query!r}")
    engine = sa.create_engine(resolve_url(url))
    try:
        with engine.connect() as conn, open(out, "w", encoding="utf-8", newline="") as fh:
            result = conn.execution_options(stream_results=True).execute(stmt)
            writer = csv.writer(fh)
            writer.writerow(list(result.keys()))
            while rows := result.fetchmany(batch):
                writer.writerows([[cell_text(v) for v in row] for row in rows])
    finally:
        engine.dispose()
    return out


# --------------------------------------------------------------------------
# raw archive


def archive_delivery(settings: Settings, feed: str, delivery: str, files: list[Path]) -> tuple[Path, list[dict]]:
    """Copy the delivery as received to `<work>/raw/<feed>/<delivery>/<hash16>/`.

    The folder name is the first 16 hex digits of a sha256 over the files'
    names and sha256s, so a redelivery with other content lands beside the
    first one and nothing is ever overwritten. Returns (folder, file infos).
    """
    infos = [{"name": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)} for p in files]
    digest = hashlib.sha256("".join(f"{i['name']}\0{i['sha256']}\n" for i in sorted(infos, key=lambda i: i["name"])).encode())
    content = digest.hexdigest()
    dest = settings.work / "raw" / feed / delivery / content[:16]
    if (dest / "manifest.json").exists():
        return dest, infos
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for path in files:
            shutil.copy2(path, tmp / path.name)
        manifest = {
            "feed": feed,
            "delivery": delivery,
            "content_sha256": content,
            "received_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "files": infos,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        try:
            os.rename(tmp, dest)
        except OSError:  # a concurrent run archived the same content first
            if not (dest / "manifest.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest, infos


# --------------------------------------------------------------------------
# reading files as text


@dataclass
class TextFile:
    name: str
    headers: list[str]
    table: pa.Table                      # columns c0..cn-1 as strings ("" when empty) + _row
    malformed: list[tuple[int, str, list[str]]] = field(default_factory=list)  # (row, reason, cells)
    hidden_sheets: list[str] = field(default_factory=list)  # a workbook's hidden sheets, not read


def read_text_file(path: Path, settings: Settings | None = None) -> TextFile:
    """One delivered file as text; DeliveryError (Chinese) when it cannot be read."""
    if path.stat().st_size == 0:
        raise DeliveryError(f"文件「{path.name}」为空（0 字节）")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            # CSV is streamed (pyarrow, bounded blocks); a workbook is read whole, after the limits.
            return read_xlsx(path, settings)
        return read_csv(path)
    except received.Unreadable as exc:
        raise DeliveryError(str(exc)) from exc


def read_xlsx(path: Path, settings: Settings | None = None) -> TextFile:
    """The first visible sheet; the names of hidden sheets skipped come back in `hidden_sheets`."""
    book = received.read_workbook(path, settings, first_only=True)
    rows = book.sheets[0][1] if book.sheets else []
    texts = [[cell_text(v) for v in row] for row in rows]
    header_at = next((i for i, row in enumerate(texts) if any(c.strip() for c in row)), None)
    if header_at is None:
        raise DeliveryError(f"文件「{path.name}」为空（第一个工作表没有内容）" + (f"；{book.notice}" if book.notice else ""))
    headers = texts[header_at]
    width = len(headers)
    data, numbers = [], []
    for i in range(header_at + 1, len(texts)):
        row = texts[i]
        if not any(c.strip() for c in row):
            continue
        data.append((row + [""] * width)[:width])
        numbers.append(i + 1)  # Excel's own row number
    columns = {f"c{j}": pa.array([r[j] for r in data], pa.string()) for j in range(width)}
    columns["_row"] = pa.array(numbers, pa.int64())
    return TextFile(path.name, headers, pa.table(columns), hidden_sheets=book.hidden)


def read_csv(path: Path) -> TextFile:
    """Fast path: pyarrow with every column as string; exact slow path on any irregular line.
    Encodings as received.csv_encodings."""
    with open(path, "rb") as fh:
        candidates = received.csv_encodings(fh.read(4))
    last: Exception | None = None
    for enc in candidates:
        try:
            return _read_csv_arrow(path, enc)
        except _Irregular:
            return _read_csv_python(path, enc)
        except csv.Error as exc:  # e.g. a field over the csv module's size limit on the exact path
            raise received.bad_csv(path.name, exc) from exc
        except (UnicodeDecodeError, pa.ArrowInvalid) as exc:
            if isinstance(exc, pa.ArrowInvalid) and "utf8" not in str(exc).lower() and "decode" not in str(exc).lower():
                raise received.bad_csv(path.name, exc) from exc
            last = exc
    raise received.undecodable(path.name) from last


class _Irregular(Exception):
    """A line with the wrong number of fields or a blank line: row numbers need the exact reader."""


def _header(path: Path, enc: str) -> list[str]:
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    # Only the first record matters; a multibyte character cut at the chunk end is after it.
    text = head.decode(enc, errors="strict" if len(head) < (1 << 16) else "ignore")
    return next(csv.reader(io.StringIO(text, newline="")), [])  # newline="": a lone CR ends a record


def _read_csv_arrow(path: Path, enc: str) -> TextFile:
    headers = _header(path, enc)
    if not headers:
        raise DeliveryError(f"文件「{path.name}」为空（没有表头）")
    names = [f"c{i}" for i in range(len(headers))]

    irregular_rows: list[int] = []

    def irregular(row) -> str:
        irregular_rows.append(1)  # exceptions raised here are swallowed by pyarrow
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(
            column_names=names, skip_rows=1, encoding="utf8" if enc.startswith("utf-8") else enc, block_size=1 << 24
        ),
        parse_options=pacsv.ParseOptions(ignore_empty_lines=False, invalid_row_handler=irregular),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=True,
        ),
    )
    if irregular_rows:
        raise _Irregular()
    if len(names) == 1 and table.num_rows and pc.any(pc.equal(table["c0"], "")).as_py():
        raise _Irregular()  # blank lines in a one-column file: let the exact reader number rows
    table = table.append_column("_row", pa.array(np.arange(2, table.num_rows + 2, dtype=np.int64)))
    return TextFile(path.name, headers, table)


def _read_csv_python(path: Path, enc: str) -> TextFile:
    with open(path, encoding=enc, newline="") as fh:
        records = list(csv.reader(fh))
    headers = records[0] if records else []
    width = len(headers)
    data, numbers, malformed = [], [], []
    for i, rec in enumerate(records[1:], start=2):
        if not rec or not any(c.strip() for c in rec):
            continue
        if len(rec) != width:
            malformed.append((i, f"第{i}行 有 {len(rec)} 列，表头有 {width} 列", rec))
            continue
        data.append(rec)
        numbers.append(i)
    columns = {f"c{j}": pa.array([r[j] for r in data], pa.string()) for j in range(width)}
    columns["_row"] = pa.array(numbers, pa.int64())
    return TextFile(path.name, headers, pa.table(columns), malformed)


# --------------------------------------------------------------------------
# headers


def header_key(text: str) -> str:
    """Compare headers ignoring spaces anywhere and full-width vs half-width brackets."""
    return "".join(unicodedata.normalize("NFKC", str(text)).split()).lower()


def map_headers(spec: Feed, tf: TextFile) -> tuple[dict[str, str], list[str], list[str]]:
    """(canonical -> cN) for the columns found, extra headers, missing optional headers."""
    lookup: dict[str, str] = {}
    for col in spec.columns:
        lookup[header_key(col.header)] = col.name
        lookup[header_key(col.name)] = col.name  # database sources may use canonical names
    found: dict[str, str] = {}
    extra: list[str] = []
    for i, header in enumerate(tf.headers):
        name = lookup.get(header_key(header))
        if name is None or name in found:
            if header.strip():
                extra.append(header.strip())
            continue
        found[name] = f"c{i}"
    missing_required = [c.header for c in spec.columns if c.required and c.name not in found]
    if missing_required:
        raise DeliveryError(f"文件「{tf.name}」缺少必需列" + "、".join(f"「{h}」" for h in missing_required))
    missing_optional = [c.header for c in spec.columns if not c.required and c.name not in found]
    return found, extra, missing_optional


# --------------------------------------------------------------------------
# normalisation and typing (pure: text table in, typed table out)


def is_code_column(col: Column) -> bool:
    return (
        col.type == "uscc"
        or col.pattern is not None
        or col.name in EXTRA_CODE_COLUMNS
        or (col.allowed is not None and all(v.isascii() for v in col.allowed))
    )


def _changed(before: pa.Array, after: pa.Array) -> int:
    return int(pc.sum(pc.not_equal(before, after)).as_py() or 0)


def _nfkc(values: pa.Array) -> pa.Array:
    """NFKC of each value; ASCII text is its own NFKC, so only the other values (a few
    full-width codes in a column of ASCII ones) go through the normaliser."""
    other = pc.invert(pc.string_is_ascii(values))
    if not pc.any(other).as_py():
        return values
    return pc.replace_with_mask(values, other, pc.utf8_normalize(values.filter(other), "NFKC"))


def _upper(values: pa.Array) -> pa.Array:
    """utf8_upper, with the ASCII values (most codes) upper-cased by the much cheaper ASCII kernel."""
    other = pc.invert(pc.string_is_ascii(values))
    upper = pc.ascii_upper(values)
    if not pc.any(other).as_py():
        return upper
    return pc.replace_with_mask(upper, other, pc.utf8_upper(values.filter(other)))


def normalise_column(col: Column, values: pa.Array) -> tuple[pa.Array, dict[str, int]]:
    """Trim; for codes and numbers also NFKC (full width -> half width) and inner
    spaces removed; codes upper-cased. Returns the values and what was changed."""
    counts: dict[str, int] = {}
    trimmed = pc.utf8_trim_whitespace(values)
    spaced = pc.not_equal(values, trimmed)
    code = is_code_column(col)
    if code or col.type in COMPACT_TYPES or col.type in ("date", "datetime"):
        nfkc = _nfkc(trimmed)
        counts["full_width"] = _changed(trimmed, nfkc)
        trimmed = nfkc
    if code or col.type in COMPACT_TYPES:
        # only the values with inner whitespace (few or none) go through the regex replacement
        inner = pc.match_substring_regex(trimmed, r"\s")
        if pc.any(inner).as_py():
            trimmed = pc.replace_with_mask(trimmed, inner, pc.replace_substring_regex(trimmed.filter(inner), r"\s+", ""))
            spaced = pc.or_(spaced, inner)
    counts["spaces"] = int(pc.sum(spaced).as_py() or 0)
    if code:
        upper = _upper(trimmed)
        counts["lower_case"] = _changed(trimmed, upper)
        trimmed = upper
    elif col.allowed:
        trimmed, counts["code_variant"] = _canonical_codes(col.allowed, trimmed)
    return trimmed, {k: v for k, v in counts.items() if v}


_QUOTES = str.maketrans({c: '"' for c in "“”„‟＂'‘’「」『』"})


def _loose(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split()).translate(_QUOTES)


def _canonical_codes(allowed: tuple[str, ...], values: pa.Array) -> tuple[pa.Array, int]:
    """Chinese code-list values written with other quotes, widths or inner spaces
    (专精特新"小巨人"企业) -> the contract's spelling; anything else is left for validation."""
    known = set(allowed)
    loose = {_loose(v): v for v in allowed}
    encoded = pc.dictionary_encode(values)
    uniques = encoded.dictionary.to_pylist()
    fixed = [u if u in known or u == "" else loose.get(_loose(u), u) for u in uniques]
    if fixed == uniques:
        return values, 0
    out = pa.array(fixed, pa.string()).take(encoded.indices)
    return out, _changed(values, out)


_GROUPED = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_INT = re.compile(r"^[+-]?\d+(\.0*)?$")
_DATE_SEP = re.compile(
    r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?$"
)
_DATE_ZH = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$")
_DATE_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2}))?$")
_SERIAL = re.compile(r"^(\d{5})(\.\d+)?$")
_PERIOD = re.compile(r"^(\d{4})(?:[-/.年](\d{1,2})月?|(\d{2}))$")

Parsed = tuple[object, str | None]


def parse_decimal(text: str) -> Parsed:
    if _GROUPED.match(text):
        text = text.replace(",", "")
    if not _DECIMAL.match(text):
        return None, "不是有效数值"
    value = Decimal(text)
    try:
        # (more digits than the context holds, e.g. 60 nines: InvalidOperation either time)
        quantized = value.quantize(Decimal(1).scaleb(-MAX_FRACTION_DIGITS))
    except InvalidOperation:
        quantized = None
    if quantized is None:
        return None, "数值超出范围"
    if -value.as_tuple().exponent > MAX_FRACTION_DIGITS and value != quantized:
        return None, f"小数位超过 {MAX_FRACTION_DIGITS} 位"
    value = quantized
    if len(value.as_tuple().digits) > 38:
        return None, "数值超出范围"
    return value, None


def parse_int(text: str) -> Parsed:
    if _GROUPED.match(text):
        text = text.replace(",", "")
    if not _INT.match(text):
        return None, "不是整数"
    value = int(text.split(".")[0])
    if abs(value) >= 2**63:
        return None, "数值超出范围"
    return value, None


def _excel_serial(text: str) -> dt.datetime | None:
    m = _SERIAL.match(text)
    if not m:
        return None
    # Five-digit serials only (1927-05-18 .. 2173-10-14): a shorter number is
    # far more likely a typo than a date, and it keeps 8-digit YYYYMMDD apart.
    value = Decimal(text)
    day = EXCEL_EPOCH + dt.timedelta(days=int(value))
    seconds = int(((value - int(value)) * 86400).to_integral_value())
    return dt.datetime.combine(day, dt.time(0)) + dt.timedelta(seconds=seconds)


def _parse_moment(text: str) -> dt.datetime | None:
    for pattern in (_DATE_SEP, _DATE_ZH, _DATE_COMPACT):
        m = pattern.match(text)
        if m:
            parts = [int(g) if g else 0 for g in m.groups()] + [0, 0, 0]
            try:
                return dt.datetime(*parts[:6])
            except ValueError:
                return None
    return _excel_serial(text)


def parse_date(text: str) -> Parsed:
    moment = _parse_moment(text)
    return (moment.date(), None) if moment else (None, "不是有效日期")


def parse_datetime(text: str) -> Parsed:
    moment = _parse_moment(text)
    return (moment, None) if moment else (None, "不是有效的日期时间")


def parse_bool(text: str) -> Parsed:
    if text == "是":
        return True, None
    if text == "否":
        return False, None
    return None, "应为“是”或“否”"


def parse_period(text: str) -> Parsed:
    m = _PERIOD.match(text)
    if m:
        year, month = int(m.group(1)), int(m.group(2) or m.group(3))
        if 1 <= month <= 12:
            return f"{year:04d}-{month:02d}", None
    return None, "不是有效年月（应为 YYYY-MM）"


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "decimal": parse_decimal,
    "int": parse_int,
    "year": parse_int,
    "date": parse_date,
    "datetime": parse_datetime,
    "bool": parse_bool,
    "period": parse_period,
}


def type_column(col: Column, values: pa.Array) -> tuple[pa.Array, pa.Array | None, list[str | None]]:
    """Typed values, per-row index into the error list (None when no errors), errors.

    Each distinct text is parsed once (dictionary encoding), so a 12-million-row
    column with a few thousand distinct values costs a few thousand parses.
    """
    target = ARROW_TYPES[col.type]
    empty = pc.equal(values, "")
    parser = PARSERS.get(col.type)
    if parser is None:
        return pc.if_else(empty, pa.scalar(None, pa.string()), values), None, []
    encoded = pc.dictionary_encode(values)
    uniques = encoded.dictionary
    fast = _fast_typed(col.type, uniques, target)
    if fast is None:
        slow, typed_uniques = uniques.to_pylist(), None
    else:
        typed_uniques, mask = fast
        slow = uniques.filter(pc.invert(mask)).to_pylist()
    parsed: list[object] = []
    slow_errors: list[str | None] = []
    for text in slow:
        value, error = (None, None) if text == "" else parser(text)
        parsed.append(value)
        slow_errors.append(error)
    if typed_uniques is None:
        typed_uniques, errors = pa.array(parsed, type=target), slow_errors
    else:
        # the texts the fast path left, parsed one by one, go back to their places
        typed_uniques = pc.replace_with_mask(typed_uniques, pc.invert(mask), pa.array(parsed, type=target))
        errors = [None] * len(uniques)
        for at, error in zip(np.flatnonzero(~mask.to_numpy(zero_copy_only=False)), slow_errors):
            errors[at] = error
    typed = typed_uniques.take(encoded.indices)
    if not any(errors):
        return typed, None, errors
    return typed, encoded.indices, errors


# The usual spellings, typed column-wise by Arrow: a text matching the pattern gets from
# Arrow exactly the value its parser would give (a decimal with at most 22 integer and 6
# fraction digits, which parse_decimal's 28-digit context quantizes without error; a date/time Arrow reads back to the very same text, since Arrow's
# strptime rolls 2026-02-30 over to March and accepts year 0). Every other text
# (and the empty one) goes through the parser, one distinct text at a time.
_FAST_PATTERNS: dict[str, tuple[str, str | None]] = {
    "decimal": (r"^-?[0-9]{1,22}(\.[0-9]{1,6})?$", None),
    "date": (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "%Y-%m-%d"),
    "datetime": (r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$", "%Y-%m-%d %H:%M:%S"),
}


def _fast_typed(kind: str, texts: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array] | None:
    """(typed values, mask of the texts typed here) for a column type with a fast path, else None.
    Where the mask is false the value is a placeholder the caller replaces."""
    if kind not in _FAST_PATTERNS or len(texts) == 0:
        return None
    pattern, fmt = _FAST_PATTERNS[kind]
    mask = pc.match_substring_regex(texts, pattern)
    if fmt is None:
        return pc.cast(pc.if_else(mask, texts, "0"), target), mask
    placeholder = "1970-01-01" if kind == "date" else "1970-01-01 00:00:00"
    moments = pc.strptime(pc.if_else(mask, texts, placeholder), format=fmt, unit="s", error_is_null=True)
    mask = pc.and_(mask, pc.and_(pc.equal(pc.strftime(moments, format=fmt), texts),
                                 pc.invert(pc.starts_with(texts, "0000"))))
    mask = mask.fill_null(False)
    return (moments.cast(pa.date32()) if kind == "date" else moments.cast(target)), mask


def constant(text: str, n: int) -> pa.Array:
    """n copies of one string, without building a Python list of n items."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([text], pa.string())).cast(pa.string())


@dataclass
class ReadResult:
    staged: pa.Table
    quarantine: pa.Table
    rows: int
    rows_per_file: dict[str, int]
    normalised: dict[str, dict[str, int]]
    extra_columns: list[str]
    missing_optional: list[str]
    hidden_sheets: dict[str, list[str]] = field(default_factory=dict)  # file -> hidden sheets not read


def quarantine_schema(spec: Feed) -> pa.Schema:
    return pa.schema([(c.name, pa.string()) for c in spec.columns] + [("_row", pa.int64()), ("_file", pa.string()), ("reason", pa.string())])


def staged_schema(spec: Feed) -> pa.Schema:
    return pa.schema(list(spec.arrow_schema()) + [
        pa.field("_row", pa.int64()), pa.field("_file", pa.string()), pa.field("_defects", pa.list_(FIELD_DEFECT)),
    ])


def _defects_column(cell_errors: dict[int, list[dict]], n: int) -> pa.Array:
    """The `_defects` helper column: each row's untypable cells, null for a clean row."""
    if not cell_errors:
        return pa.nulls(n, pa.list_(FIELD_DEFECT))
    defects: list[list[dict] | None] = [None] * n
    for pos, cells in cell_errors.items():
        defects[pos] = cells
    return pa.array(defects, pa.list_(FIELD_DEFECT))


def read_delivery(spec: Feed, paths: list[Path], settings: Settings | None = None) -> ReadResult:
    """Read, map, normalise and type every file of one delivery."""
    texts: list[pa.Table] = []
    malformed: list[dict] = []
    extra: list[str] = []
    missing_optional: list[str] = []
    per_file: dict[str, int] = {}
    hidden: dict[str, list[str]] = {}
    for path in paths:
        tf = read_text_file(path, settings)
        if tf.hidden_sheets:
            hidden[tf.name] = tf.hidden_sheets
        found, file_extra, file_missing = map_headers(spec, tf)
        extra += [h for h in file_extra if h not in extra]
        missing_optional += [h for h in file_missing if h not in missing_optional]
        n = tf.table.num_rows
        cols = {
            c.name: tf.table[found[c.name]] if c.name in found else constant("", n)
            for c in spec.columns
        }
        cols["_row"] = tf.table["_row"]
        cols["_file"] = constant(tf.name, n)
        texts.append(pa.table(cols))
        inverse = {v: k for k, v in found.items()}
        for row, reason, cells in tf.malformed:
            record = {c.name: None for c in spec.columns}
            for j, cell in enumerate(cells):
                if f"c{j}" in inverse:
                    record[inverse[f"c{j}"]] = cell
            malformed.append({**record, "_row": row, "_file": tf.name, "reason": reason})
        per_file[tf.name] = n + len(tf.malformed)

    # The files' text stays in its chunks: a column is combined only while it is typed (a
    # province's social-insurance delivery is 12M rows; a combined copy of every column
    # doubled the stage's peak).
    original = pa.concat_tables(texts)
    texts.clear()
    n = original.num_rows
    typed: dict[str, pa.Array] = {}
    normalised: dict[str, dict[str, int]] = {}
    cell_errors: dict[int, list[dict]] = {}   # position -> its untypable cells, in column order
    bad_rows: set[int] = set()
    rows = original["_row"].to_numpy()
    for col in spec.columns:
        raw = original[col.name].combine_chunks() if original[col.name].num_chunks else pa.array([], pa.string())
        values, counts = normalise_column(col, raw)
        if counts:
            normalised[col.name] = counts
        column, indices, errors = type_column(col, values)
        typed[col.name] = column
        if indices is None:
            continue
        bad_codes = pa.array([e is not None for e in errors], pa.bool_())
        bad_positions = pc.indices_nonzero(bad_codes.take(indices)).to_pylist()
        idx = indices.to_numpy(zero_copy_only=False)
        for pos in bad_positions:
            text = raw[pos].as_py()
            reason = f'{col.header} "{text}" {errors[idx[pos]]}'
            cell_errors.setdefault(pos, []).append({"column": col.name, "value": text, "reason": reason})
        if col.name in spec.row_columns:
            bad_rows.update(bad_positions)

    bad = sorted(bad_rows)
    keep = np.ones(n, dtype=bool)
    keep[bad] = False
    staged = pa.table({**typed, "_row": original["_row"], "_file": original["_file"],
                       "_defects": _defects_column(cell_errors, n)}, schema=staged_schema(spec))
    staged = staged.filter(pa.array(keep)) if bad else staged
    quarantined = original.take(pa.array(bad, pa.int64())) if bad else original.slice(0, 0)
    reasons = ["；".join(f"第{rows[p]}行 {e['reason']}" for e in cell_errors[p]) for p in bad]
    quarantined = quarantined.append_column("reason", pa.array(reasons, pa.string()))
    if malformed:
        quarantined = pa.concat_tables([quarantined, pa.Table.from_pylist(malformed, schema=quarantine_schema(spec))])
    quarantined = quarantined.cast(quarantine_schema(spec))
    return ReadResult(staged, quarantined, n + len(malformed), per_file, normalised, extra, missing_optional, hidden)


# --------------------------------------------------------------------------
# atomic writes


def write_parquet(table: pa.Table, path: Path) -> None:
    files.atomic_write_parquet(path, table)


def write_json(data: dict, path: Path) -> None:
    files.atomic_write_json(path, data, default=str)
