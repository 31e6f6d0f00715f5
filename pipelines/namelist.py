"""Name lists (名单类 policies): the messy-workbook reader and the row checks.

A department drops a workbook into `<inbox>/<policy_id>/`. Real workbooks have
title rows, merged title cells, a 序号 column, an instructions sheet before
the data, 合计 and signature rows at the bottom, amounts as `12,000.00`,
`￥3,000元` or `1.2万`, codes with spaces or in lower case, legacy `.xls`, a
CSV saved under an `.xlsx` name, and now and then the wrong file altogether.

Three layers, pure in the middle:
- `read_name_list(path) -> ParsedList` reads any such file (through
  pipelines/received.py, the one reader of received files). It never raises
  for a bad file: an unreadable or wrong file comes back with `error` set to
  a short Chinese reason (the sender reads it).
- `check_name_list(parsed, registry, policy) -> CheckResult` applies the
  contract of feeds.md (“Name lists”) row by row; no I/O.
- the edges: `handle_name_list` (the inbox handler, stores accepted rows for
  the engine) and `namelist_check_command` (the CLI `mianshen namelist check`).

Decisions where the contract is silent (for the README):
- The format is decided by the first bytes, never by the extension: zip
  (`PK\\x03\\x04`: xlsx/ods), OLE2 (`D0 CF 11 E0`: legacy xls, or a
  password-protected xlsx when it holds an `EncryptedPackage` stream), text
  (CSV in UTF-8 with or without BOM, else GB18030), HTML (a web-system
  “Excel” export: refused, it must be saved as a real workbook).
- Hidden and very hidden sheets are not read (a department's old version
  kept out of sight); the answer names them.
- The data sheet is the first visible sheet, in workbook order, with a header row
  (within its first 50 rows) holding both a 信用代码 column and a 企业名称 /
  单位名称 column. Header cells are compared after NFKC (full-width brackets
  and letters to half-width), with all whitespace and `*` removed.
- The amount column is the one whose header contains 金额 or 资金 (奖补金额
  preferred). Its unit is 元 unless the header says 万元; a cell that names
  its own unit (`1.2万`, `3000元`) overrides the header.
- Amounts are exact: numeric cells arrive from the Excel readers as binary
  floats and are converted through `repr` (the shortest text that reads back
  as the same float, i.e. what Excel displays), then rounded half-up to the
  分. A value that is more than 0.000001 away from a whole 分 (e.g. `12.345`)
  is a bad amount rather than silently rounded money; float noise such as
  0.30000000000000004 is within that tolerance.
- Rows: blank rows, rows whose code, name and amount cells are all empty
  (序号-only rows, notes), 合计/小计/总计/共计 rows and footer rows (制表人,
  审核人, 填报日期, 联系人, 单位盖章, 注： …) are skipped, provided their code
  cell does not hold something that looks like a code. Row numbers are the
  sheet's own (Excel row / CSV record number, counting from 1).
- Names agree when equal after NFKC, removing all whitespace and casefolding
  (so `卧龙区（南阳）某公司` = `卧龙区(南阳)某公司` = `卧龙区 (南阳) 某公司`).
- The amount is required for a `from_list` benefit. For a `fixed` benefit it
  is optional, but when given it must equal the policy's amount (a different
  figure means the department and the policy disagree, which a person must
  settle before anyone is paid). For benefits the engine computes (rate,
  per_head, tiered) the list's amount column is ignored. Amounts must be > 0.
- Duplicates: judged on the normalised code; the first occurrence is kept,
  every later one is an error naming the first row.
- One row may carry several errors (all are reported); the share of rows with
  at least one error above 20 % refuses the file whole. A file with no data
  rows is refused.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import intake, received, uscc
from pipelines.config import Settings, load_settings
from pipelines.contracts import MONEY
from pipelines.files import atomic_write_parquet
from pipelines.received import cell_text

BAD_ROW_THRESHOLD = Decimal("0.20")
CATEGORIES = ("invalid_uscc", "not_in_registry", "name_mismatch", "duplicate", "bad_amount", "missing_field")

# What the engine reads: work/namelists/<policy_id>/<sha256[:16]>.parquet. For
# one uscc in several files the row with the latest received_at wins.
NAMELIST_SCHEMA = pa.schema(
    [
        ("uscc", pa.string()),
        ("name", pa.string()),
        ("amount", MONEY),
        ("note", pa.string()),
        ("source", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ]
)

HEADER_SCAN_ROWS = 50
CENT = Decimal("0.01")
TEN_THOUSAND = Decimal(10000)
_CENT_TOLERANCE = Decimal("0.000001")


class NameListError(Exception):
    """A file that cannot be read as a name list; the message is the Chinese reason."""


class AmountError(ValueError):
    """An amount cell that is not an amount; the message is the Chinese reason."""


@dataclass
class ListRow:
    row: int                      # Excel row number (CSV: record number), from 1
    values: dict[str, object]     # the original cells, by the sender's header
    uscc: object = None           # the raw cells of the four contract columns
    name: object = None
    amount: object = None
    note: object = None


@dataclass
class ParsedList:
    file: str
    error: str | None = None      # Chinese: why the file cannot be read as a name list
    format: str | None = None     # xlsx | xls | csv
    sheet: str | None = None
    header_row: int | None = None
    headers: list[str] = field(default_factory=list)
    has_amount: bool = False
    amount_unit: Decimal = Decimal(1)
    rows: list[ListRow] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row, why) of non-data rows
    hidden_sheets: list[str] = field(default_factory=list)  # not read


@dataclass
class CheckedRow:
    row: int
    uscc: str
    name: str
    amount: Decimal | None
    note: str


@dataclass
class RowError:
    row: int
    category: str
    message: str


@dataclass
class CheckResult:
    file: str
    accepted: bool
    reason: str | None
    rows: list[CheckedRow] = field(default_factory=list)     # the accepted rows
    errors: list[RowError] = field(default_factory=list)
    data_rows: int = 0
    bad_rows: int = 0
    notice: str = ""              # Chinese: hidden sheets that were not read ("" when none)

    def to_json(self) -> dict:
        out = {
            "file": self.file,
            "accepted": self.accepted,
            "reason": self.reason,
            "rows": [
                {"row": r.row, "uscc": r.uscc, "name": r.name,
                 "amount": None if r.amount is None else f"{r.amount:.2f}"}
                for r in self.rows
            ],
            "errors": [{"row": e.row, "category": e.category, "message": e.message} for e in self.errors],
        }
        if self.notice:
            out["notice"] = self.notice
        return out

    def errors_by_row(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for e in self.errors:
            out.setdefault(e.row, []).append(e.message)
        return out


# ---- small pure helpers -----------------------------------------------------

def _text(value: object) -> str:
    """A cell as the text a person sees (empty for an empty cell)."""
    return cell_text(value).strip()


def norm_header(value: object) -> str:
    text = unicodedata.normalize("NFKC", _text(value))
    return "".join(text.split()).strip("*:").replace("*", "")


def name_key(value: object) -> str:
    return "".join(unicodedata.normalize("NFKC", _text(value)).split()).casefold()


_NAME_HEADERS = {"企业名称", "单位名称", "企业(单位)名称", "单位(企业)名称", "公司名称", "名称", "企业名", "市场主体名称", "纳税人名称"}
_AMOUNT_PREFERRED = ("奖补金额", "奖补资金")


def header_role(header: str) -> str | None:
    """uscc | name | amount | note | None for one normalised header cell."""
    if "信用代码" in header:
        return "uscc"
    if header in _NAME_HEADERS or header.endswith(("企业名称", "单位名称")):
        return "name"
    if ("金额" in header or "资金" in header) and not any(w in header for w in ("账号", "账户", "开户")):
        return "amount"
    if header.startswith("备注"):
        return "note"
    return None


def find_header(grid: list[list[object]]) -> tuple[int, dict[str, int], Decimal] | None:
    """(row index, role -> column index, amount unit) of the first row naming
    both a code and a name column, or None."""
    for r, row in enumerate(grid[:HEADER_SCAN_ROWS]):
        roles: dict[str, int] = {}
        amount_rank: int | None = None
        for c, cell in enumerate(row):
            h = norm_header(cell)
            role = header_role(h)
            if role is None:
                continue
            if role == "amount":
                rank = 0 if h.startswith(_AMOUNT_PREFERRED) else 1
                if amount_rank is None or rank < amount_rank:
                    roles["amount"], amount_rank = c, rank
            else:
                roles.setdefault(role, c)
        if "uscc" in roles and "name" in roles:
            unit = Decimal(1)
            if "amount" in roles and "万元" in norm_header(row[roles["amount"]]):
                unit = TEN_THOUSAND
            return r, roles, unit
    return None


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_GROUPED = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def parse_amount(value: object, unit: Decimal = Decimal(1)) -> Decimal | None:
    """An amount cell as exact 元 to the 分; None for an empty cell.

    Raises AmountError (Chinese message) for anything that is not an amount.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    factor = unit
    if isinstance(value, bool) or isinstance(value, (datetime, date, time)):
        raise AmountError(f"金额“{_text(value)}”不是数字")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise AmountError("金额不是有效数字")
        number = Decimal(repr(value))  # the shortest decimal that is this float: what Excel shows
    elif isinstance(value, Decimal):
        number = value
    else:
        raw = str(value)
        text = "".join(unicodedata.normalize("NFKC", raw).split())  # full-width digits, ￥, ，
        text = text.replace("人民币", "").replace("RMB", "").lstrip("¥$")
        if text.endswith("万元") or text.endswith("万"):
            text, factor = text.removesuffix("元").removesuffix("万"), TEN_THOUSAND
        elif text.endswith("元"):
            text, factor = text[:-1], Decimal(1)
        text = text.lstrip("¥$")
        if "," in text:
            if not _GROUPED.fullmatch(text):
                raise AmountError(f"无法识别的金额“{raw.strip()}”")
            text = text.replace(",", "")
        if not _NUMBER.fullmatch(text):
            raise AmountError(f"无法识别的金额“{raw.strip()}”")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise AmountError(f"无法识别的金额“{raw.strip()}”") from None
    amount = number * factor
    try:
        cents = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the context holds
        raise AmountError(f"金额“{_text(value)[:40]}”超出范围") from None
    if abs(amount - cents) > _CENT_TOLERANCE:
        raise AmountError(f"金额“{_text(value)}”超过两位小数（只能精确到分）")
    return cents


def code_of(value: object) -> tuple[str, str | None]:
    """(normalised code, Chinese problem or None) of a code cell."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Excel kept an all-digit code as a number: beyond 15 digits the
        # trailing digits are already lost, so the code cannot be trusted.
        shown = _text(value)
        return shown, f"统一社会信用代码“{shown}”被Excel存成了数字，末几位可能已丢失，请将该列设为文本格式后重新填写"
    code = uscc.normalise_code(value)
    if not uscc.is_valid(code):
        return code, f"统一社会信用代码“{_text(value)}”无效（应为18位，且校验位正确）"
    return code, None


_TOTAL = re.compile(r"^(总?合计|小计|总计|共计|累计)")
_FOOTER = re.compile(r"^(制表|审核|填报|填表|负责人|单位负责人|联系人|联系电话|经办人|复核|单位[(（]?盖章|盖章|日期[:：]|注[:：]|说明[:：]|备注[:：])")
_CODE_LIKE = re.compile(r"[0-9A-Z]{15,20}")


def classify_row(cells: list[object], roles: dict[str, int]) -> str | None:
    """None for a data row, else why the row is not one."""
    texts = [_text(c) for c in cells]
    if not any(texts):
        return "空行"
    def cell(role: str) -> str:
        c = roles.get(role)
        return texts[c] if c is not None and c < len(texts) else ""
    code = uscc.normalise_code(cell("uscc"))
    if _CODE_LIKE.fullmatch(code):
        return None
    compact = ["".join(t.split()) for t in texts]
    if any(_TOTAL.match(t) for t in compact):
        return "合计行"
    if any(_FOOTER.match(t) for t in compact):
        return "表尾"
    if not (cell("uscc") or cell("name") or cell("amount")):
        return "非数据行"
    return None


# ---- reading files ----------------------------------------------------------

def _unique_headers(header: list[object], width: int) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for c in range(width):
        text = _text(header[c]) if c < len(header) else ""
        text = text or f"第{c + 1}列"
        n = seen.get(text, 0) + 1
        seen[text] = n
        out.append(text if n == 1 else f"{text}({n})")
    return out


def parse_grid(file: str, sheets: list[tuple[str, list[list[object]]]]) -> ParsedList:
    """Pure: pick the data sheet and header, then the data rows."""
    for sheet, grid in sheets:
        found = find_header(grid)
        if found is None:
            continue
        h, roles, unit = found
        body = grid[h + 1:]
        width = max([len(grid[h])] + [len(row) for row in body])
        headers = _unique_headers(grid[h], width)
        keep = [c for c in range(width) if _text(grid[h][c] if c < len(grid[h]) else None) or any(c < len(r) and r[c] is not None for r in body)]
        parsed = ParsedList(file=file, sheet=sheet or None, header_row=h + 1,
                            headers=[headers[c] for c in keep], has_amount="amount" in roles, amount_unit=unit)
        for i, row in enumerate(body, start=h + 2):
            why = classify_row(row, roles)
            if why is not None:
                parsed.skipped.append((i, why))
                continue
            get = lambda role: row[roles[role]] if role in roles and roles[role] < len(row) else None  # noqa: E731
            parsed.rows.append(ListRow(
                row=i,
                values={headers[c]: (row[c] if c < len(row) else None) for c in keep},
                uscc=get("uscc"), name=get("name"), amount=get("amount"), note=get("note"),
            ))
        return parsed
    return ParsedList(file=file, error="未找到名单表头：应有“统一社会信用代码”和“企业名称”两列，可能报送了错误的文件")


def read_name_list(path: Path | str, settings: Settings | None = None) -> ParsedList:
    """Read any department workbook (xlsx, xls, CSV by content); never raises for a bad file."""
    path = Path(path)
    try:
        book = received.read_received(path, settings)
    except received.Unreadable as e:
        return ParsedList(file=path.name, error=str(e))
    parsed = parse_grid(path.name, book.sheets)
    parsed.format, parsed.hidden_sheets = book.format, book.hidden
    return parsed


# ---- checking ---------------------------------------------------------------

def amount_mode(policy: object) -> tuple[str, Decimal | None]:
    """('required' | 'fixed' | 'ignored', fixed amount) for a policy's benefit."""
    benefit = getattr(policy, "benefit", None)
    kind = getattr(benefit, "type", None)
    if kind == "from_list":
        return "required", None
    if kind == "fixed":
        return "fixed", Decimal(str(getattr(benefit, "amount")))
    return "ignored", None


def check_name_list(parsed: ParsedList, registry: pa.Table, policy: object,
                    threshold: Decimal = BAD_ROW_THRESHOLD) -> CheckResult:
    """Apply the name-list contract; pure. `registry` has columns uscc, name."""
    notice = received.hidden_sheets_notice(parsed.hidden_sheets)
    if parsed.error:
        return CheckResult(file=parsed.file, accepted=False, reason=parsed.error, notice=notice)
    mode, fixed = amount_mode(policy)
    if mode == "required" and not parsed.has_amount:
        return CheckResult(file=parsed.file, accepted=False, notice=notice,
                           reason="缺少“奖补金额（元）”列：本政策的奖补金额以名单为准，须逐户填写")
    names = dict(zip(registry.column("uscc").to_pylist(), registry.column("name").to_pylist()))
    first_row: dict[str, int] = {}
    result = CheckResult(file=parsed.file, accepted=False, reason=None, data_rows=len(parsed.rows), notice=notice)
    for r in parsed.rows:
        errors: list[tuple[str, str]] = []
        name = _text(r.name)
        code = ""
        if not _text(r.uscc):
            errors.append(("missing_field", "缺少统一社会信用代码"))
        else:
            code, problem = code_of(r.uscc)
            if problem:
                errors.append(("invalid_uscc", problem))
            elif code in first_row:
                errors.append(("duplicate", f"统一社会信用代码{code}与第{first_row[code]}行重复，以第{first_row[code]}行为准"))
            else:
                first_row[code] = r.row
                registered = names.get(code)
                if registered is None:
                    errors.append(("not_in_registry", f"统一社会信用代码{code}在企业登记信息中不存在"))
                elif name and name_key(name) != name_key(registered):
                    errors.append(("name_mismatch", f"企业名称“{name}”与登记名称“{registered}”不一致"))
        if not name:
            errors.append(("missing_field", "缺少企业名称"))
        amount = None
        if mode != "ignored":
            try:
                amount = parse_amount(r.amount, parsed.amount_unit)
            except AmountError as e:
                errors.append(("bad_amount", str(e)))
            else:
                if amount is None:
                    if mode == "required":
                        errors.append(("missing_field", "缺少奖补金额"))
                elif amount <= 0:
                    errors.append(("bad_amount", f"奖补金额须大于0（填写为{amount}）"))
                elif mode == "fixed" and amount != fixed:
                    errors.append(("bad_amount", f"名单金额{amount:,.2f}元与政策规定金额{fixed:,.2f}元不一致"))
        for category, message in errors:
            result.errors.append(RowError(r.row, category, message))
        if errors:
            result.bad_rows += 1
        else:
            result.rows.append(CheckedRow(r.row, code, name, amount, _text(r.note)))
    if not parsed.rows:
        result.reason = "名单中没有企业数据行"
    elif Decimal(result.bad_rows) > threshold * len(parsed.rows):
        share = (Decimal(100) * result.bad_rows / len(parsed.rows)).quantize(Decimal("0.1"), ROUND_HALF_UP)
        result.reason = (f"错误行占比{share}%（{result.bad_rows}/{len(parsed.rows)}行），超过{threshold * 100:.0f}%，"
                         "整份名单未接收，请修改后重新报送全部名单")
    result.accepted = result.reason is None
    if not result.accepted:
        result.rows = []
    return result


def summary_line(result: CheckResult, mode: str = "required", fixed: Decimal | None = None) -> str:
    """The answer's first line; it names the hidden sheets that were not read."""
    line = _outcome_line(result, mode, fixed)
    return f"{line}；{result.notice}" if result.notice else line


def _outcome_line(result: CheckResult, mode: str, fixed: Decimal | None) -> str:
    if result.reason and not result.data_rows:
        return f"未接收：{result.reason}"
    if not result.accepted:
        return f"未接收：{result.reason}（共{result.data_rows}行，其中错误{result.bad_rows}行）"
    if mode == "ignored":
        total = "金额按政策规则另行核算"
    else:
        amounts = [fixed if mode == "fixed" else r.amount for r in result.rows]
        total = f"金额合计 {sum((a for a in amounts if a is not None), Decimal(0)):,.2f} 元"
    return f"已接收 {len(result.rows)} 行，错误 {result.bad_rows} 行，{total}"


# ---- the edges: registry, policies, storage, inbox handler, CLI ------------

def latest_registry(settings: Settings) -> pa.Table | None:
    """(uscc, name) of the newest validated registry delivery, or None."""
    folder = settings.work / "validated" / "registry"
    files = sorted(folder.glob("*.parquet"), key=lambda p: (p.name, p.stat().st_mtime)) if folder.is_dir() else []
    if not files:
        return None
    return pq.read_table(files[-1], columns=["uscc", "name"])


def load_registry_file(path: Path | str) -> pa.Table:
    """A registry in the feed's own format (CSV/xlsx with Chinese headers) or Parquet."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pq.read_table(path, columns=["uscc", "name"])
    parsed = read_name_list(path)  # same header hunt: 统一社会信用代码 + 企业名称
    if parsed.error:
        raise NameListError(f"登记信息文件无法读取：{parsed.error}")
    codes = [uscc.normalise_code(r.uscc) if isinstance(r.uscc, str) else _text(r.uscc) for r in parsed.rows]
    return pa.table({"uscc": pa.array(codes, pa.string()), "name": pa.array([_text(r.name) for r in parsed.rows], pa.string())})


def load_policies(settings: Settings) -> dict[str, object]:
    from pipelines import policies

    found, _errors = policies.load_dir(settings.policies)
    return {p.id: p for p in found}


def to_table(result: CheckResult, source: str, received_at: datetime) -> pa.Table:
    n = len(result.rows)
    return pa.table(
        {
            "uscc": pa.array([r.uscc for r in result.rows], pa.string()),
            "name": pa.array([r.name for r in result.rows], pa.string()),
            "amount": pa.array([r.amount for r in result.rows], MONEY),
            "note": pa.array([r.note or None for r in result.rows], pa.string()),
            "source": pa.array([source] * n, pa.string()),
            "received_at": pa.array([received_at] * n, NAMELIST_SCHEMA.field("received_at").type),
        },
        schema=NAMELIST_SCHEMA,
    )


def store(settings: Settings, policy_id: str, sha256: str, table: pa.Table) -> Path:
    """Atomically write work/namelists/<policy_id>/<sha256[:16]>.parquet."""
    folder = settings.work / "namelists" / policy_id
    return atomic_write_parquet(folder / f"{sha256[:16]}.parquet", table)


def _outcomes(parsed: ParsedList, result: CheckResult) -> list[intake.RowOutcome]:
    by_row = result.errors_by_row()
    return [intake.RowOutcome(r.row, r.values, "；".join(by_row[r.row]) if r.row in by_row else None) for r in parsed.rows]


@intake.handles(intake.NAME_LIST)
def handle_name_list(settings: Settings, path: Path, sha256: str, folder: str) -> intake.IntakeResult:
    """A workbook dropped into <inbox>/<policy_id>/ (folder = policy id)."""
    policy = load_policies(settings).get(folder)
    if policy is None:
        return intake.IntakeResult(False, f"政策编号“{folder}”不存在或政策文件有误，无法受理该名单",
                                   summary=f"未接收：政策编号“{folder}”不存在")
    department = getattr(policy, "department", None)
    if getattr(policy, "kind", None) != "name_list":
        return intake.IntakeResult(False, f"政策“{folder}”不是名单类政策，不受理名单",
                                   summary=f"未接收：政策“{folder}”不是名单类政策", department=department)
    registry = latest_registry(settings)
    if registry is None:
        raise intake.RetryLater("no validated registry delivery yet")
    parsed = read_name_list(path, settings)
    result = check_name_list(parsed, registry, policy)
    mode, fixed = amount_mode(policy)
    if result.accepted:
        store(settings, folder, sha256, to_table(result, path.name, intake.received_at()))
    return intake.IntakeResult(
        accepted=result.accepted,
        reason=result.reason,
        rows=_outcomes(parsed, result),
        summary=summary_line(result, mode, fixed),
        department=department,
    )


def namelist_check_command(file: str | Path, policy_id: str, registry_path: str | Path | None = None,
                           as_json: bool = False, settings: Settings | None = None) -> int:
    """`mianshen namelist check FILE --policy ID [--registry PATH] [--json]`.

    Exit 0: the file would be accepted; 1: it would be refused; 2: the check
    could not run (unknown policy, no registry).
    """
    settings = settings or load_settings()
    file = Path(file)

    def fail(reason: str) -> int:
        if as_json:
            print(json.dumps({"file": file.name, "accepted": False, "reason": reason, "rows": [], "errors": []},
                             ensure_ascii=False, indent=2))
        else:
            print(f"无法检查：{reason}")
        return 2

    policy = load_policies(settings).get(policy_id)
    if policy is None:
        return fail(f"政策编号“{policy_id}”不存在或政策文件有误")
    if getattr(policy, "kind", None) != "name_list":
        return fail(f"政策“{policy_id}”不是名单类政策")
    try:
        registry = load_registry_file(registry_path) if registry_path else latest_registry(settings)
    except (NameListError, OSError, pa.ArrowException) as e:
        return fail(str(e))
    if registry is None:
        return fail("尚无已校验的企业登记信息，请先运行夜间批处理或用 --registry 指定登记信息文件")
    parsed = read_name_list(file, settings)
    result = check_name_list(parsed, registry, policy)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
    else:
        mode, fixed = amount_mode(policy)
        print(f"{file.name}：{summary_line(result, mode, fixed)}")
        if parsed.sheet or parsed.header_row:
            print(f"工作表：{parsed.sheet or '-'}，表头在第{parsed.header_row}行")
        for e in result.errors:
            print(f"  第{e.row}行 [{e.category}] {e.message}")
    return 0 if result.accepted else 1
