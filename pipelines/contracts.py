"""The data contracts of ../shared/spec/feeds.md and policies.md, as data.

Every other module takes headers, types, code lists, max ages and the portrait
schema from here, so that a change to the contract is a change in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

# Staged and portrait decimals: exact, never binary floats. Money and amounts
# in the feeds carry at most 6 fractional digits (a value with more is a bad
# row); ratios and averages in the portrait carry 18.
MONEY = pa.decimal128(38, 6)
RATIO = pa.decimal128(38, 18)

ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "uscc": pa.string(),
    "date": pa.date32(),
    "datetime": pa.timestamp("s"),
    "decimal": MONEY,
    "int": pa.int64(),
    "year": pa.int64(),
    "bool": pa.bool_(),
    "period": pa.string(),  # 'YYYY-MM'
}


@dataclass(frozen=True)
class Column:
    header: str                      # the Chinese header departments use
    name: str                        # canonical English name
    type: str                        # a key of ARROW_TYPES
    required: bool = False
    allowed: tuple[str, ...] | None = None   # code list
    min_value: Decimal | None = None
    pattern: str | None = None       # full-match regular expression on the normalised text
    label: str = ""                  # how the rule reads to a department (Chinese)


@dataclass(frozen=True)
class Feed:
    name: str
    title: str                       # Chinese title of the delivery
    department: str                  # the department that delivers it
    cadence: str
    max_age_days: int
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = ("uscc",)
    bad_row_threshold: Decimal = Decimal("0.10")   # share of bad rows above which the delivery is rejected
    drift_threshold: Decimal = Decimal("0.20")     # row-count change against the previous accepted delivery
    references_registry: bool = True

    @property
    def headers(self) -> dict[str, str]:
        return {c.header: c.name for c in self.columns}

    @property
    def required_columns(self) -> list[Column]:
        return [c for c in self.columns if c.required]

    @property
    def row_columns(self) -> frozenset[str]:
        """The key and required columns: a missing or invalid value here makes the whole row bad.

        A bad value in any other column is a field defect (feeds.md, Row-level
        outcome): that value becomes null and the row is kept.
        """
        return frozenset(self.unique) | {c.name for c in self.columns if c.required}

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in self.columns])


YES_NO = ("是", "否")
STATUSES = ("存续", "在业", "迁出", "停业", "吊销", "注销")
ACTIVE_STATUSES = ("存续", "在业")
CREDIT_RATINGS = ("A", "B", "M", "C", "D")
CERTIFICATIONS = ("高新技术企业", "科技型中小企业", "专精特新中小企业", "专精特新“小巨人”企业")
CERT_FIELDS = dict(zip(CERTIFICATIONS, ("high_tech", "tech_sme", "specialized", "little_giant")))
CREDIT_LISTS = ("失信被执行人", "严重失信主体", "重大税收违法失信主体")
INDUSTRY_CODE = r"[A-T][0-9]{0,4}"
DIVISION_CODE = r"[0-9]{6}"
MOBILE = r"1[3-9][0-9]{9}"
WOLONG = "411303"

ZERO = Decimal(0)

FEEDS: dict[str, Feed] = {
    f.name: f
    for f in (
        Feed(
            name="registry",
            title="企业登记信息",
            department="区市场监督管理局",
            cadence="每日全量",
            max_age_days=2,
            bad_row_threshold=Decimal("0.05"),
            references_registry=False,
            columns=(
                Column("统一社会信用代码", "uscc", "uscc", required=True),
                Column("企业名称", "name", "text", required=True),
                Column("法定代表人", "legal_rep", "text"),
                Column("成立日期", "established_on", "date", required=True),
                Column("注册资本（万元）", "registered_capital_10k", "decimal", min_value=ZERO),
                Column("行业代码", "industry_code", "text", pattern=INDUSTRY_CODE,
                       label="国民经济行业分类代码（门类字母A–T加0–4位数字）"),
                Column("企业类型", "enterprise_type", "text"),
                Column("登记状态", "status", "text", allowed=STATUSES),
                Column("所属区划", "division_code", "text", pattern=DIVISION_CODE, label="6位行政区划代码"),
                Column("注册地址", "address", "text"),
                Column("联系电话", "phone", "text", pattern=MOBILE, label="11位手机号码"),
                Column("经营异常", "abnormal", "bool"),
                Column("更新时间", "updated_at", "datetime"),
            ),
        ),
        Feed(
            name="tax",
            title="年度纳税信息",
            department="区税务局",
            cadence="按年度，每月重报",
            max_age_days=35,
            unique=("uscc", "tax_year"),
            columns=(
                Column("统一社会信用代码", "uscc", "uscc", required=True),
                Column("纳税年度", "tax_year", "year", required=True),
                Column("营业收入（万元）", "revenue_10k", "decimal", min_value=ZERO),
                Column("纳税总额（元）", "tax_paid", "decimal", min_value=ZERO),
                Column("研发费用（万元）", "rd_expense_10k", "decimal", min_value=ZERO),
                Column("纳税信用等级", "credit_rating", "text", allowed=CREDIT_RATINGS),
                Column("一般纳税人", "general_taxpayer", "bool"),
            ),
        ),
        Feed(
            name="social_insurance",
            title="参保信息",
            department="区人力资源和社会保障局",
            cadence="每月",
            max_age_days=35,
            unique=("uscc", "period"),
            columns=(
                Column("统一社会信用代码", "uscc", "uscc", required=True),
                Column("参保年月", "period", "period", required=True),
                Column("参保人数", "insured_count", "int", min_value=ZERO),
                Column("新增就业人数", "new_hires", "int", min_value=ZERO),
                Column("高校毕业生人数", "graduates_hired", "int", min_value=ZERO),
                Column("欠缴标志", "arrears", "bool"),
            ),
        ),
        Feed(
            name="tech",
            title="资质认定",
            department="区科学技术局",
            cadence="变更时报送",
            max_age_days=95,
            unique=("uscc", "certification", "cert_no"),
            columns=(
                Column("统一社会信用代码", "uscc", "uscc", required=True),
                Column("资质类型", "certification", "text", allowed=CERTIFICATIONS),
                Column("证书编号", "cert_no", "text", required=True),
                Column("发证日期", "issued_on", "date"),
                Column("有效期至", "expires_on", "date"),
            ),
        ),
        Feed(
            name="credit",
            title="失信名单",
            department="区发展和改革委员会（信用办）",
            cadence="每日",
            max_age_days=2,
            # A credit row lost to quarantine could let a dishonest enterprise
            # through the not_dishonest guard, so this feed tolerates little.
            bad_row_threshold=Decimal("0.01"),
            unique=("uscc", "list_type", "listed_on"),
            columns=(
                Column("统一社会信用代码", "uscc", "uscc", required=True),
                Column("名单类型", "list_type", "text", allowed=CREDIT_LISTS),
                Column("列入日期", "listed_on", "date", required=True),
                Column("移出日期", "removed_on", "date"),
            ),
        ),
    )
}

FEED_ORDER = tuple(FEEDS)

# The enterprise portrait (policies.md): field -> arrow type. The engine and
# the policy checker take field names and kinds from here.
PORTRAIT_SCHEMA = pa.schema(
    [
        ("uscc", pa.string()),
        ("name", pa.string()),
        ("legal_rep", pa.string()),
        ("address", pa.string()),
        ("phone", pa.string()),
        ("division_code", pa.string()),
        ("industry_code", pa.string()),
        ("industry_section", pa.string()),
        ("enterprise_type", pa.string()),
        ("status", pa.string()),
        ("registered", pa.bool_()),      # has a registry row (the `registered` guard)
        ("active", pa.bool_()),
        ("abnormal", pa.bool_()),
        ("established_on", pa.date32()),
        ("age_years", pa.int64()),
        ("registered_capital_10k", MONEY),
        ("tax_year", pa.int64()),
        ("revenue_10k", MONEY),
        ("tax_paid", MONEY),
        ("rd_expense_10k", MONEY),
        ("credit_rating", pa.string()),
        ("general_taxpayer", pa.bool_()),
        ("prev_tax_paid", MONEY),
        ("tax_growth", RATIO),
        ("rd_ratio", RATIO),
        ("insured_count", pa.int64()),
        ("insured_avg_12m", RATIO),
        ("new_hires_12m", pa.int64()),
        ("graduates_12m", pa.int64()),
        ("arrears", pa.bool_()),
        ("high_tech", pa.bool_()),
        ("tech_sme", pa.bool_()),
        ("specialized", pa.bool_()),
        ("little_giant", pa.bool_()),
        ("dishonest", pa.bool_()),
        ("size_class", pa.string()),
    ]
)

# How each portrait field reads to a person (explain, reminders, reports).
FIELD_LABELS: dict[str, str] = {
    "uscc": "统一社会信用代码", "name": "企业名称", "legal_rep": "法定代表人", "address": "注册地址",
    "phone": "联系电话", "division_code": "所属区划", "industry_code": "行业代码",
    "industry_section": "行业门类", "enterprise_type": "企业类型", "status": "登记状态",
    "registered": "已登记", "active": "存续（在业）", "abnormal": "列入经营异常名录",
    "established_on": "成立日期", "age_years": "成立年限（年）",
    "registered_capital_10k": "注册资本（万元）", "tax_year": "纳税年度",
    "revenue_10k": "营业收入（万元）", "tax_paid": "纳税总额（元）", "rd_expense_10k": "研发费用（万元）",
    "credit_rating": "纳税信用等级", "general_taxpayer": "一般纳税人", "prev_tax_paid": "上年纳税总额（元）",
    "tax_growth": "纳税增长率", "rd_ratio": "研发费用占营业收入比例", "insured_count": "参保人数",
    "insured_avg_12m": "近12个月平均参保人数", "new_hires_12m": "近12个月新增就业人数",
    "graduates_12m": "近12个月吸纳高校毕业生人数", "arrears": "社保欠缴", "high_tech": "高新技术企业",
    "tech_sme": "科技型中小企业", "specialized": "专精特新中小企业", "little_giant": "专精特新“小巨人”企业",
    "dishonest": "列入失信名单", "size_class": "企业规模",
}
assert set(FIELD_LABELS) == set(PORTRAIT_SCHEMA.names)

SIZE_CLASSES = ("大型", "中型", "小型", "微型")
