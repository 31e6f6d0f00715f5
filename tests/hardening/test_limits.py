"""Resource limits: a zip bomb, an oversized file, a sheet that claims or has
too many rows are refused in a second or two with a Chinese reason, by the
one guard (pipelines.received) that ingest, namelist and returns go through before
a workbook is opened, and without the memory a reader would have used."""
from __future__ import annotations

import dataclasses
import os
import resource
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from pipelines import ingest, namelist, received, returns
from pipelines.config import load_settings
from tests.conftest import make_settings
from tests.hardening.strategies import CJK, code
from tests.hardening.xlsx_builder import sheet, styled_workbook, write_xlsx
from tests.ingest_helpers import AS_OF, delivery_dir, settings_for

HEADER = ["统一社会信用代码", "企业名称", "奖补金额（元）"]


def bomb(path: Path, megabytes: int) -> Path:
    """An .xlsx-named zip whose one worksheet inflates to `megabytes` MB of the same byte."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as f:
            block = b"<row/>" * ((1 << 20) // 6)
            for _ in range(megabytes):
                f.write(block)
    return path


def lying_dimension(path: Path, last_row: int) -> Path:
    return write_xlsx(path, sheet([HEADER, [code(1), "某公司", 1]], dimension=f"A1:C{last_row}"))


def many_rows(path: Path, n: int) -> Path:
    """A sheet of `n` styled empty rows after a header (numbered past Excel's last row when n is big)."""
    return styled_workbook(path, HEADER, [[code(1), "某公司", 1]], n)


def refused_quickly(fn, *args, seconds: float = 2.0, megabytes: float = 64.0):
    """Run fn; return its result, asserting it took < seconds and allocated < megabytes at peak."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = fn(*args)
    finally:
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, elapsed
    assert peak < megabytes * (1 << 20), peak
    # the high-water mark of the process barely moves (KiB on Linux)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024
    return result


# ---- the guard itself --------------------------------------------------------

def test_limits_come_from_the_environment():
    s = load_settings({"MIANSHEN_MAX_FILE_MB": "5", "MIANSHEN_MAX_UNZIPPED_MB": "50", "MIANSHEN_MAX_ROWS": "1000"})
    assert (s.max_file_mb, s.max_unzipped_mb, s.max_rows) == (5, 50, 1000)
    d = load_settings({})
    assert (d.max_file_mb, d.max_unzipped_mb, d.max_rows) == (100, 500, 1_048_576)
    with pytest.raises(ValueError):
        load_settings({"MIANSHEN_MAX_ROWS": "many"})
    with pytest.raises(ValueError):
        load_settings({"MIANSHEN_MAX_FILE_MB": "0"})


def test_a_normal_workbook_passes(tmp_path):
    received.check_limits(write_xlsx(tmp_path / "ok.xlsx", sheet([HEADER, [code(1), "某公司", 1]])), load_settings({}))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    return {
        "bomb": bomb(base / "bomb.xlsx", 200),                     # 200 MB of XML in ~200 KB: ratio and size
        "dimension": lying_dimension(base / "dim.xlsx", 5_000_000),
        "rows": many_rows(base / "rows.xlsx", 1_500_000),            # 1.5 million styled empty rows
        "big": base / "big.xlsx",
    }


def test_zip_bomb_is_refused_by_its_declared_size_and_ratio(files):
    s = load_settings({"MIANSHEN_MAX_UNZIPPED_MB": "100"})
    with pytest.raises(received.LimitExceeded, match="解压后为 200.0 MB，超过上限 100 MB"):
        refused_quickly(received.check_limits, files["bomb"], s)
    s = load_settings({})                                              # 200 MB < 500 MB: the ratio says bomb
    with pytest.raises(received.LimitExceeded, match="压缩比异常"):
        refused_quickly(received.check_limits, files["bomb"], s)


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        f.truncate(3 << 20)                                            # 3 MB (sparse)
    with pytest.raises(received.LimitExceeded, match="超过上限 2 MB"):
        refused_quickly(received.check_limits, big, load_settings({"MIANSHEN_MAX_FILE_MB": "2"}), seconds=0.2)


def test_a_dimension_beyond_the_limit_is_refused_at_once(files):
    with pytest.raises(received.LimitExceeded, match="超过 1,048,576 行的上限"):
        refused_quickly(received.check_limits, files["dimension"], load_settings({}), seconds=0.2)


def test_millions_of_styled_empty_rows_are_counted_and_refused(files):
    with pytest.raises(received.LimitExceeded, match="只有格式没有内容的行"):
        refused_quickly(received.check_limits, files["rows"], load_settings({}))


def test_a_zip_whose_sizes_lie_is_not_inflated(tmp_path):
    """The central directory says the sheet is 1 KB; it inflates to 20 MB. The guard
    never inflates past the declared size (the CRC then fails: left to the reader,
    which refuses it as damaged), and no parser reads it as a list."""
    path = write_xlsx(tmp_path / "liar.xlsx", sheet([HEADER] + [[code(1), "某公司", 1]] * 200_000))
    data = bytearray(path.read_bytes())
    cd = data.find(b"PK\x01\x02" + bytes(data[data.find(b"PK\x01\x02") + 4:][:0]))
    while cd != -1:
        name_len = int.from_bytes(data[cd + 28:cd + 30], "little")
        if data[cd + 46:cd + 46 + name_len] == b"xl/worksheets/sheet1.xml":
            data[cd + 24:cd + 28] = (1024).to_bytes(4, "little")     # uncompressed size
        cd = data.find(b"PK\x01\x02", cd + 4)
    path.write_bytes(bytes(data))
    s = dataclasses.replace(load_settings({}), max_unzipped_mb=5)
    refused_quickly(received.check_limits, path, s, seconds=1)
    parsed = refused_quickly(namelist.read_name_list, path, s, seconds=5, megabytes=200)
    assert parsed.error and CJK.search(parsed.error)


# ---- each parser calls the guard ---------------------------------------------

@pytest.mark.parametrize("which", ["bomb", "dimension", "rows"])
def test_ingest_refuses_before_opening(tmp_path, files, which):
    s = settings_for(tmp_path)
    folder = delivery_dir(s, "registry", AS_OF)
    folder.mkdir(parents=True)
    (folder / "r.xlsx").write_bytes(files[which].read_bytes())
    (folder / "_SUCCESS").write_bytes(b"")
    summary = refused_quickly(ingest.ingest_feed, s, "registry", AS_OF, seconds=3)
    assert summary["status"] == "rejected" and ("上限" in summary["reason"] or "压缩" in summary["reason"])
    assert not (s.staged / "registry").exists()


@pytest.mark.parametrize("which", ["bomb", "dimension", "rows"])
def test_namelist_refuses_before_opening(tmp_path, files, which):
    parsed = refused_quickly(namelist.read_name_list, files[which], make_settings(tmp_path))
    assert parsed.error and ("上限" in parsed.error or "压缩" in parsed.error)


@pytest.mark.parametrize("which", ["bomb", "dimension", "rows"])
def test_returns_refuse_before_opening(tmp_path, files, which):
    s = make_settings(tmp_path)
    result = refused_quickly(returns.handle_confirmations, s, files[which], "0" * 64, "_confirmations")
    assert not result.accepted and ("上限" in result.reason or "压缩" in result.reason)


def test_returns_read_a_sheet_formatted_to_the_last_row_quickly(tmp_path):
    """1,048,574 styled empty rows are within the limit; calamine skips them (openpyxl took ~30 s, 600 MB)."""
    path = styled_workbook(tmp_path / "c.xlsx", ["统一社会信用代码", "政策编号", "期次", "确认结果"],
                           [[code(1), "WL-RS-2026-01", "2026", "确认申领"]], 1_048_574)
    started = time.monotonic()
    table = returns.read_table(path, ("统一社会信用代码", "政策编号", "期次", "确认结果"))
    assert time.monotonic() - started < 5
    assert [r[1]["确认结果"] for r in table.rows] == ["确认申领"]


@pytest.mark.parametrize("extra", [0, 1])
def test_the_row_count_is_exact_across_chunk_boundaries(tmp_path, extra):
    """max_rows rows pass, one more is refused (the sheet spans ~10 decompressed chunks)."""
    limit = 120_000
    path = styled_workbook(tmp_path / "r.xlsx", HEADER, [[code(1), "某公司", 1]], limit - 2 + extra)
    s = dataclasses.replace(load_settings({}), max_rows=limit)
    if extra:
        with pytest.raises(received.LimitExceeded):
            received.check_limits(path, s)
    else:
        received.check_limits(path, s)
