"""Payout effect analysis (绩效评价): how paid enterprises changed, beside comparable ones.

For each paid policy and period (ledger rows in status `paid`), the recipients'
change in insured_count and tax_paid between the portrait before the payout and
the latest portrait, against comparable non-recipients (same size_class and
industry_section in the portrait before the payout): a difference-in-differences
table. It is descriptive (描述性统计，非因果推断): recipients were chosen by the
policy's own conditions, so the comparison group differs from them in more
than the payment, and the page says so.

Decisions:
- Payout date: the `paid` transition of the row in ledger_transitions; the
  finance bureau's own date when the transition note carries it
  (`支付日期 YYYY-MM-DD`, as `ledger.record_payment` writes it), else the date
  the payment was recorded (`at`).
- Before-portrait: the newest portrait dated strictly before the payout date;
  after-portrait: the portrait of as_of (the newest when as_of is None).
  Recipients of one policy and period paid on dates with different
  before-portraits form separate cohorts (one table row each).
- A cohort with no portrait before the payout, or whose before-portrait is not
  older than the latest one, is listed as not analysable, with the reason.
- Comparison enterprises: in both portraits, with no paid ledger row for the
  same policy (any period). Cells are (size_class, industry_section) of the
  before-portrait; an empty size_class or industry_section has no comparable
  cell. Only cells with both recipients and comparison enterprises count, and
  the comparison mean is weighted to the recipients' cell mix (exact
  stratification), so DiD = recipients' mean change − Σ_cells share × the
  cell's comparison mean change.
- An enterprise without the metric in either portrait is left out of that
  metric (n is per metric). Means are exact fractions, shown rounded half-up
  to 0.01 (元 for tax_paid, persons for insured_count).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import sqlalchemy as sa

from pipelines import warehouse as wh
from pipelines.config import Settings
from pipelines.files import atomic_write_text
from pipelines.html_page import bar_chart, esc, page, svg_figure, td
from pipelines.outputs.workbook import neutralise

METRICS = ("insured_count", "tax_paid")
METRIC_LABELS = {"insured_count": "参保人数（人）", "tax_paid": "纳税总额（元）"}
CELL_FIELDS = ("size_class", "industry_section")
PORTRAIT_COLUMNS = ("uscc", *CELL_FIELDS, *METRICS)
PAID_ON = re.compile(r"支付日期\s*([0-9]{4}-[0-9]{2}-[0-9]{2})")
DISCLAIMER = "描述性统计，非因果推断"
CSV_HEADER = ("政策编号", "政策名称", "期次", "支付日期（起）", "支付日期（止）", "基期画像日期", "末期画像日期",
              "指标", "受益企业数", "对照企业数", "受益企业平均变化", "对照企业平均变化（按受益企业结构加权）",
              "双重差分", "未纳入的受益企业数", "说明")


@dataclass(frozen=True)
class Payment:
    policy_id: str
    policy_name: str
    period: str
    uscc: str
    paid_on: dt.date


@dataclass
class DidRow:
    policy_id: str
    policy_name: str
    period: str
    paid_from: dt.date
    paid_to: dt.date
    before: dt.date | None
    after: dt.date
    metric: str
    recipients: int = 0
    comparison: int = 0
    mean_recipients: Fraction | None = None
    mean_comparison: Fraction | None = None
    dropped: int = 0
    note: str = ""

    @property
    def did(self) -> Fraction | None:
        if self.mean_recipients is None or self.mean_comparison is None:
            return None
        return self.mean_recipients - self.mean_comparison


# ---------------------------------------------------------------- reading

def paid_on(note: str | None, at: dt.datetime | None) -> dt.date | None:
    """The payout date of a `paid` transition: the date in its note, else when it was recorded."""
    found = PAID_ON.search(note or "")
    if found:
        try:
            return dt.date.fromisoformat(found.group(1))
        except ValueError:
            pass
    return at.date() if at is not None else None


def payments(conn) -> list[Payment]:
    """Every paid ledger row with its payout date (from the transition log)."""
    l, t = wh.ledger, wh.ledger_transitions
    q = (sa.select(l.c.policy_id, l.c.policy_name, l.c.period, l.c.uscc, t.c.at, t.c.note)
         .join(t, t.c.ledger_id == l.c.id)
         .where(l.c.status == "paid", t.c.to_status == "paid")
         .order_by(l.c.policy_id, l.c.period, l.c.uscc, t.c.id))
    out: dict[tuple[str, str, str], Payment] = {}
    for r in conn.execute(q).all():
        day = paid_on(r.note, r.at)
        if day is not None:
            out[(r.policy_id, r.period, r.uscc)] = Payment(r.policy_id, r.policy_name, r.period, r.uscc, day)
    return list(out.values())


def read_portrait(settings: Settings, day: dt.date) -> dict[str, dict]:
    """uscc -> {size_class, industry_section, insured_count, tax_paid} (values exact: int / Decimal)."""
    table = pq.read_table(settings.portrait_path(day))
    cols = [c for c in PORTRAIT_COLUMNS if c in table.column_names]
    rows = table.select(cols).to_pylist()
    return {r["uscc"]: {c: r.get(c) for c in PORTRAIT_COLUMNS if c != "uscc"} for r in rows}


def before_date(dates: list[dt.date], paid: dt.date) -> dt.date | None:
    """The newest portrait date strictly before the payout date."""
    earlier = [d for d in dates if d < paid]
    return earlier[-1] if earlier else None


# ---------------------------------------------------------------- the arithmetic (pure)

def change(before: dict | None, after: dict | None, metric: str) -> Fraction | None:
    if before is None or after is None or before.get(metric) is None or after.get(metric) is None:
        return None
    return Fraction(after[metric]) - Fraction(before[metric])


def cell(row: dict | None) -> tuple | None:
    if row is None or any(row.get(f) is None for f in CELL_FIELDS):
        return None
    return tuple(row[f] for f in CELL_FIELDS)


def did_figures(recipients: list[str], comparison: list[str], before: dict[str, dict], after: dict[str, dict],
                metric: str) -> tuple[int, int, Fraction | None, Fraction | None, int]:
    """(n recipients, n comparison, recipients' mean change, comparison mean change weighted to the
    recipients' cell mix, recipients left out), exact."""
    r_cells: dict[tuple, list[Fraction]] = defaultdict(list)
    dropped = 0
    for u in recipients:
        c, d = cell(before.get(u)), change(before.get(u), after.get(u), metric)
        if c is None or d is None:
            dropped += 1
            continue
        r_cells[c].append(d)
    c_cells: dict[tuple, list[Fraction]] = defaultdict(list)
    for u in comparison:
        c = cell(before.get(u))
        if c in r_cells:
            d = change(before.get(u), after.get(u), metric)
            if d is not None:
                c_cells[c].append(d)
    kept = [c for c in r_cells if c_cells.get(c)]
    dropped += sum(len(r_cells[c]) for c in r_cells if c not in kept)
    n_r = sum(len(r_cells[c]) for c in kept)
    n_c = sum(len(c_cells[c]) for c in kept)
    if n_r == 0:
        return 0, n_c, None, None, dropped
    mean_r = sum((sum(r_cells[c]) for c in kept), Fraction(0)) / n_r
    mean_c = sum((Fraction(len(r_cells[c]), n_r) * sum(c_cells[c]) / len(c_cells[c]) for c in kept), Fraction(0))
    return n_r, n_c, mean_r, mean_c, dropped


def cohorts(pays: list[Payment], dates: list[dt.date]) -> dict[tuple, list[Payment]]:
    """(policy_id, period, before-portrait date or None) -> its payments."""
    out: dict[tuple, list[Payment]] = defaultdict(list)
    for p in pays:
        out[(p.policy_id, p.period, before_date(dates, p.paid_on))].append(p)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]))))


def analyse_cohorts(settings: Settings, pays: list[Payment], after_day: dt.date) -> list[DidRow]:
    dates = [d for d in settings.portrait_dates() if d <= after_day]
    after = read_portrait(settings, after_day)
    cache: dict[dt.date, dict] = {}
    paid_by_policy: dict[str, set] = defaultdict(set)
    for p in pays:
        paid_by_policy[p.policy_id].add(p.uscc)
    rows: list[DidRow] = []
    for (policy_id, period, before_day), group in cohorts(pays, dates).items():
        days = [p.paid_on for p in group]
        base = dict(policy_id=policy_id, policy_name=group[0].policy_name, period=period,
                    paid_from=min(days), paid_to=max(days), before=before_day, after=after_day)
        if before_day is None:
            rows += [DidRow(**base, metric=m, dropped=len(group), note="支付日期之前没有企业画像，无法比较")
                     for m in METRICS]
            continue
        if before_day >= after_day:
            rows += [DidRow(**base, metric=m, dropped=len(group), note="支付之后尚无新的企业画像，无法比较")
                     for m in METRICS]
            continue
        before = cache.setdefault(before_day, read_portrait(settings, before_day))
        recipients = sorted({p.uscc for p in group})
        comparison = sorted(u for u in before if u in after and u not in paid_by_policy[policy_id])
        for m in METRICS:
            n_r, n_c, mean_r, mean_c, dropped = did_figures(recipients, comparison, before, after, m)
            note = "" if n_r else "没有可比较的受益企业（数据缺失或无同规模同行业的对照企业）"
            rows.append(DidRow(**base, metric=m, recipients=n_r, comparison=n_c, mean_recipients=mean_r,
                               mean_comparison=mean_c, dropped=dropped, note=note))
    return rows


# ---------------------------------------------------------------- output

def two(x: Fraction | None) -> str:
    """An exact fraction rounded half-up to 0.01, as text ('' for none)."""
    if x is None:
        return ""
    cents = abs(x) * 100
    rounded = int(cents + Fraction(1, 2))   # floor(|x| * 100 + 1/2): half-up, away from zero
    sign = "-" if x < 0 and rounded else ""
    return f"{sign}{rounded // 100}.{rounded % 100:02d}"


def csv_text(rows: list[DidRow]) -> str:
    """The table as CSV with a UTF-8 BOM (so that Excel opens the Chinese headers)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_HEADER)
    for r in rows:
        w.writerow([neutralise(r.policy_id), neutralise(r.policy_name), neutralise(r.period), r.paid_from, r.paid_to, r.before or "", r.after,
                    METRIC_LABELS[r.metric], r.recipients, r.comparison, two(r.mean_recipients),
                    two(r.mean_comparison), two(r.did), r.dropped, neutralise(r.note or DISCLAIMER)])
    return "\ufeff" + buf.getvalue()


def signed_bar_chart(title: str, items: list[tuple[str, Fraction]], unit: str = "") -> str:
    """A horizontal bar chart around a zero line (DiD can be negative); inline SVG."""
    if not items:
        return ""
    width, bar_h, label_w, half = 760, 22, 260, 200
    peak = max((abs(float(v)) for _, v in items), default=0) or 1
    zero = label_w + half + 40
    rows = []
    for i, (label, value) in enumerate(items):
        y = 30 + i * (bar_h + 6)
        w = half * abs(float(value)) / peak
        x = zero if value >= 0 else zero - w
        tx = zero + w + 6 if value >= 0 else zero + 6
        rows.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{esc(label)}</text>'
                    f'<rect class="{"bar" if value >= 0 else "neg"}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                    f'height="{bar_h}" rx="3"></rect><text x="{tx:.1f}" y="{y + 15}">{two(value)}{unit}</text>')
    height = 40 + len(items) * (bar_h + 6)
    return svg_figure(title, width, height,
                      f'<line x1="{zero}" y1="24" x2="{zero}" y2="{height}" stroke="#555"></line>{"".join(rows)}')


def render(rows: list[DidRow], as_of: dt.date, n_payments: int) -> str:
    trs = "".join(
        "<tr>" + "".join(td(v) for v in (r.policy_id, r.policy_name, r.period,
                                           f"{r.paid_from} 至 {r.paid_to}" if r.paid_from != r.paid_to else r.paid_from,
                                           r.before or "—", r.after, METRIC_LABELS[r.metric]))
        + "".join(td(v, num=True) for v in (r.recipients, r.comparison, two(r.mean_recipients) or "—",
                                              two(r.mean_comparison) or "—", two(r.did) or "—", r.dropped))
        + td(r.note) + "</tr>"
        for r in rows)
    table = (f'<table id="did"><tr>{"".join(f"<th>{esc(h)}</th>" for h in CSV_HEADER)}</tr>{trs}</table>'
             if rows else "<p>兑现台账中尚无已拨付的记录，暂无可分析的政策。</p>")
    charts = ""
    for m in METRICS:
        items = [(f"{r.policy_id}（{r.period}）", r.did) for r in rows if r.metric == m and r.did is not None]
        charts += signed_bar_chart(f"双重差分：{METRIC_LABELS[m]}", items)
    counts = [(f"{r.policy_id}（{r.period}）", r.recipients) for r in rows if r.metric == "insured_count"]
    charts += bar_chart("纳入分析的受益企业数（参保人数指标）", counts, " 家") if any(v for _, v in counts) else ""
    body = f"""<h1>惠企政策兑现效果分析（绩效评价）</h1>
<p>末期画像日期：<b id="as-of">{as_of}</b>　已拨付记录：{n_payments:,d} 条</p>
<div class="notice" id="disclaimer"><b>{DISCLAIMER}。</b>
本表比较已获兑现企业（受益企业）在付款前后两期企业画像之间参保人数、纳税总额的平均变化，
与同期同规模、同行业门类的未获兑现企业（对照企业）的平均变化之差（双重差分）。
受益企业是按政策条件筛选出来的，与对照企业在付款之外还有其他差别，因此差值不能解读为政策带来的效果，
只用于发现值得进一步核实的情况。</div>
<h2>一、计算口径</h2>
<ul>
<li>基期：付款日期之前最近一期企业画像；末期：{as_of} 的企业画像。</li>
<li>对照企业：两期画像中都有、未获本政策兑现的企业，按基期的企业规模与行业门类分组；
对照企业的平均变化按受益企业在各组的分布加权。</li>
<li>任一期缺少该指标、规模或行业为空、或没有同组对照企业的受益企业不纳入，计入“未纳入的受益企业数”。</li>
<li>平均值按精确分数计算，显示时四舍五入到 0.01。</li>
</ul>
<h2>二、双重差分表</h2>
{table}
{charts}"""
    return page(f"惠企政策兑现效果分析 {as_of}", body, "本页由免申即享数据流水线生成，不含企业名称、联系电话及个人姓名。")


def analyse(settings: Settings, as_of: dt.date | None = None) -> Path:
    """Write output/effects/effects_<as_of>.html and .csv; return the HTML path.

    as_of: the after-portrait's date (the newest portrait when None). FileNotFoundError (Chinese)
    when there is no such portrait.
    """
    dates = settings.portrait_dates()
    if as_of is None:
        if not dates:
            raise FileNotFoundError(f"未找到企业画像（{settings.portraits}），请先运行夜间流水线。")
        as_of = dates[-1]
    elif as_of not in dates:
        raise FileNotFoundError(f"未找到 {as_of} 的企业画像（{settings.portrait_path(as_of)}）。")
    engine = wh.connect(settings.warehouse_url)
    with engine.connect() as conn:
        pays = payments(conn)
    rows = analyse_cohorts(settings, pays, as_of) if pays else []
    out_dir = settings.output / "effects"
    page = out_dir / f"effects_{as_of}.html"
    atomic_write_text(out_dir / f"effects_{as_of}.csv", csv_text(rows))
    atomic_write_text(page, render(rows, as_of, len(pays)))
    return page


def effects_command(settings: Settings, as_of: dt.date | None = None, out=None, err=None) -> int:
    """`mianshen effects [--as-of DATE]`: 0 written, 2 no portrait."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        page = analyse(settings, as_of)
    except FileNotFoundError as exc:
        print(str(exc), file=err)
        return 2
    print(f"兑现效果分析（{DISCLAIMER}）：{page}", file=out)
    print(f"明细表（CSV）：{page.with_suffix('.csv')}", file=out)
    return 0
