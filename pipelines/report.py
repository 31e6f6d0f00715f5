"""The run report (运行报告): one self-contained HTML page per run, in Chinese.

It reads only what the run wrote (quality verdicts, matches.parquet, the
ledger summary) and keeps its key figures in report.json beside it, so the
next run can show what changed. Charts are inline SVG: the page opens from a
file share with no network and no JavaScript.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from pipelines.config import Settings
from pipelines.files import atomic_write_text, read_json
from pipelines.html_page import bar_chart, esc, kpi_row, page, yuan
from pipelines.safety import mask_text
from pipelines.contracts import FEED_ORDER, FEEDS

OUTCOME_LABELS = {
    "eligible": "符合",
    "excluded_by_group": "就高不重复（未选）",
    "near_miss": "差一项符合",
    "missing_data": "数据不全",
    "guard_failed": "基本条件不符",
}
STATUS_LABELS = {
    "accepted": "已接收", "rejected": "已拒收", "stale": "已过期", "missing": "未交付", "drift": "数据量波动超限",
}


@dataclass
class PolicyFigures:
    policy_id: str
    name: str
    department: str
    counts: dict[str, int]
    eligible_amount: Decimal
    over_budget: bool


def feed_verdicts(settings: Settings, as_of: date) -> list[dict]:
    verdicts = []
    for feed in FEED_ORDER:
        verdict = read_json(settings.verdict_path(feed, as_of)) or {
            "status": "missing", "reason": "本次运行未完成该数据的校验",
        }
        verdicts.append({"feed": feed, "title": FEEDS[feed].title, "department": FEEDS[feed].department, **verdict})
    return verdicts


def field_defect_text(verdict: dict) -> str:
    """The feed's field defects as one line: each column (its Chinese header) and how many values were nulled.

    Counts only: the values themselves (a phone number among them) stay in the
    quality report JSON, out of this page.
    """
    defects = verdict.get("field_defects") or {}
    return "、".join(f'{d["header"]} {d["count"]:,d} 处' for d in defects.values()) or "无"


def policy_figures(matches_path: Path) -> list[PolicyFigures]:
    """Counts per outcome, eligible total and over-budget flag per policy, aggregated by DuckDB
    over the Parquet file (a province-scale night has tens of millions of rows: they are
    streamed, never loaded; amounts stay exact decimals)."""
    if not matches_path.exists():
        return []
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT policy_id, min(policy_name), min(department), outcome, count(*), "
            "sum(amount) FILTER (WHERE outcome = 'eligible'), "
            "coalesce(bool_or(over_budget) FILTER (WHERE outcome = 'eligible'), false) "
            "FROM read_parquet(?) GROUP BY policy_id, outcome ORDER BY ALL", [str(matches_path)]).fetchall()
    finally:
        con.close()
    figures: dict[str, PolicyFigures] = {}
    for policy_id, name, department, outcome, count, amount, over in rows:
        fig = figures.setdefault(policy_id, PolicyFigures(policy_id, name, department,
                                                          {k: 0 for k in OUTCOME_LABELS}, Decimal(0), False))
        fig.counts[outcome] = count
        if outcome == "eligible":
            fig.eligible_amount = Decimal(amount or 0)
            fig.over_budget = bool(over)
    return sorted(figures.values(), key=lambda f: f.policy_id)


def key_figures(verdicts: list[dict], policies: list[PolicyFigures], ledger: dict | None) -> dict:
    return {
        "feeds_accepted": sum(v["status"] == "accepted" for v in verdicts),
        "feeds_total": len(verdicts),
        "eligible": sum(p.counts["eligible"] for p in policies),
        "eligible_amount": str(sum((p.eligible_amount for p in policies), Decimal(0)).quantize(Decimal("0.01"))),
        "near_miss": sum(p.counts["near_miss"] for p in policies),
        "missing_data": sum(p.counts["missing_data"] for p in policies),
        "over_budget": [p.policy_id for p in policies if p.over_budget],
        "per_policy": {p.policy_id: {"eligible": p.counts["eligible"], "amount": str(p.eligible_amount)} for p in policies},
        "ledger": ledger or {},
    }


def previous_figures(settings: Settings, as_of: date) -> tuple[str, dict] | None:
    if not settings.output.exists():
        return None
    earlier = sorted(p.name for p in settings.output.iterdir() if p.is_dir() and p.name < as_of.isoformat())
    for name in reversed(earlier):
        figures = read_json(settings.report_figures_path(name))
        if figures:
            return name, figures
    return None


LIST_LINKS = (("惠企政策清单（网页，含办事指南和变更记录）", "惠企政策清单.html"), ("惠企政策清单（工作簿）", "惠企政策清单.xlsx"),
              ("办事指南清单（工作簿）", "办事指南清单.xlsx"), ("清单变更记录（工作簿）", "清单变更记录.xlsx"))
REMINDER_LISTS = ("应享未享提醒", "差一项清单", "数据缺口清单")


def lists_section(settings: Settings, as_of: date, reminder_lists: dict) -> str:
    """The published lists (links) and, per department, the rows of each reminder list and its top data gaps."""
    lists = settings.lists_dir(as_of)
    folder = os.path.relpath(lists, settings.report_path(as_of).parent)
    links = "".join(f'<li><a href="{esc(folder)}/{esc(name)}">{esc(title)}</a></li>'
                    for title, name in LIST_LINKS if (lists / name).exists())
    out = f'<ul id="published-lists">{links}</ul>' if links else "<p>本次运行没有发布政策清单。</p>"
    if not reminder_lists:
        return out + "<p>本次运行没有提醒清单。</p>"
    rows = "".join(
        f"<tr><td>{esc(dept)}</td>" + "".join(f'<td class="num">{counts.get(k, 0):,d}</td>' for k in REMINDER_LISTS)
        + f"<td>{esc('；'.join(f'{g}（{n:,d}）' for g, _, n in counts.get('top_gaps', [])[:3]) or '—')}</td></tr>"
        for dept, counts in sorted(reminder_lists.items()))
    out += ('<p>提醒清单在本次运行目录的 reminders/ 下，每个部门三份：应享未享提醒、差一项清单、数据缺口清单（数据共享需求）。</p>'
            '<table id="reminder-lists"><tr><th>部门</th><th>应享未享提醒（条）</th><th>差一项清单（条）</th>'
            f'<th>数据缺口（受影响结果，条）</th><th>主要数据缺口</th></tr>{rows}</table>')
    return out + bar_chart("各部门因数据缺失无法判断的政策结果数", [(dept, counts.get("数据缺口清单", 0))
                                                    for dept, counts in sorted(reminder_lists.items())], " 条")


def oversight_section(result: dict | None) -> str:
    """督导统计 (the run's oversight/督导统计.json): per department and policy, departments with
    overdue items first, and a chart of the median working days from eligible to paid."""
    from pipelines.oversight import COUNTED, LABELS, OVERDUE_KEYS

    if not result or not result.get("figures"):
        return "<p>台账中尚无记录，暂无督导统计。</p>"
    keys = COUNTED + ("paid_amount", "median_days_to_paid") + OVERDUE_KEYS
    head = "".join(f"<th>{esc(LABELS[k])}</th>" for k in ("department", "policy_id", "period") + keys)

    def cell(f: dict, k: str) -> str:
        v = f[k]
        if k == "paid_amount":
            return f'<td class="num">{yuan(Decimal(v))}</td>'
        if v is None:
            return '<td class="num">—</td>'
        late = k in OVERDUE_KEYS and v
        return f'<td class="num{" bad" if late else ""}">{v:g}</td>'

    rows = "".join(f"<tr><td>{esc(f['department'])}</td><td>{esc(f['policy_id'])}</td><td>{esc(f['period'])}</td>"
                   + "".join(cell(f, k) for k in keys) + "</tr>" for f in result["figures"])
    waits = [(f"{f['policy_id']} {f['policy_name']}", Decimal(str(f["median_days_to_paid"])))
             for f in result["figures"] if f["median_days_to_paid"] is not None]
    late = len(result.get("overdue", []))
    return (f'<p>截至 {esc(result["as_of"])} 的累计数（按部门、政策、期次；有逾期事项的部门排在前面）；'
            f'逾期事项 <b id="overdue-items">{late:,d}</b> 项，明细见本次运行目录 oversight/督导统计.xlsx。</p>'
            f'<table id="oversight"><tr>{head}</tr>{rows}</table>'
            + bar_chart("各政策从符合条件到拨付的中位工作日", waits, " 个工作日"))


def render(as_of: date, run_id: str, verdicts, policies, figures, previous, ledger, data_docs: Path | None,
           lists_html: str = "", oversight_html: str = "") -> str:
    gate_open = all(v["status"] == "accepted" for v in verdicts)
    feed_rows = "".join(
        f'<tr class="{"ok" if v["status"] == "accepted" else "bad"}"><td>{esc(v["title"])}</td><td>{esc(v["department"])}</td>'
        f'<td>{esc(str(v.get("delivery_date") or "—"))}</td><td>{STATUS_LABELS.get(v["status"], esc(v["status"]))}</td>'
        f'<td class="num">{v.get("rows", "—")}</td><td class="num">{v.get("bad_rows", "—")}</td>'
        f'<td>{esc(field_defect_text(v))}</td>'
        f'<td>{esc(mask_text(v.get("reason") or ""))}</td></tr>'
        for v in verdicts
    )
    policy_rows = "".join(
        f'<tr><td>{esc(p.policy_id)}</td><td>{esc(p.name)}</td><td>{esc(p.department)}</td>'
        + "".join(f'<td class="num">{p.counts.get(k, 0)}</td>' for k in OUTCOME_LABELS)
        + f'<td class="num">{yuan(p.eligible_amount)}</td><td>{"是" if p.over_budget else ""}</td></tr>'
        for p in policies
    )
    change = "<p>没有可比较的上一次运行。</p>"
    if previous:
        prev_date, prev = previous
        d_count = figures["eligible"] - prev.get("eligible", 0)
        d_amount = Decimal(figures["eligible_amount"]) - Decimal(prev.get("eligible_amount", "0"))
        change = (
            f'<p>与上一次运行（{esc(prev_date)}）相比：符合条件 <b id="delta-eligible">{d_count:+,d}</b> 条，'
            f'预计金额 <b id="delta-amount">{d_amount:+,.2f}</b> 元。</p>'
        )
    over = figures["over_budget"]
    over_html = (
        "<ul>" + "".join(f"<li>{esc(p)}：符合金额超出预算，拨付已暂停，待经办人员解除。</li>" for p in over) + "</ul>"
        if over else "<p>无。</p>"
    )
    ledger_html = (
        "<table><tr><th>台账变动</th><th>条数</th></tr>"
        + "".join(f"<tr><td>{esc(str(k))}</td><td class='num'>{esc(str(v))}</td></tr>" for k, v in ledger.items()
                  if not isinstance(v, (dict, list)))
        + "</table>"
        if ledger else "<p>本次运行没有台账变动记录。</p>"
    )
    docs_link = (
        f'<p><a href="{esc(os.path.relpath(data_docs, start=data_docs.parents[2]))}">打开数据质量明细（Great Expectations Data Docs）</a></p>'
        if data_docs and data_docs.exists() else "<p>本次运行没有生成数据质量明细页面。</p>"
    )
    charts = bar_chart("各政策符合条件企业数", [(f"{p.policy_id} {p.name}", p.counts["eligible"]) for p in policies], " 家")
    charts += bar_chart("各政策预计兑现金额（元）", [(f"{p.policy_id} {p.name}", p.eligible_amount) for p in policies])
    charts += bar_chart("各数据源有效行数", [(v["title"], v.get("rows") or 0) for v in verdicts], " 行")
    kpis = kpi_row([
        ("符合条件", "kpi-eligible", f"{figures['eligible']:,d}"),
        ("预计金额（元）", "kpi-amount", yuan(figures["eligible_amount"])),
        ("差一项符合", "kpi-near-miss", f"{figures['near_miss']:,d}"),
        ("数据不全", "kpi-missing", f"{figures['missing_data']:,d}"),
    ])
    body = f"""<h1>卧龙区惠企政策“免申即享”夜间运行报告</h1>
<p>运行日期：<b id="as-of">{as_of}</b>　运行编号：{esc(run_id)}　生成时间：{datetime.now():%Y-%m-%d %H:%M}</p>
<p>数据闸门：<span id="gate" class="badge {'open' if gate_open else 'closed'}">{'通过' if gate_open else '未通过，匹配与拨付未执行'}</span></p>
{kpis}
<h2>一、数据接收与质量</h2>
<table id="feeds"><tr><th>数据</th><th>提供部门</th><th>交付日期</th><th>结果</th><th>行数</th><th>问题行</th><th>已置空的字段值（行保留）</th><th>说明</th></tr>{feed_rows}</table>
<p>问题行：统一社会信用代码等关键项或必填项缺失、无效，整行隔离，见各数据的隔离清单。已置空的字段值：其他字段（如联系电话、注册资本）的值不合规，该值按空值处理，企业的行保留；明细见 quality 目录下各数据的质量报告。</p>
{docs_link}
<h2>二、政策匹配结果</h2>
<table id="policies"><tr><th>政策编号</th><th>政策名称</th><th>执行部门</th>{''.join(f'<th>{v}</th>' for v in OUTCOME_LABELS.values())}<th>符合金额（元）</th><th>超预算</th></tr>{policy_rows}</table>
{charts}
<h2>三、与上一次运行相比</h2>{change}
<h2>四、超预算政策</h2>{over_html}
<h2>五、台账变动</h2>{ledger_html}
<h2>六、发布清单与提醒清单</h2>{lists_html}
<h2>七、督导统计</h2>{oversight_html or "<p>本次运行没有督导统计。</p>"}"""
    return page(f"免申即享夜间运行报告 {as_of}", body, "本报告由免申即享数据流水线自动生成，不含企业联系电话及个人姓名。")


def write(settings: Settings, as_of: date, run_id: str) -> Path:
    verdicts = feed_verdicts(settings, as_of)
    policies = policy_figures(settings.matches_path(as_of))
    ledger = read_json(settings.ledger_summary_path(as_of)) or {}
    figures = key_figures(verdicts, policies, ledger)
    data_docs = settings.data_docs_dir(as_of) / "index.html"
    lists_html = lists_section(settings, as_of, read_json(settings.reminder_summary_path(as_of)) or {})
    from pipelines.outputs.oversight import figures_path

    oversight_html = oversight_section(read_json(figures_path(settings.run_dir(as_of))))
    text = render(as_of, run_id, verdicts, policies, figures, previous_figures(settings, as_of), ledger, data_docs,
                  lists_html, oversight_html)
    path = settings.report_path(as_of)
    atomic_write_text(path, text)
    atomic_write_text(settings.report_figures_path(as_of), json.dumps(figures, ensure_ascii=False, indent=2))
    return path
