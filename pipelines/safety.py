"""Guards for what the outside world sends, and for what leaves the pipeline.

- `check_workbook_limits(path, settings)`: called by ingest, namelist and
  returns before a received file is opened with calamine / openpyxl / xlrd.
  It refuses, with a Chinese reason and without decompressing more than one
  chunk at a time, a file over `max_file_mb`, an .xlsx (any zip) whose
  entries declare more than `max_unzipped_mb` in total or one entry a
  compression ratio typical of a zip bomb, and a worksheet with more than
  `max_rows` rows (its `<dimension ref>` first, then the `<row>` elements
  themselves, streamed, because a dimension can lie or be absent). The
  worksheets are decompressed (1 MiB at a time, counting bytes) so a zip
  whose sizes lie is refused too.
- `mask_phone`, `mask_name`, `mask_text` and `MaskingFilter`: phone numbers
  and personal names never reach logs or the run report in clear.
- `read_sheets(source)`: the one way received workbooks are read (calamine);
  a legacy .xls is read in a child process under a memory limit, because a
  damaged BIFF file can make calamine abort the whole process.
"""
from __future__ import annotations

import logging
import os
import re
import traceback
import zipfile
import zlib
from pathlib import Path

from pipelines.config import Settings

ZIP_MAGIC = b"PK\x03\x04"
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
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


class LimitExceeded(ValueError):
    """A received file is over a configured resource limit; the message is Chinese."""


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def _count_rows(data: bytes) -> int:
    """`<row …>` elements (also with a namespace prefix) in a piece of sheet XML; bytes.count, no parsing."""
    return sum(data.count(tag) for tag in _ROW_TAGS)


def check_workbook_limits(path: Path | str, settings: Settings) -> None:
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


def is_reader_failure(exc: BaseException) -> bool:
    """True for an error a file reader raised on a bad file: any Exception, and a
    Rust panic inside calamine (pyo3's PanicException derives from BaseException);
    False for KeyboardInterrupt / SystemExit, which must propagate."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


# ---------------------------------------------------------------- masking

# A mainland mobile number (11 digits from 1[3-9]) not inside a longer number
# (a USCC or an amount is left alone).
_MOBILE = re.compile(r"(?<![0-9A-Za-z])(1[3-9]\d)(\d{4})(\d{4})(?![0-9A-Za-z])")


def mask_phone(value: object) -> str:
    """`13812345678` -> `138****5678`; other text: all but the last 4 digits hidden."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    m = _MOBILE.fullmatch(text)
    if m:
        return f"{m.group(1)}****{m.group(3)}"
    digits = len(text)
    return "*" * max(digits - 4, 0) + text[-4:] if digits > 4 else "*" * digits


def mask_name(value: object) -> str:
    """A personal name: `张三` -> `张*`, `欧阳娜娜` -> `欧***`."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    return text[0] + "*" * max(len(text) - 1, 1)


def mask_text(text: object) -> str:
    """Free text (a log line, a reason) with every mobile number masked."""
    return _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", "" if text is None else str(text))


class MaskingFilter(logging.Filter):
    """Masks mobile numbers in a record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        record.msg, record.args = mask_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


_FILTER = MaskingFilter()


def mask_logger(logger: logging.Logger | logging.Handler) -> None:
    """Attach the masking filter once (to a logger: its own records; to a handler: all it writes)."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


# ---------------------------------------------------------------- reading workbooks

class UnreadableWorkbook(Exception):
    """The reader died on the file (a damaged legacy workbook)."""


def read_sheets(source: Path | bytes, first_only: bool = False) -> list[tuple[str, list[list]]]:
    """(sheet name, rows) of a workbook, read with calamine. calamine's own
    exceptions (PasswordError, CalamineError, a panic) reach the caller as they
    are. A legacy .xls (OLE2) is read in a forked child with an address-space
    limit: a damaged BIFF record can make calamine ask for hundreds of GB, and
    Rust aborts the process where no `except` can catch it; here only the
    child dies and the caller gets UnreadableWorkbook."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data.startswith(OLE2_MAGIC):
        return _calamine_sheets(data, first_only)
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read_in_child, args=(data, first_only, sender), daemon=True)
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
    if kind == "error":
        import python_calamine

        name, message = payload
        error = getattr(python_calamine, name, None)
        if isinstance(error, type) and issubclass(error, Exception):
            raise error(message)
        raise UnreadableWorkbook(f"{name}: {message}")
    raise UnreadableWorkbook(f"the reader died on the file (exit code {child.exitcode})")


def _calamine_sheets(data: bytes, first_only: bool) -> list[tuple[str, list[list]]]:
    import io

    import python_calamine

    book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
    names = book.sheet_names[:1] if first_only else book.sheet_names
    return [(name, book.get_sheet_by_name(name).to_python(skip_empty_area=False)) for name in names]


def _read_in_child(data: bytes, first_only: bool, sender) -> None:
    import resource

    try:
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = in_use + XLS_CHILD_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):
        pass
    try:
        sender.send(("ok", _calamine_sheets(data, first_only)))
    except BaseException as exc:  # reported to the parent, which decides
        sender.send(("error", (type(exc).__name__, str(exc))))
    finally:
        sender.close()
