"""Security: formula neutralising on every export, the inbox never leaves the
inbox, phone numbers and personal names masked in logs and the report,
no hard-coded secrets, files not world-readable."""
from __future__ import annotations

import csv
import io
import logging
import os
import re
import stat
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from pipelines import effects, files, inbox, report, safety, validate
from pipelines.config import load_settings
from pipelines.contracts import FEEDS
from pipelines.outputs import publicity
from pipelines.outputs.workbook import Col, csv_bytes, neutralise, workbook_bytes
from tests.conftest import ROOT
from tests.hardening.test_fuzz_namelist import NOW, POLICY, make_env

HOSTILE = ["=1+1", '=HYPERLINK("http://evil.example","点此")', "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"]


# ---- formulas ----------------------------------------------------------------

def test_the_neutraliser():
    for text in HOSTILE:
        assert neutralise(text) == "'" + text
    assert neutralise("卧龙区\x1b工业路\x00") == "卧龙区工业路"     # control characters a workbook cannot hold
    assert neutralise(-5) == -5 and neutralise(Decimal("-5.00")) == Decimal("-5.00")
    assert neutralise("南阳市-卧龙区") == "南阳市-卧龙区"


def test_workbook_and_csv_writers_neutralise_text_not_numbers():
    cols = [Col("名称", "name"), Col("金额", "amount", "money"), Col("人数", "n", "int")]
    rows = [{"name": t, "amount": Decimal("-12.50"), "n": -3} for t in HOSTILE + ["a\x1bb"]]
    wb = openpyxl.load_workbook(io.BytesIO(workbook_bytes("=标题", cols, rows, unit="=单位", made_on=date(2026, 11, 26))))
    ws = wb.active
    assert ws["A1"].value == "'=标题"
    values = [ws.cell(row=r, column=1).value for r in range(4, 4 + len(rows))]
    assert values == ["'" + t for t in HOSTILE] + ["ab"]
    assert all(ws.cell(row=r, column=1).data_type == "s" for r in range(4, 4 + len(rows)))
    assert ws.cell(row=4, column=2).value == Decimal("-12.50") or ws.cell(row=4, column=2).value == -12.5
    assert ws.cell(row=4, column=2).data_type == "n" and ws.cell(row=4, column=3).value == -3
    text = csv_bytes(cols, rows).decode("utf-8-sig")
    got = list(csv.reader(io.StringIO(text)))
    assert [r[0] for r in got[1:]] == ["'" + t for t in HOSTILE] + ["ab"]
    assert got[1][1] == "-12.50"                                   # an amount is a number, not neutralised


def test_quarantine_csv_neutralises_the_departments_cells(tmp_path):
    spec = FEEDS["registry"]
    rec = {c.name: None for c in spec.columns}
    rec.update(name='=HYPERLINK("http://evil.example","点此")', address="@SUM(A1)", _row=2, _file="=x.csv",
               reason="第2行 联系电话 格式不正确")
    path = tmp_path / "q.csv"
    validate.write_quarantine_csv(spec, [rec], path)
    row = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))[1]
    assert "'=x.csv" in row and "'" + rec["name"] in row and "'@SUM(A1)" in row
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in row)


def test_effects_csv_neutralises_policy_text():
    row = effects.DidRow(policy_id="WL-1", policy_name="=cmd|' /C calc'!A0", period="2026",
                         paid_from=date(2026, 1, 1), paid_to=date(2026, 2, 1), before=None, after=date(2026, 3, 1),
                         metric=next(iter(effects.METRIC_LABELS)))
    text = effects.csv_text([row])
    cells = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))[1]
    assert cells[1] == "'=cmd|' /C calc'!A0"


def test_inbox_answer_neutralises_and_survives_control_characters(tmp_path):
    """A sender's cell with a formula or an ESC character: the file is answered
    (the ESC once made openpyxl raise and the whole inbox pass crash)."""
    s = make_env(tmp_path)
    path = s.inbox / POLICY / "list.csv"
    path.write_text("序号,统一社会信用代码,企业名称,奖补金额（元）,备注\r\n"
                    '1,=HYPERLINK("http://evil.example"),某公司,+100,\x1b坏字符\r\n', encoding="utf-8")
    old = (NOW - timedelta(hours=1)).timestamp()
    os.utime(path, (old, old))
    [r] = inbox.process(s, now=NOW)
    assert r["status"] == "rejected"
    ws = openpyxl.load_workbook(s.inbox / r["answer"]).active
    cells = [c.value for row in ws.iter_rows() for c in row]
    assert "'=HYPERLINK(\"http://evil.example\")" in cells and "'+100" in cells and "坏字符" in cells
    assert not any(isinstance(c, str) and c.startswith("=") for c in cells)


# ---- the inbox stays inside the inbox -----------------------------------------

def _settle(path: Path):
    old = (NOW - timedelta(hours=1)).timestamp()
    os.utime(path, (old, old), follow_symlinks=False)


def test_inbox_refuses_links_and_never_leaves_the_inbox(tmp_path):
    s = make_env(tmp_path / "env")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.csv"
    secret.write_text("统一社会信用代码,企业名称\r\n", encoding="utf-8")
    (s.inbox / POLICY / "link.csv").symlink_to(secret)                  # a file link
    (s.inbox / POLICY / "nested").mkdir()                                 # a folder inside a folder
    (s.inbox / POLICY / "nested" / "deep.csv").write_text("x", encoding="utf-8")
    (s.inbox / "_payments").symlink_to(outside)                           # a whole folder linked out
    (s.inbox / "loose.csv").write_text("x", encoding="utf-8")             # a file in the inbox root
    for p in [s.inbox / POLICY / "link.csv", s.inbox / "_payments", s.inbox / POLICY / "nested" / "deep.csv", s.inbox / "loose.csv"]:
        _settle(p)
    results = inbox.process(s, now=NOW)
    by_file = {r["file"]: r for r in results}
    assert by_file["link.csv"]["status"] == "rejected" and "符号链接" in by_file["link.csv"]["reason"]
    assert by_file["_payments"]["status"] == "rejected"
    assert "deep.csv" not in by_file and "loose.csv" not in by_file       # left alone, never followed
    assert secret.read_text(encoding="utf-8").startswith("统一社会信用代码")  # the target is untouched
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]     # nothing written outside
    for r in results:
        for key in ("archived_to", "answer"):
            if r.get(key):
                target = (s.inbox / r[key])
                assert target.parent.resolve().is_relative_to(s.inbox.resolve())


def test_names_from_outside_cannot_steer_a_path(tmp_path):
    assert inbox.safe_component("../../etc/passwd") == "_.._etc_passwd"
    assert inbox.safe_component("..") == "未知" and inbox.safe_component("/") == "_"
    with pytest.raises(ValueError):
        inbox._inside(tmp_path / "inbox", tmp_path / "inbox" / ".." / "escape.txt")


# ---- masking -----------------------------------------------------------------

def test_masks():
    assert safety.mask_phone("13812345678") == "138****5678"
    assert safety.mask_phone("0377-63123456") == "*********3456"
    assert safety.mask_name("张三") == "张*" and safety.mask_name("欧阳娜娜") == "欧***" and safety.mask_name("李") == "李*"
    text = "第5行 联系电话 13812345678 与 15900001111 不一致；代码 914113031234567890 金额 13812345678901"
    assert safety.mask_text(text) == ("第5行 联系电话 138****5678 与 159****1111 不一致；"
                                      "代码 914113031234567890 金额 13812345678901")


def test_logs_mask_phone_numbers_in_messages_and_tracebacks(caplog):
    logger = logging.getLogger("pipelines.test_masking")
    safety.mask_logger(logger)
    with caplog.at_level(logging.INFO, logger="pipelines.test_masking"):
        logger.info("row %s phone %s", 3, "13812345678")
        try:
            raise ValueError("bad phone 13912345678")
        except ValueError:
            logger.exception("handler failed")
    text = caplog.text
    assert "13812345678" not in text and "138****5678" in text
    assert "13912345678" not in text and "139****5678" in text


def test_inbox_logger_is_masked():
    assert any(isinstance(f, safety.MaskingFilter) for f in logging.getLogger("pipelines.inbox").filters)


def test_run_report_masks_phone_numbers(tmp_path):
    verdicts = [{"feed": "registry", "title": "企业登记信息", "department": "区市场监督管理局", "status": "rejected",
                 "reason": "文件「r.csv」不是有效的 CSV：row 3: 13812345678,张三"}]
    page = report.render(date(2026, 11, 26), "r1", verdicts, [], report.key_figures(verdicts, [], {}), None, {}, None)
    assert "13812345678" not in page and "138****5678" in page


def test_public_list_carries_no_phone_or_personal_name(tmp_path):
    row = {"policy_id": "WL-1", "name": "某公司", "uscc": "91411303MA00000000", "policy_name": "政策",
           "period": "2026", "amount": Decimal("100.00"), "publicity_from": date(2026, 11, 26),
           "publicity_to": date(2026, 12, 2), "department": "区财政局", "phone": "13812345678", "legal_rep": "张三"}
    [path] = publicity.write(tmp_path, date(2026, 11, 26), [row], "区财政局")
    cells = [c.value for r in openpyxl.load_workbook(path).active.iter_rows() for c in r if c.value is not None]
    assert not any("13812345678" in str(c) or "张三" in str(c) for c in cells)


# ---- secrets and permissions ----------------------------------------------------

SECRET = re.compile(r"""(password|passwd|secret|token|api_key)\s*[=:]\s*["'][^"'${}]{3,}["']""", re.I)


def test_no_hard_coded_secrets():
    found = []
    for folder in ("pipelines", "dags"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if SECRET.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_output_is_not_world_readable(tmp_path):
    """Reading the settings sets the umask (027) every entry point then writes with."""
    old = os.umask(0o022)
    try:
        s = load_settings({"MIANSHEN_DATA": str(tmp_path)})
        assert os.umask(0o027) & 0o027 == 0o027
        from pipelines import ingest
        from tests.ingest_helpers import AS_OF, delivery_dir
        folder = delivery_dir(s, "registry", AS_OF)
        folder.mkdir(parents=True)
        (folder / "r.csv").write_text("统一社会信用代码,企业名称,成立日期\r\n91411303MA00000000,某公司,2015-01-01\r\n",
                                      encoding="utf-8")
        (folder / "_SUCCESS").write_bytes(b"")
        ingest.ingest_feed(s, "registry", AS_OF)
        written = [p for p in list(s.work.rglob("*")) + list(s.output.rglob("*"))]
        assert written
        for p in written:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & 0o007 == 0, f"{p} is {oct(mode)}"
    finally:
        os.umask(old)


def test_a_stricter_umask_is_kept():
    old = os.umask(0o077)
    try:
        assert files.restrict_umask() == 0o077
    finally:
        os.umask(old)
