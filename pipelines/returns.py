"""Handlers for the files that come back into the inbox: confirmations, reviews,
objections, payments, recoveries (追回) and their receipts. Each moves ledger rows (pipelines.ledger) and reports
per row; the inbox (pipelines/inbox.py) does the exactly-once mechanics.

Decisions:
- Each row is applied in its own transaction: a row that does not fit is
  refused with a Chinese reason and changes nothing, the rows that fit apply.
- Rows whose key cells are all empty (a 合计 line, a 制表单位 line, blank
  lines) are skipped silently; a file with no usable header or no data row is
  refused whole.
- Objections: a row without 处理结果 opens an objection (approved ->
  objected); 维持 (objection upheld) moves objected -> rejected, 撤销
  (objection dismissed) moves objected -> approved. A row that carries both
  the objection and its 处理结果 for an approved result records both moves.
  An objection on a result that is already `scheduled` (on a payout list) or
  `paid` is refused: lifecycle.md has no such transition, so the finance
  bureau must stop the payment outside the pipeline; the reason says so.
- Reviews: 不通过 needs a 审核意见; a row with 审核结果 left empty is
  reported as not processed (the department may send it again later).
  The 复核表 of a suspended result comes back the same way: 通过 (an override
  of the re-check) needs a 审核意见 too; 不通过 rejects it.
- Confirmations: a 确认申领 row needs 信用承诺 = 已承诺, a 收款户名 equal to
  the registered name (the ledger's, compared as name lists compare names), a
  开户银行 and an 8-32 digit 银行账号; every reason it breaks is listed. The
  account is kept without spaces and hyphens. 放弃 needs none of them.
- Recoveries: 追回金额 may be part of what was paid (more than zero, at most
  the amount paid); the receipt's 实收金额 must equal it. A recovered result
  stays `recovered`: nothing moves it again, so it is never paid again.
- Payments: the amount must equal the ledger's and the batch must be the one
  the row was scheduled on; a row already paid is refused ("不重复支付").
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable

from pipelines import intake, ledger, received, safety, warehouse
from pipelines.config import Settings
from pipelines.intake import IntakeResult, RowOutcome
from pipelines.ledger import Source
from pipelines.namelist import name_key
from pipelines.received import cell_text
from pipelines.outputs import review as review_sheet
from pipelines.uscc import normalise_code

FINANCE = "区财政局"
USCC, POLICY, PERIOD = "统一社会信用代码", "政策编号", "期次"
KEY = (USCC, POLICY, PERIOD)
HEADER_SCAN_ROWS = 30


class Refused(Exception):
    """The whole file is refused (Chinese reason)."""


# ---------------------------------------------------------------- reading
# A small header-finding reader of our own over pipelines/received.py (the one
# reader of received files); pipelines/namelist.py has the general
# messy-workbook header hunt, to be merged with this one later.

SUFFIXES = (".xlsx", ".xlsm", ".xls", ".csv", ".txt")


def _clean_header(value: object) -> str:
    return "".join(text(value).split())


@dataclass
class Table:
    headers: list[str]
    rows: list[tuple[int, dict]]  # (row number the sender sees, header -> cell)
    notice: str = ""              # Chinese: hidden sheets that were not read ("" when none)


def read_table(path: Path, required: tuple[str, ...],
               alternatives: tuple[tuple[str, ...], ...] = (),
               settings: Settings | None = None) -> Table:
    """Find the header row (title rows above it are tolerated) of the first
    visible sheet holding `required` and one of `alternatives` (each a full set)."""
    if path.suffix.lower() not in SUFFIXES:
        raise Refused(f"不支持的文件类型“{path.suffix}”，请报送 xlsx、xls 或 csv 文件")
    try:
        book = received.read_received(path, settings, first_only=True)
    except received.Unreadable as exc:
        raise Refused(str(exc)) from None
    raw = list(enumerate(book.sheets[0][1] if book.sheets else [], start=1))
    for _, cells in raw[:HEADER_SCAN_ROWS]:
        headers = [_clean_header(c) for c in cells]
        present = set(headers)
        if set(required) <= present and (not alternatives or any(set(a) <= present for a in alternatives)):
            break
    else:
        need = "、".join(required + (alternatives[0] if alternatives else ()))
        raise Refused(f"未找到表头：表格须包含列 {need}" + (f"；{book.notice}" if book.notice else ""))
    header_at = next(i for i, (_, c) in enumerate(raw) if [_clean_header(x) for x in c] == headers)
    rows = []
    for rownum, cells in raw[header_at + 1:]:
        values = {h: (cells[j] if j < len(cells) else None) for j, h in enumerate(headers) if h}
        rows.append((rownum, values))
    return Table(headers, rows, book.notice)


def text(value: object) -> str:
    """A cell as text (received.cell_text), NFKC-normalised and stripped."""
    return unicodedata.normalize("NFKC", cell_text(value)).strip()


def money(value: object) -> Decimal:
    """An amount as sent (number, "5,000.00", "5000元"); ValueError when it is not one."""
    if value is None or value == "":
        raise ValueError("empty")
    cleaned = text(value).replace(",", "").replace("，", "").replace("元", "").replace("¥", "")
    try:
        amount = Decimal(cleaned)
    except InvalidOperation as exc:
        raise ValueError(cleaned) from exc
    if not amount.is_finite():
        raise ValueError(cleaned)
    return amount


def day(value: object) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    t = text(value).replace("/", "-").replace(".", "-")
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y年%m月%d日", "%Y%m%d"):
        try:
            return datetime.strptime(t, fmt).date()
        except ValueError:
            continue
    raise ValueError(t)


class Unreadable(ValueError):
    """A cell that is not what its column needs; its message is the Chinese reason."""


def cell(values: dict, header: str, parse: Callable[[object], object]):
    """One cell parsed (money, day), or Unreadable naming the column and the value as sent."""
    try:
        return parse(values.get(header))
    except ValueError:
        raise Unreadable(f"{header}“{text(values.get(header))}”无法识别") from None


# ---------------------------------------------------------------- the common loop

@dataclass
class Applied:
    error: str | None
    amount: Decimal | None = None
    department: str | None = None


RowFn = Callable[[object, dict, Source], Applied]


def _key(values: dict, headers: tuple[str, str, str] = KEY) -> tuple[str, str, str]:
    return (text(values.get(headers[1])), text(values.get(headers[2])),
            normalise_code(values.get(headers[0])))


def _missing_key(key: tuple[str, str, str]) -> str | None:
    names = [n for n, v in zip((POLICY, PERIOD, USCC), key) if not v]
    return f"{'、'.join(names)}为空" if names else None


def _footer(values: dict) -> bool:
    """The 合计 / 制表单位 lines our own workbooks end with."""
    first = text(next(iter(values.values()), None))
    return first.startswith(("合计", "制表单位", "制表日期"))


def _run(settings: Settings, path: Path, sha256: str, required: tuple[str, ...], fn: RowFn,
         alternatives: tuple[tuple[str, ...], ...] = (), key_cells: tuple[str, ...] = KEY,
         department: str | None = None) -> IntakeResult:
    try:
        table = read_table(Path(path), required, alternatives, settings)
    except Refused as exc:
        return IntakeResult(accepted=False, reason=str(exc), summary="文件未受理：" + str(exc),
                            department=department)
    rows = [(n, v) for n, v in table.rows
            if any(text(v.get(k)) for k in key_cells if k in v) and not _footer(v)]
    if not rows:
        reason = "文件中没有数据行" + (f"；{table.notice}" if table.notice else "")
        return IntakeResult(accepted=False, reason=reason, summary="文件未受理：" + reason,
                            department=department)
    engine = warehouse.connect(settings.warehouse_url)
    source = Source(file=Path(path).name, sha256=sha256)
    outcomes, total, departments = [], Decimal("0.00"), set()
    for rownum, values in rows:
        # the answer goes back by e-mail and sits in the outbox: an account shows its last four digits
        shown = {k: (safety.mask_account(v) if k in ACCOUNT_HEADERS else
                     text(v) if not isinstance(v, (int, Decimal)) else v) for k, v in values.items()}
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                applied = fn(conn, values, source)
            except BaseException:
                trans.rollback()
                raise
            # A refused row leaves nothing behind, even a first move it had made.
            (trans.rollback if applied.error else trans.commit)()
        outcomes.append(RowOutcome(row=rownum, values=shown, error=applied.error))
        if applied.error is None:
            total += applied.amount or 0
        if applied.department:
            departments.add(applied.department)
    errors = sum(1 for o in outcomes if o.error)
    summary = f"接收 {len(outcomes) - errors} 行，错误 {errors} 行，金额合计 {total:,.2f} 元"
    if table.notice:
        summary += f"；{table.notice}"
    if department is None and len(departments) == 1:
        department = departments.pop()
    return IntakeResult(accepted=True, reason=None, rows=outcomes, summary=summary,
                        department=department)


# ---------------------------------------------------------------- _confirmations

CONFIRM = {"确认申领": "confirmed", "确认": "confirmed", "申领": "confirmed",
           "放弃": "declined", "放弃申领": "declined", "不申领": "declined"}
COMMITMENT, PAYEE, BANK, ACCOUNT = "信用承诺", "收款户名", "开户银行", "银行账号"
COMMITTED = "已承诺"
ACCOUNT_HEADERS = frozenset({ACCOUNT})
ACCOUNT_DIGITS = re.compile(r"[0-9]{8,32}")


def bank_account(value: object) -> str | None:
    """The account number as the bank keeps it (spaces and hyphens removed), or
    None when that is not 8 to 32 digits. A number cell of 16 digits or more is
    refused too: Excel keeps 15 significant digits, so its last digits are lost."""
    if isinstance(value, float) and abs(value) >= 1e15:
        return None
    digits = re.sub(r"[\s\-－—]", "", text(value))
    return digits if ACCOUNT_DIGITS.fullmatch(digits) else None


def payee_refusals(values: dict, registered_name: str | None) -> tuple[list[str], dict]:
    """信用承诺制 and the payee account of a 确认申领 row (lifecycle.md): the Chinese
    reasons it is refused for, and the ledger columns it sets when it is not."""
    reasons = []
    if text(values.get(COMMITMENT)) != COMMITTED:
        reasons.append(f"未签署信用承诺（{COMMITMENT}应填写“{COMMITTED}”，确认申领须承诺所报信息真实）")
    payee = text(values.get(PAYEE))
    if not payee:
        reasons.append(f"{PAYEE}为空")
    elif registered_name and name_key(payee) != name_key(registered_name):
        reasons.append(f"{PAYEE}“{payee}”与企业登记名称“{registered_name}”不一致")
    bank = text(values.get(BANK))
    if not bank:
        reasons.append(f"{BANK}为空")
    account = bank_account(values.get(ACCOUNT))
    if account is None:
        given = text(values.get(ACCOUNT))
        shown = f"（尾号{safety.mask_account(given)[-4:]}）" if any(c.isdigit() for c in given) else ""
        reasons.append(f"{ACCOUNT}应为8至32位数字{shown}" if given else f"{ACCOUNT}为空")
    return reasons, {"commitment": COMMITTED, "payee_name": payee, "bank_name": bank, "bank_account": account}


def _confirmation(conn, values: dict, source: Source) -> Applied:
    key = _key(values)
    if (missing := _missing_key(key)):
        return Applied(missing)
    answer = text(values.get("确认结果"))
    to = CONFIRM.get(answer)
    if to is None:
        return Applied(f"确认结果“{answer}”无法识别，应填写“确认申领”或“放弃”")
    row = ledger.get(conn, key)
    payee = {}
    if to == "confirmed" and row is not None:
        reasons, payee = payee_refusals(values, row["name"])
        if reasons:
            return Applied("；".join(reasons), None, row["department"])
    when = text(values.get("确认时间"))
    note = f"企业{answer}" + (f"（{when}）" if when else "")
    if payee:
        note += f"；已签署信用承诺；收款账号尾号{payee['bank_account'][-4:]}"
    reason = ledger.transition(conn, key, to, source, row["department"] if row else None, note=note, **payee)
    return Applied(reason, row["amount"] if row and to == "confirmed" else None,
                   row["department"] if row else None)


@intake.handles("_confirmations")
def handle_confirmations(settings: Settings, path: Path, sha256: str, folder: str) -> IntakeResult:
    return _run(settings, path, sha256, KEY + ("确认结果",), _confirmation)


# ---------------------------------------------------------------- _reviews

HIDDEN = ("policy_id", "period", "uscc")
AMOUNT_HEADERS = ("兑现金额（元）", "兑现金额(元)", "兑现金额")


def _review(conn, values: dict, source: Source) -> Applied:
    if all(text(values.get(h)) for h in HIDDEN):
        key = _key(values, ("uscc", "policy_id", "period"))
    else:
        key = _key(values)
    if (missing := _missing_key(key)):
        return Applied(missing)
    result = text(values.get(review_sheet.RESULT))
    opinion = text(values.get(review_sheet.OPINION))
    if not result:
        return Applied("未填写审核结果，本行未处理")
    if result not in (review_sheet.APPROVE, review_sheet.REJECT):
        return Applied(f"审核结果“{result}”无法识别，应填写“通过”或“不通过”")
    if result == review_sheet.REJECT and not opinion:
        return Applied("审核结果为“不通过”时须填写审核意见")
    amount = None
    for h in AMOUNT_HEADERS:
        if text(values.get(_clean_header(h))):
            try:
                amount = money(values[_clean_header(h)])
            except ValueError:
                return Applied(f"兑现金额“{text(values[_clean_header(h)])}”无法识别")
            break
    row = ledger.get(conn, key)
    to = "approved" if result == review_sheet.APPROVE else "rejected"
    extra = {}
    if row is not None and row["status"] == "suspended":   # a returned 复核表
        if to == "approved" and not opinion:
            return Applied("复核结果为“通过”时须填写审核意见（说明暂缓原因已核实、同意拨付的理由）",
                           None, row["department"])
        note = f"部门复核{result}：{opinion}（暂缓原因：{row['recheck_reason']}）"
        if to == "approved":
            extra = {"recheck_override": row["recheck_reason"], "recheck_reason": None}
    else:
        note = f"部门审核{result}" + (f"：{opinion}" if opinion else "")
    reason = ledger.transition(conn, key, to, source, row["department"] if row else None,
                               amount=amount, note=note, **extra)
    return Applied(reason, row["amount"] if row and to == "approved" else None,
                   row["department"] if row else None)


@intake.handles("_reviews")
def handle_reviews(settings: Settings, path: Path, sha256: str, folder: str) -> IntakeResult:
    return _run(settings, path, sha256, (review_sheet.RESULT,), _review,
                alternatives=(HIDDEN, KEY), key_cells=HIDDEN + KEY)


# ---------------------------------------------------------------- _objections

UPHELD, DISMISSED = "维持", "撤销"


def _objection(conn, values: dict, source: Source) -> Applied:
    key = _key(values)
    if (missing := _missing_key(key)):
        return Applied(missing)
    content = text(values.get("异议内容"))
    decision = text(values.get("处理结果"))
    if decision and decision not in (UPHELD, DISMISSED):
        return Applied(f"处理结果“{decision}”无法识别，应填写“维持”（异议成立）或“撤销”（异议不成立），未处理可留空")
    row = ledger.get(conn, key)
    if row is None:
        return Applied(ledger.transition(conn, key, "objected", source, None))
    dept, status = row["department"], row["status"]
    if status in ("scheduled", "paid"):
        where = "已列入拨付清单" if status == "scheduled" else "已拨付"
        return Applied(f"该结果{where}，公示异议已不能在平台受理；如需暂停拨付，请联系{FINANCE}", None, dept)
    if status == "objected" and not decision:
        return Applied("该结果已有异议正在处理，请在处理结果栏填写“维持”或“撤销”", None, dept)
    if status == "approved":
        if not content:
            return Applied("异议内容为空", None, dept)
        reason = ledger.transition(conn, key, "objected", source, dept, note=f"公示异议：{content}")
        if reason or not decision:
            return Applied(reason, None, dept)
    elif status != "objected":
        return Applied(ledger.transition(conn, key, "objected", source, dept), None, dept)
    to = "rejected" if decision == UPHELD else "approved"
    note = ("异议成立（维持），不予兑现" if decision == UPHELD else "异议不成立（撤销），恢复审核通过")
    reason = ledger.transition(conn, key, to, source, dept, note=note + (f"；异议内容：{content}" if content else ""))
    return Applied(reason, None, dept)


@intake.handles("_objections")
def handle_objections(settings: Settings, path: Path, sha256: str, folder: str) -> IntakeResult:
    return _run(settings, path, sha256, KEY + ("异议内容",), _objection)


# ---------------------------------------------------------------- _payments

def _payment(conn, values: dict, source: Source) -> Applied:
    key = _key(values)
    if (missing := _missing_key(key)):
        return Applied(missing)
    batch = text(values.get("批次号"))
    if not batch:
        return Applied("批次号为空")
    try:
        amount, paid_on = cell(values, "实付金额", money), cell(values, "支付日期", day)
    except Unreadable as exc:
        return Applied(str(exc))
    reason = ledger.record_payment(conn, key, batch, amount, paid_on, source, FINANCE)
    return Applied(reason, amount)


@intake.handles("_payments")
def handle_payments(settings: Settings, path: Path, sha256: str, folder: str) -> IntakeResult:
    return _run(settings, path, sha256, ("批次号",) + KEY + ("实付金额", "支付日期"), _payment,
                key_cells=("批次号",) + KEY, department=FINANCE)


# ---------------------------------------------------------------- _recoveries, _recovery_receipts

def _recovery(conn, values: dict, source: Source) -> Applied:
    key = _key(values)
    if (missing := _missing_key(key)):
        return Applied(missing)
    try:
        amount = cell(values, "追回金额", money)
    except Unreadable as exc:
        return Applied(str(exc))
    reason = text(values.get("追回原因"))
    if not reason:
        return Applied("追回原因为空")
    row = ledger.get(conn, key)
    department = row["department"] if row else None
    return Applied(ledger.request_recovery(conn, key, amount, reason, source, department), amount, department)


@intake.handles("_recoveries")
def handle_recoveries(settings: Settings, path: Path, sha256: str, folder: str) -> IntakeResult:
    return _run(settings, path, sha256, KEY + ("追回金额", "追回原因"), _recovery)


def _recovery_receipt(conn, values: dict, source: Source) -> Applied:
    key = _key(values)
    if (missing := _missing_key(key)):
        return Applied(missing)
    try:
        amount, received_on = cell(values, "实收金额", money), cell(values, "到账日期", day)
    except Unreadable as exc:
        return Applied(str(exc))
    return Applied(ledger.record_recovery_receipt(conn, key, amount, received_on, source, FINANCE), amount)


@intake.handles("_recovery_receipts")
def handle_recovery_receipts(settings: Settings, path: Path, sha256: str, folder: str) -> IntakeResult:
    return _run(settings, path, sha256, KEY + ("实收金额", "到账日期"), _recovery_receipt, department=FINANCE)


# ---------------------------------------------------------------- _applications (在线申请, manual policies)

APPLY_AMOUNT, APPLY_TIME = "申请金额", "申请时间"


def registered_names(settings: Settings, usccs: set[str]) -> dict[str, str]:
    """uscc -> registered name, from the newest night's portrait (an enterprise absent
    or not registered there is not in the registry)."""
    import pyarrow.parquet as pq

    with warehouse.connect(settings.warehouse_url).connect() as conn:
        newest = warehouse.newest_night(conn)
    path = settings.portrait_path(newest) if newest else None
    if not usccs or path is None or not path.exists():
        return {}
    rows = pq.read_table(path, columns=["uscc", "name", "registered"],
                         filters=[("uscc", "in", sorted(usccs))]).to_pylist()
    return {r["uscc"]: r["name"] for r in rows if r["registered"] and r["name"]}


def _application(policies: dict, names: dict[str, str], seen: set, conn, values: dict, source: Source) -> Applied:
    key = _key(values)
    if (missing := _missing_key(key)):
        return Applied(missing)
    if key in seen:   # (a replayed file is recognised by its hash: only a second row needs this)
        return Applied("重复申请：同一文件中已有该企业本政策本期次的申请，同一期次只能申请一次")
    seen.add(key)
    policy_id, period, uscc = key
    policy = policies.get(policy_id)
    if policy is None:
        return Applied(f"未知政策编号“{policy_id}”：政策条件库中没有该政策")
    if policy.kind != "manual":
        return Applied(f"政策 {policy_id}“{policy.name}”不是暂时难以数据化（人工核定）类政策，不受理在线申请："
                       "符合条件的企业经数据比对后将收到短信通知", department=policy.department)
    if period != str(policy.period):
        return Applied(f"期次“{period}”与政策 {policy_id} 的期次“{policy.period}”不符", department=policy.department)
    try:
        amount = warehouse.to_money(cell(values, APPLY_AMOUNT, money))
        applied_on = cell(values, APPLY_TIME, day)
    except Unreadable as exc:
        return Applied(str(exc), department=policy.department)
    reasons = []
    if applied_on is None:
        reasons.append(f"{APPLY_TIME}为空")
    if amount <= 0:
        reasons.append(f"{APPLY_AMOUNT}应大于零")
    elif policy.max_amount is not None and amount > policy.max_amount:
        reasons.append(f"{APPLY_AMOUNT} {amount:,.2f} 元超过该政策单户申请上限 {policy.max_amount:,.2f} 元")
    name = names.get(uscc)
    if name is None:
        reasons.append(f"统一社会信用代码 {uscc} 不在市场主体登记库中（或未登记），请核对")
    refusals, payee = payee_refusals(values, name)
    reasons += refusals
    if reasons:
        return Applied("；".join(reasons), department=policy.department)
    reason = ledger.apply_online(conn, key, amount, applied_on, source, policy.name, policy.department, name,
                                 payee, policy.publicity_days)
    return Applied(reason, None if reason else amount, policy.department)


@intake.handles("_applications")
def handle_applications(settings: Settings, path: Path, sha256: str, folder: str) -> IntakeResult:
    import functools

    from pipelines.policies import load_dir

    policies = {p.id: p for p in load_dir(settings.policies)[0]}
    usccs = set()
    try:
        usccs = {_key(v)[2] for _, v in read_table(Path(path), KEY, (), settings).rows}
    except Refused:
        pass   # _run refuses the file with the reason
    names = registered_names(settings, usccs)
    return _run(settings, path, sha256, KEY + (APPLY_AMOUNT, APPLY_TIME), functools.partial(_application, policies, names, set()))
