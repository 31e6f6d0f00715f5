"""The one reader of files the outside world sends: feed deliveries (ingest),
name lists (namelist) and returned files (returns) go through it.

- `check_limits(path, settings)`: before a received file is read whole, it is
  refused, without decompressing more than one chunk at a time, when it is over
  `max_file_mb`, when it is a zip (an .xlsx) whose entries declare more than
  `max_unzipped_mb` in total or one entry a compression ratio typical of a zip
  bomb, or when a worksheet has more than `max_rows` rows (its `<dimension
  ref>` first, then the `<row>` elements themselves, streamed, because a
  dimension can lie or be absent). The worksheets are decompressed 1 MiB at a
  time, counting bytes, so a zip whose sizes lie is refused too.
- `read_workbook(path, settings)`: the limits, then calamine (it skips rows
  that carry only formatting and gives formulas' cached values; openpyxl took
  half a minute and 600 MB on a sheet formatted down to row 1,048,576). A
  legacy .xls (OLE2) is read in a forked child under an address-space limit:
  a damaged BIFF record can make calamine ask for hundreds of GB, and Rust
  then aborts the process where no `except` can catch it; here only the child
  dies. Only visible sheets are read: a hidden or very hidden sheet is never
  what a department means to send (typically last year's version kept out of
  sight); the skipped names come back so the answer can say so.
- `read_received(path, settings)`: the same for a file whose kind is judged by
  its bytes, never its name (zip or OLE2: a workbook; HTML, PDF, images:
  refused; otherwise CSV text), for name lists and returned files.
- `csv_encodings(head)` / `decode_text(data, name)`: a BOM means UTF-8;
  otherwise strict UTF-8 first, GB18030 (a superset of GBK and GB2312) second;
  neither: `undecodable(name)`, one Chinese reason for every reader.
- `cell_text(value)`: one cell as the text a department meant.

Every refusal is an `Unreadable` whose message is the Chinese reason the
sender reads; callers wrap it in their own error unchanged.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pipelines.config import Settings, load_settings
from pipelines.safety import mask_text

ZIP_MAGIC = b"PK\x03\x04"
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
UTF8_BOM = b"\xef\xbb\xbf"
XLS_CHILD_HEADROOM = 1 << 30   # address space a child reading an .xls may add to its parent's
MB = 1 << 20
CHUNK = 1 << 20
# Deflate cannot do better than ~1032:1; real worksheets compress 5-30:1,
# a sheet of empty styled rows ~100:1. Above this an entry is a bomb.
MAX_RATIO = 400
RATIO_FLOOR = 10 * MB      # small entries may compress as they like
_DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="[A-Z]*\$?(\d+)(?::\$?[A-Z]*\$?(\d+))?"')
_ROW_TAGS = (b"<row ", b"<row>", b"<row/>", b":row ", b":row>", b":row/>", b"<row\n", b"<row\t", b"<row\r")
_TAIL = 16                 # bytes kept between chunks so a tag cut in two is still seen


class Unreadable(ValueError):
    """A received file cannot be read; the message is the Chinese reason for the sender."""


class LimitExceeded(Unreadable):
    """A received file is over a configured resource limit."""


@dataclass
class Received:
    """What was read from one file: its visible sheets, and the hidden ones skipped."""
    format: str                                    # xlsx (any zip workbook) | xls | csv
    sheets: list[tuple[str, list[list]]]           # (sheet name, rows), workbook order; a CSV is one sheet ""
    hidden: list[str] = field(default_factory=list)  # hidden and very hidden sheets, not read

    @property
    def notice(self) -> str:
        """Chinese, for the answer to the sender: which hidden sheets were skipped ("" when none)."""
        return hidden_sheets_notice(self.hidden)


def hidden_sheets_notice(names: list[str]) -> str:
    if not names:
        return ""
    return f"隐藏的工作表{'、'.join(f'「{n}」' for n in names)}未读取（只读取可见的工作表）"


# ---------------------------------------------------------------- limits

def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def _count_rows(data: bytes) -> int:
    """`<row …>` elements (also with a namespace prefix) in a piece of sheet XML; bytes.count, no parsing."""
    return sum(data.count(tag) for tag in _ROW_TAGS)


def check_limits(path: Path | str, settings: Settings) -> None:
    """Raise LimitExceeded (Chinese reason) when `path` is over a limit; return otherwise.

    A file that is not a zip is only checked for its size (an OLE2 .xls is
    capped at 65,536 rows by its format); a corrupt zip is left to the
    reader, which refuses it with its own reason.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > settings.max_file_mb * MB:
        raise LimitExceeded(
            f"文件「{path.name}」大小为 {_mb(size)}，超过上限 {settings.max_file_mb} MB，未处理；请拆分后重新报送"
        )
    with open(path, "rb") as fh:
        if fh.read(4) != ZIP_MAGIC:
            return
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    with zf:
        _check_zip(path.name, zf, settings)


def _check_zip(name: str, zf: zipfile.ZipFile, settings: Settings) -> None:
    limit = settings.max_unzipped_mb * MB
    infos = zf.infolist()
    declared = sum(i.file_size for i in infos)
    if declared > limit:
        raise LimitExceeded(
            f"文件「{name}」解压后为 {_mb(declared)}，超过上限 {settings.max_unzipped_mb} MB，未处理；"
            "请删除无用的工作表或格式后重新报送"
        )
    for info in infos:
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise LimitExceeded(
                f"文件「{name}」的压缩比异常（{info.filename} 压缩 {info.compress_size} 字节、解压 {_mb(info.file_size)}），"
                "疑似压缩炸弹，未处理"
            )
    budget = limit
    for info in infos:
        if not (info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml")):
            continue
        budget = _check_sheet(name, zf, info, settings, budget)


def _check_sheet(name: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, settings: Settings, budget: int) -> int:
    sheet = info.filename.rsplit("/", 1)[-1]
    too_many = (f"文件「{name}」的工作表 {sheet} 超过 {settings.max_rows:,} 行的上限，未处理；"
                "请删除多余的行（包括只有格式没有内容的行）后重新报送")
    rows = 0
    tail = b""
    first = True
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(CHUNK)
                budget -= len(chunk)
                if budget < 0:
                    raise LimitExceeded(
                        f"文件「{name}」解压后超过上限 {settings.max_unzipped_mb} MB（实际内容大于文件声明），未处理"
                    )
                data = tail + chunk
                if first:
                    first = False
                    m = _DIMENSION.search(data[:8192])
                    if m and int(m.group(2) or m.group(1)) > settings.max_rows:
                        raise LimitExceeded(too_many)
                # a tag cut in two at the chunk's end is counted with the next chunk
                cut = len(data)
                if chunk:
                    last = data.rfind(b"<", len(data) - _TAIL)
                    cut = last if last != -1 else cut
                rows += _count_rows(data[:cut])
                if rows > settings.max_rows:
                    raise LimitExceeded(too_many)
                if not chunk:
                    break
                tail = data[cut:]
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError):
        return budget  # corrupt, encrypted or unsupported compression: the reader refuses it
    return budget


def _checked_bytes(path: Path, settings: Settings | None) -> bytes:
    try:
        check_limits(path, settings or load_settings())
        return path.read_bytes()
    except OSError:
        raise Unreadable(f"文件「{path.name}」无法读取") from None


# ---------------------------------------------------------------- workbooks

def read_workbook(path: Path | str, settings: Settings | None = None, first_only: bool = False) -> Received:
    """The visible sheets of a workbook (`first_only`: the first visible one), read
    with calamine after the limits. Raises Unreadable (over a limit, password,
    damaged or not a workbook at all)."""
    path = Path(path)
    return _workbook(_checked_bytes(path, settings), path.name, first_only)


def _workbook(data: bytes, name: str, first_only: bool) -> Received:
    if not data.startswith(OLE2_MAGIC):
        return _calamine(data, name, first_only)
    if "EncryptedPackage".encode("utf-16-le") in data[:65536]:
        raise _password(name)  # an encrypted .xlsx is an OLE2 container
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read_in_child, args=(data, name, first_only, sender), daemon=True)
    child.start()
    sender.close()
    try:
        kind, payload = receiver.recv()
    except EOFError:
        kind, payload = "died", None
    finally:
        receiver.close()
        child.join()
    if kind == "ok":
        return payload
    raise Unreadable(payload if kind == "refused" else _damaged(name))


def _password(name: str) -> Unreadable:
    return Unreadable(f"工作簿「{name}」设有打开密码，无法读取，请取消密码后重新报送")


def _damaged(name: str) -> str:
    return f"文件「{name}」已损坏或不完整，无法作为Excel工作簿打开"


def _is_reader_failure(exc: BaseException) -> bool:
    """True for an error calamine raised on a bad file: any Exception, and a Rust
    panic (pyo3's PanicException derives from BaseException); False for
    KeyboardInterrupt / SystemExit, which must propagate."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _calamine(data: bytes, name: str, first_only: bool) -> Received:
    import python_calamine

    try:
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        meta = book.sheets_metadata
        visible = [m.name for m in meta if m.visible == python_calamine.SheetVisibleEnum.Visible]
        hidden = [m.name for m in meta if m.visible != python_calamine.SheetVisibleEnum.Visible]
        names = visible[:1] if first_only else visible
        sheets = [(n, book.get_sheet_by_name(n).to_python(skip_empty_area=False)) for n in names]
    except python_calamine.PasswordError:
        raise _password(name) from None
    except BaseException as exc:  # zip/xml errors of several kinds, and panics
        if not _is_reader_failure(exc):
            raise
        raise Unreadable(_damaged(name)) from exc
    return Received("xls" if data.startswith(OLE2_MAGIC) else "xlsx", sheets, hidden)


def _read_in_child(data: bytes, name: str, first_only: bool, sender) -> None:
    import faulthandler
    import resource

    faulthandler.disable()  # an abort here is expected and answered by the parent: no fatal-error dump
    try:
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = in_use + XLS_CHILD_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):
        pass
    try:
        sender.send(("ok", _calamine(data, name, first_only)))
    except Unreadable as exc:
        sender.send(("refused", str(exc)))
    except BaseException:  # anything else (MemoryError under the limit): the parent says "damaged"
        sender.send(("died", None))
    finally:
        sender.close()


# ---------------------------------------------------------------- text

def csv_encodings(head: bytes) -> list[str]:
    """The encodings to try, in order, for a text file starting with `head`."""
    return ["utf-8-sig"] if head.startswith(UTF8_BOM) else ["utf-8", "gb18030"]


def undecodable(name: str) -> Unreadable:
    return Unreadable(f"文件「{name}」的编码无法识别（既不是 UTF-8 也不是 GB18030/GBK），请以 UTF-8 或 GBK 编码重新导出")


def bad_csv(name: str, exc: BaseException) -> Unreadable:
    return Unreadable(f"文件「{name}」不是有效的 CSV：{mask_text(exc)}；请在Excel中另存为“.xlsx”后重新报送")


def decode_text(data: bytes, name: str) -> str:
    for encoding in csv_encodings(data[:3]):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise undecodable(name)


def _csv_rows(data: bytes, name: str) -> list[list[str]]:
    text = decode_text(data, name)
    if "\x00" in text:
        raise Unreadable(f"文件「{name}」的格式无法识别：既不是Excel工作簿，也不是CSV文本")
    first = text.split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    try:  # newline="": a lone CR ends a record instead of raising
        return [list(r) for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]
    except csv.Error as exc:
        raise bad_csv(name, exc) from None


def read_received(path: Path | str, settings: Settings | None = None, first_only: bool = False) -> Received:
    """A workbook or CSV judged by its bytes (see the module's docstring), cells
    that are empty or only white space as None. Raises Unreadable."""
    path = Path(path)
    data = _checked_bytes(path, settings)
    if not data.strip():
        raise Unreadable(f"文件「{path.name}」为空")
    if data.startswith((ZIP_MAGIC, OLE2_MAGIC)):
        book = _workbook(data, path.name, first_only)
    else:
        head = data[:2048].lstrip(UTF8_BOM + b" \t\r\n").lower()
        if head.startswith((b"<html", b"<!doctype", b"<table", b"<?xml", b"<meta")):
            raise Unreadable(f"文件「{path.name}」实为网页（HTML/XML）格式而非Excel工作簿，请在Excel中另存为“.xlsx”后重新报送")
        if data.startswith((b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"Rar!", b"7z")):
            raise Unreadable(f"文件「{path.name}」不是Excel工作簿或CSV表格")
        book = Received("csv", [("", _csv_rows(data, path.name))])
    book.sheets = [(n, [[None if isinstance(v, str) and not v.strip() else v for v in row] for row in rows])
                   for n, rows in book.sheets]
    return book


# ---------------------------------------------------------------- cells

def cell_text(value) -> str:
    """One spreadsheet / database value as the text a department meant.

    Excel keeps numbers as binary doubles, so a money cell comes back as a
    float: repr() gives the shortest text that round-trips, which is what the
    department typed for any value with at most 15 significant digits; that
    text goes through Decimal, never arithmetic on the float.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
